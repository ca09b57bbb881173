package scenario

import (
	"context"
	"testing"
	"time"
)

func TestChangeValue(t *testing.T) {
	for _, tc := range []struct {
		k, size int
	}{{0, 256}, {7, 1}, {12345, 4096}} {
		v := changeValue(tc.k, tc.size)
		if len(v) < tc.size {
			t.Errorf("changeValue(%d, %d) has %d bytes; want ≥ %d", tc.k, tc.size, len(v), tc.size)
		}
		if k, ok := parseChange([]byte(v)); !ok || k != tc.k {
			t.Errorf("parseChange(changeValue(%d)) = %d, %v; want %d, true", tc.k, k, ok, tc.k)
		}
	}
	for _, v := range []string{"", "seed", "chg-", "chg-x|", "chg--1|", "chg-3"} {
		if k, ok := parseChange([]byte(v)); ok {
			t.Errorf("parseChange(%q) = %d, true; want false", v, k)
		}
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := summarize(d)
	if want := (percentiles{p50: 50, p99: 99, max: 100}); got != want {
		t.Errorf("summarize(1..100 ms) = %+v; want %+v", got, want)
	}
	if got := summarize(nil); got != (percentiles{}) {
		t.Errorf("summarize(nil) = %+v; want zero", got)
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder(3, 2)
	r.deliver(0, []byte(changeValue(1, 0)))
	r.deliver(0, []byte(changeValue(1, 0))) // a repeat counts once
	r.deliver(1, []byte("seed"))            // not a change
	r.deliver(9, []byte(changeValue(1, 0))) // no such watcher
	if got := len(r.latencies(1, 0)); got != 1 {
		t.Fatalf("after one watcher: %d latencies; want 1", got)
	}
	r.deliver(1, []byte(changeValue(1, 0)))
	r.deliver(2, []byte(changeValue(1, 0)))
	if err := r.wait(context.Background(), 1, time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done[1]:
	default:
		t.Fatal("change 1 not done after all three watchers had it")
	}
	if got := len(r.latencies(0, 0)); got != 0 {
		t.Errorf("change 0: %d latencies; want 0", got)
	}
}
