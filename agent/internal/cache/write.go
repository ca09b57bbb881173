package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// change is one validated operation, its document already encoded.
type change struct {
	key  string
	del  bool
	doc  *agentv1.Document // a private copy; nil for a delete
	data []byte
}

// ApplyDelta applies p, a DeltaPayload whose envelope the caller has
// verified, in one bbolt transaction that is fsynced on commit, and stores
// envelope (the exact signed bytes, for audit and reverification) under
// p.ToRevision, keeping the newest MaxEnvelopes.
//
// Checks, in order, each refusing with the error named (wrapped):
//   - shape: non-empty data plane, 0 <= FromRevision < ToRevision, every
//     operation a put or delete with a document whose scope type, scope id,
//     kind and name are set (ErrMalformed);
//   - p.DataPlaneId is the cache's data plane, unless the cache is fresh
//     (ErrWrongDataPlane);
//   - p.ToRevision > State().Revision (ErrStale: replay or rollback);
//   - p.FromRevision == State().Revision (ErrGap; so a fresh cache takes
//     only deltas from revision 0);
//   - p.PrevStateHash == State().StateHash (ErrChainBroken);
//   - after the operations, applied in order (put replaces by key, delete
//     removes by key, key = configstate.Key of the document), the state
//     hashes to p.StateHash (ErrStateMismatch).
//
// On any error nothing is written and nothing changes; errors other than
// the ones above and ErrClosed are disk errors. On success watchers get the
// new state.
func (c *Cache) ApplyDelta(p *agentv1.DeltaPayload, envelope []byte) error {
	changes, err := checkDelta(p)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.db == nil {
		return ErrClosed
	}
	// Only writers change state and docs, and wmu is held: no need for mu.
	cur := c.state
	span := fmt.Sprintf("delta %d..%d", p.GetFromRevision(), p.GetToRevision())
	switch {
	case !cur.fresh() && p.GetDataPlaneId() != cur.DataPlaneID:
		return fmt.Errorf("%s: %w: for %q; the cache holds %q", span, ErrWrongDataPlane, p.GetDataPlaneId(), cur.DataPlaneID)
	case p.GetToRevision() <= cur.Revision:
		return fmt.Errorf("%s: %w: the cache holds revision %d", span, ErrStale, cur.Revision)
	case p.GetFromRevision() != cur.Revision:
		return fmt.Errorf("%s: %w: the cache holds revision %d", span, ErrGap, cur.Revision)
	case p.GetPrevStateHash() != cur.StateHash:
		return fmt.Errorf("%s: %w: previous state hash %q; the cache's is %s", span, ErrChainBroken, p.GetPrevStateHash(), cur.StateHash)
	}

	docs := cloneDocs(c.docs)
	for _, ch := range changes {
		if ch.del {
			delete(docs, ch.key)
		} else {
			docs[ch.key] = stored{doc: ch.doc, sum: sha256.Sum256(ch.data)}
		}
	}
	if got := hashDocs(docs); got != p.GetStateHash() {
		return fmt.Errorf("%s: %w: documents hash to %s; the delta says %q", span, ErrStateMismatch, got, p.GetStateHash())
	}
	next := State{DataPlaneID: p.GetDataPlaneId(), Revision: p.GetToRevision(), StateHash: p.GetStateHash(), Epoch: cur.Epoch}

	err = c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDocuments)
		for _, ch := range changes {
			var err error
			if ch.del {
				err = b.Delete([]byte(ch.key))
			} else {
				err = b.Put([]byte(ch.key), ch.data)
			}
			if err != nil {
				return err
			}
		}
		if err := putEnvelope(tx.Bucket(bucketEnvelopes), p.GetToRevision(), envelope); err != nil {
			return err
		}
		return putState(tx, next, docs)
	})
	if err != nil {
		return fmt.Errorf("%s: write: %w", span, err)
	}
	c.install(next, docs)
	return nil
}

// checkDelta checks the shape of p and encodes its documents.
func checkDelta(p *agentv1.DeltaPayload) ([]change, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: no delta", ErrMalformed)
	}
	span := fmt.Sprintf("delta %d..%d", p.GetFromRevision(), p.GetToRevision())
	switch {
	case p.GetDataPlaneId() == "":
		return nil, fmt.Errorf("%s: %w: no data plane", span, ErrMalformed)
	case p.GetFromRevision() < 0 || p.GetToRevision() <= p.GetFromRevision():
		return nil, fmt.Errorf("%s: %w: revisions out of order", span, ErrMalformed)
	}
	changes := make([]change, len(p.GetOperations()))
	for i, op := range p.GetOperations() {
		var del bool
		switch op.GetKind() {
		case agentv1.Operation_KIND_PUT:
		case agentv1.Operation_KIND_DELETE:
			del = true
		default:
			return nil, fmt.Errorf("%s: %w: operation %d has kind %v", span, ErrMalformed, i, op.GetKind())
		}
		ch, err := checkDocument(op.GetDocument(), !del)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: operation %d: %v", span, ErrMalformed, i, err)
		}
		ch.del = del
		changes[i] = ch
	}
	return changes, nil
}

