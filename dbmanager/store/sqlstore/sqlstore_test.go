package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
	"github.com/medrec-zk/medrec/dbmanager/store/storetest"
)

func TestStore(t *testing.T) {
	for _, b := range sqltest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.Store { return b.Open(t) })
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
		{"deleted first", []string{`DELETE FROM access_log WHERE seq = 0`}},
		{"deleted tail", []string{`DELETE FROM access_log WHERE seq = 3`}},
		{"renumbered", []string{`DELETE FROM access_log WHERE seq = 2`, `UPDATE access_log SET seq = seq - 1 WHERE seq > 2`}},
	}
	for _, b := range sqltest.Backends(t) {
		for _, e := range edits {
			t.Run(b.Name+"/"+e.name, func(t *testing.T) {
				ctx := context.Background()
				s := b.Open(t)
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
				if _, err := s.Raw.ExecContext(ctx, e.sql[0]); err == nil {
					t.Fatal("append-only trigger did not refuse the edit")
				}
				// … so the insider drops them first.
				dropTriggers(t, s)
				for _, q := range e.sql {
					if _, err := s.Raw.ExecContext(ctx, q); err != nil {
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

func dropTriggers(t *testing.T, s sqltest.DB) {
	t.Helper()
	stmts := []string{`DROP TRIGGER access_log_no_update`, `DROP TRIGGER access_log_no_delete`}
	if s.Dialect() == "postgres" {
		stmts = []string{`DROP TRIGGER access_log_append_only ON access_log`}
	}
	for _, q := range stmts {
		if _, err := s.Raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAppendOnlyTables: versions and changes cannot be edited either.
func TestAppendOnlyTables(t *testing.T) {
	for _, b := range sqltest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			ctx := context.Background()
			s := b.Open(t)
			_, err := s.Apply(ctx, store.Batch{PatientID: "p1", CreatePatient: true, Writes: []store.Write{{Type: "Observation", ID: "o1",
				Raw: []byte(`{"resourceType":"Observation"}`), Mode: store.Create}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, q := range []string{
				`UPDATE resource_versions SET raw = sha256 WHERE id = 'o1'`,
				`DELETE FROM resource_versions WHERE id = 'o1'`,
				`UPDATE changes SET version = 7`,
				`DELETE FROM changes`,
			} {
				if _, err := s.Raw.ExecContext(ctx, q); err == nil {
					t.Errorf("%s: allowed", q)
				}
			}
		})
	}
}
