package store_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/store"
)

func statusReport(seq, applied int64, checks ...store.Check) store.Report {
	return store.Report{Seq: seq, Status: &store.AgentStatus{AppliedRevision: applied, StateHash: fmt.Sprintf("h%d", applied),
		AgentVersion: "1.0.0", HostVersion: "linux 6.1", Checks: checks, ReportTime: time.Now()}}
}

func metricsReport(seq int64, names ...string) store.Report {
	r := store.Report{Seq: seq}
	for _, n := range names {
		r.Metrics = append(r.Metrics, store.MetricPoint{Name: n, Labels: map[string]string{"seq": fmt.Sprint(seq)}, Value: float64(seq),
			Source: "agent", Time: time.Now()})
	}
	return r
}

func countPoints(t *testing.T, s *store.Store, agentID, name string) int {
	t.Helper()
	n, after := 0, ""
	for {
		pts, next, err := s.ListAgentMetrics(context.Background(), store.MetricFilter{AgentID: agentID, Name: name}, store.Page{After: after, Size: 7})
		if err != nil {
			t.Fatal(err)
		}
		n += len(pts)
		if next == "" {
			return n
		}
		after = next
	}
}

func TestIngestReportsOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		ag := f.agent(t)
		ingest := func(queue string, items ...store.Report) int64 {
			t.Helper()
			acked, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: queue, Items: items})
			if err != nil {
				t.Fatal(err)
			}
			return acked
		}
		if _, err := s.GetAgentStatus(ctx, ag.ID); err == nil {
			t.Fatal("status before any report")
		}
		batch := []store.Report{statusReport(1, 3), metricsReport(2, "a", "b"), metricsReport(4, "a")}
		if got := ingest("q1", batch...); got != 4 {
			t.Fatalf("acked %d; want 4", got)
		}
		// The same batch again (a lost response), and an overlapping one.
		if got := ingest("q1", batch...); got != 4 {
			t.Fatalf("redelivery acked %d; want 4", got)
		}
		if got := ingest("q1", append(batch[1:], metricsReport(5, "a"), statusReport(6, 4))...); got != 6 {
			t.Fatalf("overlap acked %d; want 6", got)
		}
		if got, want := countPoints(t, s, ag.ID, "a"), 3; got != want {
			t.Fatalf("points of a: %d; want %d (each stored once)", got, want)
		}
		if got, want := countPoints(t, s, ag.ID, ""), 4; got != want {
			t.Fatalf("all points: %d; want %d", got, want)
		}
		st := must[store.AgentStatus](t)(s.GetAgentStatus(ctx, ag.ID))
		if st.AppliedRevision != 4 || st.Seq != 6 || st.StateHash != "h4" || st.AgentVersion != "1.0.0" {
			t.Fatalf("status %+v; want the report of seq 6", st)
		}
		// An old status redelivered does not overwrite the newer one.
		ingest("q1", statusReport(1, 3))
		if st := must[store.AgentStatus](t)(s.GetAgentStatus(ctx, ag.ID)); st.AppliedRevision != 4 {
			t.Fatalf("old status overwrote the newer: %+v", st)
		}
		// A new queue (the agent's data dir was wiped) starts over.
		if got := ingest("q2", metricsReport(1, "a"), statusReport(2, 9, store.Check{Name: "disk", Healthy: false, Detail: "full"})); got != 2 {
			t.Fatalf("new queue acked %d; want 2", got)
		}
		if got := countPoints(t, s, ag.ID, "a"); got != 4 {
			t.Fatalf("points of a after new queue: %d; want 4", got)
		}
		got := must[store.Agent](t)(s.GetAgent(ctx, "", ag.ID))
		if got.Status == nil || got.Status.AppliedRevision != 9 || len(got.Status.Checks) != 1 || got.Status.Checks[0].Detail != "full" {
			t.Fatalf("GetAgent status %+v", got.Status)
		}
	})
}

