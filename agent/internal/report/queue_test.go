package report

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

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

// appendStatuses appends n status reports to q.
func appendStatuses(t *testing.T, q *Queue, n int) {
	t.Helper()
	for i := range n {
		if err := q.Append(statusReport(int64(i))); err != nil {
			t.Fatal(err)
		}
	}
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
	appendStatuses(t, q, 5)
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
	appendStatuses(t, q, 5)
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

// TestQueuePeekLimits, with the reports in memory and read from the file
// after a restart.
func TestQueuePeekLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	for _, n := range []int{3, 3, 3, 10} {
		if err := q.Append(metricReport(n)); err != nil {
			t.Fatal(err)
		}
	}
	testPeekLimits(t, q)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTestQueue(t, path, 100)
	if len(q.mem) != 0 {
		t.Fatal("a reopened queue has reports in memory")
	}
	testPeekLimits(t, q)
}

func testPeekLimits(t *testing.T, q *Queue) {
	t.Helper()
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

// copyFile copies the queue file as a crash would leave it: each
// committed transaction is in the file, nothing else.
func copyFile(t *testing.T, from string) string {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "crashed.db")
	if err := os.WriteFile(to, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return to
}

// TestQueueAckIsWrittenByTheNextAppend: an acknowledgement writes nothing;
// the next Append deletes what it acknowledged. A crash in between sends
// the acknowledged reports again, under the same queue id and sequence
// numbers, which the control plane stores once.
func TestQueueAckIsWrittenByTheNextAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	appendStatuses(t, q, 5)
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, q); !equal(got, []int64{4, 5}) || q.Len() != 2 {
		t.Fatalf("after ack 3: seqs %v, len %d; want [4 5], 2", got, q.Len())
	}
	crashed := openTestQueue(t, copyFile(t, path), 100)
	if got := seqs(t, crashed); !equal(got, []int64{1, 2, 3, 4, 5}) || crashed.ID() != q.ID() {
		t.Fatalf("crash after ack: seqs %v, id %s; want [1 2 3 4 5] under id %s", got, crashed.ID(), q.ID())
	}

	if err := q.Append(statusReport(6)); err != nil {
		t.Fatal(err)
	}
	crashed = openTestQueue(t, copyFile(t, path), 100)
	if got := seqs(t, crashed); !equal(got, []int64{4, 5, 6}) {
		t.Fatalf("crash after the next append: seqs %v; want [4 5 6]", got)
	}

	// Close deletes what was acknowledged since.
	if err := q.Ack(5); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTestQueue(t, path, 100)
	if got := seqs(t, q); !equal(got, []int64{6}) {
		t.Fatalf("after ack 5 and a clean restart: seqs %v; want [6]", got)
	}
}

// TestQueueAckWritesABacklog: acknowledging more than lazyAckMax reports
// deletes them at once, so a crash while a backlog is delivered sends few
// again (and a full queue does not count them as dropped).
func TestQueueAckWritesABacklog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 1000)
	appendStatuses(t, q, lazyAckMax+50)
	if err := q.Ack(lazyAckMax - 1); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, openTestQueue(t, copyFile(t, path), 1000)); len(got) != lazyAckMax+50 {
		t.Fatalf("crash after acknowledging %d: %d reports in the file; want all %d", lazyAckMax-1, len(got), lazyAckMax+50)
	}
	if err := q.Ack(lazyAckMax + 10); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, openTestQueue(t, copyFile(t, path), 1000)); len(got) != 40 || got[0] != lazyAckMax+11 {
		t.Fatalf("crash after acknowledging %d: %d reports in the file from %v; want the 40 from %d", lazyAckMax+10, len(got), got[:1], lazyAckMax+11)
	}
}

