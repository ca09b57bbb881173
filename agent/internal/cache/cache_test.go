package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

var epochRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestOpenFresh(t *testing.T) {
	for _, tc := range []struct {
		name string
		// path returns where to open the cache and the directory Open
		// must create, if any.
		path func(dir string) (path, created string)
	}{
		{"existing directory", func(dir string) (string, string) { return filepath.Join(dir, "config.db"), "" }},
		{"new directories", func(dir string) (string, string) {
			return filepath.Join(dir, "a", "b", "config.db"), filepath.Join(dir, "a", "b")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, created := tc.path(t.TempDir())
			c := openCache(t, path)
			s := c.State()
			if s.DataPlaneID != "" || s.Revision != 0 || s.StateHash != configstate.EmptyHash {
				t.Errorf("State() = %+v; want no data plane, revision 0, hash %s", s, configstate.EmptyHash)
			}
			if !epochRE.MatchString(s.Epoch) {
				t.Errorf("epoch %q; want 32 lowercase hex characters", s.Epoch)
			}
			if got := c.List(""); len(got) != 0 {
				t.Errorf("List(\"\") has %d documents; want 0", len(got))
			}
			if v, env := c.KeySet(); v != 0 || env != nil {
				t.Errorf("KeySet() = %d, %q; want 0, nil", v, env)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("file mode %v; want 0600", got)
			}
			if got := c.Size(); got != fi.Size() || got == 0 {
				t.Errorf("Size() = %d; want the file's size %d, not 0", got, fi.Size())
			}
			if created != "" {
				fi, err := os.Stat(created)
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode().Perm(); got != 0o700 {
					t.Errorf("directory mode %v; want 0700", got)
				}
			}
		})
	}
	t.Run("epochs differ", func(t *testing.T) {
		a, b := openCache(t, cachePath(t)), openCache(t, cachePath(t))
		if a.State().Epoch == b.State().Epoch {
			t.Errorf("two new caches share epoch %s", a.State().Epoch)
		}
	})
}

func TestApplyDeltaChainAndReopen(t *testing.T) {
	path := cachePath(t)
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	epoch := c.State().Epoch
	ch := newChain()
	a, b, d := doc("a", 1, `{"a":1}`), doc("b", 1, `{"b":1}`), doc("d", 1, `{"d":1}`)
	steps := []struct {
		name string
		ops  []*agentv1.Operation
	}{
		{"puts on a fresh cache", []*agentv1.Operation{put(a), put(b)}},
		{"new and replaced", []*agentv1.Operation{put(d), put(doc("a", 2, `{"a":2}`))}},
		{"delete", []*agentv1.Operation{del(b)}},
		{"no operations", nil},
		{"cluster scope", []*agentv1.Operation{put(&agentv1.Document{ScopeType: "cluster", ScopeId: "c-1", Kind: "k", Name: "x", Version: 7})}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			mustApply(t, c, ch.next(t, st.ops...))
			checkHolds(t, c, ch)
		})
	}
	t.Run("multi-revision span", func(t *testing.T) {
		p := ch.delta(t, del(d))
		p.ToRevision = p.FromRevision + 5
		mustApply(t, c, p)
		ch.rev, ch.docs = p.ToRevision, map[string]*agentv1.Document{}
		for _, doc := range c.List("") {
			ch.docs[docKey(doc)] = doc
		}
		if got := c.State().Revision; got != 10 {
			t.Errorf("revision %d; want 10", got)
		}
		if _, ok := c.Get(docKey(d)); ok {
			t.Errorf("Get(%s) found a deleted document", docKey(d))
		}
	})
	want := viewOf(c)
	if want.State.Epoch != epoch {
		t.Errorf("epoch changed from %s to %s", epoch, want.State.Epoch)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, path)
	checkView(t, "after reopen", viewOf(c), want)
	if got, ok := c.Get(docKey(a)); !ok || got.Version != 2 {
		t.Errorf("Get(%s) = %v, %v; want version 2", docKey(a), got, ok)
	}
	if got := c.List("data_plane/"); len(got) != 1 || got[0].Name != "a" {
		t.Errorf("List(data_plane/) = %v; want just a", got)
	}
	if got := c.List("cluster/c-1/"); len(got) != 1 || got[0].Name != "x" {
		t.Errorf("List(cluster/c-1/) = %v; want just x", got)
	}
}

