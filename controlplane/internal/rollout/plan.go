// Package rollout plans and drives rollouts (docs/fleet.md): a Planner
// resolves a rollout's query, checks compatibility and plans its waves
// (Preview and Start run the same code); an Engine, on whichever replica
// holds the engine's lease, moves each cluster through its persisted state
// machine with every transition a fenced, conditional store transaction.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/cairnhq/cairn/controlplane/internal/compat"
	"github.com/cairnhq/cairn/controlplane/internal/inventory"
	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/waves"
)

// SensitiveLabel marks a cluster as sensitive when its value is "true":
// with Policy.ReserveSensitive it is planned in the last waves.
const SensitiveLabel = "sensitive"

// Defaults and limits.
const (
	DefaultVerifyTimeout = 30 * time.Minute
	MaxVerifyTimeout     = 7 * 24 * time.Hour
	// maxClusters bounds one rollout's plan.
	maxClusters = 100_000
	pageSize    = 1000
)

// Shape kinds.
const (
	ShapeLinear      = "linear"
	ShapeExponential = "exponential"
	ShapeSCurve      = "s_curve"
	ShapeCustom      = "custom"
)

// Spec is a rollout as asked for; it is saved with the rollout as JSON.
type Spec struct {
	Product       string `json:"product"`
	TargetVersion string `json:"target_version"`
	Query         string `json:"query,omitempty"`
	Shape         Shape  `json:"shape"`
	Policy        Policy `json:"policy"`
	Seed          string `json:"seed,omitempty"`
}

// Shape is waves.Shape in a form that serializes.
type Shape struct {
	Kind      string    `json:"kind"`
	BatchSize int       `json:"batch_size,omitempty"`
	Start     int       `json:"start,omitempty"`
	Factor    int       `json:"factor,omitempty"`
	Sizes     []int     `json:"sizes,omitempty"`
	Percents  []float64 `json:"percents,omitempty"`
}

// Policy is waves.Policy plus the health gate.
type Policy struct {
	BaseSoak            time.Duration `json:"base_soak,omitempty"`
	Concurrency         int           `json:"concurrency,omitempty"`
	FailureBudget       waves.Budget  `json:"failure_budget"`
	GlobalFailureBudget *waves.Budget `json:"global_failure_budget,omitempty"`
	ReserveSensitive    bool          `json:"reserve_sensitive,omitempty"`
	SensitiveBatchSize  int           `json:"sensitive_batch_size,omitempty"`
	// VerifyTimeout is how long a dispatched cluster has to report the
	// target and healthy; 0 means DefaultVerifyTimeout.
	VerifyTimeout time.Duration `json:"verify_timeout,omitempty"`
}

func (s Shape) waves() (waves.Shape, error) {
	switch s.Kind {
	case ShapeLinear:
		return waves.Linear{BatchSize: s.BatchSize}, nil
	case ShapeExponential:
		return waves.Exponential{Start: s.Start, Factor: s.Factor}, nil
	case ShapeSCurve:
		return waves.SCurve{}, nil
	case ShapeCustom:
		return waves.Custom{Sizes: s.Sizes, Percents: s.Percents}, nil
	}
	return nil, waves.FieldErrors{{Field: "shape", Reason: "required: linear, exponential, s_curve or custom"}}
}

func (p Policy) waves() waves.Policy {
	return waves.Policy{BaseSoak: p.BaseSoak, Concurrency: p.Concurrency, FailureBudget: p.FailureBudget,
		GlobalFailureBudget: p.GlobalFailureBudget, ReserveSensitive: p.ReserveSensitive, SensitiveBatchSize: p.SensitiveBatchSize}
}

func (p Policy) verifyTimeout() time.Duration {
	if p.VerifyTimeout == 0 {
		return DefaultVerifyTimeout
	}
	return p.VerifyTimeout
}

// Errors of planning, besides waves.FieldErrors for a bad shape or policy
// and store.ErrFailedPrecondition for a missing or blocked target.
var (
	// ErrBadQuery: the query does not parse.
	ErrBadQuery = errors.New("bad query")
	// ErrNothingToDo: the query selects no cluster that needs the target.
	ErrNothingToDo = errors.New("no cluster to upgrade")
	// ErrTooMany: the query selects more clusters than one rollout holds.
	ErrTooMany = errors.New("too many clusters")
)

