// Package agentapi serves the agent API: grpc-go on its own port, TLS from
// the control plane's own SVID. Enrollment is the one call accepted without
// a client certificate; every other call needs an X.509-SVID of our trust
// domain, verified by go-spiffe during the handshake, belonging to a
// registered agent that is not revoked. Handlers learn the caller only
// from its certificate. Revoked agents' streams are closed within a
// second on every replica, found by polling the store.
package agentapi

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// Defaults for Config fields left zero.
const (
	DefaultSVIDTTL              = time.Hour
	DefaultRevocationPoll       = 250 * time.Millisecond
	DefaultMaxConcurrentStreams = 16
	defaultServingTTL           = 24 * time.Hour
	// revocationLookback is how far back each poll looks, before the
	// start of the last successful poll: it covers ordinary clock skew
	// between replicas and a stream registered just after the poll that
	// should have closed it.
	revocationLookback = 5 * time.Second
	// reconcileEvery is how often every agent with an open stream is
	// rechecked against the store, which bounds the time to close a
	// revoked agent's streams even when clocks disagree by more than the
	// lookback.
	reconcileEvery = 2 * time.Second
	// serverStreamWindow and serverConnWindow are the agent API's static
	// HTTP/2 receive windows: a 1 MiB report batch crosses in four round
	// trips, and a connection can hold no more unread than this.
	serverStreamWindow = 256 << 10
	serverConnWindow   = 512 << 10
)

// Config configures the agent API server.
type Config struct {
	// Listener is where to serve. Required.
	Listener net.Listener
	// Store keeps agents and join tokens. Required.
	Store *store.Store
	// CA issues SVIDs and holds the trust bundle. Required.
	CA *ca.Authority
	// Signer holds the config-signing keys; its root public key is given
	// to agents at enrollment. Nil gives agents no root key (they cannot
	// receive signed config then).
	Signer *signer.Signer
	// TrustDomain is the agents' and control plane's trust domain. Required.
	TrustDomain spiffeid.TrustDomain
	// SVIDTTL is the lifetime of agent SVIDs; 0 means DefaultSVIDTTL.
	SVIDTTL time.Duration
	// RevocationPoll is how often the store is polled for revocations;
	// 0 means DefaultRevocationPoll.
	RevocationPoll time.Duration
	// MaxConcurrentStreams bounds streams per agent connection; 0 means
	// DefaultMaxConcurrentStreams.
	MaxConcurrentStreams uint32
	// ServingNames are DNS names and IP addresses put in the serving SVID
	// beside its SPIFFE ID, for tools that check host names (grpcurl);
	// agents authorize by SPIFFE ID and ignore them. Empty means
	// localhost and 127.0.0.1.
	ServingNames []string
	// Envelopes and Hub, when both set, serve ConfigService.Stream: the
	// signed config of the caller's data plane. Nil leaves it
	// unimplemented.
	Envelopes *fanout.Envelopes
	Hub       *fanout.Hub
	// HeartbeatEvery is how often idle streams get a signed heartbeat; 0
	// means DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration
	// StreamAdmitRate is how many new config streams per second this
	// server admits; streams beyond it (and the burst) are refused with
	// ResourceExhausted and a RetryInfo hint. 0 means
	// DefaultStreamAdmitRate.
	StreamAdmitRate float64
	// StreamAdmitBurst is how many new config streams may be admitted at
	// once beyond the rate; 0 means DefaultStreamAdmitBurst.
	StreamAdmitBurst int
	// StreamSendTimeout is how long one send on a config stream may block
	// (the agent stopped reading) before the agent's connection is closed
	// (sendWatch); 0 means DefaultStreamSendTimeout.
	StreamSendTimeout time.Duration
	// SPIRE, when set, also admits agents holding SVIDs of a SPIRE trust
	// domain, mapped to data planes; nil admits only enrolled agents.
	SPIRE *SPIRE
	// Logger; nil discards. Certificates and keys are never logged.
	Logger *slog.Logger
	// Now is the clock (SVID validity, heartbeats and last-seen records
	// are reckoned by it); nil means time.Now.
	Now func() time.Time
}