func TestApplyDeltaRefusals(t *testing.T) {
	a, b := doc("a", 1, "a"), doc("b", 1, "b")
	for _, tc := range []struct {
		name string
		// fresh runs the case against a fresh cache instead of one at
		// revision 2.
		fresh bool
		// delta builds the refused delta; ch is at the cache's state.
		delta func(t *testing.T, ch *chain) *agentv1.DeltaPayload
		want  error
	}{
		{"wrong data plane", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.DataPlaneId = "dp-2"
			return p
		}, ErrWrongDataPlane},
		{"replay of the last delta", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p, _ := buildDelta(t, ch.dataPlane, 1, map[string]*agentv1.Document{docKey(a): a}, put(b))
			return p
		}, ErrStale},
		{"rollback to revision 1", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p, _ := buildDelta(t, ch.dataPlane, 0, nil, put(a))
			return p
		}, ErrStale},
		{"gap", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.FromRevision, p.ToRevision = 3, 4
			return p
		}, ErrGap},
		{"overlap", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.FromRevision, p.ToRevision = 1, 3
			return p
		}, ErrGap},
		{"fresh cache, delta from revision 1", true, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(a))
			p.FromRevision, p.ToRevision = 1, 2
			return p
		}, ErrGap},
		{"chain broken", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.PrevStateHash = configstate.EmptyHash
			return p
		}, ErrChainBroken},
		{"fresh cache, chain broken", true, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(a))
			p.PrevStateHash = ""
			return p
		}, ErrChainBroken},
		{"state mismatch", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.StateHash = ch.hash()
			return p
		}, ErrStateMismatch},
		{"nil delta", false, func(*testing.T, *chain) *agentv1.DeltaPayload { return nil }, ErrMalformed},
		{"no data plane", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.DataPlaneId = ""
			return p
		}, ErrMalformed},
		{"to revision equals from", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.ToRevision = p.FromRevision
			return p
		}, ErrMalformed},
		{"negative from revision", true, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(a))
			p.FromRevision, p.ToRevision = -1, 1
			return p
		}, ErrMalformed},
		{"unspecified operation", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.Operations[0].Kind = agentv1.Operation_KIND_UNSPECIFIED
			return p
		}, ErrMalformed},
		{"unknown operation", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.Operations[0].Kind = 99
			return p
		}, ErrMalformed},
		{"nil operation", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t, put(doc("c", 1, "c")))
			p.Operations = append(p.Operations, nil)
			return p
		}, ErrMalformed},
		{"put without document", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t)
			p.Operations = []*agentv1.Operation{{Kind: agentv1.Operation_KIND_PUT}}
			return p
		}, ErrMalformed},
		{"delete without document", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			p := ch.delta(t)
			p.Operations = []*agentv1.Operation{{Kind: agentv1.Operation_KIND_DELETE}}
			return p
		}, ErrMalformed},
		{"put without name", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			c := doc("c", 1, "c")
			c.Name = ""
			return ch.delta(t, put(c))
		}, ErrMalformed},
		{"put without scope type", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			c := doc("c", 1, "c")
			c.ScopeType = ""
			return ch.delta(t, put(c))
		}, ErrMalformed},
		{"delete without kind", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			op := del(b)
			op.Document.Kind = ""
			p := ch.delta(t)
			p.Operations = []*agentv1.Operation{op}
			return p
		}, ErrMalformed},
		{"delete without scope id", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			op := del(b)
			op.Document.ScopeId = ""
			p := ch.delta(t)
			p.Operations = []*agentv1.Operation{op}
			return p
		}, ErrMalformed},
		{"invalid UTF-8", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			return ch.delta(t, put(doc("c\xff", 1, "c")))
		}, ErrMalformed},
		{"key too long", false, func(t *testing.T, ch *chain) *agentv1.DeltaPayload {
			return ch.delta(t, put(doc(strings.Repeat("n", bolt.MaxKeySize), 1, "c")))
		}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := cachePath(t)
			c, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { c.Close() }()
			ch := newChain()
			if !tc.fresh {
				mustApply(t, c, ch.next(t, put(a)))
				mustApply(t, c, ch.next(t, put(b)))
			}
			before, file := viewOf(c), readFile(t, path)
			ws, cancel := c.Watch()
			defer cancel()

			p := tc.delta(t, ch)
			err = c.ApplyDelta(p, []byte("envelope"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("ApplyDelta: got %v; want %v", err, tc.want)
			}
			checkView(t, "after the refusal", viewOf(c), before)
			if !bytes.Equal(readFile(t, path), file) {
				t.Errorf("the file changed")
			}
			select {
			case s := <-ws:
				t.Errorf("watcher got %+v; want nothing", s)
			default:
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			c = openCache(t, path)
			checkView(t, "after reopen", viewOf(c), before)
		})
	}
}

