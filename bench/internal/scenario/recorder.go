package scenario

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// recorder keeps, for each change and watcher, when the watcher received
// the change, on one monotonic clock shared by the writer and all
// watchers.
type recorder struct {
	base  time.Time
	n     int
	recv  [][]atomic.Int64 // [change][watcher]: ns since base; 0 = not yet
	count []atomic.Int64   // [change]: watchers that have it
	done  []chan struct{}  // [change]: closed when count reaches n
}

func newRecorder(n, changes int) *recorder {
	r := &recorder{
		base:  time.Now(),
		n:     n,
		recv:  make([][]atomic.Int64, changes),
		count: make([]atomic.Int64, changes),
		done:  make([]chan struct{}, changes),
	}
	for k := range changes {
		r.recv[k] = make([]atomic.Int64, n)
		r.done[k] = make(chan struct{})
	}
	return r
}

// now returns nanoseconds since base, never 0.
func (r *recorder) now() int64 { return int64(time.Since(r.base)) + 1 }

// deliver records that watcher id received value. Values that are not a
// change of this run, and repeats, are ignored. Safe for concurrent use.
func (r *recorder) deliver(id int, value []byte) {
	t := r.now()
	k, ok := parseChange(value)
	if !ok || k >= len(r.recv) || id < 0 || id >= r.n {
		return
	}
	if r.recv[k][id].CompareAndSwap(0, t) && r.count[k].Add(1) == int64(r.n) {
		close(r.done[k])
	}
}

// wait returns when every watcher has change k or timeout has passed; the
// latter is not an error. It fails only when ctx ends.
func (r *recorder) wait(ctx context.Context, k int, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.done[k]:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// latencies returns, for each watcher that has change k, its receive time
// minus from (a recorder time).
func (r *recorder) latencies(k int, from int64) []time.Duration {
	out := make([]time.Duration, 0, r.n)
	for i := range r.recv[k] {
		if t := r.recv[k][i].Load(); t != 0 {
			out = append(out, time.Duration(t-from))
		}
	}
	return out
}

const changePrefix = "chg-"

// changeValue is the value written for change k: its number, then padding
// up to size bytes so the payload resembles a small config delta.
func changeValue(k, size int) string {
	v := changePrefix + strconv.Itoa(k) + "|"
	if pad := size - len(v); pad > 0 {
		v += string(bytes.Repeat([]byte{'x'}, pad))
	}
	return v
}

func parseChange(v []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(v, []byte(changePrefix))
	if !ok {
		return 0, false
	}
	num, _, ok := bytes.Cut(rest, []byte("|"))
	if !ok {
		return 0, false
	}
	k, err := strconv.Atoi(string(num))
	return k, err == nil && k >= 0
}

type percentiles struct{ p50, p99, max float64 }

// summarize returns nearest-rank percentiles in milliseconds; zero for no
// samples.
func summarize(d []time.Duration) percentiles {
	if len(d) == 0 {
		return percentiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return ms(s[max(i, 0)])
	}
	return percentiles{p50: rank(0.50), p99: rank(0.99), max: ms(s[len(s)-1])}
}
