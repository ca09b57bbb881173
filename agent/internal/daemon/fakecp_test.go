package daemon

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/certs"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

var td = spiffeid.RequireTrustDomainFromString("cairn.test")

// testCA is a minimal SPIFFE CA. The daemon tests use it rather than
// certs/ca because they need SVIDs of a few seconds that start now:
// certs/ca backdates every SVID by 30 seconds, so its SVIDs are never
// renewed sooner than about 12 seconds after issue.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(tb testing.TB) *testCA {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "daemon test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// sign issues an X.509-SVID for id to pub, valid for life from the start
// of the current second (certificates count in whole seconds, so a
// NotBefore with a fraction would be rounded down anyway).
func (c *testCA) sign(pub crypto.PublicKey, id spiffeid.ID, life time.Duration) (*x509.Certificate, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	nb := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber:          n,
		NotBefore:             nb,
		NotAfter:              nb.Add(life),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func (c *testCA) signCSR(csrDER []byte, id spiffeid.ID, life time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return c.sign(csr.PublicKey, id, life)
}

// fakeCP is a fake control plane agent API, served by grpc-go over real
// TLS like the real one: a serving SVID for the control plane's ID with
// the CA appended, client certificates optional at the TLS layer and
// verified against the bundle when given, every call but Enroll
// authenticated by the agent's SVID. Join tokens are single use; agents
// can be revoked, which closes their WatchBundle streams.
type fakeCP struct {
	agentv1.UnimplementedEnrollmentServiceServer
	agentv1.UnimplementedIdentityServiceServer
	agentv1.UnimplementedConfigServiceServer

	// signingRoot, when set, is given at enrollment, so that the daemon
	// syncs config; the fake's config stream sends only trust bundles.
	signingRoot ed25519.PublicKey
	// hellos are the config streams' Hellos.
	hellos chan *agentv1.Hello

	ca   *testCA
	addr string

	mu       sync.Mutex
	svidLife time.Duration
	bundle   []*x509.Certificate
	tokens   map[string]bool // token → used
	agents   map[string]bool // agent id → revoked
	nextID   int
	enrolls  int // Enroll calls, whatever their outcome
	renewals int // successful renewals
	watches  map[string]int
	// renewErr, if set, is returned by every RenewSVID.
	renewErr error
	// changed is closed when the bundle changes or an agent is revoked,
	// waking WatchBundle streams.
	changed chan struct{}
	// dropStreams ends every open WatchBundle stream with Unavailable.
	dropStreams chan struct{}
	// refuseWatches is how many of the next WatchBundle calls are refused
	// as Unauthenticated, as calls on a connection whose handshake SVID
	// has expired are.
	refuseWatches int
	// openWatches counts open WatchBundle streams by the agent's end of
	// their connection.
	openWatches map[string]int
	// accepted counts connections accepted.
	accepted atomic.Int64
}

// startFakeCP serves a new fake control plane on a free port.
func startFakeCP(tb testing.TB) *fakeCP {
	tb.Helper()
	f := newFakeCP(tb)
	f.serve(tb, "127.0.0.1:0")
	return f
}

// newFakeCP makes a fake control plane that does not serve yet.
func newFakeCP(tb testing.TB) *fakeCP {
	tb.Helper()
	f := &fakeCP{
		ca: newTestCA(tb), svidLife: time.Hour, tokens: map[string]bool{}, agents: map[string]bool{},
		watches: map[string]int{}, changed: make(chan struct{}), dropStreams: make(chan struct{}),
		openWatches: map[string]int{}, hellos: make(chan *agentv1.Hello, 16),
	}
	f.bundle = []*x509.Certificate{f.ca.cert}
	return f
}

// serve starts serving on addr and sets f.addr.
func (f *fakeCP) serve(tb testing.TB, addr string) {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := f.ca.sign(key.Public(), certs.ControlPlaneID(td), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	serving := tls.Certificate{Certificate: [][]byte{leaf.Raw, f.ca.cert.Raw}, PrivateKey: key, Leaf: leaf}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serving},
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil
			}
			_, _, err := x509svid.ParseAndVerify(raw, x509bundle.FromX509Authorities(td, f.bundleCerts()))
			return err
		},
	})))
	agentv1.RegisterEnrollmentServiceServer(srv, f)
	agentv1.RegisterIdentityServiceServer(srv, f)
	agentv1.RegisterConfigServiceServer(srv, f)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	f.addr = lis.Addr().String()
	go func() { _ = srv.Serve(countingListener{lis, &f.accepted}) }()
	tb.Cleanup(srv.Stop)
}

