package agentapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
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

// testDataPlane is the data plane of the positions the tests put.
const testDataPlane = "00000000-0000-4000-8000-0000000000ff"

func agentIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1)
	}
	return ids
}

// position is agent id's position having been sent revision rev and
// applied the one before.
func position(id string, rev int64) store.AgentSync {
	return store.AgentSync{AgentID: id, DataPlaneID: testDataPlane, Epoch: "e", LastSentRevision: rev, LastAppliedRevision: rev - 1}
}

// wantPosition fails t unless agent id's stored position is position(id, rev).
func wantPosition(t *testing.T, st *store.Store, id string, rev int64) {
	t.Helper()
	got, err := st.GetAgentSync(context.Background(), id)
	if err != nil {
		t.Fatalf("GetAgentSync(%s): %v", id, err)
	}
	if got.LastSentRevision != rev || got.LastAppliedRevision != rev-1 {
		t.Errorf("agent %s: sent %d, applied %d; want %d, %d", id, got.LastSentRevision, got.LastAppliedRevision, rev, rev-1)
	}
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
			ids := agentIDs(agents)
			var wg sync.WaitGroup
			for _, id := range ids {
				wg.Go(func() {
					for rev := int64(1); rev <= revisions; rev++ {
						p.put(position(id, rev))
					}
				})
			}
			wg.Wait()
			p.stop()
			for _, id := range ids {
				wantPosition(t, st, id, revisions)
			}
			// Put after stop is dropped, not written and not blocking.
			p.put(position(ids[0], revisions+1))
			if got, _ := st.GetAgentSync(context.Background(), ids[0]); got.LastSentRevision != revisions {
				t.Errorf("after stop: sent %d; want %d (nothing written)", got.LastSentRevision, revisions)
			}
		})
	}
}

// gatedWrites stands between positions' writers and the store: each
// write waits at gate until it is closed, then stores its batch, or fails
// with fail when that is set. It checks what positions promises: no agent
// twice in a batch or in two writes at once, no agent's sent revision
// written going backwards (the tests put increasing revisions).
type gatedWrites struct {
	t       *testing.T
	put     func(context.Context, []store.AgentSync) error
	fail    error
	gate    chan struct{}
	entered chan struct{} // receives once a write has reached the gate

	mu       sync.Mutex
	inFlight map[string]bool
	sent     map[string]int64 // newest sent revision written, per agent
	sizes    []int            // each write's batch size
}

// gateWrites makes p's writes wait at a gate; open it with close(g.gate).
func gateWrites(t *testing.T, p *positions, fail error) *gatedWrites {
	g := &gatedWrites{t: t, put: p.putSyncs, fail: fail, gate: make(chan struct{}), entered: make(chan struct{}, 1),
		inFlight: map[string]bool{}, sent: map[string]int64{}}
	p.putSyncs = g.write
	return g
}

func (g *gatedWrites) write(ctx context.Context, batch []store.AgentSync) error {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(batch))
	for _, rec := range batch {
		if g.inFlight[rec.AgentID] {
			g.t.Errorf("agent %s: in two writes at once, or twice in one batch", rec.AgentID)
		}
		g.inFlight[rec.AgentID] = true
		if rec.LastSentRevision <= g.sent[rec.AgentID] {
			g.t.Errorf("agent %s: sent revision %d written after %d", rec.AgentID, rec.LastSentRevision, g.sent[rec.AgentID])
		}
		g.sent[rec.AgentID] = rec.LastSentRevision
	}
	g.mu.Unlock()
	select {
	case g.entered <- struct{}{}:
	default: // the tests wait for the first write only
	}
	<-g.gate
	err := g.fail
	if err == nil {
		err = g.put(ctx, batch)
	}
	g.mu.Lock()
	for _, rec := range batch {
		delete(g.inFlight, rec.AgentID)
	}
	g.mu.Unlock()
	return err
}

