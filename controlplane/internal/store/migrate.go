package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

// migrations lists the embedded migrations of one dialect in order. File
// names are NNNN_name.sql; a version is never reused or edited once
// released.
func migrations(dialect string) ([]migration, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", e.Name())
		}
		body, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrate applies pending migrations, each in its own transaction with the
// row that records it. Replicas that start together may race: the loser's
// transaction fails on the duplicate version row or table, and it then
// finds the migration applied.
func (s *Store) migrate(ctx context.Context) error {
	dialect := "postgres"
	if s.b.name() == "sqlite" {
		dialect = "sqlite"
	}
	ms, err := migrations(dialect)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`
	if err := s.b.read(ctx, func(q querier) error {
		_, err := q.exec(ctx, createTable)
		return err
	}); err != nil {
		// PostgreSQL's IF NOT EXISTS is not safe against a concurrent
		// CREATE: the loser fails even though the table now exists.
		if _, err2 := s.migrationApplied(ctx, 0); err2 != nil {
			return fmt.Errorf("migrate: create schema_migrations: %w", err)
		}
	}
	for _, m := range ms {
		applied, err := s.migrationApplied(ctx, m.version)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		if applied {
			continue
		}
		err = s.inTx(ctx, func(q querier) error {
			// DDL first: CockroachDB refuses schema changes after a write
			// in the same transaction.
			if _, err := q.exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := q.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.version, m.name, s.now().Format("2006-01-02T15:04:05Z"))
			return err
		})
		if err != nil {
			if ok, _ := s.migrationApplied(ctx, m.version); ok {
				continue // another replica applied it
			}
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
		s.log.Info("applied migration", "migration", m.name, "backend", s.b.name())
	}
	return nil
}

func (s *Store) migrationApplied(ctx context.Context, version int64) (bool, error) {
	var n int
	err := s.b.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n)
	})
	return n > 0, err
}
