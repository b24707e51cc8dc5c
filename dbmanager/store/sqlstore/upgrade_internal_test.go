package sqlstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/pressly/goose/v3"

	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// atVersion creates a database of dialect d migrated up to version and
// returns its DSN and a plain handle on it: an SQLite file, or a fresh
// PostgreSQL schema (skipped without MEDREC_TEST_POSTGRES_DSN).
func atVersion(t *testing.T, d *dialect, version int64) (string, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	var (
		dsn    string
		driver = "sqlite"
	)
	switch d {
	case sqliteDialect:
		dsn = filepath.Join(t.TempDir(), "records.db")
	default:
		base := os.Getenv("MEDREC_TEST_POSTGRES_DSN")
		if base == "" {
			t.Skip("PostgreSQL skipped: MEDREC_TEST_POSTGRES_DSN is not set")
		}
		driver = "pgx"
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Fatal(err)
		}
		var b [6]byte
		rand.Read(b[:])
		schema := "medrec_upgrade_" + hex.EncodeToString(b[:])
		if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); admin.Close() })
		u, err := url.Parse(base)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dsn = u.String()
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	dir, _ := fs.Sub(migrations, "migrations/"+d.name)
	p, err := goose.NewProvider(d.goose, raw, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, version); err != nil {
		t.Fatal(err)
	}
	return dsn, raw
}

