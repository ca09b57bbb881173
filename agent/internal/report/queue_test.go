package report

import (
	"os"
	"path/filepath"
	"testing"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

func statusReport(applied int64) *agentv1.Report {
	return &agentv1.Report{Body: &agentv1.Report_Status{Status: &agentv1.AgentStatus{AppliedRevision: applied}}}
}

func metricReport(n int) *agentv1.Report {
	pts := make([]*agentv1.MetricPoint, n)
	for i := range pts {
		pts[i] = &agentv1.MetricPoint{Name: "m", Value: float64(i)}
	}
	return &agentv1.Report{Body: &agentv1.Report_Metrics{Metrics: &agentv1.MetricBatch{Points: pts}}}
}

func openTestQueue(t *testing.T, path string, max int) *Queue {
	t.Helper()
	q, err := OpenQueue(path, max)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func seqs(t *testing.T, q *Queue) []int64 {
	t.Helper()
	batch, err := q.Peek(1000, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, r := range batch {
		out = append(out, r.Seq)
	}
	return out
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestQueueOrderAckAndRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	id := q.ID()
	for i := range 5 {
		if err := q.Append(statusReport(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := seqs(t, q); !equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("seqs %v", got)
	}
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, q); !equal(got, []int64{4, 5}) || q.Len() != 2 {
		t.Fatalf("after ack 3: seqs %v, len %d", got, q.Len())
	}
	q.Close()

	// A restart keeps the id, the reports and the sequence.
	q = openTestQueue(t, path, 100)
	if q.ID() != id {
		t.Fatalf("queue id changed across restart: %s -> %s", id, q.ID())
	}
	if err := q.Append(statusReport(9)); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, q); !equal(got, []int64{4, 5, 6}) {
		t.Fatalf("after restart: seqs %v; want [4 5 6]", got)
	}
	// Acknowledging everything, and more, empties it; sequence goes on.
	if err := q.Ack(100); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(statusReport(10)); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, q); !equal(got, []int64{7}) {
		t.Fatalf("after full ack: seqs %v; want [7]", got)
	}
}

func TestQueueBoundedDropsOldestAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 3)
	for i := range 5 {
		if err := q.Append(statusReport(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := seqs(t, q); !equal(got, []int64{3, 4, 5}) {
		t.Fatalf("seqs %v; want the newest three", got)
	}
	if q.Dropped() != 2 {
		t.Fatalf("dropped %d; want 2", q.Dropped())
	}
	if err := q.Discard(3); err != nil {
		t.Fatal(err)
	}
	if q.Dropped() != 3 || q.Len() != 2 {
		t.Fatalf("after discard: dropped %d len %d; want 3, 2", q.Dropped(), q.Len())
	}
	q.Close()
	q = openTestQueue(t, path, 3)
	if q.Dropped() != 3 {
		t.Fatalf("dropped count after restart %d; want 3", q.Dropped())
	}
}

func TestQueuePeekLimits(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 100)
	for _, n := range []int{3, 3, 3, 10} {
		if err := q.Append(metricReport(n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		reports, points int
		want            []int64
	}{
		{10, 100, []int64{1, 2, 3, 4}},
		{2, 100, []int64{1, 2}},
		{10, 7, []int64{1, 2}},
		{10, 9, []int64{1, 2, 3}},
		// One report over the point budget still goes alone.
		{10, 1, []int64{1}},
	} {
		batch, err := q.Peek(tc.reports, tc.points, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, r := range batch {
			got = append(got, r.Seq)
		}
		if !equal(got, tc.want) {
			t.Errorf("Peek(%d, %d, 1<<30) = %v; want %v", tc.reports, tc.points, got, tc.want)
		}
	}
}

func TestQueueCorruptFileStartsANewQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	if err := os.WriteFile(path, []byte("not a bbolt file at all, just garbage bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	q := openTestQueue(t, path, 10)
	if q.ID() == "" || q.Len() != 0 {
		t.Fatalf("new queue: id %q len %d", q.ID(), q.Len())
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt file not moved aside: %v", aside)
	}
}

func TestQueueWaitWakesOnAppend(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 10)
	w := q.Wait()
	select {
	case <-w:
		t.Fatal("woke before any append")
	default:
	}
	if err := q.Append(statusReport(1)); err != nil {
		t.Fatal(err)
	}
	<-w
}
