package agentapi

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

func metricsBatch(agentID string, seqs ...int64) store.Reports {
	b := store.Reports{AgentID: agentID, DataPlaneID: testDataPlane, QueueID: "q"}
	for _, seq := range seqs {
		b.Items = append(b.Items, store.Report{Seq: seq, Metrics: []store.MetricPoint{{Name: "x", Value: float64(seq), Source: "agent", Time: time.Now()}}})
	}
	return b
}

// TestReportGroups: concurrent calls are stored in shared transactions,
// each answered with its own batch's newest sequence number; calls made
// after stop are refused.
func TestReportGroups(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			st := openStore(t, b.URL(t))
			g := newReportGroups(st, slog.New(slog.DiscardHandler))
			var txs, batches atomic.Int64
			real := g.ingestMany
			g.ingestMany = func(ctx context.Context, rs []store.Reports) ([]int64, error) {
				txs.Add(1)
				batches.Add(int64(len(rs)))
				return real(ctx, rs)
			}
			g.start()
			ids := agentIDs(300)
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					for seq := int64(1); seq <= 3; seq++ {
						acked, err := g.ingest(t.Context(), metricsBatch(id, seq))
						if err != nil || acked != seq {
							t.Errorf("agent %s batch %d: acked %d, %v", id, seq, acked, err)
						}
					}
				})
			}
			wg.Wait()
			g.stop()
			if _, err := g.ingest(t.Context(), metricsBatch(ids[0], 4)); !errors.Is(err, errReportsStopped) {
				t.Errorf("ingest after stop: %v; want errReportsStopped", err)
			}
			if batches.Load() != 900 {
				t.Fatalf("%d batches stored; want 900", batches.Load())
			}
			t.Logf("900 calls stored in %d transactions", txs.Load())
			pts, _, err := st.ListAgentMetrics(t.Context(), store.MetricFilter{AgentID: ids[7], Name: "x"}, store.Page{Size: 10})
			if err != nil || len(pts) != 3 {
				t.Fatalf("agent's points: %d, %v; want 3", len(pts), err)
			}
		})
	}
}

// TestReportGroupsIsolateARefusedBatch: a batch the store refuses (here
// under an agent id that is not a UUID) fails only its own call, not the
// others of its group.
func TestReportGroupsIsolateARefusedBatch(t *testing.T) {
	for _, be := range storetest.Backends() {
		t.Run(be.Name, func(t *testing.T) {
			st := openStore(t, be.URL(t))
			g := newReportGroups(st, slog.New(slog.DiscardHandler))
			// The writer starts once every call waits, so that they share a group.
			ids := agentIDs(5)
			calls := append([]store.Reports{metricsBatch("not-a-uuid", 1)}, metricsBatch(ids[0], 1), metricsBatch(ids[1], 1))
			errs := make([]error, len(calls))
			var wg sync.WaitGroup
			for i, c := range calls {
				wg.Go(func() { _, errs[i] = g.ingest(t.Context(), c) })
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				g.mu.Lock()
				n := len(g.queue)
				g.mu.Unlock()
				if n == len(calls) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d calls queued; want %d", n, len(calls))
				}
				time.Sleep(5 * time.Millisecond)
			}
			g.start()
			wg.Wait()
			g.stop()
			if errs[0] == nil || errs[1] != nil || errs[2] != nil {
				t.Fatalf("errors %v; want only the first call's", errs)
			}
		})
	}
}
