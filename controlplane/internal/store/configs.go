package store

import (
	"context"
	"fmt"
	"time"
)

// Config scope types.
const (
	ScopeDataPlane = "data_plane"
	ScopeCluster   = "cluster"
)

// ConfigDocument is desired configuration addressed by (scope, kind, name).
type ConfigDocument struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	// DataPlaneID is the data plane whose agents receive the document: the
	// scope itself, or the data plane of the scoped cluster.
	DataPlaneID string `json:"data_plane_id"`
	// ScopeType is ScopeDataPlane or ScopeCluster; ScopeID is that
	// object's ID.
	ScopeType string `json:"scope_type"`
	ScopeID   string `json:"scope_id"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Content   []byte `json:"content"`
	MediaType string `json:"media_type"`
	// Structured says Content is JSON of a protobuf Struct.
	Structured bool              `json:"structured"`
	Labels     map[string]string `json:"labels"`
	// Version starts at 1 and grows by one with every write.
	Version    int64     `json:"version"`
	Etag       string    `json:"etag"`
	CreateTime time.Time `json:"create_time"`
	UpdateTime time.Time `json:"update_time"`
}

// ConfigContent is what an update replaces.
type ConfigContent struct {
	Content    []byte
	MediaType  string
	Structured bool
	Labels     map[string]string
}

const configCols = `t.id, t.tenant_id, t.data_plane_id, t.scope_type, t.scope_id, t.kind, t.name, t.content,
	t.media_type, t.structured, t.labels, t.version, t.etag, t.create_time, t.update_time`

func scanConfig(r row) (ConfigDocument, error) {
	var d ConfigDocument
	var labels string
	if err := r.Scan(&d.ID, &d.TenantID, &d.DataPlaneID, &d.ScopeType, &d.ScopeID, &d.Kind, &d.Name, &d.Content,
		&d.MediaType, &d.Structured, &labels, &d.Version, &d.Etag, &d.CreateTime, &d.UpdateTime); err != nil {
		return ConfigDocument{}, err
	}
	d.CreateTime, d.UpdateTime = utc(d.CreateTime), utc(d.UpdateTime)
	if d.Content == nil {
		d.Content = []byte{} // SQLite reads an empty blob as nil
	}
	var err error
	d.Labels, err = decodeLabels(labels)
	return d, err
}

// resolveScope checks that the scope exists and is visible, and returns
// its tenant and data plane.
func resolveScope(ctx context.Context, q querier, visible, scopeType, scopeID string) (tenantID, dataPlaneID string, err error) {
	switch scopeType {
	case ScopeDataPlane:
		dp, err := getDataPlane(ctx, q, visible, scopeID)
		return dp.TenantID, dp.ID, err
	case ScopeCluster:
		c, err := getCluster(ctx, q, visible, scopeID)
		return c.TenantID, c.DataPlaneID, err
	default:
		return "", "", fmt.Errorf("unknown scope type %q", scopeType)
	}
}

// CreateConfigDocument stores a new document at version 1.
func (s *Store) CreateConfigDocument(ctx context.Context, a Actor, visible string, d ConfigDocument) (ConfigDocument, error) {
	err := s.inTx(ctx, func(q querier) (err error) {
		if d.TenantID, d.DataPlaneID, err = resolveScope(ctx, q, visible, d.ScopeType, d.ScopeID); err != nil {
			return err
		}
		d, err = s.createConfig(ctx, q, a, d)
		return err
	})
	if err != nil {
		return ConfigDocument{}, fmt.Errorf("create config document: %w", err)
	}
	return d, nil
}

// createConfig stores a new document at version 1 whose scope the caller
// has resolved (TenantID and DataPlaneID set), appends it to the data
// plane's revision log and audits it, in the caller's transaction.
func (s *Store) createConfig(ctx context.Context, q querier, a Actor, d ConfigDocument) (ConfigDocument, error) {
	now := s.now()
	d.ID, d.Etag, d.Version, d.CreateTime, d.UpdateTime = newID(), newEtag(), 1, now, now
	d.Labels = nonNil(d.Labels)
	if d.Content == nil {
		d.Content = []byte{}
	}
	_, err := q.exec(ctx, `INSERT INTO config_documents (id, tenant_id, data_plane_id, scope_type, scope_id, kind, name,
		content, media_type, structured, labels, version, etag, create_time, update_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
		d.ID, d.TenantID, d.DataPlaneID, d.ScopeType, d.ScopeID, d.Kind, d.Name,
		d.Content, d.MediaType, d.Structured, encodeLabels(d.Labels), d.Version, d.Etag, d.CreateTime, d.UpdateTime)
	if isUniqueViolation(err) {
		return ConfigDocument{}, fmt.Errorf("config document %s/%s in %s %q: %w", d.Kind, d.Name, d.ScopeType, d.ScopeID, ErrAlreadyExists)
	}
	if err != nil {
		return ConfigDocument{}, err
	}
	if err := setLabels(ctx, q, d.ID, d.Labels); err != nil {
		return ConfigDocument{}, err
	}
	if err := s.appendRevision(ctx, q, OpPut, d); err != nil {
		return ConfigDocument{}, err
	}
	return d, s.audit(ctx, q, a, "config.create", "config_document", d.ID, d.TenantID, nil, d)
}

