package report

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
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
	len     int
	dropped int64
	// wake is closed and replaced on every Append.
	wake chan struct{}
}

// OpenQueue opens or creates the queue file at path holding at most max
// reports. A file that cannot be read as a queue is moved aside and a new
// queue, with a new id, started: the control plane then forgets the old
// sequence, and nothing it already stored is stored twice because the old
// reports are gone with the file.
func OpenQueue(path string, max int) (*Queue, error) {
	if max <= 0 {
		return nil, errors.New("report queue: max must be positive")
	}
	q, err := openQueue(path, max)
	if err == nil {
		return q, nil
	}
	aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405")
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("report queue: %w (and moving it aside: %v)", err, rerr)
	}
	return openQueue(path, max)
}

func openQueue(path string, max int) (*Queue, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("report queue: open: %w", err)
	}
	q := &Queue{db: db, max: max, wake: make(chan struct{})}
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
			var b [16]byte
			if _, err := rand.Read(b[:]); err != nil {
				return err
			}
			q.id = hex.EncodeToString(b[:])
			if err := meta.Put(keyQueueID, []byte(q.id)); err != nil {
				return err
			}
		}
		q.dropped = int64(getUint(meta, keyDropped))
		return items.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("bad key %x", k)
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
func (q *Queue) ID() string { return q.id }

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
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// Peek returns the oldest reports, in order: at most maxReports, and no
// more metric points than maxPoints (but always at least one report).
func (q *Queue) Peek(maxReports, maxPoints int) ([]*agentv1.Report, error) {
	var out []*agentv1.Report
	points := 0
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketItems).Cursor()
		for k, v := c.First(); k != nil && len(out) < maxReports; k, v = c.Next() {
			r := &agentv1.Report{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("report %x: %w", k, err)
			}
			n := len(r.GetMetrics().GetPoints())
			if len(out) > 0 && points+n > maxPoints {
				break
			}
			points += n
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
