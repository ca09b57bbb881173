package cairnctl

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

var renderNow = time.Date(2026, 11, 21, 16, 0, 0, 0, time.UTC)

func at(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(renderNow.Add(d)) }

// fixture is a three-wave linear rollout of five clusters: wave 1 (one
// cluster), wave 2 (two), wave 3 (two, sensitive).
func fixture(state adminv1.RolloutState, reason string, current int32, waves ...*adminv1.RolloutCounts) *adminv1.Rollout {
	r := &adminv1.Rollout{Id: "r-1", State: state, Reason: reason, CurrentWave: current, Counts: &adminv1.RolloutCounts{},
		GlobalFailureBudget: 5, CreatedBy: "operator:alice", CreateTime: at(-time.Hour),
		Spec: &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0", Query: "env=prod", Shape: linear(1),
			Policy: &adminv1.RolloutPolicy{BaseSoak: durationpb.New(10 * time.Minute)}}}
	sizes := []int32{1, 2, 2}
	for i, c := range waves {
		w := &adminv1.RolloutWave{Index: int32(i), Size: sizes[i], Concurrency: 1, FailureBudget: int32(i), Soak: durationpb.New(10 * time.Minute),
			Sensitive: i == 2, Counts: c}
		r.Waves = append(r.Waves, w)
		t := r.Counts
		t.Pending += c.Pending
		t.Eligible += c.Eligible
		t.Dispatched += c.Dispatched
		t.Verifying += c.Verifying
		t.Succeeded += c.Succeeded
		t.Failed += c.Failed
		t.Unreachable += c.Unreachable
		t.Skipped += c.Skipped
		t.Excluded += c.Excluded
	}
	return r
}

func statusCases() []struct {
	name string
	r    *adminv1.Rollout
} {
	running, paused := adminv1.RolloutState_ROLLOUT_STATE_RUNNING, adminv1.RolloutState_ROLLOUT_STATE_PAUSED
	completed, cancelled := adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, adminv1.RolloutState_ROLLOUT_STATE_CANCELLED
	type rc = adminv1.RolloutCounts

	started := fixture(running, "", 0, &rc{Eligible: 1}, &rc{Pending: 2}, &rc{Pending: 2})
	started.Waves[0].StartTime = at(-time.Second)

	soaking := fixture(running, "", 0, &rc{Succeeded: 1}, &rc{Pending: 2}, &rc{Pending: 2})
	soaking.Waves[0].StartTime, soaking.Waves[0].DoneTime, soaking.Waves[0].SoakUntil = at(-10*time.Minute), at(-5*time.Minute), at(4*time.Minute+30*time.Second)

	partial := fixture(running, "", 1, &rc{Succeeded: 1}, &rc{Succeeded: 1, Dispatched: 1}, &rc{Pending: 2})
	partial.Waves[0].StartTime, partial.Waves[0].DoneTime, partial.Waves[0].SoakUntil = at(-50*time.Minute), at(-40*time.Minute), at(-30*time.Minute)
	partial.Waves[1].StartTime = at(-29 * time.Minute)

	done := fixture(completed, "5 succeeded, 0 failed, 0 unreachable, 0 skipped, 0 excluded", 3, &rc{Succeeded: 1}, &rc{Succeeded: 2}, &rc{Succeeded: 2})
	for _, w := range done.Waves {
		w.StartTime, w.DoneTime, w.SoakUntil = at(-time.Hour), at(-time.Hour), at(-time.Hour)
	}

	budget := fixture(paused, "wave 1 failure budget exceeded: 2 failed or unreachable > 1 allowed", 1,
		&rc{Succeeded: 1}, &rc{Failed: 1, Unreachable: 1}, &rc{Pending: 2})
	budget.Spec.Policy.GlobalFailureBudget = percent(50)
	budget.GlobalFailureBudget = 2
	budget.Waves[0].StartTime, budget.Waves[0].DoneTime, budget.Waves[0].SoakUntil = at(-time.Hour), at(-time.Hour), at(-time.Hour)
	budget.Waves[1].StartTime = at(-time.Minute)

	overdue := fixture(running, "", 1, &rc{Succeeded: 1}, &rc{Eligible: 1, Verifying: 1}, &rc{Pending: 2})
	overdue.OverdueClusters = 2
	overdue.Waves[0].StartTime, overdue.Waves[0].DoneTime = at(-3*time.Hour), at(-3*time.Hour)
	overdue.Waves[1].StartTime = at(-2 * time.Hour)

	stopped := fixture(cancelled, "wrong target", 1, &rc{Succeeded: 1}, &rc{Succeeded: 1, Skipped: 1}, &rc{Skipped: 2})
	stopped.RolledBackBy = "r-2"
	stopped.Waves[0].StartTime, stopped.Waves[0].DoneTime = at(-time.Hour), at(-time.Hour)
	stopped.Waves[1].StartTime, stopped.Waves[1].DoneTime = at(-time.Minute), at(-time.Minute)
	stopped.Waves[1].SoakUntil = at(9 * time.Minute)

	return []struct {
		name string
		r    *adminv1.Rollout
	}{
		{"0% just started", started}, {"soaking", soaking}, {"partial", partial}, {"100% completed", done},
		{"paused by a budget", budget}, {"overdue", overdue}, {"cancelled and rolled back", stopped},
	}
}

