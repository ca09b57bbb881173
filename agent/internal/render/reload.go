package render

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// maxOutput bounds how much of the reload command's output is kept for the
// log.
const maxOutput = 4 << 10

// waitDelay is how long Run waits, after the reload command exits, for
// children it left behind to close its output.
const waitDelay = time.Second

// reload runs the reload command once.
func (r *Renderer) reload(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, r.cfg.ReloadTimeout)
	defer cancel()
	argv := r.cfg.ReloadCommand
	cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
	cmd.Env = reloadEnv(os.Environ())
	var out headBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = waitDelay
	killGroupOnCancel(cmd)
	began := time.Now()
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		// It succeeded; a child it started kept the output open.
		err = nil
	}
	took := time.Since(began)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("reload command stopped: %w", ctx.Err())
		}
		if errors.Is(tctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", r.cfg.ReloadTimeout, err)
		}
		r.counts.ReloadFailures++
		r.log.Warn("reload command failed", "command", argv, "error", err, "took", took, "output", out.String())
		return fmt.Errorf("reload command: %w", err)
	}
	r.counts.Reloads++
	r.log.Info("reload command ran", "command", argv, "took", took, "output", out.String())
	return nil
}

// reloadEnv is the agent's environment without CAIRN_AGENT_* variables,
// which may hold the join token.
func reloadEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "CAIRN_AGENT_") {
			out = append(out, kv)
		}
	}
	return out
}

// headBuffer keeps the first maxOutput bytes written to it and drops the
// rest, never failing a write, so a chatty command is not cut off by a
// broken pipe.
type headBuffer struct {
	mu        sync.Mutex
	b         []byte
	truncated bool
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := min(len(p), maxOutput-len(h.b))
	h.b = append(h.b, p[:n]...)
	if n < len(p) {
		h.truncated = true
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := strings.TrimSpace(string(h.b))
	if h.truncated {
		s += " …(truncated)"
	}
	return s
}