func TestApplyDeltaIsAtomic(t *testing.T) {
	path := cachePath(t)
	c := openCache(t, path)
	ch := newChain()
	mustApply(t, c, ch.next(t, put(doc("a", 1, "a"))))
	before := viewOf(c)

	x, y, z := doc("x", 1, "x"), doc("y", 1, "y"), doc("z", 1, "z")
	p := ch.delta(t, put(x), put(y), put(z))
	// The hash of the first two puts only: the third is where it breaks.
	p.StateHash = hashOf(append(ch.sorted(), x, y))
	if err := c.ApplyDelta(p, nil); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("ApplyDelta: got %v; want %v", err, ErrStateMismatch)
	}
	for _, d := range []*agentv1.Document{x, y, z} {
		if _, ok := c.Get(docKey(d)); ok {
			t.Errorf("Get(%s) found a document of the refused delta", docKey(d))
		}
	}
	checkView(t, "after the refusal", viewOf(c), before)
	c.Close()
	c = openCache(t, path)
	checkView(t, "after reopen", viewOf(c), before)
}

func TestApplyDeltaOperationOrder(t *testing.T) {
	a1, a2 := doc("a", 1, "one"), doc("a", 2, "two")
	for _, tc := range []struct {
		name string
		ops  []*agentv1.Operation
		want *agentv1.Document // a after the delta; nil for absent
	}{
		{"delete then put", []*agentv1.Operation{del(a1), put(a2)}, a2},
		{"put then delete", []*agentv1.Operation{put(a2), del(a2)}, nil},
		{"put twice", []*agentv1.Operation{put(doc("a", 5, "five")), put(a2)}, a2},
		{"delete twice", []*agentv1.Operation{del(a1), del(a1)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openCache(t, cachePath(t))
			ch := newChain()
			mustApply(t, c, ch.next(t, put(a1)))
			mustApply(t, c, ch.next(t, tc.ops...))
			checkHolds(t, c, ch)
			got, ok := c.Get(docKey(a1))
			switch {
			case tc.want == nil && ok:
				t.Errorf("Get(a) = %v; want none", got)
			case tc.want != nil && (!ok || !proto.Equal(got, tc.want)):
				t.Errorf("Get(a) = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

func TestReplaceWithSnapshot(t *testing.T) {
	path := cachePath(t)
	c := openCache(t, path)
	ch := newChain()
	mustApply(t, c, ch.next(t, put(doc("a", 1, "a")), put(doc("b", 1, "b"))))
	mustApply(t, c, ch.next(t, del(doc("a", 1, "a"))))
	if err := c.SaveKeySet(3, []byte("ks")); err != nil {
		t.Fatal(err)
	}
	epoch := c.State().Epoch
	snap := []*agentv1.Document{doc("c", 4, "c"), doc("b", 2, "b2")}

	t.Run("refusals", func(t *testing.T) {
		before, file := viewOf(c), readFile(t, path)
		for _, tc := range []struct {
			name      string
			dataPlane string
			revision  int64
			hash      string
			docs      []*agentv1.Document
			want      error
		}{
			{"hash mismatch", testDataPlane, 10, ch.hash(), snap, ErrStateMismatch},
			{"hash of fewer documents", testDataPlane, 10, hashOf(snap[:1]), snap, ErrStateMismatch},
			{"no data plane", "", 10, hashOf(snap), snap, ErrMalformed},
			{"negative revision", testDataPlane, -1, hashOf(snap), snap, ErrMalformed},
			{"nil document", testDataPlane, 10, hashOf(snap), append([]*agentv1.Document{nil}, snap...), ErrMalformed},
			{"document without name", testDataPlane, 10, hashOf(snap), []*agentv1.Document{{ScopeType: "data_plane", ScopeId: "x", Kind: "k"}}, ErrMalformed},
			{"duplicate key", testDataPlane, 10, hashOf([]*agentv1.Document{snap[0], snap[0]}), []*agentv1.Document{snap[0], snap[0]}, ErrMalformed},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := c.ReplaceWithSnapshot(tc.dataPlane, tc.revision, tc.hash, tc.docs)
				if !errors.Is(err, tc.want) {
					t.Fatalf("ReplaceWithSnapshot: got %v; want %v", err, tc.want)
				}
				checkView(t, "after the refusal", viewOf(c), before)
				if !bytes.Equal(readFile(t, path), file) {
					t.Errorf("the file changed")
				}
			})
		}
	})

	t.Run("replace", func(t *testing.T) {
		if err := c.ReplaceWithSnapshot(testDataPlane, 10, hashOf(snap), snap); err != nil {
			t.Fatalf("ReplaceWithSnapshot: %v", err)
		}
		ch.rev, ch.docs = 10, map[string]*agentv1.Document{}
		for _, d := range snap {
			ch.docs[docKey(d)] = d
		}
		checkHolds(t, c, ch)
		if got := c.State().Epoch; got != epoch {
			t.Errorf("epoch %s; want %s kept", got, epoch)
		}
		if v, env := c.KeySet(); v != 3 || string(env) != "ks" {
			t.Errorf("KeySet() = %d, %q; want 3, ks", v, env)
		}
		mustApply(t, c, ch.next(t, put(doc("d", 1, "d"))))
		checkHolds(t, c, ch)
	})

	t.Run("reopen", func(t *testing.T) {
		want := viewOf(c)
		c.Close()
		if got := envelopes(t, path); len(got) != 1 {
			t.Errorf("%d envelopes after the snapshot and one delta; want 1", len(got))
		}
		c := openCache(t, path)
		checkView(t, "after reopen", viewOf(c), want)
	})

	t.Run("fresh cache, empty snapshot", func(t *testing.T) {
		c := openCache(t, cachePath(t))
		if err := c.ReplaceWithSnapshot("dp-9", 0, configstate.EmptyHash, nil); err != nil {
			t.Fatalf("ReplaceWithSnapshot: %v", err)
		}
		if s := c.State(); s.DataPlaneID != "dp-9" || s.Revision != 0 {
			t.Errorf("State() = %+v; want dp-9 at revision 0", s)
		}
		ch := &chain{dataPlane: "dp-9", docs: map[string]*agentv1.Document{}}
		mustApply(t, c, ch.next(t, put(doc("a", 1, "a"))))
		checkHolds(t, c, ch)
	})
}

func TestEnvelopeRetention(t *testing.T) {
	path := cachePath(t)
	c := openCache(t, path)
	ch := newChain()
	const n = MaxEnvelopes + 6
	for i := 1; i <= n; i++ {
		p := ch.next(t, put(doc("a", int64(i), fmt.Sprint(i))))
		if err := c.ApplyDelta(p, []byte(fmt.Sprintf("envelope %d", i))); err != nil {
			t.Fatalf("ApplyDelta %d: %v", i, err)
		}
	}
	c.Close()
	got := envelopes(t, path)
	if len(got) != MaxEnvelopes {
		t.Errorf("%d envelopes; want %d", len(got), MaxEnvelopes)
	}
	for rev := int64(n - MaxEnvelopes + 1); rev <= n; rev++ {
		if want := fmt.Sprintf("envelope %d", rev); got[rev] != want {
			t.Errorf("envelope of revision %d: got %q; want %q", rev, got[rev], want)
		}
	}
}

// populated returns the path of a closed cache file at revision 2 and its
// view.
func populated(tb testing.TB) (string, view) {
	tb.Helper()
	path := cachePath(tb)
	c, err := Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	ch := newChain()
	mustApply(tb, c, ch.next(tb, put(doc("a", 1, "a")), put(doc("b", 1, "b"))))
	mustApply(tb, c, ch.next(tb, put(doc("c", 1, "c"))))
	if err := c.SaveKeySet(1, []byte("ks")); err != nil {
		tb.Fatal(err)
	}
	v := viewOf(c)
	if err := c.Close(); err != nil {
		tb.Fatal(err)
	}
	return path, v
}

// changeState rewrites the stored state record.
func changeState(fn func(m map[string]any)) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		var m map[string]any
		if err := json.Unmarshal(b.Get(keyState), &m); err != nil {
			return err
		}
		fn(m)
		data, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return b.Put(keyState, data)
	}
}

// changeDocument rewrites the stored document a.
func changeDocument(fn func(d *agentv1.Document)) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDocuments)
		key := []byte(docKey(doc("a", 1, "")))
		d := &agentv1.Document{}
		if err := proto.Unmarshal(b.Get(key), d); err != nil {
			return err
		}
		fn(d)
		data, err := proto.Marshal(d)
		if err != nil {
			return err
		}
		return b.Put(key, data)
	}
}

func TestOpenCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		// reason is part of CorruptError.Reason.
		reason string
	}{
		{"short garbage", func(t *testing.T, path string) {
			writeGarbage(t, path, 100)
		}, "bbolt"},
		{"garbage over the whole file", func(t *testing.T, path string) {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			writeGarbage(t, path, int(fi.Size()))
		}, "bbolt"},
		{"meta pages destroyed", func(t *testing.T, path string) {
			data := readFile(t, path)
			copy(data, garbage(t, 2*4096))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "bbolt"},
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, 3*4096); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"data pages scrambled", func(t *testing.T, path string) {
			data := readFile(t, path)
			copy(data[2*4096:], garbage(t, len(data)-2*4096))
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"state hash altered", func(t *testing.T, path string) {
			tamper(t, path, changeState(func(m map[string]any) { m["state_hash"] = configstate.EmptyHash }))
		}, "stored state hash"},
		{"revision without data plane", func(t *testing.T, path string) {
			tamper(t, path, changeState(func(m map[string]any) { m["data_plane_id"] = "" }))
		}, "revision 2"},
		{"unknown schema", func(t *testing.T, path string) {
			tamper(t, path, changeState(func(m map[string]any) { m["schema"] = 2 }))
		}, "schema version 2"},
		{"epoch missing", func(t *testing.T, path string) {
			tamper(t, path, changeState(func(m map[string]any) { delete(m, "epoch") }))
		}, "epoch"},
		{"unknown state field", func(t *testing.T, path string) {
			tamper(t, path, changeState(func(m map[string]any) { m["extra"] = 1 }))
		}, "unknown field"},
		{"state record missing", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete(keyState) })
		}, "missing state record"},
		{"documents bucket missing", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketDocuments) })
		}, "missing bucket"},
		{"document content changed", func(t *testing.T, path string) {
			tamper(t, path, changeDocument(func(d *agentv1.Document) { d.Content = []byte("evil") }))
		}, "stored state hash"},
		{"document labels changed", func(t *testing.T, path string) {
			tamper(t, path, changeDocument(func(d *agentv1.Document) { d.Labels["app"] = "evil" }))
		}, "stored digest"},
		{"document deleted", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketDocuments).Delete([]byte(docKey(doc("a", 1, "")))) })
		}, "stored state hash"},
		{"document under another key", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error {
				b := tx.Bucket(bucketDocuments)
				key := []byte(docKey(doc("a", 1, "")))
				v := bytes.Clone(b.Get(key))
				if err := b.Delete(key); err != nil {
					return err
				}
				return b.Put([]byte(docKey(doc("z", 1, ""))), v)
			})
		}, "has key"},
		{"document not a document", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketDocuments).Put([]byte(docKey(doc("a", 1, ""))), []byte{0xff, 0xff})
			})
		}, "document"},
		{"key set record broken", func(t *testing.T, path string) {
			tamper(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyKeySet, []byte("{")) })
		}, "key set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, before := populated(t)
			tc.damage(t, path)
			damaged := readFile(t, path)

			c, err := Open(path)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Open: got %v; want a *CorruptError", err)
			}
			if c == nil {
				t.Fatal("Open returned no cache with its CorruptError")
			}
			defer c.Close()
			t.Logf("Open: %v", err)
			if !strings.Contains(ce.Reason, tc.reason) {
				t.Errorf("reason %q; want it to mention %q", ce.Reason, tc.reason)
			}
			if !strings.HasPrefix(ce.MovedTo, path+".corrupt-") {
				t.Errorf("moved to %s; want %s.corrupt-<time>", ce.MovedTo, path)
			}
			if !bytes.Equal(readFile(t, ce.MovedTo), damaged) {
				t.Errorf("%s does not hold the damaged file", ce.MovedTo)
			}
			s := c.State()
			if s.DataPlaneID != "" || s.Revision != 0 || s.StateHash != configstate.EmptyHash || !epochRE.MatchString(s.Epoch) {
				t.Errorf("State() = %+v; want a fresh cache", s)
			}
			if s.Epoch == before.State.Epoch {
				t.Errorf("epoch %s kept; want a new one", s.Epoch)
			}
			if v, _ := c.KeySet(); v != 0 {
				t.Errorf("key set version %d; want 0", v)
			}
			// The new cache works and stays.
			ch := newChain()
			mustApply(t, c, ch.next(t, put(doc("n", 1, "n"))))
			want := viewOf(c)
			c.Close()
			c = openCache(t, path)
			checkView(t, "after reopen", viewOf(c), want)
		})
	}

	t.Run("twice in one second", func(t *testing.T) {
		path := cachePath(t)
		var moved []string
		for range 3 {
			c := openCache(t, path)
			c.Close()
			writeGarbage(t, path, 100)
			c, err := Open(path)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Open: got %v; want a *CorruptError", err)
			}
			c.Close()
			moved = append(moved, ce.MovedTo)
		}
		if moved[0] == moved[1] || moved[1] == moved[2] || moved[0] == moved[2] {
			t.Errorf("moved to %v; want three names", moved)
		}
		for _, m := range moved {
			if _, err := os.Stat(m); err != nil {
				t.Error(err)
			}
		}
	})
}

