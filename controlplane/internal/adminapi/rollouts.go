package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cairnhq/cairn/controlplane/internal/rollout"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/waves"
	adminv1 "github.com/cairnhq/cairn/gen/cairn/admin/v1"
)

// Rollout request limits.
const (
	maxReasonLen       = 512
	maxSeedLen         = 128
	maxQueryLen        = 4096
	maxWaveSizes       = 100
	maxExclusionPeriod = 90 * 24 * time.Hour
)

type rollouts struct{ *Services }

var rolloutStates = map[string]adminv1.RolloutState{
	store.RolloutRunning: adminv1.RolloutState_ROLLOUT_STATE_RUNNING, store.RolloutPaused: adminv1.RolloutState_ROLLOUT_STATE_PAUSED,
	store.RolloutCompleted: adminv1.RolloutState_ROLLOUT_STATE_COMPLETED, store.RolloutCancelled: adminv1.RolloutState_ROLLOUT_STATE_CANCELLED,
}

var clusterStates = map[string]adminv1.RolloutClusterState{
	store.ClusterPending: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_PENDING, store.ClusterEligible: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_ELIGIBLE,
	store.ClusterDispatched: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_DISPATCHED, store.ClusterVerifying: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_VERIFYING,
	store.ClusterSucceeded: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_SUCCEEDED, store.ClusterFailed: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_FAILED,
	store.ClusterSkipped: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_SKIPPED, store.ClusterExcluded: adminv1.RolloutClusterState_ROLLOUT_CLUSTER_STATE_EXCLUDED,
}

func ts(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

func countsPB(c store.RolloutCounts) *adminv1.RolloutCounts {
	return &adminv1.RolloutCounts{Pending: int32(c.Pending), Eligible: int32(c.Eligible), Dispatched: int32(c.Dispatched),
		Verifying: int32(c.Verifying), Succeeded: int32(c.Succeeded), Failed: int32(c.Failed), Unreachable: int32(c.Unreachable),
		Skipped: int32(c.Skipped), Excluded: int32(c.Excluded)}
}

func budgetPB(b waves.Budget) *adminv1.FailureBudget {
	switch {
	case b.Percent > 0:
		return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Percent{Percent: b.Percent}}
	case b.Count > 0:
		return &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: int32(b.Count)}}
	}
	return nil
}

func specPB(s rollout.Spec) *adminv1.RolloutSpec {
	out := &adminv1.RolloutSpec{Product: s.Product, TargetVersion: s.TargetVersion, Query: s.Query, Seed: s.Seed, Shape: &adminv1.RolloutShape{},
		Policy: &adminv1.RolloutPolicy{BaseSoak: durationpb.New(s.Policy.BaseSoak), Concurrency: int32(s.Policy.Concurrency),
			FailureBudget: budgetPB(s.Policy.FailureBudget), ReserveSensitive: s.Policy.ReserveSensitive,
			SensitiveBatchSize: int32(s.Policy.SensitiveBatchSize), VerifyTimeout: durationpb.New(s.Policy.VerifyTimeout)}}
	if g := s.Policy.GlobalFailureBudget; g != nil {
		out.Policy.GlobalFailureBudget = budgetPB(*g)
		if out.Policy.GlobalFailureBudget == nil {
			out.Policy.GlobalFailureBudget = &adminv1.FailureBudget{Budget: &adminv1.FailureBudget_Count{Count: 0}}
		}
	}
	switch s.Shape.Kind {
	case rollout.ShapeLinear:
		out.Shape.Shape = &adminv1.RolloutShape_Linear{Linear: &adminv1.LinearShape{BatchSize: int32(s.Shape.BatchSize)}}
	case rollout.ShapeExponential:
		out.Shape.Shape = &adminv1.RolloutShape_Exponential{Exponential: &adminv1.ExponentialShape{Start: int32(s.Shape.Start), Factor: int32(s.Shape.Factor)}}
	case rollout.ShapeSCurve:
		out.Shape.Shape = &adminv1.RolloutShape_SCurve{SCurve: &adminv1.SCurveShape{}}
	case rollout.ShapeCustom:
		c := &adminv1.CustomShape{Percents: s.Shape.Percents}
		for _, n := range s.Shape.Sizes {
			c.Sizes = append(c.Sizes, int32(n))
		}
		out.Shape.Shape = &adminv1.RolloutShape_Custom{Custom: c}
	}
	return out
}

