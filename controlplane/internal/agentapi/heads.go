package agentapi

import (
	"context"
	"sync"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// headReadTimeout bounds one shared read of a data plane's head.
const headReadTimeout = 30 * time.Second

// heads reads data planes' heads for the config streams, sharing reads: a
// change wakes every stream of its data plane at once, and each reading
// the head on its own made as many concurrent queries (and, on SQLite, as
// many connections) as the data plane has agents.
//
// A caller gets a head read by a query that began after it called, so it
// sees every commit that was visible when it asked, as with a read of its
// own; callers that ask while a read of the same data plane is in flight
// share the next one, which starts when that read ends. So at most two
// reads per data plane are in flight, however many streams ask; they
// take no storeSlots, so a change's fan-out never waits behind the
// agents' calls (such as the status reports the previous change caused).
type heads struct {
	st *store.Store

	mu      sync.Mutex
	flights map[string]*headFlights
}

// headFlights is one data plane's reads: the one in flight and the one
// that callers arriving meanwhile wait to share.
type headFlights struct {
	running, next *headRead
}

type headRead struct {
	done chan struct{}
	head store.Head
	err  error
}

func newHeads(st *store.Store) *heads {
	return &heads{st: st, flights: map[string]*headFlights{}}
}

// get returns the data plane's head, as store.GetHead does.
func (h *heads) get(ctx context.Context, dataPlaneID string) (store.Head, error) {
	h.mu.Lock()
	f := h.flights[dataPlaneID]
	if f == nil {
		f = &headFlights{}
		h.flights[dataPlaneID] = f
	}
	if f.running == nil {
		r := &headRead{done: make(chan struct{})}
		f.running = r
		h.mu.Unlock()
		h.read(dataPlaneID, f, r)
		return r.head, r.err
	}
	if w := f.next; w != nil {
		h.mu.Unlock()
		return wait(ctx, w)
	}
	// This caller leads the next read: it starts once the read in flight,
	// which may have begun before this caller asked, has ended.
	w := &headRead{done: make(chan struct{})}
	f.next = w
	prev := f.running
	h.mu.Unlock()
	<-prev.done
	h.mu.Lock()
	f.next = nil
	f.running = w
	h.mu.Unlock()
	h.read(dataPlaneID, f, w)
	return w.head, w.err
}

// read runs r's query, detached from any one caller's context (others
// share its result), and ends the flight.
func (h *heads) read(dataPlaneID string, f *headFlights, r *headRead) {
	ctx, cancel := context.WithTimeout(context.Background(), headReadTimeout)
	r.head, r.err = h.st.GetHead(ctx, dataPlaneID)
	cancel()
	h.mu.Lock()
	if f.running == r {
		f.running = nil
	}
	if f.running == nil && f.next == nil && h.flights[dataPlaneID] == f {
		delete(h.flights, dataPlaneID)
	}
	h.mu.Unlock()
	close(r.done)
}

func wait(ctx context.Context, r *headRead) (store.Head, error) {
	select {
	case <-r.done:
		return r.head, r.err
	case <-ctx.Done():
		return store.Head{}, ctx.Err()
	}
}