// checkDocument checks that doc has its key fields and, if encode is set,
// encodes a private copy of it.
func checkDocument(doc *agentv1.Document, encode bool) (change, error) {
	switch {
	case doc == nil:
		return change{}, fmt.Errorf("no document")
	case doc.GetScopeType() == "" || doc.GetScopeId() == "" || doc.GetKind() == "" || doc.GetName() == "":
		return change{}, fmt.Errorf("document without scope type, scope id, kind or name")
	}
	ch := change{key: docKey(doc)}
	if len(ch.key) > bolt.MaxKeySize {
		return change{}, fmt.Errorf("document key of %d bytes, more than %d", len(ch.key), bolt.MaxKeySize)
	}
	if !encode {
		return ch, nil
	}
	ch.doc = proto.CloneOf(doc)
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(ch.doc)
	if err != nil {
		return change{}, fmt.Errorf("document %q: %v", ch.key, err)
	}
	if int64(len(data)) > bolt.MaxValueSize {
		return change{}, fmt.Errorf("document %q of %d bytes, more than %d", ch.key, len(data), bolt.MaxValueSize)
	}
	ch.data = data
	return ch, nil
}

// putEnvelope stores envelope under revision and drops all but the newest
// MaxEnvelopes.
func putEnvelope(b *bolt.Bucket, revision int64, envelope []byte) error {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(revision))
	if envelope == nil {
		envelope = []byte{}
	}
	if err := b.Put(k[:], envelope); err != nil {
		return err
	}
	// Count with a cursor: Bucket.Stats sees only committed pages.
	n := 0
	cur := b.Cursor()
	for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
		n++
	}
	for k, _ := cur.First(); k != nil && n > MaxEnvelopes; k, _ = cur.First() {
		if err := cur.Delete(); err != nil {
			return err
		}
		n--
	}
	return nil
}

// ReplaceWithSnapshot replaces every document with docs, at revision and
// stateHash for dataPlaneID, in one transaction fsynced on commit. It is
// for a snapshot whose end the caller has verified, so it does not compare
// revisions or data planes with what the cache holds: the caller checks
// that dataPlaneID is the agent's own. The epoch and the key set stay; the
// stored envelopes, which belong to the replaced chain, are dropped.
//
// It refuses with ErrMalformed an empty dataPlaneID, a negative revision,
// or a document that is nil, lacks a key field or repeats a key, and with
// ErrStateMismatch docs that do not hash to stateHash. On any error
// nothing changes. On success watchers get the new state.
func (c *Cache) ReplaceWithSnapshot(dataPlaneID string, revision int64, stateHash string, docs []*agentv1.Document) error {
	span := fmt.Sprintf("snapshot at revision %d", revision)
	if dataPlaneID == "" || revision < 0 {
		return fmt.Errorf("%s: %w: data plane %q", span, ErrMalformed, dataPlaneID)
	}
	next := make(map[string]stored, len(docs))
	changes := make([]change, len(docs))
	for i, doc := range docs {
		ch, err := checkDocument(doc, true)
		if err != nil {
			return fmt.Errorf("%s: %w: document %d: %v", span, ErrMalformed, i, err)
		}
		if _, dup := next[ch.key]; dup {
			return fmt.Errorf("%s: %w: document %q twice", span, ErrMalformed, ch.key)
		}
		next[ch.key] = stored{doc: ch.doc, sum: sha256.Sum256(ch.data)}
		changes[i] = ch
	}
	if got := hashDocs(next); got != stateHash {
		return fmt.Errorf("%s: %w: documents hash to %s; the snapshot says %q", span, ErrStateMismatch, got, stateHash)
	}

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.db == nil {
		return ErrClosed
	}
	s := State{DataPlaneID: dataPlaneID, Revision: revision, StateHash: stateHash, Epoch: c.state.Epoch}
	err := c.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketDocuments, bucketEnvelopes} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketDocuments)
		for _, ch := range changes {
			if err := b.Put([]byte(ch.key), ch.data); err != nil {
				return err
			}
		}
		return putState(tx, s, next)
	})
	if err != nil {
		return fmt.Errorf("%s: write: %w", span, err)
	}
	c.install(s, next)
	return nil
}

// SaveKeySet durably keeps envelope, the signing key-set envelope the
// caller has verified and accepted, and its version, replacing the one
// saved before. It refuses a version below 1 (ErrMalformed) or below the
// saved one (ErrStale); saving the saved version again replaces it.
func (c *Cache) SaveKeySet(version int64, envelope []byte) error {
	if version < 1 {
		return fmt.Errorf("save key set: %w: version %d", ErrMalformed, version)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.db == nil {
		return ErrClosed
	}
	if version < c.keySetVersion {
		return fmt.Errorf("save key set: %w: version %d; the cache holds %d", ErrStale, version, c.keySetVersion)
	}
	envelope = append([]byte{}, envelope...)
	data, err := json.Marshal(keySetRecord{Version: version, Envelope: envelope})
	if err != nil {
		return fmt.Errorf("save key set: %w", err)
	}
	err = c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyKeySet, data)
	})
	if err != nil {
		return fmt.Errorf("save key set: %w", err)
	}
	c.mu.Lock()
	c.keySetVersion, c.keySet = version, envelope
	c.mu.Unlock()
	return nil
}
