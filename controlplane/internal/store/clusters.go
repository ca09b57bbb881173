package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"
)

// Cluster is one instance of the product running in a data plane.
type Cluster struct {
	ID          string            `json:"id"`
	TenantID    string            `json:"tenant_id"`
	DataPlaneID string            `json:"data_plane_id"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	// Properties is free-form JSON-compatible data.
	Properties      map[string]any `json:"properties"`
	DesiredVersion  string         `json:"desired_version"`
	ReportedVersion string         `json:"reported_version"`
	HostVersion     string         `json:"host_version"`
	// Product names the catalog's product (immutable; "" for none) and
	// Channel its release channel ("" for none).
	Product    string    `json:"product,omitempty"`
	Channel    string    `json:"channel,omitempty"`
	Etag       string    `json:"etag"`
	CreateTime time.Time `json:"create_time"`
	UpdateTime time.Time `json:"update_time"`
}

const clusterCols = `t.id, t.tenant_id, t.data_plane_id, t.name, t.labels, t.properties,
	t.desired_version, t.reported_version, t.host_version, t.product, t.channel, t.etag, t.create_time, t.update_time`

func scanCluster(r row) (Cluster, error) {
	var c Cluster
	var labels, props string
	if err := r.Scan(&c.ID, &c.TenantID, &c.DataPlaneID, &c.Name, &labels, &props,
		&c.DesiredVersion, &c.ReportedVersion, &c.HostVersion, &c.Product, &c.Channel, &c.Etag, &c.CreateTime, &c.UpdateTime); err != nil {
		return Cluster{}, err
	}
	c.CreateTime, c.UpdateTime = utc(c.CreateTime), utc(c.UpdateTime)
	var err error
	if c.Labels, err = decodeLabels(labels); err != nil {
		return Cluster{}, err
	}
	if err := json.Unmarshal([]byte(props), &c.Properties); err != nil {
		return Cluster{}, fmt.Errorf("decode properties: %w", err)
	}
	return c, nil
}

func encodeProperties(p map[string]any) (string, error) {
	if p == nil {
		return "{}", nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("encode properties: %w", err)
	}
	return string(b), nil
}

// CreateCluster stores a new cluster in an existing data plane; TenantID is
// taken from the data plane. A cluster with a product and a desired version
// gets its cairn.dev/desired-version document in the same transaction.
func (s *Store) CreateCluster(ctx context.Context, a Actor, visible string, c Cluster) (Cluster, error) {
	now := s.now()
	c.ID, c.Etag, c.CreateTime, c.UpdateTime = newID(), newEtag(), now, now
	c.Labels, c.Properties = nonNil(c.Labels), nonNil(c.Properties)
	props, err := encodeProperties(c.Properties)
	if err != nil {
		return Cluster{}, fmt.Errorf("create cluster: %w", err)
	}
	err = s.inTx(ctx, func(q querier) error {
		dp, err := getDataPlane(ctx, q, visible, c.DataPlaneID)
		if err != nil {
			return err
		}
		c.TenantID = dp.TenantID
		if err := checkClusterVersions(ctx, q, &c, true); err != nil {
			return err
		}
		_, err = q.exec(ctx, `INSERT INTO clusters (id, tenant_id, data_plane_id, name, labels, properties,
			desired_version, reported_version, host_version, product, channel, etag, create_time, update_time,
			desired_version_key, reported_version_key, host_version_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
			c.ID, c.TenantID, c.DataPlaneID, c.Name, encodeLabels(c.Labels), props,
			c.DesiredVersion, c.ReportedVersion, c.HostVersion, c.Product, c.Channel, c.Etag, c.CreateTime, c.UpdateTime,
			versionSortKey(c.DesiredVersion), versionSortKey(c.ReportedVersion), versionSortKey(c.HostVersion))
		if isUniqueViolation(err) {
			return fmt.Errorf("cluster named %q in data plane %q: %w", c.Name, c.DataPlaneID, ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		if err := setLabels(ctx, q, c.ID, c.Labels); err != nil {
			return err
		}
		if err := s.audit(ctx, q, a, "cluster.create", "cluster", c.ID, c.TenantID, nil, c); err != nil {
			return err
		}
		if c.Product != "" && c.DesiredVersion != "" {
			return s.putDesiredVersion(ctx, q, a, c, c.DesiredVersion)
		}
		return nil
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("create cluster: %w", err)
	}
	return c, nil
}

// checkClusterVersions checks a cluster's channel and desired version
// against the catalog: the channel must be one of the cluster's product;
// on create, a cluster on a channel without a desired version gets the
// channel's default for its plan (the "plan" property); and a desired
// version of a cluster with a product must be a release of it that is not
// blocked. Clusters without a product are not checked: they predate the
// catalog or are not version-managed.
func checkClusterVersions(ctx context.Context, q querier, c *Cluster, create bool) error {
	if c.Channel != "" {
		if c.Product == "" {
			return fmt.Errorf("channel %q needs a product: %w", c.Channel, ErrFailedPrecondition)
		}
		ch, err := getChannel(ctx, q, c.Product, c.Channel)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("product %s has no channel %q: %w", c.Product, c.Channel, ErrFailedPrecondition)
		}
		if err != nil {
			return err
		}
		if create && c.DesiredVersion == "" {
			plan, _ := c.Properties["plan"].(string)
			c.DesiredVersion = ch.DefaultVersion(plan)
		}
	}
	if c.Product == "" || c.DesiredVersion == "" {
		return nil
	}
	rel, err := getRelease(ctx, q, c.Product, c.DesiredVersion)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("desired version %s is not a release of %s: %w", c.DesiredVersion, c.Product, ErrFailedPrecondition)
	}
	if err != nil {
		return err
	}
	if rel.State == ReleaseBlocked {
		return fmt.Errorf("desired version %s of %s is blocked: %w", c.DesiredVersion, c.Product, ErrFailedPrecondition)
	}
	return nil
}