// Left is a cluster a plan leaves out or flags, with why.
type Left struct {
	Cluster store.Cluster
	Detail  string
}

// Plan is a planned rollout.
type Plan struct {
	Spec    Spec
	Release store.Release
	Waves   []waves.Wave
	// Clusters are the planned clusters by ID.
	Clusters map[string]store.Cluster
	// Skipped are incompatible or already on the target; Excluded are
	// planned but covered by an exclusion now; Busy are held by another
	// rollout and not planned.
	Skipped, Excluded, Busy []Left
	GlobalFailureBudget     int
}

// Planner plans rollouts from the store.
type Planner struct {
	St *store.Store
}

// Plan resolves spec's query and plans its waves. seed orders the
// clusters (Spec.Seed when set).
func (p *Planner) Plan(ctx context.Context, spec Spec, seed string) (Plan, error) {
	shape, err := spec.Shape.waves()
	if err != nil {
		return Plan{}, err
	}
	if err := waves.Validate(shape, spec.Policy.waves()); err != nil {
		return Plan{}, err
	}
	if spec.Policy.VerifyTimeout < 0 || spec.Policy.VerifyTimeout > MaxVerifyTimeout {
		return Plan{}, waves.FieldErrors{{Field: "policy.verify_timeout", Reason: "must be between 0 and 168h"}}
	}
	q, err := inventory.Parse(spec.Query)
	if err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrBadQuery, err)
	}
	product, err := inventory.Parse("product=" + spec.Product)
	if err != nil {
		return Plan{}, fmt.Errorf("%w: product: %w", ErrBadQuery, err)
	}
	q.Terms = append(q.Terms, product.Terms...)
	rel, err := p.St.GetRelease(ctx, spec.Product, spec.TargetVersion)
	if errors.Is(err, store.ErrNotFound) {
		return Plan{}, fmt.Errorf("%s %s is not a release: %w", spec.Product, spec.TargetVersion, store.ErrFailedPrecondition)
	}
	if err != nil {
		return Plan{}, err
	}
	if rel.State == store.ReleaseBlocked {
		return Plan{}, fmt.Errorf("%s %s is blocked: %w", spec.Product, spec.TargetVersion, store.ErrFailedPrecondition)
	}
	var all []store.Cluster
	for page := (store.Page{Size: pageSize}); ; {
		cs, next, err := p.St.QueryClusters(ctx, store.Filter{}, q, page)
		if err != nil {
			return Plan{}, err
		}
		all = append(all, cs...)
		if len(all) > maxClusters {
			return Plan{}, fmt.Errorf("%w: the query selects more than %d", ErrTooMany, maxClusters)
		}
		if next == "" {
			break
		}
		page.After = next
	}
	ids := make([]string, len(all))
	for i, c := range all {
		ids[i] = c.ID
	}
	held, err := p.St.LockedClusters(ctx, ids)
	if err != nil {
		return Plan{}, err
	}
	exclusions, err := p.St.ListExclusions(ctx)
	if err != nil {
		return Plan{}, err
	}
	plan := Plan{Spec: spec, Release: rel, Clusters: map[string]store.Cluster{}}
	var candidates []waves.Candidate
	for _, c := range all {
		if by, ok := held[c.ID]; ok {
			plan.Busy = append(plan.Busy, Left{c, "held by rollout " + by})
			continue
		}
		if why := Incompatible(rel, c); why != "" {
			plan.Skipped = append(plan.Skipped, Left{c, why})
			continue
		}
		if c.DesiredVersion == rel.Version && c.ReportedVersion == rel.Version {
			plan.Skipped = append(plan.Skipped, Left{c, "already runs " + rel.Version})
			continue
		}
		for _, e := range exclusions {
			if e.Covers(c) {
				plan.Excluded = append(plan.Excluded, Left{c, fmt.Sprintf("exclusion %s until %s: %s", e.ID, e.ExpireTime.Format(time.RFC3339), e.Reason)})
				break
			}
		}
		plan.Clusters[c.ID] = c
		candidates = append(candidates, waves.Candidate{ID: c.ID, Sensitive: c.Labels[SensitiveLabel] == "true"})
	}
	if len(candidates) == 0 {
		return plan, fmt.Errorf("%w: the query selects %d clusters of %s, %d skipped and %d busy",
			ErrNothingToDo, len(all), spec.Product, len(plan.Skipped), len(plan.Busy))
	}
	wp, err := waves.Compute(candidates, shape, spec.Policy.waves(), seed)
	if err != nil {
		return Plan{}, err
	}
	plan.Waves, plan.GlobalFailureBudget = wp.Waves, wp.GlobalFailureBudget
	return plan, nil
}

