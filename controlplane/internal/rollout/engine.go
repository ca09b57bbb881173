package rollout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/cairnhq/cairn/controlplane/internal/store"
	"github.com/cairnhq/cairn/controlplane/internal/window"
)

// LeaseName is the store lease whose holder runs the engine.
const LeaseName = "rollout-engine"

// Engine defaults.
const (
	DefaultTick        = time.Second
	DefaultLeaseTTL    = 15 * time.Second
	DefaultEligibleFor = time.Hour
	DefaultWorkers     = 8
)

// Config configures an Engine.
type Config struct {
	// Store keeps rollouts and the lease. Required.
	Store *store.Store
	// Logger; nil discards.
	Logger *slog.Logger
	// Holder names this replica in the lease; "" means host name, process
	// ID and a random suffix.
	Holder string
	// Tick is how often the engine looks at its rollouts; 0 means
	// DefaultTick.
	Tick time.Duration
	// LeaseTTL is how long a lease lasts without renewal, i.e. how long a
	// dead replica's rollouts wait before another replica takes over; 0
	// means DefaultLeaseTTL. It must be above Tick.
	LeaseTTL time.Duration
	// EligibleFor is the deadline of an eligible cluster (waiting for a
	// slot or its maintenance window): past it, it is shown as overdue. 0
	// means DefaultEligibleFor.
	EligibleFor time.Duration
	// Now is the clock (windows, deadlines, soaks); nil means time.Now.
	// The store must use the same clock.
	Now func() time.Time
	// Workers bounds the transactions the engine runs at once: clusters
	// of different data planes are dispatched in parallel (those of one
	// data plane queue on its revision log anyway) and in-flight clusters
	// verified in parallel. 0 means DefaultWorkers, or 1 on SQLite, which
	// has one writer.
	Workers int
}

// Engine drives rollouts while its replica holds the engine lease.
type Engine struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	fence store.Fence
	actor store.Actor
	now   func() time.Time
	m     metrics
	// renewed is when this pass last renewed the lease (one goroutine
	// runs passes).
	renewed time.Time
}

type metrics struct {
	held        prometheus.Gauge
	transitions *prometheus.CounterVec
	autoPauses  prometheus.Counter
	active      prometheus.Gauge
	clusters    *prometheus.GaugeVec
	overdue     prometheus.Gauge
}

// New checks cfg and returns an engine.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("rollout engine: Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Tick == 0 {
		cfg.Tick = DefaultTick
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.EligibleFor == 0 {
		cfg.EligibleFor = DefaultEligibleFor
	}
	if cfg.LeaseTTL <= cfg.Tick {
		return nil, fmt.Errorf("rollout engine: lease TTL %v must be above the tick %v", cfg.LeaseTTL, cfg.Tick)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Workers == 0 {
		cfg.Workers = DefaultWorkers
		if cfg.Store.Backend() == "sqlite" {
			cfg.Workers = 1
		}
	}
	if cfg.Holder == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.Holder = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	e := &Engine{cfg: cfg, st: cfg.Store, log: cfg.Logger, now: cfg.Now,
		fence: store.Fence{Name: LeaseName, Holder: cfg.Holder}, actor: store.Actor{ID: "engine:" + cfg.Holder}}
	e.m = metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_rollout_engine_lease_held",
			Help: "1 while this replica holds the rollout engine's lease."}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cairn_rollout_cluster_transitions_total",
			Help: "Rollout cluster state changes made by this replica, by new state."}, []string{"state"}),
		autoPauses: prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_rollout_auto_pauses_total",
			Help: "Rollouts this replica paused because a failure budget was exceeded."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_rollouts_active",
			Help: "Rollouts running or paused, as of this replica's last pass (0 when it does not hold the lease)."}),
		clusters: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_rollout_clusters",
			Help: "Clusters of active rollouts by state, as of this replica's last pass."}, []string{"state"}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_rollout_clusters_overdue",
			Help: "Clusters of active rollouts past their state's deadline, as of this replica's last pass."}),
	}
	return e, nil
}

// Metrics returns the engine's collectors for the admin /metrics.
func (e *Engine) Metrics() []prometheus.Collector {
	return []prometheus.Collector{e.m.held, e.m.transitions, e.m.autoPauses, e.m.active, e.m.clusters, e.m.overdue}
}

// Holder is the name this engine holds the lease under.
func (e *Engine) Holder() string { return e.cfg.Holder }

// Run takes and renews the lease and drives rollouts every tick until ctx
// ends; then it gives the lease up so another replica takes over at once.
func (e *Engine) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Tick)
	defer t.Stop()
	for {
		if err := e.Step(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("rollout engine pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := e.st.ReleaseLease(rctx, LeaseName, e.cfg.Holder); err != nil {
				e.log.Warn("rollout engine: releasing the lease", "error", err)
			}
			return nil
		case <-t.C:
		}
	}
}