func garbage(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

func writeGarbage(tb testing.TB, path string, n int) {
	tb.Helper()
	if err := os.WriteFile(path, garbage(tb, n), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func TestOpenOtherErrors(t *testing.T) {
	t.Run("path is a directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.db")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		c, err := Open(path)
		var ce *CorruptError
		if err == nil || errors.As(err, &ce) || c != nil {
			t.Fatalf("Open: got %v, %v; want a plain error and no cache", c, err)
		}
		if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
			t.Errorf("the directory was moved: %v", err)
		}
	})
	t.Run("locked by another open", func(t *testing.T) {
		old := lockTimeout
		lockTimeout = 50 * time.Millisecond
		defer func() { lockTimeout = old }()
		path, before := populated(t)
		c := openCache(t, path)
		c2, err := Open(path)
		var ce *CorruptError
		if err == nil || errors.As(err, &ce) || c2 != nil {
			t.Fatalf("second Open: got %v, %v; want a plain error and no cache", c2, err)
		}
		checkView(t, "the first cache", viewOf(c), before)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the file was moved: %v", err)
		}
	})
	t.Run("directory not writable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores permissions")
		}
		dir := filepath.Join(t.TempDir(), "ro")
		if err := os.Mkdir(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		c, err := Open(filepath.Join(dir, "config.db"))
		if err == nil || !errors.Is(err, os.ErrPermission) || c != nil {
			t.Fatalf("Open: got %v, %v; want a permission error and no cache", c, err)
		}
	})
	t.Run("file not readable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root ignores permissions")
		}
		path, _ := populated(t)
		if err := os.Chmod(path, 0); err != nil {
			t.Fatal(err)
		}
		c, err := Open(path)
		if err == nil || !errors.Is(err, os.ErrPermission) || c != nil {
			t.Fatalf("Open: got %v, %v; want a permission error and no cache", c, err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the file was moved: %v", err)
		}
	})
}

