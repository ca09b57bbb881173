package rollout_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	"github.com/cairnhq/cairn/controlplane/internal/rollout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/waves"
	"github.com/cairnhq/cairn/internal/storetest"
)

var operator = store.Actor{ID: "test:operator"}

// fixture is a real store (SQLite or PostgreSQL) on a fake clock with one
// data plane of kafka clusters, releases 1.0.0 and 1.1.0 (which needs host
// >= 3.4.0), an enrolled agent whose reports the test writes, a planner
// and an engine.
type fixture struct {
	t       *testing.T
	ctx     context.Context
	st      *store.Store
	clock   *admintest.Clock
	tenant  store.Tenant
	dp      store.DataPlane
	agentID string
	queue   string
	seq     int64
	planner *rollout.Planner
	eng     *rollout.Engine
}

// start is a Friday, 12:00 UTC.
var start = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func forEachBackend(t *testing.T, body func(t *testing.T, f *fixture)) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			body(t, newFixture(t, b.URL(t)))
		})
	}
}

func newFixture(t *testing.T, url string) *fixture {
	t.Helper()
	ctx := context.Background()
	clock := admintest.NewClock(start)
	st, err := store.Open(ctx, store.Config{URL: url, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, st: st, clock: clock, queue: uuid.NewString(), planner: &rollout.Planner{St: st}}
	f.tenant = must(st.CreateTenant(ctx, operator, store.Tenant{Name: "acme"}))(t)
	f.dp = must(st.CreateDataPlane(ctx, operator, "", store.DataPlane{TenantID: f.tenant.ID, Name: "dp", Region: "eu-west-1"}))(t)
	tok := must(st.CreateJoinToken(ctx, operator, "", f.dp.ID, uuid.NewString(), []byte("s"), time.Hour))(t)
	f.agentID = uuid.NewString()
	if _, err := st.EnrollAgent(ctx, store.Enrollment{JoinTokenID: tok.ID, CheckSecret: func([]byte) bool { return true },
		AgentID: f.agentID, SVIDExpireTime: start.Add(time.Hour), Issue: func(string) error { return nil },
		SPIFFEID: func(tn, dp string) (string, error) { return "spiffe://cairn.test/agent/" + f.agentID, nil }}); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []store.Release{
		{Product: "kafka", Version: "1.0.0", State: store.ReleaseStable},
		{Product: "kafka", Version: "1.1.0", State: store.ReleaseCandidate, Constraints: []store.Constraint{{Component: "host", Range: ">=3.4.0"}}},
	} {
		must(st.CreateRelease(ctx, operator, rel))(t)
	}
	f.eng = f.engine("replica-a")
	return f
}

func (f *fixture) engine(holder string) *rollout.Engine {
	e, err := rollout.New(rollout.Config{Store: f.st, Holder: holder, Now: f.clock.Now, Tick: time.Second, LeaseTTL: 10 * time.Second})
	if err != nil {
		f.t.Fatal(err)
	}
	return e
}

// must(f())(t) is f's value, or the test's end on its error.
func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// cluster makes a kafka cluster at 1.0.0 on the given host version.
func (f *fixture) cluster(name, host string, labels map[string]string, props map[string]any) store.Cluster {
	f.t.Helper()
	return must(f.st.CreateCluster(f.ctx, operator, "", store.Cluster{DataPlaneID: f.dp.ID, Name: name, Product: "kafka",
		DesiredVersion: "1.0.0", HostVersion: host, Labels: labels, Properties: props}))(f.t)
}

// report stores a status from the agent with what it says of clusters.
func (f *fixture) report(cs ...store.ClusterReport) {
	f.t.Helper()
	f.seq++
	for i := range cs {
		cs[i].AgentID = f.agentID
	}
	if _, err := f.st.IngestReports(f.ctx, store.Reports{AgentID: f.agentID, DataPlaneID: f.dp.ID, QueueID: f.queue,
		Items: []store.Report{{Seq: f.seq, Status: &store.AgentStatus{ReportTime: f.clock.Now(), Clusters: cs}}}}); err != nil {
		f.t.Fatal(err)
	}
}

// upgrade plays the agent: every in-flight cluster of the rollout reports
// its target, healthy unless fail says otherwise.
func (f *fixture) upgrade(rolloutID string, fail func(store.RolloutCluster) bool) int {
	f.t.Helper()
	inflight := must(f.st.InFlightClusters(f.ctx, rolloutID))(f.t)
	var cs []store.ClusterReport
	for _, c := range inflight {
		if fail != nil && fail(c.RolloutCluster) {
			cs = append(cs, store.ClusterReport{ClusterID: c.ClusterID, Version: c.PreviousVersion, DesiredVersion: c.TargetVersion,
				Healthy: false, Detail: "hook exited 1"})
			continue
		}
		cs = append(cs, store.ClusterReport{ClusterID: c.ClusterID, Version: c.TargetVersion, DesiredVersion: c.TargetVersion, Healthy: true})
	}
	if len(cs) > 0 {
		f.report(cs...)
	}
	return len(cs)
}

func (f *fixture) step() {
	f.t.Helper()
	if err := f.eng.Step(f.ctx); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) get(id string) store.Rollout {
	f.t.Helper()
	return must(f.st.GetRollout(f.ctx, id))(f.t)
}

func (f *fixture) clusters(id string) map[string]store.RolloutCluster {
	f.t.Helper()
	rcs, _ := must2(f.st.ListRolloutClusters(f.ctx, id, store.RolloutClusterFilter{}, store.Page{Size: 1000}))(f.t)
	out := map[string]store.RolloutCluster{}
	for _, rc := range rcs {
		out[rc.Name] = rc
	}
	return out
}

func must2[A, B any](a A, b B, err error) func(testing.TB) (A, B) {
	return func(t testing.TB) (A, B) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a, b
	}
}

