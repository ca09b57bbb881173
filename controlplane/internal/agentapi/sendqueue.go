package agentapi

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// errFellBehind ends a stream whose agent stopped taking messages. The
// agent reconnects and resumes from the revision it applied.
var errFellBehind = status.Error(codes.Unavailable, "config stream fell behind; reconnect")

// sendQueue sends one stream's messages on a goroutine of its own, so the
// handler never blocks in Send: an agent that stops reading makes gRPC
// flow control block Send, and that must not hold the handler (or anything
// it holds) forever. The handler puts messages on a bounded queue; when
// one Send blocks longer than the send timeout, the queue reports the
// stream stalled, and the handler returns errFellBehind. Returning from
// the handler ends the stream, which makes the blocked Send return, and
// the sending goroutine exits.
//
// Only the handler calls put; only run calls send.
type sendQueue struct {
	out     chan *agentv1.StreamResponse
	timeout time.Duration
	onSent  func(*agentv1.StreamResponse)

	stalled   chan struct{} // closed once a Send has blocked past timeout
	stallOnce sync.Once
	failed    chan struct{} // closed when a Send failed; err is set before
	err       error
}

func newSendQueue(size int, timeout time.Duration, onSent func(*agentv1.StreamResponse)) *sendQueue {
	return &sendQueue{
		out: make(chan *agentv1.StreamResponse, size), timeout: timeout, onSent: onSent,
		stalled: make(chan struct{}), failed: make(chan struct{}),
	}
}

// run sends queued messages with send until ctx ends or a Send fails.
func (q *sendQueue) run(ctx context.Context, send func(*agentv1.StreamResponse) error) {
	watchdog := time.AfterFunc(q.timeout, q.stall)
	watchdog.Stop()
	defer watchdog.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q.out:
			watchdog.Reset(q.timeout)
			err := send(m)
			watchdog.Stop()
			if err != nil {
				q.err = err
				close(q.failed)
				return
			}
			q.onSent(m)
		}
	}
}

// stall marks the stream stalled; the watchdog calls it when a Send has
// blocked for the timeout.
func (q *sendQueue) stall() { q.stallOnce.Do(func() { close(q.stalled) }) }

// put queues m, waiting while the queue is full. It returns errFellBehind
// once a Send has blocked past the timeout, the Send's error once one
// failed, or ctx's error.
func (q *sendQueue) put(ctx context.Context, m *agentv1.StreamResponse) error {
	select {
	case q.out <- m:
		return nil
	case <-q.stalled:
		return errFellBehind
	case <-q.failed:
		return q.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
