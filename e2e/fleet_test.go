package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	agentv1 "github.com/cairnhq/cairn/gen/cairn/agent/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// knownBug skips the rest of the test for a product bug, which the test
// goes on to show when CAIRN_E2E_KNOWN_BUGS=run.
func knownBug(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("CAIRN_E2E_KNOWN_BUGS") != "run" {
		t.Skip("BUG: " + what)
	}
	t.Log("known bug, checked anyway: " + what)
}

// snapshotLog is what an agent logs when it replaces its cache with a
// snapshot.
const snapshotLog = `"msg":"config replaced with snapshot"`

// contentIs reports whether a structured document holds want.
func contentIs(d *agentv1.Document, want map[string]any) bool {
	var got map[string]any
	return d != nil && json.Unmarshal(d.Content, &got) == nil && reflect.DeepEqual(got, want)
}

// TestFleetOnPostgres runs three agents of one data plane against a
// control plane on PostgreSQL: config written through the admin API
// reaches every agent's local API, the admin API shows each agent at the
// head both by its config stream and by its own status report, and the
// fleet filters answer accordingly. Then one agent is restarted, without
// and with a change made while it was down: it resumes from its cache and
// catches up by delta, never by snapshot.
func TestFleetOnPostgres(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, storetest.PostgresURL(t))
	w := newConfigWriter(t, cp)
	root := t.TempDir()
	outer := t
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	// agent-2 renders a document and its reload command always fails, so
	// its "render" check is unhealthy for as long as it runs: the one agent
	// unhealthy_only must find.
	renderPath := filepath.Join(t.TempDir(), "ingress.json")
	agents := make([]*agentProc, 3)
	locals := make([]localClients, 3)
	ids := make([]string, 3)
	for i := range agents {
		o := agentOpts{dataDir: filepath.Join(root, fmt.Sprintf("a%d", i)), token: cp.joinToken(t), pin: cp.pin}
		if i == 2 {
			o.extraArgs = []string{"--render", "cairn.dev/ingress/main=" + renderPath, "--reload-command", "/bin/false"}
		}
		agents[i] = startAgent(t, cp, fmt.Sprintf("agent-%d", i), o)
	}
	for i, a := range agents {
		a.waitLog(t, "local API serving", fleetDeadline)
		ids[i], _ = a.identityInfo(t)
		locals[i] = dialLocalAPI(t, a.dataDir)
	}
	sortedIDs := slices.Sorted(slices.Values(ids))

	var ingress *adminv1.ConfigDocument
	var head int64
	var stateHash string
	var restarted time.Time // when agent-0 was first restarted
	step("config reaches every agent", func(t *testing.T) {
		ingress = w.create("cairn.dev/ingress", "main", map[string]any{"port": 443.0})
		w.create("cairn.dev/db", "settings", map[string]any{"pool": 20.0})
		w.create("cairn.dev/motd", "hello", map[string]any{"text": "welcome"})
		w.update(ingress.Id, map[string]any{"port": 8443.0})
		head = w.head
		for i, a := range agents {
			got := waitLocalRevision(t, a, locals[i], head)
			if len(got.Documents) != 3 {
				t.Errorf("%s serves %d documents; want 3", a.name, len(got.Documents))
			}
			if d := localDoc(got, "cairn.dev/ingress", "main"); !contentIs(d, map[string]any{"port": 8443.0}) || d.Version != 2 {
				t.Errorf("%s serves ingress %v; want version 2 with port 8443", a.name, d)
			}
			if d := localDoc(got, "cairn.dev/motd", "hello"); !contentIs(d, map[string]any{"text": "welcome"}) {
				t.Errorf("%s serves motd %v; want the created document", a.name, d)
			}
			if got.Stale {
				t.Errorf("%s says its config is stale", a.name)
			}
			if i == 0 {
				stateHash = got.StateHash
			} else if got.StateHash != stateHash {
				t.Errorf("%s holds state %s; agent-0 holds %s", a.name, got.StateHash, stateHash)
			}
		}
	})

	step("the admin API shows every agent at the head", func(t *testing.T) {
		// The sync record is at the head once the agents ACK; their status
		// reports may follow up to --status-progress-delay (10s) later
		// (docs/agent.md), well within fleetDeadline.
		pollUntil(t, fleetDeadline, "ListAgents shows every agent's applied revision and reported status at the head", func() (bool, string) {
			all := cp.listAgents(t)
			ok := len(all) == 3
			var state []string
			for _, a := range all {
				state = append(state, fmt.Sprintf("%s: sync applied %d, status applied %d", a.Id,
					a.GetSync().GetLastAppliedRevision(), a.GetStatus().GetAppliedRevision()))
				ok = ok && a.GetSync().GetLastAppliedRevision() == head && a.GetStatus().GetAppliedRevision() == head &&
					a.GetStatus().GetStateHash() == stateHash
			}
			return ok, strings.Join(state, "; ")
		})
		for _, id := range ids {
			a := cp.agentByID(t, id)
			st := a.GetStatus()
			if st.AgentVersion == "" || st.HostVersion == "" || st.ReportTime == nil || st.ReceiveTime == nil {
				t.Errorf("GetAgent %s status %v; want versions, report and receive times", id, st)
			}
			if statusCheck(st, "config_stream") == nil || statusCheck(st, "config_fresh") == nil {
				t.Errorf("GetAgent %s status checks %v; want config_stream and config_fresh", id, st.Checks)
			}
			if a.GetSync().GetLastSentRevision() != head || a.GetSync().GetEpoch() == "" {
				t.Errorf("GetAgent %s sync %v; want last sent %d and an epoch", id, a.GetSync(), head)
			}
		}
		if got := cp.agentIDsWhere(t, &adminv1.ListAgentsRequest{BehindRevision: head}); len(got) != 0 {
			t.Errorf("ListAgents behind_revision=%d: %v; want none", head, got)
		}
		if got := cp.agentIDsWhere(t, &adminv1.ListAgentsRequest{BehindRevision: head + 1}); !slices.Equal(got, sortedIDs) {
			t.Errorf("ListAgents behind_revision=%d: %v; want all of %v", head+1, got, sortedIDs)
		}
		// The first status of an agent may predate its stream; wait for the
		// fleet to settle into the one unhealthy agent.
		pollUntil(t, fleetDeadline, "unhealthy_only lists exactly agent-2", func() (bool, string) {
			got := cp.agentIDsWhere(t, &adminv1.ListAgentsRequest{UnhealthyOnly: true})
			return slices.Equal(got, []string{ids[2]}), fmt.Sprintf("%v (agent-2 is %s)", got, ids[2])
		})
		if c := statusCheck(cp.agentByID(t, ids[2]).GetStatus(), "render"); c == nil || c.Healthy {
			t.Errorf("agent-2's render check %v; want unhealthy (its reload command fails)", c)
		}
		for _, id := range ids[:2] {
			for _, c := range cp.agentByID(t, id).GetStatus().GetChecks() {
				if !c.Healthy {
					t.Errorf("agent %s check %s unhealthy: %s", id, c.Name, c.Detail)
				}
			}
		}
		if b, err := os.ReadFile(renderPath); err != nil || !strings.Contains(string(b), "8443") {
			t.Errorf("agent-2's rendered file: %q, %v; want the ingress document", b, err)
		}
	})

	step("a restarted agent resumes without a snapshot", func(t *testing.T) {
		before := cp.agentByID(t, ids[0])
		served := streamMetricsServed(t, cp)
		bytesBefore, _ := cpMetric(t, cp, snapshotBytesMetric)
		if code := agents[0].interrupt(t); code != 0 {
			t.Fatalf("agent-0 exit code %d after SIGINT; want 0", code)
		}
		restarted = time.Now()
		a := startAgent(t, cp, "agent-0 restarted", agentOpts{dataDir: agents[0].dataDir, owner: outer})
		agents[0] = a
		if got := waitLocalRevision(t, a, locals[0], head); got.StateHash != stateHash || len(got.Documents) != 3 {
			t.Fatalf("restarted agent-0 serves state %s with %d documents; want %s with 3", got.StateHash, len(got.Documents), stateHash)
		}
		// The control plane records the resumed agent as seen once its
		// catch-up is done (nothing to send here), so by then it has sent
		// whatever it was going to send on resuming; and the restarted
		// agent reports itself connected and fresh at the head.
		pollUntil(t, fleetDeadline, "the restarted agent-0 seen after catch-up and reporting itself connected", func() (bool, string) {
			ag := cp.agentByID(t, ids[0])
			st := ag.GetStatus()
			return ag.GetSync().GetLastSeenTime().AsTime().After(restarted) && st.GetReportTime().AsTime().After(restarted) &&
				statusCheck(st, "config_fresh").GetHealthy() && statusCheck(st, "config_stream").GetHealthy() &&
				st.GetAppliedRevision() == head, fmt.Sprintf("sync %v status %v", ag.GetSync(), st)
		})
		if strings.Contains(a.out.String(), snapshotLog) {
			t.Errorf("the restarted agent-0 took a snapshot:\n%s", a.out)
		}
		after := cp.agentByID(t, ids[0])
		if after.GetSync().GetEpoch() != before.GetSync().GetEpoch() || after.GetSync().GetLastAppliedRevision() != head {
			t.Errorf("after the restart sync %v; want epoch %s (the cache was kept) and applied %d", after.GetSync(), before.GetSync().GetEpoch(), head)
		}

		if !served {
			t.Fatalf("the admin /metrics has no %s", snapshotBytesMetric)
		}
		if bytesAfter, _ := cpMetric(t, cp, snapshotBytesMetric); bytesAfter != bytesBefore {
			t.Errorf("%s went from %v to %v across the restart; want no snapshot bytes", snapshotBytesMetric, bytesBefore, bytesAfter)
		}
	})

	step("the control plane records the resumed agent as seen", func(t *testing.T) {
		// The restarted agent-0 has streamed and had a heartbeat since it
		// restarted (previous step): it has been seen on a config stream.
		if seen := cp.agentByID(t, ids[0]).GetSync().GetLastSeenTime().AsTime(); !seen.After(restarted) {
			t.Errorf("agent-0 last seen %v; want after its restart at %v", seen, restarted)
		}
	})

	step("a restarted agent catches up by delta", func(t *testing.T) {
		served := streamMetricsServed(t, cp)
		bytesBefore, _ := cpMetric(t, cp, snapshotBytesMetric)
		if code := agents[0].interrupt(t); code != 0 {
			t.Fatalf("agent-0 exit code %d after SIGINT; want 0", code)
		}
		w.update(ingress.Id, map[string]any{"port": 9443.0})
		head = w.head
		for i, a := range agents[1:] {
			waitLocalRevision(t, a, locals[i+1], head)
		}
		a := startAgent(t, cp, "agent-0 restarted again", agentOpts{dataDir: agents[0].dataDir, owner: outer})
		agents[0] = a
		got := waitLocalRevision(t, a, locals[0], head)
		if d := localDoc(got, "cairn.dev/ingress", "main"); !contentIs(d, map[string]any{"port": 9443.0}) || d.Version != 3 {
			t.Errorf("agent-0 serves ingress %v; want version 3 with port 9443", d)
		}
		a.waitLog(t, "config delta applied", fleetDeadline)
		if !strings.Contains(a.out.String(), fmt.Sprintf(`"msg":"config delta applied","revision":%d,`, head)) || strings.Contains(a.out.String(), snapshotLog) {
			t.Errorf("agent-0 did not catch up by the delta of revision %d:\n%s", head, a.out)
		}
		pollUntil(t, fleetDeadline, "ListAgents shows every agent at the new head", func() (bool, string) {
			behind := cp.agentIDsWhere(t, &adminv1.ListAgentsRequest{BehindRevision: head})
			return len(behind) == 0, fmt.Sprintf("behind: %v", behind)
		})

		if !served {
			t.Fatalf("the admin /metrics has no %s", snapshotBytesMetric)
		}
		if bytesAfter, _ := cpMetric(t, cp, snapshotBytesMetric); bytesAfter != bytesBefore {
			t.Errorf("%s went from %v to %v catching up one delta; want no snapshot bytes", snapshotBytesMetric, bytesBefore, bytesAfter)
		}
	})

	for _, a := range agents {
		if code := a.interrupt(t); code != 0 {
			t.Errorf("%s exit code %d after SIGINT; want 0", a.name, code)
		}
	}
	cp.stop(t)
}

