// Package sqltest opens fresh sqlstore databases for tests: SQLite always,
// PostgreSQL when MEDREC_TEST_POSTGRES_DSN is set (each test in its own
// schema, dropped afterwards). With MEDREC_REQUIRE_POSTGRES=1 a missing
// PostgreSQL fails the test instead of skipping that backend.
package sqltest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for the raw connection
	_ "modernc.org/sqlite"             // "sqlite" driver for the raw connection

	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
)

// Backend opens fresh, empty databases of one kind.
type Backend struct {
	Name string // "sqlite" or "postgres"
	Open func(tb testing.TB) DB
	// DSN returns where a fresh, empty database is, without opening it
	// (for sqlstore.Open, e.g. in another process): an SQLite file path in
	// a temporary directory, or a PostgreSQL DSN whose search_path is a new
	// schema. Both are removed when the test ends.
	DSN func(tb testing.TB) string
}

// DB is an open store and a second, raw connection to the same database for
// tests that act behind the store's back. Both close when the test ends.
type DB struct {
	*sqlstore.DB
	Raw *sql.DB
}

// Backends returns the backends to test.
func Backends(tb testing.TB) []Backend {
	bs := []Backend{{"sqlite", openSQLite, sqlitePath}}
	dsn := os.Getenv("MEDREC_TEST_POSTGRES_DSN")
	switch {
	case dsn != "":
		bs = append(bs, Backend{"postgres", func(tb testing.TB) DB { return openPostgres(tb, dsn) },
			func(tb testing.TB) string { return postgresSchema(tb, dsn) }})
	case os.Getenv("MEDREC_REQUIRE_POSTGRES") == "1":
		tb.Fatal("MEDREC_REQUIRE_POSTGRES=1 but MEDREC_TEST_POSTGRES_DSN is not set (run scripts/postgres-test.sh)")
	default:
		tb.Log("PostgreSQL skipped: MEDREC_TEST_POSTGRES_DSN is not set")
	}
	return bs
}

func sqlitePath(tb testing.TB) string { return filepath.Join(tb.TempDir(), "records.db") }

func openSQLite(tb testing.TB) DB {
	tb.Helper()
	path := sqlitePath(tb)
	s, err := sqlstore.OpenSQLite(context.Background(), path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	return DB{s, raw}
}

func openPostgres(tb testing.TB, dsn string) DB {
	tb.Helper()
	ctx := context.Background()
	dsn = postgresSchema(tb, dsn)
	s, err := sqlstore.OpenPostgres(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { raw.Close() })
	return DB{s, raw}
}

// postgresSchema creates a new schema, dropped when the test ends, and
// returns dsn with that schema as its search_path.
func postgresSchema(tb testing.TB, dsn string) string {
	tb.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		tb.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "medrec_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		tb.Fatalf("PostgreSQL at MEDREC_TEST_POSTGRES_DSN: %v", err)
	}
	tb.Cleanup(func() {
		admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
		admin.Close()
	})
	return withSearchPath(tb, dsn, schema)
}

func withSearchPath(tb testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			tb.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}
