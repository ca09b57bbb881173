package adminapi_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
	"github.com/cairnhq/cairn/internal/storetest"
)

// TestReleaseCatalog drives the catalog through the API on both backends:
// releases in semver order, state changes, channels whose defaults must
// name releases that exist and are not blocked; tenant-scoped tokens read
// it but never change it.
func TestReleaseCatalog(t *testing.T) {
	for _, backend := range storetest.Backends() {
		t.Run(backend.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := admintest.Start(t, admintest.Config{StoreURL: backend.URL(t)})
			acme := s.SeedTenant(t, "acme")
			op := s.Clients(admintest.GRPC, s.OperatorToken).Releases
			tenant := s.Clients(admintest.Connect, acme.Admin.Secret).Releases
			create := func(version string, state adminv1.ReleaseState, cons ...*adminv1.Constraint) *adminv1.Release {
				t.Helper()
				r, err := op.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
					Product: "kafka", Version: version, State: state, Constraints: cons, Notes: "notes " + version}}))
				if err != nil {
					t.Fatalf("CreateRelease %s: %v", version, err)
				}
				return r.Msg.Release
			}
			first := create("3.9.0", 0)
			if first.State != adminv1.ReleaseState_RELEASE_STATE_CANDIDATE || first.Etag == "" {
				t.Fatalf("created %v; want a CANDIDATE with an etag", first)
			}
			create("3.10.0", adminv1.ReleaseState_RELEASE_STATE_STABLE, &adminv1.Constraint{Component: "host", Range: ">=5.4.0"})
			create("3.10.1-rc.1", adminv1.ReleaseState_RELEASE_STATE_CANDIDATE)
			create("3.9.1", adminv1.ReleaseState_RELEASE_STATE_BLOCKED)

			list, err := tenant.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{Product: "kafka"}))
			if err != nil {
				t.Fatalf("a tenant-scoped token cannot read the catalog: %v", err)
			}
			var got []string
			for _, r := range list.Msg.Releases {
				got = append(got, r.Version)
			}
			if want := []string{"3.10.1-rc.1", "3.10.0", "3.9.1", "3.9.0"}; len(got) != 4 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
				t.Fatalf("ListReleases = %v; want %v (newest first, semver order)", got, want)
			}

			// Promote 3.9.0; a stale etag is refused.
			up, err := op.UpdateRelease(ctx, connect.NewRequest(&adminv1.UpdateReleaseRequest{Release: &adminv1.Release{
				Product: "kafka", Version: "3.9.0", State: adminv1.ReleaseState_RELEASE_STATE_STABLE, Etag: first.Etag}, UpdateMask: mask("state")}))
			if err != nil || up.Msg.Release.State != adminv1.ReleaseState_RELEASE_STATE_STABLE || up.Msg.Release.Notes != "notes 3.9.0" {
				t.Fatalf("UpdateRelease = %v, %v", up, err)
			}
			_, err = op.UpdateRelease(ctx, connect.NewRequest(&adminv1.UpdateReleaseRequest{Release: &adminv1.Release{
				Product: "kafka", Version: "3.9.0", Notes: "x", Etag: first.Etag}, UpdateMask: mask("notes")}))
			wantCode(t, err, connect.CodeFailedPrecondition) // stale etag
			stable, err := op.ListReleases(ctx, connect.NewRequest(&adminv1.ListReleasesRequest{Product: "kafka",
				States: []adminv1.ReleaseState{adminv1.ReleaseState_RELEASE_STATE_STABLE}}))
			if err != nil || len(stable.Msg.Releases) != 2 {
				t.Fatalf("stable releases: %v, %v; want 2", stable, err)
			}

			// Channels.
			_, err = op.CreateChannel(ctx, connect.NewRequest(&adminv1.CreateChannelRequest{Channel: &adminv1.Channel{
				Product: "kafka", Name: "stable", DefaultVersions: map[string]string{"": "3.9.1"}}}))
			wantCode(t, err, connect.CodeFailedPrecondition) // blocked
			ch, err := op.CreateChannel(ctx, connect.NewRequest(&adminv1.CreateChannelRequest{Channel: &adminv1.Channel{
				Product: "kafka", Name: "stable", DefaultVersions: map[string]string{"": "3.9.0", "enterprise": "3.10.0"}}}))
			if err != nil {
				t.Fatal(err)
			}
			_, err = tenant.UpdateChannel(ctx, connect.NewRequest(&adminv1.UpdateChannelRequest{Channel: &adminv1.Channel{
				Product: "kafka", Name: "stable", DefaultVersions: map[string]string{"": "3.10.0"}}}))
			wantCode(t, err, connect.CodePermissionDenied)
			up2, err := op.UpdateChannel(ctx, connect.NewRequest(&adminv1.UpdateChannelRequest{Channel: &adminv1.Channel{
				Product: "kafka", Name: "stable", Etag: ch.Msg.Channel.Etag, DefaultVersions: map[string]string{"": "3.10.0"}}}))
			if err != nil || up2.Msg.Channel.DefaultVersions[""] != "3.10.0" || len(up2.Msg.Channel.DefaultVersions) != 1 {
				t.Fatalf("UpdateChannel = %v, %v", up2, err)
			}
			got2, err := tenant.GetChannel(ctx, connect.NewRequest(&adminv1.GetChannelRequest{Product: "kafka", Name: "stable"}))
			if err != nil || got2.Msg.Channel.Etag != up2.Msg.Channel.Etag {
				t.Fatalf("GetChannel = %v, %v", got2, err)
			}

			// A cluster created on the channel starts on its plan's default;
			// one pinned to a blocked release is refused.
			clusters := s.Clients(admintest.GRPC, s.OperatorToken).Clusters
			cl, err := clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: acme.DataPlane.Id, Name: "k1", Product: "kafka", Channel: "stable"}}))
			if err != nil || cl.Msg.Cluster.DesiredVersion != "3.10.0" || cl.Msg.Cluster.Channel != "stable" {
				t.Fatalf("CreateCluster on a channel = %v, %v; want desired 3.10.0", cl, err)
			}
			_, err = clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
				DataPlaneId: acme.DataPlane.Id, Name: "k2", Product: "kafka", DesiredVersion: "3.9.1"}}))
			wantCode(t, err, connect.CodeFailedPrecondition)

			// Every change is in the audit log.
			events := 0
			for _, e := range s.AuditEvents(t) {
				if e.ResourceType == "release" || e.ResourceType == "channel" {
					events++
				}
			}
			if events != 5+1+2 { // 4 creates + the seeded release, 1 update, channel create + update
				t.Fatalf("catalog audit events: %d; want 8", events)
			}
		})
	}
}

// TestListClustersQuery selects clusters with an inventory query through
// the API, and refuses a bad query as an invalid field.
func TestListClustersQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	c := s.Clients(admintest.Connect, s.OperatorToken)
	for _, v := range []string{"1.2.0", "1.10.0"} {
		if _, err := c.Releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
			Product: "kafka", Version: v, State: adminv1.ReleaseState_RELEASE_STATE_STABLE}})); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range map[string]string{"old": "1.2.0", "new": "1.10.0"} {
		if _, err := c.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: acme.DataPlane.Id, Name: name, Product: "kafka", DesiredVersion: v}})); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{
		Query: "product=kafka,desired_version>1.9.0", DataPlaneId: acme.DataPlane.Id}))
	if err != nil || len(got.Msg.Clusters) != 1 || got.Msg.Clusters[0].Name != "new" {
		t.Fatalf("ListClusters with a query = %v, %v; want only the 1.10.0 cluster", got, err)
	}
	_, err = c.Clusters.ListClusters(ctx, connect.NewRequest(&adminv1.ListClustersRequest{Query: "version>=latest"}))
	admintest.WantInvalidField(t, err, "query")
}
