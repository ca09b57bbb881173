package daemon

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// resourceExhausted is what the control plane answers a stream it does not
// admit: ResourceExhausted with a RetryInfo detail.
func resourceExhausted(t *testing.T, delays ...time.Duration) error {
	t.Helper()
	st := status.New(codes.ResourceExhausted, "too many new config streams; retry later")
	for _, d := range delays {
		var err error
		if st, err = st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err != nil {
			t.Fatal(err)
		}
	}
	return st.Err()
}

func TestRetryDelay(t *testing.T) {
	d, err := New(Config{Addr: "x", Dir: "y", MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		err      error
		min, max time.Duration
	}{
		{"no hint: backoff only", status.Error(codes.Unavailable, ""), time.Nanosecond, 200 * time.Millisecond},
		{"a hint longer than the backoff wins", resourceExhausted(t, 3*time.Second), 3 * time.Second, 3 * time.Second},
		{"a hint shorter than the backoff is a floor", resourceExhausted(t, 100*time.Millisecond), 100 * time.Millisecond, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 {
				if got := d.retryDelay(4, tc.err); got < tc.min || got > tc.max {
					t.Fatalf("got %v; want in [%v, %v]", got, tc.min, tc.max)
				}
			}
		})
	}
}

// keepStream waits at least the control plane's retry hint before it opens
// the next stream, however short the backoff.
func TestKeepStreamHonoursRetryHint(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, "")
	cfg.MaxBackoff = 10 * time.Millisecond
	d, _, conns := enrolledParts(t, f, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const hint = 700 * time.Millisecond
	var ended, began []time.Time
	err := d.keepStream(ctx, conns, "config stream", func(context.Context, *grpc.ClientConn) (bool, error) {
		began = append(began, time.Now())
		defer func() { ended = append(ended, time.Now()) }()
		if len(began) == 1 {
			return false, resourceExhausted(t, hint)
		}
		cancel()
		return false, ctx.Err()
	})
	if err != nil {
		t.Fatalf("keepStream: %v", err)
	}
	if len(began) != 2 {
		t.Fatalf("%d sessions; want 2", len(began))
	}
	if waited := began[1].Sub(ended[0]); waited < hint {
		t.Fatalf("reconnected %v after a refusal hinting %v; want at least the hint", waited, hint)
	}
}
