package store

import (
	"context"
	"fmt"
	"maps"
	"time"
)

// DataPlane is one deployment in one customer VPC.
type DataPlane struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	Name     string `json:"name"`
	Region   string `json:"region"`
	// Cloud is the admin API's Cloud enum value.
	Cloud      int32             `json:"cloud"`
	Labels     map[string]string `json:"labels"`
	Etag       string            `json:"etag"`
	CreateTime time.Time         `json:"create_time"`
	UpdateTime time.Time         `json:"update_time"`
}

const dataPlaneCols = `t.id, t.tenant_id, t.name, t.region, t.cloud, t.labels, t.etag, t.create_time, t.update_time`

func scanDataPlane(r row) (DataPlane, error) {
	var d DataPlane
	var labels string
	if err := r.Scan(&d.ID, &d.TenantID, &d.Name, &d.Region, &d.Cloud, &labels, &d.Etag, &d.CreateTime, &d.UpdateTime); err != nil {
		return DataPlane{}, err
	}
	d.CreateTime, d.UpdateTime = utc(d.CreateTime), utc(d.UpdateTime)
	var err error
	d.Labels, err = decodeLabels(labels)
	return d, err
}

// CreateDataPlane stores a new data plane of an existing tenant.
func (s *Store) CreateDataPlane(ctx context.Context, a Actor, visible string, d DataPlane) (DataPlane, error) {
	now := s.now()
	d.ID, d.Etag, d.CreateTime, d.UpdateTime = newID(), newEtag(), now, now
	d.Labels = nonNil(d.Labels)
	err := s.inTx(ctx, func(q querier) error {
		if _, err := getTenant(ctx, q, visible, d.TenantID); err != nil {
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO data_planes (id, tenant_id, name, region, cloud, labels, etag, create_time, update_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			d.ID, d.TenantID, d.Name, d.Region, d.Cloud, encodeLabels(d.Labels), d.Etag, d.CreateTime, d.UpdateTime)
		if isUniqueViolation(err) {
			return fmt.Errorf("data plane named %q in tenant %q: %w", d.Name, d.TenantID, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		if err := setLabels(ctx, q, d.ID, d.Labels); err != nil {
			return err
		}
		if err := s.createHead(ctx, q, d.ID); err != nil {
			return err
		}
		return s.audit(ctx, q, a, "data_plane.create", "data_plane", d.ID, d.TenantID, nil, d)
	})
	if err != nil {
		return DataPlane{}, fmt.Errorf("create data plane: %w", err)
	}
	return d, nil
}

func getDataPlane(ctx context.Context, q querier, visible, id string) (DataPlane, error) {
	if !isValidID(id) {
		return DataPlane{}, fmt.Errorf("data plane %q: %w", id, ErrNotFound)
	}
	d, err := scanDataPlane(q.queryRow(ctx, `SELECT `+dataPlaneCols+` FROM data_planes t WHERE t.id = $1`, id))
	if isNoRows(err) || (err == nil && visible != "" && d.TenantID != visible) {
		return DataPlane{}, fmt.Errorf("data plane %q: %w", id, ErrNotFound)
	}
	return d, err
}

// GetDataPlane returns one data plane.
func (s *Store) GetDataPlane(ctx context.Context, visible, id string) (DataPlane, error) {
	var d DataPlane
	err := s.b.read(ctx, func(q querier) (err error) {
		d, err = getDataPlane(ctx, q, visible, id)
		return err
	})
	if err != nil {
		return DataPlane{}, fmt.Errorf("get data plane: %w", err)
	}
	return d, nil
}

// ListDataPlanes returns one page of data planes.
func (s *Store) ListDataPlanes(ctx context.Context, f Filter, p Page) ([]DataPlane, string, error) {
	var w where
	w.filter(f)
	var out []DataPlane
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, dataPlaneCols, "FROM data_planes t", &w, p, scanDataPlane, func(d DataPlane) string { return d.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list data planes: %w", err)
	}
	return out, next, nil
}

// UpdateDataPlane applies mutate (which may change only Labels) to the
// current data plane; see UpdateTenant for etag and retry rules.
func (s *Store) UpdateDataPlane(ctx context.Context, a Actor, visible, id, etag string, mutate func(*DataPlane) error) (DataPlane, error) {
	var out DataPlane
	err := s.inTx(ctx, func(q querier) error {
		old, err := getDataPlane(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("data plane %q: %w", id, ErrEtagMismatch)
		}
		d := old
		d.Labels = maps.Clone(old.Labels)
		if err := mutate(&d); err != nil {
			return err
		}
		d.ID, d.TenantID, d.Name, d.Region, d.Cloud, d.CreateTime = old.ID, old.TenantID, old.Name, old.Region, old.Cloud, old.CreateTime
		d.Etag, d.UpdateTime = newEtag(), s.now()
		d.Labels = nonNil(d.Labels)
		if _, err := q.exec(ctx, `UPDATE data_planes SET labels = $2, etag = $3, update_time = $4 WHERE id = $1`,
			d.ID, encodeLabels(d.Labels), d.Etag, d.UpdateTime); err != nil {
			return err
		}
		if err := setLabels(ctx, q, d.ID, d.Labels); err != nil {
			return err
		}
		out = d
		return s.audit(ctx, q, a, "data_plane.update", "data_plane", d.ID, d.TenantID, old, d)
	})
	if err != nil {
		return DataPlane{}, fmt.Errorf("update data plane: %w", err)
	}
	return out, nil
}

// DeleteDataPlane deletes a data plane without clusters, together with its
// config documents (each audited) and join tokens, and revokes its agents.
func (s *Store) DeleteDataPlane(ctx context.Context, a Actor, visible, id, etag string) error {
	err := s.inTx(ctx, func(q querier) error {
		old, err := getDataPlane(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("data plane %q: %w", id, ErrEtagMismatch)
		}
		var n int
		if err := q.queryRow(ctx, `SELECT count(*) FROM clusters WHERE data_plane_id = $1`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("data plane %q has %d clusters; delete them first: %w", id, n, ErrFailedPrecondition)
		}
		if err := s.deleteConfigWhere(ctx, q, a, "data_plane_id", id); err != nil {
			return err
		}
		if err := s.revokeDataPlaneAgents(ctx, q, a, id); err != nil {
			return err
		}
		for _, stmt := range []string{
			`DELETE FROM labels WHERE object_id = $1`,
			`DELETE FROM config_revisions WHERE data_plane_id = $1`,
			`DELETE FROM data_plane_heads WHERE data_plane_id = $1`,
			`DELETE FROM data_planes WHERE id = $1`,
		} {
			if _, err := q.exec(ctx, stmt, id); err != nil {
				return err
			}
		}
		return s.audit(ctx, q, a, "data_plane.delete", "data_plane", id, old.TenantID, old, nil)
	})
	if err != nil {
		return fmt.Errorf("delete data plane: %w", err)
	}
	return nil
}