func rolloutPB(r store.Rollout) *adminv1.Rollout {
	spec, _ := rollout.ParseSpec(r)
	out := &adminv1.Rollout{Id: r.ID, Spec: specPB(spec), State: rolloutStates[r.State], Reason: r.Reason, CurrentWave: int32(r.CurrentWave),
		Counts: countsPB(r.Counts), GlobalFailureBudget: int32(r.GlobalFailureBudget), RollbackOf: r.RollbackOf, RolledBackBy: r.RolledBackBy,
		OverdueClusters: int32(r.Overdue), CreatedBy: r.CreatedBy, CreateTime: timestamppb.New(r.CreateTime), UpdateTime: timestamppb.New(r.UpdateTime)}
	if r.State == store.RolloutCompleted {
		out.CurrentWave = int32(len(r.Waves))
	}
	for _, w := range r.Waves {
		out.Waves = append(out.Waves, &adminv1.RolloutWave{Index: int32(w.Index), Size: int32(w.Size), Concurrency: int32(w.Concurrency),
			FailureBudget: int32(w.FailureBudget), Soak: durationpb.New(w.Soak), Sensitive: w.Sensitive, Counts: countsPB(w.Counts),
			StartTime: ts(w.StartTime), DoneTime: ts(w.DoneTime), SoakUntil: ts(w.SoakUntil)})
	}
	return out
}

func rolloutClusterPB(c store.RolloutCluster, now time.Time) *adminv1.RolloutCluster {
	return &adminv1.RolloutCluster{ClusterId: c.ClusterID, Name: c.Name, DataPlaneId: c.DataPlaneID, Wave: int32(c.Wave),
		State: clusterStates[c.State], Detail: c.Detail, Unreachable: c.Unreachable, TargetVersion: c.TargetVersion,
		PreviousVersion: c.PreviousVersion, StateTime: timestamppb.New(c.StateTime), Deadline: ts(c.Deadline),
		DispatchTime: ts(c.DispatchTime), Overdue: !store.Final(c.State) && c.Deadline != nil && now.After(*c.Deadline)}
}

func plannedPB(l rollout.Left) *adminv1.PlannedCluster {
	return &adminv1.PlannedCluster{ClusterId: l.Cluster.ID, Name: l.Cluster.Name, DataPlaneId: l.Cluster.DataPlaneID, Wave: -1,
		Detail: l.Detail, CurrentVersion: l.Cluster.ReportedVersion}
}

func (v *violations) budget(field string, b *adminv1.FailureBudget) waves.Budget {
	switch x := b.GetBudget().(type) {
	case *adminv1.FailureBudget_Count:
		if x.Count < 0 {
			v.add(field+".count", "must not be negative")
		}
		return waves.Budget{Count: int(x.Count)}
	case *adminv1.FailureBudget_Percent:
		if !(x.Percent >= 0 && x.Percent <= 100) {
			v.add(field+".percent", "must be between 0 and 100")
		}
		return waves.Budget{Percent: x.Percent}
	}
	return waves.Budget{}
}

func (v *violations) duration(field string, d interface {
	CheckValid() error
	AsDuration() time.Duration
}, max time.Duration) time.Duration {
	if err := d.CheckValid(); err != nil {
		v.add(field, "%v", err)
		return 0
	}
	if x := d.AsDuration(); x < 0 || x > max {
		v.add(field, "must be between 0 and %v", max)
	}
	return d.AsDuration()
}

