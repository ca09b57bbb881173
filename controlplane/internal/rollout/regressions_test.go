package rollout_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/controlplane/internal/rollout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/waves"
	"github.com/cairnhq/cairn/internal/storetest"
)

// Regression tests for bugs a review found in the engine; each failed
// before its fix.

// A cluster expedited into a wave after the engine counted it as finished
// (between its read and FinishWave) kept the wave open: the rollout used
// to complete with that cluster never dispatched. FinishWave and
// CompleteRollout now check the wave's clusters in their transaction.
func TestExpediteDuringFinishWaveIsNotLost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 2 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(1, rollout.Policy{}))
		f.step() // wave 1 starts; its cluster is dispatched
		fence := store.Fence{Name: rollout.LeaseName, Holder: "replica-a"}
		var late store.RolloutCluster
		for _, rc := range f.clusters(r.ID) {
			switch rc.Wave {
			case 0: // the engine verifies it, and counts the wave finished
				if _, err := f.st.AdvanceCluster(f.ctx, fence, operator, rc, store.ClusterSucceeded, "", false); err != nil {
					t.Fatal(err)
				}
			case 1:
				late = rc
			}
		}
		// The operator's expedite lands between the engine's count and its
		// FinishWave.
		must(f.st.ExpediteCluster(f.ctx, operator, r.ID, late.ClusterID, time.Hour,
			func(store.Cluster, store.Release) string { return "" }))(t)
		if err := f.st.FinishWave(f.ctx, fence, r.ID, 0, f.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if w := f.get(r.ID).Waves[0]; w.DoneTime != nil {
			t.Fatal("wave 1 finished with an eligible cluster in it")
		}
		if err := f.st.CompleteRollout(f.ctx, fence, operator, r.ID, "done"); err != nil {
			t.Fatal(err)
		}
		if got := f.get(r.ID); got.State != store.RolloutRunning {
			t.Fatalf("rollout %s with an eligible cluster; want running", got.State)
		}
		for range 6 {
			f.step()
			f.upgrade(r.ID, nil)
		}
		if got := f.get(r.ID); got.State != store.RolloutCompleted || got.Counts.Succeeded != 2 || got.Waves[1].Size != 0 {
			t.Fatalf("rollout %s %+v; want completed with both succeeded", got.State, got.Counts)
		}
	})
}

// Clusters waiting for their window used to cost a transaction each on
// every pass, and the lease was renewed only at the start of a pass: on a
// slow database a pass outlived the lease and never reached the clusters
// behind them. Waiting clusters are now skipped until their window and the
// lease is renewed during a pass.
func TestLongPassReachesLateClusters(t *testing.T) {
	url := storetest.PostgresURL(t)
	f := newFixture(t, url)
	win := map[string]any{"maintenance_window": map[string]any{"time_zone": "UTC", "days": []any{"sun"}, "start": "02:00", "duration": "1h"}}
	for i := range 200 {
		var p map[string]any
		if i%10 != 0 {
			p = win
		}
		f.cluster(fmt.Sprintf("c%03d", i), "3.5.0", nil, p)
	}
	r := f.start(linear(200, rollout.Policy{}))
	// A store whose every clock reading is 50 ms later: a slow database.
	var mu sync.Mutex
	cur := f.clock.Now()
	slow, err := store.Open(f.ctx, store.Config{URL: url, Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		cur = cur.Add(50 * time.Millisecond)
		return cur
	}})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rollout.New(rollout.Config{Store: slow, Holder: "replica-a", Now: func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}, Tick: time.Second, LeaseTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := eng.Step(f.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.get(r.ID); got.Counts.Dispatched != 20 {
		t.Fatalf("dispatched %d of the 20 clusters without a window; counts %+v", got.Counts.Dispatched, got.Counts)
	}
}

// A second rollout to the version a cluster failed to reach used to fail
// it at once on the agent's report of the earlier attempt; now the
// deadline decides, and a later success counts.
func TestRetryRolloutWaitsForANewAttempt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		f.cluster("c0", "3.5.0", nil, nil)
		a := f.start(linear(1, rollout.Policy{FailureBudget: waves.Budget{Count: 1}}))
		f.step()
		f.upgrade(a.ID, func(store.RolloutCluster) bool { return true })
		f.step()
		id := f.clusters(a.ID)["c0"].ClusterID
		f.clock.Advance(time.Minute)
		b := f.start(linear(1, rollout.Policy{FailureBudget: waves.Budget{Count: 1}, VerifyTimeout: 10 * time.Minute}))
		f.step()
		f.clock.Advance(time.Second)
		// The agent's status still carries its earlier failure.
		f.report(store.ClusterReport{ClusterID: id, Version: "1.0.0", DesiredVersion: "1.1.0", Healthy: false, Detail: "hook exited 1"})
		f.step()
		if rc := f.clusters(b.ID)["c0"]; store.Final(rc.State) {
			t.Fatalf("retry: %s (%s) on the earlier attempt's failure; want it still in flight", rc.State, rc.Detail)
		}
		// Its retry succeeds.
		f.report(store.ClusterReport{ClusterID: id, Version: "1.1.0", DesiredVersion: "1.1.0", Healthy: true})
		f.step()
		if rc := f.clusters(b.ID)["c0"]; rc.State != store.ClusterSucceeded {
			t.Fatalf("retry after success: %s", rc.State)
		}
	})
}

