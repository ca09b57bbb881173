// Package store keeps the control plane's state in SQL: embedded SQLite by
// default, or any PostgreSQL-wire server (PostgreSQL, CockroachDB) by URL.
//
// Every mutation runs in one serializable transaction together with its
// audit event, and is retried on serialization failures. The store knows
// nothing of the API: callers pass in who acts and which tenant they may
// see, and map the errors below to status codes.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Errors returned by store methods, wrapped with detail; test with errors.Is.
var (
	// ErrNotFound: the object does not exist or the caller's tenant may not
	// see it.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with the same unique name exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrEtagMismatch: the caller's etag is not the current one.
	ErrEtagMismatch = errors.New("etag mismatch")
	// ErrFailedPrecondition: the object is in a state that forbids the
	// change, e.g. a tenant that still has data planes.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrBadPageToken: Page.After is not a cursor this store handed out.
	ErrBadPageToken = errors.New("bad page token")
	// ErrCompacted: the revision log no longer reaches back that far.
	ErrCompacted = errors.New("revision log compacted")
)

// Config configures Open.
type Config struct {
	// URL names the database: "sqlite:<path>" (or "sqlite://<abs path>")
	// for embedded SQLite, "postgres://…" or "postgresql://…" for any
	// PostgreSQL-wire server (CockroachDB is detected), and
	// "cockroachdb://…" to insist on CockroachDB. Required.
	URL string
	// Logger receives migration progress. Nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests pass a fake.
	Now func() time.Time
}

// Store is the control plane's SQL store. It is safe for concurrent use.
type Store struct {
	b           backend
	log         *slog.Logger
	now         func() time.Time
	onRevisions func(dataPlaneID string)
}

// Open connects to the database, applies pending migrations and returns
// the store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, errors.New("open store: database URL is required")
	}
	clock := cfg.Now
	if clock == nil {
		clock = time.Now
	}
	// Times are kept in UTC at microsecond precision, what PostgreSQL
	// stores, so a value read back equals the value written.
	s := &Store{log: cfg.Logger, now: func() time.Time { return clock().UTC().Truncate(time.Microsecond) }}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	b, err := openBackend(ctx, cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.b = b
	if err := s.migrate(ctx); err != nil {
		b.close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.repairHeads(ctx); err != nil {
		b.close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := s.repairClusterKeys(ctx); err != nil {
		b.close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

func openBackend(ctx context.Context, rawURL string) (backend, error) {
	scheme, rest, ok := strings.Cut(rawURL, ":")
	if !ok {
		return nil, fmt.Errorf("database URL %q has no scheme (want sqlite:, postgres:// or cockroachdb://)", redactURL(rawURL))
	}
	switch scheme {
	case "sqlite":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return nil, errors.New("sqlite URL has no file path")
		}
		return openSQLite(ctx, path)
	case "postgres", "postgresql", "cockroachdb":
		pgURL := rawURL
		if scheme == "cockroachdb" {
			pgURL = "postgresql:" + rest
		}
		b, err := openPG(ctx, pgURL)
		if err != nil {
			return nil, err
		}
		if scheme == "cockroachdb" && !b.cockroach {
			b.close()
			return nil, errors.New("cockroachdb:// URL names a server that is not CockroachDB")
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown database URL scheme %q (want sqlite:, postgres:// or cockroachdb://)", scheme)
	}
}

func openSQLite(ctx context.Context, path string) (*sqliteBackend, error) {
	// WAL lets readers run beside the one writer; _txlock=immediate makes
	// every transaction take the write lock at BEGIN, so transactions are
	// serializable and never fail to upgrade a read lock mid-way.
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return &sqliteBackend{db: db}, nil
}

func openPG(ctx context.Context, pgURL string) (*pgBackend, error) {
	pool, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redactURL(pgURL), err)
	}
	var version string
	if err := pool.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect %s: %w", redactURL(pgURL), err)
	}
	return &pgBackend{pool: pool, cockroach: strings.Contains(version, "CockroachDB")}, nil
}

// redactURL hides a password in a database URL so it can be logged.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	return u.Redacted()
}

// Backend names the database in use: "sqlite", "postgres" or "cockroachdb".
func (s *Store) Backend() string { return s.b.name() }

// Ping reports whether the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.b.ping(ctx) }

// Close releases the database connections.
func (s *Store) Close() { s.b.close() }

// OnRevisions sets fn to be called, after each transaction that appended
// to data planes' revision logs commits, once per data plane (never for a
// transaction that rolled back). The fan-out hub uses it to wake the
// replica's own streams at once instead of at its next poll. fn must not
// block; set it before the store is used.
func (s *Store) OnRevisions(fn func(dataPlaneID string)) { s.onRevisions = fn }

// noting is the querier store code sees inside inTx: it records the data
// planes whose revision logs the transaction appended to.
type noting struct {
	querier
	dataPlanes map[string]bool
}

// noteRevision records that the transaction behind q appended to a data
// plane's revision log.
func noteRevision(q querier, dataPlaneID string) {
	if n, ok := q.(*noting); ok {
		n.dataPlanes[dataPlaneID] = true
	}
}

// inTx runs fn in a transaction (see backend.inTx) and, once it has
// committed, reports the data planes it appended revisions to.
func (s *Store) inTx(ctx context.Context, fn func(querier) error) error {
	var n *noting
	err := s.b.inTx(ctx, func(q querier) error {
		n = &noting{querier: q, dataPlanes: map[string]bool{}} // afresh on every attempt
		return fn(n)
	})
	if err == nil && s.onRevisions != nil {
		for dp := range n.dataPlanes {
			s.onRevisions(dp)
		}
	}
	return err
}
