// Package cli is cairn-agent's command line: flags and environment into
// the daemon's Config. It holds no logic beyond that wiring.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/agent/internal/daemon"
	"github.com/cairnhq/cairn/agent/internal/identity"
	"github.com/cairnhq/cairn/agent/internal/render"
	"github.com/cairnhq/cairn/agent/internal/report"
	"github.com/cairnhq/cairn/agent/internal/upgrade"
	"github.com/cairnhq/cairn/internal/flagenv"
	"github.com/cairnhq/cairn/internal/logging"
)

const envPrefix = "CAIRN_AGENT"

// Version is the agent's build version, reported at enrollment.
const Version = "0.1.0-dev"

type flags struct {
	controlPlane   string
	dataDir        string
	joinToken      string
	joinTokenFile  string
	caBundle       string
	caPin          string
	spiffeSocket   string
	localSocket    string
	httpAddr       string
	trustDomain    string
	logLevel       string
	logFormat      string
	render         renderRules
	reloadCommand  []string
	reloadTimeout  time.Duration
	dataPlaneID    string
	upgradeHook    []string
	upgradeTimeout time.Duration
	signingRoot    string
	queueMax       int
	statusEvery    time.Duration
	progressDelay  time.Duration
	metricsEvery   time.Duration
	staleAfter     time.Duration
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("cairn-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.controlPlane, "control-plane", "", "agent API address of the control plane, host:port (required)")
	fs.StringVar(&f.dataDir, "data-dir", "/var/lib/cairn-agent", "directory for the agent's identity (key 0600) and state")
	fs.StringVar(&f.joinToken, "join-token", "", "single-use join token from the admin API; needed only for the first start. Prefer --join-token-file: arguments are visible to other users")
	fs.StringVar(&f.joinTokenFile, "join-token-file", "", "file holding the join token")
	fs.StringVar(&f.caBundle, "ca-bundle", "", "PEM file of the control plane's CA certificates, to trust it at enrollment")
	fs.StringVar(&f.caPin, "ca-pin", "", "sha256:<hex> pin of the control plane CA's public key, instead of --ca-bundle")
	fs.StringVar(&f.spiffeSocket, "spiffe-socket", "", "take the SVID from this SPIFFE Workload API (SPIRE agent), e.g. unix:///run/spire/sockets/agent.sock, instead of enrolling; needs --ca-bundle")
	fs.StringVar(&f.dataPlaneID, "data-plane-id", "", "with --spiffe-socket: the data plane the control plane maps this agent to, so it syncs that data plane's config (with --signing-root)")
	fs.StringVar(&f.signingRoot, "signing-root", "", "with --spiffe-socket: PEM file of the config-signing root public key (admin API GetTrustBundle signing_root_pem)")
	fs.StringVar(&f.trustDomain, "trust-domain", "cairn.local", "Cairn's trust domain (used with --spiffe-socket)")
	fs.StringVar(&f.localSocket, "local-socket", "", "Unix socket of the local config read API for data-plane services (mode 0660); empty means <data-dir>/agent.sock")
	fs.StringVar(&f.httpAddr, "http-addr", "", "address of /healthz and /metrics, e.g. 127.0.0.1:7445; empty serves neither")
	fs.Var(&f.render, "render", renderUsage)
	reloadCommand := fs.String("reload-command", "", `command to run after rendered files change, no shell: words separated by spaces, or a JSON array of strings such as ["nginx","-s","reload"]; needs --render`)
	fs.DurationVar(&f.reloadTimeout, "reload-timeout", render.DefaultReloadTimeout, "how long the reload command may run before it is killed")
	upgradeHook := fs.String("upgrade-hook", "", `command that upgrades one cluster to the version its cairn.dev/desired-version document names, no shell (words, or a JSON array); it gets CAIRN_CLUSTER_ID, CAIRN_TARGET_VERSION and CAIRN_CURRENT_VERSION and must exit 0 once the cluster runs the target`)
	fs.DurationVar(&f.upgradeTimeout, "upgrade-timeout", upgrade.DefaultTimeout, "how long one run of the upgrade hook may take before it is killed")
	fs.IntVar(&f.queueMax, "report-queue-max", 10000, "reports (status and metric batches) kept on disk while the control plane is unreachable; the oldest are dropped, and counted, past it")
	fs.DurationVar(&f.statusEvery, "status-interval", time.Minute, "how often the status is re-sent when it has not changed (changes are sent at once, but see --status-progress-delay)")
	fs.DurationVar(&f.progressDelay, "status-progress-delay", report.DefaultProgressDelay, "a status that changed only in its applied revision and state hash is sent a random time up to this long later, so a data plane's agents spread their reports of a config change (the config stream's ACK records the applied revision at once); 0 sends it at once")
	fs.DurationVar(&f.metricsEvery, "metrics-interval", 30*time.Second, "how often the agent's own metrics and those pushed to it are batched for the control plane")
	fs.DurationVar(&f.staleAfter, "stale-after", configsync.DefaultStaleAfter, "the agent reports itself stale when no fresh signed heartbeat arrived for this long")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fs.Usage = flagenv.Usage(fs, envPrefix, "usage: cairn-agent [flags]\n\nRuns the Cairn agent in a data plane.", stderr)
	if err := flagenv.Parse(fs, envPrefix, args, getenv); err != nil {
		return flags{}, err
	}
	if fs.NArg() > 0 {
		return flags{}, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if f.controlPlane == "" {
		return flags{}, errors.New("--control-plane is required")
	}
	if f.joinToken != "" && f.joinTokenFile != "" {
		return flags{}, errors.New("--join-token and --join-token-file are exclusive")
	}
	if f.spiffeSocket != "" && (f.caBundle == "" || f.caPin != "" || f.joinToken != "" || f.joinTokenFile != "") {
		return flags{}, errors.New("--spiffe-socket needs --ca-bundle and takes no join token or pin")
	}
	if (f.dataPlaneID != "" || f.signingRoot != "") && (f.spiffeSocket == "" || f.dataPlaneID == "" || f.signingRoot == "") {
		return flags{}, errors.New("--data-plane-id and --signing-root go together, with --spiffe-socket (enrolled agents learn both at enrollment)")
	}
	var err error
	if f.upgradeHook, err = parseCommand("--upgrade-hook", *upgradeHook); err != nil {
		return flags{}, err
	}
	if f.reloadCommand, err = parseCommand("--reload-command", *reloadCommand); err != nil {
		return flags{}, err
	}
	if f.reloadCommand != nil && f.render == nil {
		return flags{}, errors.New("--reload-command needs --render")
	}
	if _, err := spiffeid.TrustDomainFromString(f.trustDomain); err != nil {
		return flags{}, fmt.Errorf("--trust-domain: %w", err)
	}
	switch {
	case f.queueMax < 10:
		return flags{}, errors.New("--report-queue-max must be at least 10")
	case f.statusEvery < time.Second:
		return flags{}, errors.New("--status-interval must be at least 1s")
	case f.progressDelay < 0:
		return flags{}, errors.New("--status-progress-delay must not be negative")
	case f.metricsEvery < 100*time.Millisecond:
		return flags{}, errors.New("--metrics-interval must be at least 100ms")
	case f.staleAfter < time.Second:
		return flags{}, errors.New("--stale-after must be at least 1s")
	}
	return f, nil
}

// progressDelay is --status-progress-delay as a report.Config.ProgressDelay,
// where at once is negative (0 is the default there).
func progressDelay(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// Run runs cairn-agent and returns its exit code: 0 after a clean stop, 2
// for bad usage, 3 when the agent is revoked, 1 for any other failure.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	f, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "cairn-agent:", err)
		return 2
	}
	log, err := logging.New(f.logLevel, f.logFormat, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "cairn-agent:", err)
		return 2
	}
	token := f.joinToken
	if f.joinTokenFile != "" {
		b, err := os.ReadFile(f.joinTokenFile)
		if err != nil {
			fmt.Fprintln(stderr, "cairn-agent:", err)
			return 2
		}
		token = strings.TrimSpace(string(b))
	}
	d, err := daemon.New(daemon.Config{
		Addr: f.controlPlane, Dir: f.dataDir, JoinToken: token,
		Trust:   identity.Trust{BundleFile: f.caBundle, Pin: f.caPin},
		Version: Version, Logger: log,
		SPIFFESocket: f.spiffeSocket, LocalSocket: f.localSocket, HTTPAddr: f.httpAddr, TrustDomain: spiffeid.RequireTrustDomainFromString(f.trustDomain),
		Render:      daemon.RenderConfig{Rules: f.render, ReloadCommand: f.reloadCommand, ReloadTimeout: f.reloadTimeout},
		Report:      daemon.ReportConfig{QueueMax: f.queueMax, StatusEvery: f.statusEvery, ProgressDelay: progressDelay(f.progressDelay), MetricsEvery: f.metricsEvery},
		StaleAfter:  f.staleAfter,
		DataPlaneID: f.dataPlaneID, SigningRootFile: f.signingRoot,
		UpgradeHook: f.upgradeHook, UpgradeTimeout: f.upgradeTimeout,
	})
	if err != nil {
		fmt.Fprintln(stderr, "cairn-agent:", err)
		return 2
	}
	err = d.Run(ctx)
	switch {
	case err == nil || errors.Is(err, context.Canceled):
		log.Info("cairn-agent stopped")
		return 0
	case errors.Is(err, daemon.ErrRevoked):
		log.Error("cairn-agent stopped", "error", err)
		return 3
	default:
		log.Error("cairn-agent failed", "error", err)
		return 1
	}
}
