package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnhq/cairn/controlplane/internal/inventory"
	"github.com/cairnhq/cairn/controlplane/internal/store"
)

func TestQueryClusters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		acme := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "acme"}))
		other := must[store.Tenant](t)(s.CreateTenant(ctx, actor, store.Tenant{Name: "other"}))
		eu := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "eu", Region: "eu-west-1"}))
		us := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: acme.ID, Name: "us", Region: "us-east-1"}))
		ot := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: other.ID, Name: "ot", Region: "eu-west-1"}))
		for _, v := range []string{"1.2.0", "1.10.0", "1.3.0-rc.1", "1.3.0", "2.0.0", "1.9.9"} {
			must[store.Release](t)(s.CreateRelease(ctx, actor, store.Release{Product: "kafka", Version: v, State: store.ReleaseStable}))
		}
		type spec struct {
			name, dp, desired, host, env string
		}
		byName := map[string]store.Cluster{}
		for _, c := range []spec{
			{"a", eu.ID, "1.2.0", "3.4.0", "prod"},
			{"b", eu.ID, "1.10.0", "3.5.1", "prod"},
			{"c", us.ID, "1.3.0-rc.1", "3.3.0", "staging"},
			{"d", us.ID, "1.3.0", "", "prod"},
			{"e", ot.ID, "2.0.0", "4.0.0", "prod"},
			{"f", eu.ID, "1.9.9", "not-semver", ""},
		} {
			labels := map[string]string{}
			if c.env != "" {
				labels["env"] = c.env
			}
			byName[c.name] = must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: c.dp, Name: c.name,
				Product: "kafka", DesiredVersion: c.desired, HostVersion: c.host, Labels: labels}))
		}
		// Reported versions come from agents.
		ag := must[store.Agent](t)(s.EnrollAgent(ctx, enrollmentFor(t, s, eu.ID)))
		r := statusReport(1, 1)
		r.Status.Clusters = []store.ClusterReport{{ClusterID: byName["a"].ID, Version: "1.2.0", Healthy: true},
			{ClusterID: byName["b"].ID, Version: "1.9.9", Healthy: true}}
		if _, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: eu.ID, QueueID: "q", Items: []store.Report{r}}); err != nil {
			t.Fatal(err)
		}
		names := func(visible, query string) []string {
			t.Helper()
			q, err := inventory.Parse(query)
			if err != nil {
				t.Fatalf("Parse(%q): %v", query, err)
			}
			var out []string
			after := ""
			for {
				page, next, err := s.QueryClusters(ctx, store.Filter{Visible: visible}, q, store.Page{After: after, Size: 2})
				if err != nil {
					t.Fatalf("QueryClusters(%q): %v", query, err)
				}
				for _, c := range page {
					out = append(out, c.Name)
				}
				if next == "" {
					break
				}
				after = next
			}
			slices.Sort(out)
			return out
		}
		for _, tc := range []struct {
			query   string
			visible string
			want    []string
		}{
			{"", "", []string{"a", "b", "c", "d", "e", "f"}},
			{"", acme.ID, []string{"a", "b", "c", "d", "f"}},
			{"region=eu-west-1", "", []string{"a", "b", "e", "f"}},
			{"region in (us-east-1),env=prod", "", []string{"d"}},
			{"tenant=" + other.ID, "", []string{"e"}},
			{"data_plane=" + us.ID, "", []string{"c", "d"}},
			{"desired_version>=1.3.0,desired_version<2.0.0", "", []string{"b", "d", "f"}},
			{"desired_version>=1.3.0-rc.1,desired_version<1.3.0", "", []string{"c"}},
			{"desired_version>1.9.9", "", []string{"b", "e"}},
			{"desired_version in (1.2.0,2.0.0)", "", []string{"a", "e"}},
			{"host_version>=3.4.0", "", []string{"a", "b", "e"}},
			{"host_version<3.4.0", "", []string{"c"}}, // unknown and non-semver hosts never match a range
			{"version=1.9.9", "", []string{"b"}},
			{"version<1.3.0", "", []string{"a"}},
			{"version!=1.2.0", "", []string{"b", "c", "d", "e", "f"}},
			{"product=kafka,!env", "", []string{"f"}},
			{"product=redis", "", nil},
			{"name in (a,e),env=prod", acme.ID, []string{"a"}},
		} {
			if got := names(tc.visible, tc.query); !slices.Equal(got, tc.want) {
				t.Errorf("%q (visible %q) = %v; want %v", tc.query, tc.visible, got, tc.want)
			}
		}
	})
}

// enrollmentFor enrolls into a given data plane of an existing store.
func enrollmentFor(t *testing.T, s *store.Store, dataPlaneID string) store.Enrollment {
	t.Helper()
	tok := must[store.JoinToken](t)(s.CreateJoinToken(context.Background(), actor, "", dataPlaneID, uuid.NewString(), []byte("s"), time.Hour))
	return enrollment(tok.ID, "s")
}

func TestSummarizeVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		for _, r := range []store.Release{{Version: "1.0.0", State: store.ReleaseStable}, {Version: "1.1.0", State: store.ReleaseStable},
			{Version: "0.9.0", State: store.ReleaseBlocked}} {
			r.Product = "kafka"
			must[store.Release](t)(s.CreateRelease(ctx, actor, r))
		}
		ids := map[string]string{}
		for _, c := range []struct{ name, desired string }{{"a", "1.1.0"}, {"b", "1.1.0"}, {"c", "1.0.0"}, {"d", "1.1.0"}} {
			ids[c.name] = must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: c.name,
				Product: "kafka", DesiredVersion: c.desired})).ID
		}
		ag := f.agent(t)
		r := statusReport(1, 1)
		r.Status.Clusters = []store.ClusterReport{{ClusterID: ids["a"], Version: "1.1.0"}, {ClusterID: ids["b"], Version: "1.0.0"},
			{ClusterID: ids["c"], Version: "0.9.0"}}
		if _, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: []store.Report{r}}); err != nil {
			t.Fatal(err)
		}
		q, _ := inventory.Parse("product=kafka")
		sum := must[store.VersionSummary](t)(s.SummarizeVersions(ctx, store.Filter{}, q))
		if sum.Total != 4 || sum.OffDesired != 3 || sum.OnBlocked != 1 {
			t.Fatalf("summary %+v; want 4 clusters, 3 off their desired version (b, c, and d which reported none), 1 on a blocked release", sum)
		}
		if len(sum.Desired) != 2 || sum.Desired[0] != (store.VersionCount{Version: "1.1.0", Count: 3}) {
			t.Fatalf("by desired %+v", sum.Desired)
		}
		if len(sum.Reported) != 4 {
			t.Fatalf("by reported %+v; want 1.1.0, 1.0.0, 0.9.0 and none, one each", sum.Reported)
		}
	})
}
