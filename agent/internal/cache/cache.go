// Package cache is the agent's persistent config cache: the documents of
// its data plane at one revision, the state hash that proves them, the
// recent signed updates, and the last accepted signing key set, kept in one
// bbolt file so that a restarted agent serves its config without the
// control plane and resumes the stream where it stopped.
//
// The cache does not verify signatures, expiry or key ids: the caller
// verifies each envelope and hands over the payload it proved. What the
// cache does check is the chain — data plane, revisions and state hashes
// before and after — and it changes nothing unless every check passes. It
// re-verifies its file on Open and replaces a corrupt one with an empty
// cache rather than serve config it cannot prove. It never talks to the
// network and must not link control-plane code.
package cache

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// MaxEnvelopes is how many update envelopes ApplyDelta keeps, newest
// revisions first.
const MaxEnvelopes = 64

// Errors of ApplyDelta, ReplaceWithSnapshot and SaveKeySet, wrapped with
// detail; test with errors.Is. Each means the call changed nothing.
var (
	// ErrWrongDataPlane: the delta is for another data plane than the one
	// the cache holds.
	ErrWrongDataPlane = errors.New("wrong data plane")
	// ErrStale: the delta ends at or below the cache's revision (a replay
	// or rollback), or a key set is older than the saved one.
	ErrStale = errors.New("stale")
	// ErrGap: the delta ends beyond the cache's revision but does not start
	// at it; the caller needs the deltas in between or a snapshot.
	ErrGap = errors.New("revision gap")
	// ErrChainBroken: the delta's previous state hash is not the cache's
	// state hash.
	ErrChainBroken = errors.New("state hash chain broken")
	// ErrStateMismatch: the documents after the change do not hash to the
	// state hash the update claims.
	ErrStateMismatch = errors.New("state hash mismatch")
	// ErrMalformed: the update breaks the protocol's shape (unknown
	// operation, missing document or key field, revisions out of order,
	// a document that cannot be stored).
	ErrMalformed = errors.New("malformed update")
	// ErrClosed: the cache was closed.
	ErrClosed = errors.New("cache closed")
)

// State is what the cache holds, as the agent reports it in Hello.
type State struct {
	// DataPlaneID is the data plane whose config the cache holds; "" for a
	// fresh cache.
	DataPlaneID string
	// Revision is the revision the cache holds; 0 for a fresh cache.
	Revision int64
	// StateHash is the configstate hash of the documents;
	// configstate.EmptyHash for a fresh cache.
	StateHash string
	// Epoch is random, 32 hex characters, chosen when the cache file is
	// created (or recreated after corruption). It survives restarts and
	// snapshots, so a new epoch tells the control plane the cache was lost.
	Epoch string
}

// fresh reports whether the cache has never held a data plane's config.
func (s State) fresh() bool { return s.DataPlaneID == "" }

// CorruptError is returned by Open, together with a usable fresh cache,
// when the file it found could not be trusted. The caller should log it;
// the fresh cache has a new epoch, so the control plane sends a snapshot.
type CorruptError struct {
	// Reason says what was wrong.
	Reason string
	// MovedTo is where the corrupt file now is, kept for inspection.
	MovedTo string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("config cache corrupt (%s); moved to %s and started empty", e.Reason, e.MovedTo)
}

// stored is one document as the cache holds it in memory: the document,
// never modified once stored, and the SHA-256 of its bytes in the file.
type stored struct {
	doc *agentv1.Document
	sum [sha256.Size]byte
}

// Cache is an open cache file. All methods are safe for concurrent use.
// Reads (State, Get, List, KeySet) are served from memory, which changes
// only after the file has durably committed the same change; writes are
// serialized.
type Cache struct {
	path string

	// wmu serializes writers and Close, so a writer can read the state it
	// builds on without holding mu across disk I/O.
	wmu sync.Mutex
	// db is nil after Close; it is read and written only with wmu held.
	db *bolt.DB

	mu            sync.RWMutex
	state         State
	docs          map[string]stored
	keySetVersion int64
	keySet        []byte

	watchMu sync.Mutex
	// watchers is nil after Close.
	watchers map[chan State]struct{}
}

