package adminapi_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/admintest"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

func linearSpec(mod func(*adminv1.RolloutSpec)) *adminv1.RolloutSpec {
	s := &adminv1.RolloutSpec{Product: "kafka", TargetVersion: "1.1.0",
		Shape: &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{BatchSize: 2}}}}
	if mod != nil {
		mod(s)
	}
	return s
}

// TestRolloutRequestValidation: every malformed rollout request is refused
// with InvalidArgument naming the field, before anything is written.
func TestRolloutRequestValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	c := s.Operator().Rollouts
	before := auditIDs(t, s)
	for _, tc := range []struct {
		field string
		spec  *adminv1.RolloutSpec
	}{
		{"spec", nil},
		{"spec.product", linearSpec(func(s *adminv1.RolloutSpec) { s.Product = "" })},
		{"spec.product", linearSpec(func(s *adminv1.RolloutSpec) { s.Product = "Kafka!" })},
		{"spec.target_version", linearSpec(func(s *adminv1.RolloutSpec) { s.TargetVersion = "v1.1" })},
		{"spec.shape", linearSpec(func(s *adminv1.RolloutSpec) { s.Shape = nil })},
		{"spec.shape.linear.batch_size", linearSpec(func(s *adminv1.RolloutSpec) {
			s.Shape = &adminv1.RolloutShape{Shape: &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{}}}
		})},
		{"spec.query", linearSpec(func(s *adminv1.RolloutSpec) { s.Query = "version>=banana" })},
		{"spec.policy.failure_budget.percent", linearSpec(func(s *adminv1.RolloutSpec) {
			s.Policy = &adminv1.RolloutPolicy{FailureBudget: &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Percent{Percent: 150}}}
		})},
		{"spec.policy.global_failure_budget.count", linearSpec(func(s *adminv1.RolloutSpec) {
			s.Policy = &adminv1.RolloutPolicy{GlobalFailureBudget: &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: -1}}}
		})},
		{"spec.policy.verify_timeout", linearSpec(func(s *adminv1.RolloutSpec) {
			s.Policy = &adminv1.RolloutPolicy{VerifyTimeout: durationpb.New(30 * 24 * time.Hour)}
		})},
		{"spec.policy.base_soak", linearSpec(func(s *adminv1.RolloutSpec) {
			s.Policy = &adminv1.RolloutPolicy{BaseSoak: durationpb.New(-time.Minute)}
		})},
		{"spec.policy.concurrency", linearSpec(func(s *adminv1.RolloutSpec) { s.Policy = &adminv1.RolloutPolicy{Concurrency: -1} })},
		{"spec.policy.sensitive_batch_size", linearSpec(func(s *adminv1.RolloutSpec) { s.Policy = &adminv1.RolloutPolicy{SensitiveBatchSize: 2} })},
	} {
		t.Run(tc.field, func(t *testing.T) {
			_, err := c.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: tc.spec}))
			admintest.WantInvalidField(t, err, tc.field)
			_, err = c.PreviewRollout(ctx, connect.NewRequest(&adminv1.PreviewRolloutRequest{Spec: tc.spec}))
			admintest.WantInvalidField(t, err, tc.field)
		})
	}
	for _, tc := range []struct {
		field string
		call  func() error
	}{
		{"reason", func() error {
			_, err := c.PauseRollout(ctx, connect.NewRequest(&adminv1.PauseRolloutRequest{Id: unknownID()}))
			return err
		}},
		{"id", func() error {
			_, err := c.GetRollout(ctx, connect.NewRequest(&adminv1.GetRolloutRequest{Id: "nope"}))
			return err
		}},
		{"reason", func() error {
			_, err := c.PauseAllRollouts(ctx, connect.NewRequest(&adminv1.PauseAllRolloutsRequest{}))
			return err
		}},
		{"concurrency", func() error {
			_, err := c.UpdateRolloutPolicy(ctx, connect.NewRequest(&adminv1.UpdateRolloutPolicyRequest{Id: unknownID()}))
			return err
		}},
		{"exclusion.scope_type", func() error {
			_, err := c.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: &adminv1.Exclusion{
				ScopeType: "region", ScopeId: unknownID(), Reason: "r", ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}}))
			return err
		}},
		{"exclusion.expire_time", func() error {
			_, err := c.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: &adminv1.Exclusion{
				ScopeType: "cluster", ScopeId: unknownID(), Reason: "r", ExpireTime: timestamppb.New(time.Now().Add(-time.Hour))}}))
			return err
		}},
		{"exclusion.expire_time", func() error {
			_, err := c.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: &adminv1.Exclusion{
				ScopeType: "cluster", ScopeId: unknownID(), Reason: "r", ExpireTime: timestamppb.New(time.Now().Add(200 * 24 * time.Hour))}}))
			return err
		}},
		{"exclusion.reason", func() error {
			_, err := c.CreateExclusion(ctx, connect.NewRequest(&adminv1.CreateExclusionRequest{Exclusion: &adminv1.Exclusion{
				ScopeType: "cluster", ScopeId: unknownID(), ExpireTime: timestamppb.New(time.Now().Add(time.Hour))}}))
			return err
		}},
	} {
		t.Run(tc.field, func(t *testing.T) { admintest.WantInvalidField(t, tc.call(), tc.field) })
	}
	wantNoNewAudit(t, s, before)
}