func getConfig(ctx context.Context, q querier, visible, id string) (ConfigDocument, error) {
	if !isValidID(id) {
		return ConfigDocument{}, fmt.Errorf("config document %q: %w", id, ErrNotFound)
	}
	d, err := scanConfig(q.queryRow(ctx, `SELECT `+configCols+` FROM config_documents t WHERE t.id = $1`, id))
	if isNoRows(err) || (err == nil && visible != "" && d.TenantID != visible) {
		return ConfigDocument{}, fmt.Errorf("config document %q: %w", id, ErrNotFound)
	}
	return d, err
}

// GetConfigDocument returns one document by ID.
func (s *Store) GetConfigDocument(ctx context.Context, visible, id string) (ConfigDocument, error) {
	var d ConfigDocument
	err := s.b.read(ctx, func(q querier) (err error) {
		d, err = getConfig(ctx, q, visible, id)
		return err
	})
	if err != nil {
		return ConfigDocument{}, fmt.Errorf("get config document: %w", err)
	}
	return d, nil
}

// GetConfigDocumentByKey returns one document by (scope, kind, name).
func (s *Store) GetConfigDocumentByKey(ctx context.Context, visible, scopeType, scopeID, kind, name string) (ConfigDocument, error) {
	notFound := fmt.Errorf("get config document: %s/%s in %s %q: %w", kind, name, scopeType, scopeID, ErrNotFound)
	if !isValidID(scopeID) {
		return ConfigDocument{}, notFound
	}
	var d ConfigDocument
	err := s.b.read(ctx, func(q querier) (err error) {
		d, err = getConfigByKey(ctx, q, scopeType, scopeID, kind, name)
		return err
	})
	if isNoRows(err) || (err == nil && visible != "" && d.TenantID != visible) {
		return ConfigDocument{}, notFound
	}
	if err != nil {
		return ConfigDocument{}, fmt.Errorf("get config document: %w", err)
	}
	return d, nil
}

// getConfigByKey reads one document by (scope, kind, name); the driver's
// no-rows error when there is none.
func getConfigByKey(ctx context.Context, q querier, scopeType, scopeID, kind, name string) (ConfigDocument, error) {
	return scanConfig(q.queryRow(ctx, `SELECT `+configCols+` FROM config_documents t
		WHERE t.scope_type = $1 AND t.scope_id = $2 AND t.kind = $3 AND t.name = $4`, scopeType, scopeID, kind, name))
}

// ConfigFilter narrows ListConfigDocuments beyond Filter.
type ConfigFilter struct {
	// ScopeType and ScopeID keep documents of this data plane or cluster
	// scope; both or neither.
	ScopeType string
	ScopeID   string
	// Kind keeps documents of this kind.
	Kind string
}

