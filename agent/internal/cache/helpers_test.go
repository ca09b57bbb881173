package cache

import (
	"encoding/binary"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

const testDataPlane = "dp-1"

// doc is a data-plane scoped document.
func doc(name string, version int64, content string) *agentv1.Document {
	return &agentv1.Document{
		Id: "id-" + name, ScopeType: "data_plane", ScopeId: testDataPlane, Kind: "envoy/cluster", Name: name,
		Version: version, Content: []byte(content), MediaType: "application/json",
		Labels: map[string]string{"app": name},
	}
}

func put(d *agentv1.Document) *agentv1.Operation {
	return &agentv1.Operation{Kind: agentv1.Operation_KIND_PUT, Document: d}
}

// del deletes d, sending only its key fields and version as the control
// plane does.
func del(d *agentv1.Document) *agentv1.Operation {
	return &agentv1.Operation{Kind: agentv1.Operation_KIND_DELETE, Document: &agentv1.Document{
		ScopeType: d.ScopeType, ScopeId: d.ScopeId, Kind: d.Kind, Name: d.Name, Version: d.Version,
	}}
}

// hashOf is the configstate hash of docs.
func hashOf(docs []*agentv1.Document) string {
	entries := make([]configstate.Entry, len(docs))
	for i, d := range docs {
		entries[i] = configstate.Entry{Key: docKey(d), Version: d.Version, MediaType: d.MediaType, Content: d.Content}
	}
	return configstate.Hash(entries)
}

// buildDelta returns a valid delta for dataPlane from revision from to
// from+1 that applies ops to cur, and the documents after it. It computes
// the hashes with configstate, independently of the cache.
func buildDelta(tb testing.TB, dataPlane string, from int64, cur map[string]*agentv1.Document, ops ...*agentv1.Operation) (*agentv1.DeltaPayload, map[string]*agentv1.Document) {
	tb.Helper()
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]*agentv1.Document{}
	}
	for _, op := range ops {
		key := docKey(op.Document)
		switch op.Kind {
		case agentv1.Operation_KIND_PUT:
			next[key] = op.Document
		case agentv1.Operation_KIND_DELETE:
			delete(next, key)
		default:
			tb.Fatalf("buildDelta: operation kind %v", op.Kind)
		}
	}
	return &agentv1.DeltaPayload{
		DataPlaneId:   dataPlane,
		FromRevision:  from,
		ToRevision:    from + 1,
		PrevStateHash: hashOf(slices.Collect(maps.Values(cur))),
		StateHash:     hashOf(slices.Collect(maps.Values(next))),
		Operations:    ops,
	}, next
}

// chain is the control plane's side of a data plane: its revision and
// documents.
type chain struct {
	dataPlane string
	rev       int64
	docs      map[string]*agentv1.Document
}

func newChain() *chain {
	return &chain{dataPlane: testDataPlane, docs: map[string]*agentv1.Document{}}
}

// delta returns the next delta without advancing the chain.
func (ch *chain) delta(tb testing.TB, ops ...*agentv1.Operation) *agentv1.DeltaPayload {
	tb.Helper()
	p, _ := buildDelta(tb, ch.dataPlane, ch.rev, ch.docs, ops...)
	return p
}

// next returns the next delta and advances the chain past it.
func (ch *chain) next(tb testing.TB, ops ...*agentv1.Operation) *agentv1.DeltaPayload {
	tb.Helper()
	p, docs := buildDelta(tb, ch.dataPlane, ch.rev, ch.docs, ops...)
	ch.rev, ch.docs = p.ToRevision, docs
	return p
}

// sorted returns the chain's documents sorted by key, as List returns them.
func (ch *chain) sorted() []*agentv1.Document {
	keys := slices.Sorted(maps.Keys(ch.docs))
	docs := make([]*agentv1.Document, len(keys))
	for i, k := range keys {
		docs[i] = ch.docs[k]
	}
	return docs
}

func (ch *chain) hash() string { return hashOf(ch.sorted()) }

// openCache opens a cache that must not be corrupt and closes it at the
// end of the test.
func openCache(tb testing.TB, path string) *Cache {
	tb.Helper()
	c, err := Open(path)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func cachePath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "cache", "config.db")
}

func mustApply(tb testing.TB, c *Cache, p *agentv1.DeltaPayload) {
	tb.Helper()
	data, err := proto.Marshal(p)
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.ApplyDelta(p, data); err != nil {
		tb.Fatalf("ApplyDelta(%d..%d): %v", p.FromRevision, p.ToRevision, err)
	}
}

// checkHolds fails unless c is at ch's revision with exactly its documents.
func checkHolds(tb testing.TB, c *Cache, ch *chain) {
	tb.Helper()
	s := c.State()
	if s.DataPlaneID != ch.dataPlane || s.Revision != ch.rev || s.StateHash != ch.hash() {
		tb.Errorf("State() = %+v; want data plane %s, revision %d, hash %s", s, ch.dataPlane, ch.rev, ch.hash())
	}
	if diff := cmp.Diff(ch.sorted(), c.List(""), protocmp.Transform()); diff != "" {
		tb.Errorf("List(\"\") (-want +got):\n%s", diff)
	}
}

// view is what a caller can see of a cache.
type view struct {
	State State
	Docs  []*agentv1.Document
}

func viewOf(c *Cache) view { return view{State: c.State(), Docs: c.List("")} }

func checkView(tb testing.TB, what string, got, want view) {
	tb.Helper()
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		tb.Errorf("%s (-want +got):\n%s", what, diff)
	}
}

func readFile(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// tamper changes a closed cache file behind the cache's back, with bbolt
// directly, so the file stays a valid bbolt database.
func tamper(tb testing.TB, path string, fn func(tx *bolt.Tx) error) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatalf("bolt.Open: %v", err)
	}
	if err := db.Update(fn); err != nil {
		tb.Fatalf("tamper: %v", err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
}

// envelopes reads the stored envelopes of a closed cache file by revision.
func envelopes(tb testing.TB, path string) map[int64]string {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatalf("bolt.Open: %v", err)
	}
	defer db.Close()
	got := map[int64]string{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEnvelopes).ForEach(func(k, v []byte) error {
			got[int64(binary.BigEndian.Uint64(k))] = string(v)
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return got
}