// Server is the agent API server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	grpc    *grpc.Server
	streams *streamRegistry
	regs    *registrations
	bundle  *bundleWatch
	admit   *admission
	metrics *streamMetrics
	// positions records config streams' positions off their goroutines;
	// heads shares their reads of data planes' heads.
	positions *positions
	reports   *reportGroups
	heads     *heads
	slots     storeSlots
	// sends ends config streams whose agent stopped reading.
	sends *sendWatch

	mu      sync.Mutex
	serving *tls.Certificate

	// lastPoll is the start of the last successful revocation poll; only
	// Run's goroutine touches it.
	lastPoll time.Time
}

// New checks cfg, issues the control plane's serving SVID and builds the
// gRPC server.
func New(cfg Config) (*Server, error) {
	if cfg.Listener == nil || cfg.Store == nil || cfg.CA == nil || cfg.TrustDomain.IsZero() {
		return nil, errors.New("agentapi: Listener, Store, CA and TrustDomain are required")
	}
	if cfg.SPIRE != nil {
		if cfg.SPIRE.TrustDomain == cfg.TrustDomain {
			return nil, errors.New("agentapi: the SPIRE trust domain must differ from Cairn's")
		}
		if err := cfg.SPIRE.check(); err != nil {
			return nil, fmt.Errorf("agentapi: %w", err)
		}
	}
	if cfg.SVIDTTL == 0 {
		cfg.SVIDTTL = min(DefaultSVIDTTL, cfg.CA.MaxSVIDTTL())
	}
	if cfg.SVIDTTL > cfg.CA.MaxSVIDTTL() {
		return nil, fmt.Errorf("agentapi: SVIDTTL %v exceeds the CA's maximum %v", cfg.SVIDTTL, cfg.CA.MaxSVIDTTL())
	}
	if cfg.RevocationPoll == 0 {
		cfg.RevocationPoll = DefaultRevocationPoll
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HeartbeatEvery == 0 {
		cfg.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if err := cfg.streamLimits(); err != nil {
		return nil, err
	}
	if len(cfg.ServingNames) == 0 {
		cfg.ServingNames = []string{"localhost", "127.0.0.1"}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slots := newStoreSlots(cfg.Store)
	s := &Server{cfg: cfg, log: log, streams: newStreamRegistry(), regs: newRegistrations(cfg.Now), bundle: newBundleWatch(cfg.CA.BundleCerts()),
		admit: newAdmission(cfg.StreamAdmitRate, cfg.StreamAdmitBurst, time.Now), metrics: newStreamMetrics(),
		positions: newPositions(cfg.Store, log), reports: newReportGroups(cfg.Store, log), heads: newHeads(cfg.Store), slots: slots,
		sends: newSendWatch(cfg.StreamSendTimeout)}
	if err := s.renewServing(); err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.serving, nil
		},
		// A client certificate is optional at the TLS layer only so that
		// Enroll can run; when one is presented, go-spiffe verifies it
		// against the current bundle, and the interceptors refuse every
		// other call without one.
		ClientAuth:            tls.RequestClientCert,
		VerifyPeerCertificate: s.verifyPeer,
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(connCreds{credentials.NewTLS(tlsConf)}),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxRecvMsgSize(1<<20),
		// Per-connection transport buffers were two thirds of the heap
		// with 10,000 agents connected (a 32 KiB read buffer per
		// connection, and 32 KiB write buffers that a fan-out takes for
		// every connection at once). TLS already buffers what it reads,
		// so the HTTP/2 framer reads the TLS connection directly; what
		// is written is mostly small deltas and heartbeats, batched in
		// pooled 8 KiB buffers.
		grpc.ReadBufferSize(0),
		grpc.WriteBufferSize(8<<10),
		// Static flow-control windows: grpc-go's bandwidth-delay
		// estimation answers the first data frame after each of its
		// measurements with a window update and a PING, which the agent
		// answers — for an ACK or a report, two more writes and reads on
		// each side, at every agent, for windows that small messages never
		// fill. What agents send is at most a 1 MiB report batch.
		grpc.StaticStreamWindowSize(serverStreamWindow),
		grpc.StaticConnWindowSize(serverConnWindow),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(s.unaryAuth),
		grpc.ChainStreamInterceptor(s.streamAuth),
	)
	agentv1.RegisterEnrollmentServiceServer(s.grpc, &enrollment{s: s})
	agentv1.RegisterIdentityServiceServer(s.grpc, &identity{s: s})
	agentv1.RegisterReportServiceServer(s.grpc, &reportService{s: s})
	if cfg.Envelopes != nil && cfg.Hub != nil {
		agentv1.RegisterConfigServiceServer(s.grpc, &configService{s: s})
	}
	reflection.Register(s.grpc)
	return s, nil
}

// verifyPeer checks a presented client certificate with go-spiffe against
// the CA bundle: an X.509-SVID of our trust domain.
func (s *Server) verifyPeer(raw [][]byte, _ [][]*x509.Certificate) error {
	if len(raw) == 0 {
		return nil
	}
	authorize := tlsconfig.AuthorizeMemberOf(s.cfg.TrustDomain)
	if s.cfg.SPIRE != nil {
		authorize = func(id spiffeid.ID, chains [][]*x509.Certificate) error {
			if id.MemberOf(s.cfg.TrustDomain) || id.MemberOf(s.cfg.SPIRE.TrustDomain) {
				return nil
			}
			return fmt.Errorf("%s is in neither trust domain", id)
		}
	}
	return tlsconfig.VerifyPeerCertificate(s.bundles(), authorize)(raw, nil)
}

// renewServing issues the control plane's own serving SVID; its chain
// carries the signing CA so that agents enrolling with only a CA pin can
// find the pinned key.
func (s *Server) renewServing() error {
	key, err := certs.NewKey()
	if err != nil {
		return fmt.Errorf("agentapi: serving key: %w", err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		return fmt.Errorf("agentapi: serving csr: %w", err)
	}
	var dns []string
	var ips []net.IP
	for _, n := range s.cfg.ServingNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	ttl := min(defaultServingTTL, s.cfg.CA.MaxSVIDTTL())
	chain, err := s.cfg.CA.SignServingSVID(csr, certs.ControlPlaneID(s.cfg.TrustDomain), ttl, dns, ips)
	if err != nil {
		return fmt.Errorf("agentapi: serving svid: %w", err)
	}
	cert := &tls.Certificate{PrivateKey: crypto.Signer(key), Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	cert.Certificate = append(cert.Certificate, s.cfg.CA.Active().Raw)
	s.mu.Lock()
	s.serving = cert
	s.mu.Unlock()
	return nil
}

// Run serves until ctx ends. Beside the gRPC server it polls for
// revocations, renews the serving SVID at half its life, and rotates the
// CA on schedule, telling the streams that follow the bundle when it
// changes.
func (s *Server) Run(ctx context.Context) error {
	// Positions are written until the streams have ended, then the last
	// ones are flushed.
	s.positions.start()
	defer s.positions.stop()
	// Report calls wait for their group's transaction: the writers run
	// until the last call has been answered (GracefulStop waits for it).
	s.reports.start()
	defer s.reports.stop()
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.cfg.Listener) }()
	s.log.Info("agent API serving", "addr", s.cfg.Listener.Addr().String(), "trust_domain", s.cfg.TrustDomain.String())
	revTick := time.NewTicker(s.cfg.RevocationPoll)
	defer revTick.Stop()
	reconcileTick := time.NewTicker(reconcileEvery)
	defer reconcileTick.Stop()
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() { defer close(sweepDone); s.sends.run(sweepCtx, s.log) }()
	// The sweeper runs until the streams have ended: a stream blocked in
	// Send during shutdown is ended by it.
	defer func() { stopSweep(); <-sweepDone }()
	// CA maintenance waits for the CA directory's lock, which another
	// replica may hold for a while: it runs on its own goroutine, so that
	// revocations are still polled and shutdown is not held up.
	caCtx, stopCA := context.WithCancel(ctx)
	caDone := make(chan struct{})
	go func() {
		defer close(caDone)
		caTick := time.NewTicker(time.Minute)
		defer caTick.Stop()
		for {
			select {
			case <-caCtx.Done():
				return
			case <-caTick.C:
				s.maintainCA()
			}
		}
	}()
	defer func() { stopCA(); <-caDone }()
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("agent API: %w", err)
		case <-ctx.Done():
			// Streams such as WatchBundle never end by themselves: end them
			// (agents see Unavailable and reconnect elsewhere), then let
			// unary calls finish.
			s.streams.closeAll(errShutdown)
			stopped := make(chan struct{})
			go func() { s.grpc.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second):
				s.grpc.Stop()
			}
			return nil
		case <-revTick.C:
			s.closeRevoked(ctx)
		case <-reconcileTick.C:
			s.reconcileRevoked(ctx)
		}
	}
}

