package agentapi

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

const (
	// maxReportGroup bounds the Report calls stored in one transaction.
	maxReportGroup = 200
	// reportGroupTimeout bounds one group's transaction.
	reportGroupTimeout = 30 * time.Second
)

// reportGroups stores concurrent Report calls together. A call hands its
// batch over and waits; a few writers each take up to maxReportGroup
// waiting batches at once and store them in one transaction
// (store.IngestReportsMany), then answer every caller. With 10,000 agents
// one transaction per call held the replica to about a thousand calls a
// second (PostgreSQL through its pool's four connections, SQLite through
// its one writer), so a config change's status reports queued behind each
// other, thousands of calls at a time, each holding a goroutine and its
// request. A group costs one commit instead of one per call.
//
// When a group's transaction fails, each of its batches is stored alone,
// so that one batch the database refuses fails only its own call. A call
// whose caller has gone (its context ended) before a writer took it is
// left out; the agent delivers it again, and a batch is stored once
// whatever happens (sequence numbers, store.IngestReports).
type reportGroups struct {
	ingestMany func(context.Context, []store.Reports) ([]int64, error)
	log        *slog.Logger

	writerPool               // its mu guards queue
	queue      []*reportCall // oldest first
}

type reportCall struct {
	ctx   context.Context
	batch store.Reports
	res   chan reportResult // buffered: a writer never waits for the caller
}

type reportResult struct {
	acked int64
	err   error
}

// newReportGroups returns groups with the writer pool's writers once
// started.
func newReportGroups(st *store.Store, log *slog.Logger) *reportGroups {
	g := &reportGroups{ingestMany: st.IngestReportsMany, log: log}
	g.init(st)
	return g
}

// start starts the writers. stop (writerPool's) stores what waits and
// stops them; later calls are refused with Unavailable.
func (g *reportGroups) start() { g.run(g.write) }

var errReportsStopped = status.Error(codes.Unavailable, "control plane shutting down; reconnect")

// ingest stores batch with the other calls waiting now and returns its
// newest stored sequence number.
func (g *reportGroups) ingest(ctx context.Context, batch store.Reports) (int64, error) {
	c := &reportCall{ctx: ctx, batch: batch, res: make(chan reportResult, 1)}
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return 0, errReportsStopped
	}
	g.queue = append(g.queue, c)
	g.cond.Signal()
	g.mu.Unlock()
	select {
	case r := <-c.res:
		return r.acked, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// write is one writer: it takes the oldest waiting calls, up to
// maxReportGroup, and stores them, until stop and nothing is left.
func (g *reportGroups) write() {
	for {
		g.mu.Lock()
		for len(g.queue) == 0 && !g.closed {
			g.cond.Wait()
		}
		if len(g.queue) == 0 {
			g.mu.Unlock()
			return
		}
		n := min(len(g.queue), maxReportGroup)
		calls := make([]*reportCall, 0, n)
		for _, c := range g.queue[:n] {
			if c.ctx.Err() == nil {
				calls = append(calls, c)
			}
		}
		clear(g.queue[:n])
		g.queue = g.queue[n:]
		g.mu.Unlock()
		g.store(calls)
	}
}

// store stores calls in one transaction, or each alone when that fails.
func (g *reportGroups) store(calls []*reportCall) {
	if len(calls) == 0 {
		return
	}
	// Concurrent groups lock agents' rows in one order (PostgreSQL would
	// otherwise abort one of two groups that share agents as deadlocked);
	// one agent's batches keep their order.
	slices.SortStableFunc(calls, func(a, b *reportCall) int { return strings.Compare(a.batch.AgentID, b.batch.AgentID) })
	batches := make([]store.Reports, len(calls))
	for i, c := range calls {
		batches[i] = c.batch
	}
	ctx, cancel := context.WithTimeout(context.Background(), reportGroupTimeout)
	defer cancel()
	acked, err := g.ingestMany(ctx, batches)
	if err == nil {
		for i, c := range calls {
			c.res <- reportResult{acked: acked[i]}
		}
		return
	}
	if len(calls) == 1 {
		calls[0].res <- reportResult{err: err}
		return
	}
	g.log.Warn("store a group of report batches; storing each alone", "batches", len(calls), "error", err)
	for _, c := range calls {
		acked, err := g.ingestMany(ctx, []store.Reports{c.batch})
		if err != nil {
			c.res <- reportResult{err: err}
			continue
		}
		c.res <- reportResult{acked: acked[0]}
	}
}