// TestFleetControlPlaneOutage stops the control plane under a running
// agent: the agent keeps serving its config, also after a restart of its
// own, and queues its reports and the metric points pushed to it on disk.
// When the control plane is back, every report arrives, each exactly
// once.
func TestFleetControlPlaneOutage(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, storetest.PostgresURL(t))
	w := newConfigWriter(t, cp)
	w.create("cairn.dev/ingress", "main", map[string]any{"port": 443.0})
	head := w.head
	dir := filepath.Join(t.TempDir(), "agent")
	args := []string{"--metrics-interval", "200ms", "--status-interval", "1s"}
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dir, token: cp.joinToken(t), pin: cp.pin, extraArgs: args})
	a.waitLog(t, "local API serving", fleetDeadline)
	id, _ := a.identityInfo(t)
	l := dialLocalAPI(t, dir)
	waitLocalRevision(t, a, l, head)
	pollUntil(t, fleetDeadline, "the agent reports its status at the head, connected", func() (bool, string) {
		st := cp.agentByID(t, id).GetStatus()
		return st.GetAppliedRevision() == head && statusCheck(st, "config_stream").GetHealthy(), fmt.Sprintf("%v", st)
	})

	serves := func(a *agentProc) {
		t.Helper()
		got := waitLocalRevision(t, a, l, head)
		if !contentIs(localDoc(got, "cairn.dev/ingress", "main"), map[string]any{"port": 443.0}) {
			t.Fatalf("%s serves %v with the control plane down; want the ingress document", a.name, got.Documents)
		}
	}
	// The agent moves pushed points from memory to its on-disk queue every
	// --metrics-interval; give it many intervals before stopping it (see
	// TestFleetPushedPointsSurviveStop for points pushed just before a stop).
	settle := func() { time.Sleep(2 * time.Second) }

	const n = 50
	down := time.Now()
	cp.stop(t)
	serves(a)
	pushPoints(t, l, "e2e_pushed", 0, n)
	settle()
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}
	agentRestart := time.Now()
	a = startAgent(t, cp, "agent restarted", agentOpts{dataDir: dir, extraArgs: args})
	a.waitLog(t, "local API serving", fleetDeadline)
	serves(a)
	pushPoints(t, l, "e2e_pushed", n, 2*n)
	settle()
	up := time.Now()
	restartControlPlane(t, cp)

	var points []*adminv1.AgentMetricPoint
	pollUntil(t, fleetDeadline, fmt.Sprintf("all %d pushed points delivered", 2*n), func() (bool, string) {
		if !a.running() {
			t.Fatalf("agent exited (%v):\n%s", a.err, a.out)
		}
		points = cp.metricPoints(t, id, "e2e_pushed")
		if len(points) > 2*n {
			t.Fatalf("%d points of e2e_pushed; want %d: %v", len(points), 2*n, exactlyOnce(points, 2*n))
		}
		return len(points) == 2*n, fmt.Sprintf("%d points", len(points))
	})
	if err := exactlyOnce(points, 2*n); err != nil {
		t.Fatalf("pushed points: %v", err)
	}
	for _, p := range points {
		if p.Source != "e2e" || fmt.Sprint(p.Value) != p.Labels["i"] || p.Time.AsTime().Before(down) || p.Time.AsTime().After(up) {
			t.Errorf("point %v; want source e2e, its label as value, pushed during the outage", p)
		}
	}

	pollUntil(t, fleetDeadline, "a status reported after the outage, connected and at the head", func() (bool, string) {
		st := cp.agentByID(t, id).GetStatus()
		return st.GetReportTime().AsTime().After(up) && st.GetAppliedRevision() == head && statusCheck(st, "config_stream").GetHealthy(),
			fmt.Sprintf("%v", st)
	})
	// The agent's own samples made while the control plane was down, by
	// both agent processes, were queued and delivered: the stream was
	// disconnected then.
	connected := cp.metricPoints(t, id, "cairn_agent_stream_connected")
	var before, after int
	for _, p := range connected {
		switch tm := p.Time.AsTime(); {
		case tm.After(down) && tm.Before(agentRestart) && p.Value == 0:
			before++
		case tm.After(agentRestart) && tm.Before(up) && p.Value == 0:
			after++
		}
	}
	if before == 0 || after == 0 {
		t.Errorf("disconnected samples made during the outage: %d before and %d after the agent's restart; want some of each", before, after)
	}

	// More deliveries do not bring anything twice.
	checked := time.Now()
	pollUntil(t, fleetDeadline, "deliveries go on for a few seconds", func() (bool, string) {
		st := cp.agentByID(t, id).GetStatus()
		return st.GetReceiveTime().AsTime().After(checked.Add(3 * time.Second)), fmt.Sprintf("status received %v", st.GetReceiveTime().AsTime())
	})
	if err := exactlyOnce(cp.metricPoints(t, id, "e2e_pushed"), 2*n); err != nil {
		t.Errorf("pushed points after further deliveries: %v", err)
	}
	// Each of the agent's own samples is stored once too: one point per
	// metrics batch, so no two share a time.
	times := map[time.Time]int{}
	for _, p := range cp.metricPoints(t, id, "cairn_agent_stream_connected") {
		if times[p.Time.AsTime()]++; times[p.Time.AsTime()] == 2 {
			t.Errorf("cairn_agent_stream_connected at %v stored more than once", p.Time.AsTime())
		}
	}

	if code := a.interrupt(t); code != 0 {
		t.Errorf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)
}

