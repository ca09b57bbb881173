package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Rollout states.
const (
	RolloutRunning   = "running"
	RolloutPaused    = "paused"
	RolloutCompleted = "completed"
	RolloutCancelled = "cancelled"
)

// Rollout cluster states (docs/fleet.md): pending → eligible → dispatched
// → verifying → succeeded | failed, or skipped | excluded.
const (
	ClusterPending    = "pending"
	ClusterEligible   = "eligible"
	ClusterDispatched = "dispatched"
	ClusterVerifying  = "verifying"
	ClusterSucceeded  = "succeeded"
	ClusterFailed     = "failed"
	ClusterSkipped    = "skipped"
	ClusterExcluded   = "excluded"
)

// DesiredVersionKind is the config document kind that carries a cluster's
// desired version to its agent ({"version": "1.3.0"}); DesiredVersionName
// is the document's name.
const (
	DesiredVersionKind = "cairn.dev/desired-version"
	DesiredVersionName = "product"
)

// ErrLeaseLost: the caller's fence names a lease it no longer holds; the
// transaction changed nothing.
var ErrLeaseLost = errors.New("lease lost")

// Final reports whether a rollout cluster state is final.
func Final(state string) bool {
	switch state {
	case ClusterSucceeded, ClusterFailed, ClusterSkipped, ClusterExcluded:
		return true
	}
	return false
}

// Rollout is a rollout with its waves and counts.
type Rollout struct {
	ID            string `json:"id"`
	Product       string `json:"product"`
	TargetVersion string `json:"target_version"`
	// Spec is the rollout's spec as JSON, kept as started; the store does
	// not read it.
	Spec                []byte `json:"spec"`
	State               string `json:"state"`
	Reason              string `json:"reason"`
	CurrentWave         int    `json:"current_wave"`
	GlobalFailureBudget int    `json:"global_failure_budget"`
	// AcceptedFailures is Counts.Broken() when the rollout was last
	// resumed: failures an operator has seen and let the rollout go on
	// with.
	AcceptedFailures int       `json:"accepted_failures"`
	RollbackOf       string    `json:"rollback_of,omitempty"`
	RolledBackBy     string    `json:"rolled_back_by,omitempty"`
	CreatedBy        string    `json:"created_by"`
	CreateTime       time.Time `json:"create_time"`
	UpdateTime       time.Time `json:"update_time"`
	// Read only: filled in by GetRollout and ListRollouts.
	Waves   []RolloutWave `json:"-"`
	Counts  RolloutCounts `json:"-"`
	Overdue int           `json:"-"`
}

// RolloutWave is one wave of a rollout's saved plan.
type RolloutWave struct {
	Index         int
	Size          int
	Concurrency   int
	FailureBudget int
	Soak          time.Duration
	Sensitive     bool
	StartTime     *time.Time
	DoneTime      *time.Time
	SoakUntil     *time.Time
	// AcceptedFailures is Counts.Broken() when the rollout was last
	// resumed.
	AcceptedFailures int
	Counts           RolloutCounts
}

// RolloutCounts counts clusters by state. Failed counts failed clusters
// whose agent reported after the dispatch; Unreachable those whose agent
// did not.
type RolloutCounts struct {
	Pending, Eligible, Dispatched, Verifying, Succeeded, Failed, Unreachable, Skipped, Excluded int
}

// Broken is the number of clusters failure budgets count.
func (c RolloutCounts) Broken() int { return c.Failed + c.Unreachable }

func (c *RolloutCounts) add(state string, unreachable bool, n int) {
	switch state {
	case ClusterPending:
		c.Pending += n
	case ClusterEligible:
		c.Eligible += n
	case ClusterDispatched:
		c.Dispatched += n
	case ClusterVerifying:
		c.Verifying += n
	case ClusterSucceeded:
		c.Succeeded += n
	case ClusterFailed:
		if unreachable {
			c.Unreachable += n
		} else {
			c.Failed += n
		}
	case ClusterSkipped:
		c.Skipped += n
	case ClusterExcluded:
		c.Excluded += n
	}
}

// RolloutCluster is one cluster of a rollout.
type RolloutCluster struct {
	RolloutID       string
	ClusterID       string
	Name            string
	DataPlaneID     string
	Wave            int
	Position        int
	State           string
	Detail          string
	Unreachable     bool
	TargetVersion   string
	PreviousVersion string
	StateTime       time.Time
	Deadline        *time.Time
	DispatchTime    *time.Time
}

const rolloutCols = `t.id, t.product, t.target_version, t.spec, t.state, t.reason, t.current_wave,
	t.global_failure_budget, t.accepted_failures, t.rollback_of, t.rolled_back_by, t.created_by, t.create_time, t.update_time`

func scanRollout(r row) (Rollout, error) {
	var o Rollout
	var spec string
	if err := r.Scan(&o.ID, &o.Product, &o.TargetVersion, &spec, &o.State, &o.Reason, &o.CurrentWave,
		&o.GlobalFailureBudget, &o.AcceptedFailures, &o.RollbackOf, &o.RolledBackBy, &o.CreatedBy, &o.CreateTime, &o.UpdateTime); err != nil {
		return Rollout{}, err
	}
	o.Spec = []byte(spec)
	o.CreateTime, o.UpdateTime = utc(o.CreateTime), utc(o.UpdateTime)
	return o, nil
}

const rolloutClusterCols = `t.rollout_id, t.cluster_id, t.name, t.data_plane_id, t.wave, t.position, t.state, t.detail,
	t.unreachable, t.target_version, t.previous_version, t.state_time, t.deadline, t.dispatch_time`

// scanDest is where rolloutClusterCols scan to; more are scanned after
// them.
func (c *RolloutCluster) scanDest(more ...any) []any {
	return append([]any{&c.RolloutID, &c.ClusterID, &c.Name, &c.DataPlaneID, &c.Wave, &c.Position, &c.State, &c.Detail,
		&c.Unreachable, &c.TargetVersion, &c.PreviousVersion, &c.StateTime, &c.Deadline, &c.DispatchTime}, more...)
}