// Resuming used to make later waves' own budgets zero: a failure within
// wave 2's budget paused the rollout again, naming wave 1.
func TestResumeKeepsLaterWaveBudgets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 4 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(2, rollout.Policy{FailureBudget: waves.Budget{Count: 1}}))
		f.step()
		f.upgrade(r.ID, func(store.RolloutCluster) bool { return true })
		f.step() // wave 1: 2 failed > 1: paused
		if got := f.get(r.ID); got.State != store.RolloutPaused {
			t.Fatalf("after 2 failures in wave 1: %s", got.State)
		}
		if _, err := f.st.SetRolloutState(f.ctx, store.Fence{}, operator, r.ID, []string{store.RolloutPaused}, store.RolloutRunning, "", "rollout.resume"); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			f.step()
		}
		n := 0
		f.upgrade(r.ID, func(store.RolloutCluster) bool { n++; return n == 1 })
		f.step()
		got := f.get(r.ID)
		if got.State == store.RolloutPaused {
			t.Fatalf("paused (%q) by one failure in wave 2, whose budget is 1", got.Reason)
		}
	})
}

// A rollout nobody drives between waves used to show nothing overdue;
// an expedited cluster that became eligible had no deadline.
func TestStuckRolloutShowsOverdue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		for i := range 3 {
			f.cluster(fmt.Sprintf("c%d", i), "3.5.0", nil, nil)
		}
		r := f.start(linear(1, rollout.Policy{BaseSoak: time.Minute}))
		f.step()
		var late store.RolloutCluster
		for _, rc := range f.clusters(r.ID) {
			if rc.Wave == 2 {
				late = rc
			}
		}
		got := must(f.st.ExpediteCluster(f.ctx, operator, r.ID, late.ClusterID, time.Hour,
			func(store.Cluster, store.Release) string { return "" }))(t)
		if got.Deadline == nil {
			t.Fatal("an expedited eligible cluster has no deadline")
		}
		f.upgrade(r.ID, nil)
		f.step()
		f.upgrade(r.ID, nil)
		f.step() // wave 1 done, soaking a minute
		if o := f.get(r.ID).Overdue; o != 0 {
			t.Fatalf("overdue %d while soaking", o)
		}
		// No replica drives it for a week.
		f.clock.Advance(7 * 24 * time.Hour)
		if o := f.get(r.ID).Overdue; o != 1 {
			t.Fatalf("overdue %d after a week without a driver; want the 1 pending cluster of wave 2", o)
		}
	})
}
