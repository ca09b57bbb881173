package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// TestCairnctl runs the real cairnctl against a real control plane: a
// release catalog, clusters selected by an inventory query as a table and
// as JSON, the version summary, and refusals with their exit codes.
func TestCairnctl(t *testing.T) {
	t.Parallel()
	cp := startAgentCP(t, "")
	ac := admin(t, cp)
	ctx := context.Background()
	args := cp.p.cmd.Args
	flagValue := func(name string) string { return args[slices.Index(args, name)+1] }
	server, tokenFile := "http://"+flagValue("--admin-addr"), flagValue("--bootstrap-token-file")
	for _, v := range []string{"1.2.0", "1.10.0"} {
		if _, err := ac.releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
			Product: "kafka", Version: v, State: adminv1.ReleaseState_RELEASE_STATE_STABLE,
			Constraints: []*adminv1.Constraint{{Component: "host", Range: ">=3.0.0"}}}})); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string]string{"k-old": "1.2.0", "k-new": "1.10.0"} {
		if _, err := ac.clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: cp.dataPlaneID, Name: name, Product: "kafka", DesiredVersion: v, Labels: map[string]string{"env": "prod"}}})); err != nil {
			t.Fatal(err)
		}
	}
	run := func(want int, a ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(binaries(t), "cairnctl"), append([]string{"--server", server, "--token-file", tokenFile}, a...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Fatalf("cairnctl %s: exit %d; want %d\n%s", strings.Join(a, " "), code, want, out)
		}
		return string(out)
	}

	table := run(0, "clusters", "list", "--query", "product=kafka,desired_version>=1.3.0,env=prod")
	if !strings.Contains(table, "k-new") || strings.Contains(table, "k-old") || !strings.HasPrefix(table, "NAME") {
		t.Fatalf("clusters list table:\n%s", table)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(run(0, "--json", "clusters", "list", "--query", "product=kafka")), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("JSON line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 {
		t.Fatalf("clusters list --json: %d clusters; want 2", len(lines))
	}
	sum := run(0, "versions", "--query", "product=kafka")
	if !strings.Contains(sum, "2 clusters, 2 off their desired version, 0 on a blocked release") {
		t.Fatalf("versions:\n%s", sum)
	}
	rel := run(0, "releases", "list", "--product", "kafka")
	if i, j := strings.Index(rel, "1.10.0"), strings.Index(rel, "1.2.0"); i < 0 || j < 0 || i > j || !strings.Contains(rel, "host >=3.0.0") {
		t.Fatalf("releases list (want newest first with constraints):\n%s", rel)
	}
	if out := run(1, "clusters", "list", "--query", "version>=latest"); !strings.Contains(out, "invalid_argument") {
		t.Fatalf("a bad query: %s", out)
	}
	run(2, "clusters", "delete")
	run(2, "releases", "list", "--state", "shiny", "--product", "kafka")
}