// scanned puts the times of a scanned cluster in UTC.
func (c *RolloutCluster) scanned() {
	c.StateTime = utc(c.StateTime)
	utcPtr(c.Deadline)
	utcPtr(c.DispatchTime)
}

func scanRolloutCluster(r row) (RolloutCluster, error) {
	var c RolloutCluster
	if err := r.Scan(c.scanDest()...); err != nil {
		return RolloutCluster{}, err
	}
	c.scanned()
	return c, nil
}

func utcPtr(t *time.Time) {
	if t != nil {
		*t = t.UTC()
	}
}

// Fence ties a transaction to a lease: it changes nothing unless Holder
// still holds lease Name. The zero Fence (operator actions) is not checked.
type Fence struct {
	Name, Holder string
}

func (s *Store) checkFence(ctx context.Context, q querier, f Fence) error {
	if f.Holder == "" {
		return nil
	}
	var holder string
	var expire time.Time
	err := q.queryRow(ctx, `SELECT holder, expire_time FROM leases WHERE name = $1`, f.Name).Scan(&holder, &expire)
	if isNoRows(err) || (err == nil && (holder != f.Holder || !s.now().Before(expire))) {
		return fmt.Errorf("lease %s for %s: %w", f.Name, f.Holder, ErrLeaseLost)
	}
	return err
}

// AcquireLease takes lease name for holder for ttl, or renews it if holder
// has it. It returns false when another holder's lease has not expired.
func (s *Store) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	var got bool
	err := s.inTx(ctx, func(q querier) error {
		now := s.now()
		var cur string
		var expire time.Time
		err := q.queryRow(ctx, `SELECT holder, expire_time FROM leases WHERE name = $1`, name).Scan(&cur, &expire)
		switch {
		case isNoRows(err):
			_, err = q.exec(ctx, `INSERT INTO leases (name, holder, expire_time) VALUES ($1, $2, $3)`, name, holder, now.Add(ttl))
		case err != nil:
		case cur == holder || !now.Before(expire):
			_, err = q.exec(ctx, `UPDATE leases SET holder = $2, expire_time = $3 WHERE name = $1`, name, holder, now.Add(ttl))
		default:
			got = false
			return nil
		}
		got = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("acquire lease %s: %w", name, err)
	}
	return got, nil
}

