package report

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// serverMaxRecvMsgSize is what controlplane/internal/agentapi gives
// grpc.MaxRecvMsgSize for the agent API (agentapi.go).
const serverMaxRecvMsgSize = 1 << 20

// reviewCP is a fake ReportService that refuses what the real one refuses
// for size: status text past maxStatusText (INVALID_ARGUMENT, as
// reportsFromRequest does) and, through the real gRPC server options,
// messages past serverMaxRecvMsgSize (RESOURCE_EXHAUSTED). It acknowledges
// everything else.
type reviewCP struct {
	agentv1.UnimplementedReportServiceServer
	mu       sync.Mutex
	acked    int64
	statuses int
	points   int
}

func (c *reviewCP) Report(_ context.Context, req *agentv1.ReportRequest) (*agentv1.ReportResponse, error) {
	for _, r := range req.Reports {
		if st := r.GetStatus(); st != nil {
			long := len(st.LastError) > maxStatusText || len(st.StateHash) > maxStatusText
			for _, ch := range st.Checks {
				long = long || len(ch.Detail) > maxStatusText
			}
			if long {
				return nil, status.Error(codes.InvalidArgument, "invalid report batch: status text too long")
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range req.Reports {
		if r.Seq <= c.acked {
			continue
		}
		c.acked = r.Seq
		if r.GetStatus() != nil {
			c.statuses++
		}
		c.points += len(r.GetMetrics().GetPoints())
	}
	return &agentv1.ReportResponse{AckedSeq: c.acked}, nil
}

func (c *reviewCP) counts() (statuses, points int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statuses, c.points
}

// serveReviewCP serves a reviewCP with the control plane's message limit
// and returns a client for it.
func serveReviewCP(t *testing.T) (*reviewCP, agentv1.ReportServiceClient) {
	t.Helper()
	cp := &reviewCP{}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(serverMaxRecvMsgSize))
	agentv1.RegisterReportServiceServer(srv, cp)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return cp, agentv1.NewReportServiceClient(conn)
}

// deliverUntil runs Deliver, as the daemon's keepStream does (again after
// each error, up to attempts times), until done holds; it returns the
// errors Deliver returned.
func deliverUntil(t *testing.T, r *Reporter, client agentv1.ReportServiceClient, attempts int, done func() bool) []error {
	t.Helper()
	var errs []error
	for range attempts {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := r.Deliver(ctx, client)
			errc <- err
		}()
		deadline := time.After(20 * time.Second)
		for {
			if done() {
				cancel()
				<-errc
				return errs
			}
			select {
			case err := <-errc:
				errs = append(errs, err)
			case <-deadline:
				cancel()
				errs = append(errs, <-errc)
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
		cancel()
	}
	return errs
}

// TestDeliverFitsTheServersMessageLimit: Peek budgets a batch by
// reports (500) and points (5,000) only, and enqueuePoints cuts pushed
// points into reports of 1,000 points whatever their size; but the agent
// API refuses any message over 1 MiB with RESOURCE_EXHAUSTED, which Deliver
// returns as an ordinary error. keepStream then resends the very same
// oldest batch forever: nothing more is delivered, ever (until the queue
// overflows and drops the oldest).
func TestDeliverFitsTheServersMessageLimit(t *testing.T) {
	labels := func(i, n, size int) map[string]string {
		m := map[string]string{}
		for j := range n {
			m[fmt.Sprintf("label_%02d", j)] = fmt.Sprintf("%0*d", size, i)
		}
		return m
	}
	for _, tc := range []struct {
		name             string
		pushes, perPush  int
		nLabels, valSize int
	}{
		// Five ordinary pushes: each report is small, the batch of five
		// is ~1.1 MB.
		{"many small reports", 5, 1000, 3, 40},
		// One push of big points (3.6 MB, under the local socket's 4 MB):
		// a single report no batch size can send.
		{"one big report", 1, 800, 16, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
			r := newReporter(t, Config{Queue: q, Status: func() *agentv1.AgentStatus { return &agentv1.AgentStatus{} }, MaxPushed: 10_000})
			for p := range tc.pushes {
				pts := make([]*agentv1.MetricPoint, tc.perPush)
				for i := range pts {
					pts[i] = &agentv1.MetricPoint{Name: "http_requests_total", Value: float64(i), Labels: labels(p*tc.perPush+i, tc.nLabels, tc.valSize)}
				}
				if err := r.Push("svc", pts); err != nil {
					t.Fatal(err)
				}
				if err := r.flushMetrics(); err != nil {
					t.Fatal(err)
				}
			}
			cp, client := serveReviewCP(t)
			want := tc.pushes * tc.perPush
			errs := deliverUntil(t, r, client, 5, func() bool { _, n := cp.counts(); return n == want })
			if _, n := cp.counts(); n != want {
				t.Fatalf("delivered %d of %d points after 5 attempts; Deliver returned %v", n, want, errs)
			}
		})
	}
}

// TestFullQueueDoesNotChurnStatuses: Run sends the status when it
// differs from the last one sent, and the status carries the queue's drop
// count. Once the queue is full every Append drops the oldest report, so
// the drop count, and with it the status, changes on every append: Run
// then appends a status on every poll (every second) instead of every
// StatusEvery, each one pushing another queued report (metrics made during
// the outage) out of the queue.
func TestFullQueueDoesNotChurnStatuses(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 5)
	for range 5 {
		if err := q.Append(metricReport(1)); err != nil {
			t.Fatal(err)
		}
	}
	var polls atomic.Int64
	r := newReporter(t, Config{
		Queue:        q,
		Status:       func() *agentv1.AgentStatus { polls.Add(1); return &agentv1.AgentStatus{AppliedRevision: 3} },
		PollEvery:    2 * time.Millisecond,
		StatusEvery:  time.Hour,
		MetricsEvery: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "50 polls", func() bool { return polls.Load() >= 50 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The first status drops one report; an unchanged status must not be
	// sent again within StatusEvery (the second may carry the new count).
	if got := q.Dropped(); got > 2 {
		t.Fatalf("%d reports dropped after %d polls of an unchanged status; want at most 2 (one status, perhaps a second with the new count)",
			got, polls.Load())
	}
}

// TestLongStatusTextIsNotDiscarded: the ReportService refuses a
// whole batch with INVALID_ARGUMENT when a status text field or check
// detail is over 1,024 bytes, and Deliver then discards the whole batch
// (up to 500 reports, metrics included). Nothing on the agent bounds those
// fields: daemon.status makes last_error "refused revision N: REASON: "
// plus a Nack detail that configsync bounds to 1,024 bytes by itself, and
// LastError.Set and the render check's detail (errors.Join of every rule's
// error) are unbounded. Every status re-sent with the long text takes the
// reports queued with it along, and the status itself never arrives.
func TestLongStatusTextIsNotDiscarded(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	detail := strings.Repeat("d", 1024) // configsync's maxDetail
	r := newReporter(t, Config{Queue: q, Status: func() *agentv1.AgentStatus {
		return &agentv1.AgentStatus{AppliedRevision: 6, LastError: "refused revision 7: NACK_REASON_BAD_SIGNATURE: " + detail,
			Checks: []*agentv1.Check{{Name: "render", Healthy: false, Detail: strings.Repeat("render x to /etc/x: permission denied\n", 40)}}}
	}, MaxPushed: 100})
	if err := r.Push("svc", []*agentv1.MetricPoint{{Name: "requests_total", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := r.flushMetrics(); err != nil {
		t.Fatal(err)
	}
	if err := r.enqueue(&agentv1.Report{Body: &agentv1.Report_Status{Status: r.status()}}); err != nil {
		t.Fatal(err)
	}
	cp, client := serveReviewCP(t)
	deliverUntil(t, r, client, 3, func() bool { return q.Len() == 0 })
	statuses, points := cp.counts()
	if statuses != 1 || points != 1 || q.Dropped() != 0 {
		t.Fatalf("control plane stored %d statuses and %d points, agent dropped %d; want 1, 1, 0 (status text cut to the limit, nothing discarded)",
			statuses, points, q.Dropped())
	}
}

// TestUnencodableStatusDoesNotStopTheAgent: a status string that is
// not valid UTF-8 cannot be marshalled (proto3 strings), so Queue.Append
// fails, Run returns the error and the daemon (startReports' fail) cancels
// everything: the agent stops serving its cache and rendering because of a
// byte in an error message. configsync already sanitizes Nack details with
// strings.ToValidUTF8 for this reason; last_error from LastError.Set (any
// gRPC or OS error text) and the render check's detail are not.
func TestUnencodableStatusDoesNotStopTheAgent(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	var polls atomic.Int64
	r := newReporter(t, Config{Queue: q, PollEvery: 2 * time.Millisecond, Status: func() *agentv1.AgentStatus {
		polls.Add(1)
		return &agentv1.AgentStatus{LastError: "render a to /srv/caf\xe9.conf: permission denied"}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for polls.Load() < 5 {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("Run returned %v; want it to keep reporting (with the text made valid)", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if q.Len() == 0 {
		t.Fatal("no status queued")
	}
}