func (f *fixture) start(spec rollout.Spec) store.Rollout {
	f.t.Helper()
	r, _, err := f.planner.Start(f.ctx, operator, spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func linear(batch int, p rollout.Policy) rollout.Spec {
	return rollout.Spec{Product: "kafka", TargetVersion: "1.1.0", Shape: rollout.Shape{Kind: rollout.ShapeLinear, BatchSize: batch},
		Policy: p, Seed: "fixed"}
}

// desiredDoc returns the version in a cluster's desired-version document
// and the document's version (how many times it was written).
func (f *fixture) desiredDoc(clusterID string) (string, int64) {
	f.t.Helper()
	d, err := f.st.GetConfigDocumentByKey(f.ctx, "", store.ScopeCluster, clusterID, store.DesiredVersionKind, store.DesiredVersionName)
	if err != nil {
		f.t.Fatal(err)
	}
	var body struct{ Version string }
	if err := json.Unmarshal(d.Content, &body); err != nil {
		f.t.Fatal(err)
	}
	return body.Version, d.Version
}

func (f *fixture) dispatches(rolloutID string) map[string]int {
	f.t.Helper()
	evs, _ := must2(f.st.ListAuditEvents(f.ctx, store.AuditFilter{ResourceID: rolloutID}, store.Page{Size: 1000}))(f.t)
	out := map[string]int{}
	for _, e := range evs {
		if e.Action == "rollout.cluster.dispatch" {
			id, _, _ := strings.Cut(strings.TrimPrefix(e.Detail, "cluster "), ":")
			out[id]++
		}
	}
	return out
}

// A rollout over six clusters, one incompatible and one sensitive, in
// waves of two, one at a time, soaking ten minutes: the plan is saved as
// previewed, every compatible cluster is dispatched exactly once through
// its desired-version document, waves wait for their soak, and the
// rollout completes.
func TestRolloutRunsToCompletion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 5 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		f.cluster("old-host", "3.3.0", nil, nil)
		f.cluster("bank", "3.5.0", map[string]string{rollout.SensitiveLabel: "true"}, nil)
		spec := linear(2, rollout.Policy{BaseSoak: 10 * time.Minute, Concurrency: 1, ReserveSensitive: true})

		preview, err := f.planner.Plan(f.ctx, spec, spec.Seed)
		if err != nil {
			t.Fatal(err)
		}
		if len(preview.Skipped) != 1 || preview.Skipped[0].Cluster.Name != "old-host" || !strings.Contains(preview.Skipped[0].Detail, "host >=3.4.0") {
			t.Fatalf("skipped %+v; want old-host with its host rule", preview.Skipped)
		}
		r := f.start(spec)
		if len(r.Waves) != 4 || !r.Waves[3].Sensitive || r.Waves[3].Size != 1 {
			t.Fatalf("waves %+v; want 2+2+1 then the sensitive one", r.Waves)
		}
		for i, w := range r.Waves {
			if len(preview.Waves[i].ClusterIDs) != w.Size {
				t.Fatalf("wave %d: started with %d clusters, previewed %d", i, w.Size, len(preview.Waves[i].ClusterIDs))
			}
		}
		for i := range 40 {
			f.step()
			f.upgrade(r.ID, nil)
			if got := f.get(r.ID); got.State == store.RolloutCompleted {
				break
			} else if w := got.Waves[got.CurrentWave]; w.SoakUntil != nil && f.clock.Now().Before(*w.SoakUntil) {
				if c := got.Counts; c.Dispatched+c.Verifying+c.Eligible > 0 {
					t.Fatalf("pass %d: wave %d soaks with clusters in flight: %+v", i, w.Index, c)
				}
				f.clock.Advance(10 * time.Minute)
			}
		}
		got := f.get(r.ID)
		if got.State != store.RolloutCompleted || got.Counts.Succeeded != 6 || got.Counts.Skipped != 1 {
			t.Fatalf("rollout %s %q counts %+v; want completed with 6 succeeded, 1 skipped", got.State, got.Reason, got.Counts)
		}
		for name, rc := range f.clusters(r.ID) {
			if name == "old-host" {
				continue
			}
			v, writes := f.desiredDoc(rc.ClusterID)
			c := must(f.st.GetCluster(f.ctx, "", rc.ClusterID))(t)
			if v != "1.1.0" || writes != 2 || c.DesiredVersion != "1.1.0" || rc.PreviousVersion != "1.0.0" {
				t.Errorf("%s: document %s written %d times, desired %s, previous %s; want 1.1.0 written twice (create, dispatch)",
					name, v, writes, c.DesiredVersion, rc.PreviousVersion)
			}
		}
		for id, n := range f.dispatches(r.ID) {
			if n != 1 {
				t.Errorf("cluster %s dispatched %d times", id, n)
			}
		}
		if f.clusters(r.ID)["bank"].Wave != 3 {
			t.Errorf("the sensitive cluster is not in the last wave")
		}
		// The locks are gone: a new rollout may take the clusters.
		if _, err := f.planner.Plan(f.ctx, rollout.Spec{Product: "kafka", TargetVersion: "1.0.0",
			Shape: rollout.Shape{Kind: rollout.ShapeSCurve}}, "x"); err != nil {
			t.Fatalf("planning a rollout back: %v", err)
		}
	})
}

