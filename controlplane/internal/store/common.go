package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/cairnhq/cairn/controlplane/internal/selector"
)

// Actor says who makes a change, for the audit log.
type Actor struct {
	// ID names the principal, e.g. "token:<token id>". Required.
	ID string
	// RequestID ties the audit event to the API call's logs. May be empty.
	RequestID string
}

// Page is a page request. After is the ID of the last object of the
// previous page ("" for the first page); Size is at least 1.
type Page struct {
	After string
	Size  int
}

// Filter narrows a List call.
type Filter struct {
	// Visible restricts the result to one tenant's objects; "" means the
	// caller may see every tenant. It is the caller's permission, not a
	// user's filter.
	Visible string
	// TenantID keeps only this tenant's objects; "" means no filter.
	TenantID string
	// Selector keeps objects whose labels match; empty matches all.
	Selector selector.Selector
}

func newID() string { return uuid.NewString() }

// newEtag returns a fresh opaque etag.
func newEtag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// digest returns "sha256:<hex>" of v's JSON form, or "" for nil.
func digest(v any) string {
	if v == nil {
		return ""
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("digest: %v", err)) // only store types reach here
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// nonNil returns m, or an empty map for nil: objects keep {} rather than
// null, in memory as they read back, so audit digests of one state agree.
func nonNil[K comparable, V any](m map[K]V) map[K]V {
	if m == nil {
		return map[K]V{}
	}
	return m
}

func encodeLabels(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func decodeLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("decode labels: %w", err)
	}
	return m, nil
}

// setLabels replaces the indexed labels of one object.
func setLabels(ctx context.Context, q querier, objectID string, labels map[string]string) error {
	if _, err := q.exec(ctx, `DELETE FROM labels WHERE object_id = $1`, objectID); err != nil {
		return fmt.Errorf("clear labels: %w", err)
	}
	for k, v := range labels {
		if _, err := q.exec(ctx, `INSERT INTO labels (object_id, key, value) VALUES ($1, $2, $3)`, objectID, k, v); err != nil {
			return fmt.Errorf("index label %s: %w", k, err)
		}
	}
	return nil
}

// where builds a WHERE clause with numbered placeholders.
type where struct {
	conds []string
	args  []any
}

func (w *where) arg(v any) string {
	w.args = append(w.args, v)
	return "$" + strconv.Itoa(len(w.args))
}

func (w *where) add(cond string) { w.conds = append(w.conds, cond) }

// row returns "($i, $j, …)" with a placeholder for each value: one row of
// a multi-row INSERT.
func (w *where) row(vals ...any) string {
	ph := make([]string, len(vals))
	for i, v := range vals {
		ph[i] = w.arg(v)
	}
	return "(" + strings.Join(ph, ", ") + ")"
}

// in returns "col IN ($i, $j, …)" with a placeholder for each value; vals
// must not be empty.
func in[T any](w *where, col string, vals []T) string {
	args := make([]any, len(vals))
	for i, v := range vals {
		args[i] = v
	}
	return col + " IN " + w.row(args...)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// filter adds the tenant visibility, tenant filter and label selector for
// a table aliased t with columns id and tenant_id.
func (w *where) filter(f Filter) {
	if f.Visible != "" {
		w.add("t.tenant_id = " + w.arg(f.Visible))
	}
	if f.TenantID != "" {
		w.add("t.tenant_id = " + w.arg(f.TenantID))
	}
	w.selector(f.Selector)
}

// selector compiles label requirements to EXISTS subqueries on the labels
// index; NotEquals and NotIn match objects without the key, as in
// Kubernetes.
func (w *where) selector(sel selector.Selector) {
	for _, r := range sel {
		cond := "l.object_id = t.id AND l.key = " + w.arg(r.Key)
		neg := false
		switch r.Op {
		case selector.Equals:
			cond += " AND l.value = " + w.arg(r.Values[0])
		case selector.NotEquals:
			cond += " AND l.value = " + w.arg(r.Values[0])
			neg = true
		case selector.In, selector.NotIn:
			cond += " AND " + in(w, "l.value", r.Values)
			neg = r.Op == selector.NotIn
		case selector.Exists:
		case selector.NotExists:
			neg = true
		}
		sub := "EXISTS (SELECT 1 FROM labels l WHERE " + cond + ")"
		if neg {
			sub = "NOT " + sub
		}
		w.add(sub)
	}
}

// list runs one page of a keyset-paginated query ordered by id. from is
// everything after SELECT cols; it must alias its table t.
func list[T any](ctx context.Context, q querier, cols, from string, w *where, p Page, scan func(row) (T, error), id func(T) string) ([]T, string, error) {
	if p.After != "" {
		if !isValidID(p.After) {
			return nil, "", ErrBadPageToken
		}
		w.add("t.id > " + w.arg(p.After))
	}
	size := max(p.Size, 1)
	query := "SELECT " + cols + " " + from + w.String() + " ORDER BY t.id LIMIT " + strconv.Itoa(size+1)
	out, err := queryAll(ctx, q, scan, query, w.args...)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = id(out[size-1])
	}
	return out, next, nil
}

// queryAll runs a query and scans every row with scan.
func queryAll[T any](ctx context.Context, q querier, scan func(row) (T, error), query string, args ...any) ([]T, error) {
	rs, err := q.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

func scanString(r row) (string, error) {
	var s string
	err := r.Scan(&s)
	return s, err
}

// isNoRows reports whether err says a single-row query found nothing.
func isNoRows(err error) bool {
	return errors.Is(err, pgx.ErrNoRows) || errors.Is(err, sql.ErrNoRows)
}

// isUniqueViolation reports whether err is a unique-constraint violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var e *sqlite.Error
	if errors.As(err, &e) {
		return e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isValidID reports whether id can be a primary key. Checking first keeps
// PostgreSQL from failing a query on a malformed UUID.
func isValidID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == id
}

func utc(t time.Time) time.Time { return t.UTC() }

// audit writes one audit event in the mutation's transaction.
func (s *Store) audit(ctx context.Context, q querier, a Actor, action, resourceType, resourceID, tenantID string, before, after any) error {
	return s.auditDetail(ctx, q, a, action, resourceType, resourceID, tenantID, before, after, "")
}

func (s *Store) auditDetail(ctx context.Context, q querier, a Actor, action, resourceType, resourceID, tenantID string, before, after any, detail string) error {
	_, err := q.exec(ctx, `INSERT INTO audit_events
		(id, time, actor, action, resource_type, resource_id, tenant_id, old_digest, new_digest, request_id, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		newID(), s.now(), a.ID, action, resourceType, resourceID, tenantID, digest(before), digest(after), a.RequestID, detail)
	if err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	return nil
}