// closeRevoked closes the streams of agents revoked since shortly before
// the last successful poll; a failed poll leaves the window to grow.
func (s *Server) closeRevoked(ctx context.Context) {
	start := s.cfg.Now()
	since := s.lastPoll
	if since.IsZero() {
		since = start
	}
	ids, err := s.cfg.Store.RevokedSince(ctx, since.Add(-revocationLookback))
	if err != nil {
		s.log.Warn("poll revocations", "error", err)
		return
	}
	s.lastPoll = start
	s.closeAgents(ids)
}

// reconcileRevoked rechecks every agent with an open stream or a remembered
// registration.
func (s *Server) reconcileRevoked(ctx context.Context) {
	open := s.streams.agents()
	seen := make(map[string]bool, len(open))
	for _, id := range open {
		seen[id] = true
	}
	for _, id := range s.regs.ids() {
		if !seen[id] {
			open = append(open, id)
		}
	}
	if len(open) == 0 {
		return
	}
	ids, err := s.cfg.Store.RevokedAmong(ctx, open)
	if err != nil {
		s.log.Warn("recheck revocations", "error", err)
		return
	}
	s.closeAgents(ids)
}

func (s *Server) closeAgents(ids []string) {
	s.regs.forget(ids)
	for _, id := range ids {
		if n := s.streams.closeAgent(id); n > 0 {
			s.log.Info("closed streams of revoked agent", "agent_id", id, "streams", n)
		}
	}
}