// A failure beyond a wave's budget pauses the rollout with the reason;
// nothing more is dispatched; resuming accepts the failures so far, and
// the next failure pauses it again.
func TestFailureBudgetPauses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 6 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(6, rollout.Policy{Concurrency: 2, FailureBudget: waves.Budget{Count: 0}}))
		f.step() // wave 0 starts, two dispatched
		fails := 0
		f.upgrade(r.ID, func(store.RolloutCluster) bool { fails++; return fails == 1 })
		f.step()
		got := f.get(r.ID)
		if got.State != store.RolloutPaused || !strings.Contains(got.Reason, "wave 1 failure budget exceeded: 1") {
			t.Fatalf("rollout %s %q; want paused by the wave budget", got.State, got.Reason)
		}
		before := got.Counts
		for range 3 {
			f.step()
		}
		if after := f.get(r.ID).Counts; after.Dispatched+after.Verifying+after.Succeeded != before.Dispatched+before.Verifying+before.Succeeded {
			t.Fatalf("dispatched while paused: %+v -> %+v", before, after)
		}
		if _, err := f.st.SetRolloutState(f.ctx, store.Fence{}, operator, r.ID, []string{store.RolloutPaused}, store.RolloutRunning, "", "rollout.resume"); err != nil {
			t.Fatal(err)
		}
		f.step()
		if got := f.get(r.ID); got.State != store.RolloutRunning || got.Counts.Dispatched == 0 {
			t.Fatalf("after resume: %s %+v; want running with new dispatches", got.State, got.Counts)
		}
		f.upgrade(r.ID, func(store.RolloutCluster) bool { return true })
		f.step()
		if got := f.get(r.ID); got.State != store.RolloutPaused || got.Counts.Failed < 2 {
			t.Fatalf("after a second failure: %s %+v; want paused again", got.State, got.Counts)
		}
	})
}

