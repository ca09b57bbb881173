package report

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// runSignalled runs a Reporter whose status is the revision in applied,
// with a Changed signal and nothing else to wake it for an hour (no poll,
// no re-send, no metrics) unless the test sets statusEvery or
// progressDelay. It returns the signal and the revisions of the statuses
// queued so far.
func runSignalled(t *testing.T, applied *atomic.Int64, statusEvery, progressDelay time.Duration) (Signal, func() []int64) {
	t.Helper()
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	sig := NewSignal()
	r := newReporter(t, Config{
		Queue:         q,
		Status:        func() *agentv1.AgentStatus { return &agentv1.AgentStatus{AppliedRevision: applied.Load()} },
		Changed:       sig,
		PollEvery:     time.Hour,
		MetricsEvery:  time.Hour,
		StatusEvery:   statusEvery,
		ProgressDelay: progressDelay,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			t.Error(err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return sig, func() []int64 {
		var out []int64
		for _, st := range queuedStatuses(t, r) {
			out = append(out, st.AppliedRevision)
		}
		return out
	}
}

// TestRunChecksWhenSignalled: with Changed set, a change is reported when
// a source signals it, not by polling (PollEvery is an hour here).
func TestRunChecksWhenSignalled(t *testing.T) {
	var applied atomic.Int64
	sig, statuses := runSignalled(t, &applied, time.Hour, -1)
	waitFor(t, "first status", func() bool { return len(statuses()) == 1 })
	applied.Store(7)
	sig.Notify()
	waitFor(t, "the signalled change", func() bool { return len(statuses()) == 2 })
	if got := statuses(); got[0] != 0 || got[1] != 7 {
		t.Fatalf("statuses %v; want [0 7]", got)
	}
}

// TestRunWakesForPendingProgress: progress waits for its delay; Run
// wakes at the deadline by itself, with no further signal or poll.
func TestRunWakesForPendingProgress(t *testing.T) {
	var applied atomic.Int64
	sig, statuses := runSignalled(t, &applied, time.Hour, 20*time.Millisecond)
	waitFor(t, "first status", func() bool { return len(statuses()) == 1 })
	applied.Store(3)
	sig.Notify()
	waitFor(t, "the progress, after its delay", func() bool { return len(statuses()) == 2 })
	if got := statuses(); got[1] != 3 {
		t.Fatalf("statuses %v; want the second at revision 3", got)
	}
}

// TestRunWakesForResend: an unchanged status is re-sent every StatusEvery
// without a signal or poll.
func TestRunWakesForResend(t *testing.T) {
	var applied atomic.Int64
	_, statuses := runSignalled(t, &applied, 20*time.Millisecond, -1)
	waitFor(t, "two re-sends", func() bool { return len(statuses()) >= 3 })
}

func TestSignalCoalesces(t *testing.T) {
	sig := NewSignal()
	sig.Notify()
	sig.Notify() // does not block: one is pending already
	<-sig
	select {
	case <-sig:
		t.Fatal("two notifications pending; want one")
	default:
	}
	var none Signal
	none.Notify() // a nil Signal does nothing
}

// TestLastErrorSignals: LastError notifies Changed when the error is set
// or cleared, not when a Clear changes nothing.
func TestLastErrorSignals(t *testing.T) {
	l := LastError{Changed: NewSignal()}
	pending := func() bool {
		select {
		case <-l.Changed:
			return true
		default:
			return false
		}
	}
	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"set", func() { l.Set("config stream", errors.New("unavailable")) }, true},
		{"clear by another loop", func() { l.Clear("report delivery") }, false},
		{"clear by its loop", func() { l.Clear("config stream") }, true},
		{"clear again", func() { l.Clear("config stream") }, false},
	}
	for _, s := range steps {
		s.do()
		if got := pending(); got != s.want {
			t.Fatalf("%s: notified %v; want %v", s.name, got, s.want)
		}
	}
}

// TestRunDoesNotSpinWhenTheQueueFails: a status due (here the re-send)
// that cannot be queued is tried again a second later, not at once: with
// a full disk the loop must not take a core.
func TestRunDoesNotSpinWhenTheQueueFails(t *testing.T) {
	q := openTestQueue(t, filepath.Join(t.TempDir(), "reports.db"), 1000)
	var polls atomic.Int64
	r := newReporter(t, Config{
		Queue:        q,
		Status:       func() *agentv1.AgentStatus { polls.Add(1); return &agentv1.AgentStatus{AppliedRevision: 1} },
		Changed:      NewSignal(),
		PollEvery:    time.Hour,
		MetricsEvery: time.Hour,
		StatusEvery:  10 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, "the first status", func() bool { return q.Len() == 1 })
	if err := q.Close(); err != nil { // every Append fails from now on
		t.Fatal(err)
	}
	before := polls.Load()
	time.Sleep(300 * time.Millisecond)
	n := polls.Load() - before
	cancel()
	<-done // Run's last flush fails too; what it returns is not the point
	if n > 5 {
		t.Fatalf("%d status checks in 300ms with a failing queue; want at most one a second", n)
	}
}
