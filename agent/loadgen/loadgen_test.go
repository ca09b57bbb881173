package loadgen

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The whole fleet, against a real control plane, is exercised by
// cmd/cairn-bench/internal/benchrun's TestHarnessSmallFleet; these cover
// what needs no control plane.

func TestWorkerRefusesCallsWithoutAFleet(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := InProcess(ctx, slog.New(slog.DiscardHandler))
	for name, call := range map[string]func() error{
		"arm":   func() error { return w.Arm("fleet", 1) },
		"stats": func() error { _, err := w.Stats(""); return err },
		"wait":  func() error { _, _, err := w.Wait("fleet", time.Millisecond); return err },
		"churn": func() error { return w.SetChurn(true) },
		"start": func() error { return w.Start(FleetConfig{}) },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "loadgen worker") {
			t.Errorf("%s without a fleet: %v; want a worker error", name, err)
		}
	}
	if _, err := w.call(request{Op: "dance"}); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op: %v; want refused", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestBackoffIsTheDaemons(t *testing.T) {
	for attempt, ceil := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second} {
		for range 200 {
			if d := jitter(attempt); d <= 0 || d > ceil {
				t.Fatalf("jitter(%d) = %v; want in (0, %v]", attempt, d, ceil)
			}
		}
	}
	refused := func(d time.Duration) error {
		st, err := status.New(codes.ResourceExhausted, "busy").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, c := range []struct {
		err  error
		want time.Duration
	}{
		{refused(90 * time.Second), 90 * time.Second},
		{refused(time.Hour), maxRetryHint},
		{status.Error(codes.Unavailable, "down"), 0},
		{errors.New("plain"), 0},
	} {
		if got := retryHint(c.err); got != c.want {
			t.Errorf("retryHint(%v) = %v; want %v", c.err, got, c.want)
		}
	}
}
