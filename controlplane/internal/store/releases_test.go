package store_test

import (
	"context"
	"slices"
	"testing"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

func TestReleasesAndChannels(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		create := func(version string, state int32, cons ...store.Constraint) store.Release {
			t.Helper()
			return must[store.Release](t)(s.CreateRelease(ctx, actor, store.Release{Product: "kafka", Version: version, State: state, Constraints: cons}))
		}
		create("1.2.0", store.ReleaseStable)
		create("1.10.0", store.ReleaseCandidate)
		create("1.3.0-rc.1", store.ReleaseCandidate, store.Constraint{Component: "host", Range: ">3.4"})
		bad := create("1.2.1", store.ReleaseBlocked)
		create("2.0.0", store.ReleaseStable)
		must[store.Release](t)(s.CreateRelease(ctx, actor, store.Release{Product: "redis", Version: "7.0.0", State: store.ReleaseStable}))
		_, err := s.CreateRelease(ctx, actor, store.Release{Product: "kafka", Version: "1.2.0"})
		wantErr(t, err, store.ErrAlreadyExists)

		// Newest first, in semver order (1.10.0 above 1.3.0-rc.1 above 1.2.1).
		all := must[[]store.Release](t)(s.ListReleases(ctx, store.ReleaseFilter{Product: "kafka"}))
		var got []string
		for _, r := range all {
			got = append(got, r.Version)
		}
		if want := []string{"2.0.0", "1.10.0", "1.3.0-rc.1", "1.2.1", "1.2.0"}; !slices.Equal(got, want) {
			t.Fatalf("ListReleases = %v; want %v", got, want)
		}
		stable := must[[]store.Release](t)(s.ListReleases(ctx, store.ReleaseFilter{Product: "kafka", States: []int32{store.ReleaseStable}}))
		if len(stable) != 2 {
			t.Fatalf("stable releases: %d; want 2", len(stable))
		}
		rc := must[store.Release](t)(s.GetRelease(ctx, "kafka", "1.3.0-rc.1"))
		if len(rc.Constraints) != 1 || rc.Constraints[0].Range != ">3.4" {
			t.Fatalf("constraints %v", rc.Constraints)
		}
		_, err = s.GetRelease(ctx, "kafka", "9.9.9")
		wantErr(t, err, store.ErrNotFound)

		// Update: state and notes, conditional on the etag; audited.
		up := must[store.Release](t)(s.UpdateRelease(ctx, actor, "kafka", "1.3.0-rc.1", rc.Etag, func(r *store.Release) error {
			r.State, r.Notes, r.Version = store.ReleaseStable, "promoted", "6.6.6"
			return nil
		}))
		if up.State != store.ReleaseStable || up.Notes != "promoted" || up.Version != "1.3.0-rc.1" || up.Etag == rc.Etag {
			t.Fatalf("updated %+v", up)
		}
		_, err = s.UpdateRelease(ctx, actor, "kafka", "1.3.0-rc.1", rc.Etag, func(*store.Release) error { return nil })
		wantErr(t, err, store.ErrEtagMismatch)
		if n := auditCount(t, s, rc.ID); n != 2 {
			t.Fatalf("audit events for the release: %d; want 2", n)
		}

		// Channels: defaults must name releases that exist and are not blocked.
		_, err = s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "stable", Defaults: map[string]string{"": "9.9.9"}})
		wantErr(t, err, store.ErrNotFound)
		_, err = s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "stable", Defaults: map[string]string{"": bad.Version}})
		wantErr(t, err, store.ErrFailedPrecondition)
		ch := must[store.Channel](t)(s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "stable",
			Defaults: map[string]string{"": "1.2.0", "enterprise": "2.0.0"}}))
		must[store.Channel](t)(s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "rapid", Defaults: map[string]string{"": "2.0.0"}}))
		_, err = s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "stable"})
		wantErr(t, err, store.ErrAlreadyExists)
		if v := ch.DefaultVersion("enterprise"); v != "2.0.0" {
			t.Fatalf("enterprise default %q", v)
		}
		if v := ch.DefaultVersion("free"); v != "1.2.0" {
			t.Fatalf("fallback default %q", v)
		}
		ch2 := must[store.Channel](t)(s.SetChannelDefaults(ctx, actor, "kafka", "stable", ch.Etag, map[string]string{"": "2.0.0"}))
		if ch2.DefaultVersion("enterprise") != "2.0.0" || ch2.Etag == ch.Etag {
			t.Fatalf("after SetChannelDefaults: %+v", ch2)
		}
		_, err = s.SetChannelDefaults(ctx, actor, "kafka", "stable", "", map[string]string{"": bad.Version})
		wantErr(t, err, store.ErrFailedPrecondition)
		if got := must[store.Channel](t)(s.GetChannel(ctx, "kafka", "stable")); got.Etag != ch2.Etag {
			t.Fatal("a refused SetChannelDefaults changed the channel")
		}
		chans := must[[]store.Channel](t)(s.ListChannels(ctx, "kafka"))
		if len(chans) != 2 || chans[0].Name != "rapid" || chans[1].Name != "stable" {
			t.Fatalf("ListChannels = %+v", chans)
		}
		if n := auditCount(t, s, ch.ID); n != 2 {
			t.Fatalf("audit events for the channel: %d; want 2", n)
		}
	})
}

func TestClusterChannelsAndDefaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		for _, r := range []store.Release{{Version: "1.0.0", State: store.ReleaseStable}, {Version: "2.0.0", State: store.ReleaseStable},
			{Version: "2.0.1", State: store.ReleaseBlocked}} {
			r.Product = "kafka"
			must[store.Release](t)(s.CreateRelease(ctx, actor, r))
		}
		must[store.Channel](t)(s.CreateChannel(ctx, actor, store.Channel{Product: "kafka", Name: "stable",
			Defaults: map[string]string{"": "1.0.0", "enterprise": "2.0.0"}}))
		cluster := func(name, channel, desired string, props map[string]any) (store.Cluster, error) {
			return s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: name, Product: "kafka",
				Channel: channel, DesiredVersion: desired, Properties: props})
		}
		free := must[store.Cluster](t)(cluster("free", "stable", "", nil))
		ent := must[store.Cluster](t)(cluster("ent", "stable", "", map[string]any{"plan": "enterprise"}))
		pinned := must[store.Cluster](t)(cluster("pinned", "stable", "2.0.0", nil))
		if free.DesiredVersion != "1.0.0" || ent.DesiredVersion != "2.0.0" || pinned.DesiredVersion != "2.0.0" {
			t.Fatalf("desired versions %q %q %q; want the channel's fallback, the plan's default, and the explicit one",
				free.DesiredVersion, ent.DesiredVersion, pinned.DesiredVersion)
		}
		_, err := cluster("nochannel", "rapid", "", nil)
		wantErr(t, err, store.ErrFailedPrecondition)
		_, err = cluster("blocked", "", "2.0.1", nil)
		wantErr(t, err, store.ErrFailedPrecondition)
		_, err = cluster("unknown", "", "9.0.0", nil)
		wantErr(t, err, store.ErrFailedPrecondition)
		// Changing a default touches no running cluster.
		must[store.Channel](t)(s.SetChannelDefaults(ctx, actor, "kafka", "stable", "", map[string]string{"": "2.0.0"}))
		if got := must[store.Cluster](t)(s.GetCluster(ctx, "", free.ID)); got.DesiredVersion != "1.0.0" {
			t.Fatalf("a default change moved a running cluster to %q", got.DesiredVersion)
		}
		// Updates are checked too; the product cannot change.
		_, err = s.UpdateCluster(ctx, actor, "", free.ID, "", func(c *store.Cluster) error { c.DesiredVersion = "2.0.1"; return nil })
		wantErr(t, err, store.ErrFailedPrecondition)
		up := must[store.Cluster](t)(s.UpdateCluster(ctx, actor, "", free.ID, "", func(c *store.Cluster) error {
			c.DesiredVersion, c.Product = "2.0.0", "redis"
			return nil
		}))
		if up.DesiredVersion != "2.0.0" || up.Product != "kafka" {
			t.Fatalf("updated %+v", up)
		}
		// Clusters without a product are not version-managed.
		must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: "legacy", DesiredVersion: "7.7.7"}))
	})
}
