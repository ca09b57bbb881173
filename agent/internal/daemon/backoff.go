package daemon

import (
	"time"

	"github.com/cairnhq/cairn/agent/internal/retry"
)

// backoff is the delay before retry number attempt (from 0): full-jitter
// exponential from one second, capped at Config.MaxBackoff.
func (d *Daemon) backoff(attempt int) time.Duration {
	return retry.Backoff(attempt, d.cfg.MaxBackoff)
}

// retryDelay is the delay before retrying after err: the jittered backoff,
// but at least what the control plane hinted when it refused us for load.
func (d *Daemon) retryDelay(attempt int, err error) time.Duration {
	return retry.Delay(attempt, d.cfg.MaxBackoff, err)
}
