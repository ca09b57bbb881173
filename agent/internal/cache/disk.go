package cache

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"github.com/cairnhq/cairn/certs"
	"github.com/cairnhq/cairn/internal/configstate"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// The file holds three buckets:
//
//	meta       "state": metaRecord as JSON; "key_set": keySetRecord as JSON
//	documents  configstate key -> deterministic protobuf Document
//	envelopes  8-byte big-endian revision -> envelope bytes
var (
	bucketMeta      = []byte("meta")
	bucketDocuments = []byte("documents")
	bucketEnvelopes = []byte("envelopes")
	keyState        = []byte("state")
	keyKeySet       = []byte("key_set")
)

// schemaVersion is the layout above. A file with another version is
// treated as corrupt: an agent never guesses at a layout it does not know.
const schemaVersion = 1

// lockTimeout bounds the wait for another process (an agent still shutting
// down) to release the file. A variable so tests need not wait long.
var lockTimeout = 5 * time.Second

// metaRecord is the cache's state as stored.
type metaRecord struct {
	Schema      int    `json:"schema"`
	DataPlaneID string `json:"data_plane_id"`
	Revision    int64  `json:"revision"`
	StateHash   string `json:"state_hash"`
	Epoch       string `json:"epoch"`
	// Digest covers the stored bytes of every document (see digest): the
	// state hash leaves out ids, labels and the structured flag, and bbolt
	// has no checksums of its own for data pages.
	Digest string `json:"digest"`
}

type keySetRecord struct {
	Version  int64  `json:"version"`
	Envelope []byte `json:"envelope"`
}

// corruption is why a file cannot be trusted; Open turns it into a
// CorruptError after moving the file aside.
type corruption struct{ reason string }

func (c *corruption) Error() string { return c.reason }

func corruptf(format string, args ...any) error {
	return &corruption{reason: fmt.Sprintf(format, args...)}
}

// Open opens the cache at path, creating the file (mode 0600) and its
// directory (mode 0700) if needed. It re-verifies what it loads: the
// layout version, a complete state record, every document under its own
// key, and the state hash and digest recomputed from the documents.
//
// When the file is corrupt — bbolt cannot open it, or a check fails — Open
// renames it to path+".corrupt-<unix time>" (with "-<n>" appended if that
// exists), creates a fresh cache with a new epoch, and returns that cache
// with a *CorruptError: the one case where both results are non-nil.
// Other errors (permissions, disk, another process holding the file past
// a few seconds) return a nil cache and leave the file alone.
func Open(path string) (*Cache, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open config cache: %w", err)
	}
	c, err := open(path)
	var corr *corruption
	if !errors.As(err, &corr) {
		if err != nil {
			return nil, fmt.Errorf("open config cache: %w", err)
		}
		return c, nil
	}
	movedTo, err := moveAside(path)
	if err != nil {
		return nil, fmt.Errorf("open config cache: corrupt (%s), and moving it aside failed: %w", corr.reason, err)
	}
	c, err = open(path)
	if err != nil {
		return nil, fmt.Errorf("open config cache: recreate after corruption (%s, moved to %s): %w", corr.reason, movedTo, err)
	}
	return c, &CorruptError{Reason: corr.reason, MovedTo: movedTo}
}

// open opens and verifies the file, initializing it if it has no buckets.
// A *corruption error means the file must be replaced.
func open(path string) (*Cache, error) {
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	c := &Cache{path: path, db: db, watchers: map[chan State]struct{}{}}
	empty := false
	err = guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			k, _ := tx.Cursor().First()
			empty = k == nil
			if empty {
				return nil
			}
			return c.load(tx)
		})
	})
	if err == nil && empty {
		err = c.init(path)
	}
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return c, nil
}

// openDB opens the bbolt file, reporting the errors and panics by which
// bbolt says a file is not a database it can read as corruption.
func openDB(path string) (*bolt.DB, error) {
	var db *bolt.DB
	err := guard(func() error {
		var err error
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
		switch {
		case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
			return corruptf("bbolt: %v", err)
		case errors.Is(err, berrors.ErrTimeout):
			return fmt.Errorf("%s is locked by another process: %w", path, err)
		}
		return err
	})
	if err != nil {
		// After a panic inside bolt.Open its file and mapping stay open
		// until the collector finds them; the file is renamed away, so
		// they hold up nothing.
		return nil, err
	}
	return db, nil
}

// guard runs fn, turning a panic or a memory fault (bbolt maps the file;
// a truncated or scrambled file faults) into a corruption error.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptf("reading the file failed: %v", r)
		}
	}()
	return fn()
}

