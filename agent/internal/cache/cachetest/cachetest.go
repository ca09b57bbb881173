// Package cachetest feeds a real agent cache in tests, playing the config
// stream's part: each Put or Delete applies one delta with the state
// hashes computed by internal/configstate, as the control plane does. For
// tests only.
package cachetest

import (
	"path/filepath"
	"testing"

	"github.com/cairnhq/cairn/agent/internal/cache"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// DataPlane is the data plane a Feed's deltas are for.
const DataPlane = "dp-1"

// Feed applies deltas to a cache it opened in a temporary directory.
type Feed struct {
	tb    testing.TB
	Cache *cache.Cache
	rev   int64
	docs  map[string]*agentv1.Document
}

// New opens a cache for tb, closed at its end.
func New(tb testing.TB) *Feed {
	tb.Helper()
	c, err := cache.Open(filepath.Join(tb.TempDir(), "cache.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &Feed{tb: tb, Cache: c, docs: map[string]*agentv1.Document{}}
}

func key(d *agentv1.Document) string { return configstate.Key(d.ScopeType, d.ScopeId, d.Kind, d.Name) }

// Put applies one delta putting docs, each at the next version of its key,
// and returns the new revision.
func (f *Feed) Put(docs ...*agentv1.Document) int64 {
	f.tb.Helper()
	var ops []*agentv1.Operation
	for _, d := range docs {
		d.Version = f.docs[key(d)].GetVersion() + 1
		ops = append(ops, &agentv1.Operation{Kind: agentv1.Operation_KIND_PUT, Document: d})
	}
	return f.apply(ops)
}

// Delete applies one delta deleting docs and returns the new revision.
func (f *Feed) Delete(docs ...*agentv1.Document) int64 {
	f.tb.Helper()
	var ops []*agentv1.Operation
	for _, d := range docs {
		ops = append(ops, &agentv1.Operation{Kind: agentv1.Operation_KIND_DELETE, Document: &agentv1.Document{
			ScopeType: d.ScopeType, ScopeId: d.ScopeId, Kind: d.Kind, Name: d.Name, Version: d.Version}})
	}
	return f.apply(ops)
}

func (f *Feed) apply(ops []*agentv1.Operation) int64 {
	f.tb.Helper()
	prev := f.hash()
	for _, op := range ops {
		if op.Kind == agentv1.Operation_KIND_PUT {
			f.docs[key(op.Document)] = op.Document
		} else {
			delete(f.docs, key(op.Document))
		}
	}
	p := &agentv1.DeltaPayload{DataPlaneId: DataPlane, FromRevision: f.rev, ToRevision: f.rev + 1,
		PrevStateHash: prev, StateHash: f.hash(), Operations: ops}
	if err := f.Cache.ApplyDelta(p, nil); err != nil {
		f.tb.Fatalf("apply delta: %v", err)
	}
	f.rev++
	return f.rev
}

func (f *Feed) hash() string {
	var entries []configstate.Entry
	for k, d := range f.docs {
		entries = append(entries, configstate.Entry{Key: k, Version: d.Version, MediaType: d.MediaType, Content: d.Content})
	}
	return configstate.Hash(entries)
}
