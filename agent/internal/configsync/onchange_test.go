package configsync_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/configsync"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/configstate"
)

// TestOnChange: the Syncer calls OnChange once for each change the
// agent's status shows from it — connected, an update applied, a refusal,
// turning stale (by a timer, with nothing received), fresh again, gone —
// and not for what the status does not show (a key set, a heartbeat while
// fresh).
func TestOnChange(t *testing.T) {
	const staleAfter = 50 * time.Millisecond
	var n atomic.Int64
	h := newHarness(t, func(c *configsync.Config) {
		c.StaleAfter = staleAfter
		c.OnChange = func() { n.Add(1) }
	})
	expect := func(step string, want int64) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for n.Load() < want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := n.Load(); got != want {
			t.Fatalf("%s: OnChange called %d times in all; want %d", step, got, want)
		}
	}

	s := h.start()
	expect("connected", 1)
	s.giveKeySet()
	s.heartbeat(h.sign(configsync.HeartbeatType, h.heartbeat(0, configstate.EmptyHash)))
	s.barrier()
	expect("a key set and a heartbeat", 1)
	s.apply(doc("a", 1, "a"))
	expect("an update applied", 2)
	p, _ := h.delta(doc("b", 1, "b"))
	s.expectNack(s.update(flip(h.sign(configsync.DeltaType, p))), 0, agentv1.NackReason_NACK_REASON_BAD_SIGNATURE)
	expect("a refusal", 3)

	// Stale by the clock alone: the timer notices within about
	// staleAfter of real time.
	h.clock.Advance(staleAfter + time.Millisecond)
	expect("turned stale", 4)
	if !h.syncer.Stale() {
		t.Fatal("not stale after OnChange said so")
	}
	s.heartbeat(h.sign(configsync.HeartbeatType, h.heartbeat(1, h.m.hash())))
	s.barrier()
	expect("fresh again", 5)
	if h.syncer.Stale() {
		t.Fatal("stale after a heartbeat for the applied state")
	}
	if err := s.finish(nil); err != nil {
		t.Fatalf("Session: %v", err)
	}
	expect("gone", 6)

	// The timer was armed again by the heartbeat.
	h.clock.Advance(staleAfter + time.Millisecond)
	expect("stale again", 7)
}