// TestFleetPushedPointsSurviveStop pushes metric points to an agent and
// stops it before its next metrics batch: the points must still reach the
// control plane after it starts again.
func TestFleetPushedPointsSurviveStop(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "")
	dir := filepath.Join(t.TempDir(), "agent")
	// No metrics batch is due while the test runs.
	args := []string{"--metrics-interval", "1h", "--status-interval", "1s"}
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dir, token: cp.joinToken(t), pin: cp.pin, extraArgs: args})
	a.waitLog(t, "local API serving", fleetDeadline)
	id, _ := a.identityInfo(t)
	l := dialLocalAPI(t, dir)
	const n = 20
	pushPoints(t, l, "e2e_pushed", 0, n)
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}
	restarted := time.Now()
	a = startAgent(t, cp, "agent restarted", agentOpts{dataDir: dir, extraArgs: args})
	// Reports are delivered in queue order, so once a status the restarted
	// agent made has arrived, everything queued before the stop has too.
	pollUntil(t, fleetDeadline, "a status from the restarted agent", func() (bool, string) {
		st := cp.agentByID(t, id).GetStatus()
		return st.GetReportTime().AsTime().After(restarted), fmt.Sprintf("%v", st)
	})
	points := cp.metricPoints(t, id, "e2e_pushed")
	if code := a.interrupt(t); code != 0 {
		t.Errorf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)
	if err := exactlyOnce(points, n); err != nil {
		t.Errorf("points pushed before the stop: %v", err)
	}
}

