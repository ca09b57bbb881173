package render

import (
	"context"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/agent/internal/hook"
)

// reload runs the reload command once.
func (r *Renderer) reload(ctx context.Context) error {
	argv := r.cfg.ReloadCommand
	began := time.Now()
	out, err := hook.Run(ctx, argv, r.cfg.ReloadTimeout)
	took := time.Since(began)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("reload command stopped: %w", ctx.Err())
		}
		r.counts.ReloadFailures++
		r.log.Warn("reload command failed", "command", argv, "error", err, "took", took, "output", out)
		return fmt.Errorf("reload command: %w", err)
	}
	r.counts.Reloads++
	r.log.Info("reload command ran", "command", argv, "took", took, "output", out)
	return nil
}
