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
	"github.com/medrec-zk/medrec/dbmanager/store/storetest"
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
	storetest.RaceNonces(t, []store.Nonces{dbs[0], dbs[1]}, 4, 20, 0)
}

// TestUpgradeFromV1: a database created by the first migration only, with
// data, gains the nonce and claim-code tables on open and keeps its data.
// sqliteAt creates an SQLite database migrated up to version and returns
// its path and a plain handle on it.
func sqliteAt(t *testing.T, version int64) (string, *sql.DB) {
	t.Helper()
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
	if _, err := p.UpTo(context.Background(), version); err != nil {
		t.Fatal(err)
	}
	return path, raw
}

// reopen closes the plain handle raw on the database at path and opens it
// as the store does, which runs the remaining migrations; the store is
// closed when the test ends.
func reopen(t *testing.T, path string, raw *sql.DB) *DB {
	t.Helper()
	raw.Close()
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestUpgradeFromV2: nonces recorded before version 3 keyed them by
// (expiry, nonce) are still refused after it; PostgreSQL's migration is run
// by every PostgreSQL test.
func TestUpgradeFromV2(t *testing.T) {
	ctx := context.Background()
	path, raw := sqliteAt(t, 2)
	exp := time.Now().Add(time.Minute)
	if _, err := raw.Exec(`INSERT INTO used_nonces (nonce, expires_us) VALUES (?, ?)`, make([]byte, 32), micros(exp)); err != nil {
		t.Fatal(err)
	}
	s := reopen(t, path, raw)
	if err := s.UseNonce(ctx, [32]byte{}, exp); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a nonce recorded before the upgrade: %v", err)
	}
	if n, err := s.PruneNonces(ctx, exp); err != nil || n != 1 {
		t.Fatalf("prune after the upgrade: %d %v", n, err)
	}
}

func TestUpgradeFromV1(t *testing.T) {
	ctx := context.Background()
	path, raw := sqliteAt(t, 1)
	if _, err := raw.Exec(`INSERT INTO patients (id, created_us) VALUES ('p1', 1)`); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`SELECT 1 FROM used_nonces`); err == nil {
		t.Fatal("version 1 already has used_nonces")
	}
	s := reopen(t, path, raw)
	if _, err := s.Patient(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	if err := s.UseNonce(ctx, [32]byte{1}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	h := [32]byte{2}
	if err := s.PutClaimCode(ctx, store.ClaimCode{Hash: h, PatientID: "p1", Expires: time.Now().Add(time.Hour), TagCode: storetest.DeskCode(1)}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.ClaimCode(ctx, h, time.Now()); err != nil || c.PatientID != "p1" || c.TagCode != storetest.DeskCode(1) {
		t.Fatalf("%+v %v", c, err)
	}
}

// TestUpgradeFromV3: a claim code issued before codes were bound to a tag
// (version 4) reads back without a desk code — it binds nothing, and the
// gateway refuses it — and keeps its patient and expiry.
func TestUpgradeFromV3(t *testing.T) {
	ctx := context.Background()
	path, raw := sqliteAt(t, 3)
	exp := time.Now().Add(time.Hour)
	if _, err := raw.Exec(`INSERT INTO patients (id, created_us) VALUES ('p1', 1)`); err != nil {
		t.Fatal(err)
	}
	h := [32]byte{3}
	if _, err := raw.Exec(`INSERT INTO claim_codes (code_hash, patient_id, expires_us) VALUES (?, 'p1', ?)`, h[:], micros(exp)); err != nil {
		t.Fatal(err)
	}
	s := reopen(t, path, raw)
	c, err := s.ClaimCode(ctx, h, time.Now())
	if err != nil || c.PatientID != "p1" || c.TagCode != "" || !c.Expires.Equal(store.Micro(exp)) {
		t.Fatalf("a code from before the upgrade: %+v %v", c, err)
	}
}

// TestGroupCommit: concurrent small writes share commits, each caller
// returns only once its own write is committed, the log stays one unbroken
// chain, and one failing write in a group fails nobody else.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var groups, largest atomic.Int64
	s.grouped = func(n int) {
		groups.Add(1)
		for {
			l := largest.Load()
			if int64(n) <= l || largest.CompareAndSwap(l, int64(n)) {
				return
			}
		}
	}
	const workers, each = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var nonce [32]byte
				nonce[0], nonce[1] = byte(w), byte(i)
				if err := s.UseNonce(ctx, nonce, time.Now().Add(time.Minute)); err != nil {
					errs <- err
					return
				}
				got, err := s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorSystem, Action: "read", Outcome: store.Allowed})
				if err != nil {
					errs <- err
					return
				}
				// Committed before the call returned: a fresh read sees it.
				if e, err := s.LogRange(ctx, got[0].Seq, 1); err != nil || len(e) != 1 || e[0].Hash != got[0].Hash {
					errs <- errors.New("an appended entry was not readable once AppendLog returned")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	head, err := store.VerifyLog(ctx, s)
	if err != nil || head.Next != workers*each {
		t.Fatalf("log after concurrent appends: %+v %v", head, err)
	}
	if largest.Load() < 2 || groups.Load() >= 2*workers*each {
		t.Fatalf("no write shared a commit: %d groups, largest %d", groups.Load(), largest.Load())
	}
	t.Logf("%d writes in %d commits (largest group %d)", 2*workers*each, groups.Load(), largest.Load())

	// A write that fails inside a group fails alone.
	exp := time.Now().Add(time.Minute)
	if err := s.UseNonce(ctx, [32]byte{0xfe}, exp); err != nil {
		t.Fatal(err)
	}
	bad := errors.New("this write fails")
	var hold sync.Mutex
	hold.Lock()
	var sizes []int
	s.grouped = func(n int) { // let a group form behind the first
		hold.Lock()
		sizes = append(sizes, n)
		hold.Unlock()
	}
	results := make(chan error, 5)
	go func() { results <- s.group(ctx, func(context.Context, *sql.Tx) error { return nil }) }()
	time.Sleep(50 * time.Millisecond) // the first caller is committing (held)
	go func() { results <- s.group(ctx, func(context.Context, *sql.Tx) error { return bad }) }()
	entry := store.LogEntry{ActorKind: store.ActorSystem, Action: "read", Outcome: store.Allowed}
	go func() {
		_, err := s.AppendLog(ctx, entry)
		results <- err
	}()
	go func() { // a nonce used above: taken, nothing written
		_, err := s.UseNonceWithLog(ctx, [32]byte{0xfe}, exp, entry)
		results <- err
	}()
	go func() {
		_, err := s.UseNonceWithLog(ctx, [32]byte{0: 0xff}, exp, entry)
		results <- err
	}()
	time.Sleep(50 * time.Millisecond)
	hold.Unlock()
	var failed, taken, ok int
	for range 5 {
		switch err := <-results; {
		case errors.Is(err, bad):
			failed++
		case errors.Is(err, store.ErrConflict):
			taken++
		case err == nil:
			ok++
		default:
			t.Fatal(err)
		}
	}
	if failed != 1 || taken != 1 || ok != 3 || len(sizes) != 2 || sizes[1] != 4 {
		t.Fatalf("%d failed, %d nonces taken, %d succeeded, groups %v", failed, taken, ok, sizes)
	}
	if head, err := store.VerifyLog(ctx, s); err != nil || head.Next != workers*each+2 {
		t.Fatalf("log after the failed group: %+v %v", head, err)
	}
}
