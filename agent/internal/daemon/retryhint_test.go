package daemon

import (
	"testing"
	"time"
)

// The control plane books a refused stream's slot at most five minutes
// ahead and then adds jitter of up to half that (docs/protocol.md, "Stream
// limits": "at most five minutes plus jitter"), so the refusals of a storm
// larger than five minutes of admissions all carry hints spread over
// [5m, 7m30s). The agent once capped every hint at five minutes and adds no
// jitter of its own on top (retryDelay is max(backoff ≤ 30s, hint)), so
// all of those agents reconnect exactly five minutes after their refusal:
// the spread the control plane asked for is erased for precisely the
// cohort that needs it most, and the overflow of a restart storm comes back
// as one synchronized wave every five minutes.
func TestCappedRetryHintsKeepTheirSpread(t *testing.T) {
	d, err := New(Config{Addr: "x", Dir: "y"})
	if err != nil {
		t.Fatal(err)
	}
	// Hints the control plane gives refusals whose slot was capped: the
	// five-minute cap plus its jitter, up to half the wait.
	hints := []time.Duration{5*time.Minute + 10*time.Second, 5*time.Minute + 50*time.Second,
		6*time.Minute + 30*time.Second, 7*time.Minute + 20*time.Second}
	delays := map[time.Duration]bool{}
	for _, h := range hints {
		got := d.retryDelay(0, resourceExhausted(t, h))
		t.Logf("hint %v -> reconnect after %v", h, got)
		if got < h {
			t.Errorf("hint %v: agent reconnects after %v; want no sooner than the hint a control plane within its documented bounds gave", h, got)
		}
		delays[got] = true
	}
	if len(delays) < 2 {
		t.Errorf("%d distinct reconnect delays for %d distinct hints; want the control plane's spread kept", len(delays), len(hints))
	}
}