// A cluster whose agent reports nothing fails at the verify deadline as
// unreachable, counted apart from failures, and it breaks the global
// budget.
func TestUnreachableAtDeadline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		f.cluster("quiet", "3.5.0", nil, nil)
		f.cluster("loud", "3.5.0", nil, nil)
		r := f.start(linear(2, rollout.Policy{VerifyTimeout: 5 * time.Minute, FailureBudget: waves.Budget{Count: 2},
			GlobalFailureBudget: &waves.Budget{Count: 0}}))
		f.step()
		// The loud one's agent has the target but its version does not move.
		loud := f.clusters(r.ID)["loud"]
		f.report(store.ClusterReport{ClusterID: loud.ClusterID, Version: "1.0.0", DesiredVersion: "1.1.0", Healthy: true})
		f.step()
		if got := f.clusters(r.ID); got["loud"].State != store.ClusterVerifying || got["quiet"].State != store.ClusterDispatched {
			t.Fatalf("loud %s, quiet %s; want verifying and dispatched", got["loud"].State, got["quiet"].State)
		}
		f.clock.Advance(4 * time.Minute)
		f.step()
		if got := f.get(r.ID); got.Counts.Failed+got.Counts.Unreachable != 0 {
			t.Fatalf("failed before the deadline: %+v", got.Counts)
		}
		f.clock.Advance(time.Minute)
		f.step()
		got := f.get(r.ID)
		cs := f.clusters(r.ID)
		if got.Counts.Unreachable != 1 || got.Counts.Failed != 1 || !cs["quiet"].Unreachable || cs["loud"].Unreachable {
			t.Fatalf("counts %+v, quiet %+v, loud %+v; want one unreachable (quiet), one failed (loud)", got.Counts, cs["quiet"], cs["loud"])
		}
		if got.State != store.RolloutPaused || !strings.Contains(got.Reason, "global failure budget") {
			t.Fatalf("rollout %s %q; want paused by the global budget", got.State, got.Reason)
		}
	})
}

// A wave waits for each cluster's maintenance window (in its time zone);
// an exclusion covering a cluster when its turn comes excludes it, and an
// expired one does not.
func TestWindowsAndExclusions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		win := map[string]any{"maintenance_window": map[string]any{"time_zone": "Europe/Berlin", "days": []any{"sat"},
			"start": "02:00", "duration": "4h"}}
		night := f.cluster("night", "3.5.0", nil, win)
		frozen := f.cluster("frozen", "3.5.0", nil, nil)
		thawed := f.cluster("thawed", "3.5.0", nil, nil)
		must(f.st.CreateExclusion(f.ctx, operator, store.Exclusion{ScopeType: store.ExcludeCluster, ScopeID: frozen.ID,
			Reason: "customer freeze", ExpireTime: start.Add(72 * time.Hour)}))(t)
		must(f.st.CreateExclusion(f.ctx, operator, store.Exclusion{ScopeType: store.ExcludeDataPlane, ScopeID: thawed.DataPlaneID,
			Reason: "short freeze", ExpireTime: start.Add(time.Minute)}))(t)
		preview, err := f.planner.Plan(f.ctx, linear(3, rollout.Policy{}), "s")
		if err != nil {
			t.Fatal(err)
		}
		if len(preview.Excluded) != 3 {
			t.Fatalf("preview excluded %d; want all 3 covered now", len(preview.Excluded))
		}
		f.clock.Advance(2 * time.Minute) // the data plane's freeze is over
		r := f.start(linear(3, rollout.Policy{}))
		f.step()
		f.upgrade(r.ID, nil)
		cs := f.clusters(r.ID)
		if cs["frozen"].State != store.ClusterExcluded || !strings.Contains(cs["frozen"].Detail, "customer freeze") {
			t.Errorf("frozen: %+v; want excluded with the reason", cs["frozen"])
		}
		if cs["thawed"].State != store.ClusterDispatched {
			t.Errorf("thawed: %s; want dispatched (its exclusion expired)", cs["thawed"].State)
		}
		if cs["night"].State != store.ClusterEligible || !strings.Contains(cs["night"].Detail, "2026-11-21T02:00:00+01:00") {
			t.Fatalf("night on Friday: %+v; want eligible, waiting for Saturday 02:00 Berlin", cs["night"])
		}
		// Saturday 01:59 Berlin is 00:59 UTC: still waiting.
		f.clock.Advance(time.Date(2026, 11, 21, 0, 59, 0, 0, time.UTC).Sub(f.clock.Now()))
		f.step()
		if st := f.clusters(r.ID)["night"].State; st != store.ClusterEligible {
			t.Fatalf("night at 01:59 Berlin: %s; want still eligible", st)
		}
		f.clock.Advance(2 * time.Minute)
		f.step()
		if st := f.clusters(r.ID)["night"].State; st != store.ClusterDispatched {
			t.Fatalf("night at 02:01 Berlin: %s; want dispatched", st)
		}
		if got := f.get(r.ID); got.Counts.Excluded != 1 || got.Counts.Broken() != 0 {
			t.Fatalf("counts %+v; the excluded cluster must not count against budgets", got.Counts)
		}
		_ = night
	})
}