// pin is the --ca-pin of the fake's CA.
func (f *fakeCP) pin() string { return certs.SPKIPin(f.ca.cert) }

// newToken returns a fresh join token.
func (f *fakeCP) newToken() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	tok := fmt.Sprintf("cairn_jt_%d_%x", f.nextID, serialBytes())
	f.tokens[tok] = false
	return tok
}

func serialBytes() []byte {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return b
}

func (f *fakeCP) bundleCerts() []*x509.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bundle
}

func (f *fakeCP) setSVIDLife(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.svidLife = d
}

func (f *fakeCP) setRenewErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewErr = err
}

// setBundle sends a new bundle to every WatchBundle stream.
func (f *fakeCP) setBundle(cs ...*x509.Certificate) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bundle = cs
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCP) revoke(agentID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.agents[agentID] = true
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeCP) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.dropStreams)
	f.dropStreams = make(chan struct{})
}

type counts struct{ enrolls, renewals, agents int }

func (f *fakeCP) counts() counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counts{f.enrolls, f.renewals, len(f.agents)}
}

// refuseNextWatches makes the next n WatchBundle calls fail as
// Unauthenticated.
func (f *fakeCP) refuseNextWatches(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuseWatches = n
}

// openWatchesByConn returns how many WatchBundle streams are open on each
// connection, by the agent's address.
func (f *fakeCP) openWatchesByConn() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.openWatches)
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// watchCount is how many WatchBundle streams agentID has opened.
func (f *fakeCP) watchCount(agentID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches[agentID]
}

func (f *fakeCP) Enroll(_ context.Context, req *agentv1.EnrollRequest) (*agentv1.EnrollResponse, error) {
	f.mu.Lock()
	f.enrolls++
	used, ok := f.tokens[req.JoinToken]
	if !ok || used {
		f.mu.Unlock()
		return nil, status.Error(codes.Unauthenticated, "join token is invalid, used or expired")
	}
	f.tokens[req.JoinToken] = true
	f.nextID++
	agent := fmt.Sprintf("agent-%d", f.nextID)
	f.agents[agent] = false
	life, bundle := f.svidLife, f.bundle
	f.mu.Unlock()

	id, err := certs.AgentID(td, "tenant-1", "dp-1", agent)
	if err != nil {
		return nil, err
	}
	leaf, err := f.ca.signCSR(req.Csr, id, life)
	if err != nil {
		return nil, err
	}
	return &agentv1.EnrollResponse{
		AgentId: agent, TenantId: "tenant-1", DataPlaneId: "dp-1", SpiffeId: id.String(),
		SvidChain: [][]byte{leaf.Raw}, Bundle: ders(bundle), SigningRootKey: f.signingRoot,
	}, nil
}

// authenticate returns the calling agent's id, or PermissionDenied for an
// unknown or revoked one and Unauthenticated for an expired handshake SVID,
// as the real agent API does.
func (f *fakeCP) authenticate(ctx context.Context) (string, spiffeid.ID, error) {
	p, _ := peer.FromContext(ctx)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", spiffeid.ID{}, status.Error(codes.Unauthenticated, "client certificate required")
	}
	leaf := info.State.PeerCertificates[0]
	// Like the real agent API: a connection lives on after the SVID of
	// its handshake expires, but may do nothing more.
	if now := time.Now(); now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return "", spiffeid.ID{}, status.Error(codes.Unauthenticated, "client SVID is expired or not yet valid")
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return "", spiffeid.ID{}, status.Error(codes.Unauthenticated, err.Error())
	}
	ai, err := certs.ParseAgentID(id)
	if err != nil {
		return "", spiffeid.ID{}, status.Error(codes.PermissionDenied, err.Error())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if revoked, ok := f.agents[ai.AgentID]; !ok || revoked {
		return "", spiffeid.ID{}, status.Error(codes.PermissionDenied, "agent revoked")
	}
	return ai.AgentID, id, nil
}

