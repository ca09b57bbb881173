package agentapi

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
)

// errFellBehind ends a stream whose agent stopped taking messages. The
// agent reconnects and resumes from the revision it applied.
var errFellBehind = status.Error(codes.Unavailable, "config stream fell behind; reconnect")

// sendWatch ends config streams whose agent stopped reading.
//
// gRPC's Send blocks under flow control while the agent does not read,
// and a stream's sender blocked in Send would hold its goroutine and the
// messages it queued forever. One sweeper looks at every stream's Send in
// progress and, when one has been blocked longer than the timeout, closes
// the agent's connection: the Send fails, the handler's Recv fails, the
// handler returns errFellBehind, and the agent reconnects and resumes from
// the revision it applied. Nothing is done per Send but two atomic stores.
type sendWatch struct {
	timeout time.Duration
	start   time.Time // sends' clocks are time since start (monotonic)

	mu    sync.Mutex
	sends map[*watchedSend]struct{}
}

// watchedSend is one stream's sending side.
type watchedSend struct {
	w *sendWatch
	// since is when the Send in progress began, in nanoseconds since
	// w.start plus one; 0 when no Send is in progress.
	since   atomic.Int64
	stalled atomic.Bool
	abort   func() error // closes the agent's connection
	onSent  func(*agentv1.StreamResponse)
}

func newSendWatch(timeout time.Duration) *sendWatch {
	return &sendWatch{timeout: timeout, start: time.Now(), sends: map[*watchedSend]struct{}{}}
}

// run sweeps until ctx ends, every quarter of the timeout within
// [10ms, 1s], on a goroutine of its own so that nothing else Run waits
// for (a store that hangs) delays it.
func (w *sendWatch) run(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(min(max(w.timeout/4, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := w.sweep(); n > 0 {
				log.Warn("closed the connections of agents whose config stream send stayed blocked", "agents", n, "send_timeout", w.timeout)
			}
		}
	}
}

// watch registers a stream; abort closes its connection. Call done when
// the stream's sending has stopped.
func (w *sendWatch) watch(abort func() error, onSent func(*agentv1.StreamResponse)) (ws *watchedSend, done func()) {
	ws = &watchedSend{w: w, abort: abort, onSent: onSent}
	w.mu.Lock()
	w.sends[ws] = struct{}{}
	w.mu.Unlock()
	return ws, func() {
		w.mu.Lock()
		delete(w.sends, ws)
		w.mu.Unlock()
	}
}

func (w *sendWatch) now() int64 { return int64(time.Since(w.start)) + 1 }

// sweep aborts the streams whose Send has been blocked past the timeout
// and returns how many.
func (w *sendWatch) sweep() int {
	now := w.now()
	var stalled []*watchedSend
	w.mu.Lock()
	for ws := range w.sends {
		since := ws.since.Load()
		if since == 0 || ws.stalled.Load() {
			continue
		}
		if time.Duration(now-since) > w.timeout {
			ws.stalled.Store(true)
			stalled = append(stalled, ws)
		}
	}
	w.mu.Unlock()
	for _, ws := range stalled {
		_ = ws.abort()
	}
	return len(stalled)
}

// send sends m on send, on the caller's goroutine. A Send that the sweeper
// gave up on returns errFellBehind.
func (ws *watchedSend) send(send func(*agentv1.StreamResponse) error, m *agentv1.StreamResponse) error {
	if ws.stalled.Load() {
		return errFellBehind
	}
	ws.since.Store(ws.w.now())
	err := send(m)
	ws.since.Store(0)
	if ws.stalled.Load() {
		return errFellBehind
	}
	if err != nil {
		return err
	}
	ws.onSent(m)
	return nil
}

// connCreds are the server's TLS credentials with one addition: each
// connection's AuthInfo (connInfo) can close the connection, which is how
// sendWatch ends a stream whose handler is blocked in Send.
type connCreds struct {
	credentials.TransportCredentials
}

// connInfo is credentials.TLSInfo plus a way to close the connection.
type connInfo struct {
	credentials.TLSInfo
	close func() error
}

func (c connCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	if info, ok := ai.(credentials.TLSInfo); ok {
		return conn, connInfo{TLSInfo: info, close: raw.Close}, nil
	}
	return conn, ai, nil
}

func (c connCreds) Clone() credentials.TransportCredentials {
	return connCreds{c.TransportCredentials.Clone()}
}

// tlsInfo returns a connection's TLS state.
func tlsInfo(ai credentials.AuthInfo) (credentials.TLSInfo, bool) {
	switch info := ai.(type) {
	case connInfo:
		return info.TLSInfo, true
	case credentials.TLSInfo:
		return info, true
	}
	return credentials.TLSInfo{}, false
}
