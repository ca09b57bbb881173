package localapi_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/agent/internal/cache"
	"github.com/cairnhq/cairn/agent/internal/localapi"
	"github.com/cairnhq/cairn/agent/internal/report"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const dp = "6f1c2d7e-0000-4000-8000-000000000001"

// put applies a delta that writes one document.
func put(t *testing.T, c *cache.Cache, kind, name, content string) {
	t.Helper()
	st := c.State()
	doc := &agentv1.Document{Id: name, ScopeType: "data_plane", ScopeId: dp, Kind: kind, Name: name,
		Version: 1, Content: []byte(content), MediaType: "text/plain"}
	var entries []configstate.Entry
	for _, d := range c.List("") {
		entries = append(entries, configstate.Entry{Key: configstate.Key(d.ScopeType, d.ScopeId, d.Kind, d.Name), Version: d.Version, MediaType: d.MediaType, Content: d.Content})
	}
	entries = append(entries, configstate.Entry{Key: configstate.Key(doc.ScopeType, doc.ScopeId, doc.Kind, doc.Name), Version: 1, MediaType: "text/plain", Content: doc.Content})
	p := &agentv1.DeltaPayload{DataPlaneId: dp, FromRevision: st.Revision, ToRevision: st.Revision + 1,
		PrevStateHash: st.StateHash, StateHash: configstate.Hash(entries),
		Operations: []*agentv1.Operation{{Kind: agentv1.Operation_KIND_PUT, Document: doc}}}
	if err := c.ApplyDelta(p, []byte("envelope")); err != nil {
		t.Fatal(err)
	}
}

// shortDir is a temporary directory with a short path (Unix socket paths
// are limited) holding an open cache, both removed at the end.
func shortDir(t *testing.T) (string, *cache.Cache) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c, err := cache.Open(filepath.Join(dir, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return dir, c
}

// serve runs a local API with cfg until the test ends, checking that it
// stops cleanly and removes its socket, and returns a client connection.
func serve(t *testing.T, cfg localapi.Config) *grpc.ClientConn {
	t.Helper()
	srv, err := localapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	conn, err := grpc.NewClient("unix://"+cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(cfg.Socket); !os.IsNotExist(err) {
			t.Error("socket left behind after Run")
		}
	})
	return conn
}

func TestLocalAPI(t *testing.T) {
	dir, c := shortDir(t)
	put(t, c, "cairn.dev/greeting", "hello", "hi")
	stale := false
	sock := filepath.Join(dir, "agent.sock")
	conn := serve(t, localapi.Config{Socket: sock, Cache: c, Stale: func() bool { return stale }})
	ctx := context.Background()
	client := agentv1.NewLocalConfigServiceClient(conn)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()

	got, err := client.GetDocument(rctx, &agentv1.GetDocumentRequest{ScopeType: "data_plane", ScopeId: dp, Kind: "cairn.dev/greeting", Name: "hello"}, grpc.WaitForReady(true))
	if err != nil || string(got.Document.Content) != "hi" || got.Revision != 1 {
		t.Fatalf("GetDocument = %v, %v", got, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v, %v; want 0660", fi.Mode().Perm(), err)
	}
	_, err = client.GetDocument(rctx, &agentv1.GetDocumentRequest{ScopeType: "data_plane", ScopeId: dp, Kind: "cairn.dev/greeting", Name: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("missing document: got %v; want NotFound", err)
	}
	if _, err := client.GetDocument(rctx, &agentv1.GetDocumentRequest{Name: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("incomplete key: got %v; want InvalidArgument", err)
	}
	put(t, c, "other", "x", "y")
	list, err := client.ListDocuments(rctx, &agentv1.ListDocumentsRequest{Kind: "other"})
	if err != nil || len(list.Documents) != 1 || list.Revision != 2 || list.StateHash != c.State().StateHash || list.Stale {
		t.Fatalf("ListDocuments = %v, %v", list, err)
	}

	// Watch: the current state now, then each applied change.
	w, err := client.Watch(rctx, &agentv1.WatchRequest{Kind: "cairn.dev/greeting"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := w.Recv()
	if err != nil || first.Revision != 2 || len(first.Documents) != 1 {
		t.Fatalf("first watch message %v, %v", first, err)
	}
	stale = true
	put(t, c, "cairn.dev/greeting", "bye", "ciao")
	next, err := w.Recv()
	if err != nil || next.Revision != 3 || len(next.Documents) != 2 || !next.Stale {
		t.Fatalf("watch after a change %v, %v", next, err)
	}
}

func TestLocalMetricsPush(t *testing.T) {
	dir, c := shortDir(t)
	q, err := report.OpenQueue(filepath.Join(dir, "reports.db"), 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	rep, err := report.New(report.Config{Queue: q, Status: func() *agentv1.AgentStatus { return &agentv1.AgentStatus{} },
		MetricsEvery: 10 * time.Millisecond, MaxPushed: 3})
	if err != nil {
		t.Fatal(err)
	}
	conn := serve(t, localapi.Config{Socket: filepath.Join(dir, "agent.sock"), Cache: c, Metrics: rep})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := agentv1.NewLocalMetricsServiceClient(conn)
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	defer rcancel()
	pt := &agentv1.MetricPoint{Name: "ingest_lag_seconds", Value: 1.5, Labels: map[string]string{"shard": "3"}}
	resp, err := client.Push(rctx, &agentv1.PushRequest{Source: "ingest", Points: []*agentv1.MetricPoint{pt, pt}}, grpc.WaitForReady(true))
	if err != nil || resp.Accepted != 2 {
		t.Fatalf("Push = %v, %v", resp, err)
	}
	if _, err := client.Push(rctx, &agentv1.PushRequest{Source: "ingest", Points: []*agentv1.MetricPoint{{Name: "bad name"}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad point: got %v; want InvalidArgument", err)
	}
	if _, err := client.Push(rctx, &agentv1.PushRequest{Source: "ingest", Points: []*agentv1.MetricPoint{pt, pt}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the buffer: got %v; want ResourceExhausted", err)
	}
	// The accepted points reach the report queue with the next batch.
	go rep.Run(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for {
		batch, err := q.Peek(100, 1000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range batch {
			for _, p := range r.GetMetrics().GetPoints() {
				if p.Source == "ingest" && p.Name == "ingest_lag_seconds" {
					n++
				}
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queued %d pushed points; want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