// ReleaseLease gives up holder's lease so another replica takes over at
// once rather than after it expires.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string) error {
	err := s.inTx(ctx, func(q querier) error {
		_, err := q.exec(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// NewRollout is a planned rollout to save.
type NewRollout struct {
	Rollout Rollout
	Waves   []RolloutWave
	// Clusters holds every planned cluster (Wave ≥ 0, state pending) and
	// every cluster skipped when planning (Wave -1, state skipped, Detail
	// why).
	Clusters []RolloutCluster
	// RollbackReason, for a rollback, is why: the rollout it reverts is
	// cancelled with it in the same transaction, if it has not ended.
	RollbackReason string
}

// rowsPerInsert bounds one multi-row INSERT of rollout clusters (14
// parameters a row).
const rowsPerInsert = 200

// CreateRollout saves a planned rollout and takes its clusters' locks. It
// fails with ErrFailedPrecondition if the target release is missing or
// blocked, or a planned cluster is held by another rollout (the plan is
// stale: plan again). For a rollback (Rollout.RollbackOf set), the rollout
// it reverts is marked in the same transaction.
func (s *Store) CreateRollout(ctx context.Context, a Actor, nr NewRollout) (Rollout, error) {
	r := nr.Rollout
	now := s.now()
	r.ID, r.CreatedBy, r.CreateTime, r.UpdateTime = newID(), a.ID, now, now
	r.State, r.CurrentWave = RolloutRunning, 0
	err := s.inTx(ctx, func(q querier) error {
		rel, err := getRelease(ctx, q, r.Product, r.TargetVersion)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%s %s is not a release: %w", r.Product, r.TargetVersion, ErrFailedPrecondition)
		}
		if err != nil {
			return err
		}
		if rel.State == ReleaseBlocked {
			return fmt.Errorf("%s %s is blocked: %w", r.Product, r.TargetVersion, ErrFailedPrecondition)
		}
		var planned []string
		for _, c := range nr.Clusters {
			if !Final(c.State) {
				planned = append(planned, c.ClusterID)
			}
		}
		held, err := lockedClusters(ctx, q, planned)
		if err != nil {
			return err
		}
		for id, by := range held {
			if by != r.RollbackOf {
				return fmt.Errorf("cluster %s is held by rollout %s: %w", id, by, ErrFailedPrecondition)
			}
			// A rollback takes over the clusters the rollout it reverts
			// still verifies: they end there as failed.
			if _, err := q.exec(ctx, `UPDATE rollout_clusters SET state = 'failed', detail = $3, state_time = $4, deadline = NULL
				WHERE rollout_id = $1 AND cluster_id = $2 AND state IN ('dispatched', 'verifying')`,
				by, id, "rolled back by "+r.ID+" before it was verified", now); err != nil {
				return err
			}
			if _, err := q.exec(ctx, `DELETE FROM rollout_locks WHERE cluster_id = $1`, id); err != nil {
				return err
			}
		}
		if _, err := q.exec(ctx, `INSERT INTO rollouts (id, product, target_version, spec, state, reason, current_wave,
			global_failure_budget, rollback_of, rolled_back_by, created_by, create_time, update_time, accepted_failures)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0)`,
			r.ID, r.Product, r.TargetVersion, string(r.Spec), r.State, r.Reason, r.CurrentWave,
			r.GlobalFailureBudget, r.RollbackOf, "", r.CreatedBy, r.CreateTime, r.UpdateTime); err != nil {
			return err
		}
		for _, w := range nr.Waves {
			if _, err := q.exec(ctx, `INSERT INTO rollout_waves (rollout_id, idx, size, concurrency, failure_budget, soak_ms, sensitive, accepted_failures)
				VALUES ($1, $2, $3, $4, $5, $6, $7, 0)`, r.ID, w.Index, w.Size, w.Concurrency, w.FailureBudget, w.Soak.Milliseconds(), w.Sensitive); err != nil {
				return err
			}
		}
		if err := insertRolloutClusters(ctx, q, r.ID, nr.Clusters, now); err != nil {
			return err
		}
		for i := 0; i < len(planned); i += rowsPerInsert {
			chunk := planned[i:min(i+rowsPerInsert, len(planned))]
			var b strings.Builder
			args := []any{r.ID}
			b.WriteString(`INSERT INTO rollout_locks (cluster_id, rollout_id) VALUES `)
			for j, id := range chunk {
				if j > 0 {
					b.WriteString(", ")
				}
				args = append(args, id)
				fmt.Fprintf(&b, "($%d, $1)", len(args))
			}
			if _, err := q.exec(ctx, b.String(), args...); err != nil {
				return err
			}
		}
		if r.RollbackOf != "" {
			orig, err := getRollout(ctx, q, r.RollbackOf)
			if err != nil {
				return err
			}
			if orig.State == RolloutRunning || orig.State == RolloutPaused {
				if err := s.setRolloutState(ctx, q, a, orig.ID, []string{orig.State}, RolloutCancelled, nr.RollbackReason, "rollout.cancel"); err != nil {
					return err
				}
			}
			n, err := q.exec(ctx, `UPDATE rollouts SET rolled_back_by = $2, update_time = $3 WHERE id = $1 AND rolled_back_by = ''`, r.RollbackOf, r.ID, now)
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("rollout %s is already rolled back: %w", r.RollbackOf, ErrFailedPrecondition)
			}
		}
		return s.auditDetail(ctx, q, a, "rollout.start", "rollout", r.ID, "", nil, r,
			fmt.Sprintf("%s %s, %d clusters in %d waves", r.Product, r.TargetVersion, len(planned), len(nr.Waves)))
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	return s.GetRollout(ctx, r.ID)
}

func insertRolloutClusters(ctx context.Context, q querier, rolloutID string, cs []RolloutCluster, now time.Time) error {
	for i := 0; i < len(cs); i += rowsPerInsert {
		chunk := cs[i:min(i+rowsPerInsert, len(cs))]
		var b strings.Builder
		var args []any
		b.WriteString(`INSERT INTO rollout_clusters (rollout_id, cluster_id, name, data_plane_id, wave, position, state, detail,
			unreachable, target_version, previous_version, state_time) VALUES `)
		for j, c := range chunk {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(")
			for k, v := range []any{rolloutID, c.ClusterID, c.Name, c.DataPlaneID, c.Wave, c.Position, c.State, c.Detail,
				false, c.TargetVersion, c.PreviousVersion, now} {
				if k > 0 {
					b.WriteString(", ")
				}
				args = append(args, v)
				b.WriteString("$" + strconv.Itoa(len(args)))
			}
			b.WriteString(")")
		}
		if _, err := q.exec(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("insert rollout clusters: %w", err)
		}
	}
	return nil
}

// lockedClusters returns which of ids a rollout holds, and which.
func lockedClusters(ctx context.Context, q querier, ids []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(ids); i += rowsPerInsert {
		var w where
		w.add(in(&w, "cluster_id", ids[i:min(i+rowsPerInsert, len(ids))]))
		type lock struct{ cluster, rollout string }
		locks, err := queryAll(ctx, q, func(r row) (lock, error) {
			var l lock
			return l, r.Scan(&l.cluster, &l.rollout)
		}, `SELECT cluster_id, rollout_id FROM rollout_locks`+w.String(), w.args...)
		if err != nil {
			return nil, err
		}
		for _, l := range locks {
			out[l.cluster] = l.rollout
		}
	}
	return out, nil
}

// LockedClusters returns which of the clusters ids a rollout holds, and
// which rollout.
func (s *Store) LockedClusters(ctx context.Context, ids []string) (map[string]string, error) {
	var out map[string]string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = lockedClusters(ctx, q, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("locked clusters: %w", err)
	}
	return out, nil
}

func getRollout(ctx context.Context, q querier, id string) (Rollout, error) {
	if !isValidID(id) {
		return Rollout{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	r, err := scanRollout(q.queryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts t WHERE t.id = $1`, id))
	if isNoRows(err) {
		return Rollout{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	return r, err
}

// fillRollout reads a rollout's waves and counts.
func (s *Store) fillRollout(ctx context.Context, q querier, r *Rollout) error {
	waves, err := queryAll(ctx, q, func(rw row) (RolloutWave, error) {
		var w RolloutWave
		var soak int64
		err := rw.Scan(&w.Index, &w.Size, &w.Concurrency, &w.FailureBudget, &soak, &w.Sensitive, &w.StartTime, &w.DoneTime, &w.SoakUntil,
			&w.AcceptedFailures)
		w.Soak = time.Duration(soak) * time.Millisecond
		utcPtr(w.StartTime)
		utcPtr(w.DoneTime)
		utcPtr(w.SoakUntil)
		return w, err
	}, `SELECT idx, size, concurrency, failure_budget, soak_ms, sensitive, start_time, done_time, soak_until, accepted_failures
		FROM rollout_waves WHERE rollout_id = $1 ORDER BY idx`, r.ID)
	if err != nil {
		return err
	}
	type count struct {
		wave, n     int
		state       string
		unreachable bool
	}
	counts, err := queryAll(ctx, q, func(rw row) (count, error) {
		var c count
		return c, rw.Scan(&c.wave, &c.state, &c.unreachable, &c.n)
	}, `SELECT wave, state, unreachable, count(*) FROM rollout_clusters WHERE rollout_id = $1 GROUP BY wave, state, unreachable`, r.ID)
	if err != nil {
		return err
	}
	r.Counts = RolloutCounts{}
	for _, c := range counts {
		r.Counts.add(c.state, c.unreachable, c.n)
		if c.wave >= 0 && c.wave < len(waves) {
			waves[c.wave].Counts.add(c.state, c.unreachable, c.n)
		}
	}
	r.Waves = waves
	now := s.now()
	if err := q.queryRow(ctx, `SELECT count(*) FROM rollout_clusters WHERE rollout_id = $1
		AND state IN ('eligible', 'dispatched', 'verifying') AND deadline < $2`, r.ID, now).Scan(&r.Overdue); err != nil {
		return err
	}
	// Pending clusters are overdue when their wave should have started
	// (the rollout's start, or the previous wave's soak, plus a grace)
	// and has not: no replica is driving the rollout.
	if r.State == RolloutRunning && r.CurrentWave < len(waves) {
		w := waves[r.CurrentWave]
		switch {
		case w.StartTime == nil && now.After(r.UpdateTime.Add(StartGrace)):
			r.Overdue += w.Counts.Pending
		case w.SoakUntil != nil && now.After(w.SoakUntil.Add(StartGrace)) && w.Index+1 < len(waves):
			r.Overdue += waves[w.Index+1].Counts.Pending
		}
	}
	return nil
}

// StartGrace is how late a wave may start (after the rollout starts or
// resumes, or after the previous wave's soak) before its clusters are
// shown overdue.
const StartGrace = time.Minute

// GetRollout returns a rollout with its waves and counts.
func (s *Store) GetRollout(ctx context.Context, id string) (Rollout, error) {
	var r Rollout
	err := s.b.read(ctx, func(q querier) (err error) {
		if r, err = getRollout(ctx, q, id); err != nil {
			return err
		}
		return s.fillRollout(ctx, q, &r)
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("get rollout: %w", err)
	}
	return r, nil
}

// ListRollouts returns one page of rollouts, newest first, optionally only
// in the given states.
func (s *Store) ListRollouts(ctx context.Context, states []string, p Page) ([]Rollout, string, error) {
	var w where
	if len(states) > 0 {
		w.add(in(&w, "t.state", states))
	}
	if p.After != "" {
		ts, id, ok := strings.Cut(p.After, "/")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil || !isValidID(id) {
			return nil, "", ErrBadPageToken
		}
		w.add("(t.create_time < " + w.arg(at) + " OR (t.create_time = " + w.arg(at) + " AND t.id < " + w.arg(id) + "))")
	}
	size := max(p.Size, 1)
	var out []Rollout
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanRollout, `SELECT `+rolloutCols+` FROM rollouts t`+w.String()+
			` ORDER BY t.create_time DESC, t.id DESC LIMIT `+strconv.Itoa(size+1), w.args...)
		if err != nil {
			return err
		}
		for i := range out[:min(len(out), size)] {
			if err := s.fillRollout(ctx, q, &out[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list rollouts: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = last.CreateTime.Format(time.RFC3339Nano) + "/" + last.ID
	}
	return out, next, nil
}

// RolloutClusterFilter narrows ListRolloutClusters.
type RolloutClusterFilter struct {
	States []string
	// Wave keeps clusters of one wave when not nil.
	Wave *int
	// Due leaves out clusters waiting for a later time (their maintenance
	// window): the engine's view.
	Due bool
}

// ListRolloutClusters returns one page of a rollout's clusters in plan
// order (wave, position; clusters skipped when planning first).
func (s *Store) ListRolloutClusters(ctx context.Context, rolloutID string, f RolloutClusterFilter, p Page) ([]RolloutCluster, string, error) {
	var w where
	w.add("t.rollout_id = " + w.arg(rolloutID))
	if len(f.States) > 0 {
		w.add(in(&w, "t.state", f.States))
	}
	if f.Wave != nil {
		w.add("t.wave = " + w.arg(*f.Wave))
	}
	if f.Due {
		w.add("(t.not_before IS NULL OR t.not_before <= " + w.arg(s.now()) + ")")
	}
	if p.After != "" {
		ws, ps, ok := strings.Cut(p.After, ".")
		wave, err1 := strconv.Atoi(ws)
		pos, err2 := strconv.Atoi(ps)
		if !ok || err1 != nil || err2 != nil {
			return nil, "", ErrBadPageToken
		}
		w.add("(t.wave > " + w.arg(wave) + " OR (t.wave = " + w.arg(wave) + " AND t.position > " + w.arg(pos) + "))")
	}
	size := max(p.Size, 1)
	var out []RolloutCluster
	err := s.b.read(ctx, func(q querier) (err error) {
		if _, err := getRollout(ctx, q, rolloutID); err != nil {
			return err
		}
		out, err = queryAll(ctx, q, scanRolloutCluster, `SELECT `+rolloutClusterCols+` FROM rollout_clusters t`+w.String()+
			` ORDER BY t.wave, t.position LIMIT `+strconv.Itoa(size+1), w.args...)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list rollout clusters: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		last := out[size-1]
		next = strconv.Itoa(last.Wave) + "." + strconv.Itoa(last.Position)
	}
	return out, next, nil
}

// ActiveRolloutIDs returns the rollouts the engine drives: running or
// paused ones, and cancelled ones with clusters still in flight.
func (s *Store) ActiveRolloutIDs(ctx context.Context) ([]string, error) {
	var out []string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanString, `SELECT t.id FROM rollouts t WHERE t.state IN ('running', 'paused')
			OR (t.state = 'cancelled' AND EXISTS (SELECT 1 FROM rollout_clusters c WHERE c.rollout_id = t.id
				AND c.state IN ('dispatched', 'verifying'))) ORDER BY t.create_time, t.id`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("active rollouts: %w", err)
	}
	return out, nil
}

// InFlight is a dispatched or verifying cluster with what its agent last
// reported of it (Reported false when nothing yet) and when the control
// plane stored that report.
type InFlight struct {
	RolloutCluster
	Reported    bool
	Report      ClusterReport
	ReceiveTime time.Time
}

// InFlightClusters returns a rollout's dispatched and verifying clusters
// with their agents' last reports.
func (s *Store) InFlightClusters(ctx context.Context, rolloutID string) ([]InFlight, error) {
	var out []InFlight
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, func(r row) (InFlight, error) {
			var f InFlight
			var version, desired, detail *string
			var healthy *bool
			var at, received *time.Time
			c := &f.RolloutCluster
			if err := r.Scan(c.scanDest(&version, &desired, &healthy, &detail, &at, &received)...); err != nil {
				return f, err
			}
			c.scanned()
			if at != nil {
				f.Reported = true
				f.Report = ClusterReport{ClusterID: c.ClusterID, Version: *version, DesiredVersion: *desired,
					Healthy: *healthy, Detail: *detail, ReportTime: at.UTC()}
				if received != nil {
					f.ReceiveTime = received.UTC()
				}
			}
			return f, nil
		}, `SELECT `+rolloutClusterCols+`, r.version, r.desired_version, r.healthy, r.detail, r.report_time, r.receive_time
			FROM rollout_clusters t LEFT JOIN cluster_reports r ON r.cluster_id = t.cluster_id
			WHERE t.rollout_id = $1 AND t.state IN ('dispatched', 'verifying') ORDER BY t.wave, t.position`, rolloutID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("in-flight clusters: %w", err)
	}
	return out, nil
}

// StartWave starts wave of a running rollout: it becomes the current wave
// and its pending clusters eligible, each with the given deadline.
func (s *Store) StartWave(ctx context.Context, f Fence, rolloutID string, wave int, eligibleFor time.Duration) error {
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		now := s.now()
		n, err := q.exec(ctx, `UPDATE rollouts SET current_wave = $2, update_time = $3 WHERE id = $1 AND state = 'running'`, rolloutID, wave, now)
		if err != nil || n == 0 {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE rollout_waves SET start_time = $3 WHERE rollout_id = $1 AND idx = $2 AND start_time IS NULL`,
			rolloutID, wave, now); err != nil {
			return err
		}
		_, err = q.exec(ctx, `UPDATE rollout_clusters SET state = 'eligible', state_time = $3, deadline = $4
			WHERE rollout_id = $1 AND wave = $2 AND state = 'pending'`, rolloutID, wave, now, now.Add(eligibleFor))
		return err
	})
	if err != nil {
		return fmt.Errorf("start wave %d of rollout %s: %w", wave, rolloutID, err)
	}
	return nil
}

// Gate is what a rollout's dispatch check decides for a cluster.
type Gate struct {
	// Wait leaves the cluster eligible (e.g. outside its maintenance
	// window) until NotBefore; Detail says why.
	Wait      bool
	NotBefore time.Time
	// Skip, if not empty, skips the cluster with this reason (e.g. the
	// compatibility rule it now fails).
	Skip   string
	Detail string
}

// DispatchCluster dispatches an eligible cluster of a running rollout, all
// in one transaction: it writes the cluster's desired version (the
// cluster's desired_version and its cairn.dev/desired-version document,
// which the revision log carries to the agent as a signed delta) and moves
// the cluster to dispatched with a deadline verifyFor ahead. Before that,
// a cluster that is gone is skipped, one an exclusion covers is excluded,
// and gate decides about the rest (compatibility, maintenance window),
// reading the cluster and target release as they are now. It returns the
// cluster as it is afterwards; ErrFailedPrecondition if it was not
// eligible or the rollout is not running.
func (s *Store) DispatchCluster(ctx context.Context, f Fence, a Actor, rolloutID, clusterID string, verifyFor time.Duration,
	gate func(Cluster, Release) Gate) (RolloutCluster, error) {
	var out RolloutCluster
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		now := s.now()
		ro, err := getRollout(ctx, q, rolloutID)
		if err != nil {
			return err
		}
		rc, err := scanRolloutCluster(q.queryRow(ctx, `SELECT `+rolloutClusterCols+` FROM rollout_clusters t
			WHERE t.rollout_id = $1 AND t.cluster_id = $2`, rolloutID, clusterID))
		if isNoRows(err) {
			return fmt.Errorf("cluster %s in rollout %s: %w", clusterID, rolloutID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if rc.State != ClusterEligible || ro.State != RolloutRunning {
			return fmt.Errorf("cluster %s is %s in a %s rollout: %w", clusterID, rc.State, ro.State, ErrFailedPrecondition)
		}
		finish := func(state, detail string) error {
			out = rc
			out.State, out.Detail, out.StateTime, out.Deadline = state, detail, now, nil
			return s.finishCluster(ctx, q, a, rc, state, detail, false)
		}
		c, err := getCluster(ctx, q, "", clusterID)
		if errors.Is(err, ErrNotFound) {
			return finish(ClusterSkipped, "the cluster was deleted")
		}
		if err != nil {
			return err
		}
		if ex, ok, err := s.activeExclusion(ctx, q, c); err != nil {
			return err
		} else if ok {
			return finish(ClusterExcluded, fmt.Sprintf("exclusion %s until %s: %s", ex.ID, ex.ExpireTime.Format(time.RFC3339), ex.Reason))
		}
		rel, err := getRelease(ctx, q, ro.Product, rc.TargetVersion)
		if errors.Is(err, ErrNotFound) {
			return finish(ClusterSkipped, "the target is no longer a release")
		}
		if err != nil {
			return err
		}
		if rel.State == ReleaseBlocked {
			return finish(ClusterSkipped, "the target release is blocked")
		}
		g := gate(c, rel)
		switch {
		case g.Skip != "":
			return finish(ClusterSkipped, g.Skip)
		case g.Wait:
			var notBefore any
			if !g.NotBefore.IsZero() {
				notBefore = g.NotBefore.UTC()
			}
			if _, err := q.exec(ctx, `UPDATE rollout_clusters SET detail = $3, not_before = $4 WHERE rollout_id = $1 AND cluster_id = $2`,
				rolloutID, clusterID, g.Detail, notBefore); err != nil {
				return err
			}
			out = rc
			out.Detail = g.Detail
			return nil
		}
		if err := s.putDesiredVersion(ctx, q, a, c, rc.TargetVersion); err != nil {
			return err
		}
		deadline := now.Add(verifyFor)
		n, err := q.exec(ctx, `UPDATE rollout_clusters SET state = 'dispatched', detail = '', state_time = $3, deadline = $4,
			dispatch_time = $3, previous_version = $5 WHERE rollout_id = $1 AND cluster_id = $2 AND state = 'eligible'`,
			rolloutID, clusterID, now, deadline, c.DesiredVersion)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("cluster %s changed during dispatch: %w", clusterID, ErrFailedPrecondition)
		}
		out = rc
		out.State, out.Detail, out.StateTime, out.Deadline, out.DispatchTime, out.PreviousVersion = ClusterDispatched, "", now, &deadline, &now, c.DesiredVersion
		return s.auditDetail(ctx, q, a, "rollout.cluster.dispatch", "rollout", rolloutID, c.TenantID, nil, nil,
			fmt.Sprintf("cluster %s: %s -> %s", clusterID, c.DesiredVersion, rc.TargetVersion))
	})
	if err != nil {
		return RolloutCluster{}, fmt.Errorf("dispatch cluster %s of rollout %s: %w", clusterID, rolloutID, err)
	}
	return out, nil
}

// putDesiredVersion sets a cluster's desired version and writes it into
// the cluster's cairn.dev/desired-version document, so that it reaches the
// cluster's agent as a signed delta. Nothing is written when both already
// say version.
func (s *Store) putDesiredVersion(ctx context.Context, q querier, a Actor, c Cluster, version string) error {
	now := s.now()
	if c.DesiredVersion != version {
		if _, err := q.exec(ctx, `UPDATE clusters SET desired_version = $2, desired_version_key = $3, etag = $4, update_time = $5 WHERE id = $1`,
			c.ID, version, versionSortKey(version), newEtag(), now); err != nil {
			return err
		}
	}
	content, err := json.Marshal(map[string]string{"version": version})
	if err != nil {
		return err
	}
	old, err := getConfigByKey(ctx, q, ScopeCluster, c.ID, DesiredVersionKind, DesiredVersionName)
	switch {
	case isNoRows(err):
		_, err := s.createConfig(ctx, q, a, ConfigDocument{TenantID: c.TenantID, DataPlaneID: c.DataPlaneID, ScopeType: ScopeCluster,
			ScopeID: c.ID, Kind: DesiredVersionKind, Name: DesiredVersionName, Content: content, MediaType: "application/json", Structured: true})
		return err
	case err != nil:
		return err
	}
	var body struct {
		Version string `json:"version"`
	}
	if json.Unmarshal(old.Content, &body) == nil && body.Version == version && old.Structured {
		return nil
	}
	_, err = s.updateConfig(ctx, q, a, old, ConfigContent{Content: content, MediaType: "application/json", Structured: true, Labels: old.Labels})
	return err
}

// finishCluster moves rc to a final state and drops its lock.
func (s *Store) finishCluster(ctx context.Context, q querier, a Actor, rc RolloutCluster, state, detail string, unreachable bool) error {
	now := s.now()
	n, err := q.exec(ctx, `UPDATE rollout_clusters SET state = $4, detail = $5, unreachable = $6, state_time = $7, deadline = NULL
		WHERE rollout_id = $1 AND cluster_id = $2 AND state = $3`, rc.RolloutID, rc.ClusterID, rc.State, state, detail, unreachable, now)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("cluster %s changed: %w", rc.ClusterID, ErrFailedPrecondition)
	}
	if _, err := q.exec(ctx, `DELETE FROM rollout_locks WHERE cluster_id = $1 AND rollout_id = $2`, rc.ClusterID, rc.RolloutID); err != nil {
		return err
	}
	if state == ClusterSucceeded {
		return nil // the dispatch is audited; success is the expected end
	}
	return s.auditDetail(ctx, q, a, "rollout.cluster."+state, "rollout", rc.RolloutID, "", nil, nil,
		fmt.Sprintf("cluster %s: %s", rc.ClusterID, detail))
}

// AdvanceCluster moves an in-flight cluster on: from (dispatched or
// verifying) to verifying, or to a final state. It returns false, changing
// nothing, when the cluster is no longer in state from.
func (s *Store) AdvanceCluster(ctx context.Context, f Fence, a Actor, rc RolloutCluster, to, detail string, unreachable bool) (bool, error) {
	moved := true
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		if Final(to) {
			err := s.finishCluster(ctx, q, a, rc, to, detail, unreachable)
			if errors.Is(err, ErrFailedPrecondition) {
				moved = false
				return nil
			}
			return err
		}
		n, err := q.exec(ctx, `UPDATE rollout_clusters SET state = $4, detail = $5, state_time = $6
			WHERE rollout_id = $1 AND cluster_id = $2 AND state = $3`, rc.RolloutID, rc.ClusterID, rc.State, to, detail, s.now())
		moved = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("advance cluster %s of rollout %s: %w", rc.ClusterID, rc.RolloutID, err)
	}
	return moved, nil
}

// FinishWave records that every cluster of the current wave is final: the
// next wave may start at soakUntil.
func (s *Store) FinishWave(ctx context.Context, f Fence, rolloutID string, wave int, soakUntil time.Time) error {
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		// Only if every cluster of the wave is final as this transaction
		// sees it: an operator may have expedited one into it since the
		// engine counted.
		_, err := q.exec(ctx, `UPDATE rollout_waves SET done_time = $3, soak_until = $4 WHERE rollout_id = $1 AND idx = $2 AND done_time IS NULL
			AND NOT EXISTS (SELECT 1 FROM rollout_clusters c WHERE c.rollout_id = $1 AND c.wave = $2
				AND c.state IN ('pending', 'eligible', 'dispatched', 'verifying'))`,
			rolloutID, wave, s.now(), soakUntil.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("finish wave %d of rollout %s: %w", wave, rolloutID, err)
	}
	return nil
}

// CompleteRollout ends a running rollout whose waves are all done.
func (s *Store) CompleteRollout(ctx context.Context, f Fence, a Actor, rolloutID, reason string) error {
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		n, err := q.exec(ctx, `UPDATE rollouts SET state = 'completed', reason = $2, update_time = $3 WHERE id = $1 AND state = 'running'
			AND NOT EXISTS (SELECT 1 FROM rollout_clusters c WHERE c.rollout_id = $1 AND c.state IN ('pending', 'eligible', 'dispatched', 'verifying'))`,
			rolloutID, reason, s.now())
		if err != nil || n == 0 {
			return err
		}
		if _, err := q.exec(ctx, `DELETE FROM rollout_locks WHERE rollout_id = $1`, rolloutID); err != nil {
			return err
		}
		return s.auditDetail(ctx, q, a, "rollout.complete", "rollout", rolloutID, "", nil, nil, reason)
	})
	if err != nil {
		return fmt.Errorf("complete rollout %s: %w", rolloutID, err)
	}
	return nil
}

