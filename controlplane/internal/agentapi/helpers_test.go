package agentapi_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/certs/ca"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/auth"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

var (
	td      = spiffeid.RequireTrustDomainFromString("cairn.test")
	otherTD = spiffeid.RequireTrustDomainFromString("other.test")
	admin   = store.Actor{ID: "test:admin"}
)

// waitLimit bounds every wait for something the server does on its own
// (a revocation poll, a stream closing). It is generous so that a loaded
// two-core CI machine passes; tests log the time actually taken.
const waitLimit = 10 * time.Second

// clock is a fake clock that runs with the wall clock, shifted by an
// offset the test moves. Only the CA, the server and the store read it;
// TLS verification in go-spiffe and crypto/tls uses the wall clock.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
	frozen time.Time // when not zero, the clock reads it (plus offset)
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen.IsZero() {
		return c.frozen.Add(c.offset)
	}
	return time.Now().Add(c.offset)
}

// Freeze stops the clock at the wall clock's time: from then on only
// Advance and Set move it.
func (c *clock) Freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.frozen = time.Now()
}

// Set moves the clock to the wall clock plus offset.
func (c *clock) Set(offset time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = offset
}

// Advance moves the clock forward by d.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// options configures start. Zero values give a SQLite store, real clocks
// and the package defaults.
type options struct {
	// StoreURL is a store URL; "" means a fresh SQLite file.
	StoreURL string
	// CAClock is the clock of the CA and the server; nil means time.Now.
	CAClock *clock
	// StoreClock is the store's clock; nil means time.Now.
	StoreClock *clock
	// CATTL is ca.Config.CATTL; 0 means the CA's default.
	CATTL time.Duration
	// SVIDTTL is agentapi.Config.SVIDTTL; 0 means the default.
	SVIDTTL time.Duration
	// RevocationPoll is agentapi.Config.RevocationPoll; 0 means 50ms.
	RevocationPoll time.Duration
	// HeartbeatEvery is agentapi.Config.HeartbeatEvery; 0 means the default.
	HeartbeatEvery time.Duration
}

// env is a running agent API: a real store, a real CA in a temporary
// directory, the server on a loopback port, and one tenant with one data
// plane to enroll into.
type env struct {
	Store  *store.Store
	CA     *ca.Authority
	Signer *signer.Signer
	Server *agentapi.Server
	Hub    *fanout.Hub
	Addr   string
	Tenant store.Tenant
	DP     store.DataPlane
	// Stop ends the server's context and returns how long Run took to
	// return; later calls return the same. Cleanup calls it too.
	Stop func() time.Duration

	enroll agentv1.EnrollmentServiceClient
}

// start starts an agent API for tb and stops it, with its store, in
// tb's cleanup.
func start(tb testing.TB, o options) *env {
	tb.Helper()
	logger := testLogger(tb)
	caNow, storeNow := time.Now, time.Now
	if o.CAClock != nil {
		caNow = o.CAClock.Now
	}
	if o.StoreClock != nil {
		storeNow = o.StoreClock.Now
	}
	if o.StoreURL == "" {
		o.StoreURL = storetest.SQLiteURL(tb)
	}
	if o.RevocationPoll == 0 {
		o.RevocationPoll = 50 * time.Millisecond
	}
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: o.StoreURL, Now: storeNow, Logger: logger})
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	tb.Cleanup(st.Close)
	authority, err := ca.Open(ca.Config{
		Dir: filepath.Join(tb.TempDir(), "ca"), TrustDomain: td, CATTL: o.CATTL,
		Now: caNow, Logger: logger,
	})
	if err != nil {
		tb.Fatalf("ca.Open: %v", err)
	}
	keys, err := signer.Open(signer.Config{Dir: filepath.Join(tb.TempDir(), "signing"), Logger: logger})
	if err != nil {
		tb.Fatalf("signer.Open: %v", err)
	}
	envelopes, err := fanout.NewEnvelopes(fanout.Config{Store: st, Signer: keys, Logger: logger})
	if err != nil {
		tb.Fatal(err)
	}
	hub, err := fanout.NewHub(st, 20*time.Millisecond, logger, nil)
	if err != nil {
		tb.Fatal(err)
	}
	hubCtx, hubCancel := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { _ = hub.Run(hubCtx); close(hubDone) }()
	tb.Cleanup(func() { hubCancel(); <-hubDone })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := agentapi.New(agentapi.Config{
		Envelopes: envelopes, Hub: hub, HeartbeatEvery: o.HeartbeatEvery,
		Listener: lis, Store: st, CA: authority, Signer: keys, TrustDomain: td,
		SVIDTTL: o.SVIDTTL, RevocationPoll: o.RevocationPoll, Logger: logger, Now: caNow,
	})
	if err != nil {
		lis.Close()
		tb.Fatalf("agentapi.New: %v", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			began := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				tb.Errorf("Run did not return 30s after its context ended")
			}
			took = time.Since(began)
		})
		return took
	}
	tb.Cleanup(func() { stop() })

	e := &env{Store: st, CA: authority, Signer: keys, Server: srv, Hub: hub, Addr: lis.Addr().String(), Stop: stop}
	e.Tenant, err = st.CreateTenant(ctx, admin, store.Tenant{Name: "acme"})
	if err != nil {
		tb.Fatalf("CreateTenant: %v", err)
	}
	e.DP = e.newDataPlane(tb, e.Tenant.ID, "dp-1")
	e.enroll = agentv1.NewEnrollmentServiceClient(e.dialServerAuth(tb))
	return e
}

