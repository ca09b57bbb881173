package agentapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// positionWriteTimeout bounds one write of a batch of positions.
const positionWriteTimeout = 30 * time.Second

// positionBatch is how many agents' positions a writer takes at once and
// writes in one transaction.
const positionBatch = 500

// positions records config streams' positions (store.AgentSync) for the
// stream handlers, off their goroutines: a handler hands over its newest
// position and goes on sending, and a few writers store them. A fleet's
// change wakes every stream of the data plane at once, and each used to
// write its position (twice: sent, then acknowledged) in a transaction of
// its own before it could take the next change; thousands of concurrent
// writers on one database serialize (SQLite has one writer, which the
// others wait for in its busy handler) and held the next change back.
//
// Written off the streams, positions were still written one agent a
// transaction: with 10,000 agents a config change made 10,000 such
// transactions, and the control plane recorded every ACK 20–30 s after the
// change (profiled). So a writer takes up to positionBatch waiting agents
// at once, oldest first, and writes their newest positions in one
// transaction (store.PutAgentSyncs): 10,000 agents' positions take as few
// as twenty. A writer takes whatever waits when it is free, so batches
// grow with the backlog and none is held back to fill.
//
// Positions of one agent are written in the order they were put, never
// two at once (an agent whose position is being written is in no other
// batch; a position put meanwhile waits for that write to end), and an
// agent's positions that wait together are coalesced: only the newest is
// written, as it carries everything the older ones did (revisions only
// move forward within a stream, and a newer stream's position replaces an
// older stream's). A position is a record of where an agent stands, not a
// condition of what is sent next, so writing it a little later changes no
// stream's behaviour. A batch that fails is written again one position at
// a time, so that one position the database refuses loses only its own
// agent's; failures are logged once a batch, not per agent, and not
// retried further: each agent's next position replaces its failed one.
// stop writes what is pending and stops the writers; positions put after
// stop are not written.
type positions struct {
	// putSyncs stores a batch: the store's PutAgentSyncs; tests wrap it.
	putSyncs func(context.Context, []store.AgentSync) error
	log      *slog.Logger

	writerPool                            // its mu guards the fields below
	pending    map[string]store.AgentSync // newest unwritten position per agent
	queue      []string                   // agents with a pending position and no write in flight, oldest first
	busy       map[string]bool            // agents whose position is being written
}

// newPositions returns positions with the writer pool's writers once
// started. As a writer takes every waiting agent up to positionBatch, a
// few writers are enough (writerPool).
func newPositions(st *store.Store, log *slog.Logger) *positions {
	p := &positions{putSyncs: st.PutAgentSyncs, log: log, pending: map[string]store.AgentSync{}, busy: map[string]bool{}}
	p.init(st)
	return p
}

// start starts the writers; stop stops them.
func (p *positions) start() { p.run(p.write) }

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

// write is one writer: it takes up to positionBatch of the oldest
// waiting agents' newest positions and stores them in one transaction,
// until stop and nothing is left.
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
		batch := make([]store.AgentSync, min(len(p.queue), positionBatch))
		for i, id := range p.queue[:len(batch)] {
			batch[i] = p.pending[id]
			delete(p.pending, id)
			p.busy[id] = true
		}
		clear(p.queue[:len(batch)])
		p.queue = p.queue[len(batch):]
		p.mu.Unlock()

		p.store(batch)

		p.mu.Lock()
		for _, rec := range batch {
			delete(p.busy, rec.AgentID)
			if _, again := p.pending[rec.AgentID]; again {
				p.queue = append(p.queue, rec.AgentID)
				p.cond.Signal()
			}
		}
		p.mu.Unlock()
	}
}

// store writes a batch in one transaction or, when that fails, each
// position alone, so that one position the database refuses loses only
// its own agent's.
func (p *positions) store(batch []store.AgentSync) {
	ctx, cancel := context.WithTimeout(context.Background(), positionWriteTimeout)
	defer cancel()
	err := p.putSyncs(ctx, batch)
	if err == nil {
		return
	}
	failed := 1
	if len(batch) > 1 {
		// Logged once a batch, not once an agent: a database that is down
		// fails them all.
		p.log.Warn("record agent syncs; writing each alone", "agents", len(batch), "error", err)
		failed = 0
		for _, rec := range batch {
			if e := p.putSyncs(ctx, []store.AgentSync{rec}); e != nil {
				failed, err = failed+1, e
			}
		}
	}
	if failed > 0 {
		p.log.Warn("record agent syncs", "agents", failed, "error", err)
	}
}
