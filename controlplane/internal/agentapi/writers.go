package agentapi

import (
	"sync"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// writerPool is the few goroutines that write what positions and
// reportGroups queue under mu: one on SQLite, whose writes serialize
// anyway, two on server databases, so that one batch is gathered while the
// other's transaction waits on its round trips (more would split the
// backlog into smaller transactions and take more of the connection pool
// the streams' reads share). They are few, so they take no storeSlots and
// do not queue behind agents' calls.
type writerPool struct {
	writers int

	mu      sync.Mutex
	cond    sync.Cond // on mu: work was queued, or the pool closed
	closed  bool
	running bool
	done    sync.WaitGroup
}

func (w *writerPool) init(st *store.Store) {
	w.writers = 2
	if st.Backend() == "sqlite" {
		w.writers = 1
	}
	w.cond.L = &w.mu
}

// run starts the writers, each running write until it returns; once
// only, and not after stop.
func (w *writerPool) run(write func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running || w.closed {
		return
	}
	w.running = true
	for range w.writers {
		w.done.Go(write)
	}
}

// stop closes the pool, wakes the writers and waits for them to return
// (each writes what waits first).
func (w *writerPool) stop() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.done.Wait()
}