// goldenStatus is the status view of each of statusCases.
var goldenStatus = map[string]string{
	"0% just started": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     running
Progress:  [..........] 0/5 clusters done, wave 1 of 3
Clusters:  0 succeeded, 0 failed, 0 unreachable, 0 in flight, 5 pending, 0 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [..........]  0/1   0          0       0            0          1        0        0         0/0     running
2              [..........]  0/2   0          0       0            0          2        0        0         0/1     waiting
3 (sensitive)  [..........]  0/2   0          0       0            0          2        0        0         0/2     waiting
`,
	"soaking": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     running
Progress:  [##........] 1/5 clusters done, wave 1 of 3
Clusters:  1 succeeded, 0 failed, 0 unreachable, 0 in flight, 4 pending, 0 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     soaking, 4m30s left
2              [..........]  0/2   0          0       0            0          2        0        0         0/1     waiting
3 (sensitive)  [..........]  0/2   0          0       0            0          2        0        0         0/2     waiting
`,
	"partial": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     running
Progress:  [####......] 2/5 clusters done, wave 2 of 3
Clusters:  2 succeeded, 0 failed, 0 unreachable, 1 in flight, 2 pending, 0 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     done
2              [#####.....]  1/2   1          0       0            1          0        0        0         0/1     running
3 (sensitive)  [..........]  0/2   0          0       0            0          2        0        0         0/2     waiting
`,
	"100% completed": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     completed: 5 succeeded, 0 failed, 0 unreachable, 0 skipped, 0 excluded
Progress:  [##########] 5/5 clusters done, every wave done
Clusters:  5 succeeded, 0 failed, 0 unreachable, 0 in flight, 0 pending, 0 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     done
2              [##########]  2/2   2          0       0            0          0        0        0         0/1     done
3 (sensitive)  [##########]  2/2   2          0       0            0          0        0        0         0/2     done
`,
	"paused by a budget": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     paused: wave 1 failure budget exceeded: 2 failed or unreachable > 1 allowed
Progress:  [######....] 3/5 clusters done, wave 2 of 3
Clusters:  1 succeeded, 1 failed, 1 unreachable, 0 in flight, 2 pending, 0 skipped, 0 excluded
Failures:  2 (the rollout tolerates 2)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     done
2              [##########]  2/2   0          1       1            0          0        0        0         2/1     paused
3 (sensitive)  [..........]  0/2   0          0       0            0          2        0        0         0/2     waiting
`,
	"overdue": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     running
Progress:  [##........] 1/5 clusters done, wave 2 of 3
Clusters:  1 succeeded, 0 failed, 0 unreachable, 1 in flight, 3 pending, 0 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   2 clusters past their state's deadline (see cairnctl rollout clusters r-1)
Created:   2026-11-21T15:00:00Z by operator:alice

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     done
2              [..........]  0/2   0          0       0            1          1        0        0         0/1     running
3 (sensitive)  [..........]  0/2   0          0       0            0          2        0        0         0/2     waiting
`,
	"cancelled and rolled back": `Rollout:   r-1
Target:    kafka 1.1.0, clusters matching env=prod
State:     cancelled: wrong target
Progress:  [##########] 5/5 clusters done, wave 2 of 3
Clusters:  2 succeeded, 0 failed, 0 unreachable, 0 in flight, 0 pending, 3 skipped, 0 excluded
Failures:  0 (per-wave budgets only)
Overdue:   0
Created:   2026-11-21T15:00:00Z by operator:alice
Reverted:  by rollout r-2

WAVE           PROGRESS      DONE  SUCCEEDED  FAILED  UNREACHABLE  IN FLIGHT  PENDING  SKIPPED  EXCLUDED  BUDGET  STATUS
1              [##########]  1/1   1          0       0            0          0        0        0         0/0     done
2              [##########]  2/2   1          0       0            0          0        1        0         0/1     done
3 (sensitive)  [##########]  2/2   0          0       0            0          0        2        0         0/2     not started
`,
}

func TestRenderStatus(t *testing.T) {
	for _, tc := range statusCases() {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := renderStatus(tc.r, renderNow), goldenStatus[tc.name]; got != want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int32
		want        string
	}{
		{0, 10, "[..........]"},
		{1, 10, "[#.........]"},
		{1, 3, "[###.......]"},
		{2, 3, "[######....]"},
		{99, 100, "[#########.]"}, // full only when everything is done
		{1, 100, "[..........]"},
		{10, 10, "[##########]"},
		{0, 0, "[##########]"}, // nothing to do is done
		{12, 10, "[##########]"},
	} {
		if got := progressBar(tc.done, tc.total); got != tc.want {
			t.Errorf("progressBar(%d, %d): got %s; want %s", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestRenderPreview(t *testing.T) {
	p := &adminv1.PreviewRolloutResponse{
		GlobalFailureBudget: 3,
		Waves: []*adminv1.RolloutWave{
			{Index: 0, Size: 1, Concurrency: 1, Soak: durationpb.New(20 * time.Minute)},
			{Index: 1, Size: 2, Concurrency: 2, FailureBudget: 1, Soak: durationpb.New(0), Sensitive: true},
		},
		Clusters: []*adminv1.PlannedCluster{
			{ClusterId: "c-1", Name: "k1", DataPlaneId: "dp-1", Wave: 0, CurrentVersion: "1.0.0"},
			{ClusterId: "c-2", Name: "k2", DataPlaneId: "dp-1", Wave: 1},
			{ClusterId: "c-3", Name: "k3", DataPlaneId: "dp-1", Wave: 1, CurrentVersion: "1.0.0"},
		},
		Skipped: []*adminv1.PlannedCluster{{ClusterId: "c-4", Name: "k4", Wave: -1, CurrentVersion: "0.9.0",
			Detail: "incompatible: host >=3.0.0 (host 2.1.0)"}},
		Busy: []*adminv1.PlannedCluster{{ClusterId: "c-5", Name: "k5", Wave: -1, Detail: "held by rollout r-0"}},
	}
	want := `3 clusters in 2 waves, global failure budget 3

WAVE  SIZE  CONCURRENCY  BUDGET  SOAK  SENSITIVE
1     1     1            0       20m   no
2     2     2            1       -     yes

Skipped (incompatible or already on the target): 1
  NAME  CURRENT  WHY                                      ID
  k4    0.9.0    incompatible: host >=3.0.0 (host 2.1.0)  c-4
Excluded (planned; an exclusion covers them now): none
Busy (another rollout holds them; not planned): 1
  NAME  CURRENT  WHY                  ID
  k5    -        held by rollout r-0  c-5
`
	if got := renderPreview(p, false); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	withClusters := renderPreview(p, true)
	for _, line := range []string{"NAME  WAVE  CURRENT  DATA PLANE  ID", "k1    1     1.0.0    dp-1        c-1", "k2    2     -        dp-1        c-2"} {
		if !strings.Contains(withClusters, line+"\n") {
			t.Errorf("preview --clusters: no line %q in:\n%s", line, withClusters)
		}
	}
	if got := renderPreview(&adminv1.PreviewRolloutResponse{}, false); !strings.HasPrefix(got, "nothing to do") {
		t.Errorf("empty preview: got %q; want it to say there is nothing to do", got)
	}
}

func TestRenderStarted(t *testing.T) {
	r := fixture(adminv1.RolloutState_ROLLOUT_STATE_RUNNING, "", 0, &adminv1.RolloutCounts{Pending: 1}, &adminv1.RolloutCounts{Pending: 2},
		&adminv1.RolloutCounts{Pending: 2})
	r.Counts.Skipped = 1
	got := renderStarted(&adminv1.StartRolloutResponse{Rollout: r,
		Busy: []*adminv1.PlannedCluster{{ClusterId: "c-9", Name: "k9", Wave: -1, Detail: "held by rollout r-0"}}})
	want := `rollout r-1 started: kafka 1.1.0, clusters matching env=prod; 5 clusters in 3 waves (1 skipped), global failure budget 5
Busy (another rollout holds them; not in this one): 1
  NAME  CURRENT  WHY                  ID
  k9    -        held by rollout r-0  c-9
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderRolloutClusters(t *testing.T) {
	got := renderRolloutClusters([]*adminv1.RolloutCluster{
		{ClusterId: "c-1", Name: "k1", Wave: 0, State: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_SUCCEEDED, TargetVersion: "1.1.0", PreviousVersion: "1.0.0"},
		{ClusterId: "c-2", Name: "k2", Wave: 1, State: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_FAILED, Unreachable: true,
			Detail: "no report before the deadline", TargetVersion: "1.1.0", PreviousVersion: "1.0.0"},
		{ClusterId: "c-3", Name: "k3", Wave: 1, State: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_ELIGIBLE, TargetVersion: "1.1.0", Overdue: true},
		{ClusterId: "c-4", Name: "k4", Wave: -1, State: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_SKIPPED, Detail: "already runs 1.1.0", TargetVersion: "1.1.0"},
	})
	want := `NAME  WAVE  STATE                 DETAIL                         TARGET  PREVIOUS  OVERDUE  ID
k1    1     succeeded             -                              1.1.0   1.0.0     no       c-1
k2    2     failed (unreachable)  no report before the deadline  1.1.0   1.0.0     no       c-2
k3    2     eligible              -                              1.1.0   -         yes      c-3
k4    -     skipped               already runs 1.1.0             1.1.0   -         no       c-4
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}
