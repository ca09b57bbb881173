package store

import (
	"context"
	"fmt"
	"time"
)

// Exclusion scope types: one cluster, every cluster of a data plane, or of
// a tenant.
const (
	ExcludeCluster   = "cluster"
	ExcludeDataPlane = "data_plane"
	ExcludeTenant    = "tenant"
)

// Exclusion keeps rollouts from dispatching clusters in its scope until it
// expires.
type Exclusion struct {
	ID         string    `json:"id"`
	ScopeType  string    `json:"scope_type"`
	ScopeID    string    `json:"scope_id"`
	Reason     string    `json:"reason"`
	ExpireTime time.Time `json:"expire_time"`
	CreatedBy  string    `json:"created_by"`
	CreateTime time.Time `json:"create_time"`
}

const exclusionCols = `t.id, t.scope_type, t.scope_id, t.reason, t.expire_time, t.created_by, t.create_time`

func scanExclusion(r row) (Exclusion, error) {
	var e Exclusion
	err := r.Scan(&e.ID, &e.ScopeType, &e.ScopeID, &e.Reason, &e.ExpireTime, &e.CreatedBy, &e.CreateTime)
	e.ExpireTime, e.CreateTime = utc(e.ExpireTime), utc(e.CreateTime)
	return e, err
}

// CreateExclusion stores an exclusion; its scope must exist.
func (s *Store) CreateExclusion(ctx context.Context, a Actor, e Exclusion) (Exclusion, error) {
	e.ID, e.CreatedBy, e.CreateTime = newID(), a.ID, s.now()
	e.ExpireTime = e.ExpireTime.UTC()
	err := s.inTx(ctx, func(q querier) error {
		tenant := ""
		switch e.ScopeType {
		case ExcludeCluster:
			c, err := getCluster(ctx, q, "", e.ScopeID)
			if err != nil {
				return err
			}
			tenant = c.TenantID
		case ExcludeDataPlane:
			dp, err := getDataPlane(ctx, q, "", e.ScopeID)
			if err != nil {
				return err
			}
			tenant = dp.TenantID
		case ExcludeTenant:
			t, err := getTenant(ctx, q, "", e.ScopeID)
			if err != nil {
				return err
			}
			tenant = t.ID
		default:
			return fmt.Errorf("unknown exclusion scope %q", e.ScopeType)
		}
		if _, err := q.exec(ctx, `INSERT INTO exclusions (id, scope_type, scope_id, reason, expire_time, created_by, create_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.ID, e.ScopeType, e.ScopeID, e.Reason, e.ExpireTime, e.CreatedBy, e.CreateTime); err != nil {
			return err
		}
		return s.audit(ctx, q, a, "exclusion.create", "exclusion", e.ID, tenant, nil, e)
	})
	if err != nil {
		return Exclusion{}, fmt.Errorf("create exclusion: %w", err)
	}
	return e, nil
}

// ListExclusions returns the exclusions that have not expired, soonest to
// expire first.
func (s *Store) ListExclusions(ctx context.Context) ([]Exclusion, error) {
	var out []Exclusion
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanExclusion, `SELECT `+exclusionCols+` FROM exclusions t
			WHERE t.expire_time > $1 ORDER BY t.expire_time, t.id`, s.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list exclusions: %w", err)
	}
	return out, nil
}

// DeleteExclusion removes an exclusion (expired or not).
func (s *Store) DeleteExclusion(ctx context.Context, a Actor, id string) error {
	err := s.inTx(ctx, func(q querier) error {
		if !isValidID(id) {
			return fmt.Errorf("exclusion %q: %w", id, ErrNotFound)
		}
		e, err := scanExclusion(q.queryRow(ctx, `SELECT `+exclusionCols+` FROM exclusions t WHERE t.id = $1`, id))
		if isNoRows(err) {
			return fmt.Errorf("exclusion %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := q.exec(ctx, `DELETE FROM exclusions WHERE id = $1`, id); err != nil {
			return err
		}
		return s.audit(ctx, q, a, "exclusion.delete", "exclusion", id, "", e, nil)
	})
	if err != nil {
		return fmt.Errorf("delete exclusion: %w", err)
	}
	return nil
}

// Covers reports whether e covers cluster c (expiry aside).
func (e Exclusion) Covers(c Cluster) bool {
	switch e.ScopeType {
	case ExcludeCluster:
		return e.ScopeID == c.ID
	case ExcludeDataPlane:
		return e.ScopeID == c.DataPlaneID
	case ExcludeTenant:
		return e.ScopeID == c.TenantID
	}
	return false
}

// activeExclusion returns an unexpired exclusion that covers c, if any.
func (s *Store) activeExclusion(ctx context.Context, q querier, c Cluster) (Exclusion, bool, error) {
	e, err := scanExclusion(q.queryRow(ctx, `SELECT `+exclusionCols+` FROM exclusions t
		WHERE ((t.scope_type = 'cluster' AND t.scope_id = $1) OR (t.scope_type = 'data_plane' AND t.scope_id = $2)
			OR (t.scope_type = 'tenant' AND t.scope_id = $3)) AND t.expire_time > $4 ORDER BY t.expire_time DESC, t.id LIMIT 1`,
		c.ID, c.DataPlaneID, c.TenantID, s.now()))
	if isNoRows(err) {
		return Exclusion{}, false, nil
	}
	return e, err == nil, err
}
