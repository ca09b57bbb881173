package daemon

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairnhq/cairn/agent/internal/identity"
)

// countingDial returns a dial func for sharedConn and the number of times
// it was called. Its connections are real but never used: grpc.NewClient
// does not connect until a call is made, and nothing listens at the
// address.
func countingDial(t *testing.T) (func() (*grpc.ClientConn, error), *atomic.Int32) {
	t.Helper()
	addr := freeAddr(t)
	var n atomic.Int32
	return func() (*grpc.ClientConn, error) {
		n.Add(1)
		return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}, &n
}

func isShutdown(c *grpc.ClientConn) bool { return c.GetState() == connectivity.Shutdown }

// dialedSharedConn returns a sharedConn that dials with countingDial, its
// first connection, and its dial count; it is closed when the test ends.
func dialedSharedConn(t *testing.T) (*sharedConn, *grpc.ClientConn, *atomic.Int32) {
	t.Helper()
	dial, dials := countingDial(t)
	s := newSharedConn(dial)
	t.Cleanup(s.close)
	if n := dials.Load(); n != 0 {
		t.Fatalf("%d dials before the first get; want 0 (dialed lazily)", n)
	}
	c, err := s.get()
	if err != nil {
		t.Fatal(err)
	}
	return s, c, dials
}

func TestSharedConnDialsOnce(t *testing.T) {
	s, a, dials := dialedSharedConn(t)
	b, err := s.get()
	if err != nil {
		t.Fatal(err)
	}
	if a != b || dials.Load() != 1 {
		t.Fatalf("two gets: same connection %v, %d dials; want the same connection from one dial", a == b, dials.Load())
	}
}

// Loops refused at once all replace the same connection: one dial, one new
// connection for all of them, and the old one closed.
func TestSharedConnConcurrentReplaceDialsOnce(t *testing.T) {
	s, old, dials := dialedSharedConn(t)
	const loops = 8
	got := make([]*grpc.ClientConn, loops)
	var wg sync.WaitGroup
	begin := make(chan struct{})
	for i := range loops {
		wg.Go(func() {
			<-begin
			c, err := s.replace(old)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		})
	}
	close(begin)
	wg.Wait()
	if n := dials.Load(); n != 2 {
		t.Fatalf("%d dials for %d concurrent replacements of one connection; want 2 (the first and one more)", n, loops)
	}
	cur, err := s.get()
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if c != cur {
			t.Fatalf("replace %d returned a connection other than the current one", i)
		}
	}
	if cur == old || !isShutdown(old) || isShutdown(cur) {
		t.Fatalf("after replace: new %v, old closed %v, current closed %v; want a new connection, the old one closed",
			cur != old, isShutdown(old), isShutdown(cur))
	}
}

// A loop refused on a connection another loop has replaced already gets
// the current one, which stays open, and nothing is dialed.
func TestSharedConnReplaceStale(t *testing.T) {
	s, old, dials := dialedSharedConn(t)
	cur, err := s.replace(old)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.replace(old)
	if err != nil {
		t.Fatal(err)
	}
	if got != cur || dials.Load() != 2 || isShutdown(cur) {
		t.Fatalf("replace of a replaced connection: current %v, %d dials, current closed %v; want the current one, 2 dials, open",
			got == cur, dials.Load(), isShutdown(cur))
	}
}

func TestSharedConnClose(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dial  bool // get before close
		dials int32
	}{
		{"never dialed", false, 0},
		{"dialed", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dial, dials := countingDial(t)
			s := newSharedConn(dial)
			var c *grpc.ClientConn
			if tc.dial {
				var err error
				if c, err = s.get(); err != nil {
					t.Fatal(err)
				}
			}
			s.close()
			if c != nil && !isShutdown(c) {
				t.Fatal("close left the connection open")
			}
			if _, err := s.get(); !errors.Is(err, errConnClosed) {
				t.Fatalf("get after close: %v; want errConnClosed", err)
			}
			if _, err := s.replace(c); !errors.Is(err, errConnClosed) {
				t.Fatalf("replace after close: %v; want errConnClosed", err)
			}
			s.close() // twice is harmless
			if n := dials.Load(); n != tc.dials {
				t.Fatalf("%d dials; want %d (none after close)", n, tc.dials)
			}
		})
	}
}

func TestSharedConnDialError(t *testing.T) {
	fail := errors.New("no such target")
	calls := 0
	s := newSharedConn(func() (*grpc.ClientConn, error) {
		calls++
		return nil, fail
	})
	defer s.close()
	for range 2 {
		if _, err := s.get(); !errors.Is(err, fail) {
			t.Fatalf("get: %v; want the dial's error", err)
		}
	}
	if calls != 2 {
		t.Fatalf("%d dials for two gets after failures; want each get to dial again", calls)
	}
}

// The daemon's loops, run through keepStream on one sharedConn, hold one
// connection to the control plane between them, not one each. When one of
// them is refused as unauthenticated, it replaces the connection: the
// others' streams on the old one end with it, and all of them reconnect
// onto the one new connection.
func TestLoopsShareOneConnection(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, "")
	d, src, conns := enrolledParts(t, f, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	before := f.accepted.Load()

	// Three loops, as Run has for a SPIRE agent (config stream, bundle
	// stream, report delivery); the fake serves only WatchBundle, so all
	// three watch.
	const loops = 3
	var wg sync.WaitGroup
	for range loops {
		wg.Go(func() {
			if err := d.bundleLoop(ctx, src, conns); err != nil {
				t.Errorf("bundleLoop: %v", err)
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	// onOneConn waits until all the loops' streams are open on one
	// connection other than the one at except, and returns its address.
	onOneConn := func(what, except string) string {
		t.Helper()
		var addr string
		waitFor(t, 20*time.Second, what, func() bool {
			open := f.openWatchesByConn()
			addrs := slices.Collect(maps.Keys(open))
			if len(addrs) != 1 || addrs[0] == except || open[addrs[0]] != loops {
				return false
			}
			addr = addrs[0]
			return true
		})
		return addr
	}
	first := onOneConn("three streams on one connection", "")
	if n := f.accepted.Load() - before; n != 1 {
		t.Fatalf("the control plane accepted %d connections for %d loops; want 1", n, loops)
	}

	// The streams end (the control plane went away); the first to come
	// back is refused as a connection with an expired SVID would be.
	f.refuseNextWatches(1)
	f.drop()
	onOneConn("three streams on one new connection", first)
	if n := f.accepted.Load() - before; n != 2 {
		t.Fatalf("the control plane accepted %d connections after one refusal; want 2 (one replacement)", n)
	}
}

// enrolledParts returns what the daemon's loops need, without running
// Run: a daemon for cfg, an identity enrolled at f, and a shared
// connection to f, closed when the test ends.
func enrolledParts(t *testing.T, f *fakeCP, cfg Config) (*Daemon, *identity.Source, *sharedConn) {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src, err := identity.Enroll(context.Background(), identity.EnrollConfig{Addr: f.addr, Dir: d.identityDir(),
		JoinToken: f.newToken(), Trust: cfg.Trust, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	conns := newSharedConn(func() (*grpc.ClientConn, error) { return src.Dial(f.addr) })
	t.Cleanup(conns.close)
	return d, src, conns
}
