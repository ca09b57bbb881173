package retry

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
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
			if got := Jitter(tc.attempt, time.Second, tc.limit, tc.randN); got != tc.want {
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
		{"capped", resourceExhausted(t, 48*time.Hour), MaxHint},
		{"negative", resourceExhausted(t, -time.Second), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Hint(tc.err); got != tc.want {
				t.Errorf("got %v; want %v", got, tc.want)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, ""), true},
		{status.Error(codes.DeadlineExceeded, ""), true},
		{status.Error(codes.ResourceExhausted, ""), true},
		{status.Error(codes.Aborted, ""), true},
		{status.Error(codes.Internal, ""), true},
		{fmt.Errorf("enroll: %w", status.Error(codes.Unavailable, "")), true},
		{status.Error(codes.Unauthenticated, ""), false},
		{status.Error(codes.PermissionDenied, ""), false},
		{status.Error(codes.InvalidArgument, ""), false},
		{errors.New("enroll: the SVID is not for the key this agent made"), false},
	} {
		if got := Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}
