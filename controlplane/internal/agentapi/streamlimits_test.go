package agentapi_test

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/certs/sign"
	"github.com/cairnhq/cairn/controlplane/internal/agentapi"
	"github.com/cairnhq/cairn/controlplane/internal/fanout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// startReplica starts a second agent API beside e's, sharing its store,
// CA and signing keys as replicas do, with configure applied to its
// Config; it returns a copy of e that talks to the new replica. Agents
// enrolled through either are served by both.
func startReplica(tb testing.TB, e *env, configure func(*agentapi.Config)) *env {
	tb.Helper()
	logger := testLogger(tb)
	envelopes, err := fanout.NewEnvelopes(fanout.Config{Store: e.Store, Signer: e.Signer, Logger: logger})
	if err != nil {
		tb.Fatal(err)
	}
	hub, err := fanout.NewHub(e.Store, 20*time.Millisecond, logger, nil)
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := agentapi.Config{Envelopes: envelopes, Hub: hub, Listener: lis, Store: e.Store, CA: e.CA, Signer: e.Signer,
		TrustDomain: td, RevocationPoll: 50 * time.Millisecond, Logger: logger}
	configure(&cfg)
	srv, err := agentapi.New(cfg)
	if err != nil {
		lis.Close()
		tb.Fatalf("agentapi.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hubDone, runDone := make(chan struct{}), make(chan error, 1)
	go func() { _ = hub.Run(ctx); close(hubDone) }()
	go func() { runDone <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		<-hubDone
		select {
		case err := <-runDone:
			if err != nil {
				tb.Errorf("replica Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("replica Run did not return 30s after its context ended")
		}
	})
	r := *e
	r.Server, r.Addr = srv, lis.Addr().String()
	r.Stop = func() time.Duration { cancel(); return 0 }
	return &r
}

// metrics returns the values of the server's metrics by name.
func metrics(tb testing.TB, srv *agentapi.Server) map[string]float64 {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(srv.Metrics()...)
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[mf.GetName()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}

// waitMetric waits until the server's metric has the value want.
func waitMetric(tb testing.TB, srv *agentapi.Server, name string, want float64) {
	tb.Helper()
	deadline := time.Now().Add(waitLimit)
	for got := metrics(tb, srv)[name]; got != want; got = metrics(tb, srv)[name] {
		if time.Now().After(deadline) {
			tb.Fatalf("%s is %v; want %v within %v", name, got, want, waitLimit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tryStream opens a config stream on conn and reads its first message:
// the key set when the stream was admitted, else the refusal.
func tryStream(ctx context.Context, conn *grpc.ClientConn) (grpc.BidiStreamingClient[agentv1.StreamRequest, agentv1.StreamResponse], error) {
	stream, err := agentv1.NewConfigServiceClient(conn).Stream(ctx)
	if err != nil {
		return nil, err
	}
	// A Send on a stream the server already ended fails with io.EOF;
	// the status comes from Recv.
	_ = stream.Send(&agentv1.StreamRequest{Msg: &agentv1.StreamRequest_Hello{Hello: &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e"}}})
	if _, err := stream.Recv(); err != nil {
		return nil, err
	}
	return stream, nil
}

// retryDelay returns the RetryInfo delay of a refusal, or -1 without one.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.RetryDelay.AsDuration()
		}
	}
	return -1
}

func TestConfigStreamAdmission(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	// One stream at once, then one a second: ten streams opened back to
	// back cannot all be admitted unless opening them takes nine seconds.
	r := startReplica(t, e, func(c *agentapi.Config) { c.StreamAdmitRate, c.StreamAdmitBurst = 1, 1 })
	a := e.enrollAgent(t, e.DP.ID)
	conn := r.dialMTLS(t, a.Src)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	admitted, refused := 0, 0
	var hint time.Duration
	for range 10 {
		_, err := tryStream(ctx, conn)
		if err == nil {
			admitted++
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream refused with %v; want ResourceExhausted", err)
		}
		refused++
		hint = retryDelay(err)
		if hint <= 0 || hint > 8*time.Minute {
			t.Fatalf("refusal carries retry delay %v; want a RetryInfo delay in (0, 8m]", hint)
		}
	}
	t.Logf("%d admitted, %d refused; last retry hint %v", admitted, refused, hint)
	if admitted == 0 || refused == 0 {
		t.Fatalf("%d admitted, %d refused; want both", admitted, refused)
	}
	m := metrics(t, r.Server)
	if m["cairn_agent_stream_admitted_total"] != float64(admitted) || m["cairn_agent_stream_refused_total"] != float64(refused) {
		t.Fatalf("metrics admitted %v, refused %v; want %d, %d", m["cairn_agent_stream_admitted_total"], m["cairn_agent_stream_refused_total"], admitted, refused)
	}
	waitMetric(t, r.Server, "cairn_agent_streams_open", float64(admitted))

	// Later, a token is free again: the agent is admitted.
	waitFor(t, "a stream admitted again", func() bool {
		_, err := tryStream(ctx, conn)
		if err != nil && status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("got %v; want admission or ResourceExhausted", err)
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
		return err == nil
	})

	// The other replica has its own budget with the default limits.
	if _, err := tryStream(ctx, e.dialMTLS(t, a.Src)); err != nil {
		t.Fatalf("stream on the other replica: %v", err)
	}
}

// goroutinesIn counts goroutines whose stack includes fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}

func TestConfigStreamDropsSlowAgent(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	r := startReplica(t, e, func(c *agentapi.Config) { c.StreamSendTimeout = 300 * time.Millisecond })
	a := e.enrollAgent(t, e.DP.ID)
	// A connection with gRPC's smallest static flow-control windows, so
	// that a stream that is not read blocks the server's Send after a few
	// hundred kilobytes.
	conn, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(credentials.NewTLS(mtlsTLS(a.Src))),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := tryStream(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	waitMetric(t, r.Server, "cairn_agent_streams_open", 1)
	// Another agent on the same replica keeps reading throughout.
	other, err := tryStream(ctx, r.dialMTLS(t, e.enrollAgent(t, e.DP.ID).Src))
	if err != nil {
		t.Fatal(err)
	}
	otherDone := make(chan error, 1)
	go func() {
		for updates := 0; updates < 6; {
			m, err := other.Recv()
			if err != nil {
				otherDone <- err
				return
			}
			if m.GetUpdate() != nil {
				updates++
			}
		}
		otherDone <- nil
	}()

	// The agent stops reading; the data plane's config grows by a
	// megabyte or so.
	for i := range 6 {
		if _, err := e.Store.CreateConfigDocument(context.Background(), admin, "", store.ConfigDocument{
			ScopeType: store.ScopeDataPlane, ScopeID: e.DP.ID, Kind: "k", Name: string(rune('a' + i)),
			Content: bytes.Repeat([]byte{byte('a' + i)}, 200<<10), MediaType: "text/plain"}); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, r.Server, "cairn_agent_stream_dropped_total", 1)
	waitMetric(t, r.Server, "cairn_agent_streams_open", 1)
	waitFor(t, "the stream's handler to return", func() bool { return r.Server.OpenStreams() == 1 })
	waitFor(t, "the stream's goroutines to exit", func() bool {
		// The other agent's handler is left; its sender exits once it
		// has sent the six updates.
		return goroutinesIn("agentapi.(*configService).serve") == 1 && goroutinesIn("agentapi.(*configStream).run") == 0
	})

	// The agent's connection was closed: reading again, it gets what had
	// arrived, then Unavailable; it reconnects and resumes from what it
	// applied.
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("slow stream ended with %v; want Unavailable", err)
		}
		break
	}
	// The other agent's stream was not touched: it got every update.
	if err := <-otherDone; err != nil {
		t.Fatalf("another agent's stream: %v", err)
	}
}

func TestConfigStreamMetrics(t *testing.T) {
	e := start(t, options{HeartbeatEvery: time.Hour})
	a := e.enrollAgent(t, e.DP.ID)
	ver := sign.NewVerifier(e.Signer.RootPublicKey())
	srv := e.Server
	putDoc(t, e, "a")
	putDoc(t, e, "b")

	// A new agent gets two deltas and no snapshot.
	c := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{StateHash: configstate.EmptyHash, Epoch: "e1"}, ver)
	c.next() // key set
	var last agentv1.DeltaPayload
	for range 2 {
		m, typ := c.nextUpdate()
		if typ != fanout.DeltaType {
			t.Fatalf("got %s; want a delta", typ)
		}
		if err := proto.Unmarshal(m.GetUpdate().Payload, &last); err != nil {
			t.Fatal(err)
		}
	}
	waitMetric(t, srv, "cairn_agent_stream_deltas_sent_total", 2)
	if m := metrics(t, srv); m["cairn_agent_stream_snapshot_envelopes_sent_total"] != 0 || m["cairn_agent_stream_snapshot_bytes_total"] != 0 {
		t.Fatalf("snapshot metrics %v after deltas only; want 0", m)
	}

	// An agent whose state is not the log's gets a snapshot: the metrics
	// count its envelopes and payload bytes exactly.
	c2 := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{AppliedRevision: 2, StateHash: configstate.EmptyHash, Epoch: "e2", KeySetVersion: ver.KeySet().Version}, ver)
	envelopes, payloadBytes := 0, 0
	for {
		m, typ := c2.nextUpdate()
		if typ != fanout.ResetType && typ != fanout.SnapshotChunkType && typ != fanout.SnapshotEndType {
			t.Fatalf("got %s; want a snapshot envelope", typ)
		}
		envelopes++
		payloadBytes += len(m.GetUpdate().Payload)
		if typ == fanout.SnapshotEndType {
			break
		}
	}
	waitMetric(t, srv, "cairn_agent_stream_snapshot_bytes_total", float64(payloadBytes))
	waitMetric(t, srv, "cairn_agent_stream_snapshot_envelopes_sent_total", float64(envelopes))

	// An agent that is current resumes with zero snapshot bytes.
	c3 := openStreamWithin(t, 3*waitLimit, e, a, &agentv1.Hello{AppliedRevision: 2, StateHash: last.StateHash, Epoch: "e1", KeySetVersion: ver.KeySet().Version}, ver)
	putDoc(t, e, "c")
	for _, s := range []*streamClient{c, c2, c3} {
		if _, typ := s.nextUpdate(); typ != fanout.DeltaType {
			t.Fatalf("got %s; want delta 3", typ)
		}
	}
	waitMetric(t, srv, "cairn_agent_stream_deltas_sent_total", 5)
	m := metrics(t, srv)
	if m["cairn_agent_stream_snapshot_bytes_total"] != float64(payloadBytes) {
		t.Fatalf("snapshot bytes %v after a current agent resumed; want still %d", m["cairn_agent_stream_snapshot_bytes_total"], payloadBytes)
	}
	if m["cairn_agent_stream_admitted_total"] != 3 || m["cairn_agent_streams_open"] != 3 ||
		m["cairn_agent_stream_refused_total"] != 0 || m["cairn_agent_stream_dropped_total"] != 0 {
		t.Fatalf("stream metrics %v; want 3 admitted and open, none refused or dropped", m)
	}
}