// TestIngestReportsEveryColumn: every field of a status and of a metric
// point is stored where it belongs and read back as sent, in a group of
// several agents (each table's rows in one statement of arrays on
// PostgreSQL, of VALUES on SQLite).
func TestIngestReportsEveryColumn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		reported := time.Date(2026, 11, 22, 8, 30, 1, 123456000, time.UTC)
		var group []store.Reports
		for i := range 3 {
			ag := f.agent(t)
			st := store.AgentStatus{AppliedRevision: int64(10 + i), StateHash: fmt.Sprintf("hash-%d", i), AgentVersion: "1.2.3",
				HostVersion: "linux/amd64 6.1", ProductVersion: fmt.Sprintf("kafka-%d", i),
				Checks:    []store.Check{{Name: "disk", Healthy: i != 1, Detail: "90% full"}, {Name: "net", Healthy: true}},
				LastError: fmt.Sprintf("error %d", i), Stale: i == 2, DroppedReports: int64(7 * i), ReportTime: reported.Add(time.Duration(i) * time.Second)}
			pt := store.MetricPoint{Name: "cpu_seconds", Labels: map[string]string{"core": fmt.Sprint(i), "mode": "user"}, Value: 1.5 + float64(i),
				Source: fmt.Sprintf("svc-%d", i), Time: reported.Add(-time.Duration(i) * time.Minute)}
			group = append(group, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: fmt.Sprintf("queue-%d", i),
				Items: []store.Report{{Seq: 4, Status: &st}, {Seq: 5, Metrics: []store.MetricPoint{pt}}}})
		}
		acked, err := s.IngestReportsMany(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range group {
			if acked[i] != 5 {
				t.Fatalf("batch %d acked %d; want 5", i, acked[i])
			}
			want := *r.Items[0].Status
			got := must[store.AgentStatus](t)(s.GetAgentStatus(ctx, r.AgentID))
			if got.AgentID != r.AgentID || got.DataPlaneID != f.dp.ID || got.Seq != 4 || got.AppliedRevision != want.AppliedRevision ||
				got.StateHash != want.StateHash || got.AgentVersion != want.AgentVersion || got.HostVersion != want.HostVersion ||
				got.ProductVersion != want.ProductVersion || fmt.Sprint(got.Checks) != fmt.Sprint(want.Checks) ||
				got.LastError != want.LastError || got.Stale != want.Stale || got.DroppedReports != want.DroppedReports ||
				!got.ReportTime.Equal(want.ReportTime) || got.ReceiveTime.IsZero() {
				t.Errorf("agent %d: stored status %+v; want %+v", i, got, want)
			}
			pts, _, err := s.ListAgentMetrics(ctx, store.MetricFilter{AgentID: r.AgentID}, store.Page{Size: 10})
			if err != nil {
				t.Fatal(err)
			}
			wp := r.Items[1].Metrics[0]
			if len(pts) != 1 || pts[0].AgentID != r.AgentID || pts[0].Name != wp.Name || fmt.Sprint(pts[0].Labels) != fmt.Sprint(wp.Labels) ||
				pts[0].Value != wp.Value || pts[0].Source != wp.Source || !pts[0].Time.Equal(wp.Time) || pts[0].ReceiveTime.IsZero() || pts[0].ID == "" {
				t.Errorf("agent %d: stored points %+v; want one like %+v", i, pts, wp)
			}
			// The queue's id and position were stored with it: the batch
			// again adds nothing.
			again, err := s.IngestReports(ctx, r)
			if err != nil || again != 5 {
				t.Fatalf("agent %d: redelivery acked %d, %v; want 5", i, again, err)
			}
			if n := countPoints(t, s, r.AgentID, ""); n != 1 {
				t.Errorf("agent %d: %d points after a redelivery; want 1", i, n)
			}
		}
	})
}