// SetRolloutState changes a rollout's state from one of from to to, with
// the reason, audited as action. Cancelling skips the clusters not yet
// dispatched (dispatched ones are still verified) and drops their locks.
// ErrFailedPrecondition if the rollout is in no state of from.
func (s *Store) SetRolloutState(ctx context.Context, f Fence, a Actor, rolloutID string, from []string, to, reason, action string) (Rollout, error) {
	err := s.inTx(ctx, func(q querier) error {
		if err := s.checkFence(ctx, q, f); err != nil {
			return err
		}
		return s.setRolloutState(ctx, q, a, rolloutID, from, to, reason, action)
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("%s: %w", action, err)
	}
	return s.GetRollout(ctx, rolloutID)
}

func (s *Store) setRolloutState(ctx context.Context, q querier, a Actor, rolloutID string, from []string, to, reason, action string) error {
	r, err := getRollout(ctx, q, rolloutID)
	if err != nil {
		return err
	}
	ok := false
	for _, st := range from {
		ok = ok || r.State == st
	}
	if !ok {
		return fmt.Errorf("rollout %s is %s: %w", rolloutID, r.State, ErrFailedPrecondition)
	}
	now := s.now()
	if _, err := q.exec(ctx, `UPDATE rollouts SET state = $2, reason = $3, update_time = $4 WHERE id = $1`, rolloutID, to, reason, now); err != nil {
		return err
	}
	if action == "rollout.resume" {
		// Resuming accepts the failures so far, per wave and in all.
		if _, err := q.exec(ctx, `UPDATE rollouts SET accepted_failures = (SELECT count(*) FROM rollout_clusters
			WHERE rollout_id = $1 AND state = 'failed') WHERE id = $1`, rolloutID); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE rollout_waves SET accepted_failures = (SELECT count(*) FROM rollout_clusters c
			WHERE c.rollout_id = $1 AND c.wave = rollout_waves.idx AND c.state = 'failed') WHERE rollout_id = $1`, rolloutID); err != nil {
			return err
		}
	}
	if to == RolloutCancelled {
		if _, err := q.exec(ctx, `DELETE FROM rollout_locks WHERE rollout_id = $1 AND cluster_id IN (SELECT cluster_id FROM rollout_clusters
			WHERE rollout_id = $1 AND state IN ('pending', 'eligible'))`, rolloutID); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE rollout_clusters SET state = 'skipped', detail = 'the rollout was cancelled', state_time = $2,
			deadline = NULL WHERE rollout_id = $1 AND state IN ('pending', 'eligible')`, rolloutID, now); err != nil {
			return err
		}
	}
	return s.auditDetail(ctx, q, a, action, "rollout", rolloutID, "", nil, nil, reason)
}