func (s *Server) maintainCA() {
	changed, err := s.cfg.CA.MaybeRotate()
	if err != nil {
		s.log.Error("CA rotation", "error", err)
	}
	if changed {
		s.bundle.set(s.cfg.CA.BundleCerts())
		s.log.Info("trust bundle changed", "cas", len(s.cfg.CA.BundleCerts()))
	}
	s.mu.Lock()
	leaf := s.serving.Leaf
	s.mu.Unlock()
	half := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	if changed || s.cfg.Now().After(half) {
		if err := s.renewServing(); err != nil {
			s.log.Error("renew serving SVID", "error", err)
		}
	}
}

// bundleWatch holds the current bundle and tells its subscribers
// (WatchBundle streams, config streams whose agent asked for it with
// Hello.want_trust_bundle) when it changes.
type bundleWatch struct {
	mu    sync.Mutex
	certs []*x509.Certificate
	subs  map[*func()]struct{}
}

func newBundleWatch(c []*x509.Certificate) *bundleWatch {
	return &bundleWatch{certs: c, subs: map[*func()]struct{}{}}
}

// subscribe calls fn, with the watch's lock held, whenever the bundle
// changes, until the returned function is called.
func (b *bundleWatch) subscribe(fn func()) (cancel func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[&fn] = struct{}{}
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, &fn)
	}
}

func (b *bundleWatch) get() []*x509.Certificate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.certs
}

func (b *bundleWatch) set(c []*x509.Certificate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.certs = c
	for fn := range b.subs {
		(*fn)()
	}
}

func derList(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Raw
	}
	return out
}