// TestIngestReportsManyPointsOverStatements: a group with more metric
// points than one statement of arrays holds (10,000) stores each once,
// whichever statement it went in; an agent id that is not a UUID in
// canonical form fails the group on every backend, storing nothing.
func TestIngestReportsManyPointsOverStatements(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		var group []store.Reports
		for range 3 {
			r := store.Report{Seq: 1}
			for j := range 4_000 {
				r.Metrics = append(r.Metrics, store.MetricPoint{Name: "m" + strconv.Itoa(j), Value: float64(j), Source: "agent", Time: time.Now()})
			}
			group = append(group, store.Reports{AgentID: f.agent(t).ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: []store.Report{r}})
		}
		if _, err := s.IngestReportsMany(ctx, group); err != nil {
			t.Fatal(err)
		}
		for i, r := range group {
			for _, name := range []string{"m0", "m1999", "m3999"} {
				if n := countPoints(t, s, r.AgentID, name); n != 1 {
					t.Errorf("agent %d: %d points %s; want 1", i, n, name)
				}
			}
		}
		upper := group[0]
		upper.AgentID, upper.Items = strings.ToUpper(upper.AgentID), []store.Report{metricsReport(2, "late")}
		if _, err := s.IngestReportsMany(ctx, []store.Reports{upper}); err == nil {
			t.Fatal("a batch under an upper-case agent id was stored")
		}
		if n := countPoints(t, s, group[0].AgentID, "late"); n != 0 {
			t.Fatalf("%d points of the refused batch stored", n)
		}
	})
}

func TestIngestReportsConcurrentRedelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		ag := f.agent(t)
		// Two connections of one agent deliver the same batches at once
		// (a retry racing its original): every point is stored once.
		var batches [][]store.Report
		for i := range 10 {
			batches = append(batches, []store.Report{metricsReport(int64(2*i+1), "x"), metricsReport(int64(2*i+2), "x")})
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				for _, b := range batches {
					if _, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: b}); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		if got := countPoints(t, s, ag.ID, "x"); got != 20 {
			t.Fatalf("points: %d; want 20", got)
		}
	})
}

func TestListAgentsUnhealthy(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		enroll := func() store.Agent {
			return f.agent(t)
		}
		healthy, failing, stale, silent := enroll(), enroll(), enroll(), enroll()
		put := func(a store.Agent, r store.Report) {
			if _, err := s.IngestReports(ctx, store.Reports{AgentID: a.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: []store.Report{r}}); err != nil {
				t.Fatal(err)
			}
		}
		put(healthy, statusReport(1, 1, store.Check{Name: "disk", Healthy: true}))
		put(failing, statusReport(1, 1, store.Check{Name: "disk", Healthy: false}))
		r := statusReport(1, 1)
		r.Status.Stale = true
		put(stale, r)
		list, _, err := s.ListAgents(ctx, store.Filter{}, store.AgentFilter{UnhealthyOnly: true}, store.Page{Size: 100})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, a := range list {
			got[a.ID] = true
		}
		if len(got) != 2 || !got[failing.ID] || !got[stale.ID] {
			t.Fatalf("unhealthy = %v; want failing %s and stale %s (not healthy %s, not silent %s)", got, failing.ID, stale.ID, healthy.ID, silent.ID)
		}
	})
}

func TestCompactMetrics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		ag := f.agent(t)
		var items []store.Report
		for i := range 3 {
			items = append(items, metricsReport(int64(i+1), "m", "n"))
		}
		if _, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: items}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.CompactMetrics(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("compact of nothing old: %d, %v", n, err)
		}
		if n, err := s.CompactMetrics(ctx, time.Now().Add(time.Hour)); err != nil || n != 6 {
			t.Fatalf("compact all: %d, %v; want 6", n, err)
		}
		if got := countPoints(t, s, ag.ID, ""); got != 0 {
			t.Fatalf("points after compaction: %d", got)
		}
	})
}