// TestFleetCompactedHistory runs the control plane with a revision log of
// one entry: an agent that was stopped while the data plane changed,
// including the deletion of a document it holds, gets a reset and a
// snapshot instead of deltas, and ends at the head without that document.
func TestFleetCompactedHistory(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "", "--history-revisions", "1", "--maintain-interval", "200ms")
	w := newConfigWriter(t, cp)
	keep := w.create("cairn.dev/ingress", "main", map[string]any{"port": 443.0})
	gone := w.create("cairn.dev/db", "settings", map[string]any{"pool": 20.0})
	w.create("cairn.dev/motd", "hello", map[string]any{"text": "welcome"})
	dir := filepath.Join(t.TempDir(), "agent")
	a := startAgent(t, cp, "agent", agentOpts{dataDir: dir, token: cp.joinToken(t), pin: cp.pin})
	a.waitLog(t, "local API serving", fleetDeadline)
	id, _ := a.identityInfo(t)
	l := dialLocalAPI(t, dir)
	if got := waitLocalRevision(t, a, l, w.head); localDoc(got, "cairn.dev/db", "settings") == nil {
		t.Fatalf("agent serves %v; want the db settings", got.Documents)
	}
	pollUntil(t, fleetDeadline, "ListAgents shows the agent at the head", func() (bool, string) {
		s := cp.agentByID(t, id).GetSync()
		return s.GetLastAppliedRevision() == w.head, fmt.Sprintf("%v", s)
	})
	served := streamMetricsServed(t, cp)
	bytesBefore, _ := cpMetric(t, cp, snapshotBytesMetric)
	if code := a.interrupt(t); code != 0 {
		t.Fatalf("agent exit code %d after SIGINT; want 0", code)
	}

	w.update(keep.Id, map[string]any{"port": 8443.0})
	w.delete(gone.Id)
	w.create("cairn.dev/features", "flags", map[string]any{"beta": true})
	// Revisions are gapless from 1, so once head-1 entries are compacted
	// the log holds the newest revision only.
	pollUntil(t, fleetDeadline, "the revision log compacted to its newest entry", func() (bool, string) {
		n := compactedEntries(t, cp)
		return n >= w.head-1, fmt.Sprintf("%d of %d revisions compacted", n, w.head)
	})

	a = startAgent(t, cp, "agent restarted", agentOpts{dataDir: dir})
	got := waitLocalRevision(t, a, l, w.head)
	if d := localDoc(got, "cairn.dev/db", "settings"); d != nil {
		t.Errorf("the restarted agent still serves the deleted document %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.config.GetDocument(ctx, &agentv1.GetDocumentRequest{ScopeType: "data_plane", ScopeId: cp.dataPlaneID,
		Kind: "cairn.dev/db", Name: "settings"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDocument of the deleted document: %v; want NotFound", err)
	}
	if d := localDoc(got, "cairn.dev/ingress", "main"); !contentIs(d, map[string]any{"port": 8443.0}) || d.Version != 2 {
		t.Errorf("agent serves ingress %v; want version 2 with port 8443", d)
	}
	if d := localDoc(got, "cairn.dev/features", "flags"); !contentIs(d, map[string]any{"beta": true}) || len(got.Documents) != 3 {
		t.Errorf("agent serves %v; want ingress, motd and the new flags", got.Documents)
	}
	a.waitLog(t, "config replaced with snapshot", fleetDeadline)
	pollUntil(t, fleetDeadline, "ListAgents shows the agent at the new head", func() (bool, string) {
		s := cp.agentByID(t, id).GetSync()
		return s.GetLastAppliedRevision() == w.head, fmt.Sprintf("%v", s)
	})
	bytesAfter, _ := cpMetric(t, cp, snapshotBytesMetric)
	if code := a.interrupt(t); code != 0 {
		t.Errorf("agent exit code %d after SIGINT; want 0", code)
	}
	cp.stop(t)

	if !served {
		t.Fatalf("the admin /metrics has no %s", snapshotBytesMetric)
	}
	if bytesAfter <= bytesBefore {
		t.Errorf("%s went from %v to %v; want snapshot bytes for the restarted agent", snapshotBytesMetric, bytesBefore, bytesAfter)
	}
}

// compactedEntries sums the revision log entries the control plane says
// it compacted, from its log so far.
func compactedEntries(t *testing.T, cp *agentCP) int64 {
	t.Helper()
	var n int64
	for _, line := range strings.Split(cp.p.stderr.String(), "\n") {
		if !strings.Contains(line, `"msg":"compacted revision log"`) {
			continue
		}
		var rec struct {
			Entries int64 `json:"entries"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			continue // a line still being written
		}
		n += rec.Entries
	}
	return n
}
