package daemon

import (
	"errors"
	"sync"

	"google.golang.org/grpc"
)

// errConnClosed is what sharedConn returns once the daemon has closed it.
var errConnClosed = errors.New("connection to the control plane closed")

// sharedConn is the agent's one mTLS connection to the control plane,
// shared by the config stream, the trust bundle stream and report
// delivery: each gRPC connection costs the control plane a TLS state, an
// HTTP/2 transport and three goroutines (BENCHMARKS.md, "Fleet
// benchmark"), so an agent holds one, not one per stream. SVID renewal
// dials its own short-lived connection (renewLoop). It is safe for
// concurrent use.
type sharedConn struct {
	dial func() (*grpc.ClientConn, error)

	mu     sync.Mutex
	conn   *grpc.ClientConn // nil until dialed
	closed bool
}

// newSharedConn returns a holder that dials with dial when a connection is
// first needed; typically dial is an identity.Source's Dial of the
// control plane's address.
func newSharedConn(dial func() (*grpc.ClientConn, error)) *sharedConn {
	return &sharedConn{dial: dial}
}

// get returns the current connection, dialing it if there is none.
func (s *sharedConn) get() (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.currentLocked()
}

// replace is called when a call on old was refused as unauthenticated:
// the control plane refuses calls on a connection whose handshake SVID has
// expired, and a long-lived connection outlives the SVID it opened with,
// so a new connection (whose handshake presents the current SVID) is
// needed. If old is still current, replace closes it and dials anew;
// otherwise another caller has replaced it already, and replace returns
// the current connection without dialing, so loops refused at once cause
// one dial, not one each.
//
// Closing old ends the other loops' streams on it (Canceled, "the client
// connection is closing"); they reconnect through keepStream's backoff,
// and get the new connection.
func (s *sharedConn) replace(old *grpc.ClientConn) (*grpc.ClientConn, error) {
	s.mu.Lock()
	replaced := old != nil && old == s.conn
	if replaced {
		s.conn = nil // no caller gets it from now on
	}
	conn, err := s.currentLocked()
	s.mu.Unlock()
	if replaced {
		// Outside the lock: closing may wait a few seconds for a
		// blackholed connection.
		old.Close()
	}
	return conn, err
}

// close closes the current connection; get and replace fail from then on.
// The daemon calls it once its loops have stopped.
func (s *sharedConn) close() {
	s.mu.Lock()
	conn := s.conn
	s.conn, s.closed = nil, true
	s.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

func (s *sharedConn) currentLocked() (*grpc.ClientConn, error) {
	if s.closed {
		return nil, errConnClosed
	}
	if s.conn == nil {
		c, err := s.dial()
		if err != nil {
			return nil, err
		}
		s.conn = c
	}
	return s.conn, nil
}
