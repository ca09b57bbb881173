package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// cairnctlRunner runs the real cairnctl against one control plane.
type cairnctlRunner struct {
	t                 *testing.T
	server, tokenFile string
}

// run runs cairnctl with args, fails the test unless it exits with want,
// and returns its standard output and error. A command that does not end
// within the fleet deadline is killed (a watch that never ends, say).
func (r cairnctlRunner) run(want int, args ...string) (stdout, stderr string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*fleetDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binaries(r.t), "cairnctl"),
		append([]string{"--server", r.server, "--token-file", r.tokenFile}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	if ctx.Err() != nil {
		r.t.Fatalf("cairnctl %s: still running after %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), 2*fleetDeadline, &out, &errOut)
	}
	if code != want {
		r.t.Fatalf("cairnctl %s: exit %d; want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, &out, &errOut)
	}
	return out.String(), errOut.String()
}

// json runs cairnctl --json with args and decodes its output into m.
func (r cairnctlRunner) json(m proto.Message, args ...string) {
	r.t.Helper()
	out, _ := r.run(0, append([]string{"--json"}, args...)...)
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		r.t.Fatalf("cairnctl --json %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (r cairnctlRunner) rollout(id string) *adminv1.Rollout {
	r.t.Helper()
	var resp adminv1.GetRolloutResponse
	r.json(&resp, "rollout", "status", id)
	return resp.Rollout
}

func mustContain(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: no %q in:\n%s", what, w, got)
		}
	}
}

// TestCairnctlRollout drives rollouts with the real cairnctl against a real
// control plane that has no agent: a dispatched cluster stays DISPATCHED
// (until its health gate's deadline), which is as far as this test needs
// the engine to go. Every wait polls with a generous deadline.
func TestCairnctlRollout(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "", "--rollout-tick", "200ms")
	ac := admin(t, cp)
	ctx := context.Background()
	ctl := cairnctlRunner{t: t, server: "http://" + cpFlag(t, cp, "--admin-addr"), tokenFile: cpFlag(t, cp, "--bootstrap-token-file")}

	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := ac.releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
			Product: "kafka", Version: v, State: adminv1.ReleaseState_RELEASE_STATE_STABLE}})); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]string{}
	for name, env := range map[string]string{"k1": "prod", "k2": "prod", "k3": "prod", "k-dev": "dev", "k-canary": "canary"} {
		resp, err := ac.clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: cp.dataPlaneID, Name: name, Product: "kafka", DesiredVersion: "1.0.0", Labels: map[string]string{"env": env}}}))
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = resp.Msg.Cluster.Id
	}
	plan := []string{"--product", "kafka", "--version", "1.1.0", "--query", "env=prod", "--shape", "linear", "--batch-size", "1", "--seed", "e2e"}

	// clusters list --selector is --query.
	out, _ := ctl.run(0, "clusters", "list", "--selector", "env=prod")
	mustContain(t, "clusters list --selector", out, "k1", "k2", "k3")
	if strings.Contains(out, "k-dev") {
		t.Fatalf("clusters list --selector env=prod lists k-dev:\n%s", out)
	}

	// Preview: three waves of one; then with an exclusion on k3.
	out, _ = ctl.run(0, append([]string{"rollout", "preview"}, plan...)...)
	mustContain(t, "rollout preview", out, "3 clusters in 3 waves", "WAVE  SIZE  CONCURRENCY  BUDGET  SOAK  SENSITIVE",
		"Skipped (incompatible or already on the target): none", "Excluded (planned; an exclusion covers them now): none",
		"Busy (another rollout holds them; not planned): none")
	var preview adminv1.PreviewRolloutResponse
	ctl.json(&preview, append([]string{"rollout", "preview"}, plan...)...)
	if len(preview.Waves) != 3 || len(preview.Clusters) != 3 {
		t.Fatalf("preview --json: %d waves, %d clusters; want 3 and 3", len(preview.Waves), len(preview.Clusters))
	}

	var excl adminv1.CreateExclusionResponse
	ctl.json(&excl, "exclusions", "create", "--scope", "cluster", "--id", ids["k3"], "--reason", "customer freeze", "--until", "72h")
	exclID := excl.Exclusion.GetId()
	if d := time.Until(excl.Exclusion.GetExpireTime().AsTime()); d < 71*time.Hour || d > 73*time.Hour {
		t.Fatalf("exclusion expires in %v; want about 72h", d)
	}
	out, _ = ctl.run(0, "exclusions", "list")
	mustContain(t, "exclusions list", out, "ID  ", exclID, "cluster", ids["k3"], "customer freeze")
	out, _ = ctl.run(0, append([]string{"rollout", "preview"}, plan...)...)
	mustContain(t, "rollout preview with an exclusion", out, "Excluded (planned; an exclusion covers them now): 1", "k3", "customer freeze")
	out, _ = ctl.run(0, "exclusions", "delete", exclID)
	mustContain(t, "exclusions delete", out, "exclusion "+exclID+" deleted")
	if out, _ = ctl.run(0, "exclusions", "list"); strings.Contains(out, exclID) {
		t.Fatalf("exclusions list after delete:\n%s", out)
	}
	ctl.run(2, "exclusions", "create", "--scope", "cluster", "--id", ids["k3"], "--reason", "x", "--until", "next week")
	ctl.run(2, "exclusions", "create", "--scope", "region", "--id", "eu", "--reason", "x", "--until", "1h")
	ctl.run(2, "rollout", "start", "--product", "kafka", "--version", "1.1.0", "--shape", "linear")

	// Start (text), on the dev cluster alone, then the prod rollout (JSON).
	out, _ = ctl.run(0, "rollout", "start", "--product", "kafka", "--version", "1.1.0", "--query", "env=dev", "--shape", "s-curve")
	mustContain(t, "rollout start", out, "started: kafka 1.1.0, clusters matching env=dev; 1 cluster in 1 wave")
	devID := strings.TrimSuffix(strings.Fields(out)[1], ":")
	var started adminv1.StartRolloutResponse
	ctl.json(&started, append([]string{"rollout", "start"}, plan...)...)
	id := started.Rollout.GetId()
	if id == "" || len(started.Rollout.Waves) != 3 {
		t.Fatalf("rollout start --json: %v", &started)
	}
	// The query selects clusters the first rollout holds: nothing to do.
	_, errOut := ctl.run(1, append([]string{"rollout", "start"}, plan...)...)
	mustContain(t, "a second rollout over busy clusters", errOut, "failed_precondition")

	// The engine dispatches wave 1; with no agent, its cluster stays there.
	pollUntil(t, fleetDeadline, "wave 1 dispatched", func() (bool, string) {
		r := ctl.rollout(id)
		return r.Waves[0].Counts.GetDispatched() == 1, fmt.Sprint(r.State, r.Waves[0].Counts)
	})
	out, _ = ctl.run(0, "rollout", "status", id)
	mustContain(t, "rollout status", out, "Rollout:   "+id, "Target:    kafka 1.1.0, clusters matching env=prod", "State:     running",
		"Progress:  [..........] 0/3 clusters done, wave 1 of 3", "1 in flight, 2 pending",
		"WAVE  PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING")
	out, _ = ctl.run(0, "rollout", "clusters", id, "--state", "dispatched")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], " dispatched ") ||
		!strings.Contains(lines[1], "1.1.0") || !strings.Contains(lines[1], "1.0.0") {
		t.Fatalf("rollout clusters --state dispatched:\n%s", out)
	}
	out, _ = ctl.run(0, "rollout", "clusters", id, "--wave", "2")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], " pending ") {
		t.Fatalf("rollout clusters --wave 2:\n%s", out)
	}

	// Pause, resume, the incident button, edit.
	ctl.run(2, "rollout", "pause", id)
	out, _ = ctl.run(0, "rollout", "pause", id, "--reason", "looks odd")
	mustContain(t, "rollout pause", out, "rollout "+id+" paused: looks odd")
	if r := ctl.rollout(id); r.State != adminv1.RolloutState_ROLLOUT_STATE_PAUSED || r.Reason != "looks odd" {
		t.Fatalf("after pause: %v %q; want PAUSED, looks odd", r.State, r.Reason)
	}
	out, _ = ctl.run(0, "rollout", "list", "--state", "paused")
	mustContain(t, "rollout list --state paused", out, id, "looks odd")
	if strings.Contains(out, devID) {
		t.Fatalf("rollout list --state paused lists the running %s:\n%s", devID, out)
	}
	out, _ = ctl.run(0, "rollout", "resume", id)
	mustContain(t, "rollout resume", out, "rollout "+id+" running")
	_, errOut = ctl.run(1, "rollout", "resume", id)
	mustContain(t, "resuming a running rollout", errOut, "failed_precondition")
	ctl.run(0, "rollout", "cancel", devID)
	out, _ = ctl.run(0, "rollout", "pause-all", "--reason", "incident 42")
	mustContain(t, "rollout pause-all", out, "paused 1 rollout: "+id)
	ctl.run(0, "rollout", "resume", id)
	out, _ = ctl.run(0, "rollout", "edit", id, "--concurrency", "2", "--failure-budget", "1")
	mustContain(t, "rollout edit", out, "rollout "+id+" updated", "WAVE  SIZE  CONCURRENCY  BUDGET")

	// Expedite a pending cluster into the wave that runs.
	var pending adminv1.RolloutCluster
	out, _ = ctl.run(0, "--json", "rollout", "clusters", id, "--state", "pending")
	if err := protojson.Unmarshal([]byte(strings.Split(strings.TrimSpace(out), "\n")[0]), &pending); err != nil {
		t.Fatalf("rollout clusters --json: %v\n%s", err, out)
	}
	out, _ = ctl.run(0, "rollout", "expedite", id, pending.ClusterId)
	mustContain(t, "rollout expedite", out, "cluster "+pending.Name+" ("+pending.ClusterId+") expedited: wave 1")

	// Cancel: what was not dispatched is skipped; a watch ends with exit 1.
	out, _ = ctl.run(0, "rollout", "cancel", id, "--reason", "enough")
	mustContain(t, "rollout cancel", out, "rollout "+id+" cancelled: enough")
	pollUntil(t, fleetDeadline, "undispatched clusters skipped", func() (bool, string) {
		r := ctl.rollout(id)
		return r.State == adminv1.RolloutState_ROLLOUT_STATE_CANCELLED && r.Counts.GetPending()+r.Counts.GetEligible() == 0,
			fmt.Sprint(r.State, r.Counts)
	})
	out, errOut = ctl.run(1, "rollout", "status", id, "--watch", "--interval", "200ms")
	mustContain(t, "rollout status --watch of a cancelled rollout", out, "State:     cancelled: enough")
	mustContain(t, "rollout status --watch of a cancelled rollout", errOut, "rollout "+id+" was cancelled: enough")
	if strings.Contains(out, "\x1b") {
		t.Fatalf("ANSI escapes in a watch that is not on a terminal:\n%q", out)
	}
	_, errOut = ctl.run(1, "rollout", "cancel", id)
	mustContain(t, "cancelling a cancelled rollout", errOut, "failed_precondition")

	// A rollout that completes: the canary's agent never reports, so its
	// health gate fails it as unreachable, within a budget that allows it.
	// The watch ends with exit 0; then roll it back.
	var canary adminv1.StartRolloutResponse
	ctl.json(&canary, "rollout", "start", "--product", "kafka", "--version", "1.1.0", "--query", "env=canary", "--shape", "linear",
		"--batch-size", "1", "--verify-timeout", "1s", "--failure-budget", "100%")
	out, _ = ctl.run(0, "rollout", "status", canary.Rollout.GetId(), "--watch", "--interval", "200ms")
	mustContain(t, "rollout status --watch until completed", out, "State:     completed", "1 unreachable", "every wave done")
	out, _ = ctl.run(0, "rollout", "clusters", canary.Rollout.GetId())
	mustContain(t, "rollout clusters of the canary", out, "k-canary", "failed (unreachable)")
	out, _ = ctl.run(0, "rollout", "rollback", canary.Rollout.GetId(), "--reason", "bad canary")
	mustContain(t, "rollout rollback", out, "rolls back "+canary.Rollout.GetId()+"; 1 cluster in 1 wave to their previous versions")
	back := strings.Fields(out)[1]
	if r := ctl.rollout(back); r.RollbackOf != canary.Rollout.GetId() || r.Spec.GetTargetVersion() != "1.0.0" {
		t.Fatalf("the rollback: rollback_of %q, target %q; want %s and 1.0.0", r.RollbackOf, r.Spec.GetTargetVersion(), canary.Rollout.GetId())
	}

	out, _ = ctl.run(0, "rollout", "list")
	mustContain(t, "rollout list", out, "ID  ", id, devID, canary.Rollout.GetId(), back)
	ctl.run(1, "rollout", "status", "no-such-rollout")
}
