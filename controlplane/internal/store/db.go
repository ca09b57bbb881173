package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cairnhq/cairn/internal/wait"
	"github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// querier is what store code runs SQL through: a transaction of either
// driver. Queries use $1-style placeholders, which SQLite accepts too.
type querier interface {
	exec(ctx context.Context, query string, args ...any) (int64, error)
	query(ctx context.Context, query string, args ...any) (rows, error)
	queryRow(ctx context.Context, query string, args ...any) row
}

// rows is a result set; callers must Close it.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface {
	Scan(dest ...any) error
}

// backend runs transactions with the retry discipline its database needs.
type backend interface {
	// inTx runs fn in a serializable transaction, retrying fn from the
	// start on serialization failures; fn must not have effects outside
	// the transaction.
	inTx(ctx context.Context, fn func(querier) error) error
	// read runs fn on the database without a write transaction.
	read(ctx context.Context, fn func(querier) error) error
	ping(ctx context.Context) error
	close()
	name() string
}

// retryPolicy bounds how often and how long a transaction is retried.
const (
	maxTxAttempts   = 30
	retryBaseDelay  = 2 * time.Millisecond
	retryMaxBackoff = 500 * time.Millisecond
)

// backoff returns a full-jitter exponential delay for the given attempt.
func backoff(attempt int) time.Duration {
	d := retryBaseDelay << min(attempt, 16)
	if d > retryMaxBackoff || d <= 0 {
		d = retryMaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// ---- PostgreSQL and CockroachDB (pgx) ----

type pgBackend struct {
	pool      *pgxpool.Pool
	cockroach bool
}

func (b *pgBackend) name() string {
	if b.cockroach {
		return "cockroachdb"
	}
	return "postgres"
}

func (b *pgBackend) ping(ctx context.Context) error { return b.pool.Ping(ctx) }
func (b *pgBackend) close()                         { b.pool.Close() }

func (b *pgBackend) read(ctx context.Context, fn func(querier) error) error {
	return fn(pgQuerier{b.pool})
}

func (b *pgBackend) inTx(ctx context.Context, fn func(querier) error) error {
	if b.cockroach {
		// crdbpgx drives CockroachDB's client-side retry protocol. It does
		// not inspect the COMMIT error the way PostgreSQL needs, which is
		// safe only because CockroachDB reports a serialization failure
		// before or at RELEASE SAVEPOINT.
		return crdbpgx.ExecuteTx(ctx, b.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
			return fn(pgQuerier{tx})
		})
	}
	for attempt := 0; ; attempt++ {
		err := b.attempt(ctx, fn)
		if err == nil || !isRetryablePG(err) || attempt+1 >= maxTxAttempts {
			return err
		}
		if err := wait.Sleep(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

// attempt runs fn once and commits, returning the COMMIT error too: under
// SERIALIZABLE, PostgreSQL may report a serialization failure only at
// COMMIT.
func (b *pgBackend) attempt(ctx context.Context, fn func(querier) error) error {
	tx, err := b.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(pgQuerier{tx}); err != nil {
		_ = tx.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func isRetryablePG(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// serialization_failure, deadlock_detected
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return false
}

type pgConn interface {
	Exec(ctx context.Context, sql string, arguments ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type pgQuerier struct{ c pgConn }

func (q pgQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.c.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q pgQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.c.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgRows{r}, nil
}

func (q pgQuerier) queryRow(ctx context.Context, query string, args ...any) row {
	return q.c.QueryRow(ctx, query, args...)
}

type pgRows struct{ pgx.Rows }

// ---- SQLite (database/sql, modernc.org/sqlite) ----

type sqliteBackend struct {
	db *sql.DB
}

func (b *sqliteBackend) name() string                   { return "sqlite" }
func (b *sqliteBackend) ping(ctx context.Context) error { return b.db.PingContext(ctx) }
func (b *sqliteBackend) close()                         { _ = b.db.Close() }

func (b *sqliteBackend) read(ctx context.Context, fn func(querier) error) error {
	return fn(sqliteQuerier{b.db})
}

func (b *sqliteBackend) inTx(ctx context.Context, fn func(querier) error) error {
	for attempt := 0; ; attempt++ {
		err := b.attempt(ctx, fn)
		if err == nil || !isBusySQLite(err) || attempt+1 >= maxTxAttempts {
			return err
		}
		if err := wait.Sleep(ctx, backoff(attempt)); err != nil {
			return err
		}
	}
}

// attempt runs fn in one transaction. The DSN sets _txlock=immediate, so
// BEGIN takes the write lock and SQLite transactions are serializable.
func (b *sqliteBackend) attempt(ctx context.Context, fn func(querier) error) error {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(sqliteQuerier{tx}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

func isBusySQLite(err error) bool {
	var e *sqlite.Error
	if errors.As(err, &e) {
		c := e.Code() & 0xff
		return c == sqlite3.SQLITE_BUSY || c == sqlite3.SQLITE_LOCKED
	}
	return false
}

type sqlConn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

type sqliteQuerier struct{ c sqlConn }

func (q sqliteQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.c.ExecContext(ctx, query, sqliteArgs(args)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqliteQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.c.QueryContext(ctx, query, sqliteArgs(args)...)
	if err != nil {
		return nil, err
	}
	return sqlRows{r}, nil
}

func (q sqliteQuerier) queryRow(ctx context.Context, query string, args ...any) row {
	return q.c.QueryRowContext(ctx, query, sqliteArgs(args)...)
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

// sqliteTimeLayout has a fixed width so that SQLite, which stores times as
// text, orders and compares them correctly.
const sqliteTimeLayout = "2006-01-02T15:04:05.000000Z"

func sqliteArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if t, ok := a.(time.Time); ok {
			a = t.UTC().Format(sqliteTimeLayout)
		}
		out[i] = a
	}
	return out
}
