package store

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// Tenant is a customer organization.
type Tenant struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	DisplayName string            `json:"display_name"`
	Labels      map[string]string `json:"labels"`
	Etag        string            `json:"etag"`
	CreateTime  time.Time         `json:"create_time"`
	UpdateTime  time.Time         `json:"update_time"`
}

const tenantCols = `t.id, t.name, t.display_name, t.labels, t.etag, t.create_time, t.update_time`

func scanTenant(r row) (Tenant, error) {
	var t Tenant
	var labels string
	if err := r.Scan(&t.ID, &t.Name, &t.DisplayName, &labels, &t.Etag, &t.CreateTime, &t.UpdateTime); err != nil {
		return Tenant{}, err
	}
	t.CreateTime, t.UpdateTime = utc(t.CreateTime), utc(t.UpdateTime)
	var err error
	t.Labels, err = decodeLabels(labels)
	return t, err
}

// CreateTenant stores a new tenant; ID, Etag and times are assigned.
func (s *Store) CreateTenant(ctx context.Context, a Actor, t Tenant) (Tenant, error) {
	now := s.now()
	t.ID, t.Etag, t.CreateTime, t.UpdateTime = newID(), newEtag(), now, now
	t.Labels = nonNil(t.Labels)
	err := s.inTx(ctx, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO tenants (id, name, display_name, labels, etag, create_time, update_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			t.ID, t.Name, t.DisplayName, encodeLabels(t.Labels), t.Etag, t.CreateTime, t.UpdateTime)
		if isUniqueViolation(err) {
			return fmt.Errorf("tenant named %q: %w", t.Name, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		if err := setLabels(ctx, q, t.ID, t.Labels); err != nil {
			return err
		}
		return s.audit(ctx, q, a, "tenant.create", "tenant", t.ID, t.ID, nil, t)
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	return t, nil
}

func getTenant(ctx context.Context, q querier, visible, id string) (Tenant, error) {
	if !isValidID(id) || (visible != "" && visible != id) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", id, ErrNotFound)
	}
	t, err := scanTenant(q.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants t WHERE t.id = $1`, id))
	if isNoRows(err) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", id, ErrNotFound)
	}
	return t, err
}

// GetTenant returns one tenant. visible restricts to that tenant ("" = any).
func (s *Store) GetTenant(ctx context.Context, visible, id string) (Tenant, error) {
	var t Tenant
	err := s.b.read(ctx, func(q querier) (err error) {
		t, err = getTenant(ctx, q, visible, id)
		return err
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant: %w", err)
	}
	return t, nil
}

// ListTenants returns one page of tenants and the ID to continue after
// ("" on the last page).
func (s *Store) ListTenants(ctx context.Context, f Filter, p Page) ([]Tenant, string, error) {
	var w where
	if f.Visible != "" {
		w.add("t.id = " + w.arg(f.Visible))
	}
	w.selector(f.Selector)
	var out []Tenant
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, tenantCols, "FROM tenants t", &w, p, scanTenant, func(t Tenant) string { return t.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list tenants: %w", err)
	}
	return out, next, nil
}

// UpdateTenant applies mutate to the current tenant and stores the result.
// A non-empty etag must match the current one. mutate may run more than
// once (transactions are retried) and may change only DisplayName and
// Labels.
func (s *Store) UpdateTenant(ctx context.Context, a Actor, visible, id, etag string, mutate func(*Tenant) error) (Tenant, error) {
	var out Tenant
	err := s.inTx(ctx, func(q querier) error {
		old, err := getTenant(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("tenant %q: %w", id, ErrEtagMismatch)
		}
		t := old
		t.Labels = maps.Clone(old.Labels)
		if err := mutate(&t); err != nil {
			return err
		}
		t.ID, t.Name, t.CreateTime = old.ID, old.Name, old.CreateTime
		t.Labels = nonNil(t.Labels)
		t.Etag, t.UpdateTime = newEtag(), s.now()
		if _, err := q.exec(ctx, `UPDATE tenants SET display_name = $2, labels = $3, etag = $4, update_time = $5 WHERE id = $1`,
			t.ID, t.DisplayName, encodeLabels(t.Labels), t.Etag, t.UpdateTime); err != nil {
			return err
		}
		if err := setLabels(ctx, q, t.ID, t.Labels); err != nil {
			return err
		}
		out = t
		return s.audit(ctx, q, a, "tenant.update", "tenant", t.ID, t.ID, old, t)
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("update tenant: %w", err)
	}
	return out, nil
}

// DeleteTenant deletes a tenant that has no data planes left, with its API
// tokens.
func (s *Store) DeleteTenant(ctx context.Context, a Actor, visible, id, etag string) error {
	err := s.inTx(ctx, func(q querier) error {
		old, err := getTenant(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("tenant %q: %w", id, ErrEtagMismatch)
		}
		var n int
		if err := q.queryRow(ctx, `SELECT count(*) FROM data_planes WHERE tenant_id = $1`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("tenant %q has %d data planes; delete them first: %w", id, n, ErrFailedPrecondition)
		}
		for _, stmt := range []string{
			`DELETE FROM api_tokens WHERE tenant_id = $1`,
			`DELETE FROM labels WHERE object_id = $1`,
			`DELETE FROM tenants WHERE id = $1`,
		} {
			if _, err := q.exec(ctx, stmt, id); err != nil {
				return err
			}
		}
		return s.audit(ctx, q, a, "tenant.delete", "tenant", id, id, old, nil)
	})
	if err != nil {
		return fmt.Errorf("delete tenant: %w", err)
	}
	return nil
}