func TestWatch(t *testing.T) {
	t.Run("in order", func(t *testing.T) {
		c := openCache(t, cachePath(t))
		ws, cancel := c.Watch()
		defer cancel()
		ch := newChain()
		for i := 1; i <= 3; i++ {
			mustApply(t, c, ch.next(t, put(doc("a", int64(i), "a"))))
			select {
			case s := <-ws:
				if s != c.State() {
					t.Errorf("got %+v; want %+v", s, c.State())
				}
			default:
				t.Fatalf("no state after delta %d", i)
			}
		}
		snap := []*agentv1.Document{doc("b", 1, "b")}
		if err := c.ReplaceWithSnapshot(testDataPlane, 9, hashOf(snap), snap); err != nil {
			t.Fatal(err)
		}
		if s := <-ws; s.Revision != 9 {
			t.Errorf("got revision %d after the snapshot; want 9", s.Revision)
		}
	})
	t.Run("slow reader sees the newest", func(t *testing.T) {
		c := openCache(t, cachePath(t))
		slow, cancelSlow := c.Watch()
		defer cancelSlow()
		ch := newChain()
		for i := 1; i <= 5; i++ {
			mustApply(t, c, ch.next(t, put(doc("a", int64(i), "a"))))
		}
		if s := <-slow; s.Revision != 5 || s != c.State() {
			t.Errorf("got %+v; want the newest state %+v", s, c.State())
		}
		select {
		case s := <-slow:
			t.Errorf("got a second state %+v; want none", s)
		default:
		}
	})
	t.Run("cancel", func(t *testing.T) {
		c := openCache(t, cachePath(t))
		ws, cancel := c.Watch()
		other, cancelOther := c.Watch()
		defer cancelOther()
		cancel()
		cancel()
		ch := newChain()
		mustApply(t, c, ch.next(t, put(doc("a", 1, "a"))))
		if s, ok := <-ws; ok {
			t.Errorf("got %+v after cancel; want a closed channel", s)
		}
		if s := <-other; s.Revision != 1 {
			t.Errorf("the other watcher got revision %d; want 1", s.Revision)
		}
	})
	t.Run("close", func(t *testing.T) {
		c := openCache(t, cachePath(t))
		ws, cancel := c.Watch()
		c.Close()
		if _, ok := <-ws; ok {
			t.Error("channel open after Close")
		}
		cancel()
		ws, cancel = c.Watch()
		defer cancel()
		if _, ok := <-ws; ok {
			t.Error("Watch after Close returned an open channel")
		}
	})
}