// ListConfigDocuments returns one page of documents.
func (s *Store) ListConfigDocuments(ctx context.Context, f Filter, cf ConfigFilter, p Page) ([]ConfigDocument, string, error) {
	var w where
	w.filter(f)
	if cf.ScopeID != "" {
		w.add("t.scope_type = " + w.arg(cf.ScopeType))
		w.add("t.scope_id = " + w.arg(cf.ScopeID))
	}
	if cf.Kind != "" {
		w.add("t.kind = " + w.arg(cf.Kind))
	}
	var out []ConfigDocument
	var next string
	err := s.b.read(ctx, func(q querier) (err error) {
		out, next, err = list(ctx, q, configCols, "FROM config_documents t", &w, p, scanConfig, func(d ConfigDocument) string { return d.ID })
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list config documents: %w", err)
	}
	return out, next, nil
}

// UpdateConfigDocument replaces a document's content and labels and bumps
// its version. A non-empty etag must match the current one.
func (s *Store) UpdateConfigDocument(ctx context.Context, a Actor, visible, id, etag string, c ConfigContent) (ConfigDocument, error) {
	var out ConfigDocument
	err := s.inTx(ctx, func(q querier) error {
		old, err := getConfig(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("config document %q: %w", id, ErrEtagMismatch)
		}
		out, err = s.updateConfig(ctx, q, a, old, c)
		return err
	})
	if err != nil {
		return ConfigDocument{}, fmt.Errorf("update config document: %w", err)
	}
	return out, nil
}

// updateConfig replaces old's content as the next version, appends it to
// the data plane's revision log and audits it, in the caller's
// transaction.
func (s *Store) updateConfig(ctx context.Context, q querier, a Actor, old ConfigDocument, c ConfigContent) (ConfigDocument, error) {
	d := old
	d.Content, d.MediaType, d.Structured, d.Labels = c.Content, c.MediaType, c.Structured, nonNil(c.Labels)
	if d.Content == nil {
		d.Content = []byte{}
	}
	d.Version, d.Etag, d.UpdateTime = old.Version+1, newEtag(), s.now()
	// The version condition makes a lost update impossible even if the
	// isolation level were weaker than serializable.
	n, err := q.exec(ctx, `UPDATE config_documents SET content = $2, media_type = $3, structured = $4, labels = $5,
		version = $6, etag = $7, update_time = $8 WHERE id = $1 AND version = $9`,
		d.ID, d.Content, d.MediaType, d.Structured, encodeLabels(d.Labels), d.Version, d.Etag, d.UpdateTime, old.Version)
	if err != nil {
		return ConfigDocument{}, err
	}
	if n != 1 {
		return ConfigDocument{}, fmt.Errorf("config document %q changed during update: %w", d.ID, ErrEtagMismatch)
	}
	if err := setLabels(ctx, q, d.ID, d.Labels); err != nil {
		return ConfigDocument{}, err
	}
	if err := s.appendRevision(ctx, q, OpPut, d); err != nil {
		return ConfigDocument{}, err
	}
	return d, s.audit(ctx, q, a, "config.update", "config_document", d.ID, d.TenantID, old, d)
}

// DeleteConfigDocument deletes one document. A non-empty etag must match.
func (s *Store) DeleteConfigDocument(ctx context.Context, a Actor, visible, id, etag string) error {
	err := s.inTx(ctx, func(q querier) error {
		old, err := getConfig(ctx, q, visible, id)
		if err != nil {
			return err
		}
		if etag != "" && etag != old.Etag {
			return fmt.Errorf("config document %q: %w", id, ErrEtagMismatch)
		}
		return s.deleteConfig(ctx, q, a, old)
	})
	if err != nil {
		return fmt.Errorf("delete config document: %w", err)
	}
	return nil
}

func (s *Store) deleteConfig(ctx context.Context, q querier, a Actor, d ConfigDocument) error {
	for _, stmt := range []string{
		`DELETE FROM labels WHERE object_id = $1`,
		`DELETE FROM config_documents WHERE id = $1`,
	} {
		if _, err := q.exec(ctx, stmt, d.ID); err != nil {
			return err
		}
	}
	if err := s.appendRevision(ctx, q, OpDelete, d); err != nil {
		return err
	}
	return s.audit(ctx, q, a, "config.delete", "config_document", d.ID, d.TenantID, d, nil)
}

// deleteConfigWhere deletes every document whose column col equals id;
// col is a constant chosen by the caller.
func (s *Store) deleteConfigWhere(ctx context.Context, q querier, a Actor, col, id string) error {
	docs, err := queryAll(ctx, q, scanConfig, `SELECT `+configCols+` FROM config_documents t WHERE t.`+col+` = $1`, id)
	if err != nil {
		return err
	}
	for _, d := range docs {
		if err := s.deleteConfig(ctx, q, a, d); err != nil {
			return err
		}
	}
	return nil
}
