package fanout

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// DefaultPoll is how often the hub polls the store for new revisions. It
// is the floor of the latency between a commit on any replica and its
// agents hearing of it.
const DefaultPoll = 200 * time.Millisecond

// pollLookback widens each poll's window, before the start of the last
// successful poll, to cover clock skew between replicas and commits that
// became visible late.
const pollLookback = 2 * time.Second

// Hub tells subscribers when their data plane's head moves, on whichever
// replica the change was committed: it polls the store's heads, so its
// correctness needs no LISTEN/NOTIFY (CockroachDB has none).
type Hub struct {
	st   *store.Store
	poll time.Duration
	log  *slog.Logger
	now  func() time.Time

	mu    sync.Mutex
	subs  map[string]map[*Subscription]struct{}
	heads map[string]int64
}

// Subscription is one subscriber's interest in a data plane's head.
type Subscription struct {
	fn   func()
	dp   string
	hub  *Hub
	once sync.Once
}

// NewHub returns a hub; poll 0 means DefaultPoll, now nil means time.Now.
func NewHub(st *store.Store, poll time.Duration, log *slog.Logger, now func() time.Time) (*Hub, error) {
	if st == nil {
		return nil, errors.New("fanout: hub needs a store")
	}
	if poll == 0 {
		poll = DefaultPoll
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Hub{st: st, poll: poll, log: log, now: now,
		subs: map[string]map[*Subscription]struct{}{}, heads: map[string]int64{}}, nil
}

// Subscribe calls fn whenever the data plane's head may have moved, so a
// subscriber keeps no goroutine waiting (a change may be told more than
// once: by the committing replica's Notify and by the poll). fn is called
// with the hub's lock held: it must return at once and not call the hub.
// It is not called once Close has returned.
func (h *Hub) Subscribe(dataPlaneID string, fn func()) *Subscription {
	s := &Subscription{fn: fn, dp: dataPlaneID, hub: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.subs[dataPlaneID] == nil {
		h.subs[dataPlaneID] = map[*Subscription]struct{}{}
	}
	h.subs[dataPlaneID][s] = struct{}{}
	return s
}

// Close stops notifications; it is safe to call twice.
func (s *Subscription) Close() {
	s.once.Do(func() {
		h := s.hub
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[s.dp], s)
		if len(h.subs[s.dp]) == 0 {
			delete(h.subs, s.dp)
		}
	})
}

// Notify wakes a data plane's subscribers now; a replica calls it after
// its own commits to skip the poll delay.
func (h *Hub) Notify(dataPlaneID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[dataPlaneID] {
		s.fn()
	}
}

// Run polls until ctx ends.
func (h *Hub) Run(ctx context.Context) error {
	t := time.NewTicker(h.poll)
	defer t.Stop()
	var lastOK time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		start := h.now()
		since := lastOK
		if since.IsZero() {
			since = start
		}
		heads, err := h.st.HeadsChangedSince(ctx, since.Add(-pollLookback))
		if err != nil {
			if ctx.Err() == nil {
				h.log.Warn("poll heads", "error", err)
			}
			continue
		}
		lastOK = start
		for _, head := range heads {
			h.mu.Lock()
			moved := head.Revision > h.heads[head.DataPlaneID]
			if moved {
				h.heads[head.DataPlaneID] = head.Revision
			}
			h.mu.Unlock()
			if moved {
				h.Notify(head.DataPlaneID)
			}
		}
	}
}