// rolloutSpec validates a request's spec and returns it in the rollout
// package's form.
func rolloutSpec(s *adminv1.RolloutSpec) (rollout.Spec, error) {
	var v violations
	if s == nil {
		v.add("spec", "required")
		return rollout.Spec{}, v.err()
	}
	v.name("spec.product", s.Product)
	v.releaseVersion("spec.target_version", s.TargetVersion)
	v.maxLen("spec.query", s.Query, maxQueryLen)
	v.maxLen("spec.seed", s.Seed, maxSeedLen)
	out := rollout.Spec{Product: s.Product, TargetVersion: s.TargetVersion, Query: s.Query, Seed: s.Seed}
	switch x := s.GetShape().GetShape().(type) {
	case *adminv1.RolloutShape_Linear:
		out.Shape = rollout.Shape{Kind: rollout.ShapeLinear, BatchSize: int(x.Linear.GetBatchSize())}
	case *adminv1.RolloutShape_Exponential:
		out.Shape = rollout.Shape{Kind: rollout.ShapeExponential, Start: int(x.Exponential.GetStart()), Factor: int(x.Exponential.GetFactor())}
	case *adminv1.RolloutShape_SCurve:
		out.Shape = rollout.Shape{Kind: rollout.ShapeSCurve}
	case *adminv1.RolloutShape_Custom:
		if len(x.Custom.GetSizes()) > maxWaveSizes || len(x.Custom.GetPercents()) > maxWaveSizes {
			v.add("spec.shape.custom", "at most %d waves", maxWaveSizes)
		}
		out.Shape = rollout.Shape{Kind: rollout.ShapeCustom, Percents: x.Custom.GetPercents()}
		for _, n := range x.Custom.GetSizes() {
			out.Shape.Sizes = append(out.Shape.Sizes, int(n))
		}
	default:
		v.add("spec.shape", "required: linear, exponential, s_curve or custom")
	}
	if p := s.Policy; p != nil {
		if p.BaseSoak != nil {
			out.Policy.BaseSoak = v.duration("spec.policy.base_soak", p.BaseSoak, waves.MaxBaseSoak)
		}
		if p.VerifyTimeout != nil {
			out.Policy.VerifyTimeout = v.duration("spec.policy.verify_timeout", p.VerifyTimeout, rollout.MaxVerifyTimeout)
		}
		out.Policy.Concurrency = int(p.Concurrency)
		out.Policy.FailureBudget = v.budget("spec.policy.failure_budget", p.FailureBudget)
		if p.GlobalFailureBudget != nil {
			g := v.budget("spec.policy.global_failure_budget", p.GlobalFailureBudget)
			out.Policy.GlobalFailureBudget = &g
		}
		out.Policy.ReserveSensitive, out.Policy.SensitiveBatchSize = p.ReserveSensitive, int(p.SensitiveBatchSize)
	}
	return out, v.err()
}

