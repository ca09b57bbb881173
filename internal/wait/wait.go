// Package wait has the one way Cairn's loops wait: for a while, or until
// their context ends.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends (its error, also when it has ended
// already). A d ≤ 0 still goes through a timer, so that a loop retrying
// without delay yields to others once per round.
func Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
