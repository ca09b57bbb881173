package configsync_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/configsync"
	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/certs/signer"
	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// TestMain checks that no test leaves a goroutine behind: Session starts
// none, and every fake stream and connection is closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testDP  = "dp-1"
	timeout = 10 * time.Second
)

// fakeClock is a settable clock shared by the signer and the agent, so
// that key validity windows and expiry agree.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logWriter routes log output to the test log while the test runs.
type logWriter struct {
	mu   sync.Mutex
	tb   testing.TB
	done bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.tb.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func testLogger(tb testing.TB) *slog.Logger {
	w := &logWriter{tb: tb}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeCP is a ConfigService whose streams the test drives by hand.
type fakeCP struct {
	agentv1.UnimplementedConfigServiceServer
	streams chan *serverStream
}

// serverStream is the control plane's end of one stream. reqs receives
// what the agent sends and is closed when the stream ends; end makes the
// handler return its value.
type serverStream struct {
	ss   agentv1.ConfigService_StreamServer
	reqs chan *agentv1.StreamRequest
	end  chan error
}

func (f *fakeCP) Stream(ss agentv1.ConfigService_StreamServer) error {
	st := &serverStream{ss: ss, reqs: make(chan *agentv1.StreamRequest, 16), end: make(chan error, 1)}
	go func() {
		defer close(st.reqs)
		for {
			req, err := ss.Recv()
			if err != nil {
				return
			}
			st.reqs <- req
		}
	}()
	select {
	case f.streams <- st:
	case <-ss.Context().Done():
		return ss.Context().Err()
	}
	select {
	case err := <-st.end:
		return err
	case <-ss.Context().Done():
		return ss.Context().Err()
	}
}

// startCP serves a fakeCP over an in-memory listener without TLS and
// returns a client for it.
func startCP(tb testing.TB) (*fakeCP, agentv1.ConfigServiceClient) {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	cp := &fakeCP{streams: make(chan *serverStream)}
	agentv1.RegisterConfigServiceServer(srv, cp)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("grpc.NewClient: %v", err)
	}
	tb.Cleanup(func() {
		_ = conn.Close()
		srv.Stop()
		<-served
	})
	return cp, agentv1.NewConfigServiceClient(conn)
}

// model is the control plane's view of the data plane: what deltas are
// built against.
type model struct {
	rev  int64
	docs map[string]*agentv1.Document
}

func (m model) hash() string { return hashOf(slices.Collect(maps.Values(m.docs))) }

func doc(name string, version int64, content string) *agentv1.Document {
	return &agentv1.Document{
		Id: "id-" + name, ScopeType: "data_plane", ScopeId: testDP, Kind: "envoy/cluster", Name: name,
		Version: version, Content: []byte(content), MediaType: "application/json",
	}
}

func docKey(d *agentv1.Document) string {
	return configstate.Key(d.GetScopeType(), d.GetScopeId(), d.GetKind(), d.GetName())
}

func hashOf(docs []*agentv1.Document) string {
	entries := make([]configstate.Entry, len(docs))
	for i, d := range docs {
		entries[i] = configstate.Entry{Key: docKey(d), Version: d.Version, MediaType: d.MediaType, Content: d.Content}
	}
	return configstate.Hash(entries)
}

// harness is one agent (cache file and Syncer) and one control plane
// (signer and fake server) with a shared fake clock.
type harness struct {
	tb     testing.TB
	clock  *fakeClock
	signer *signer.Signer
	cp     *fakeCP
	client agentv1.ConfigServiceClient
	path   string
	cache  *cache.Cache
	syncer *configsync.Syncer
	cfg    configsync.Config // without Cache; restart fills it in
	m      model             // what the control plane has sent and the agent acked
}

// newHarness starts a fresh agent. edit, if not nil, adjusts the Syncer's
// config.
func newHarness(tb testing.TB, edit func(*configsync.Config)) *harness {
	tb.Helper()
	clock := &fakeClock{t: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	sg, err := signer.Open(signer.Config{Dir: filepath.Join(tb.TempDir(), "signer"), Now: clock.Now, Grace: time.Hour})
	if err != nil {
		tb.Fatalf("signer.Open: %v", err)
	}
	h := &harness{
		tb: tb, clock: clock, signer: sg,
		path: filepath.Join(tb.TempDir(), "cache.db"),
		m:    model{docs: map[string]*agentv1.Document{}},
		cfg: configsync.Config{
			DataPlaneID: testDP, Root: sg.RootPublicKey(), Logger: testLogger(tb), Now: clock.Now,
		},
	}
	if edit != nil {
		edit(&h.cfg)
	}
	h.cp, h.client = startCP(tb)
	h.restart()
	return h
}

// restart closes the cache, if open, and opens it again under a new
// Syncer, as a restarted agent does.
func (h *harness) restart() {
	h.tb.Helper()
	if h.cache != nil {
		if err := h.cache.Close(); err != nil {
			h.tb.Fatalf("close cache: %v", err)
		}
	}
	c, err := cache.Open(h.path)
	if err != nil {
		h.tb.Fatalf("cache.Open: %v", err)
	}
	h.tb.Cleanup(func() { _ = c.Close() })
	cfg := h.cfg
	cfg.Cache = c
	s, err := configsync.New(cfg)
	if err != nil {
		h.tb.Fatalf("configsync.New: %v", err)
	}
	h.cache, h.syncer = c, s
}

func envelopePB(env sign.Envelope) *agentv1.SignedEnvelope {
	out := &agentv1.SignedEnvelope{PayloadType: env.PayloadType, Payload: env.Payload}
	for _, s := range env.Signatures {
		out.Signatures = append(out.Signatures, &agentv1.Signature{KeyId: s.KeyID, Sig: s.Sig})
	}
	return out
}

func marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		tb.Fatalf("marshal %T: %v", m, err)
	}
	return b
}

