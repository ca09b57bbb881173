package report

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// The queue file holds two buckets:
//
//	meta   "queue_id": random hex; "next_seq", "dropped": 8-byte big-endian
//	items  8-byte big-endian seq -> protobuf Report
var (
	bucketMeta  = []byte("meta")
	bucketItems = []byte("items")
	keyQueueID  = []byte("queue_id")
	keyNextSeq  = []byte("next_seq")
	keyDropped  = []byte("dropped")
)

// Queue is the agent's on-disk report queue: reports wait in it, in
// sequence order, until the control plane acknowledges them, across
// restarts. It is bounded; when full it drops its oldest reports and
// counts them. Safe for concurrent use.
type Queue struct {
	db  *bolt.DB
	max int

	mu      sync.Mutex
	id      string
	next    int64 // the newest sequence number handed out
	len     int
	dropped int64
	// wake is closed and replaced on every Append.
	wake chan struct{}
}

// OpenQueue opens or creates the queue file at path holding at most max
// reports. A file that is not a readable queue (corrupt) is moved aside
// and a new queue, with a new id, started: the control plane then forgets
// the old sequence, and nothing it already stored is stored twice because
// the old reports are gone with the file. Any other error (the file is
// locked by another process, a permission problem) is returned and the
// file left alone.
func OpenQueue(path string, max int) (*Queue, error) {
	if max <= 0 {
		return nil, errors.New("report queue: max must be positive")
	}
	q, err := openQueue(path, max)
	if err == nil {
		return q, nil
	}
	if !errors.Is(err, errCorrupt) {
		return nil, err
	}
	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405")
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("report queue: %w (and moving it aside: %v)", err, rerr)
	}
	return openQueue(path, max)
}

// errCorrupt marks a queue file that is not a readable queue.
var errCorrupt = errors.New("not a readable report queue")

func openQueue(path string, max int) (q *Queue, err error) {
	// bbolt maps the file; a scrambled one can fault or panic.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("report queue: %w: %v", errCorrupt, r)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	switch {
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("report queue: %w: %v", errCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("report queue: open: %w", err)
	}
	q = &Queue{db: db, max: max, wake: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		items, err := tx.CreateBucketIfNotExists(bucketItems)
		if err != nil {
			return err
		}
		if id := meta.Get(keyQueueID); len(id) > 0 {
			q.id = string(id)
		} else {
			id, err := newQueueID()
			if err != nil {
				return err
			}
			q.id = id
			if err := meta.Put(keyQueueID, []byte(q.id)); err != nil {
				return err
			}
		}
		q.dropped = int64(getUint(meta, keyDropped))
		q.next = int64(getUint(meta, keyNextSeq))
		return items.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("%w: bad key %x", errCorrupt, k)
			}
			q.len++
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("report queue: %w", err)
	}
	return q, nil
}

func newQueueID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// LastSeq is the newest sequence number the queue handed out.
func (q *Queue) LastSeq() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.next
}

// NewID gives the queue a new random id, keeping its reports and their
// sequence numbers: for when the control plane holds a newer sequence
// number for the old id than this queue ever handed out (the data
// directory was restored from a backup), so it would skip new reports.
// Under the new id it stores them all.
func (q *Queue) NewID() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	id, err := newQueueID()
	if err != nil {
		return fmt.Errorf("report queue: %w", err)
	}
	if err := q.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyQueueID, []byte(id)) }); err != nil {
		return fmt.Errorf("report queue: new id: %w", err)
	}
	q.id = id
	return nil
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put(k, buf[:])
}

// Close closes the file.
func (q *Queue) Close() error { return q.db.Close() }

// ID is the queue's random id, sent with every batch.
func (q *Queue) ID() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.id
}

// Len is the number of reports waiting.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.len
}

// Dropped is how many reports the queue dropped, since it was created,
// because it was full.
func (q *Queue) Dropped() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// Wait returns a channel closed by the next Append.
func (q *Queue) Wait() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wake
}

// Append gives r the next sequence number and stores it durably (fsync)
// before returning. When the queue is full it first drops the oldest.
func (q *Queue) Append(r *agentv1.Report) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var dropped int
	err := q.db.Update(func(tx *bolt.Tx) error {
		meta, items := tx.Bucket(bucketMeta), tx.Bucket(bucketItems)
		// Keys are collected before deleting: a cursor that deletes
		// while it moves can skip keys.
		var old [][]byte
		c := items.Cursor()
		for k, _ := c.First(); k != nil && q.len-len(old) >= q.max; k, _ = c.Next() {
			old = append(old, slices.Clone(k))
		}
		for _, k := range old {
			if err := items.Delete(k); err != nil {
				return err
			}
		}
		dropped = len(old)
		seq := getUint(meta, keyNextSeq) + 1
		r.Seq = int64(seq)
		data, err := proto.Marshal(r)
		if err != nil {
			return err
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], seq)
		if err := items.Put(key[:], data); err != nil {
			return err
		}
		if err := putUint(meta, keyNextSeq, seq); err != nil {
			return err
		}
		return putUint(meta, keyDropped, uint64(q.dropped)+uint64(dropped))
	})
	if err != nil {
		return fmt.Errorf("report queue: append: %w", err)
	}
	q.len += 1 - dropped
	q.dropped += int64(dropped)
	q.next = r.Seq
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// Peek returns the oldest reports, in order: at most maxReports, no more
// metric points than maxPoints and no more than maxBytes of encoded
// reports (but always at least one report).
func (q *Queue) Peek(maxReports, maxPoints, maxBytes int) ([]*agentv1.Report, error) {
	var out []*agentv1.Report
	points, size := 0, 0
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketItems).Cursor()
		for k, v := c.First(); k != nil && len(out) < maxReports; k, v = c.Next() {
			r := &agentv1.Report{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("report %x: %w", k, err)
			}
			n := len(r.GetMetrics().GetPoints())
			if len(out) > 0 && (points+n > maxPoints || size+len(v) > maxBytes) {
				break
			}
			points += n
			size += len(v)
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("report queue: peek: %w", err)
	}
	return out, nil
}

// Ack removes every report with a sequence number at or below seq.
func (q *Queue) Ack(seq int64) error {
	return q.remove(seq, false)
}

// Discard removes reports up to seq like Ack, but counts them as dropped:
// for a batch the control plane refused as invalid, which would otherwise
// block the queue forever.
func (q *Queue) Discard(seq int64) error {
	return q.remove(seq, true)
}

func (q *Queue) remove(seq int64, count bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	removed := 0
	err := q.db.Update(func(tx *bolt.Tx) error {
		items := tx.Bucket(bucketItems)
		var done [][]byte
		c := items.Cursor()
		for k, _ := c.First(); k != nil && int64(binary.BigEndian.Uint64(k)) <= seq; k, _ = c.Next() {
			done = append(done, slices.Clone(k))
		}
		for _, k := range done {
			if err := items.Delete(k); err != nil {
				return err
			}
		}
		removed = len(done)
		if count && removed > 0 {
			return putUint(tx.Bucket(bucketMeta), keyDropped, uint64(q.dropped)+uint64(removed))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("report queue: remove: %w", err)
	}
	q.len -= removed
	if count {
		q.dropped += int64(removed)
	}
	return nil
}