// PauseAllRollouts pauses every running rollout with the reason and
// returns their IDs.
func (s *Store) PauseAllRollouts(ctx context.Context, a Actor, reason string) ([]string, error) {
	var ids []string
	err := s.inTx(ctx, func(q querier) (err error) {
		ids, err = queryAll(ctx, q, scanString, `SELECT id FROM rollouts WHERE state = 'running' ORDER BY id`)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := s.setRolloutState(ctx, q, a, id, []string{RolloutRunning}, RolloutPaused, reason, "rollout.pause"); err != nil {
				return err
			}
		}
		if len(ids) == 0 {
			return nil
		}
		return s.auditDetail(ctx, q, a, "rollout.pause_all", "rollout", "", "", nil, nil,
			fmt.Sprintf("%d paused: %s", len(ids), reason))
	})
	if err != nil {
		return nil, fmt.Errorf("pause all rollouts: %w", err)
	}
	return ids, nil
}

// RolloutLimits is an edit of a rollout's concurrency and budgets, applied
// to the waves not yet done.
type RolloutLimits struct {
	// Concurrency, when not nil, is the new per-wave concurrency (0: the
	// whole wave).
	Concurrency *int
	// WaveBudget, when not nil, gives a wave of size n its budget.
	WaveBudget func(n int) int
	// GlobalBudget, when not nil, gives the rollout's n planned clusters
	// (not skipped when planning) their global budget.
	GlobalBudget func(n int) int
	// EditSpec applies the edit to the rollout's spec as it is in the
	// transaction. Required.
	EditSpec func(spec []byte) ([]byte, error)
}

