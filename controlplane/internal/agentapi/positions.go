package agentapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// positionWriteTimeout bounds one write of a stream's position.
const positionWriteTimeout = 30 * time.Second

// positions records config streams' positions (store.AgentSync) for the
// stream handlers, off their goroutines: a handler hands over its newest
// position and goes on sending, and a few writers store them. A fleet's
// change wakes every stream of the data plane at once, and each used to
// write its position (twice: sent, then acknowledged) in a transaction of
// its own before it could take the next change; thousands of concurrent
// writers on one database serialize (SQLite has one writer, which the
// others wait for in its busy handler) and held the next change back.
//
// Positions of one agent are written in the order they were put, never
// two at once, and an agent's positions that wait together are coalesced:
// only the newest is written, as it carries everything the older ones did
// (revisions only move forward within a stream, and a newer stream's
// position replaces an older stream's). A position is a record of where
// an agent stands, not a condition of what is sent next, so writing it a
// little later changes no stream's behaviour; a write that fails is logged,
// as before.
type positions struct {
	st      *store.Store
	log     *slog.Logger
	writers int

	mu      sync.Mutex
	cond    *sync.Cond
	pending map[string]store.AgentSync // newest unwritten position per agent
	queue   []string                   // agents with a pending position and no write in flight, oldest first
	busy    map[string]bool            // agents whose position is being written
	closed  bool
	done    sync.WaitGroup
	running bool
}

// newPositions returns a writer with writers goroutines once started: one
// for SQLite, whose writes serialize anyway, a few for server databases,
// whose connection pool they share with the streams' reads. They are few
// already, so they take no storeSlots and do not queue behind agents'
// calls.
func newPositions(st *store.Store, log *slog.Logger) *positions {
	writers := 4
	if st.Backend() == "sqlite" {
		writers = 1
	}
	p := &positions{st: st, log: log, writers: writers, pending: map[string]store.AgentSync{}, busy: map[string]bool{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// start starts the writers; stop stops them.
func (p *positions) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.closed {
		return
	}
	p.running = true
	for range p.writers {
		p.done.Go(p.write)
	}
}

// put hands over an agent's newest position. It never blocks on the
// database.
func (p *positions) put(rec store.AgentSync) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, waiting := p.pending[rec.AgentID]; !waiting && !p.busy[rec.AgentID] {
		p.queue = append(p.queue, rec.AgentID)
		p.cond.Signal()
	}
	p.pending[rec.AgentID] = rec
}

// write is one writer: it takes the oldest waiting agent's newest
// position and stores it, until stop and nothing is left.
func (p *positions) write() {
	for {
		p.mu.Lock()
		for len(p.queue) == 0 && !p.closed {
			p.cond.Wait()
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			return
		}
		id := p.queue[0]
		p.queue[0] = ""
		p.queue = p.queue[1:]
		rec := p.pending[id]
		delete(p.pending, id)
		p.busy[id] = true
		p.mu.Unlock()

		ctx, cancel := context.WithTimeout(context.Background(), positionWriteTimeout)
		err := p.st.PutAgentSync(ctx, rec)
		cancel()
		if err != nil {
			p.log.Warn("record agent sync", "agent_id", rec.AgentID, "error", err)
		}

		p.mu.Lock()
		delete(p.busy, id)
		if _, again := p.pending[id]; again {
			p.queue = append(p.queue, id)
			p.cond.Signal()
		}
		p.mu.Unlock()
	}
}

// stop writes what is pending and stops the writers. Positions put after
// stop are not written.
func (p *positions) stop() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.done.Wait()
}
