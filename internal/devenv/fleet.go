package devenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/gen/cairn/admin/v1/adminv1connect"
)

// The demo fleet: a product with two releases, a handful of simulated
// clusters in the local data plane (one on a host too old for the new
// release, one labelled sensitive), and a rollout between the releases.
const (
	demoProduct = "demo-db"
	demoFrom    = "1.0.0"
	demoTo      = "1.1.0"
)

// demoClusters are the simulated clusters: name, host version, sensitive.
var demoClusters = []struct {
	name, host string
	sensitive  bool
}{
	{"db-1", "3.5.0", false}, {"db-2", "3.5.0", false}, {"db-3", "3.6.1", false},
	{"db-4", "3.6.1", false}, {"db-bank", "3.6.1", true}, {"db-legacy", "3.2.0", false},
}

// demoHook is the agent's upgrade hook in the demo: it pretends, slowly
// enough to watch.
const demoHook = `#!/bin/sh
# cairn-agent --upgrade-hook for make dev: pretends to upgrade a cluster.
sleep 1
echo "upgraded cluster $CAIRN_CLUSTER_ID from ${CAIRN_CURRENT_VERSION:-nothing} to $CAIRN_TARGET_VERSION"
`

// writeDemoHook writes the demo upgrade hook and returns its path.
func writeDemoHook(dir string) (string, error) {
	path := filepath.Join(dir, "demo-upgrade.sh")
	if err := os.WriteFile(path, []byte(demoHook), 0o700); err != nil {
		return "", err
	}
	return path, nil
}

// seedFleet creates the demo releases and clusters (or finds them from an
// earlier run) and starts the demo rollout unless one exists; it returns
// the newest demo rollout's ID.
func seedFleet(ctx context.Context, base, tok, dataPlaneID string) (string, error) {
	hc := http.DefaultClient
	releases := adminv1connect.NewReleaseServiceClient(hc, base, bearer(tok))
	clusters := adminv1connect.NewClusterServiceClient(hc, base, bearer(tok))
	rollouts := adminv1connect.NewRolloutServiceClient(hc, base, bearer(tok))

	for _, r := range []*adminv1.Release{
		{Product: demoProduct, Version: demoFrom, State: adminv1.ReleaseState_RELEASE_STATE_STABLE, Notes: "the demo's first release"},
		{Product: demoProduct, Version: demoTo, State: adminv1.ReleaseState_RELEASE_STATE_CANDIDATE, Notes: "needs host 3.4 or later",
			Constraints: []*adminv1.Constraint{{Component: "host", Range: ">=3.4.0"}}},
	} {
		_, err := releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: r}))
		if err != nil && connect.CodeOf(err) != connect.CodeAlreadyExists {
			return "", fmt.Errorf("release %s: %w", r.Version, err)
		}
	}
	have, err := clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{DataPlaneId: dataPlaneID,
		Query: "product=" + demoProduct, PageSize: 100}))
	if err != nil {
		return "", err
	}
	exists := map[string]bool{}
	for _, c := range have.Msg.Clusters {
		exists[c.Name] = true
	}
	for _, dc := range demoClusters {
		if exists[dc.name] {
			continue
		}
		labels := map[string]string{"env": "dev"}
		if dc.sensitive {
			labels["sensitive"] = "true"
		}
		if _, err := clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: dataPlaneID, Name: dc.name, Product: demoProduct, DesiredVersion: demoFrom, HostVersion: dc.host, Labels: labels,
		}})); err != nil {
			return "", fmt.Errorf("cluster %s: %w", dc.name, err)
		}
	}

	list, err := rollouts.ListRollouts(ctx, connect.NewRequest(&adminv1.ListRolloutsRequest{PageSize: 1}))
	if err != nil {
		return "", err
	}
	if len(list.Msg.Rollouts) > 0 {
		return list.Msg.Rollouts[0].Id, nil
	}
	started, err := rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: &adminv1.RolloutSpec{
		Product: demoProduct, TargetVersion: demoTo, Query: "env=dev",
		Shape: &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}},
		Policy: &adminv1.RolloutPolicy{BaseSoak: durationpb.New(5e9), ReserveSensitive: true,
			FailureBudget: &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: 0}}},
	}}))
	if err != nil {
		return "", fmt.Errorf("start the demo rollout: %w", err)
	}
	return started.Msg.Rollout.Id, nil
}
