// Package cli is cairn-controlplane's command line: it parses flags
// and environment, builds each component's Config, and runs them until
// the context ends. It holds no logic of its own beyond that wiring.
package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/rollout"
	"github.com/cairnhq/cairn/controlplane/internal/server"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/flagenv"
	"github.com/cairnhq/cairn/internal/logging"
)

const envPrefix = "CAIRN"

type flags struct {
	adminAddr          string
	agentAddr          string
	trustDomain        string
	caDir              string
	signingDir         string
	svidTTL            time.Duration
	agentNames         string
	spireTrustDomain   string
	spireBundle        string
	spireAgents        string
	dataDir            string
	databaseURL        string
	tlsCert, tlsKey    string
	insecure           bool
	bootstrapTokenFile string
	logLevel           string
	logFormat          string
	maxMessageBytes    int
	historyKeep        int64
	historyMaxAge      time.Duration
	metricsRetention   time.Duration
	maintainEvery      time.Duration
	heartbeatEvery     time.Duration
	streamAdmitRate    float64
	streamAdmitBurst   int
	streamSendTimeout  time.Duration
	rolloutTick        time.Duration
	rolloutLeaseTTL    time.Duration
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("cairn-controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.adminAddr, "admin-addr", ":7443", "address of the admin API (gRPC, gRPC-Web, Connect/JSON, /healthz, /readyz, /metrics)")
	fs.StringVar(&f.agentAddr, "agent-addr", ":7444", "address of the agent API (grpc-go, SPIFFE mTLS; enrollment over server-authenticated TLS)")
	fs.StringVar(&f.trustDomain, "trust-domain", "cairn.local", "SPIFFE trust domain of agents and the control plane")
	fs.StringVar(&f.caDir, "ca-dir", "", "directory of the agent CA's certificates and keys (0600); empty means <data-dir>/ca. Replicas must share it")
	fs.StringVar(&f.agentNames, "agent-api-names", "localhost,127.0.0.1", "comma-separated DNS names and IPs of the agent API for its serving certificate (agents check its SPIFFE ID; grpcurl checks these)")
	fs.StringVar(&f.signingDir, "signing-dir", "", "directory of the config-signing root and signing keys (0600); empty means <data-dir>/signing. Replicas must share it")
	fs.StringVar(&f.spireTrustDomain, "spire-trust-domain", "", "also admit agents whose SVIDs come from this SPIRE trust domain (with --spire-bundle and --spire-agents)")
	fs.StringVar(&f.spireBundle, "spire-bundle", "", "PEM file of the SPIRE trust domain's CA certificates (spire-server bundle show)")
	fs.StringVar(&f.spireAgents, "spire-agents", "", `JSON file mapping SPIRE SPIFFE IDs to data planes: [{"spiffe_id" or "spiffe_id_prefix", "tenant_id", "data_plane_id"}]`)
	fs.DurationVar(&f.svidTTL, "svid-ttl", agentapi.DefaultSVIDTTL, "lifetime of agent X.509-SVIDs")
	fs.StringVar(&f.dataDir, "data-dir", ".cairn", "directory for the embedded SQLite database and local state")
	fs.StringVar(&f.databaseURL, "database-url", "", "database: postgres://… or cockroachdb://… for a PostgreSQL-wire server; empty means SQLite at <data-dir>/cairn.db")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate chain for the admin API")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for the admin API")
	fs.BoolVar(&f.insecure, "insecure", false, "serve the admin API in plaintext (local development only)")
	fs.StringVar(&f.bootstrapTokenFile, "bootstrap-token-file", "", "file holding the bootstrap operator token; created (0600) with a new token if missing. Empty: on first start the token is printed once to stdout")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fs.IntVar(&f.maxMessageBytes, "max-message-bytes", server.DefaultMaxMessageBytes, "largest admin API request accepted, in bytes")
	fs.Float64Var(&f.streamAdmitRate, "stream-admit-rate", agentapi.DefaultStreamAdmitRate, "new agent config streams admitted per second by this replica; beyond it (and the burst) agents are told to retry later (RESOURCE_EXHAUSTED with a retry delay)")
	fs.IntVar(&f.streamAdmitBurst, "stream-admit-burst", agentapi.DefaultStreamAdmitBurst, "new agent config streams admitted at once beyond --stream-admit-rate")
	fs.DurationVar(&f.heartbeatEvery, "heartbeat-interval", agentapi.DefaultHeartbeatEvery, "how often an idle config stream gets a signed heartbeat (one is sent at most 1.5 intervals after the last heartbeat or update); keep it well below agents' --stale-after")
	fs.DurationVar(&f.streamSendTimeout, "stream-send-timeout", agentapi.DefaultStreamSendTimeout, "how long a send to an agent that stopped reading may block before its connection is closed (the agent reconnects and resumes)")
	fs.Int64Var(&f.historyKeep, "history-revisions", 1000, "revisions of each data plane's log kept for agents to catch up by deltas; agents further behind get a snapshot")
	fs.DurationVar(&f.historyMaxAge, "history-max-age", 7*24*time.Hour, "revisions older than this are compacted too (the newest is always kept)")
	fs.DurationVar(&f.metricsRetention, "metrics-retention", 24*time.Hour, "how long agents' reported metric points are kept")
	fs.DurationVar(&f.maintainEvery, "maintain-interval", time.Minute, "how often signing keys are checked for rotation and the revision log and metrics compacted")
	fs.DurationVar(&f.rolloutTick, "rollout-tick", rollout.DefaultTick, "how often the rollout engine (on the replica holding its lease) moves rollouts on")
	fs.DurationVar(&f.rolloutLeaseTTL, "rollout-lease-ttl", rollout.DefaultLeaseTTL, "how long the rollout engine's lease outlives its holder: another replica takes over rollouts this long after the holder dies")
	fs.Usage = flagenv.Usage(fs, envPrefix, "usage: cairn-controlplane [flags]\n\nRuns the Cairn regional control plane.", stderr)
	if err := flagenv.Parse(fs, envPrefix, args, getenv); err != nil {
		return flags{}, err
	}
	if fs.NArg() > 0 {
		return flags{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	switch {
	case f.insecure && (f.tlsCert != "" || f.tlsKey != ""):
		return flags{}, errors.New("--insecure and --tls-cert/--tls-key are exclusive")
	case !f.insecure && (f.tlsCert == "" || f.tlsKey == ""):
		return flags{}, errors.New("the admin API needs --tls-cert and --tls-key, or --insecure for plaintext local development")
	case f.maxMessageBytes < 1024:
		return flags{}, errors.New("--max-message-bytes must be at least 1024")
	case f.svidTTL < time.Minute || f.svidTTL > 24*time.Hour:
		return flags{}, errors.New("--svid-ttl must be between 1m and 24h")
	case f.historyKeep < 1:
		return flags{}, errors.New("--history-revisions must be at least 1")
	case f.historyMaxAge < time.Minute:
		return flags{}, errors.New("--history-max-age must be at least 1m")
	case f.metricsRetention < time.Minute:
		return flags{}, errors.New("--metrics-retention must be at least 1m")
	case f.maintainEvery < 100*time.Millisecond || f.maintainEvery > time.Hour:
		return flags{}, errors.New("--maintain-interval must be between 100ms and 1h")
	case !(f.streamAdmitRate > 0) || f.streamAdmitBurst < 1:
		return flags{}, errors.New("--stream-admit-rate must be above 0 and --stream-admit-burst at least 1")
	case f.streamSendTimeout < time.Second:
		return flags{}, errors.New("--stream-send-timeout must be at least 1s")
	case f.heartbeatEvery < 100*time.Millisecond || f.heartbeatEvery > 10*time.Minute:
		return flags{}, errors.New("--heartbeat-interval must be between 100ms and 10m")
	case f.rolloutTick < 50*time.Millisecond || f.rolloutTick > time.Minute:
		return flags{}, errors.New("--rollout-tick must be between 50ms and 1m")
	case f.rolloutLeaseTTL < 2*f.rolloutTick || f.rolloutLeaseTTL > 10*time.Minute:
		return flags{}, errors.New("--rollout-lease-ttl must be at least twice --rollout-tick and at most 10m")
	}
	if _, err := spiffeid.TrustDomainFromString(f.trustDomain); err != nil {
		return flags{}, fmt.Errorf("--trust-domain: %w", err)
	}
	if set := []bool{f.spireTrustDomain != "", f.spireBundle != "", f.spireAgents != ""}; set[0] != set[1] || set[1] != set[2] {
		return flags{}, errors.New("--spire-trust-domain, --spire-bundle and --spire-agents go together")
	}
	if f.caDir == "" {
		f.caDir = filepath.Join(f.dataDir, "ca")
	}
	if f.signingDir == "" {
		f.signingDir = filepath.Join(f.dataDir, "signing")
	}
	return f, nil
}

// Run runs cairn-controlplane and returns its exit code: 0 after a clean
// shutdown, 2 for bad usage, 1 for any other failure.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "cairn-controlplane:", err)
		return 2
	}
	log, err := logging.New(f.logLevel, f.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "cairn-controlplane:", err)
		return 2
	}
	if err := run(ctx, f, log, stdout); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("cairn-controlplane failed", "error", err)
		return 1
	}
	log.Info("cairn-controlplane stopped")
	return 0
}