// stopGated stops p while its writes wait at g's gate, and opens the gate
// once stop has begun, so that what stop writes is what was pending when
// it was called.
func stopGated(p *positions, g *gatedWrites) {
	stopped := make(chan struct{})
	go func() {
		p.stop()
		close(stopped)
	}()
	for {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			break
		}
		runtime.Gosched()
	}
	close(g.gate)
	<-stopped
}

// TestPositionsBatches holds the writers at the store while 1,200 agents
// put three positions each (one writer takes the first agent's position
// first, and keeps it), which put does without waiting for them; then it
// stops the writers and lets them go. While the writers were held, every
// waiting agent waited once, with only its newest position; after stop,
// every agent's newest position is stored, including the first agent's,
// put while its first was being written; and the waiting agents went in
// batches of at most positionBatch, one of them full.
func TestPositionsBatches(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			st := openStore(t, b.URL(t))
			p := newPositions(st, slog.New(slog.DiscardHandler))
			g := gateWrites(t, p, nil)
			p.start()
			const agents, revisions = 1200, 3
			ids := agentIDs(agents + 1)
			first, rest := ids[0], ids[1:]
			p.put(position(first, 1))
			<-g.entered // a writer holds the first agent's position at the gate
			for rev := int64(1); rev <= revisions; rev++ {
				for _, id := range rest {
					p.put(position(id, rev))
				}
				p.put(position(first, rev+1))
			}

			p.mu.Lock()
			if !p.busy[first] || slices.Contains(p.queue, first) {
				t.Errorf("first agent: busy %v, queued %v while its write is held; want busy and not queued", p.busy[first], slices.Contains(p.queue, first))
			}
			seen := map[string]bool{}
			for _, id := range p.queue {
				if seen[id] {
					t.Errorf("agent %s queued twice", id)
				}
				seen[id] = true
				if got := p.pending[id].LastSentRevision; got != revisions {
					t.Errorf("agent %s waits with sent revision %d; want only the newest, %d", id, got, revisions)
				}
			}
			p.mu.Unlock()

			stopGated(p, g)
			wantPosition(t, st, first, revisions+1)
			for _, id := range rest {
				wantPosition(t, st, id, revisions)
			}
			// At most one write per writer took agents before the gate
			// opened, so at least 700 waited: the next write took a full
			// batch.
			if top := slices.Max(g.sizes); top != positionBatch {
				t.Errorf("largest batch: %d agents; want %d (batch sizes %v)", top, positionBatch, g.sizes)
			}
		})
	}
}

// TestPositionsIsolateARefusedPosition: a position the database refuses
// (PostgreSQL takes no NUL in text) fails its batch's transaction; the
// others of the batch are then written one by one, and the failure is
// logged once a batch, not once an agent.
func TestPositionsIsolateARefusedPosition(t *testing.T) {
	st := openStore(t, storetest.PostgresURL(t))
	var logs bytes.Buffer
	p := newPositions(st, slog.New(slog.NewJSONHandler(&logs, nil)))
	// Put before start: the first writer takes all 50 in one batch.
	ids := agentIDs(50)
	for i, id := range ids {
		rec := position(id, 1)
		if i == 7 {
			rec.Epoch = "bad\x00epoch"
		}
		p.put(rec)
	}
	p.start()
	p.stop()
	for i, id := range ids {
		if i == 7 {
			if _, err := st.GetAgentSync(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the refused position: %v; want ErrNotFound", err)
			}
			continue
		}
		wantPosition(t, st, id, 1)
	}
	var msgs []string
	for dec := json.NewDecoder(&logs); dec.More(); {
		var rec struct {
			Msg    string
			Agents int
		}
		if err := dec.Decode(&rec); err != nil {
			t.Fatalf("decode log: %v", err)
		}
		msgs = append(msgs, fmt.Sprintf("%s: %d", rec.Msg, rec.Agents))
	}
	if want := []string{"record agent syncs; writing each alone: 50", "record agent syncs: 1"}; !slices.Equal(msgs, want) {
		t.Errorf("logged %q; want %q", msgs, want)
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