// planError maps the planner's errors: bad shapes, policies and queries
// are the caller's (InvalidArgument with the field), nothing to do is a
// failed precondition.
func (s *Services) planError(ctx context.Context, err error) error {
	var v violations
	switch {
	case v.fieldErrors("spec.", err):
		return v.err()
	case errors.Is(err, rollout.ErrBadQuery):
		v.add("spec.query", "%v", err)
		return v.err()
	case errors.Is(err, rollout.ErrNothingToDo), errors.Is(err, rollout.ErrTooMany):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return s.toConnect(ctx, err)
}

func (s *rollouts) planner() *rollout.Planner { return &rollout.Planner{St: s.st} }

func (s *rollouts) PreviewRollout(ctx context.Context, req *connect.Request[adminv1.PreviewRolloutRequest]) (*connect.Response[adminv1.PreviewRolloutResponse], error) {
	if _, err := operatorWide(ctx); err != nil {
		return nil, err
	}
	spec, err := rolloutSpec(req.Msg.Spec)
	if err != nil {
		return nil, err
	}
	seed := spec.Seed
	if seed == "" {
		seed = "preview"
	}
	plan, err := s.planner().Plan(ctx, spec, seed)
	if err != nil && !errors.Is(err, rollout.ErrNothingToDo) {
		return nil, s.planError(ctx, err)
	}
	resp := &adminv1.PreviewRolloutResponse{GlobalFailureBudget: int32(plan.GlobalFailureBudget)}
	for _, w := range plan.Waves {
		resp.Waves = append(resp.Waves, &adminv1.RolloutWave{Index: int32(w.Index), Size: int32(len(w.ClusterIDs)),
			Concurrency: int32(w.Concurrency), FailureBudget: int32(w.FailureBudget), Soak: durationpb.New(w.Soak), Sensitive: w.Sensitive})
		for _, id := range w.ClusterIDs {
			c := plan.Clusters[id]
			resp.Clusters = append(resp.Clusters, &adminv1.PlannedCluster{ClusterId: id, Name: c.Name, DataPlaneId: c.DataPlaneID,
				Wave: int32(w.Index), CurrentVersion: c.ReportedVersion})
		}
	}
	for _, l := range plan.Skipped {
		resp.Skipped = append(resp.Skipped, plannedPB(l))
	}
	for _, l := range plan.Excluded {
		resp.Excluded = append(resp.Excluded, plannedPB(l))
	}
	for _, l := range plan.Busy {
		resp.Busy = append(resp.Busy, plannedPB(l))
	}
	return connect.NewResponse(resp), nil
}

func (s *rollouts) StartRollout(ctx context.Context, req *connect.Request[adminv1.StartRolloutRequest]) (*connect.Response[adminv1.StartRolloutResponse], error) {
	spec, err := rolloutSpec(req.Msg.Spec)
	if err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	r, plan, err := s.planner().Start(ctx, actor, spec)
	if err != nil {
		return nil, s.planError(ctx, err)
	}
	resp := &adminv1.StartRolloutResponse{Rollout: rolloutPB(r)}
	for _, l := range plan.Busy {
		resp.Busy = append(resp.Busy, plannedPB(l))
	}
	return connect.NewResponse(resp), nil
}

func (s *rollouts) GetRollout(ctx context.Context, req *connect.Request[adminv1.GetRolloutRequest]) (*connect.Response[adminv1.GetRolloutResponse], error) {
	if _, err := operatorWide(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	r, err := s.st.GetRollout(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.GetRolloutResponse{Rollout: rolloutPB(r)}), nil
}

// storeName is the store's name for an API enum value; "" for a value
// the API does not accept.
func storeName[V comparable](names map[string]V, v V) string {
	for k, pb := range names {
		if pb == v {
			return k
		}
	}
	return ""
}

func (s *rollouts) ListRollouts(ctx context.Context, req *connect.Request[adminv1.ListRolloutsRequest]) (*connect.Response[adminv1.ListRolloutsResponse], error) {
	if _, err := operatorWide(ctx); err != nil {
		return nil, err
	}
	var v violations
	page, _ := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, "")
	var states []string
	for i, st := range req.Msg.States {
		name := storeName(rolloutStates, st)
		if name == "" {
			v.add(fmt.Sprintf("states[%d]", i), "must be RUNNING, PAUSED, COMPLETED or CANCELLED")
		}
		states = append(states, name)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListRollouts(ctx, states, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListRolloutsResponse{NextPageToken: pageToken(next)}
	for _, r := range list {
		resp.Rollouts = append(resp.Rollouts, rolloutPB(r))
	}
	return connect.NewResponse(resp), nil
}

func (s *rollouts) ListRolloutClusters(ctx context.Context, req *connect.Request[adminv1.ListRolloutClustersRequest]) (*connect.Response[adminv1.ListRolloutClustersResponse], error) {
	if _, err := operatorWide(ctx); err != nil {
		return nil, err
	}
	var v violations
	v.id("rollout_id", req.Msg.RolloutId)
	page, _ := v.listArgs(req.Msg.PageSize, req.Msg.PageToken, "")
	var f store.RolloutClusterFilter
	for i, st := range req.Msg.States {
		name := storeName(clusterStates, st)
		if name == "" {
			v.add(fmt.Sprintf("states[%d]", i), "must be a RolloutClusterState other than UNSPECIFIED")
		}
		f.States = append(f.States, name)
	}
	if req.Msg.Wave != nil {
		w := int(*req.Msg.Wave)
		f.Wave = &w
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	list, next, err := s.st.ListRolloutClusters(ctx, req.Msg.RolloutId, f, page)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListRolloutClustersResponse{NextPageToken: pageToken(next)}
	now := s.now()
	for _, c := range list {
		resp.Clusters = append(resp.Clusters, rolloutClusterPB(c, now))
	}
	return connect.NewResponse(resp), nil
}

// setState is pause, resume and cancel.
func (s *rollouts) setState(ctx context.Context, id, reason string, needReason bool, from []string, to, action string) (*adminv1.Rollout, error) {
	var v violations
	v.id("id", id)
	if needReason && strings.TrimSpace(reason) == "" {
		v.add("reason", "required")
	}
	v.maxLen("reason", reason, maxReasonLen)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.st.SetRolloutState(ctx, store.Fence{}, actor, id, from, to, reason, action)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return rolloutPB(r), nil
}

func (s *rollouts) PauseRollout(ctx context.Context, req *connect.Request[adminv1.PauseRolloutRequest]) (*connect.Response[adminv1.PauseRolloutResponse], error) {
	r, err := s.setState(ctx, req.Msg.Id, req.Msg.Reason, true, []string{store.RolloutRunning}, store.RolloutPaused, "rollout.pause")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.PauseRolloutResponse{Rollout: r}), nil
}

func (s *rollouts) ResumeRollout(ctx context.Context, req *connect.Request[adminv1.ResumeRolloutRequest]) (*connect.Response[adminv1.ResumeRolloutResponse], error) {
	r, err := s.setState(ctx, req.Msg.Id, "", false, []string{store.RolloutPaused}, store.RolloutRunning, "rollout.resume")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.ResumeRolloutResponse{Rollout: r}), nil
}

func (s *rollouts) CancelRollout(ctx context.Context, req *connect.Request[adminv1.CancelRolloutRequest]) (*connect.Response[adminv1.CancelRolloutResponse], error) {
	r, err := s.setState(ctx, req.Msg.Id, req.Msg.Reason, false, []string{store.RolloutRunning, store.RolloutPaused}, store.RolloutCancelled, "rollout.cancel")
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&adminv1.CancelRolloutResponse{Rollout: r}), nil
}

func (s *rollouts) RollbackRollout(ctx context.Context, req *connect.Request[adminv1.RollbackRolloutRequest]) (*connect.Response[adminv1.RollbackRolloutResponse], error) {
	var v violations
	v.id("id", req.Msg.Id)
	v.maxLen("reason", req.Msg.Reason, maxReasonLen)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	r, err := s.planner().Rollback(ctx, actor, req.Msg.Id, req.Msg.Reason)
	if err != nil {
		return nil, s.planError(ctx, err)
	}
	return connect.NewResponse(&adminv1.RollbackRolloutResponse{Rollout: rolloutPB(r)}), nil
}

func (s *rollouts) UpdateRolloutPolicy(ctx context.Context, req *connect.Request[adminv1.UpdateRolloutPolicyRequest]) (*connect.Response[adminv1.UpdateRolloutPolicyResponse], error) {
	m := req.Msg
	var v violations
	v.id("id", m.Id)
	var l store.RolloutLimits
	if m.Concurrency != nil {
		if *m.Concurrency < 0 {
			v.add("concurrency", "must not be negative (0 means a whole wave at once)")
		}
		c := int(*m.Concurrency)
		l.Concurrency = &c
	}
	var wave, global *waves.Budget
	if m.FailureBudget != nil {
		b := v.budget("failure_budget", m.FailureBudget)
		wave = &b
	}
	if m.GlobalFailureBudget != nil {
		b := v.budget("global_failure_budget", m.GlobalFailureBudget)
		global = &b
	}
	if m.Concurrency == nil && wave == nil && global == nil {
		v.add("concurrency", "set concurrency, failure_budget or global_failure_budget")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	if wave != nil {
		l.WaveBudget = wave.Resolve
	}
	if global != nil {
		l.GlobalBudget = global.Resolve
	}
	// The spec is edited inside the store's transaction, so concurrent
	// edits of different fields both stick.
	l.EditSpec = func(raw []byte) ([]byte, error) {
		var spec rollout.Spec
		if err := json.Unmarshal(raw, &spec); err != nil {
			return nil, err
		}
		if l.Concurrency != nil {
			spec.Policy.Concurrency = *l.Concurrency
		}
		if wave != nil {
			spec.Policy.FailureBudget = *wave
		}
		if global != nil {
			spec.Policy.GlobalFailureBudget = global
		}
		return json.Marshal(spec)
	}
	r, err := s.st.UpdateRolloutLimits(ctx, actor, m.Id, l)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.UpdateRolloutPolicyResponse{Rollout: rolloutPB(r)}), nil
}

func (s *rollouts) PauseAllRollouts(ctx context.Context, req *connect.Request[adminv1.PauseAllRolloutsRequest]) (*connect.Response[adminv1.PauseAllRolloutsResponse], error) {
	var v violations
	if strings.TrimSpace(req.Msg.Reason) == "" {
		v.add("reason", "required")
	}
	v.maxLen("reason", req.Msg.Reason, maxReasonLen)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	ids, err := s.st.PauseAllRollouts(ctx, actor, req.Msg.Reason)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.PauseAllRolloutsResponse{PausedIds: ids}), nil
}