func run(ctx context.Context, f flags, log *slog.Logger, stdout io.Writer) error {
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dbURL := f.databaseURL
	if dbURL == "" {
		dbURL = "sqlite:" + filepath.Join(f.dataDir, "cairn.db")
	}
	st, err := store.Open(ctx, store.Config{URL: dbURL, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("store open", "backend", st.Backend())

	if err := auth.Bootstrap(ctx, st, f.bootstrapTokenFile, stdout); err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if !f.insecure {
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return fmt.Errorf("admin TLS: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else {
		log.Warn("admin API is serving plaintext (--insecure); use it only for local development")
	}
	td := spiffeid.RequireTrustDomainFromString(f.trustDomain)
	authority, err := ca.Open(ca.Config{Dir: f.caDir, TrustDomain: td, Logger: log})
	if err != nil {
		return err
	}
	keys, err := signer.Open(signer.Config{Dir: f.signingDir, Logger: log})
	if err != nil {
		return err
	}
	var spire *agentapi.SPIRE
	if f.spireTrustDomain != "" {
		if spire, err = agentapi.LoadSPIRE(f.spireTrustDomain, f.spireBundle, f.spireAgents); err != nil {
			return err
		}
		log.Info("admitting SPIRE agents", "trust_domain", f.spireTrustDomain, "mappings", len(spire.Agents))
	}
	lis, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer lis.Close()
	agentLis, err := net.Listen("tcp", f.agentAddr)
	if err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	defer agentLis.Close()
	envelopes, err := fanout.NewEnvelopes(fanout.Config{Store: st, Signer: keys, Logger: log})
	if err != nil {
		return err
	}
	hub, err := fanout.NewHub(st, 0, log, nil)
	if err != nil {
		return err
	}
	// This replica's own commits wake its streams at once; other replicas'
	// are seen at the hub's next poll.
	st.OnRevisions(hub.Notify)
	agents, err := agentapi.New(agentapi.Config{
		Envelopes: envelopes, Hub: hub,
		Listener: agentLis, Store: st, CA: authority, Signer: keys, TrustDomain: td, SVIDTTL: f.svidTTL, Logger: log,
		ServingNames: strings.Split(f.agentNames, ","), SPIRE: spire,
		StreamAdmitRate: f.streamAdmitRate, StreamAdmitBurst: f.streamAdmitBurst, StreamSendTimeout: f.streamSendTimeout,
		HeartbeatEvery: f.heartbeatEvery,
	})
	if err != nil {
		return err
	}
	engine, err := rollout.New(rollout.Config{Store: st, Logger: log, Tick: f.rolloutTick, LeaseTTL: f.rolloutLeaseTTL})
	if err != nil {
		return err
	}
	// The admin port's /metrics also serves the agent API's stream metrics
	// and the rollout engine's.
	srv, err := server.New(server.Config{
		Listener: lis, Store: st, TLS: tlsCfg, Logger: log, MaxMessageBytes: f.maxMessageBytes, CA: authority,
		SigningRoot: keys.RootPublicKey(), Metrics: append(agents.Metrics(), engine.Metrics()...),
	})
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Run(ctx) })
	g.Go(func() error { return agents.Run(ctx) })
	g.Go(func() error { return hub.Run(ctx) })
	g.Go(func() error { return engine.Run(ctx) })
	g.Go(func() error { return maintain(ctx, f, st, keys, log) })
	return g.Wait()
}

// maintain rotates the config-signing keys on schedule, compacts the
// revision log (entries beyond the newest --history-revisions of a data
// plane, or older than --history-max-age; agents further behind get a
// snapshot) and drops metric points past --metrics-retention, every
// --maintain-interval, until ctx ends.
func maintain(ctx context.Context, f flags, st *store.Store, keys *signer.Signer, log *slog.Logger) error {
	t := time.NewTicker(f.maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if changed, err := keys.MaybeRotate(); err != nil {
			log.Error("rotate signing keys", "error", err)
		} else if changed {
			log.Info("signing key set changed")
		}
		if n, err := st.CompactRevisions(ctx, f.historyKeep, f.historyMaxAge); err != nil {
			log.Warn("compact revision log", "error", err)
		} else if n > 0 {
			log.Info("compacted revision log", "entries", n)
		}
		if n, err := st.CompactMetrics(ctx, time.Now().Add(-f.metricsRetention)); err != nil {
			log.Warn("drop old metric points", "error", err)
		} else if n > 0 {
			log.Info("dropped old metric points", "points", n)
		}
	}
}