// Close closes the file and every channel returned by Watch. State, Get,
// List and KeySet keep answering from memory; writes return ErrClosed.
// Closing twice is harmless.
func (c *Cache) Close() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.watchMu.Lock()
	for ch := range c.watchers {
		close(ch)
	}
	c.watchers = nil
	c.watchMu.Unlock()
	if c.db == nil {
		return nil
	}
	err := c.db.Close()
	c.db = nil
	if err != nil {
		return fmt.Errorf("close config cache: %w", err)
	}
	return nil
}

// State returns what the cache holds.
func (c *Cache) State() State {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state
}

// Get returns a copy of the document with key (see configstate.Key).
func (c *Cache) Get(key string) (*agentv1.Document, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.docs[key]
	if !ok {
		return nil, false
	}
	return proto.CloneOf(s.doc), true
}

// List returns copies of the documents whose key starts with prefix ("" for
// all), sorted by key. The documents of one call are from one state.
func (c *Cache) List(prefix string) []*agentv1.Document {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var keys []string
	for k := range c.docs {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	docs := make([]*agentv1.Document, len(keys))
	for i, k := range keys {
		docs[i] = proto.CloneOf(c.docs[k].doc)
	}
	return docs
}

// KeySet returns the signing key-set envelope last saved with SaveKeySet
// and its version; 0 and nil if none was.
func (c *Cache) KeySet() (version int64, envelope []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.keySetVersion, slices.Clone(c.keySet)
}

// Size returns the size of the cache file in bytes, 0 if it cannot be
// read.
func (c *Cache) Size() int64 {
	fi, err := os.Stat(c.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Watch returns a channel that receives the new State after every
// successful ApplyDelta or ReplaceWithSnapshot, and a func that stops the
// notifications and closes the channel. The channel holds one state: a
// reader that falls behind finds only the newest state, and the writer
// never waits for it. Watch sends nothing for the state the cache already
// has; call Watch before State to miss no change. After Close the channel
// is closed.
func (c *Cache) Watch() (<-chan State, func()) {
	ch := make(chan State, 1)
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watchers == nil {
		close(ch)
		return ch, func() {}
	}
	c.watchers[ch] = struct{}{}
	return ch, func() {
		c.watchMu.Lock()
		defer c.watchMu.Unlock()
		if _, ok := c.watchers[ch]; ok {
			delete(c.watchers, ch)
			close(ch)
		}
	}
}

// notify hands s to every watcher, replacing a state it has not read yet.
// Writers call it with wmu held, so watchers see states in commit order.
func (c *Cache) notify(s State) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	for ch := range c.watchers {
		select {
		case ch <- s:
			continue
		default:
		}
		// Full: drop the unread state. Only notify sends, so after the
		// drain the buffer has room.
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- s:
		default:
		}
	}
}

// install makes a committed change visible to readers and watchers. The
// caller holds wmu.
func (c *Cache) install(s State, docs map[string]stored) {
	c.mu.Lock()
	c.state = s
	c.docs = docs
	c.mu.Unlock()
	c.notify(s)
}

// hashDocs is the configstate hash of docs.
func hashDocs(docs map[string]stored) string {
	entries := make([]configstate.Entry, 0, len(docs))
	for k, s := range docs {
		entries = append(entries, configstate.Entry{Key: k, Version: s.doc.GetVersion(), MediaType: s.doc.GetMediaType(), Content: s.doc.GetContent()})
	}
	return configstate.Hash(entries)
}

// cloneDocs copies the map, not the documents, which are never modified.
func cloneDocs(docs map[string]stored) map[string]stored {
	if docs == nil {
		return map[string]stored{}
	}
	return maps.Clone(docs)
}
