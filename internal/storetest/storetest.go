// Package storetest gives tests real databases to run against: a fresh
// SQLite file, a fresh PostgreSQL database on the local server, and a
// CockroachDB test server when COCKROACH_BINARY is set. It never fakes a
// database.
//
// PostgreSQL is found at CAIRN_TEST_POSTGRES_URL, default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable. When it
// cannot be reached the test is skipped, except under CI=true, where that
// is a failure.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/testserver"
	"github.com/jackc/pgx/v5"
)

// DefaultPostgresURL is the machine's PostgreSQL server as the README sets
// it up.
const DefaultPostgresURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Backend is a database a store can be opened on.
type Backend struct {
	// Name is "sqlite", "postgres" or "cockroachdb".
	Name string
	// URL is a store URL (store.Config.URL) of a fresh, empty database.
	URL func(tb testing.TB) string
}

// Backends lists the databases every store test runs on: SQLite and
// PostgreSQL always, CockroachDB when COCKROACH_BINARY is set.
func Backends() []Backend {
	bs := []Backend{
		{Name: "sqlite", URL: SQLiteURL},
		{Name: "postgres", URL: PostgresURL},
	}
	if os.Getenv("COCKROACH_BINARY") != "" {
		bs = append(bs, Backend{Name: "cockroachdb", URL: CockroachURL})
	}
	return bs
}

// SQLiteURL returns the URL of a new SQLite file in a temporary directory.
func SQLiteURL(tb testing.TB) string {
	tb.Helper()
	return "sqlite:" + filepath.Join(tb.TempDir(), "cairn.db")
}

// PostgresURL creates a fresh database on the local PostgreSQL server,
// drops it when the test ends, and returns its URL.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv("CAIRN_TEST_POSTGRES_URL")
	if admin == "" {
		admin = DefaultPostgresURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		unreachable(tb, err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "cairn_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create test database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatalf("parse %s: %v", "CAIRN_TEST_POSTGRES_URL", err)
	}
	u.Path = "/" + name
	return u.String()
}

func unreachable(tb testing.TB, err error) {
	tb.Helper()
	if os.Getenv("CI") == "true" {
		tb.Fatalf("PostgreSQL is unreachable and CI=true, so this is a failure, not a skip: %v", err)
	}
	tb.Skipf("PostgreSQL is unreachable (start it, or set CAIRN_TEST_POSTGRES_URL): %v", err)
}

// CockroachURL starts a single-node CockroachDB from COCKROACH_BINARY
// through cockroach-go's testserver and returns a URL naming it as
// CockroachDB.
func CockroachURL(tb testing.TB) string {
	tb.Helper()
	bin := os.Getenv("COCKROACH_BINARY")
	if bin == "" {
		tb.Skip("COCKROACH_BINARY is not set")
	}
	ts, err := testserver.NewTestServer(testserver.CockroachBinaryPathOpt(bin))
	if err != nil {
		tb.Fatalf("start cockroachdb test server: %v", err)
	}
	tb.Cleanup(ts.Stop)
	if err := ts.WaitForInit(); err != nil {
		tb.Fatalf("cockroachdb test server init: %v", err)
	}
	u := *ts.PGURL()
	u.Scheme = "cockroachdb"
	return u.String()
}
