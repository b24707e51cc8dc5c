package sqlstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

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
	if h, err := store.VerifyLog(ctx, s); err != nil || h.Next != 1 {
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
