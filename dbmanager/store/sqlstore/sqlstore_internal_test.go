package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

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

// TestNoncesAcrossHandles: two stores on one SQLite file, as two gateway
// processes (or an old and a new one overlapping in a restart): each nonce
// has exactly one winner, and a nonce used through one is refused by the other.
func TestNoncesAcrossHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "records.db")
	var dbs [2]*DB
	for i := range dbs {
		s, err := OpenSQLite(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		dbs[i] = s
	}
	exp := time.Now().Add(time.Minute)
	const nonces = 20
	var wins [nonces]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 4*nonces)
	for w := range 4 {
		s := dbs[w%2]
		wg.Go(func() {
			for i := range nonces {
				err := s.UseNonce(ctx, [32]byte{31: byte(i)}, exp)
				switch {
				case err == nil:
					wins[i].Add(1)
				case !errors.Is(err, store.ErrConflict):
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range wins {
		if n := wins[i].Load(); n != 1 {
			t.Fatalf("nonce %d: %d winners", i, n)
		}
	}
}

// TestUpgradeFromV1: a database created by the first migration only, with
// data, gains the nonce and claim-code tables on open and keeps its data.
func TestUpgradeFromV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "records.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := fs.Sub(migrations, "migrations/sqlite")
	p, err := goose.NewProvider(goose.DialectSQLite3, raw, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO patients (id, created_us) VALUES ('p1', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`SELECT 1 FROM used_nonces`); err == nil {
		t.Fatal("version 1 already has used_nonces")
	}
	raw.Close()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Patient(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := s.UseNonce(ctx, [32]byte{1}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	h := [32]byte{2}
	if err := s.PutClaimCode(ctx, store.ClaimCode{Hash: h, PatientID: "p1", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.ClaimCode(ctx, h, time.Now()); err != nil || c.PatientID != "p1" {
		t.Fatalf("%+v %v", c, err)
	}
}
