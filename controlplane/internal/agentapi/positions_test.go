package agentapi

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/internal/storetest"
)

func openStore(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{URL: url})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// TestPositionsKeepTheNewest puts many positions of a few agents from
// many goroutines at once, each agent's in increasing order, and checks
// that after stop every agent's stored position is its last one: writes
// of one agent are never reordered, and coalescing keeps the newest.
func TestPositionsKeepTheNewest(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			st := openStore(t, b.URL(t))
			p := newPositions(st, slog.New(slog.DiscardHandler))
			p.start()
			const agents, revisions = 8, 200
			ids := make([]string, agents)
			for i := range ids {
				ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1)
			}
			dp := "00000000-0000-4000-8000-0000000000ff"
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					for rev := int64(1); rev <= revisions; rev++ {
						p.put(store.AgentSync{AgentID: id, DataPlaneID: dp, Epoch: "e", LastSentRevision: rev, LastAppliedRevision: rev - 1})
					}
				})
			}
			wg.Wait()
			p.stop()
			for _, id := range ids {
				got, err := st.GetAgentSync(context.Background(), id)
				if err != nil {
					t.Fatalf("GetAgentSync(%s): %v", id, err)
				}
				if got.LastSentRevision != revisions || got.LastAppliedRevision != revisions-1 {
					t.Errorf("agent %s: sent %d, applied %d; want %d, %d", id, got.LastSentRevision, got.LastAppliedRevision, revisions, revisions-1)
				}
			}
			// Put after stop is dropped, not written and not blocking.
			p.put(store.AgentSync{AgentID: ids[0], DataPlaneID: dp, LastSentRevision: revisions + 1})
			if got, _ := st.GetAgentSync(context.Background(), ids[0]); got.LastSentRevision != revisions {
				t.Errorf("after stop: sent %d; want %d (nothing written)", got.LastSentRevision, revisions)
			}
		})
	}
}

// TestHeadsAreFresh reads a data plane's head through heads from many
// goroutines while its config changes: each read must be at least as new
// as the head the store had when the read was asked for.
func TestHeadsAreFresh(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			st := openStore(t, b.URL(t))
			ctx := context.Background()
			actor := store.Actor{ID: "test:admin"}
			tenant, err := st.CreateTenant(ctx, actor, store.Tenant{Name: "acme"})
			if err != nil {
				t.Fatal(err)
			}
			dp, err := st.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: tenant.ID, Name: "dp", Region: "eu-1"})
			if err != nil {
				t.Fatal(err)
			}
			h := newHeads(st)
			stop := make(chan struct{})
			var writer sync.WaitGroup
			writer.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := st.CreateConfigDocument(ctx, actor, "", store.ConfigDocument{ScopeType: store.ScopeDataPlane,
						ScopeID: dp.ID, Kind: "k", Name: fmt.Sprint("doc-", i), Content: []byte("x"), MediaType: "text/plain"}); err != nil {
						t.Error(err)
						return
					}
				}
			})
			var readers sync.WaitGroup
			for range 16 {
				readers.Go(func() {
					for range 30 {
						before, err := st.GetHead(ctx, dp.ID)
						if err != nil {
							t.Error(err)
							return
						}
						got, err := h.get(ctx, dp.ID)
						if err != nil {
							t.Error(err)
							return
						}
						if got.Revision < before.Revision {
							t.Errorf("heads.get: revision %d; want at least %d, the head when it was asked", got.Revision, before.Revision)
						}
					}
				})
			}
			readers.Wait()
			close(stop)
			writer.Wait()
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.flights) != 0 {
				t.Errorf("%d data planes with reads in flight after all returned; want 0", len(h.flights))
			}
		})
	}
}