func (e *env) newDataPlane(tb testing.TB, tenantID, name string) store.DataPlane {
	tb.Helper()
	dp, err := e.Store.CreateDataPlane(context.Background(), admin, "", store.DataPlane{TenantID: tenantID, Name: name, Region: "eu-1"})
	if err != nil {
		tb.Fatalf("CreateDataPlane: %v", err)
	}
	return dp
}

// joinToken creates a join token for the data plane and returns it as the
// admin API prints it, with its public id.
func (e *env) joinToken(tb testing.TB, dataPlaneID string, ttl time.Duration) (token, id string) {
	tb.Helper()
	sec := auth.NewJoinSecret()
	if _, err := e.Store.CreateJoinToken(context.Background(), admin, "", dataPlaneID, sec.ID, sec.Hash(), ttl); err != nil {
		tb.Fatalf("CreateJoinToken: %v", err)
	}
	return sec.String(), sec.ID
}

// dial opens a gRPC connection to the server, closed in tb's cleanup.
func (e *env) dial(tb testing.TB, conf *tls.Config) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(e.Addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		tb.Fatalf("grpc.NewClient: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// serverAuthTLS is what an agent uses before it has an SVID: it presents
// no certificate and accepts only the control plane's SVID under the
// bundle.
func (e *env) serverAuthTLS() *tls.Config {
	return tlsconfig.TLSClientConfig(e.CA.Bundle(), tlsconfig.AuthorizeID(certs.ControlPlaneID(td)))
}

func (e *env) dialServerAuth(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	return e.dial(tb, e.serverAuthTLS())
}

// mtlsTLS presents src's current SVID and verifies the control plane
// against src's bundle, as the agent does after enrollment.
func mtlsTLS(src *svidSource) *tls.Config {
	return tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(certs.ControlPlaneID(td)))
}

func (e *env) dialMTLS(tb testing.TB, src *svidSource) *grpc.ClientConn {
	tb.Helper()
	return e.dial(tb, mtlsTLS(src))
}

// svidSource is an agent's current SVID and trust bundle for go-spiffe's
// TLS configurations; each handshake takes what is current then and the
// source records which leaf it handed out.
type svidSource struct {
	mu     sync.Mutex
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
	served []*x509.Certificate
}

func newSource(svid *x509svid.SVID, bundle *x509bundle.Bundle) *svidSource {
	return &svidSource{svid: svid, bundle: bundle}
}

func (s *svidSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served = append(s.served, s.svid.Certificates[0])
	return s.svid, nil
}

func (s *svidSource) GetX509BundleForTrustDomain(t spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("no bundle for trust domain %q", t)
	}
	return s.bundle, nil
}

func (s *svidSource) set(svid *x509svid.SVID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.svid = svid
}

// lastServed is the leaf the latest handshake presented, or nil.
func (s *svidSource) lastServed() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.served) == 0 {
		return nil
	}
	return s.served[len(s.served)-1]
}

// testAgent is an enrolled agent: what Enroll answered and its identity.
type testAgent struct {
	Resp *agentv1.EnrollResponse
	ID   spiffeid.ID
	Src  *svidSource
}

// enrollAgent enrolls a new agent into the data plane over
// server-authenticated TLS, checks the answer holds together, and returns
// the agent.
func (e *env) enrollAgent(tb testing.TB, dataPlaneID string) *testAgent {
	tb.Helper()
	tok, _ := e.joinToken(tb, dataPlaneID, time.Hour)
	key, csr := newCSR(tb)
	resp, err := e.enroll.Enroll(context.Background(), &agentv1.EnrollRequest{JoinToken: tok, Csr: csr, AgentVersion: "test", Hostname: "host"})
	if err != nil {
		tb.Fatalf("Enroll: %v", err)
	}
	return agentFromResponse(tb, resp, key)
}

func agentFromResponse(tb testing.TB, resp *agentv1.EnrollResponse, key crypto.Signer) *testAgent {
	tb.Helper()
	chain := parseDERs(tb, resp.SvidChain)
	bundle := x509bundle.FromX509Authorities(td, parseDERs(tb, resp.Bundle))
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		tb.Fatalf("enrolled SVID does not verify against the returned bundle: %v", err)
	}
	if id.String() != resp.SpiffeId {
		tb.Fatalf("SVID names %s; response says %s", id, resp.SpiffeId)
	}
	svid := &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
	return &testAgent{Resp: resp, ID: id, Src: newSource(svid, bundle)}
}

