package agentapi

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// TestSendWatch: a Send blocked past the timeout has its connection
// closed and returns errFellBehind; finished Sends, and streams no longer
// watched, are left alone.
func TestSendWatch(t *testing.T) {
	w := newSendWatch(20 * time.Millisecond)
	var sent atomic.Int64
	onSent := func(*agentv1.StreamResponse) { sent.Add(1) }

	// A stream whose Sends finish: never aborted.
	var quickAborts atomic.Int64
	quick, unwatchQuick := w.watch(func() error { quickAborts.Add(1); return nil }, onSent)
	defer unwatchQuick()
	for range 3 {
		if err := quick.send(func(*agentv1.StreamResponse) error { return nil }, &agentv1.StreamResponse{}); err != nil {
			t.Fatal(err)
		}
	}

	// A stream whose Send blocks until its connection is closed, as gRPC's
	// does under flow control.
	closed := make(chan struct{})
	slow, unwatchSlow := w.watch(func() error { close(closed); return nil }, onSent)
	defer unwatchSlow()
	res := make(chan error, 1)
	go func() {
		res <- slow.send(func(*agentv1.StreamResponse) error { <-closed; return errors.New("connection closed") }, &agentv1.StreamResponse{})
	}()

	// A stream that stopped being watched while blocked: not aborted.
	gone, unwatchGone := w.watch(func() error { t.Error("aborted a stream no longer watched"); return nil }, onSent)
	gone.since.Store(w.now())
	unwatchGone()

	deadline := time.Now().Add(10 * time.Second)
	for w.sweep() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the blocked Send was never aborted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := <-res; !errors.Is(err, errFellBehind) {
		t.Fatalf("blocked Send returned %v; want errFellBehind", err)
	}
	if err := slow.send(func(*agentv1.StreamResponse) error { return nil }, &agentv1.StreamResponse{}); !errors.Is(err, errFellBehind) {
		t.Fatalf("Send after the abort returned %v; want errFellBehind", err)
	}
	if n := w.sweep(); n != 0 {
		t.Fatalf("second sweep aborted %d streams; want 0 (each is aborted once)", n)
	}
	if quickAborts.Load() != 0 || sent.Load() != 3 {
		t.Fatalf("quick stream: %d aborts, %d sent; want 0 and 3", quickAborts.Load(), sent.Load())
	}
}
