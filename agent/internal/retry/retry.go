// Package retry is the agent's policy for calls that fail: which failures
// are worth retrying, the jittered exponential delay between attempts, and
// the control plane's retry hint. cairn-agent's daemon and the benchmark's
// simulated agents (agent/loadgen) both use it, so a reconnect storm in the
// benchmark spreads as a real fleet's does.
package retry

import (
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// Base is the ceiling of the first retry delay; each further attempt
	// doubles it, up to the caller's limit.
	Base = time.Second
	// MaxHint bounds how long a control plane's retry hint can keep an
	// agent away, so that a misconfigured (or hostile) hint cannot park an
	// agent for hours. It is above the longest hint a control plane gives
	// (a five-minute slot plus up to half that in jitter), so the spread
	// of a storm's hints is kept.
	MaxHint = 10 * time.Minute
)

// Jitter returns an exponential backoff delay with full jitter: uniform in
// (0, min(limit, base·2^attempt)], drawn with randN, which returns a value
// in [0, n) like rand.Int64N. Spreading reconnects over the whole interval
// rather than around its end is what breaks up a reconnect storm after a
// control plane restart. The smallest delay is a nanosecond rather than
// zero, so no retry is ever immediate.
func Jitter(attempt int, base, limit time.Duration, randN func(n int64) int64) time.Duration {
	ceil := min(base<<min(attempt, 16), limit)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(randN(int64(ceil)) + 1)
}

// Backoff is the delay before retry number attempt (from 0): full-jitter
// exponential from Base, capped at limit.
func Backoff(attempt int, limit time.Duration) time.Duration {
	return Jitter(attempt, Base, limit, rand.Int64N)
}

// Hint returns the delay a control plane asked for when it refused a call
// for load (ResourceExhausted with a google.rpc.RetryInfo detail), capped
// at MaxHint; 0 when err carries no such hint.
func Hint(err error) time.Duration {
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		return 0
	}
	var hint time.Duration
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.RetryDelay != nil {
			hint = max(hint, ri.RetryDelay.AsDuration())
		}
	}
	return min(hint, MaxHint)
}

// Delay is the delay before retrying after err: the jittered backoff, but
// at least what the control plane hinted when it refused the call for load.
func Delay(attempt int, limit time.Duration, err error) time.Duration {
	return max(Backoff(attempt, limit), Hint(err))
}

// Retryable reports whether a call may succeed later: the control plane
// was unreachable or busy, as opposed to refusing the caller.
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Internal:
		return true
	}
	return false
}
