package agentapi_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
	"github.com/cairnhq/cairn/internal/storetest"
)

type streamClient struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[agentv1.StreamRequest, agentv1.StreamResponse]
	ver    *sign.Verifier
}

func openStream(t *testing.T, e *env, a *testAgent, hello *agentv1.Hello, ver *sign.Verifier) *streamClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}
	return &streamClient{t: t, stream: stream, ver: ver}
}

func toEnvelope(e *agentv1.SignedEnvelope) sign.Envelope {
	out := sign.Envelope{PayloadType: e.PayloadType, Payload: e.Payload}
	for _, s := range e.Signatures {
		out.Signatures = append(out.Signatures, sign.Signature{KeyID: s.KeyId, Sig: s.Sig})
	}
	return out
}

// trustBundleType is what next returns for a TrustBundle message, which
// is not an envelope.
const trustBundleType = "trust bundle"

// next receives one message, verifying key sets against the root and
// updates and heartbeats against the key set.
func (c *streamClient) next() (*agentv1.StreamResponse, string) {
	c.t.Helper()
	m, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	switch msg := m.Msg.(type) {
	case *agentv1.StreamResponse_KeySet:
		if err := c.ver.UpdateKeySet(toEnvelope(msg.KeySet), time.Now()); err != nil {
			c.t.Fatalf("key set: %v", err)
		}
		return m, sign.KeySetPayloadType
	case *agentv1.StreamResponse_Update:
		if _, _, err := c.ver.Verify(toEnvelope(msg.Update), msg.Update.PayloadType, time.Now()); err != nil {
			c.t.Fatalf("update does not verify: %v", err)
		}
		return m, msg.Update.PayloadType
	case *agentv1.StreamResponse_Heartbeat:
		if _, _, err := c.ver.Verify(toEnvelope(msg.Heartbeat), fanout.HeartbeatType, time.Now()); err != nil {
			c.t.Fatalf("heartbeat does not verify: %v", err)
		}
		return m, fanout.HeartbeatType
	case *agentv1.StreamResponse_TrustBundle:
		return m, trustBundleType
	}
	c.t.Fatalf("unexpected message %v", m)
	return nil, ""
}

// nextUpdate skips heartbeats.
func (c *streamClient) nextUpdate() (*agentv1.StreamResponse, string) {
	c.t.Helper()
	for {
		m, typ := c.next()
		if typ != fanout.HeartbeatType {
			return m, typ
		}
	}
}

func (c *streamClient) send(m *agentv1.StreamRequest) {
	c.t.Helper()
	if err := c.stream.Send(m); err != nil {
		c.t.Fatal(err)
	}
}