// Compatibility is checked again just before dispatch: a cluster whose
// host was downgraded after planning is skipped with the rule.
func TestCompatibilityAtDispatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		a := f.cluster("a", "3.5.0", nil, nil)
		f.cluster("b", "3.5.0", nil, nil)
		r := f.start(linear(1, rollout.Policy{}))
		cs := f.clusters(r.ID)
		late := cs["a"]
		if late.Wave == 0 {
			late = cs["b"]
		}
		if _, err := f.st.UpdateCluster(f.ctx, operator, "", late.ClusterID, "", func(c *store.Cluster) error {
			c.HostVersion = "3.0.0"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			f.step()
			f.upgrade(r.ID, nil)
		}
		got := f.clusters(r.ID)[late.Name]
		if got.State != store.ClusterSkipped || !strings.Contains(got.Detail, "host 3.0.0 is outside the range") {
			t.Fatalf("%s: %+v; want skipped with the rule", late.Name, got)
		}
		if f.dispatches(r.ID)[late.ClusterID] != 0 {
			t.Fatalf("the incompatible cluster was dispatched")
		}
		_ = a
	})
}

// Only the lease holder drives rollouts; a replica whose lease lapsed
// changes nothing, and another takes over when it expires.
func TestLeaseFencesTheEngine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 4 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(4, rollout.Policy{Concurrency: 1}))
		b := f.engine("replica-b")
		f.step() // a holds the lease and dispatches one
		if err := b.Step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(f.dispatches(r.ID)); n != 1 {
			t.Fatalf("%d dispatched with two engines; want 1", n)
		}
		// a stops renewing (killed); b takes over after the TTL.
		f.clock.Advance(11 * time.Second)
		f.upgrade(r.ID, nil)
		if err := b.Step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(f.dispatches(r.ID)); n != 2 {
			t.Fatalf("%d dispatched after the takeover; want 2", n)
		}
		// A write fenced by a's lapsed lease changes nothing.
		next := ""
		for _, rc := range f.clusters(r.ID) {
			if rc.State == store.ClusterEligible {
				next = rc.ClusterID
			}
		}
		_, err := f.st.DispatchCluster(f.ctx, store.Fence{Name: rollout.LeaseName, Holder: "replica-a"}, operator, r.ID, next, time.Minute,
			func(store.Cluster, store.Release) store.Gate { return store.Gate{} })
		if !errors.Is(err, store.ErrLeaseLost) {
			t.Fatalf("dispatch under a lapsed lease: %v; want ErrLeaseLost", err)
		}
		if n := len(f.dispatches(r.ID)); n != 2 {
			t.Fatalf("%d dispatched; the fenced write went through", n)
		}
	})
}