// init writes an empty cache with a new epoch into a file without buckets:
// a file just created, or one whose creation was interrupted before the
// first transaction.
func (c *Cache) init(path string) error {
	c.state = State{StateHash: configstate.EmptyHash, Epoch: newEpoch()}
	c.docs = map[string]stored{}
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketDocuments, bucketEnvelopes} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return putState(tx, c.state, c.docs)
	})
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	return certs.SyncDir(filepath.Dir(path))
}

// load reads and verifies the file into c.
func (c *Cache) load(tx *bolt.Tx) error {
	meta, docsB, envB := tx.Bucket(bucketMeta), tx.Bucket(bucketDocuments), tx.Bucket(bucketEnvelopes)
	if meta == nil || docsB == nil || envB == nil {
		return corruptf("missing bucket")
	}
	raw := meta.Get(keyState)
	if raw == nil {
		return corruptf("missing state record")
	}
	var m metaRecord
	if err := decodeStrict(raw, &m); err != nil {
		return corruptf("state record: %v", err)
	}
	switch {
	case m.Schema != schemaVersion:
		return corruptf("unknown schema version %d", m.Schema)
	case !isHex(m.Epoch, 32):
		return corruptf("epoch %q is not 32 hex characters", m.Epoch)
	case !isHex(m.StateHash, 64) || !isHex(m.Digest, 64):
		return corruptf("state hash or digest is not 64 hex characters")
	case m.Revision < 0 || (m.DataPlaneID == "" && m.Revision != 0):
		return corruptf("revision %d for data plane %q", m.Revision, m.DataPlaneID)
	}
	if raw := meta.Get(keyKeySet); raw != nil {
		var ks keySetRecord
		if err := decodeStrict(raw, &ks); err != nil {
			return corruptf("key set record: %v", err)
		}
		if ks.Version < 1 {
			return corruptf("key set version %d", ks.Version)
		}
		c.keySetVersion, c.keySet = ks.Version, ks.Envelope
	}

	docs := map[string]stored{}
	err := docsB.ForEach(func(k, v []byte) error {
		if v == nil {
			return corruptf("nested bucket %q among documents", k)
		}
		doc := &agentv1.Document{}
		if err := proto.Unmarshal(v, doc); err != nil {
			return corruptf("document %q: %v", k, err)
		}
		if key := docKey(doc); key != string(k) {
			return corruptf("document stored under %q has key %q", k, key)
		}
		docs[string(k)] = stored{doc: doc, sum: sha256.Sum256(v)}
		return nil
	})
	if err != nil {
		return err
	}
	if m.DataPlaneID == "" && len(docs) > 0 {
		return corruptf("%d documents without a data plane", len(docs))
	}
	if got := hashDocs(docs); got != m.StateHash {
		return corruptf("documents hash to %s; stored state hash is %s", got, m.StateHash)
	}
	if got := digest(docs); got != m.Digest {
		return corruptf("documents digest to %s; stored digest is %s", got, m.Digest)
	}
	err = envB.ForEach(func(k, v []byte) error {
		if len(k) != 8 || v == nil {
			return corruptf("envelope key %x", k)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.state = State{DataPlaneID: m.DataPlaneID, Revision: m.Revision, StateHash: m.StateHash, Epoch: m.Epoch}
	c.docs = docs
	return nil
}

// putState writes the state record for s and docs.
func putState(tx *bolt.Tx, s State, docs map[string]stored) error {
	data, err := json.Marshal(metaRecord{
		Schema: schemaVersion, DataPlaneID: s.DataPlaneID, Revision: s.Revision,
		StateHash: s.StateHash, Epoch: s.Epoch, Digest: digest(docs),
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyState, data)
}

// digest is the SHA-256 over every document's key and the SHA-256 of its
// stored bytes, in key order, each key length-prefixed.
func digest(docs map[string]stored) string {
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	var n [8]byte
	for _, k := range keys {
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write([]byte(k))
		sum := docs[k].sum
		h.Write(sum[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// moveAside renames the file at path to a free ".corrupt-<unix time>" name
// and makes the rename durable.
func moveAside(path string) (string, error) {
	base := path + ".corrupt-" + strconv.FormatInt(time.Now().Unix(), 10)
	to := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(to); errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return "", err
		}
		to = base + "-" + strconv.Itoa(i)
	}
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, certs.SyncDir(filepath.Dir(path))
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the record")
	}
	return nil
}

func newEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails; see crypto/rand.Read
	return hex.EncodeToString(b[:])
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// docKey is the configstate key of doc.
func docKey(doc *agentv1.Document) string {
	return configstate.Key(doc.GetScopeType(), doc.GetScopeId(), doc.GetKind(), doc.GetName())
}
