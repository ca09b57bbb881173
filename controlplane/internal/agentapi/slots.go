package agentapi

import (
	"context"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

// storeSlots bounds how many store calls the agent API's calls make at
// once: the caller's registration, enrollment, renewal, reports, a new
// stream's catch-up, refusals. (positions and heads bound their own.) A
// fleet's calls come in bursts: enrollment waves, a change waking every
// stream, a reconnect storm. On SQLite each concurrent call holds a
// connection of its own (two open files and a page cache), and writers
// beyond the one SQLite runs wait in its busy handler; unbounded, 10,000
// agents exhausted the control plane's open files. A slot is held only
// for the call itself, never across another acquisition, so slots cannot
// deadlock.
type storeSlots chan struct{}

// Slots per backend: SQLite runs one writer and a few readers well; a
// server database's pool (pgxpool's default is max(4, CPUs) connections)
// already bounds it, so its slots only bound the goroutines queued on it.
const (
	sqliteSlots = 8
	serverSlots = 64
)

func newStoreSlots(st *store.Store) storeSlots {
	if st.Backend() == "sqlite" {
		return make(storeSlots, sqliteSlots)
	}
	return make(storeSlots, serverSlots)
}

// run calls fn holding a slot, after waiting for one while ctx allows.
func (s storeSlots) run(ctx context.Context, fn func() error) error {
	select {
	case s <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s }()
	return fn()
}

// slotted is run for store calls that return a value.
func slotted[T any](ctx context.Context, s storeSlots, fn func() (T, error)) (T, error) {
	var v T
	err := s.run(ctx, func() (err error) {
		v, err = fn()
		return err
	})
	return v, err
}