func (s *rollouts) ExpediteCluster(ctx context.Context, req *connect.Request[adminv1.ExpediteClusterRequest]) (*connect.Response[adminv1.ExpediteClusterResponse], error) {
	var v violations
	v.id("rollout_id", req.Msg.RolloutId)
	v.id("cluster_id", req.Msg.ClusterId)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	rc, err := s.st.ExpediteCluster(ctx, actor, req.Msg.RolloutId, req.Msg.ClusterId, rollout.DefaultEligibleFor, func(c store.Cluster, rel store.Release) string {
		return rollout.Incompatible(rel, c)
	})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.ExpediteClusterResponse{Cluster: rolloutClusterPB(rc, s.now())}), nil
}

var exclusionScopes = map[string]bool{store.ExcludeCluster: true, store.ExcludeDataPlane: true, store.ExcludeTenant: true}

func exclusionPB(e store.Exclusion) *adminv1.Exclusion {
	return &adminv1.Exclusion{Id: e.ID, ScopeType: e.ScopeType, ScopeId: e.ScopeID, Reason: e.Reason,
		ExpireTime: timestamppb.New(e.ExpireTime), CreatedBy: e.CreatedBy, CreateTime: timestamppb.New(e.CreateTime)}
}

func (s *rollouts) CreateExclusion(ctx context.Context, req *connect.Request[adminv1.CreateExclusionRequest]) (*connect.Response[adminv1.CreateExclusionResponse], error) {
	e := req.Msg.Exclusion
	var v violations
	if e == nil {
		v.add("exclusion", "required")
		return nil, v.err()
	}
	if !exclusionScopes[e.ScopeType] {
		v.add("exclusion.scope_type", "must be cluster, data_plane or tenant")
	}
	v.id("exclusion.scope_id", e.ScopeId)
	if strings.TrimSpace(e.Reason) == "" {
		v.add("exclusion.reason", "required")
	}
	v.maxLen("exclusion.reason", e.Reason, maxReasonLen)
	now := s.now()
	switch {
	case e.ExpireTime == nil:
		v.add("exclusion.expire_time", "required")
	case e.ExpireTime.CheckValid() != nil:
		v.add("exclusion.expire_time", "%v", e.ExpireTime.CheckValid())
	case !e.ExpireTime.AsTime().After(now):
		v.add("exclusion.expire_time", "must be in the future")
	case e.ExpireTime.AsTime().Sub(now) > maxExclusionPeriod:
		v.add("exclusion.expire_time", "must be at most 90 days ahead")
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.st.CreateExclusion(ctx, actor, store.Exclusion{ScopeType: e.ScopeType, ScopeID: e.ScopeId, Reason: e.Reason,
		ExpireTime: e.ExpireTime.AsTime()})
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.CreateExclusionResponse{Exclusion: exclusionPB(out)}), nil
}

func (s *rollouts) ListExclusions(ctx context.Context, _ *connect.Request[adminv1.ListExclusionsRequest]) (*connect.Response[adminv1.ListExclusionsResponse], error) {
	if _, err := operatorWide(ctx); err != nil {
		return nil, err
	}
	list, err := s.st.ListExclusions(ctx)
	if err != nil {
		return nil, s.toConnect(ctx, err)
	}
	resp := &adminv1.ListExclusionsResponse{}
	for _, e := range list {
		resp.Exclusions = append(resp.Exclusions, exclusionPB(e))
	}
	return connect.NewResponse(resp), nil
}

func (s *rollouts) DeleteExclusion(ctx context.Context, req *connect.Request[adminv1.DeleteExclusionRequest]) (*connect.Response[adminv1.DeleteExclusionResponse], error) {
	var v violations
	v.id("id", req.Msg.Id)
	if err := v.err(); err != nil {
		return nil, err
	}
	actor, err := operatorWide(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.st.DeleteExclusion(ctx, actor, req.Msg.Id); err != nil {
		return nil, s.toConnect(ctx, err)
	}
	return connect.NewResponse(&adminv1.DeleteExclusionResponse{}), nil
}
