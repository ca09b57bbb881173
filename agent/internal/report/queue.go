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
//
// Only Append writes the file in the normal course: an acknowledgement
// is noted in memory and the acknowledged reports are deleted by the next
// Append's transaction (or by Close), so a report costs one durable write,
// not two. Ack deletes them itself once lazyAckMax have gathered (a
// backlog being delivered). After a crash the acknowledged reports still
// in the file are sent again; the control plane stores each sequence
// number of a queue once, so it acknowledges them without storing them
// twice (but a full queue may drop and count them before they go). Reports
// dropped or discarded are deleted at once.
//
// The newest waiting reports are also kept in memory, up to memMaxBytes
// encoded, so that Peek reads the file only after a backlog larger than
// that (the control plane was away) or a restart.
type Queue struct {
	db  *bolt.DB
	max int

	mu      sync.Mutex
	id      string
	next    int64 // the newest sequence number handed out
	head    int64 // the oldest waiting report's sequence number; next+1 when none waits
	purged  int64 // the file holds no report at or below this sequence number
	dropped int64
	// mem holds the newest waiting reports, in order, as Append got them:
	// a suffix of the waiting reports, all of them when len(mem) equals
	// the number waiting.
	mem      []memReport
	memBytes int
	// wake is closed and replaced on every Append.
	wake chan struct{}
}

// memReport is a waiting report kept in memory, with what Peek's limits
// count.
type memReport struct {
	r      *agentv1.Report
	size   int // encoded bytes
	points int
}

// memMaxBytes bounds the encoded reports a Queue keeps in memory (in
// memory they take a few times that).
const memMaxBytes = 256 << 10

// lazyAckMax is how many acknowledged reports may wait in the file for
// the next Append: past it Ack deletes them, so that a crash while a
// backlog is delivered sends few again.
const lazyAckMax = 100

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
		q.head = q.next + 1
		// Reports are removed oldest first, so the file holds the
		// sequence numbers from its first key to next, each once.
		n := int64(0)
		err = items.ForEach(func(k, v []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("%w: bad key %x", errCorrupt, k)
			}
			if n == 0 {
				q.head = int64(binary.BigEndian.Uint64(k))
			}
			n++
			return nil
		})
		if err != nil {
			return err
		}
		if n > 0 && q.next-q.head+1 != n {
			return fmt.Errorf("%w: %d reports from sequence %d to %d", errCorrupt, n, q.head, q.next)
		}
		q.purged = q.head - 1
		return nil
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
	// Reports acknowledged under the old id go in the same transaction:
	// sent again after a crash, the new id would store them twice.
	err = q.db.Update(func(tx *bolt.Tx) error {
		if err := q.deleteThrough(tx, q.head-1); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyQueueID, []byte(id))
	})
	if err != nil {
		return fmt.Errorf("report queue: new id: %w", err)
	}
	q.id = id
	q.purged = q.head - 1
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

// Close deletes the acknowledged reports still in the file and closes
// it.
func (q *Queue) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var err error
	if q.purged < q.head-1 {
		err = q.db.Update(func(tx *bolt.Tx) error { return q.deleteThrough(tx, q.head-1) })
		if err != nil {
			err = fmt.Errorf("report queue: delete acknowledged: %w", err)
		} else {
			q.purged = q.head - 1
		}
	}
	return errors.Join(err, q.db.Close())
}

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
	return q.waiting()
}

func (q *Queue) waiting() int { return int(q.next - q.head + 1) }

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

// deleteThrough deletes the reports in the file at or below seq, which
// are its oldest. Called with q.mu held.
func (q *Queue) deleteThrough(tx *bolt.Tx, seq int64) error {
	if seq <= q.purged {
		return nil
	}
	items := tx.Bucket(bucketItems)
	// Keys are collected before deleting: a cursor that deletes while it
	// moves can skip keys.
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
	return nil
}