func putDoc(t *testing.T, e *env, name string) {
	t.Helper()
	if _, err := e.Store.CreateConfigDocument(context.Background(), admin, "", store.ConfigDocument{
		ScopeType: store.ScopeDataPlane, ScopeID: e.DP.ID, Kind: "k", Name: name, Content: []byte(name), MediaType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
}

func TestConfigStream(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			e := start(t, options{StoreURL: b.URL(t), HeartbeatEvery: time.Hour})
			a := e.enrollAgent(t, e.DP.ID)
			ver := sign.NewVerifier(e.Signer.RootPublicKey())

			// A fresh agent gets the key set, then every revision as a delta.
			c := openStream(t, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e1"}, ver)
			if _, typ := c.next(); typ != sign.KeySetPayloadType {
				t.Fatalf("first message %s; want the key set", typ)
			}
			putDoc(t, e, "a")
			putDoc(t, e, "b")
			var last agentv1.DeltaPayload
			for want := int64(1); want <= 2; want++ {
				m, typ := c.nextUpdate()
				if typ != fanout.DeltaType || m.Nonce != strconv.FormatInt(want, 10) {
					t.Fatalf("got %s nonce %s; want delta %d", typ, m.Nonce, want)
				}
				if err := proto.Unmarshal(m.GetUpdate().Payload, &last); err != nil || last.ToRevision != want || last.DataPlaneId != e.DP.ID {
					t.Fatalf("delta %v, %v", &last, err)
				}
			}
			c.send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Ack{Ack: &agentv1.Ack{Revision: 2, Nonce: "2"}}})
			waitFor(t, "the ack recorded", func() bool {
				s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
				return err == nil && s.LastAppliedRevision == 2 && s.LastSentRevision == 2 && s.Epoch == "e1"
			})
			// The admin API's view: GetAgent carries the position, and the
			// agent is no longer behind revision 2.
			ag, err := e.Store.GetAgent(context.Background(), "", a.Resp.AgentId)
			if err != nil || ag.Sync == nil || ag.Sync.LastAppliedRevision != 2 {
				t.Fatalf("GetAgent sync %+v, %v", ag.Sync, err)
			}
			if behind, _, _ := e.Store.ListAgents(context.Background(), store.Filter{}, store.AgentFilter{BehindRevision: 2}, store.Page{Size: 10}); len(behind) != 0 {
				t.Fatalf("%d agents behind revision 2 after the ack; want 0", len(behind))
			}

			// A current agent resumes without a snapshot and gets only what is new.
			c2 := openStream(t, e, a, &agentv1.Hello{AppliedRevision: 2, StateHash: last.StateHash, Epoch: "e1", KeySetVersion: ver.KeySet().Version}, ver)
			putDoc(t, e, "c")
			if m, typ := c2.nextUpdate(); typ != fanout.DeltaType || m.Nonce != "3" {
				t.Fatalf("resumed agent got %s nonce %s; want delta 3 and no snapshot", typ, m.Nonce)
			}
			// A refused revision is not resent; the next revision brings a snapshot.
			c2.send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Nack{Nack: &agentv1.Nack{Revision: 3, Nonce: "3",
				Reason: agentv1.NackReason_NACK_REASON_CHAIN_BROKEN, Detail: "test"}}})
			waitFor(t, "the nack recorded", func() bool {
				s, err := e.Store.GetAgentSync(context.Background(), a.Resp.AgentId)
				return err == nil && s.LastNackRevision == 3 && s.LastNackReason == "NACK_REASON_CHAIN_BROKEN"
			})
			putDoc(t, e, "d")
			if _, typ := c2.nextUpdate(); typ != fanout.ResetType {
				t.Fatalf("after a nack and a newer revision got %s; want a snapshot (reset)", typ)
			}
			for {
				m, typ := c2.nextUpdate()
				if typ == fanout.SnapshotEndType {
					var end agentv1.SnapshotEndPayload
					if err := proto.Unmarshal(m.GetUpdate().Payload, &end); err != nil || end.Revision != 4 || m.Nonce != "snapshot-4" {
						t.Fatalf("snapshot end %v nonce %s; want revision 4", &end, m.Nonce)
					}
					break
				}
			}

			// An agent whose state is not the log's at its revision gets a snapshot.
			c3 := openStream(t, e, a, &agentv1.Hello{AppliedRevision: 2, StateHash: configstate.EmptyHash, Epoch: "e2", KeySetVersion: ver.KeySet().Version}, ver)
			if _, typ := c3.nextUpdate(); typ != fanout.ResetType {
				t.Fatalf("agent with a wrong state hash got %s; want a snapshot", typ)
			}
		})
	}
}

func TestConfigStreamHeartbeat(t *testing.T) {
	e := start(t, options{HeartbeatEvery: 50 * time.Millisecond})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	c := openStream(t, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, ver)
	c.next() // key set
	m, typ := c.next()
	if typ != fanout.HeartbeatType {
		t.Fatalf("idle stream got %s; want a heartbeat", typ)
	}
	var hb agentv1.HeartbeatPayload
	if err := proto.Unmarshal(m.GetHeartbeat().Payload, &hb); err != nil || hb.DataPlaneId != e.DP.ID || hb.Revision != 0 {
		t.Fatalf("heartbeat %v, %v", &hb, err)
	}
}

// TestHeartbeatAfterUpdates: updates sent on a stream put its next
// heartbeat off, as a heartbeat does, so the agents of a data plane that
// changes often verify one signed message per change, not a heartbeat
// besides. The server's clock is frozen and moved by the test; the
// stream's timer ticks on the wall clock and sends a heartbeat if the
// server's clock says one is due (half an interval after the last).
func TestHeartbeatAfterUpdates(t *testing.T) {
	const every = 100 * time.Millisecond
	clk := &clock{}
	clk.Freeze()
	e := start(t, options{CAClock: clk, HeartbeatEvery: every})
	a := e.enrollAgent(t, e.DP.ID)
	c := openStream(t, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	if _, typ := c.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("first message %s; want the key set", typ)
	}
	// The rest is received here, so the test can wait for nothing.
	type received struct {
		m   *agentv1.StreamResponse
		err error
	}
	in := make(chan received, 16)
	go func() {
		for {
			m, err := c.stream.Recv()
			in <- received{m, err}
			if err != nil {
				return
			}
		}
	}()
	next := func(what string) *agentv1.StreamResponse {
		t.Helper()
		select {
		case r := <-in:
			if r.err != nil {
				t.Fatalf("waiting for %s: %v", what, r.err)
			}
			return r.m
		case <-time.After(waitLimit):
			t.Fatalf("no %s within %v", what, waitLimit)
			return nil
		}
	}
	beatRevision := func(m *agentv1.StreamResponse) int64 {
		t.Helper()
		hb := m.GetHeartbeat()
		if hb == nil {
			t.Fatalf("got %v; want a heartbeat", m)
		}
		if _, _, err := c.ver.Verify(toEnvelope(hb), fanout.HeartbeatType, time.Now()); err != nil {
			t.Fatalf("heartbeat does not verify: %v", err)
		}
		var p agentv1.HeartbeatPayload
		if err := proto.Unmarshal(hb.Payload, &p); err != nil {
			t.Fatal(err)
		}
		return p.Revision
	}

	clk.Advance(every) // a heartbeat is due
	if rev := beatRevision(next("the first heartbeat")); rev != 0 {
		t.Fatalf("heartbeat names revision %d; want 0", rev)
	}
	clk.Advance(every * 3 / 10) // 0.3 intervals after it: not due
	putDoc(t, e, "a")
	if m := next("the update"); m.GetUpdate() == nil || m.Nonce != "1" {
		t.Fatalf("got %v; want the update of revision 1", m)
	}
	// 0.7 intervals after the heartbeat, 0.4 after the update: a heartbeat
	// would be due by the first one alone.
	clk.Advance(every * 4 / 10)
	select {
	case r := <-in:
		t.Fatalf("got %v, %v 0.4 heartbeat intervals after an update; want nothing before half an interval", r.m, r.err)
	case <-time.After(5 * every): // five ticks, or fewer on a loaded machine
	}
	clk.Advance(every * 2 / 10) // 0.6 intervals after the update
	if rev := beatRevision(next("the heartbeat after the update")); rev != 1 {
		t.Fatalf("heartbeat names revision %d; want 1", rev)
	}
}