// Operations: expedite moves a pending cluster into the running wave;
// pause stops dispatches; cancel skips what was not dispatched; rollback
// returns the dispatched clusters to their previous version; a cluster
// held by one rollout is busy for another.
func TestOperations(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 6 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(2, rollout.Policy{}))
		f.step()
		var last store.RolloutCluster
		for _, rc := range f.clusters(r.ID) {
			if rc.Wave == 2 {
				last = rc
			}
		}
		got := must(f.st.ExpediteCluster(f.ctx, operator, r.ID, last.ClusterID, time.Hour, func(c store.Cluster, rel store.Release) string {
			return rollout.Incompatible(rel, c)
		}))(t)
		if got.Wave != 0 || got.State != store.ClusterEligible {
			t.Fatalf("expedited: %+v; want eligible in wave 0", got)
		}
		if _, err := f.st.ExpediteCluster(f.ctx, operator, r.ID, last.ClusterID, time.Hour, func(store.Cluster, store.Release) string { return "" }); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Fatalf("expediting twice: %v; want FailedPrecondition", err)
		}
		f.step()
		if st := f.clusters(r.ID)[last.Name].State; st != store.ClusterDispatched {
			t.Fatalf("expedited cluster: %s; want dispatched in wave 0", st)
		}

		// Busy: another rollout cannot take these clusters.
		plan, err := f.planner.Plan(f.ctx, linear(1, rollout.Policy{}), "b")
		if !errors.Is(err, rollout.ErrNothingToDo) || len(plan.Busy) != 6 {
			t.Fatalf("second rollout: %v, %d busy; want all 6 busy", err, len(plan.Busy))
		}

		if _, err := f.st.SetRolloutState(f.ctx, store.Fence{}, operator, r.ID, []string{store.RolloutRunning}, store.RolloutPaused, "looking", "rollout.pause"); err != nil {
			t.Fatal(err)
		}
		f.upgrade(r.ID, nil)
		f.step()
		f.clock.Advance(time.Hour)
		f.step()
		if got := f.get(r.ID); got.Counts.Succeeded != 3 || got.Counts.Pending != 3 {
			t.Fatalf("paused: %+v; want the 3 in flight finished, 3 pending", got.Counts)
		}
		rb, err := f.planner.Rollback(f.ctx, operator, r.ID, "bad version")
		if err != nil {
			t.Fatal(err)
		}
		orig := f.get(r.ID)
		if orig.State != store.RolloutCancelled || orig.Counts.Skipped != 3 || orig.RolledBackBy != rb.ID {
			t.Fatalf("original after rollback: %s %+v by %q", orig.State, orig.Counts, orig.RolledBackBy)
		}
		if rb.TargetVersion != "1.0.0" || rb.Counts.Pending != 3 || rb.RollbackOf != r.ID {
			t.Fatalf("rollback: target %s counts %+v; want 3 clusters back to 1.0.0", rb.TargetVersion, rb.Counts)
		}
		for range 10 {
			f.step()
			f.upgrade(rb.ID, nil)
			f.clock.Advance(time.Minute)
		}
		if got := f.get(rb.ID); got.State != store.RolloutCompleted || got.Counts.Succeeded != 3 {
			t.Fatalf("rollback: %s %+v; want completed", got.State, got.Counts)
		}
		for _, rc := range f.clusters(rb.ID) {
			if v, _ := f.desiredDoc(rc.ClusterID); v != "1.0.0" {
				t.Errorf("%s desired %s after the rollback", rc.Name, v)
			}
		}
		if _, err := f.planner.Rollback(f.ctx, operator, r.ID, ""); !errors.Is(err, store.ErrFailedPrecondition) {
			t.Fatalf("second rollback: %v; want FailedPrecondition", err)
		}
		ids := must(f.st.PauseAllRollouts(f.ctx, operator, "incident"))(t)
		if len(ids) != 0 {
			t.Fatalf("pause all paused %v; nothing runs", ids)
		}
	})
}

// A rollback that has nothing to do (no cluster dispatched yet) fails and
// leaves the rollout running as it was.
func TestFailedRollbackChangesNothing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		f.cluster("a", "3.5.0", nil, nil)
		r := f.start(linear(1, rollout.Policy{}))
		if _, err := f.planner.Rollback(f.ctx, operator, r.ID, "oops"); !errors.Is(err, rollout.ErrNothingToDo) {
			t.Fatalf("rollback before any dispatch: %v; want ErrNothingToDo", err)
		}
		if got := f.get(r.ID); got.State != store.RolloutRunning || got.RolledBackBy != "" || got.Counts.Pending != 1 {
			t.Fatalf("after a failed rollback: %s %+v by %q; want running as before", got.State, got.Counts, got.RolledBackBy)
		}
	})
}