// UpdateRolloutLimits edits a rollout that has not ended.
func (s *Store) UpdateRolloutLimits(ctx context.Context, a Actor, rolloutID string, l RolloutLimits) (Rollout, error) {
	err := s.inTx(ctx, func(q querier) error {
		r, err := s.rolloutForEdit(ctx, q, rolloutID)
		if err != nil {
			return err
		}
		if err := s.fillRollout(ctx, q, &r); err != nil {
			return err
		}
		for _, w := range r.Waves {
			if w.DoneTime != nil {
				continue
			}
			conc, budget := w.Concurrency, w.FailureBudget
			if l.Concurrency != nil {
				conc = w.Size
				if *l.Concurrency > 0 {
					conc = min(*l.Concurrency, w.Size)
				}
			}
			if l.WaveBudget != nil {
				budget = l.WaveBudget(w.Size)
			}
			if _, err := q.exec(ctx, `UPDATE rollout_waves SET concurrency = $3, failure_budget = $4 WHERE rollout_id = $1 AND idx = $2`,
				rolloutID, w.Index, max(conc, 1), budget); err != nil {
				return err
			}
		}
		global := r.GlobalFailureBudget
		if l.GlobalBudget != nil {
			var planned int
			if err := q.queryRow(ctx, `SELECT count(*) FROM rollout_clusters WHERE rollout_id = $1 AND wave >= 0`, rolloutID).Scan(&planned); err != nil {
				return err
			}
			global = l.GlobalBudget(planned)
		}
		spec, err := l.EditSpec(r.Spec)
		if err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE rollouts SET global_failure_budget = $2, spec = $3, update_time = $4 WHERE id = $1`,
			rolloutID, global, string(spec), s.now()); err != nil {
			return err
		}
		return s.auditDetail(ctx, q, a, "rollout.update", "rollout", rolloutID, "", nil, nil, string(spec))
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("update rollout: %w", err)
	}
	return s.GetRollout(ctx, rolloutID)
}

func (s *Store) rolloutForEdit(ctx context.Context, q querier, rolloutID string) (Rollout, error) {
	r, err := getRollout(ctx, q, rolloutID)
	if err != nil {
		return Rollout{}, err
	}
	if r.State != RolloutRunning && r.State != RolloutPaused {
		return Rollout{}, fmt.Errorf("rollout %s has ended (%s): %w", rolloutID, r.State, ErrFailedPrecondition)
	}
	return r, nil
}

// ExpediteCluster moves a pending cluster into the wave that runs now (or
// the next one, while the current one soaks); check returns why the
// cluster may not run the target, or "". The cluster becomes eligible at
// once if that wave has started.
func (s *Store) ExpediteCluster(ctx context.Context, a Actor, rolloutID, clusterID string, eligibleFor time.Duration,
	check func(Cluster, Release) string) (RolloutCluster, error) {
	var out RolloutCluster
	err := s.inTx(ctx, func(q querier) error {
		r, err := s.rolloutForEdit(ctx, q, rolloutID)
		if err != nil {
			return err
		}
		if err := s.fillRollout(ctx, q, &r); err != nil {
			return err
		}
		rc, err := scanRolloutCluster(q.queryRow(ctx, `SELECT `+rolloutClusterCols+` FROM rollout_clusters t
			WHERE t.rollout_id = $1 AND t.cluster_id = $2`, rolloutID, clusterID))
		if isNoRows(err) {
			return fmt.Errorf("cluster %s in rollout %s: %w", clusterID, rolloutID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if rc.State != ClusterPending {
			return fmt.Errorf("cluster %s is %s, not pending: %w", clusterID, rc.State, ErrFailedPrecondition)
		}
		target := r.CurrentWave
		if target < len(r.Waves) && r.Waves[target].DoneTime != nil {
			target++
		}
		if target >= rc.Wave {
			return fmt.Errorf("cluster %s is already in the next wave to run (%d): %w", clusterID, rc.Wave, ErrFailedPrecondition)
		}
		c, err := getCluster(ctx, q, "", clusterID)
		if err != nil {
			return err
		}
		rel, err := getRelease(ctx, q, r.Product, rc.TargetVersion)
		if err != nil {
			return err
		}
		if why := check(c, rel); why != "" {
			return fmt.Errorf("cluster %s may not run %s: %s: %w", clusterID, rc.TargetVersion, why, ErrFailedPrecondition)
		}
		now := s.now()
		var pos int
		if err := q.queryRow(ctx, `SELECT COALESCE(MAX(position), -1) + 1 FROM rollout_clusters WHERE rollout_id = $1 AND wave = $2`,
			rolloutID, target).Scan(&pos); err != nil {
			return err
		}
		out = rc
		out.Wave, out.Position, out.StateTime = target, pos, now
		var deadline any
		if r.Waves[target].StartTime != nil {
			d := now.Add(eligibleFor)
			out.State, out.Deadline, deadline = ClusterEligible, &d, d
		}
		if _, err := q.exec(ctx, `UPDATE rollout_clusters SET wave = $3, position = $4, state = $5, state_time = $6, deadline = $7
			WHERE rollout_id = $1 AND cluster_id = $2 AND state = 'pending'`, rolloutID, clusterID, target, pos, out.State, now, deadline); err != nil {
			return err
		}
		// A wave that upgrades all its clusters at once still does with
		// the newcomer.
		if _, err := q.exec(ctx, `UPDATE rollout_waves SET size = size - 1 WHERE rollout_id = $1 AND idx = $2`, rolloutID, rc.Wave); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE rollout_waves SET concurrency = CASE WHEN concurrency >= size THEN size + 1 ELSE concurrency END,
			size = size + 1 WHERE rollout_id = $1 AND idx = $2`, rolloutID, target); err != nil {
			return err
		}
		return s.auditDetail(ctx, q, a, "rollout.expedite", "rollout", rolloutID, c.TenantID, nil, nil,
			fmt.Sprintf("cluster %s: wave %d -> %d", clusterID, rc.Wave, target))
	})
	if err != nil {
		return RolloutCluster{}, fmt.Errorf("expedite cluster: %w", err)
	}
	return out, nil
}