// Incompatible returns why rel may not run on c, or "".
func Incompatible(rel store.Release, c store.Cluster) string {
	if r := compat.Check(rel, c); r != nil {
		return "incompatible: " + r.String()
	}
	return ""
}

// Start plans spec and saves the plan as a running rollout. The plan's
// seed is spec.Seed, or else the new rollout's ID.
func (p *Planner) Start(ctx context.Context, a store.Actor, spec Spec) (store.Rollout, Plan, error) {
	seed := spec.Seed
	if seed == "" {
		seed = uuid.NewString()
	}
	plan, err := p.Plan(ctx, spec, seed)
	if err != nil {
		return store.Rollout{}, plan, err
	}
	spec.Seed = seed
	plan.Spec = spec
	r, err := p.save(ctx, a, plan, nil, "", "")
	return r, plan, err
}

// save stores plan as a new rollout. targets, if not nil, gives each
// cluster its own target (a rollback's previous versions).
func (p *Planner) save(ctx context.Context, a store.Actor, plan Plan, targets map[string]string, rollbackOf, reason string) (store.Rollout, error) {
	specJSON, err := json.Marshal(plan.Spec)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("start rollout: %w", err)
	}
	nr := store.NewRollout{Rollout: store.Rollout{Product: plan.Spec.Product, TargetVersion: plan.Spec.TargetVersion, Spec: specJSON,
		GlobalFailureBudget: plan.GlobalFailureBudget, RollbackOf: rollbackOf}, RollbackReason: reason}
	target := func(id string) string {
		if t, ok := targets[id]; ok {
			return t
		}
		return plan.Spec.TargetVersion
	}
	for _, w := range plan.Waves {
		nr.Waves = append(nr.Waves, store.RolloutWave{Index: w.Index, Size: len(w.ClusterIDs), Concurrency: w.Concurrency,
			FailureBudget: w.FailureBudget, Soak: w.Soak, Sensitive: w.Sensitive})
		for pos, id := range w.ClusterIDs {
			c := plan.Clusters[id]
			nr.Clusters = append(nr.Clusters, store.RolloutCluster{ClusterID: id, Name: c.Name, DataPlaneID: c.DataPlaneID,
				Wave: w.Index, Position: pos, State: store.ClusterPending, TargetVersion: target(id), PreviousVersion: c.DesiredVersion})
		}
	}
	for pos, l := range plan.Skipped {
		nr.Clusters = append(nr.Clusters, store.RolloutCluster{ClusterID: l.Cluster.ID, Name: l.Cluster.Name, DataPlaneID: l.Cluster.DataPlaneID,
			Wave: -1, Position: pos, State: store.ClusterSkipped, Detail: l.Detail, TargetVersion: target(l.Cluster.ID),
			PreviousVersion: l.Cluster.DesiredVersion})
	}
	return p.St.CreateRollout(ctx, a, nr)
}

// ParseSpec decodes a saved rollout's spec.
func ParseSpec(r store.Rollout) (Spec, error) {
	var s Spec
	if err := json.Unmarshal(r.Spec, &s); err != nil {
		return Spec{}, fmt.Errorf("rollout %s spec: %w", r.ID, err)
	}
	return s, nil
}