func TestClusterReports(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		other := must[store.DataPlane](t)(s.CreateDataPlane(ctx, actor, "", store.DataPlane{TenantID: f.tenant.ID, Name: "other", Region: "r"}))
		mine := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: "mine"}))
		theirs := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: other.ID, Name: "theirs"}))
		ag := f.agent(t)
		r := statusReport(1, 1)
		r.Status.Clusters = []store.ClusterReport{
			{ClusterID: mine.ID, Version: "1.2.0", DesiredVersion: "1.3.0", Healthy: false, Detail: "hook failed"},
			{ClusterID: theirs.ID, Version: "6.6.6", Healthy: true},
			{ClusterID: "not-an-id", Version: "1.0.0"},
		}
		if _, err := s.IngestReports(ctx, store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: []store.Report{r}}); err != nil {
			t.Fatal(err)
		}
		got := must[store.ClusterReport](t)(s.GetClusterReport(ctx, mine.ID))
		if got.Version != "1.2.0" || got.DesiredVersion != "1.3.0" || got.Healthy || got.Detail != "hook failed" || got.AgentID != ag.ID {
			t.Fatalf("cluster report %+v", got)
		}
		if c := must[store.Cluster](t)(s.GetCluster(ctx, "", mine.ID)); c.ReportedVersion != "1.2.0" || c.Etag != mine.Etag {
			t.Fatalf("cluster after report: reported %q etag changed %v; want 1.2.0 and the same etag", c.ReportedVersion, c.Etag != mine.Etag)
		}
		// An agent speaks for its own data plane only.
		if _, err := s.GetClusterReport(ctx, theirs.ID); err == nil {
			t.Fatal("an agent reported another data plane's cluster")
		}
		if c := must[store.Cluster](t)(s.GetCluster(ctx, "", theirs.ID)); c.ReportedVersion != "" {
			t.Fatalf("another data plane's cluster got reported version %q", c.ReportedVersion)
		}
	})
}

// TestIngestReportsMany: several batches, of one agent and of several, in
// one transaction, each stored once; a group with a batch the database
// refuses stores nothing.
func TestIngestReportsMany(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		a := must[store.Agent](t)(s.EnrollAgent(ctx, enrollment(f.token(t, "a", time.Hour).ID, "a")))
		b := must[store.Agent](t)(s.EnrollAgent(ctx, enrollment(f.token(t, "b", time.Hour).ID, "b")))
		batch := func(ag store.Agent, items ...store.Report) store.Reports {
			return store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: items}
		}
		acked, err := s.IngestReportsMany(ctx, []store.Reports{
			batch(a, metricsReport(1, "x"), statusReport(2, 5)),
			batch(b, metricsReport(1, "x")),
			batch(a, statusReport(2, 5), metricsReport(3, "x")), // seq 2 again: a redelivery in the same group
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(acked) != "[2 1 3]" {
			t.Fatalf("acked %v; want [2 1 3]", acked)
		}
		if na, nb := countPoints(t, s, a.ID, "x"), countPoints(t, s, b.ID, "x"); na != 2 || nb != 1 {
			t.Fatalf("points: a %d, b %d; want 2 and 1", na, nb)
		}
		if acked, err := s.IngestReportsMany(ctx, nil); err != nil || acked != nil {
			t.Fatalf("empty group: %v, %v; want nil, nil", acked, err)
		}
		_, err = s.IngestReportsMany(ctx, []store.Reports{batch(b, metricsReport(2, "x")), {AgentID: "not-a-uuid", QueueID: "q",
			Items: []store.Report{metricsReport(1, "x")}}})
		if err == nil {
			t.Fatal("a group with an agent id that is no UUID was stored")
		}
		if nb := countPoints(t, s, b.ID, "x"); nb != 1 {
			t.Fatalf("b has %d points after a refused group; want 1 (nothing of the group stored)", nb)
		}
	})
}