// issue has authority sign an SVID for id directly, bypassing the API:
// how tests make certificates the API would never hand out.
func issue(tb testing.TB, authority *ca.Authority, id spiffeid.ID, ttl time.Duration) *x509svid.SVID {
	tb.Helper()
	key, csr := newCSR(tb)
	chain, err := authority.SignSVID(csr, id, ttl)
	if err != nil {
		tb.Fatalf("SignSVID(%s): %v", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}
}

func agentID(tb testing.TB, t spiffeid.TrustDomain, tenantID, dataPlaneID, agentID string) spiffeid.ID {
	tb.Helper()
	id, err := certs.AgentID(t, tenantID, dataPlaneID, agentID)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func newCSR(tb testing.TB) (crypto.Signer, []byte) {
	tb.Helper()
	key, err := certs.NewKey()
	if err != nil {
		tb.Fatal(err)
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, csr
}

func parseDERs(tb testing.TB, ders [][]byte) []*x509.Certificate {
	tb.Helper()
	out := make([]*x509.Certificate, 0, len(ders))
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			tb.Fatalf("parse certificate: %v", err)
		}
		out = append(out, c)
	}
	return out
}

func derList(cs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.Raw
	}
	return out
}

// renew calls RenewSVID with a new key and returns the new SVID after
// checking it is for want and that key.
func renew(ctx context.Context, tb testing.TB, client agentv1.IdentityServiceClient, want spiffeid.ID, bundle *x509bundle.Bundle) (*x509svid.SVID, error) {
	tb.Helper()
	key, csr := newCSR(tb)
	resp, err := client.RenewSVID(ctx, &agentv1.RenewSVIDRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	chain := parseDERs(tb, resp.SvidChain)
	id, _, err := x509svid.Verify(chain, bundle)
	if err != nil {
		tb.Fatalf("renewed SVID does not verify: %v", err)
	}
	if id != want {
		tb.Fatalf("renewed SVID names %s; want %s", id, want)
	}
	if !chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		tb.Fatalf("renewed SVID is not for the key in the CSR")
	}
	return &x509svid.SVID{ID: id, Certificates: chain, PrivateKey: key}, nil
}

// watchFirst opens a WatchBundle stream and returns it with its first
// message.
func watchFirst(ctx context.Context, client agentv1.IdentityServiceClient) (grpc.ServerStreamingClient[agentv1.WatchBundleResponse], *agentv1.WatchBundleResponse, error) {
	stream, err := client.WatchBundle(ctx, &agentv1.WatchBundleRequest{})
	if err != nil {
		return nil, nil, err
	}
	msg, err := stream.Recv()
	if err != nil {
		return nil, nil, err
	}
	return stream, msg, nil
}

// wantCode fails tb unless err carries the status code want.
func wantCode(tb testing.TB, err error, want codes.Code) {
	tb.Helper()
	if got := status.Code(err); got != want {
		tb.Errorf("got %v (%v); want %v", got, err, want)
	}
}

// agentCount is the number of registered agents, revoked or not.
func (e *env) agentCount(tb testing.TB) int {
	tb.Helper()
	n, after := 0, ""
	for {
		as, next, err := e.Store.ListAgents(context.Background(), store.Filter{}, store.AgentFilter{}, store.Page{After: after, Size: 100})
		if err != nil {
			tb.Fatalf("ListAgents: %v", err)
		}
		n += len(as)
		if next == "" {
			return n
		}
		after = next
	}
}

// auditEvents returns every audit event with the action, newest first.
func (e *env) auditEvents(tb testing.TB, action string) []store.AuditEvent {
	tb.Helper()
	var out []store.AuditEvent
	after := ""
	for {
		evs, next, err := e.Store.ListAuditEvents(context.Background(), store.AuditFilter{}, store.Page{After: after, Size: 200})
		if err != nil {
			tb.Fatalf("ListAuditEvents: %v", err)
		}
		for _, ev := range evs {
			if ev.Action == action {
				out = append(out, ev)
			}
		}
		if next == "" {
			return out
		}
		after = next
	}
}

// newEvents returns the events in now whose ids are not in before.
func newEvents(before, now []store.AuditEvent) []store.AuditEvent {
	var out []store.AuditEvent
	for _, ev := range now {
		if !slices.ContainsFunc(before, func(b store.AuditEvent) bool { return b.ID == ev.ID }) {
			out = append(out, ev)
		}
	}
	return out
}

// waitFor polls cond until it holds or waitLimit passes.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawHandshake opens a TLS connection with conf, speaks the HTTP/2
// preface and reads the server's first frame: nil means the server
// accepted the client's certificate, an error says why not. With TLS 1.3
// a client learns that its certificate was refused only on its first
// read, so a completed Handshake alone proves nothing.
func (e *env) rawHandshake(conf *tls.Config) error {
	conf = conf.Clone()
	conf.NextProtos = []string{"h2"}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: waitLimit}, Config: conf}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", e.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	// Client preface, then an empty SETTINGS frame.
	preface := append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)
	if _, err := c.Write(preface); err != nil {
		return err
	}
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	return nil
}

// testLogger routes logs to tb until tb's cleanups run.
func testLogger(tb testing.TB) *slog.Logger {
	w := &tbWriter{tb: tb}
	tb.Cleanup(w.stop) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(string(bytes.TrimSpace(p)))
	}
	return len(p), nil
}

func (w *tbWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
