package daemon

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cairnhq/cairn/agent/internal/identity"
)

func TestJitter(t *testing.T) {
	top := func(n int64) int64 { return n - 1 } // the largest draw
	bottom := func(int64) int64 { return 0 }    // the smallest draw
	for _, tc := range []struct {
		name    string
		attempt int
		limit   time.Duration
		randN   func(int64) int64
		want    time.Duration
	}{
		{"first attempt, top", 0, 30 * time.Second, top, time.Second},
		{"first attempt, bottom", 0, 30 * time.Second, bottom, time.Nanosecond},
		{"doubles", 3, 30 * time.Second, top, 8 * time.Second},
		{"capped", 5, 30 * time.Second, top, 30 * time.Second},
		{"capped long after", 1000, 30 * time.Second, top, 30 * time.Second},
		{"cap below base", 0, 200 * time.Millisecond, top, 200 * time.Millisecond},
		{"bottom stays above zero when capped", 1000, 30 * time.Second, bottom, time.Nanosecond},
		{"zero limit", 2, 0, top, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := jitter(tc.attempt, time.Second, tc.limit, tc.randN); got != tc.want {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
}

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

func TestRetryHint(t *testing.T) {
	unavailableWithHint, err := status.New(codes.Unavailable, "").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want time.Duration
	}{
		{"nil", nil, 0},
		{"not a status", errors.New("eof"), 0},
		{"resource exhausted without a hint", status.Error(codes.ResourceExhausted, "busy"), 0},
		{"resource exhausted with a hint", resourceExhausted(t, 7*time.Second), 7 * time.Second},
		{"wrapped", fmt.Errorf("config stream: %w", resourceExhausted(t, 7*time.Second)), 7 * time.Second},
		{"the longest of two hints", resourceExhausted(t, 2*time.Second, 9*time.Second), 9 * time.Second},
		{"a hint on another code is ignored", unavailableWithHint.Err(), 0},
		{"capped", resourceExhausted(t, 48*time.Hour), maxRetryHint},
		{"negative", resourceExhausted(t, -time.Second), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryHint(tc.err); got != tc.want {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
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
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, err := identity.Enroll(ctx, identity.EnrollConfig{Addr: f.addr, Dir: d.identityDir(), JoinToken: f.newToken(),
		Trust: cfg.Trust, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	const hint = 700 * time.Millisecond
	var ended, began []time.Time
	err = d.keepStream(ctx, src, "config stream", func(context.Context, *grpc.ClientConn) (bool, error) {
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