// signWith signs m as payloadType with sg's active key.
func (h *harness) signWith(sg *signer.Signer, payloadType string, m proto.Message) *agentv1.SignedEnvelope {
	h.tb.Helper()
	return envelopePB(sg.Sign(payloadType, marshal(h.tb, m)))
}

func (h *harness) sign(payloadType string, m proto.Message) *agentv1.SignedEnvelope {
	h.tb.Helper()
	return h.signWith(h.signer, payloadType, m)
}

func (h *harness) keySet() *agentv1.SignedEnvelope {
	return envelopePB(h.signer.KeySetEnvelope())
}

// delta builds the delta that puts docs on top of h.m, and the model after
// it; h.m is not changed.
func (h *harness) delta(docs ...*agentv1.Document) (*agentv1.DeltaPayload, model) {
	next := model{rev: h.m.rev + 1, docs: maps.Clone(h.m.docs)}
	var ops []*agentv1.Operation
	for _, d := range docs {
		next.docs[docKey(d)] = d
		ops = append(ops, &agentv1.Operation{Kind: agentv1.Operation_KIND_PUT, Document: d})
	}
	now := h.clock.Now()
	return &agentv1.DeltaPayload{
		DataPlaneId: testDP, FromRevision: h.m.rev, ToRevision: next.rev,
		PrevStateHash: h.m.hash(), StateHash: next.hash(),
		IssueTime: timestamppb.New(now), ExpireTime: timestamppb.New(now.Add(time.Hour)),
		Operations: ops,
	}, next
}

// session is one running Session and the control plane's end of it.
type session struct {
	h     *harness
	srv   *serverStream
	hello *agentv1.Hello
	errc  chan error
	done  bool
	n     int
}

// start opens a stream, runs Session on it and reads the Hello.
func (h *harness) start() *session {
	h.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := h.client.Stream(ctx)
	if err != nil {
		cancel()
		h.tb.Fatalf("open stream: %v", err)
	}
	s := &session{h: h, errc: make(chan error, 1)}
	go func() { s.errc <- h.syncer.Session(ctx, stream) }()
	h.tb.Cleanup(func() {
		cancel()
		if !s.done {
			<-s.errc
		}
	})
	select {
	case s.srv = <-h.cp.streams:
	case <-time.After(timeout):
		h.tb.Fatal("the control plane got no stream")
	}
	req := s.next()
	if req.GetHello() == nil {
		h.tb.Fatalf("first message %v; want Hello", req)
	}
	s.hello = req.GetHello()
	return s
}