func getCluster(ctx context.Context, q querier, visible, id string) (Cluster, error) {
	if !isValidID(id) {
		return Cluster{}, fmt.Errorf("cluster %q: %w", id, ErrNotFound)
	}
	c, err := scanCluster(q.queryRow(ctx, `SELECT `+clusterCols+` FROM clusters t WHERE t.id = $1`, id))
	if isNoRows(err) || (err == nil && visible != "" && c.TenantID != visible) {
		return Cluster{}, fmt.Errorf("cluster %q: %w", id, ErrNotFound)
	}
	return c, err
}

// GetCluster returns one cluster.
func (s *Store) GetCluster(ctx context.Context, visible, id string) (Cluster, error) {
	var c Cluster
	err := s.b.read(ctx, func(q querier) (err error) {
		c, err = getCluster(ctx, q, visible, id)
		return err
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("get cluster: %w", err)
	}
	return c, nil
}

// ListClusters returns one page of clusters, optionally of one data plane.
func (s *Store) ListClusters(ctx context.Context, f Filter, dataPlaneID string, p Page) ([]Cluster, string, error) {
	var w where
	w.filter(f)
	if dataPlaneID != "" {
		w.add("t.data_plane_id = " + w.arg(dataPlaneID))
	}
	var out []Cluster
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, clusterCols, "FROM clusters t", &w, p, scanCluster, func(c Cluster) string { return c.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list clusters: %w", err)
	}
	return out, next, nil
}

// UpdateCluster applies mutate (which may change Labels, Properties,
// DesiredVersion, HostVersion and Channel) to the current cluster; see UpdateTenant
// for etag and retry rules. A new desired version of a cluster with a
// product is written into its cairn.dev/desired-version document in the
// same transaction, so it reaches the cluster's agent.
func (s *Store) UpdateCluster(ctx context.Context, a Actor, visible, id, etag string, mutate func(*Cluster) error) (Cluster, error) {
	var out Cluster
	err := s.inTx(ctx, func(q querier) error {
		old, err := getCluster(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("cluster %q: %w", id, ErrEtagMismatch)
		}
		c := old
		c.Labels, c.Properties = maps.Clone(old.Labels), maps.Clone(old.Properties)
		if err := mutate(&c); err != nil {
			return err
		}
		c.ID, c.TenantID, c.DataPlaneID, c.Name, c.ReportedVersion, c.Product, c.CreateTime =
			old.ID, old.TenantID, old.DataPlaneID, old.Name, old.ReportedVersion, old.Product, old.CreateTime
		if c.Channel != old.Channel || c.DesiredVersion != old.DesiredVersion {
			if err := checkClusterVersions(ctx, q, &c, false); err != nil {
				return err
			}
		}
		c.Etag, c.UpdateTime = newEtag(), s.now()
		c.Labels, c.Properties = nonNil(c.Labels), nonNil(c.Properties)
		props, err := encodeProperties(c.Properties)
		if err != nil {
			return err
		}
		if _, err := q.exec(ctx, `UPDATE clusters SET labels = $2, properties = $3, desired_version = $4,
			host_version = $5, channel = $6, etag = $7, update_time = $8, desired_version_key = $9, host_version_key = $10 WHERE id = $1`,
			c.ID, encodeLabels(c.Labels), props, c.DesiredVersion, c.HostVersion, c.Channel, c.Etag, c.UpdateTime,
			versionSortKey(c.DesiredVersion), versionSortKey(c.HostVersion)); err != nil {
			return err
		}
		if err := setLabels(ctx, q, c.ID, c.Labels); err != nil {
			return err
		}
		out = c
		if err := s.audit(ctx, q, a, "cluster.update", "cluster", c.ID, c.TenantID, old, c); err != nil {
			return err
		}
		if c.Product != "" && c.DesiredVersion != "" && c.DesiredVersion != old.DesiredVersion {
			return s.putDesiredVersion(ctx, q, a, c, c.DesiredVersion)
		}
		return nil
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("update cluster: %w", err)
	}
	return out, nil
}

// DeleteCluster deletes a cluster and its cluster-scoped config documents.
func (s *Store) DeleteCluster(ctx context.Context, a Actor, visible, id, etag string) error {
	err := s.inTx(ctx, func(q querier) error {
		old, err := getCluster(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("cluster %q: %w", id, ErrEtagMismatch)
		}
		if err := s.deleteConfigWhere(ctx, q, a, "scope_id", id); err != nil {
			return err
		}
		for _, stmt := range []string{
			`DELETE FROM labels WHERE object_id = $1`,
			`DELETE FROM clusters WHERE id = $1`,
		} {
			if _, err := q.exec(ctx, stmt, id); err != nil {
				return err
			}
		}
		return s.audit(ctx, q, a, "cluster.delete", "cluster", id, old.TenantID, old, nil)
	})
	if err != nil {
		return fmt.Errorf("delete cluster: %w", err)
	}
	return nil
}