// TestRolloutThroughTheAPI: preview and start give the same plan for the
// same seed; a missing target and an empty selection are failed
// preconditions; a cluster's maintenance window is validated when it is
// set; operations move the rollout's state and are audited.
func TestRolloutThroughTheAPI(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := admintest.Start(t, admintest.Config{})
	acme := s.SeedTenant(t, "acme")
	op := s.Operator()
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := op.Releases.CreateRelease(ctx, connect.NewRequest(&adminv1.CreateReleaseRequest{Release: &adminv1.Release{
			Product: "kafka", Version: v}})); err != nil {
			t.Fatal(err)
		}
	}
	_, err := op.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
		DataPlaneId: acme.DataPlane.Id, Name: "bad-window", Product: "kafka",
		Properties: mustStruct(t, map[string]any{"maintenance_window": map[string]any{"time_zone": "Mars/Olympus", "start": "02:00", "duration": "1h"}})}}))
	admintest.WantInvalidField(t, err, "cluster.properties.maintenance_window.time_zone")

	_, err = op.Rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: linearSpec(nil)}))
	wantCode(t, err, connect.CodeFailedPrecondition) // no cluster of kafka yet
	_, err = op.Rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: linearSpec(func(s *adminv1.RolloutSpec) { s.TargetVersion = "9.9.9" })}))
	wantCode(t, err, connect.CodeFailedPrecondition) // not a release

	for i := range 5 {
		if _, err := op.Clusters.CreateCluster(ctx, connect.NewRequest(&adminv1.CreateClusterRequest{Cluster: &adminv1.Cluster{
			DataPlaneId: acme.DataPlane.Id, Name: "k" + string(rune('a'+i)), Product: "kafka", DesiredVersion: "1.0.0",
			Properties: mustStruct(t, map[string]any{"maintenance_window": map[string]any{"time_zone": "Europe/Berlin", "start": "02:00", "duration": "4h"}})}})); err != nil {
			t.Fatal(err)
		}
	}
	spec := linearSpec(func(s *adminv1.RolloutSpec) { s.Seed = "same" })
	preview, err := op.Rollouts.PreviewRollout(ctx, connect.NewRequest(&adminv1.PreviewRolloutRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	started, err := op.Rollouts.StartRollout(ctx, connect.NewRequest(&adminv1.StartRolloutRequest{Spec: spec}))
	if err != nil {
		t.Fatal(err)
	}
	r := started.Msg.Rollout
	if len(r.Waves) != len(preview.Msg.Waves) || len(r.Waves) != 3 || r.State != adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("started %v; previewed %v", r.Waves, preview.Msg.Waves)
	}
	cl, err := op.Rollouts.ListRolloutClusters(ctx, connect.NewRequest(&adminv1.ListRolloutClustersRequest{RolloutId: r.Id, PageSize: 2}))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cl.Msg.Clusters {
		if p := preview.Msg.Clusters[i]; p.ClusterId != c.ClusterId || p.Wave != c.Wave {
			t.Errorf("cluster %d: started %s in wave %d, previewed %s in wave %d", i, c.Name, c.Wave, p.Name, p.Wave)
		}
	}
	if cl.Msg.NextPageToken == "" {
		t.Fatal("no next page after 2 of 5")
	}
	// The clusters are busy for another rollout.
	again, err := op.Rollouts.PreviewRollout(ctx, connect.NewRequest(&adminv1.PreviewRolloutRequest{Spec: spec}))
	if err != nil || len(again.Msg.Busy) != 5 {
		t.Fatalf("second preview: %v busy, %v; want 5 busy", len(again.Msg.GetBusy()), err)
	}

	paused, err := op.Rollouts.PauseAllRollouts(ctx, connect.NewRequest(&adminv1.PauseAllRolloutsRequest{Reason: "incident 42"}))
	if err != nil || len(paused.Msg.PausedIds) != 1 || paused.Msg.PausedIds[0] != r.Id {
		t.Fatalf("pause all: %v, %v", paused, err)
	}
	_, err = op.Rollouts.PauseRollout(ctx, connect.NewRequest(&adminv1.PauseRolloutRequest{Id: r.Id, Reason: "again"}))
	wantCode(t, err, connect.CodeFailedPrecondition)
	two := int32(2)
	up, err := op.Rollouts.UpdateRolloutPolicy(ctx, connect.NewRequest(&adminv1.UpdateRolloutPolicyRequest{Id: r.Id, Concurrency: &two,
		FailureBudget: &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Percent{Percent: 50}}}))
	if err != nil || up.Msg.Rollout.Waves[0].FailureBudget != 1 || up.Msg.Rollout.Spec.Policy.Concurrency != 2 {
		t.Fatalf("update policy: %v, %v", up, err)
	}
	res, err := op.Rollouts.ResumeRollout(ctx, connect.NewRequest(&adminv1.ResumeRolloutRequest{Id: r.Id}))
	if err != nil || res.Msg.Rollout.State != adminv1.RolloutState_ROLLOUT_STATE_RUNNING {
		t.Fatalf("resume: %v, %v", res, err)
	}
	can, err := op.Rollouts.CancelRollout(ctx, connect.NewRequest(&adminv1.CancelRolloutRequest{Id: r.Id, Reason: "done testing"}))
	if err != nil || can.Msg.Rollout.State != adminv1.RolloutState_ROLLOUT_STATE_CANCELLED || can.Msg.Rollout.Counts.Skipped != 5 {
		t.Fatalf("cancel: %v, %v", can, err)
	}
	actions := map[string]int{}
	for _, e := range s.AuditEvents(t) {
		if e.ResourceId == r.Id {
			actions[e.Action]++
		}
	}
	for _, a := range []string{"rollout.start", "rollout.pause", "rollout.update", "rollout.resume", "rollout.cancel"} {
		if actions[a] != 1 {
			t.Errorf("audit %s: %d events; want 1 (all: %v)", a, actions[a], actions)
		}
	}
}