// next returns what the agent sends next.
func (s *session) next() *agentv1.StreamRequest {
	s.h.tb.Helper()
	select {
	case req, ok := <-s.srv.reqs:
		if !ok {
			s.h.tb.Fatal("the stream ended; want a message from the agent")
		}
		return req
	case <-time.After(timeout):
		s.h.tb.Fatal("the agent sent nothing")
		return nil
	}
}

// send sends msg with a new nonce and returns the nonce.
func (s *session) send(msg *agentv1.StreamResponse) string {
	s.h.tb.Helper()
	s.n++
	msg.Nonce = fmt.Sprintf("nonce-%d", s.n)
	if err := s.srv.ss.Send(msg); err != nil {
		s.h.tb.Fatalf("send: %v", err)
	}
	return msg.Nonce
}

func (s *session) update(env *agentv1.SignedEnvelope) string {
	s.h.tb.Helper()
	return s.send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Update{Update: env}})
}

func (s *session) keySet(env *agentv1.SignedEnvelope) string {
	s.h.tb.Helper()
	return s.send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_KeySet{KeySet: env}})
}

func (s *session) heartbeat(env *agentv1.SignedEnvelope) {
	s.h.tb.Helper()
	s.send(&agentv1.StreamResponse{Msg: &agentv1.StreamResponse_Heartbeat{Heartbeat: env}})
}

func (s *session) expectAck(nonce string, revision int64) {
	s.h.tb.Helper()
	want := &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Ack{Ack: &agentv1.Ack{Revision: revision, Nonce: nonce}}}
	if diff := cmp.Diff(want, s.next(), protocmp.Transform()); diff != "" {
		s.h.tb.Fatalf("reply (-want +got):\n%s", diff)
	}
}

// expectNack checks the reply is a Nack with reason and returns its
// detail.
func (s *session) expectNack(nonce string, revision int64, reason agentv1.NackReason) string {
	s.h.tb.Helper()
	got := s.next()
	want := &agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Nack{Nack: &agentv1.Nack{Revision: revision, Nonce: nonce, Reason: reason}}}
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&agentv1.Nack{}, "detail")); diff != "" {
		s.h.tb.Fatalf("reply (-want +got):\n%s", diff)
	}
	return got.GetNack().GetDetail()
}

// giveKeySet sends the signer's current key set and expects an Ack.
func (s *session) giveKeySet() {
	s.h.tb.Helper()
	s.expectAck(s.keySet(s.h.keySet()), 0)
}

// barrier waits until the agent has handled everything sent before: it
// sends the current key set again, which the agent acknowledges.
func (s *session) barrier() {
	s.h.tb.Helper()
	s.giveKeySet()
}

// apply sends delta, expects its Ack and moves the model on.
func (s *session) apply(docs ...*agentv1.Document) *agentv1.SignedEnvelope {
	s.h.tb.Helper()
	p, next := s.h.delta(docs...)
	env := s.h.sign(configsync.DeltaType, p)
	s.expectAck(s.update(env), p.ToRevision)
	s.h.m = next
	return env
}

// finish ends the stream from the control plane's side with err and
// returns what Session returned.
func (s *session) finish(err error) error {
	s.h.tb.Helper()
	s.srv.end <- err
	select {
	case got := <-s.errc:
		s.done = true
		return got
	case <-time.After(timeout):
		s.h.tb.Fatal("Session did not return")
		return nil
	}
}

// snapshot is what the cache holds, for comparing before and after a
// refusal.
type snapshot struct {
	State         cache.State
	Docs          []*agentv1.Document
	KeySetVersion int64
	KeySet        []byte
}

func (h *harness) snapshot() snapshot {
	v, ks := h.cache.KeySet()
	return snapshot{State: h.cache.State(), Docs: h.cache.List(""), KeySetVersion: v, KeySet: ks}
}

// newRoot returns a root key pair not held by any signer, for crafting key
// sets by hand.
func newRoot(tb testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return pub, priv
}
