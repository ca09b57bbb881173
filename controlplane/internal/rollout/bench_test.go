package rollout_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/cairnhq/cairn/controlplane/internal/rollout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/versions"
	"github.com/cairnhq/cairn/internal/storetest"
)

// BenchmarkRolloutAtScale runs one rollout over CAIRN_BENCH_CLUSTERS
// clusters (default 10,000) in 20 data planes on PostgreSQL and reports
// what it takes: planning (Preview), starting (plan + save + locks), the
// engine's dispatches per second (each its own transaction writing the
// cluster's desired-version document into the revision log), and its
// verifications per second once every agent has reported. The fleet is
// loaded with set-based SQL. One iteration is one whole rollout; run with
// -benchtime 1x.
func BenchmarkRolloutAtScale(b *testing.B) {
	n := 10_000
	if v := os.Getenv("CAIRN_BENCH_CLUSTERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	for range b.N {
		benchRollout(b, n)
	}
}

func benchRollout(b *testing.B, n int) {
	b.StopTimer()
	ctx := context.Background()
	url := storetest.PostgresURL(b)
	clock := time.Now
	st, err := store.Open(ctx, store.Config{URL: url, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tn, err := st.CreateTenant(ctx, operator, store.Tenant{Name: "acme"})
	if err != nil {
		b.Fatal(err)
	}
	var dps []string
	for i := range 20 {
		dp, err := st.CreateDataPlane(ctx, operator, "", store.DataPlane{TenantID: tn.ID, Name: fmt.Sprintf("dp%d", i), Region: "r"})
		if err != nil {
			b.Fatal(err)
		}
		dps = append(dps, dp.ID)
	}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := st.CreateRelease(ctx, operator, store.Release{Product: "kafka", Version: v, State: store.ReleaseStable,
			Constraints: []store.Constraint{{Component: "host", Range: ">=3.0.0"}}}); err != nil {
			b.Fatal(err)
		}
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	key := []byte(versions.MustParse("1.0.0").SortKey())
	host := []byte(versions.MustParse("3.5.0").SortKey())
	if _, err := conn.Exec(ctx, `INSERT INTO clusters (id, tenant_id, data_plane_id, name, labels, properties, desired_version,
		reported_version, host_version, product, channel, etag, create_time, update_time,
		desired_version_key, reported_version_key, host_version_key)
		SELECT gen_random_uuid(), $1, ($2::uuid[])[1 + i % 20], 'c' || i, '{"env":"prod"}', '{}', '1.0.0', '1.0.0', '3.5.0',
			'kafka', '', 'e', now(), now(), $3, $3, $4
		FROM generate_series(1, $5) AS i`, tn.ID, dps, key, host, n); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO labels (object_id, key, value) SELECT id, 'env', 'prod' FROM clusters`); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	planner := &rollout.Planner{St: st}
	spec := rollout.Spec{Product: "kafka", TargetVersion: "1.1.0", Query: "env=prod",
		Shape: rollout.Shape{Kind: rollout.ShapeLinear, BatchSize: n}, Seed: "bench",
		Policy: rollout.Policy{VerifyTimeout: time.Hour}}

	b.StartTimer()
	t0 := time.Now()
	if _, err := planner.Plan(ctx, spec, "bench"); err != nil {
		b.Fatal(err)
	}
	plan := time.Since(t0)
	t0 = time.Now()
	r, _, err := planner.Start(ctx, operator, spec)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Since(t0)

	eng, err := rollout.New(rollout.Config{Store: st, Holder: "bench", Now: clock, LeaseTTL: time.Hour, Tick: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	t0 = time.Now()
	for {
		if err := eng.Step(ctx); err != nil {
			b.Fatal(err)
		}
		got, err := st.GetRollout(ctx, r.ID)
		if err != nil {
			b.Fatal(err)
		}
		if got.Counts.Dispatched == n {
			break
		}
	}
	dispatch := time.Since(t0)

	// Every agent reports its clusters at the target: one status per data
	// plane, as 20 agents would.
	b.StopTimer()
	byDP := map[string][]store.ClusterReport{}
	for page := (store.Page{Size: 1000}); ; {
		rcs, next, err := st.ListRolloutClusters(ctx, r.ID, store.RolloutClusterFilter{}, page)
		if err != nil {
			b.Fatal(err)
		}
		for _, rc := range rcs {
			byDP[rc.DataPlaneID] = append(byDP[rc.DataPlaneID], store.ClusterReport{ClusterID: rc.ClusterID, Version: "1.1.0",
				DesiredVersion: "1.1.0", Healthy: true})
		}
		if next == "" {
			break
		}
		page.After = next
	}
	for _, dp := range dps {
		tok, err := st.CreateJoinToken(ctx, operator, "", dp, uuid.NewString(), []byte("s"), time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		agentID := uuid.NewString()
		if _, err := st.EnrollAgent(ctx, store.Enrollment{JoinTokenID: tok.ID, CheckSecret: func([]byte) bool { return true },
			AgentID: agentID, SVIDExpireTime: time.Now().Add(time.Hour), Issue: func(string) error { return nil },
			SPIFFEID: func(string, string) (string, error) { return "spiffe://bench/agent/" + agentID, nil }}); err != nil {
			b.Fatal(err)
		}
		if _, err := st.IngestReports(ctx, store.Reports{AgentID: agentID, DataPlaneID: dp, QueueID: "q", Items: []store.Report{
			{Seq: 1, Status: &store.AgentStatus{ReportTime: time.Now(), Clusters: byDP[dp]}}}}); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
	t0 = time.Now()
	for {
		if err := eng.Step(ctx); err != nil {
			b.Fatal(err)
		}
		got, err := st.GetRollout(ctx, r.ID)
		if err != nil {
			b.Fatal(err)
		}
		if got.State == store.RolloutCompleted {
			if got.Counts.Succeeded != n {
				b.Fatalf("completed with %+v", got.Counts)
			}
			break
		}
	}
	verify := time.Since(t0)
	b.ReportMetric(plan.Seconds()*1000, "plan-ms")
	b.ReportMetric(start.Seconds()*1000, "start-ms")
	b.ReportMetric(float64(n)/dispatch.Seconds(), "dispatches/s")
	b.ReportMetric(float64(n)/verify.Seconds(), "verifications/s")
}
