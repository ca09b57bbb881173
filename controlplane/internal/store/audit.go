package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AuditEvent records one mutation.
type AuditEvent struct {
	ID           string
	Time         time.Time
	Actor        string
	Action       string
	ResourceType string
	ResourceID   string
	TenantID     string
	OldDigest    string
	NewDigest    string
	RequestID    string
	// Detail says why an attempt was refused; empty for mutations.
	Detail string
}

// AuditFilter narrows ListAuditEvents.
type AuditFilter struct {
	// Visible and TenantID as in Filter.
	Visible, TenantID string
	// ResourceID keeps events about one object.
	ResourceID string
}

const auditCols = `t.id, t.time, t.actor, t.action, t.resource_type, t.resource_id, t.tenant_id,
	t.old_digest, t.new_digest, t.request_id, t.detail`

func scanAudit(r row) (AuditEvent, error) {
	var e AuditEvent
	err := r.Scan(&e.ID, &e.Time, &e.Actor, &e.Action, &e.ResourceType, &e.ResourceID, &e.TenantID,
		&e.OldDigest, &e.NewDigest, &e.RequestID, &e.Detail)
	e.Time = utc(e.Time)
	return e, err
}

// auditCursor is "<RFC 3339 time>|<id>" of the last event of a page.
func auditCursor(e AuditEvent) string {
	return e.Time.Format(time.RFC3339Nano) + "|" + e.ID
}

// ListAuditEvents returns events newest first. p.After is the cursor the
// previous page returned.
func (s *Store) ListAuditEvents(ctx context.Context, f AuditFilter, p Page) ([]AuditEvent, string, error) {
	var w where
	if f.Visible != "" {
		w.add("t.tenant_id = " + w.arg(f.Visible))
	}
	if f.TenantID != "" {
		w.add("t.tenant_id = " + w.arg(f.TenantID))
	}
	if f.ResourceID != "" {
		w.add("t.resource_id = " + w.arg(f.ResourceID))
	}
	if p.After != "" {
		ts, id, ok := strings.Cut(p.After, "|")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if !ok || err != nil || !isValidID(id) {
			return nil, "", fmt.Errorf("list audit events: %w", ErrBadPageToken)
		}
		tp, ip := w.arg(at.UTC()), w.arg(id)
		w.add("(t.time < " + tp + " OR (t.time = " + tp + " AND t.id < " + ip + "))")
	}
	size := max(p.Size, 1)
	query := "SELECT " + auditCols + " FROM audit_events t" + w.String() +
		fmt.Sprintf(" ORDER BY t.time DESC, t.id DESC LIMIT %d", size+1)
	var out []AuditEvent
	err := s.b.read(ctx, func(q querier) (err error) {
		out, err = queryAll(ctx, q, scanAudit, query, w.args...)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list audit events: %w", err)
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = auditCursor(out[size-1])
	}
	return out, next, nil
}
