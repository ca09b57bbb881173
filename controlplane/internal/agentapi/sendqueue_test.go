package agentapi

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// blockingStream is a stream whose agent stopped reading after taking n
// messages: later Sends block until the stream ends, as gRPC's do under
// flow control.
type blockingStream struct {
	mu    sync.Mutex
	n     int
	taken []*agentv1.StreamResponse
	ended chan struct{} // closed to end the stream, as gRPC does after the handler returns
}

func (b *blockingStream) send(m *agentv1.StreamResponse) error {
	b.mu.Lock()
	if len(b.taken) < b.n {
		b.taken = append(b.taken, m)
		b.mu.Unlock()
		return nil
	}
	b.mu.Unlock()
	<-b.ended
	return errors.New("stream ended")
}

func TestSendQueueStalls(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := &blockingStream{n: 2, ended: make(chan struct{})}
	var sent sync.WaitGroup
	sent.Add(2)
	q := newSendQueue(3, 50*time.Millisecond, func(*agentv1.StreamResponse) { sent.Done() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx, b.send); close(done) }()

	// Two are taken, one blocks in Send, three wait in the queue; the
	// seventh put waits for room until the stall is noticed.
	var err error
	for i := range 7 {
		if err = q.put(context.Background(), &agentv1.StreamResponse{Nonce: string(rune('a' + i))}); err != nil {
			break
		}
	}
	if !errors.Is(err, errFellBehind) {
		t.Fatalf("put on a stalled stream: got %v; want errFellBehind", err)
	}
	select {
	case <-q.stalled:
	default:
		t.Fatal("put returned errFellBehind but the queue is not marked stalled")
	}
	sent.Wait() // onSent ran for exactly the two taken (a third Done would panic)

	// The handler returns: its context ends and gRPC ends the stream,
	// which unblocks the Send; the sender must exit.
	cancel()
	close(b.ended)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the sender did not exit after the stream ended")
	}
}

func TestSendQueueSendError(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	broken := errors.New("connection reset")
	q := newSendQueue(1, time.Hour, func(*agentv1.StreamResponse) {})
	done := make(chan struct{})
	go func() {
		q.run(context.Background(), func(*agentv1.StreamResponse) error { return broken })
		close(done)
	}()
	if err := q.put(context.Background(), &agentv1.StreamResponse{}); err != nil {
		t.Fatalf("first put: %v", err)
	}
	<-done
	var err error
	for range 3 { // the queue has room for one more before put can only fail
		if err = q.put(context.Background(), &agentv1.StreamResponse{}); err != nil {
			break
		}
	}
	if !errors.Is(err, broken) {
		t.Fatalf("put after a failed Send: got %v; want %v", err, broken)
	}
}

func TestSendQueueContextEnds(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	q := newSendQueue(1, time.Hour, func(*agentv1.StreamResponse) {})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.run(ctx, func(*agentv1.StreamResponse) error { return nil }); close(done) }()
	cancel()
	<-done
	// The queue has room for one; after that, put can only fail.
	var err error
	for range 2 {
		if err = q.put(ctx, &agentv1.StreamResponse{}); err != nil {
			break
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("put after the context ended: got %v; want context.Canceled", err)
	}
}