// TestIngestReportsManyLargeGroup: a group larger than one multi-row
// statement on SQLite (10 statuses, 18 points) stores every agent's
// status, points and queue; delivered again it stores nothing more; a
// batch under a new queue id starts over.
func TestIngestReportsManyLargeGroup(t *testing.T) {
	const n = 230
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		group := make([]store.Reports, n)
		for i := range group {
			ag := must[store.Agent](t)(s.EnrollAgent(ctx, enrollment(f.token(t, "a", time.Hour).ID, "a")))
			group[i] = store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q",
				Items: []store.Report{metricsReport(1, "x"), statusReport(2, int64(100+i))}}
		}
		for round := range 2 { // the second is a redelivery of the whole group
			acked, err := s.IngestReportsMany(ctx, group)
			if err != nil {
				t.Fatal(err)
			}
			for i, a := range acked {
				if a != 2 {
					t.Fatalf("round %d: batch %d acked %d; want 2", round, i, a)
				}
			}
		}
		for i, r := range group {
			st, err := s.GetAgentStatus(ctx, r.AgentID)
			if err != nil {
				t.Fatalf("agent %d: %v", i, err)
			}
			if st.AppliedRevision != int64(100+i) || st.Seq != 2 || st.DataPlaneID != f.dp.ID {
				t.Fatalf("agent %d: status at revision %d, seq %d, data plane %q; want %d, 2, %q", i, st.AppliedRevision, st.Seq, st.DataPlaneID, 100+i, f.dp.ID)
			}
		}
		for _, i := range []int{0, n / 2, n - 1} {
			if got := countPoints(t, s, group[i].AgentID, "x"); got != 1 {
				t.Fatalf("agent %d has %d points; want 1 (stored once)", i, got)
			}
		}
		// A new queue id (a data directory restored from a backup) starts
		// over at sequence number 1.
		restored := group[n-1]
		restored.QueueID, restored.Items = "q2", []store.Report{statusReport(1, 7)}
		acked, err := s.IngestReportsMany(ctx, []store.Reports{restored})
		if err != nil {
			t.Fatal(err)
		}
		if st, _ := s.GetAgentStatus(ctx, restored.AgentID); acked[0] != 1 || st.AppliedRevision != 7 {
			t.Fatalf("new queue: acked %d, status at revision %d; want 1 and 7", acked[0], st.AppliedRevision)
		}
	})
}

// TestIngestReportsManyClustersOfEachBatch: two batches of one agent in
// one group, each with a status naming a different cluster, store both
// clusters' reports, as two groups would.
func TestIngestReportsManyClustersOfEachBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s *store.Store) {
		ctx := context.Background()
		f := newEnrollFixture(t, s)
		c1 := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: "c1"}))
		c2 := must[store.Cluster](t)(s.CreateCluster(ctx, actor, "", store.Cluster{DataPlaneID: f.dp.ID, Name: "c2"}))
		ag := f.agent(t)
		first, second := statusReport(1, 1), statusReport(2, 2)
		first.Status.Clusters = []store.ClusterReport{{ClusterID: c1.ID, Version: "1.0.0", Healthy: true}}
		second.Status.Clusters = []store.ClusterReport{{ClusterID: c2.ID, Version: "2.0.0", Healthy: true}}
		batch := func(r store.Report) store.Reports {
			return store.Reports{AgentID: ag.ID, DataPlaneID: f.dp.ID, QueueID: "q", Items: []store.Report{r}}
		}
		if _, err := s.IngestReportsMany(ctx, []store.Reports{batch(first), batch(second)}); err != nil {
			t.Fatal(err)
		}
		for _, want := range []struct{ id, version string }{{c1.ID, "1.0.0"}, {c2.ID, "2.0.0"}} {
			got, err := s.GetClusterReport(ctx, want.id)
			if err != nil || got.Version != want.version {
				t.Fatalf("cluster %s: report %+v, %v; want version %s", want.id, got, err, want.version)
			}
		}
		if st := must[store.AgentStatus](t)(s.GetAgentStatus(ctx, ag.ID)); st.AppliedRevision != 2 {
			t.Fatalf("status at revision %d; want the newest batch's, 2", st.AppliedRevision)
		}
	})
}