// Step takes or renews the lease and, while held, makes one pass over
// every active rollout. It returns nil without doing anything when
// another replica holds the lease.
func (e *Engine) Step(ctx context.Context) error {
	held, err := e.st.AcquireLease(ctx, LeaseName, e.cfg.Holder, e.cfg.LeaseTTL)
	if err != nil {
		e.m.held.Set(0)
		return err
	}
	if !held {
		e.m.held.Set(0)
		e.m.active.Set(0)
		e.m.clusters.Reset()
		e.m.overdue.Set(0)
		return nil
	}
	e.m.held.Set(1)
	ids, err := e.st.ActiveRolloutIDs(ctx)
	if err != nil {
		return err
	}
	e.renewed = e.now()
	var errs []error
	for _, id := range ids {
		if err := e.renew(ctx); err != nil {
			e.m.held.Set(0)
			if errors.Is(err, store.ErrLeaseLost) {
				return nil
			}
			return err
		}
		err := e.drive(ctx, id)
		if errors.Is(err, store.ErrLeaseLost) {
			e.m.held.Set(0)
			return nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", id, err))
		}
	}
	e.observe(ctx, ids)
	return errors.Join(errs...)
}

// renew renews the lease when a third of its TTL has passed since the
// last renewal, so a long pass keeps it; ErrLeaseLost if another replica
// has taken it.
func (e *Engine) renew(ctx context.Context) error {
	if e.now().Sub(e.renewed) < e.cfg.LeaseTTL/3 {
		return nil
	}
	held, err := e.st.AcquireLease(ctx, LeaseName, e.cfg.Holder, e.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	if !held {
		return store.ErrLeaseLost
	}
	e.renewed = e.now()
	return nil
}

// observe refreshes the gauges from the store.
func (e *Engine) observe(ctx context.Context, ids []string) {
	var total store.RolloutCounts
	active, overdue := 0, 0
	for _, id := range ids {
		r, err := e.st.GetRollout(ctx, id)
		if err != nil {
			continue
		}
		if r.State == store.RolloutRunning || r.State == store.RolloutPaused {
			active++
		}
		c := r.Counts
		total = store.RolloutCounts{Pending: total.Pending + c.Pending, Eligible: total.Eligible + c.Eligible,
			Dispatched: total.Dispatched + c.Dispatched, Verifying: total.Verifying + c.Verifying,
			Succeeded: total.Succeeded + c.Succeeded, Failed: total.Failed + c.Failed, Unreachable: total.Unreachable + c.Unreachable,
			Skipped: total.Skipped + c.Skipped, Excluded: total.Excluded + c.Excluded}
		overdue += r.Overdue
	}
	e.m.active.Set(float64(active))
	e.m.overdue.Set(float64(overdue))
	for state, n := range map[string]int{store.ClusterPending: total.Pending, store.ClusterEligible: total.Eligible,
		store.ClusterDispatched: total.Dispatched, store.ClusterVerifying: total.Verifying, store.ClusterSucceeded: total.Succeeded,
		store.ClusterFailed: total.Failed, "unreachable": total.Unreachable, store.ClusterSkipped: total.Skipped,
		store.ClusterExcluded: total.Excluded} {
		e.m.clusters.WithLabelValues(state).Set(float64(n))
	}
}

// drive makes one pass over one rollout: it verifies its in-flight
// clusters, pauses it if a budget broke, and moves its current wave on.
func (e *Engine) drive(ctx context.Context, id string) error {
	r, err := e.st.GetRollout(ctx, id)
	if err != nil {
		return err
	}
	spec, err := ParseSpec(r)
	if err != nil {
		return err
	}
	moved, err := e.verify(ctx, id)
	if err != nil {
		return err
	}
	if moved {
		if r, err = e.st.GetRollout(ctx, id); err != nil {
			return err
		}
	}
	// Checked on every pass, not only after a failure in this one, so a
	// replica that died between a failure and the pause it called for
	// leaves the pause to the next holder.
	if r.State == store.RolloutRunning && r.Counts.Broken() > r.AcceptedFailures {
		if why := Breach(r); why != "" {
			_, err := e.st.SetRolloutState(ctx, e.fence, e.actor, id, []string{store.RolloutRunning}, store.RolloutPaused,
				why, "rollout.auto_pause")
			switch {
			case errors.Is(err, store.ErrFailedPrecondition):
				return nil // an operator paused or cancelled it meanwhile
			case err != nil:
				return err
			}
			e.m.autoPauses.Inc()
			e.log.Warn("rollout paused: failure budget exceeded", "rollout_id", id, "reason", why)
			return nil
		}
	}
	if r.State != store.RolloutRunning || len(r.Waves) == 0 {
		return nil
	}
	w := r.Waves[min(r.CurrentWave, len(r.Waves)-1)]
	now := e.now()
	switch {
	case w.StartTime == nil:
		if err := e.st.StartWave(ctx, e.fence, id, w.Index, e.cfg.EligibleFor); err != nil {
			return err
		}
		e.log.Info("rollout wave started", "rollout_id", id, "wave", w.Index, "clusters", w.Size)
		if r, err = e.st.GetRollout(ctx, id); err != nil {
			return err
		}
		w = r.Waves[w.Index]
		return e.dispatch(ctx, r, w, spec)
	case w.DoneTime == nil:
		c := w.Counts
		if c.Pending+c.Eligible+c.Dispatched+c.Verifying == 0 {
			e.log.Info("rollout wave done", "rollout_id", id, "wave", w.Index, "succeeded", c.Succeeded,
				"failed", c.Failed, "unreachable", c.Unreachable, "soak", w.Soak)
			return e.st.FinishWave(ctx, e.fence, id, w.Index, now.Add(w.Soak))
		}
		return e.dispatch(ctx, r, w, spec)
	case w.SoakUntil != nil && now.Before(*w.SoakUntil):
		return nil
	case w.Index+1 < len(r.Waves):
		return e.st.StartWave(ctx, e.fence, id, w.Index+1, e.cfg.EligibleFor)
	default:
		c := r.Counts
		reason := fmt.Sprintf("%d succeeded, %d failed, %d unreachable, %d skipped, %d excluded",
			c.Succeeded, c.Failed, c.Unreachable, c.Skipped, c.Excluded)
		e.log.Info("rollout completed", "rollout_id", id, "result", reason)
		return e.st.CompleteRollout(ctx, e.fence, e.actor, id, reason)
	}
}

// Breach returns why a rollout's failures exceed a budget, or "". Waves
// are numbered from 1, as people count them (the API's index + 1).
// Failures an operator accepted by resuming do not count again: a budget
// breaks only when failures grow beyond both it and what was accepted.
func Breach(r store.Rollout) string {
	for _, w := range r.Waves {
		if n := w.Counts.Broken(); n > max(w.FailureBudget, w.AcceptedFailures) {
			return fmt.Sprintf("wave %d failure budget exceeded: %d failed or unreachable > %d allowed", w.Index+1, n,
				max(w.FailureBudget, w.AcceptedFailures))
		}
	}
	if n := r.Counts.Broken(); n > max(r.GlobalFailureBudget, r.AcceptedFailures) {
		return fmt.Sprintf("global failure budget exceeded: %d failed or unreachable > %d allowed", n,
			max(r.GlobalFailureBudget, r.AcceptedFailures))
	}
	return ""
}

// verify advances dispatched and verifying clusters from their agents'
// reports and deadlines; it reports whether any moved.
func (e *Engine) verify(ctx context.Context, id string) (bool, error) {
	inflight, err := e.st.InFlightClusters(ctx, id)
	if err != nil {
		return false, err
	}
	var anyMoved atomic.Bool
	now := e.now()
	for len(inflight) > 0 {
		if err := e.renew(ctx); err != nil {
			return anyMoved.Load(), err
		}
		chunk := inflight[:min(len(inflight), maxChunk)]
		inflight = inflight[len(chunk):]
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(e.cfg.Workers)
		for _, f := range chunk {
			to, detail, unreachable := Judge(f, now)
			if to == "" {
				continue
			}
			g.Go(func() error {
				moved, err := e.st.AdvanceCluster(gctx, e.fence, e.actor, f.RolloutCluster, to, detail, unreachable)
				if moved {
					e.m.transitions.WithLabelValues(to).Inc()
					anyMoved.Store(true)
				}
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return anyMoved.Load(), err
		}
	}
	return anyMoved.Load(), nil
}

// Judge decides what an in-flight cluster's agent report (and the clock)
// make of it: a new state with its detail, or "" to wait. Only a report
// the control plane stored after the dispatch, about the target, counts.
func Judge(f store.InFlight, now time.Time) (to, detail string, unreachable bool) {
	fresh := f.Reported && f.DispatchTime != nil && !f.ReceiveTime.Before(*f.DispatchTime)
	if fresh && f.Report.DesiredVersion == f.TargetVersion {
		switch {
		case f.Report.Version == f.TargetVersion && f.Report.Healthy:
			return store.ClusterSucceeded, "", false
		case !f.Report.Healthy && f.Report.Version != f.TargetVersion && f.PreviousVersion != f.TargetVersion:
			// A failure counts at once only when the dispatch changed the
			// desired version: otherwise the agent's report may be of an
			// attempt from before it (a retry of a cluster that failed in an
			// earlier rollout), and the deadline decides.
			return store.ClusterFailed, "the upgrade failed: " + f.Report.Detail, false
		case f.State == store.ClusterDispatched:
			if f.Deadline == nil || now.Before(*f.Deadline) {
				return store.ClusterVerifying, "the agent has the target", false
			}
		}
	}
	if f.Deadline != nil && !now.Before(*f.Deadline) {
		switch {
		case !fresh:
			return store.ClusterFailed, "the agent reported nothing within the verify timeout", true
		case f.Report.DesiredVersion != f.TargetVersion:
			return store.ClusterFailed, "the agent did not report the target within the verify timeout", false
		case f.Report.Version != f.TargetVersion:
			return store.ClusterFailed, fmt.Sprintf("still at %q after the verify timeout: %s", f.Report.Version, f.Report.Detail), false
		default:
			return store.ClusterFailed, "not healthy within the verify timeout: " + f.Report.Detail, false
		}
	}
	return "", "", false
}

// dispatch dispatches eligible clusters of the wave while it has free
// slots, in plan order; clusters outside their maintenance window wait
// without taking a slot.
func (e *Engine) dispatch(ctx context.Context, r store.Rollout, w store.RolloutWave, spec Spec) error {
	slots := w.Concurrency - w.Counts.Dispatched - w.Counts.Verifying
	if slots <= 0 || w.Counts.Eligible == 0 {
		return nil
	}
	now := e.now()
	gate := func(c store.Cluster, rel store.Release) store.Gate {
		if why := Incompatible(rel, c); why != "" {
			return store.Gate{Skip: why}
		}
		win, err := window.FromProperties(c.Properties)
		if err != nil {
			return store.Gate{Skip: "its maintenance window is not valid: " + err.Error()}
		}
		if win != nil && !win.Contains(now) {
			start, _ := win.Next(now)
			return store.Gate{Wait: true, NotBefore: start, Detail: "waiting for its maintenance window at " + start.Format(time.RFC3339)}
		}
		return store.Gate{}
	}
	wave := w.Index
	page := store.Page{Size: 500}
	for slots > 0 {
		rcs, next, err := e.st.ListRolloutClusters(ctx, r.ID, store.RolloutClusterFilter{States: []string{store.ClusterEligible}, Wave: &wave, Due: true}, page)
		if err != nil {
			return err
		}
		// Never more at once than there are free slots: clusters waiting
		// for their window give theirs back for the next chunk.
		for len(rcs) > 0 && slots > 0 {
			if err := e.renew(ctx); err != nil {
				return err
			}
			chunk := rcs[:min(slots, len(rcs), maxChunk)]
			rcs = rcs[len(chunk):]
			n, err := e.dispatchChunk(ctx, r.ID, chunk, spec.Policy.verifyTimeout(), gate)
			if errors.Is(err, store.ErrFailedPrecondition) {
				return nil // paused or changed under us: next pass
			}
			if err != nil {
				return err
			}
			slots -= n
		}
		if next == "" {
			return nil
		}
		page.After = next
	}
	return nil
}

// maxChunk bounds the dispatches between two lease renewals.
const maxChunk = 200

// dispatchChunk dispatches clusters, those of one data plane in plan
// order one after another and data planes in parallel, and returns how
// many it dispatched.
func (e *Engine) dispatchChunk(ctx context.Context, rolloutID string, chunk []store.RolloutCluster, verifyFor time.Duration,
	gate func(store.Cluster, store.Release) store.Gate) (int, error) {
	var order []string
	byDP := map[string][]store.RolloutCluster{}
	for _, rc := range chunk {
		if _, ok := byDP[rc.DataPlaneID]; !ok {
			order = append(order, rc.DataPlaneID)
		}
		byDP[rc.DataPlaneID] = append(byDP[rc.DataPlaneID], rc)
	}
	var dispatched atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(e.cfg.Workers)
	for _, dp := range order {
		g.Go(func() error {
			for _, rc := range byDP[dp] {
				got, err := e.st.DispatchCluster(gctx, e.fence, e.actor, rolloutID, rc.ClusterID, verifyFor, gate)
				if err != nil {
					return err
				}
				if got.State != rc.State {
					e.m.transitions.WithLabelValues(got.State).Inc()
				}
				if got.State == store.ClusterDispatched {
					dispatched.Add(1)
					e.log.Info("rollout dispatched cluster", "rollout_id", rolloutID, "wave", rc.Wave, "cluster_id", rc.ClusterID,
						"from", got.PreviousVersion, "to", got.TargetVersion)
				}
			}
			return nil
		})
	}
	err := g.Wait()
	return int(dispatched.Load()), err
}