func (f *fakeCP) RenewSVID(ctx context.Context, req *agentv1.RenewSVIDRequest) (*agentv1.RenewSVIDResponse, error) {
	_, id, err := f.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	life, bundle, renewErr := f.svidLife, f.bundle, f.renewErr
	f.mu.Unlock()
	if renewErr != nil {
		return nil, renewErr
	}
	leaf, err := f.ca.signCSR(req.Csr, id, life)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.renewals++
	f.mu.Unlock()
	return &agentv1.RenewSVIDResponse{SvidChain: [][]byte{leaf.Raw}, Bundle: ders(bundle)}, nil
}

func (f *fakeCP) WatchBundle(_ *agentv1.WatchBundleRequest, stream agentv1.IdentityService_WatchBundleServer) error {
	ctx := stream.Context()
	agent, _, err := f.authenticate(ctx)
	if err != nil {
		return err
	}
	from := "?"
	if p, ok := peer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	f.mu.Lock()
	if f.refuseWatches > 0 {
		f.refuseWatches--
		f.mu.Unlock()
		return status.Error(codes.Unauthenticated, "client SVID is expired or not yet valid")
	}
	f.watches[agent]++
	f.openWatches[from]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.openWatches[from]--; f.openWatches[from] == 0 {
			delete(f.openWatches, from)
		}
	}()
	for {
		f.mu.Lock()
		bundle, changed, drop, revoked := f.bundle, f.changed, f.dropStreams, f.agents[agent]
		f.mu.Unlock()
		if revoked {
			return status.Error(codes.PermissionDenied, "agent revoked")
		}
		if err := stream.Send(&agentv1.WatchBundleResponse{Bundle: ders(bundle), Time: timestamppb.Now()}); err != nil {
			return err
		}
		if err := awaitChange(ctx, changed, drop); err != nil {
			return err
		}
	}
}

// awaitChange waits for the bundle to change (nil), the fake to drop its
// streams (Unavailable) or the stream to end.
func awaitChange(ctx context.Context, changed, drop <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-drop:
		return status.Error(codes.Unavailable, "going away")
	case <-changed:
		return nil
	}
}

// Stream is a config stream that sends nothing but the trust bundle,
// when the Hello asks for it, at once and on every change.
func (f *fakeCP) Stream(stream agentv1.ConfigService_StreamServer) error {
	ctx := stream.Context()
	if _, _, err := f.authenticate(ctx); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := m.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be a Hello")
	}
	f.hellos <- hello
	for {
		f.mu.Lock()
		bundle, changed, drop := f.bundle, f.changed, f.dropStreams
		f.mu.Unlock()
		if hello.WantTrustBundle {
			if err := stream.Send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_TrustBundle{
				TrustBundle: &agentv1.TrustBundle{Certificates: ders(bundle)}}}); err != nil {
				return err
			}
		}
		if err := awaitChange(ctx, changed, drop); err != nil {
			return err
		}
	}
}

func ders(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Raw
	}
	return out
}

// logBuffer collects the daemon's log for assertions and copies each
// record to the test log while the test runs.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	tb   testing.TB
	done bool
}

func newLogger(tb testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{tb: tb}
	tb.Cleanup(func() {
		lb.mu.Lock()
		lb.done = true
		lb.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done {
		l.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// count returns how many log lines contain s.
func (l *logBuffer) count(s string) int {
	return strings.Count(l.String(), s)
}

// running is a daemon started by start.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// start runs a daemon with cfg until the test ends or stop is called.
func start(tb testing.TB, cfg Config) *running {
	tb.Helper()
	d, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			tb.Error("daemon did not stop within 10s of cancel")
		}
	})
	return r
}

// stop cancels the daemon and returns what Run returned.
func (r *running) stop(tb testing.TB) error {
	tb.Helper()
	r.cancel()
	return r.wait(tb, 10*time.Second)
}

// wait returns what Run returned, failing the test if it runs for longer
// than d.
func (r *running) wait(tb testing.TB, d time.Duration) error {
	tb.Helper()
	select {
	case err := <-r.done:
		r.done <- err // keep it for Cleanup and later waits
		return err
	case <-time.After(d):
		tb.Fatalf("daemon still running after %v", d)
		return nil
	}
}

// exited reports whether Run has returned, and what.
func (r *running) exited() (bool, error) {
	select {
	case err := <-r.done:
		r.done <- err
		return true, err
	default:
		return false, nil
	}
}

// mustBeRunning fails the test if Run has returned.
func (r *running) mustBeRunning(tb testing.TB) {
	tb.Helper()
	if ok, err := r.exited(); ok {
		tb.Fatalf("daemon exited: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddr returns a local address nothing listens on.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