// TestUpgradeToStateV2: a database anchored before state v2 (version 3) —
// tagged patients with records, log entries, v1 leaves, and a batch without
// log entries last — opens at version 5 with its data: the old leaves read
// as v1, every tagged patient is dirty and anchors a v2 leaf covering its
// whole history and every entry about it, and the next batch may start
// where the empty one did.
func TestUpgradeToStateV2(t *testing.T) {
	for _, d := range []*dialect{sqliteDialect, postgresDialect} {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			dsn, raw := atVersion(t, d, 3)
			exec := func(q string, args ...any) {
				t.Helper()
				if _, err := raw.ExecContext(ctx, d.q(q), args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			tag := func(n byte) []byte { var b [32]byte; b[31] = n; return b[:] }
			exec(`INSERT INTO patients (id, tag, created_us, seq, anchored_seq) VALUES ('p1', ?, 1, 2, 2), ('p2', ?, 1, 1, 1), ('p3', NULL, 1, 0, -1)`, tag(1), tag(2))
			version := func(patient, id string, v, seq int64, body string) {
				sum := sha256.Sum256([]byte(body))
				exec(`INSERT INTO resource_versions (rtype, id, version, patient_id, last_updated_us, sha256, seq, raw) VALUES ('Observation', ?, ?, ?, 1, ?, ?, ?)`,
					id, v, patient, sum[:], seq, []byte(body))
				exec(`INSERT INTO changes (patient_id, seq, rtype, id, version, time_us) VALUES (?, ?, 'Observation', ?, ?, 1)`, patient, seq, id, v)
			}
			version("p1", "o1", 1, 1, `{"resourceType":"Observation","id":"o1","status":"preliminary"}`)
			version("p1", "o1", 2, 2, `{"resourceType":"Observation","id":"o1","status":"final"}`)
			version("p2", "x1", 1, 1, `{"resourceType":"Observation","id":"x1"}`)
			cur := func(patient, id string, v, seq int64, body string) {
				sum := sha256.Sum256([]byte(body))
				exec(`INSERT INTO resources (rtype, id, version, patient_id, last_updated_us, sha256, seq) VALUES ('Observation', ?, ?, ?, 1, ?, ?)`, id, v, patient, sum[:], seq)
			}
			cur("p1", "o1", 2, 2, `{"resourceType":"Observation","id":"o1","status":"final"}`)
			cur("p2", "x1", 1, 1, `{"resourceType":"Observation","id":"x1"}`)
			entries := []store.LogEntry{
				{ActorKind: store.ActorPatient, ActorID: "0xaaaa", Action: "read", PatientID: "p1", Outcome: store.Allowed},
				{ActorKind: store.ActorPatient, ActorID: "0xbbbb", Action: "read", PatientID: "p2", Outcome: store.Allowed},
			}
			for i := range entries {
				entries[i].Time = store.Micro(entries[i].Time)
			}
			head := store.Chain(store.LogHead{}, entries)
			for _, e := range entries {
				exec(`INSERT INTO access_log (seq, time_us, actor_kind, actor_id, purpose, action, patient_id, resources, outcome, detail, prev, hash)
VALUES (?, ?, ?, ?, 0, ?, ?, '[]', ?, '', ?, ?)`, int64(e.Seq), micros(e.Time), int(e.ActorKind), e.ActorID, e.Action, e.PatientID, int(e.Outcome), e.Prev[:], e.Hash[:])
			}
			exec(`UPDATE log_head SET next = ?, hash = ? WHERE id = 1`, int64(head.Next), head.Hash[:])
			v1 := [32]byte{0x11}
			exec(`INSERT INTO anchors (batch, time_us, log_from, log_count, log_root, state_root, tx) VALUES (0, 1, 0, 2, ?, ?, '0x1'), (1, 2, 2, 0, ?, ?, '0x2')`,
				v1[:], v1[:], make([]byte, 32), v1[:])
			exec(`INSERT INTO anchor_states (batch, tag, patient_id, seq, hash) VALUES (0, ?, 'p1', 2, ?), (0, ?, 'p2', 1, ?)`, tag(1), v1[:], tag(2), v1[:])
			raw.Close()

			s, err := Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			old, err := s.Anchor(ctx, 0)
			if err != nil || len(old.States) != 2 || !old.States[0].Legacy || old.States[0].Hash != v1 || old.States[1].Seq != 1 {
				t.Fatalf("batch 0 after the upgrade: %+v %v", old, err)
			}
			if l, err := s.LatestAnchor(ctx); err != nil || l.Batch != 1 || l.TxHash != "0x2" {
				t.Fatalf("latest after the upgrade: %+v %v", l, err)
			}
			if l, err := s.LatestStates(ctx); err != nil || len(l) != 2 || !l[0].Legacy || l[1].Seq != 1 {
				t.Fatalf("latest leaves after the upgrade: %+v %v", l, err)
			}
			if _, err := store.VerifyLog(ctx, s); err != nil {
				t.Fatal(err)
			}
			dirty, err := s.Dirty(ctx, 2)
			if err != nil || len(dirty) != 2 {
				t.Fatalf("dirty after the upgrade: %+v %v", dirty, err)
			}
			for i, d := range dirty {
				hist, err := s.History(ctx, d.PatientID, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				h, err := store.HistoryRoot(hist)
				want := store.LogCommitment{Through: 2}.Extend(entries[i].Seq, entries[i].Hash)
				want.Through = 2
				if err != nil || d.History != h || d.Log != want || d.Legacy {
					t.Fatalf("%s: %+v, history %+v, log %+v", d.PatientID, d, h, want)
				}
			}
			// The next batch starts where the empty one did.
			if _, err := s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorSystem, Action: "anchor", Outcome: store.Allowed}); err != nil {
				t.Fatal(err)
			}
			if dirty, err = s.Dirty(ctx, 3); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AddAnchor(ctx, store.Anchor{LogFrom: 2, LogCount: 1, LogRoot: v1, StateRoot: v1, States: dirty}); err != nil {
				t.Fatal(err)
			}
			if d, err := s.Dirty(ctx, 3); err != nil || len(d) != 0 {
				t.Fatalf("dirty after anchoring v2: %+v %v", d, err)
			}
			// The rebuilt tables keep their foreign keys: a leaf of a batch
			// that does not exist is refused.
			_, err = s.db.ExecContext(ctx, d.q(`INSERT INTO anchor_states (batch, tag, patient_id, seq, hash) VALUES (9, ?, 'p1', 0, ?)`), tag(1), v1[:])
			if err == nil {
				t.Fatal("a leaf of a missing batch was stored")
			}
			// Down to version 3 and up again keeps the data.
			dir, _ := fs.Sub(migrations, "migrations/"+d.name)
			p, err := goose.NewProvider(d.goose, s.db, dir, goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.DownTo(ctx, 3); err != nil {
				t.Fatalf("down to 3: %v", err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatalf("up again: %v", err)
			}
			if l, err := s.LatestAnchor(ctx); err != nil || l.Batch != 2 {
				t.Fatalf("latest after down and up: %+v %v", l, err)
			}
			if d == sqliteDialect {
				var bad int
				if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_foreign_key_check`).Scan(&bad); err != nil || bad != 0 {
					t.Fatalf("foreign key check: %d %v", bad, err)
				}
			}
		})
	}
}

// TestUpgradeToSearchIndex: a database of version 5 — resources stored
// before search existed — opens at version 6 with every current version
// indexed (an older version's values are not), and an index made by an
// older extraction is made again when the store opens.
func TestUpgradeToSearchIndex(t *testing.T) {
	for _, d := range []*dialect{sqliteDialect, postgresDialect} {
		t.Run(d.name, func(t *testing.T) {
			ctx := context.Background()
			dsn, raw := atVersion(t, d, 5)
			exec := func(db *sql.DB, q string, args ...any) {
				t.Helper()
				if _, err := db.ExecContext(ctx, d.q(q), args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			exec(raw, `INSERT INTO patients (id, created_us, seq) VALUES ('p1', 1, 3)`)
			stored := []struct {
				id      string
				v       int64
				body    string
				current bool
			}{
				{"o1", 1, `{"resourceType":"Observation","id":"o1","status":"preliminary"}`, false},
				{"o1", 2, `{"resourceType":"Observation","id":"o1","status":"final"}`, true},
				{"o2", 1, `{"resourceType":"Observation","id":"o2","status":"preliminary"}`, true},
			}
			// More than one reindexing transaction's worth.
			for i := range reindexBatch + 7 {
				id := fmt.Sprintf("z%04d", i)
				stored = append(stored, struct {
					id      string
					v       int64
					body    string
					current bool
				}{id, 1, `{"resourceType":"Observation","id":"` + id + `","status":"registered"}`, true})
			}
			for i, r := range stored {
				sum := sha256.Sum256([]byte(r.body))
				exec(raw, `INSERT INTO resource_versions (rtype, id, version, patient_id, last_updated_us, sha256, seq, raw) VALUES ('Observation', ?, ?, 'p1', 1, ?, ?, ?)`, r.id, r.v, sum[:], int64(i+1), []byte(r.body))
				if r.current {
					exec(raw, `INSERT INTO resources (rtype, id, version, patient_id, last_updated_us, sha256, seq) VALUES ('Observation', ?, ?, 'p1', 1, ?, ?)`, r.id, r.v, sum[:], int64(i+1))
				}
			}
			raw.Close()
			byStatus := func(s *DB, status string) int {
				t.Helper()
				page, err := s.Search(ctx, "p1", store.Query{Type: "Observation", CountOnly: true, Criteria: []store.Criterion{
					{Param: "status", Kind: store.Token, Any: []store.Match{{Value: status, AnySystem: true}}}}})
				if err != nil {
					t.Fatal(err)
				}
				return page.Total
			}
			s, err := Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			if f, p, r := byStatus(s, "final"), byStatus(s, "preliminary"), byStatus(s, "registered"); f != 1 || p != 1 || r != reindexBatch+7 {
				t.Fatalf("after the upgrade: final %d, preliminary %d, registered %d", f, p, r)
			}
			var version int
			if err := s.db.QueryRowContext(ctx, `SELECT version FROM search_index`).Scan(&version); err != nil || version != fhirsearch.Version {
				t.Fatalf("index version %d, %v", version, err)
			}
			// An older extraction's index (here: lost values) is redone.
			exec(s.db, `DELETE FROM search_values WHERE id = 'o1'`)
			exec(s.db, `UPDATE search_index SET version = ?`, fhirsearch.Version-1)
			s.Close()
			if s, err = Open(ctx, dsn); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if f := byStatus(s, "final"); f != 1 {
				t.Fatalf("after reindexing: final %d", f)
			}
			// Down to version 5 and up again.
			dir, _ := fs.Sub(migrations, "migrations/"+d.name)
			p, err := goose.NewProvider(d.goose, s.db, dir, goose.WithDisableGlobalRegistry(true))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.DownTo(ctx, 5); err != nil {
				t.Fatalf("down to 5: %v", err)
			}
			if _, err := p.Up(ctx); err != nil {
				t.Fatalf("up again: %v", err)
			}
		})
	}
}
