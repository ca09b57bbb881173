package daemon

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/agent/internal/identity"
)

// TestLastErrorClearsOnceReconnected: report.LastError's contract is that
// "a session that makes progress clears its own", and the status reports
// last_error as "the newest error worth an operator's attention; empty when
// none". But keepStream learns of a session's progress only when the
// session returns, and a healthy session (the bundle watch, the config
// stream, report delivery) does not return while it is healthy. So the
// error that ended the previous session stays in every status for as long
// as the new, healthy session lasts: one control-plane restart leaves a
// stale last_error on the agent for days.
func TestLastErrorClearsOnceReconnected(t *testing.T) {
	f := startFakeCP(t)
	cfg, _ := config(t, f, f.newToken())
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("daemon did not stop within 10s of cancel")
		}
	})
	var agent string
	waitFor(t, 10*time.Second, "enrollment and a bundle stream", func() bool {
		agent = tryAgentID(cfg.Dir)
		return agent != "" && f.watchCount(agent) > 0
	})
	f.drop() // the bundle stream ends with UNAVAILABLE
	// The error may be cleared again before a poll sees it: count it.
	waitFor(t, 30*time.Second, "an error recorded", func() bool { return d.lastErr.Recorded() > 0 })
	waitFor(t, 30*time.Second, "a new bundle stream", func() bool { return f.watchCount(agent) >= 2 })
	// The new stream got the bundle (the fake sends it at once): progress
	// clears the error while that stream is still open.
	waitFor(t, 30*time.Second, "the error cleared by the new stream's progress", func() bool { return d.lastErr.Get() == "" })
	if f.watchCount(agent) < 2 {
		t.Fatal("the new stream ended")
	}
}

// tryAgentID reads the agent id the daemon persisted in dir; "" before it
// enrolled.
func tryAgentID(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "identity", "identity.json"))
	if err != nil {
		return ""
	}
	var info identity.Info
	if json.Unmarshal(b, &info) != nil {
		return ""
	}
	return info.AgentID
}