func TestConcurrentReadsDuringWrites(t *testing.T) {
	c := openCache(t, cachePath(t))
	ch := newChain()
	mustApply(t, c, ch.next(t, put(doc("a", 1, "a"))))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := c.State()
				if !epochRE.MatchString(s.Epoch) {
					t.Errorf("State() = %+v", s)
				}
				for _, d := range c.List("") {
					// Readers own their copies.
					d.Content = append(d.Content, '!')
				}
				if d, ok := c.Get(docKey(doc("a", 1, ""))); !ok || d.Name != "a" {
					t.Errorf("Get(a) = %v, %v", d, ok)
				}
				_ = c.List("data_plane/" + testDataPlane + "/envoy/")
				_ = c.Size()
			}
		})
	}
	for i := 2; i <= 50; i++ {
		mustApply(t, c, ch.next(t, put(doc("a", int64(i), "a")), put(doc(fmt.Sprint("n", i), 1, "n"))))
	}
	close(stop)
	wg.Wait()
	checkHolds(t, c, ch)
}

func TestCopies(t *testing.T) {
	c := openCache(t, cachePath(t))
	ch := newChain()
	a := doc("a", 1, "a")
	p := ch.next(t, put(a))
	mustApply(t, c, p)
	// Changing what was passed in or handed out changes nothing inside.
	a.Content[0] = 'X'
	a.Labels["app"] = "X"
	got, _ := c.Get(docKey(a))
	got.Content[0] = 'Y'
	c.List("")[0].Version = 99
	checkHolds(t, c, &chain{dataPlane: testDataPlane, rev: 1, docs: map[string]*agentv1.Document{docKey(a): doc("a", 1, "a")}})
}

