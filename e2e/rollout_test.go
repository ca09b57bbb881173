package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// TestRolloutSurvivesReplicaKill runs a rollout on two control-plane
// replicas sharing one PostgreSQL database, with a real agent whose
// upgrade hook upgrades (simulates) each cluster and reports its version.
// Replica A holds the rollout engine's lease; it is killed with SIGKILL in
// the middle of the first wave. Replica B takes the lease over and
// finishes the rollout: every cluster ends at the target, dispatched
// exactly once (the audit log and the agent's hook log agree), none
// skipped.
func TestRolloutSurvivesReplicaKill(t *testing.T) {
	rs := newReplicas(t, "--rollout-tick", "200ms", "--rollout-lease-ttl", "5s")
	tokenFile := rs.tokenFile
	a := rs.start("a")
	// A takes the engine's lease on its first tick; B starts after that.
	pollUntil(t, time.Minute, "replica A holds the rollout lease", func() (bool, string) {
		v := metricAt(t, "http://"+a.admin, "cairn_rollout_engine_lease_held")
		return v == 1, fmt.Sprint(v)
	})
	b := rs.start("b")

	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	bearer := withToken(strings.TrimSpace(string(tok)))
	baseA, baseB := "http://"+a.admin, "http://"+b.admin
	ctx := context.Background()
	tn, err := adminv1connect.NewTenantServiceClient(http.DefaultClient, baseA, bearer).CreateTenant(ctx,
		connect.NewRequest(&adminv1.CreateTenantRequest{Tenant: &adminv1.Tenant{Name: "acme"}}))
	if err != nil {
		t.Fatal(err)
	}
	dp, err := adminv1connect.NewDataPlaneServiceClient(http.DefaultClient, baseA, bearer).CreateDataPlane(ctx,
		connect.NewRequest(&adminv1.CreateDataPlaneRequest{DataPlane: &adminv1.DataPlane{TenantId: tn.Msg.Tenant.Id, Name: "edge",
			Region: "eu-west-1", Cloud: adminv1.Cloud_CLOUD_AWS}}))
	if err != nil {
		t.Fatal(err)
	}
	dpID := dp.Msg.DataPlane.Id
	releases := adminv1connect.NewReleaseServiceClient(http.DefaultClient, baseA, bearer)
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
			Product: "kafka", Version: v, State: adminv1.ReleaseState_RELEASE_STATE_STABLE}})); err != nil {
			t.Fatal(err)
		}
	}
	clustersA := adminv1connect.NewClusterServiceClient(http.DefaultClient, baseA, bearer)
	const n = 6
	names := map[string]string{}
	for i := range n {
		c, err := clustersA.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: dpID, Name: fmt.Sprintf("kafka-%d", i), Product: "kafka", DesiredVersion: "1.0.0", HostVersion: "3.5.0"}}))
		if err != nil {
			t.Fatal(err)
		}
		names[c.Msg.Cluster.Id] = c.Msg.Cluster.Name
	}

	// The agent streams from B, so A's death does not cut it off; its hook
	// takes a moment per upgrade and logs each one.
	agentsA := adminv1connect.NewAgentServiceClient(http.DefaultClient, baseA, bearer)
	tb, err := agentsA.GetTrustBundle(ctx, connect.NewRequest(&adminv1.GetTrustBundleRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	jt, err := agentsA.CreateJoinToken(ctx, connect.NewRequest(&adminv1.CreateJoinTokenRequest{DataPlaneId: dpID}))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hookLog := filepath.Join(dir, "upgrades.log")
	hook := filepath.Join(dir, "upgrade.sh")
	if err := os.WriteFile(hook, []byte(fmt.Sprintf("#!/bin/sh\nsleep 1\necho \"$CAIRN_CLUSTER_ID $CAIRN_CURRENT_VERSION->$CAIRN_TARGET_VERSION\" >> %s\n", hookLog)), 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir, err := os.MkdirTemp("", "roll") // short: the agent's socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	cpB := &agentCP{agentAddr: b.agentAddr, dataPlaneID: dpID, pin: tb.Msg.Pins[0], tokens: []string{jt.Msg.JoinToken}}
	startAgent(t, cpB, "agent", agentOpts{dataDir: dataDir, token: jt.Msg.JoinToken, pin: cpB.pin,
		extraArgs: []string{"--upgrade-hook", hook, "--status-interval", "1s"}})

	rolloutsA := adminv1connect.NewRolloutServiceClient(http.DefaultClient, baseA, bearer)
	rolloutsB := adminv1connect.NewRolloutServiceClient(http.DefaultClient, baseB, bearer)
	started, err := rolloutsA.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: &adminv1.RolloutSpec{
		Product: "kafka", TargetVersion: "1.1.0",
		Shape:  &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{BatchSize: 2}}},
		Policy: &adminv1.RolloutPolicy{Concurrency: 1, VerifyTimeout: durationpb.New(3 * time.Minute)},
	}}))
	if err != nil {
		t.Fatal(err)
	}
	id := started.Msg.Rollout.Id
	get := func(c adminv1connect.RolloutServiceClient) *adminv1.Rollout {
		r, err := c.GetRollout(ctx, connect.NewRequest(&adminv1.GetRolloutRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Rollout
	}

	// Mid-wave: the first cluster of wave 0 has succeeded, the second is on
	// its way. Kill A without a chance to give up its lease.
	pollUntil(t, 2*time.Minute, "the first cluster upgraded", func() (bool, string) {
		r := get(rolloutsA)
		return r.Counts.Succeeded >= 1, fmt.Sprintf("%v", r.Counts)
	})
	if err := a.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-a.p.done
	a.p.done <- nil
	killed := get(rolloutsB)
	t.Logf("killed replica A at wave %d, counts %v", killed.CurrentWave, killed.Counts)
	if killed.State != adminv1.RolloutState_ROLLOUT_STATE_RUNNING || killed.Counts.Succeeded == n {
		t.Fatalf("rollout %v %v when A died; want it running, not done", killed.State, killed.Counts)
	}

	pollUntil(t, 3*time.Minute, "replica B finished the rollout", func() (bool, string) {
		r := get(rolloutsB)
		return r.State == adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, fmt.Sprintf("%v wave %d %v %q", r.State, r.CurrentWave, r.Counts, r.Reason)
	})
	done := get(rolloutsB)
	if c := done.Counts; c.Succeeded != n || c.Failed+c.Unreachable+c.Skipped+c.Excluded != 0 {
		t.Fatalf("counts %v; want all %d succeeded", c, n)
	}
	if v := metricAt(t, baseB, "cairn_rollout_engine_lease_held"); v != 1 {
		t.Errorf("replica B's lease gauge %v; want 1", v)
	}

	// Exactly one dispatch per cluster, by the audit log, and one upgrade
	// per cluster, by the hook's own log.
	audit := adminv1connect.NewAuditServiceClient(http.DefaultClient, baseB, bearer)
	dispatched := map[string]int{}
	actors := map[string]bool{}
	for page := ""; ; {
		resp, err := audit.ListAuditEvents(ctx, connect.NewRequest(&adminv1.ListAuditEventsRequest{ResourceId: id, PageSize: 100, PageToken: page}))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.Msg.Events {
			if e.Action == "rollout.cluster.dispatch" {
				cluster, _, _ := strings.Cut(strings.TrimPrefix(e.Detail, "cluster "), ":")
				dispatched[cluster]++
				actors[e.Actor] = true
			}
		}
		if page = resp.Msg.NextPageToken; page == "" {
			break
		}
	}
	if len(dispatched) != n {
		t.Errorf("%d clusters dispatched; want %d", len(dispatched), n)
	}
	for c, k := range dispatched {
		if k != 1 {
			t.Errorf("cluster %s dispatched %d times", names[c], k)
		}
	}
	// B's engine (its actor names its process) finished the rollout.
	byB := false
	for a := range actors {
		byB = byB || strings.Contains(a, fmt.Sprintf("-%d-", b.p.cmd.Process.Pid))
	}
	if !byB {
		t.Errorf("dispatches by %v; none by replica B (pid %d)", actors, b.p.cmd.Process.Pid)
	}
	t.Logf("dispatched by %v", actors)
	hooked := map[string]int{}
	raw, err := os.ReadFile(hookLog)
	if err != nil {
		t.Fatal(err)
	}
	// The agent also installs each cluster's first version (its document
	// was written when the cluster was created): those lines end in
	// ->1.0.0. Each cluster reaches 1.1.0 once.
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		cluster, change, _ := strings.Cut(line, " ")
		if strings.HasSuffix(change, "->1.1.0") {
			hooked[cluster]++
		}
	}
	for c := range names {
		if hooked[c] != 1 {
			t.Errorf("cluster %s upgraded %d times by the hook; want 1", names[c], hooked[c])
		}
	}
	for c, name := range names {
		cl, err := adminv1connect.NewClusterServiceClient(http.DefaultClient, baseB, bearer).GetCluster(ctx,
			connect.NewRequest(&adminv1.GetClusterRequest{Id: c}))
		if err != nil {
			t.Fatal(err)
		}
		if cl.Msg.Cluster.DesiredVersion != "1.1.0" || cl.Msg.Cluster.ReportedVersion != "1.1.0" {
			t.Errorf("%s desired %s reported %s; want 1.1.0", name, cl.Msg.Cluster.DesiredVersion, cl.Msg.Cluster.ReportedVersion)
		}
	}
}

// metricAt reads one unlabelled metric from a control plane's /metrics; -1
// when it is not there.
func metricAt(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return -1
}
