package daemon

import (
	"math/rand/v2"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// backoffBase is the ceiling of the first retry delay; each further
	// attempt doubles it, up to Config.MaxBackoff.
	backoffBase = time.Second
	// maxRetryHint bounds how long a control plane's retry hint can keep
	// an agent away, so that a misconfigured (or hostile) hint cannot
	// park an agent for hours. It is above the longest hint a control
	// plane gives (a five-minute slot plus up to half that in jitter), so
	// the spread of a storm's hints is kept.
	maxRetryHint = 10 * time.Minute
)

// jitter returns an exponential backoff delay with full jitter: uniform in
// (0, min(limit, base·2^attempt)], drawn with randN, which returns a value
// in [0, n) like rand.Int64N. Spreading reconnects over the whole interval
// rather than around its end is what breaks up a reconnect storm after a
// control plane restart. The smallest delay is a nanosecond rather than
// zero, so no retry is ever immediate.
func jitter(attempt int, base, limit time.Duration, randN func(n int64) int64) time.Duration {
	ceil := min(base<<min(attempt, 16), limit)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(randN(int64(ceil)) + 1)
}

// retryHint returns the delay a control plane asked for when it refused a
// call for load (ResourceExhausted with a google.rpc.RetryInfo detail),
// capped at maxRetryHint; 0 when err carries no such hint.
func retryHint(err error) time.Duration {
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
	return min(hint, maxRetryHint)
}

// backoff is the delay before retry number attempt (from 0): full-jitter
// exponential from one second, capped at Config.MaxBackoff.
func (d *Daemon) backoff(attempt int) time.Duration {
	return jitter(attempt, backoffBase, d.cfg.MaxBackoff, rand.Int64N)
}

// retryDelay is the delay before retrying after err: the jittered backoff,
// but at least what the control plane hinted when it refused us for load.
func (d *Daemon) retryDelay(attempt int, err error) time.Duration {
	return max(d.backoff(attempt), retryHint(err))
}
