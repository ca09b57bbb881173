package cache

import (
	"errors"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// FuzzApplyDelta feeds arbitrary DeltaPayloads to a cache at revision 2
// (or a fresh one) and checks that ApplyDelta never panics, refuses only
// with its typed errors and then changes nothing, lands exactly on the
// delta's end when it accepts, and that the cache's state hash is always
// the configstate hash of its documents.
func FuzzApplyDelta(f *testing.F) {
	ch := newChain()
	a, b := doc("a", 1, `{"a":1}`), doc("b", 1, `{"b":1}`)
	p1 := ch.next(f, put(a), put(b))
	p2 := ch.next(f, put(doc("c", 1, "c")))
	seedState := ch.sorted()

	add := func(p *agentv1.DeltaPayload, fresh bool) {
		data, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, fresh)
	}
	add(p1, true)
	add(p1, false)
	add(p2, false)
	add(ch.delta(f, del(b)), false)
	add(ch.delta(f, put(doc("a", 2, "a2")), del(a), put(a)), false)
	add(ch.delta(f, del(a), del(b), put(&agentv1.Document{ScopeType: "cluster", ScopeId: "c", Kind: "k/v", Name: "n", Labels: map[string]string{"x": "y"}})), false)
	broken := ch.delta(f, put(doc("d", 1, "d")))
	broken.StateHash = broken.PrevStateHash
	add(broken, false)
	broken = ch.delta(f, put(doc("d", 1, "d")))
	broken.Operations = append(broken.Operations, &agentv1.Operation{Kind: 7})
	add(broken, false)
	f.Add([]byte{}, false)
	f.Add([]byte{}, true)

	base := f.TempDir()
	var (
		// mu makes the fuzz function safe should the engine ever call it
		// concurrently; the caches are shared across calls.
		mu     sync.Mutex
		opened int
		seeded *Cache
		fresh  *Cache
	)
	open := func(tb testing.TB) *Cache {
		tb.Helper()
		opened++
		c, err := Open(filepath.Join(base, strconv.Itoa(opened), "config.db"))
		if err != nil {
			tb.Fatal(err)
		}
		return c
	}
	seeded, fresh = open(f), open(f)
	f.Cleanup(func() {
		seeded.Close()
		fresh.Close()
	})
	mustApply(f, seeded, p1)
	mustApply(f, seeded, p2)
	want := seeded.State()

	f.Fuzz(func(t *testing.T, data []byte, useFresh bool) {
		p := &agentv1.DeltaPayload{}
		if err := proto.Unmarshal(data, p); err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		c := seeded
		if useFresh {
			if !fresh.State().fresh() {
				fresh.Close()
				fresh = open(t)
			}
			c = fresh
		} else if c.State() != want {
			if err := c.ReplaceWithSnapshot(testDataPlane, want.Revision, want.StateHash, seedState); err != nil {
				t.Fatalf("reset: %v", err)
			}
		}
		before := viewOf(c)

		err := c.ApplyDelta(p, data)

		after := viewOf(c)
		if got := hashOf(after.Docs); after.State.StateHash != got {
			t.Fatalf("state hash %s; the documents hash to %s", after.State.StateHash, got)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrWrongDataPlane) && !errors.Is(err, ErrStale) &&
				!errors.Is(err, ErrGap) && !errors.Is(err, ErrChainBroken) && !errors.Is(err, ErrStateMismatch) {
				t.Fatalf("ApplyDelta: %v; want one of the typed errors", err)
			}
			checkView(t, "after a refusal", after, before)
			return
		}
		if s := after.State; s.DataPlaneID != p.DataPlaneId || s.Revision != p.ToRevision || s.StateHash != p.StateHash || s.Epoch != before.State.Epoch {
			t.Fatalf("accepted delta %+v; state is %+v", p, s)
		}
	})
}
