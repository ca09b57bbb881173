package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// TestUnchangedStatusIsNotResentEveryHeartbeat: the agent sends its
// status "when it changes (checked every second) and at least every
// --status-interval" (docs/protocol.md). But the config_fresh check's
// detail is "last fresh <time of the last verified heartbeat>", which
// changes with every heartbeat (10 s by default), so a connected, idle
// agent sends a new status every heartbeat whatever --status-interval says:
// six times the default rate, and with a long --status-interval far more.
func TestUnchangedStatusIsNotResentEveryHeartbeat(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "", "--heartbeat-interval", "500ms")
	dir := filepath.Join(t.TempDir(), "agent")
	args := []string{"--metrics-interval", "1h", "--status-interval", "1h"}
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dir, token: cp.joinToken(t), pin: cp.pin, extraArgs: args})
	a.waitLog(t, "local API serving", fleetDeadline)
	id, _ := a.identityInfo(t)
	pollUntil(t, fleetDeadline, "a connected, fresh status", func() (bool, string) {
		st := cp.agentByID(t, id).GetStatus()
		return statusCheck(st, "config_stream").GetHealthy() && statusCheck(st, "config_fresh").GetHealthy(), fmt.Sprintf("%v", st)
	})
	time.Sleep(2 * time.Second) // let the start-up changes settle
	last := cp.agentByID(t, id).GetStatus()
	var resent []string
	// Ten heartbeats.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		st := cp.agentByID(t, id).GetStatus()
		if !st.GetReportTime().AsTime().Equal(last.GetReportTime().AsTime()) {
			resent = append(resent, fmt.Sprintf("config_fresh %q -> %q", statusCheck(last, "config_fresh").GetDetail(),
				statusCheck(st, "config_fresh").GetDetail()))
			last = st
		}
	}
	if len(resent) > 0 {
		t.Fatalf("an idle agent with --status-interval 1h sent %d new statuses in 5s of heartbeats every 500ms: %v", len(resent), resent)
	}
	if code := a.interrupt(t); code != 0 {
		t.Errorf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)
}