// TestKeySetBeforeUpdates: a signing key rotated while a stream is open
// reaches the agent before the updates it signs, without waiting for a
// heartbeat (which a busy stream does not get).
func TestKeySetBeforeUpdates(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	c := openStream(t, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}, sign.NewVerifier(e.Signer.RootPublicKey()))
	if _, typ := c.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("first message %s; want the key set", typ)
	}
	if err := e.Signer.Rotate(); err != nil {
		t.Fatal(err)
	}
	putDoc(t, e, "a")
	// next verifies the update with the key set it got before it.
	if _, typ := c.next(); typ != sign.KeySetPayloadType {
		t.Fatalf("got %s after a rotation; want the new key set first", typ)
	}
	if m, typ := c.next(); typ != fanout.DeltaType || m.Nonce != "1" {
		t.Fatalf("got %s nonce %q; want delta 1", typ, m.Nonce)
	}
}

func TestConfigStreamNeedsHello(t *testing.T) {
	e := start(t, options{})
	a := e.enrollAgent(t, e.DP.ID)
	stream, err := agentv1.NewConfigServiceClient(e.dialMTLS(t, a.Src)).Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Ack{Ack: &agentv1.Ack{Revision: 1}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	wantCode(t, err, codes.InvalidArgument)
}

// TestIdleConfigStreamIsOneGoroutine: at rest a config stream is its
// handler's goroutine only (waiting for the agent's answers); a change
// starts a sender per stream, which exits once it has sent it.
func TestIdleConfigStreamIsOneGoroutine(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	const n = 3
	var streams []*streamClient
	for range n {
		c := openStreamWithin(t, 4*waitLimit, e, e.enrollAgent(t, e.DP.ID), &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"},
			sign.NewVerifier(e.Signer.RootPublicKey()))
		if _, typ := c.next(); typ != sign.KeySetPayloadType {
			t.Fatalf("first message %s; want the key set", typ)
		}
		streams = append(streams, c)
	}
	atRest := func() bool {
		return goroutinesIn("agentapi.(*configService).serve") == n && goroutinesIn("agentapi.(*configStream).run") == 0
	}
	waitFor(t, "one goroutine per idle stream", atRest)
	putDoc(t, e, "a")
	for _, c := range streams {
		if m, typ := c.nextUpdate(); typ != fanout.DeltaType || m.Nonce != "1" {
			t.Fatalf("got %s nonce %q; want delta 1", typ, m.Nonce)
		}
	}
	waitFor(t, "the senders to exit after the change", atRest)
}

// TestFirstMessagesInOrder: the key set comes before any update, also when
// a change is notified while the stream subscribes (a stream once started
// its sender on the notification alone and sent the delta first, which a
// new agent, with no key set yet, refused).
func TestFirstMessagesInOrder(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	putDoc(t, e, "a")
	conn := e.dialMTLS(t, a.Src)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				e.Hub.Notify(e.DP.ID)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for i := range 90 { // within the admission burst (100)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		stream, err := agentv1.NewConfigServiceClient(conn).Stream(ctx)
		if err == nil {
			err = stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}}})
		}
		var m *agentv1.StreamResponse
		if err == nil {
			m, err = stream.Recv()
		}
		cancel()
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if m.GetKeySet() == nil {
			t.Fatalf("stream %d: first message %v; want the key set", i, m)
		}
	}
}
