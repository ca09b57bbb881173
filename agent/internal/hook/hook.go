// Package hook runs commands an operator gave the agent (the render reload
// command, the upgrade hook): argv without a shell, a timeout that kills
// the command's whole process group, an environment without the agent's
// own CAIRN_AGENT_* settings (which may hold the join token), and the head
// of its output for the log. It must not run anything of its own accord.
package hook

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

// maxOutput bounds how much of a command's output is kept.
const maxOutput = 4 << 10

// waitDelay is how long Run waits, after the command exits, for children
// it left behind to close its output.
const waitDelay = time.Second

// Run runs argv with the agent's environment minus CAIRN_AGENT_* plus
// extraEnv ("KEY=value"), for at most timeout, and returns the head of its
// combined output. A command that succeeded but left a child holding its
// output open counts as succeeded.
func Run(ctx context.Context, argv []string, timeout time.Duration, extraEnv ...string) (string, error) {
	if len(argv) == 0 {
		return "", errors.New("hook: empty command")
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, argv[0], argv[1:]...)
	cmd.Env = append(Env(os.Environ()), extraEnv...)
	var out headBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = waitDelay
	killGroupOnCancel(cmd)
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return out.String(), fmt.Errorf("stopped: %w", ctx.Err())
		}
		if errors.Is(tctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", timeout, err)
		}
		return out.String(), err
	}
	return out.String(), nil
}

// Env is env without CAIRN_AGENT_* variables, which may hold the join
// token.
func Env(env []string) []string {
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
