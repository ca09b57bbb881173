package store_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

// position returns a stream position of agent id on data plane dp.
func position(id, dp, epoch string, sent, applied int64) store.AgentSync {
	return store.AgentSync{AgentID: id, DataPlaneID: dp, Epoch: epoch, LastSentRevision: sent, LastAppliedRevision: applied}
}

// positionsOf returns n positions of new agents, at sent revision sent.
func positionsOf(n int, dp string, sent int64) []store.AgentSync {
	out := make([]store.AgentSync, n)
	for i := range out {
		out[i] = position(uuid.NewString(), dp, "e", sent, sent-1)
	}
	return out
}

func TestPutAgentSyncs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		dp, dp2 := uuid.NewString(), uuid.NewString()
		// Every case has agents of its own.
		newA, newB := uuid.NewString(), uuid.NewString()
		updA, updB, updC := uuid.NewString(), uuid.NewString(), uuid.NewString()
		nackA, nackB := uuid.NewString(), uuid.NewString()
		dupA, dupB := uuid.NewString(), uuid.NewString()
		many := positionsOf(1201, dp, 3)
		fleet := positionsOf(10_001, dp, 3)
		spanning := positionsOf(700, dp, 3)
		nacked := position(spanning[0].AgentID, dp, "e", 9, 8)
		nacked.LastNackRevision, nacked.LastNackReason, nacked.LastNackDetail = 8, "NACK_REASON_CHAIN_BROKEN", "gap"
		for _, tc := range []struct {
			name   string
			before []store.AgentSync // written one by one first
			nack   *store.AgentSync  // recorded with RecordNack after before
			batch  []store.AgentSync
			want   []store.AgentSync // read back, LastSeen aside
		}{
			{
				name:  "new rows",
				batch: []store.AgentSync{position(newA, dp, "e1", 5, 4), position(newB, dp, "e1", 5, 3)},
				want:  []store.AgentSync{position(newA, dp, "e1", 5, 4), position(newB, dp, "e1", 5, 3)},
			},
			{
				name:   "updates of existing rows beside a new one",
				before: []store.AgentSync{position(updA, dp, "e1", 5, 4), position(updB, dp, "e1", 5, 3)},
				batch:  []store.AgentSync{position(updA, dp2, "e2", 1, 0), position(updB, dp, "e1", 6, 6), position(updC, dp, "e1", 6, 5)},
				want:   []store.AgentSync{position(updA, dp2, "e2", 1, 0), position(updB, dp, "e1", 6, 6), position(updC, dp, "e1", 6, 5)},
			},
			{
				name:   "NACK fields are left alone",
				before: []store.AgentSync{position(nackA, dp, "e1", 7, 6)},
				nack:   &store.AgentSync{AgentID: nackA, DataPlaneID: dp, LastNackRevision: 7, LastNackReason: "NACK_REASON_CHAIN_BROKEN", LastNackDetail: "x"},
				batch:  []store.AgentSync{position(nackA, dp, "e1", 8, 8), position(nackB, dp, "e1", 8, 8)},
				want: []store.AgentSync{
					{AgentID: nackA, DataPlaneID: dp, Epoch: "e1", LastSentRevision: 8, LastAppliedRevision: 8,
						LastNackRevision: 7, LastNackReason: "NACK_REASON_CHAIN_BROKEN", LastNackDetail: "x"},
					position(nackB, dp, "e1", 8, 8),
				},
			},
			{
				name: "duplicate agents: the last wins",
				batch: []store.AgentSync{position(dupA, dp, "e", 10, 9), position(dupB, dp, "e", 10, 9),
					position(dupA, dp, "e", 12, 11), position(dupA, dp, "e", 11, 10)},
				want: []store.AgentSync{position(dupA, dp, "e", 11, 10), position(dupB, dp, "e", 10, 9)},
			},
			{
				name: "empty batch",
			},
			{
				name:  "1,201 agents, 76 statements on SQLite",
				batch: many,
				want:  many,
			},
			{
				name:  "10,001 agents, two statements of arrays",
				batch: fleet,
				want:  fleet,
			},
			{
				name:   "an agent twice, 700 rows apart (statements apart on SQLite), with a NACK",
				before: spanning[:1],
				nack:   &nacked,
				batch:  append(spanning, position(nacked.AgentID, dp, "e", 9, 8)),
				want:   append([]store.AgentSync{nacked}, spanning[1:]...),
			},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, p := range tc.before {
					if err := s.PutAgentSync(ctx, p); err != nil {
						t.Fatal(err)
					}
				}
				if n := tc.nack; n != nil {
					if err := s.RecordNack(ctx, n.AgentID, n.DataPlaneID, n.LastNackRevision, n.LastNackReason, n.LastNackDetail); err != nil {
						t.Fatal(err)
					}
				}
				start := time.Now().UTC().Truncate(time.Microsecond)
				if err := s.PutAgentSyncs(ctx, tc.batch); err != nil {
					t.Fatalf("PutAgentSyncs: %v", err)
				}
				for _, want := range tc.want {
					got, err := s.GetAgentSync(ctx, want.AgentID)
					if err != nil {
						t.Fatalf("GetAgentSync(%s): %v", want.AgentID, err)
					}
					if got.LastSeen.Before(start) {
						t.Errorf("agent %s: last seen %v; want at least %v, when the batch was written", want.AgentID, got.LastSeen, start)
					}
					got.LastSeen = time.Time{}
					if got != want {
						t.Errorf("agent %s: got %+v; want %+v", want.AgentID, got, want)
					}
				}
			})
		}
		// An empty batch does not reach the database, so not even a
		// cancelled context fails it.
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		for _, batch := range [][]store.AgentSync{nil, {}} {
			if err := s.PutAgentSyncs(cancelled, batch); err != nil {
				t.Errorf("PutAgentSyncs(cancelled, %#v) = %v; want nil", batch, err)
			}
		}
	})
}

// BenchmarkPutAgentSyncs measures writing 1,000 agents' positions (after
// a config change, every agent's) in one PutAgentSyncs call, and in 1,000
// PutAgentSync calls, one transaction each, as the control plane used to.
// Every iteration updates existing rows, as a fleet's streams do.
func BenchmarkPutAgentSyncs(b *testing.B) {
	const agents = 1000
	for _, be := range storetest.Backends() {
		b.Run(be.Name, func(b *testing.B) {
			ctx := context.Background()
			s := must[*store.Store](b)(store.Open(ctx, store.Config{URL: be.URL(b)}))
			b.Cleanup(s.Close)
			recs := positionsOf(agents, uuid.NewString(), 1)
			if err := s.PutAgentSyncs(ctx, recs); err != nil {
				b.Fatal(err)
			}
			for _, bc := range []struct {
				name  string
				write func() error
			}{
				{"batch", func() error { return s.PutAgentSyncs(ctx, recs) }},
				{"one-by-one", func() error {
					for _, r := range recs {
						if err := s.PutAgentSync(ctx, r); err != nil {
							return err
						}
					}
					return nil
				}},
			} {
				b.Run(bc.name+"-"+strconv.Itoa(agents), func(b *testing.B) {
					for b.Loop() {
						for i := range recs {
							recs[i].LastSentRevision++
							recs[i].LastAppliedRevision++
						}
						if err := bc.write(); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