// Rollback starts a rollout that returns each cluster rollout id
// dispatched to the desired version it had before, and cancels id in the
// same transaction if it has not ended. The new rollout has the original's
// shape and policy. A rollback that fails changes nothing.
func (p *Planner) Rollback(ctx context.Context, a store.Actor, id, reason string) (_ store.Rollout, err error) {
	orig, err := p.St.GetRollout(ctx, id)
	if err != nil {
		return store.Rollout{}, err
	}
	if orig.RolledBackBy != "" {
		return store.Rollout{}, fmt.Errorf("rollout %s is already rolled back by %s: %w", id, orig.RolledBackBy, store.ErrFailedPrecondition)
	}
	spec, err := ParseSpec(orig)
	if err != nil {
		return store.Rollout{}, err
	}
	if reason == "" {
		reason = "rolled back"
	}
	// Pause it first, so that the clusters it dispatched are all known
	// below; the rollback's transaction cancels it. If the rollback fails,
	// it runs on as it did.
	if orig.State == store.RolloutRunning {
		if _, err := p.St.SetRolloutState(ctx, store.Fence{}, a, id, []string{store.RolloutRunning}, store.RolloutPaused,
			"rolling back: "+reason, "rollout.pause"); err != nil {
			return store.Rollout{}, err
		}
		defer func() {
			if err == nil {
				return
			}
			// Back to running as it was: not a resume, which would accept
			// its failures so far.
			if _, rerr := p.St.SetRolloutState(context.WithoutCancel(ctx), store.Fence{}, a, id, []string{store.RolloutPaused},
				store.RolloutRunning, orig.Reason, "rollout.rollback_failed"); rerr != nil {
				err = errors.Join(err, fmt.Errorf("rollout %s is left paused: %w", id, rerr))
			}
		}()
	}
	targets := map[string]string{}
	releases := map[string]store.Release{}
	plan := Plan{Spec: spec, Clusters: map[string]store.Cluster{}}
	var candidates []waves.Candidate
	for page := (store.Page{Size: pageSize}); ; {
		rcs, next, err := p.St.ListRolloutClusters(ctx, id, store.RolloutClusterFilter{States: []string{
			store.ClusterDispatched, store.ClusterVerifying, store.ClusterSucceeded, store.ClusterFailed}}, page)
		if err != nil {
			return store.Rollout{}, err
		}
		for _, rc := range rcs {
			if rc.DispatchTime == nil {
				continue
			}
			c, err := p.St.GetCluster(ctx, "", rc.ClusterID)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return store.Rollout{}, err
			}
			if rc.PreviousVersion == "" {
				plan.Skipped = append(plan.Skipped, Left{c, "no desired version before rollout " + id})
				continue
			}
			rel, ok := releases[rc.PreviousVersion]
			if !ok {
				rel, err = p.St.GetRelease(ctx, spec.Product, rc.PreviousVersion)
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return store.Rollout{}, err
				}
				releases[rc.PreviousVersion] = rel
			}
			switch {
			case rel.ID == "":
				plan.Skipped = append(plan.Skipped, Left{c, rc.PreviousVersion + " is not a release"})
				continue
			case rel.State == store.ReleaseBlocked:
				plan.Skipped = append(plan.Skipped, Left{c, rc.PreviousVersion + " is blocked"})
				continue
			}
			if why := Incompatible(rel, c); why != "" {
				plan.Skipped = append(plan.Skipped, Left{c, why})
				continue
			}
			targets[c.ID] = rc.PreviousVersion
			plan.Clusters[c.ID] = c
			candidates = append(candidates, waves.Candidate{ID: c.ID, Sensitive: c.Labels[SensitiveLabel] == "true"})
		}
		if next == "" {
			break
		}
		page.After = next
	}
	if len(candidates) == 0 {
		return store.Rollout{}, fmt.Errorf("%w: rollout %s dispatched no cluster with a previous version", ErrNothingToDo, id)
	}
	shape, err := spec.Shape.waves()
	if err != nil {
		return store.Rollout{}, err
	}
	wp, err := waves.Compute(candidates, shape, spec.Policy.waves(), "rollback-"+id)
	if err != nil {
		return store.Rollout{}, err
	}
	plan.Waves, plan.GlobalFailureBudget = wp.Waves, wp.GlobalFailureBudget
	// The rollout's target names the version most clusters go back to; each
	// cluster row carries its own.
	counts := map[string]int{}
	for _, v := range targets {
		counts[v]++
	}
	best := ""
	for v, n := range counts {
		if best == "" || n > counts[best] || (n == counts[best] && v < best) {
			best = v
		}
	}
	plan.Spec.TargetVersion, plan.Spec.Query, plan.Spec.Seed = best, "", "rollback-"+id
	return p.save(ctx, a, plan, targets, id, reason)
}