// Append gives r the next sequence number and stores it durably (fsync)
// before returning. When the queue is full it first drops the oldest. The
// queue keeps r, which Peek returns: the caller must not change it
// afterwards.
func (q *Queue) Append(r *agentv1.Report) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	drop := int64(max(q.waiting()+1-q.max, 0))
	head := q.head + drop
	seq := q.next + 1
	r.Seq = seq
	data, err := proto.Marshal(r)
	if err != nil {
		return fmt.Errorf("report queue: append: %w", err)
	}
	err = q.db.Update(func(tx *bolt.Tx) error {
		// The acknowledged reports and those dropped to make room.
		if err := q.deleteThrough(tx, head-1); err != nil {
			return err
		}
		meta, items := tx.Bucket(bucketMeta), tx.Bucket(bucketItems)
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], uint64(seq))
		if err := items.Put(key[:], data); err != nil {
			return err
		}
		if err := putUint(meta, keyNextSeq, uint64(seq)); err != nil {
			return err
		}
		return putUint(meta, keyDropped, uint64(q.dropped+drop))
	})
	if err != nil {
		return fmt.Errorf("report queue: append: %w", err)
	}
	q.next, q.head, q.purged = seq, head, head-1
	q.dropped += drop
	q.forget()
	q.mem = append(q.mem, memReport{r: r, size: len(data), points: len(r.GetMetrics().GetPoints())})
	q.memBytes += len(data)
	for len(q.mem) > 0 && q.memBytes > memMaxBytes {
		q.memBytes -= q.mem[0].size
		q.mem[0] = memReport{}
		q.mem = q.mem[1:]
	}
	close(q.wake)
	q.wake = make(chan struct{})
	return nil
}

// forget drops the reports in memory that no longer wait. Called with
// q.mu held.
func (q *Queue) forget() {
	n := 0
	for n < len(q.mem) && q.mem[n].r.Seq < q.head {
		q.memBytes -= q.mem[n].size
		q.mem[n] = memReport{}
		n++
	}
	q.mem = q.mem[n:]
	if len(q.mem) == 0 {
		q.mem = nil // let the backing array go
	}
}

// Peek returns the oldest reports, in order: at most maxReports, no more
// metric points than maxPoints and no more than maxBytes of encoded
// reports (but always at least one report). The reports are the queue's
// own: the caller must not change them.
func (q *Queue) Peek(maxReports, maxPoints, maxBytes int) ([]*agentv1.Report, error) {
	var out []*agentv1.Report
	points, size := 0, 0
	// fits adds a report of n points and b bytes to the batch if it fits.
	fits := func(n, b int) bool {
		if len(out) >= maxReports || (len(out) > 0 && (points+n > maxPoints || size+b > maxBytes)) {
			return false
		}
		points += n
		size += b
		return true
	}
	q.mu.Lock()
	if len(q.mem) == q.waiting() {
		out = make([]*agentv1.Report, 0, min(len(q.mem), maxReports))
		for _, m := range q.mem {
			if !fits(m.points, m.size) {
				break
			}
			out = append(out, m.r)
		}
		q.mu.Unlock()
		return out, nil
	}
	head := q.head
	q.mu.Unlock()
	// A report removed meanwhile may still be read: delivery is at least
	// once, and the control plane stores each sequence number once.
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], uint64(head))
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketItems).Cursor()
		for k, v := c.Seek(key[:]); k != nil; k, v = c.Next() {
			r := &agentv1.Report{}
			if err := proto.Unmarshal(v, r); err != nil {
				return fmt.Errorf("report %x: %w", k, err)
			}
			if !fits(len(r.GetMetrics().GetPoints()), len(v)) {
				break
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("report queue: peek: %w", err)
	}
	return out, nil
}

// Ack removes every report with a sequence number at or below seq. It
// writes nothing unless lazyAckMax acknowledged reports have gathered in
// the file: the next Append, or Close, deletes them.
func (q *Queue) Ack(seq int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq < q.head {
		return nil
	}
	q.head = min(seq, q.next) + 1
	q.forget()
	if q.head-1-q.purged < lazyAckMax {
		return nil
	}
	if err := q.db.Update(func(tx *bolt.Tx) error { return q.deleteThrough(tx, q.head-1) }); err != nil {
		// Acknowledged all the same; the next Append deletes them.
		return fmt.Errorf("report queue: delete acknowledged: %w", err)
	}
	q.purged = q.head - 1
	return nil
}

// Discard removes reports up to seq like Ack, but counts them as dropped:
// for a batch the control plane refused as invalid, which would otherwise
// block the queue forever. They are deleted from the file at once.
func (q *Queue) Discard(seq int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	seq = min(seq, q.next)
	removed := max(seq-q.head+1, 0)
	err := q.db.Update(func(tx *bolt.Tx) error {
		if err := q.deleteThrough(tx, seq); err != nil {
			return err
		}
		if removed > 0 {
			return putUint(tx.Bucket(bucketMeta), keyDropped, uint64(q.dropped+removed))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("report queue: discard: %w", err)
	}
	q.purged = max(q.purged, seq)
	q.head = max(q.head, seq+1)
	q.dropped += removed
	q.forget()
	return nil
}