func TestKeySet(t *testing.T) {
	path := cachePath(t)
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		version  int64
		envelope string
		want     error
	}{
		{0, "zero", ErrMalformed},
		{-1, "negative", ErrMalformed},
		{2, "two", nil},
		{1, "one", ErrStale},
		{2, "two again", nil},
		{5, "five", nil},
		{4, "four", ErrStale},
	}
	for _, st := range steps {
		if err := c.SaveKeySet(st.version, []byte(st.envelope)); !errors.Is(err, st.want) {
			t.Errorf("SaveKeySet(%d): got %v; want %v", st.version, err, st.want)
		}
	}
	if v, env := c.KeySet(); v != 5 || string(env) != "five" {
		t.Errorf("KeySet() = %d, %q; want 5, five", v, env)
	}
	c.Close()
	c = openCache(t, path)
	if v, env := c.KeySet(); v != 5 || string(env) != "five" {
		t.Errorf("after reopen KeySet() = %d, %q; want 5, five", v, env)
	}
}

func TestClosed(t *testing.T) {
	c := openCache(t, cachePath(t))
	ch := newChain()
	mustApply(t, c, ch.next(t, put(doc("a", 1, "a"))))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.ApplyDelta(ch.delta(t, put(doc("b", 1, "b"))), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("ApplyDelta: got %v; want %v", err, ErrClosed)
	}
	if err := c.ReplaceWithSnapshot(testDataPlane, 5, configstate.EmptyHash, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("ReplaceWithSnapshot: got %v; want %v", err, ErrClosed)
	}
	if err := c.SaveKeySet(1, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SaveKeySet: got %v; want %v", err, ErrClosed)
	}
	checkHolds(t, c, ch)
}
