package agentapi

import (
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestAdmission(rate float64, burst int, randN func(int64) int64) (*admission, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	a := newAdmission(rate, burst, clk.now)
	a.randN = randN
	return a, clk
}

func noJitter(int64) int64 { return 0 }

func TestAdmissionBucket(t *testing.T) {
	a, clk := newTestAdmission(2, 3, noJitter) // 2 per second, burst 3
	for i := range 3 {
		if ok, _ := a.admit(); !ok {
			t.Fatalf("stream %d of the burst refused; want admitted", i)
		}
	}
	ok, retry := a.admit()
	if ok {
		t.Fatal("stream beyond the burst admitted; want refused")
	}
	if retry != 500*time.Millisecond {
		t.Fatalf("retry hint %v; want 500ms (the next token at 2/s)", retry)
	}
	clk.advance(499 * time.Millisecond)
	if ok, _ := a.admit(); ok {
		t.Fatal("admitted before the next token; want refused")
	}
	clk.advance(time.Millisecond)
	if ok, _ := a.admit(); !ok {
		t.Fatal("refused once a token was due; want admitted")
	}
	// A long quiet period refills the bucket only up to the burst.
	clk.advance(time.Hour)
	for i := range 3 {
		if ok, _ := a.admit(); !ok {
			t.Fatalf("stream %d after a quiet hour refused; want admitted", i)
		}
	}
	if ok, _ := a.admit(); ok {
		t.Fatal("the bucket held more than the burst")
	}
}

// A storm of refused streams is told to come back one admission slot
// apart, not all at once.
func TestAdmissionSpreadsRetries(t *testing.T) {
	a, _ := newTestAdmission(10, 1, noJitter)
	if ok, _ := a.admit(); !ok {
		t.Fatal("first stream refused")
	}
	for i := 1; i <= 5; i++ {
		ok, retry := a.admit()
		if want := time.Duration(i) * 100 * time.Millisecond; ok || retry != want {
			t.Fatalf("refusal %d: admitted %v, retry %v; want refused, retry %v", i, ok, retry, want)
		}
	}
}

func TestAdmissionRetryHintBounds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     float64
		refusals int
		randN    func(int64) int64
		min, max time.Duration
	}{
		{"smallest jitter", 1, 1, noJitter, time.Second, time.Second},
		{"largest jitter adds one slot to a short wait", 1, 1, func(n int64) int64 { return n - 1 }, time.Second, 2 * time.Second},
		{"largest jitter adds half a long wait", 10, 50, func(n int64) int64 { return n - 1 }, 5 * time.Second, 7500 * time.Millisecond},
		{"a long queue is capped", 1, 1000, noJitter, maxRetryDelay, maxRetryDelay},
		{"a capped hint keeps its jitter bounded", 1, 1000, func(n int64) int64 { return n - 1 }, maxRetryDelay, maxRetryDelay + maxRetryDelay/2},
		{"a tiny rate is capped too", 0.0001, 1, func(n int64) int64 { return n - 1 }, maxRetryDelay, maxRetryDelay + maxRetryDelay/2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := newTestAdmission(tc.rate, 1, tc.randN)
			a.admit()
			var retry time.Duration
			for range tc.refusals {
				var ok bool
				if ok, retry = a.admit(); ok {
					t.Fatal("admitted; want refused")
				}
			}
			if retry < tc.min || retry > tc.max {
				t.Fatalf("got %v; want in [%v, %v]", retry, tc.min, tc.max)
			}
		})
	}
}

func TestStreamLimitsDefaults(t *testing.T) {
	var cfg Config
	if err := cfg.streamLimits(); err != nil {
		t.Fatal(err)
	}
	if cfg.StreamAdmitRate != DefaultStreamAdmitRate || cfg.StreamAdmitBurst != DefaultStreamAdmitBurst ||
		cfg.StreamSendTimeout != DefaultStreamSendTimeout {
		t.Fatalf("got %+v; want the defaults", cfg)
	}
	for _, bad := range []Config{{StreamAdmitRate: -1}, {StreamAdmitBurst: -1}, {StreamSendTimeout: -time.Second}} {
		if err := bad.streamLimits(); err == nil {
			t.Errorf("%+v accepted; want an error", bad)
		}
	}
}
