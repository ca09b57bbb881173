package report

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

func newReporter(t *testing.T, cfg Config) *Reporter {
	t.Helper()
	if cfg.Queue == nil {
		cfg.Queue = openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPushRefusesBadPointsWhole(t *testing.T) {
	r := newReporter(t, Config{Status: func() *agentv1.AgentStatus { return &agentv1.AgentStatus{} }, MaxPushed: 3})
	good := &agentv1.MetricPoint{Name: "requests_total", Value: 1, Labels: map[string]string{"code": "200"}}
	for _, tc := range []struct {
		name   string
		source string
		points []*agentv1.MetricPoint
	}{
		{"no source", "", []*agentv1.MetricPoint{good}},
		{"bad name", "svc", []*agentv1.MetricPoint{good, {Name: "bad name"}}},
		{"bad label", "svc", []*agentv1.MetricPoint{{Name: "m", Labels: map[string]string{"a-b": "x"}}}},
		{"too many", "svc", make([]*agentv1.MetricPoint, maxPushPoints+1)},
	} {
		if err := r.Push(tc.source, tc.points); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v; want ErrInvalid", tc.name, err)
		}
	}
	if err := r.Push("svc", []*agentv1.MetricPoint{good, good}); err != nil {
		t.Fatal(err)
	}
	if err := r.Push("svc", []*agentv1.MetricPoint{good, good}); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("over the buffer: got %v; want ErrBufferFull", err)
	}
	if got := r.Stats().PushedDropped; got != 2 {
		t.Fatalf("pushed dropped %d; want 2", got)
	}
	if err := r.flushMetrics(); err != nil {
		t.Fatal(err)
	}
	batch, _ := r.cfg.Queue.Peek(10, 1000, 1<<30)
	if len(batch) != 1 || len(batch[0].GetMetrics().GetPoints()) != 2 {
		t.Fatalf("queued %v; want one report of the 2 accepted points", batch)
	}
	for _, p := range batch[0].GetMetrics().GetPoints() {
		if p.Source != "svc" || p.Time == nil {
			t.Fatalf("point %v: want source svc and a time", p)
		}
	}
}

func TestRunReportsStatusOnChangeAndMetricsPeriodically(t *testing.T) {
	var applied atomic.Int64
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	r := newReporter(t, Config{
		Queue:        q,
		Status:       func() *agentv1.AgentStatus { return &agentv1.AgentStatus{AppliedRevision: applied.Load()} },
		Sample:       func() []*agentv1.MetricPoint { return []*agentv1.MetricPoint{{Name: "cairn_agent_up", Value: 1}} },
		PollEvery:    5 * time.Millisecond,
		MetricsEvery: 20 * time.Millisecond,
		StatusEvery:  time.Hour,
		// Progress at once: this test is about Run's loop; TestStatusPacer
		// is about the delay.
		ProgressDelay: -1,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	statuses := func() []int64 {
		batch, err := q.Peek(1000, 1<<30, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, rep := range batch {
			if st := rep.GetStatus(); st != nil {
				out = append(out, st.AppliedRevision)
			}
		}
		return out
	}
	hasMetrics := func() bool {
		batch, _ := q.Peek(1000, 1<<30, 1<<30)
		for _, rep := range batch {
			if len(rep.GetMetrics().GetPoints()) > 0 && rep.GetMetrics().GetPoints()[0].Source == "agent" {
				return true
			}
		}
		return false
	}
	waitFor(t, "first status", func() bool { return len(statuses()) == 1 })
	applied.Store(7)
	waitFor(t, "status after change", func() bool { return len(statuses()) == 2 })
	waitFor(t, "a metrics report", hasMetrics)
	cancel()
	wg.Wait()
	// Unchanged status is not re-sent before StatusEvery.
	if got := statuses(); len(got) != 2 || got[0] != 0 || got[1] != 7 {
		t.Fatalf("statuses %v; want [0 7]", got)
	}
}

func TestFlushSplitsLargeBatches(t *testing.T) {
	r := newReporter(t, Config{Status: func() *agentv1.AgentStatus { return &agentv1.AgentStatus{} }, MaxPushed: 5000})
	pts := make([]*agentv1.MetricPoint, 1000)
	for i := range pts {
		pts[i] = &agentv1.MetricPoint{Name: "m" + strings.Repeat("x", i%3)}
	}
	for range 3 {
		if err := r.Push("svc", pts); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.flushMetrics(); err != nil {
		t.Fatal(err)
	}
	batch, _ := r.cfg.Queue.Peek(100, 1<<30, 1<<30)
	if len(batch) != 3 {
		t.Fatalf("%d reports; want 3 of at most %d points", len(batch), maxPointsPerItem)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunFlushesPushedPointsWhenStopped(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	r := newReporter(t, Config{Queue: q, Status: func() *agentv1.AgentStatus { return &agentv1.AgentStatus{} },
		MetricsEvery: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	if err := r.Push("svc", []*agentv1.MetricPoint{{Name: "a"}, {Name: "b"}}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	batch, _ := q.Peek(100, 1000, 1<<30)
	n := 0
	for _, rep := range batch {
		n += len(rep.GetMetrics().GetPoints())
	}
	if n != 2 {
		t.Fatalf("queued %d pushed points after a stop; want 2", n)
	}
	if err := r.Push("svc", []*agentv1.MetricPoint{{Name: "c"}}); !errors.Is(err, ErrStopped) {
		t.Fatalf("push after stop: got %v; want ErrStopped", err)
	}
}
