package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/storetest"
)

// backend opens fresh databases of one kind.
type backend struct {
	name string
	open func(t testing.TB) *DB
}

// backends returns SQLite always, and PostgreSQL when
// MEDREC_TEST_POSTGRES_DSN is set. With MEDREC_REQUIRE_POSTGRES=1 a missing
// or unreachable PostgreSQL fails the test instead of skipping it.
func backends(t testing.TB) []backend {
	bs := []backend{{"sqlite", openSQLite}}
	dsn := os.Getenv("MEDREC_TEST_POSTGRES_DSN")
	required := os.Getenv("MEDREC_REQUIRE_POSTGRES") == "1"
	switch {
	case dsn != "":
		bs = append(bs, backend{"postgres", func(t testing.TB) *DB { return openPostgres(t, dsn) }})
	case required:
		t.Fatal("MEDREC_REQUIRE_POSTGRES=1 but MEDREC_TEST_POSTGRES_DSN is not set (run scripts/postgres-test.sh)")
	default:
		t.Log("PostgreSQL tests skipped: MEDREC_TEST_POSTGRES_DSN is not set")
	}
	return bs
}

func openSQLite(t testing.TB) *DB {
	t.Helper()
	db, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openPostgres gives each test its own schema, dropped when the test ends.
func openPostgres(t testing.TB, dsn string) *DB {
	t.Helper()
	ctx := context.Background()
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var b [6]byte
	rand.Read(b[:])
	schema := "medrec_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("postgres at MEDREC_TEST_POSTGRES_DSN: %v", err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", dsn)
		if err == nil {
			admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE")
			admin.Close()
		}
	})
	db, err := OpenPostgres(ctx, withSearchPath(t, dsn, schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func withSearchPath(t testing.TB, dsn, schema string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

func TestStore(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store { return b.open(t) })
		})
	}
}

// TestTamperedLogIsDetected edits stored rows behind the store's back, as an
// insider with database access would (first dropping the append-only
// triggers), and expects VerifyLog to notice each edit.
func TestTamperedLogIsDetected(t *testing.T) {
	edits := []struct {
		name string
		sql  []string
	}{
		{"outcome", []string{`UPDATE access_log SET outcome = 3 WHERE seq = 3`}},
		{"actor", []string{`UPDATE access_log SET actor_id = 'someone' WHERE seq = 2`}},
		{"time", []string{`UPDATE access_log SET time_us = time_us + 1 WHERE seq = 1`}},
		{"purpose", []string{`UPDATE access_log SET purpose = 4 WHERE seq = 2`}},
		{"resources", []string{`UPDATE access_log SET resources = '["Observation/o2"]' WHERE seq = 2`}},
		{"resources not JSON", []string{`UPDATE access_log SET resources = 'x' WHERE seq = 2`}},
		{"patient", []string{`UPDATE access_log SET patient_id = 'p2' WHERE seq = 1`}},
		{"deleted row", []string{`DELETE FROM access_log WHERE seq = 2`}},
		{"deleted tail", []string{`DELETE FROM access_log WHERE seq = 4`}},
		{"renumbered", []string{`DELETE FROM access_log WHERE seq = 2`, `UPDATE access_log SET seq = seq - 1 WHERE seq > 2`}},
	}
	for _, b := range backends(t) {
		for _, e := range edits {
			t.Run(b.name+"/"+e.name, func(t *testing.T) {
				ctx := context.Background()
				s := b.open(t)
				for i, action := range []string{"read", "search", "everything", "read"} {
					_, err := s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorGrantee, ActorID: "0xabc", Purpose: 1,
						Action: action, PatientID: "p1", Resources: []string{"Observation/o1"}, Outcome: store.Decision(1 + i%2)})
					if err != nil {
						t.Fatal(err)
					}
				}
				if _, err := store.VerifyLog(ctx, s); err != nil {
					t.Fatal(err)
				}
				// The triggers refuse the edit …
				if _, err := s.db.ExecContext(ctx, e.sql[0]); err == nil {
					t.Fatal("append-only trigger did not refuse the edit")
				}
				// … so the insider drops them first.
				dropTriggers(t, s)
				for _, q := range e.sql {
					if _, err := s.db.ExecContext(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := store.VerifyLog(ctx, s); !errors.Is(err, store.ErrTampered) {
					t.Fatalf("tampering not detected: %v", err)
				}
			})
		}
	}
}

func dropTriggers(t *testing.T, s *DB) {
	t.Helper()
	stmts := []string{`DROP TRIGGER access_log_no_update`, `DROP TRIGGER access_log_no_delete`}
	if s.Dialect() == "postgres" {
		stmts = []string{`DROP TRIGGER access_log_append_only ON access_log`}
	}
	for _, q := range stmts {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAppendOnlyTables: versions and changes cannot be edited either.
func TestAppendOnlyTables(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			s := b.open(t)
			_, err := s.Apply(ctx, store.Batch{PatientID: "p1", CreatePatient: true, Writes: []store.Write{{Type: "Observation", ID: "o1",
				Raw: []byte(`{"resourceType":"Observation"}`), Mode: store.Create}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				`UPDATE resource_versions SET raw = ? WHERE id = 'o1'`,
				`DELETE FROM resource_versions WHERE id = 'o1'`,
				`UPDATE changes SET version = 7`,
				`DELETE FROM changes`,
			} {
				var args []any
				if strings.Contains(q, "?") {
					args = append(args, []byte(`{}`))
				}
				if _, err := s.db.ExecContext(ctx, s.d.q(q), args...); err == nil {
					t.Errorf("%s: allowed", q)
				}
			}
		})
	}
}

// TestReopen: what was committed is there after closing and reopening, and
// migrating an up-to-date database again is a no-op.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, store.Batch{PatientID: "p1", CreatePatient: true, Writes: []store.Write{{Type: "Observation", ID: "o1",
		Raw: []byte(`{"resourceType":"Observation"}`), Mode: store.Create}},
		Log: []store.LogEntry{{ActorKind: store.ActorSystem, Action: "import", Outcome: store.Allowed}}}); err != nil {
		t.Fatal(err)
	}
	want, _ := s.State(ctx, "p1")
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.State(ctx, "p1"); err != nil || got != want {
		t.Fatalf("after reopen: %+v %v, want %+v", got, err, want)
	}
	if h, err := store.VerifyLog(ctx, s); err != nil || h.Seq != 1 {
		t.Fatalf("log after reopen: %+v %v", h, err)
	}
	var mode string
	if err := s.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal mode %q %v", mode, err)
	}
	var fk int
	if err := s.db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign keys %d %v", fk, err)
	}
}

func TestOpenRejects(t *testing.T) {
	for _, dsn := range []string{"", "sqlite:", ":memory:", "a?b"} {
		if _, err := Open(context.Background(), dsn); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Open(%q): %v", dsn, err)
		}
	}
}
