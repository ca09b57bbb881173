package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestAgentUpgradesClusters writes a cluster's desired version into its
// config (what a rollout's dispatch does): the agent runs its upgrade hook
// (a real script) for that cluster, and the control plane learns the
// version it reached from the agent's status; a failing upgrade is
// reported as unhealthy and leaves the reported version alone.
func TestAgentUpgradesClusters(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "")
	ac := admin(t, cp)
	ctx := context.Background()
	cl, err := ac.clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
		DataPlaneId: cp.dataPlaneID, Name: "kafka-1"}}))
	if err != nil {
		t.Fatal(err)
	}
	clusterID := cl.Msg.Cluster.Id
	dir := t.TempDir()
	log := filepath.Join(dir, "upgrades.log")
	hook := filepath.Join(dir, "upgrade.sh")
	script := fmt.Sprintf("#!/bin/sh\necho \"$CAIRN_CLUSTER_ID $CAIRN_CURRENT_VERSION->$CAIRN_TARGET_VERSION\" >> %s\n"+
		"[ \"$CAIRN_TARGET_VERSION\" != 9.9.9 ] || { echo 'no such release'; exit 1; }\n", log)
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cp, "agent", agentOpts{dataDir: filepath.Join(dir, "agent"), token: cp.joinToken(t), pin: cp.pin,
		extraArgs: []string{"--upgrade-hook", hook, "--status-interval", "1s"}})
	id, _ := func() (string, string) { a.waitLog(t, "local API serving", fleetDeadline); return a.identityInfo(t) }()

	setDesired := func(version, etag string) string {
		t.Helper()
		content, _ := structpb.NewStruct(map[string]any{"version": version})
		if etag == "" {
			d, err := ac.configs.CreateConfigDocument(ctx, connect.NewRequest(&adminv1.CreateConfigDocumentRequest{Document: &adminv1.ConfigDocument{
				Scope: &adminv1.ConfigScope{Target: &adminv1.ConfigScope_ClusterId{ClusterId: clusterID}},
				Kind:  "cairn.dev/desired-version", Name: "product", Content: &adminv1.ConfigDocument_Structured{Structured: content},
			}}))
			if err != nil {
				t.Fatal(err)
			}
			return d.Msg.Document.Id
		}
		if _, err := ac.configs.UpdateConfigDocument(ctx, connect.NewRequest(&adminv1.UpdateConfigDocumentRequest{
			Id: etag, Content: &adminv1.UpdateConfigDocumentRequest_Structured{Structured: content}})); err != nil {
			t.Fatal(err)
		}
		return etag
	}
	docID := setDesired("1.3.0", "")
	pollUntil(t, fleetDeadline, "the cluster reported at 1.3.0", func() (bool, string) {
		c, err := ac.clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: clusterID}))
		if err != nil {
			return false, err.Error()
		}
		return c.Msg.Cluster.ReportedVersion == "1.3.0", fmt.Sprintf("reported %q", c.Msg.Cluster.ReportedVersion)
	})

	// A target the hook cannot reach: reported unhealthy, version kept.
	setDesired("9.9.9", docID)
	pollUntil(t, fleetDeadline, "the failed upgrade in the cluster's agent report", func() (bool, string) {
		c, err := ac.clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: clusterID}))
		if err != nil {
			return false, err.Error()
		}
		r := c.Msg.Cluster.AgentReport
		return r.GetDesiredVersion() == "9.9.9" && !r.GetHealthy() && strings.Contains(r.GetDetail(), "no such release") &&
			r.GetAgentId() == id && r.GetVersion() == "1.3.0", fmt.Sprintf("%v", r)
	})
	c, err := ac.clusters.GetCluster(ctx, connect.NewRequest(&adminv1.GetClusterRequest{Id: clusterID}))
	if err != nil || c.Msg.Cluster.ReportedVersion != "1.3.0" {
		t.Fatalf("after a failed upgrade the cluster reports %q (%v); want 1.3.0 still", c.Msg.Cluster.GetReportedVersion(), err)
	}
	b, _ := os.ReadFile(log)
	if !strings.Contains(string(b), clusterID+" ->1.3.0") {
		t.Fatalf("hook log %q; want the first upgrade from no version to 1.3.0", b)
	}
}