// TestQueueAckedReportsMakeRoom: reports acknowledged but not yet deleted
// from the file do not count against the bound.
func TestQueueAckedReportsMakeRoom(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 3)
	appendStatuses(t, q, 3)
	if err := q.Ack(2); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := q.Append(statusReport(int64(10 + i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := seqs(t, q); !equal(got, []int64{3, 4, 5}) || q.Dropped() != 0 {
		t.Fatalf("seqs %v, dropped %d; want [3 4 5], 0", got, q.Dropped())
	}
	// A discard counts only what still waited.
	if err := q.Ack(3); err != nil {
		t.Fatal(err)
	}
	if err := q.Discard(4); err != nil {
		t.Fatal(err)
	}
	if got := seqs(t, q); !equal(got, []int64{5}) || q.Dropped() != 1 {
		t.Fatalf("after ack 3 and discard 4: seqs %v, dropped %d; want [5], 1", got, q.Dropped())
	}
}

// TestQueueNewIDDropsAcknowledged: reports acknowledged under the old id
// are deleted with the id change, so a crash cannot send them under the
// new one, which would store them again.
func TestQueueNewIDDropsAcknowledged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	appendStatuses(t, q, 3)
	if err := q.Ack(2); err != nil {
		t.Fatal(err)
	}
	old := q.ID()
	if err := q.NewID(); err != nil {
		t.Fatal(err)
	}
	crashed := openTestQueue(t, copyFile(t, path), 100)
	if got := seqs(t, crashed); !equal(got, []int64{3}) || crashed.ID() == old {
		t.Fatalf("crash after the new id: seqs %v, id %s (old %s); want [3] under a new id", got, crashed.ID(), old)
	}
}

// TestQueuePeekFromMemoryAndFile: the reports Peek serves from memory are
// those in the file, and a backlog larger than the memory kept is read
// from the file, in order, until what is left fits.
func TestQueuePeekFromMemoryAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reports.db")
	q := openTestQueue(t, path, 100)
	// Seven reports of ~260 KB: more than memMaxBytes together.
	for i := range 7 {
		var r *agentv1.Report
		if i%2 == 0 {
			r = metricReport(20_000)
		} else {
			r = statusReport(int64(i))
		}
		if err := q.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if len(q.mem) >= q.Len() {
		t.Fatalf("%d of %d reports in memory; the test wants a backlog larger than memMaxBytes", len(q.mem), q.Len())
	}
	fromFile, err := q.Peek(100, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	// Acknowledge one at a time: the head moves from the file into memory.
	for want := int64(1); want <= 7; want++ {
		batch, err := q.Peek(1, 1<<30, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) != 1 || batch[0].Seq != want || !proto.Equal(batch[0], fromFile[want-1]) {
			t.Fatalf("peek %d: got %d reports, first seq %d; want report %d as the file holds it", want, len(batch), batch[0].GetSeq(), want)
		}
		if err := q.Ack(want); err != nil {
			t.Fatal(err)
		}
	}
	if q.Len() != 0 || len(q.mem) != 0 || q.memBytes != 0 {
		t.Fatalf("after acking all: len %d, %d in memory (%d bytes)", q.Len(), len(q.mem), q.memBytes)
	}

	// A queue small enough is served from memory, the same as the file.
	var appended []*agentv1.Report
	for i := range 3 {
		r := metricReport(i + 1)
		if err := q.Append(r); err != nil {
			t.Fatal(err)
		}
		appended = append(appended, r)
	}
	mem, err := q.Peek(100, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	for i := range mem {
		if mem[i] != appended[i] {
			t.Fatalf("report %d was read back from the file; want the one appended, from memory", i)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openTestQueue(t, path, 100)
	file, err := q.Peek(100, 1<<30, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != 3 || len(file) != 3 {
		t.Fatalf("peeked %d from memory, %d from the file; want 3", len(mem), len(file))
	}
	for i := range mem {
		if !proto.Equal(mem[i], file[i]) {
			t.Fatalf("report %d from memory %v; the file holds %v", i, mem[i], file[i])
		}
	}
}

// BenchmarkQueueReport is one status report's way through the queue:
// appended, peeked for delivery, acknowledged.
func BenchmarkQueueReport(b *testing.B) {
	q, err := OpenQueue(filepath.Join(b.TempDir(), "reports.db"), 10_000)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	for i := 0; b.Loop(); i++ {
		if err := q.Append(statusReport(int64(i))); err != nil {
			b.Fatal(err)
		}
		batch, err := q.Peek(MaxBatchReports, MaxBatchPoints, MaxBatchBytes)
		if err != nil || len(batch) != 1 {
			b.Fatalf("peek: %d reports, %v", len(batch), err)
		}
		if err := q.Ack(batch[0].Seq); err != nil {
			b.Fatal(err)
		}
	}
}
