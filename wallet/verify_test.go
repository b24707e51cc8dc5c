package wallet

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the provider's own handle on its database

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/devstore"
)

// The provider's records of the patient in these tests: Observation o1 at
// version 2 (version 1 is history), Condition c1.
const (
	o1v1 = `{"resourceType":"Observation","id":"o1","status":"preliminary","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"effectiveDateTime":"2024-01-01T10:00:00Z","valueQuantity":{"value":71,"unit":"/min"}}`
	o1v2 = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"effectiveDateTime":"2024-01-01T10:00:00Z","valueQuantity":{"value":71,"unit":"/min"}}`
	c1   = `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/pat"},"code":{"text":"Asthma"},"recordedDate":"2023-01-02"}`
)

// verifyNet is one provider holding the patient's records, the patient
// connected, and the patient's device store.
type verifyNet struct {
	testNet
	store string // the device store's path
}

func newVerifyNet(t *testing.T) verifyNet {
	t.Helper()
	n := verifyNet{newNet(t, 1), filepath.Join(t.TempDir(), "keystore.json.device")}
	w := n.session(t)
	code := n.SeedPatient(t, 1, "pat", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+o1v1+`},{"resource":`+c1+`}]}`, w, true)
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", o1v2)
	if err := w.Connect(context.Background(), 1, code); err != nil {
		t.Fatal(err)
	}
	return n
}

// session is the patient's app unlocked anew: a fresh wallet remembering
// in the device store.
func (n verifyNet) session(t *testing.T) *Wallet {
	t.Helper()
	w := n.wallet(t, patientWords)
	keys, _ := delegate.FromMnemonic(patientWords, "")
	k, err := keys.DeviceStoreKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := devstore.Open(n.store, k)
	if err != nil {
		t.Fatal(err)
	}
	w.Remember(s)
	return w
}

func (n verifyNet) anchor(t *testing.T) {
	t.Helper()
	if _, err := n.Sites[0].Gateway.AnchorOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// check reads the records and the access log as the app does and returns
// both checks.
func check(t *testing.T, w *Wallet) (StateCheck, LogReport) {
	t.Helper()
	ctx := context.Background()
	recs, results, err := w.Records(ctx)
	if err != nil || results[0].Err != nil {
		t.Fatalf("records: %v %+v", err, results)
	}
	sc, err := w.VerifyRecords(ctx, 1, recs)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := w.AccessLog(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	return sc, rep
}

func kinds(ws []Warning) []WarningKind {
	var out []WarningKind
	for _, w := range ws {
		if !slices.Contains(out, w.Kind) {
			out = append(out, w.Kind)
		}
	}
	return out
}

// wantClean fails unless both checks verified everything, warning-free.
func wantClean(t *testing.T, when string, sc StateCheck, rep LogReport) {
	t.Helper()
	if !sc.Verified || len(sc.Warnings) != 0 || sc.Pending != 0 {
		t.Fatalf("%s: records %+v", when, sc)
	}
	if len(rep.Warnings) != 0 || rep.Problem != "" {
		t.Fatalf("%s: log %+v / %q", when, rep.Warnings, rep.Problem)
	}
	for _, e := range rep.Entries {
		if !e.Verified && !e.Pending {
			t.Fatalf("%s: entry %d: %s", when, e.Seq, e.Problem)
		}
	}
}

// TestHonestProviderStaysVerified: across anchors, new records, new log
// entries and restarts of the app, an honest provider's records and log
// stay verified, and nothing is a warning; what is newer than the latest
// anchor is pending.
func TestHonestProviderStaysVerified(t *testing.T) {
	n := newVerifyNet(t)
	w := n.session(t)
	// Before any anchor: nothing verifiable, nothing wrong.
	sc, rep := check(t, w)
	if sc.Verified || sc.Anchored || len(sc.Warnings) != 0 || !strings.Contains(sc.Problem, "not anchored yet") || len(rep.Warnings) != 0 {
		t.Fatalf("before the first anchor: %+v %+v", sc, rep.Warnings)
	}
	n.anchor(t)
	{
		sc, rep := check(t, w)
		wantClean(t, "first anchor", sc, rep)
	}
	// A new record: pending until the next anchor, then verified.
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/pat"}}`)
	sc, rep = check(t, w)
	if sc.Verified || sc.Pending != 1 || len(sc.Warnings) != 0 || len(rep.Warnings) != 0 {
		t.Fatalf("a new record before its anchor: %+v %+v", sc, rep.Warnings)
	}
	n.anchor(t)
	{
		sc, rep := check(t, w)
		wantClean(t, "second anchor", sc, rep)
	}
	// The app restarts: the device remembers, and the next anchor extends it.
	w = n.session(t)
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", strings.Replace(o1v2, `"final"`, `"amended"`, 1))
	n.anchor(t)
	sc, rep = check(t, w)
	wantClean(t, "after a restart and an update", sc, rep)
	n.anchor(t) // the entries of that check's reads
	w = n.session(t)
	sc, rep = check(t, w)
	wantClean(t, "after another restart", sc, rep)
	var mem memory
	r, _ := w.Relationship(context.Background(), 1)
	if ok, err := w.mem.store.Get(w.memoryName(r), &mem); !ok || err != nil || mem.History.Size != 5 || len(mem.Versions["Observation/o1"]) != 3 || len(mem.Entries) == 0 || mem.Log.Count == 0 {
		t.Fatalf("remembered: %+v %v %v", mem, ok, err)
	}
	if len(rep.Entries) < len(mem.Entries) {
		t.Fatalf("%d entries shown, %d remembered", len(rep.Entries), len(mem.Entries))
	}
}

// provider is the provider's own handle on its database, as an insider
// would use it, with the append-only triggers dropped.
func provider(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, tr := range []string{"access_log_no_update", "access_log_no_delete", "resource_versions_no_update", "resource_versions_no_delete", "changes_no_update", "changes_no_delete"} {
		if _, err := db.Exec("DROP TRIGGER IF EXISTS " + tr); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// rewriteVersion gives a stored version other content and its matching
// SHA-256, in the version table and, if it is current, in the resources.
func rewriteVersion(t *testing.T, db *sql.DB, id string, version int, raw string) {
	t.Helper()
	sum := sha256.Sum256([]byte(raw))
	exec(t, db, `UPDATE resource_versions SET raw = ?, sha256 = ? WHERE id = ? AND version = ?`, []byte(raw), sum[:], id, version)
	exec(t, db, `UPDATE resources SET sha256 = ? WHERE id = ? AND version = ?`, sum[:], id, version)
}

// reanchor has the gateway anchor the patient's records again, as they
// are in the database now.
func reanchor(t *testing.T, n verifyNet, db *sql.DB) {
	t.Helper()
	exec(t, db, `UPDATE patients SET anchored_seq = -1, history_root = NULL WHERE id = 'pat'`)
	n.anchor(t)
}

// patientEntry returns the seq of the patient's access-log entry number i
// (from the end if negative).
func patientEntry(t *testing.T, db *sql.DB, i int) int64 {
	t.Helper()
	rows, err := db.Query(`SELECT seq FROM access_log WHERE patient_id = 'pat' ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var seqs []int64
	for rows.Next() {
		var s int64
		rows.Scan(&s)
		seqs = append(seqs, s)
	}
	if i < 0 {
		i += len(seqs)
	}
	return seqs[i]
}

// TestTamperingIsCaught plays a provider that edits its database behind
// its gateway's back — dropping the append-only triggers — after the
// patient's app verified and remembered its records and log: at the app's
// next session, each edit is a warning of the kind it is evidence of.
func TestTamperingIsCaught(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(t *testing.T, n verifyNet, db *sql.DB)
		records []WarningKind // the warnings on the records (at least these)
		log     []WarningKind // on the access log
	}{
		{"tampered record", func(t *testing.T, n verifyNet, db *sql.DB) {
			rewriteVersion(t, db, "o1", 2, strings.Replace(o1v2, `71`, `171`, 1))
		}, []WarningKind{RecordChanged}, nil},
		{"re-anchored rewrite of the current version", func(t *testing.T, n verifyNet, db *sql.DB) {
			rewriteVersion(t, db, "o1", 2, strings.Replace(o1v2, `71`, `171`, 1))
			reanchor(t, n, db)
		}, []WarningKind{HistoryRewritten, RecordChanged}, nil},
		{"re-anchored rewrite of an old version", func(t *testing.T, n verifyNet, db *sql.DB) {
			rewriteVersion(t, db, "o1", 1, strings.Replace(o1v1, `71`, `171`, 1))
			reanchor(t, n, db)
		}, []WarningKind{HistoryRewritten}, nil},
		{"vanished resource", func(t *testing.T, n verifyNet, db *sql.DB) {
			exec(t, db, `DELETE FROM resources WHERE id = 'c1'`)
		}, []WarningKind{RecordVanished}, nil},
		{"vanished resource, its history removed and re-anchored", func(t *testing.T, n verifyNet, db *sql.DB) {
			// c1 was change 2 of 3: remove it everywhere and renumber the
			// changes after it, so the history has no gap.
			exec(t, db, `DELETE FROM resources WHERE id = 'c1'`)
			exec(t, db, `DELETE FROM resource_versions WHERE id = 'c1'`)
			exec(t, db, `DELETE FROM changes WHERE id = 'c1'`)
			exec(t, db, `UPDATE resource_versions SET seq = seq - 1 WHERE patient_id = 'pat' AND seq > 2`)
			exec(t, db, `UPDATE changes SET seq = seq - 1 WHERE patient_id = 'pat' AND seq > 2`)
			exec(t, db, `UPDATE resources SET seq = seq - 1 WHERE patient_id = 'pat' AND seq > 2`)
			exec(t, db, `UPDATE patients SET seq = seq - 1 WHERE id = 'pat'`)
			reanchor(t, n, db)
		}, []WarningKind{HistoryRewritten, RecordVanished}, nil},
		{"went back to an older version", func(t *testing.T, n verifyNet, db *sql.DB) {
			exec(t, db, `UPDATE resources SET version = 1, sha256 = (SELECT sha256 FROM resource_versions WHERE id = 'o1' AND version = 1) WHERE id = 'o1'`)
		}, []WarningKind{RecordWentBack}, nil},
		{"tampered log entry", func(t *testing.T, n verifyNet, db *sql.DB) {
			exec(t, db, `UPDATE access_log SET outcome = 2, detail = 'nothing to see' WHERE seq = ?`, patientEntry(t, db, 0))
		}, nil, []WarningKind{LogEntryChanged}},
		{"tampered log entry, its hash recomputed", func(t *testing.T, n verifyNet, db *sql.DB) {
			seq := patientEntry(t, db, 0)
			exec(t, db, `UPDATE access_log SET outcome = 2, detail = 'nothing to see' WHERE seq = ?`, seq)
			h := rehash(t, db, seq)
			exec(t, db, `UPDATE access_log SET hash = ? WHERE seq = ?`, h[:], seq)
		}, nil, []WarningKind{LogEntryChanged}},
		{"dropped log entry seen before", func(t *testing.T, n verifyNet, db *sql.DB) {
			exec(t, db, `DELETE FROM access_log WHERE seq = ?`, patientEntry(t, db, 0))
		}, nil, []WarningKind{LogEntryDropped, LogMismatch}},
		{"dropped log entry never seen, once anchored", func(t *testing.T, n verifyNet, db *sql.DB) {
			// A reader the patient never saw: logged, anchored, then removed
			// (the last entry, so the chain stays whole once its head is
			// moved back).
			n.staff(t, 1, "POST", "/admin/patients/pat/resources", o1v2) // unchanged: logged, no new version
			n.anchor(t)
			seq := patientEntry(t, db, -1)
			var prev []byte
			if err := db.QueryRow(`SELECT prev FROM access_log WHERE seq = ?`, seq).Scan(&prev); err != nil {
				t.Fatal(err)
			}
			exec(t, db, `DELETE FROM access_log WHERE seq = ?`, seq)
			exec(t, db, `UPDATE log_head SET next = ?, hash = ? WHERE id = 1`, seq, prev)
		}, nil, []WarningKind{LogMismatch}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newVerifyNet(t)
			n.anchor(t)
			{
				sc, rep := check(t, n.session(t))
				wantClean(t, "before tampering", sc, rep)
			}
			n.anchor(t) // the reads of that session are anchored too
			db := provider(t, n.Sites[0].DB)
			c.tamper(t, n, db)
			// The provider's own chain check passes where the edit kept it whole.
			sc, rep := check(t, n.session(t))
			for _, k := range c.records {
				if !slices.Contains(kinds(sc.Warnings), k) {
					t.Errorf("records: no %s warning in %v", k, sc.Warnings)
				}
			}
			for _, k := range c.log {
				if !slices.Contains(kinds(rep.Warnings), k) {
					t.Errorf("log: no %s warning in %v", k, rep.Warnings)
				}
			}
			if c.records == nil && len(sc.Warnings) != 0 {
				t.Errorf("records: unexpected warnings %v", sc.Warnings)
			}
			if c.records != nil && sc.Verified {
				t.Error("records still verified")
			}
			// The warning stays: the device did not learn the edit as the truth.
			if len(c.records) > 0 {
				if sc2, _ := check(t, n.session(t)); len(sc2.Warnings) == 0 {
					t.Error("the records warning was gone at the session after")
				}
			}
			if len(c.log) > 0 {
				if _, rep2 := check(t, n.session(t)); len(rep2.Warnings) == 0 {
					t.Error("the log warning was gone at the session after")
				}
			}
			for _, w := range append(sc.Warnings, rep.Warnings...) {
				t.Logf("%s: %s", w.Kind, w.Message)
			}
		})
	}
}

// rehash recomputes the hash of the stored access-log row seq from its
// columns, as a provider covering its tracks would.
func rehash(t *testing.T, db *sql.DB, seq int64) [32]byte {
	t.Helper()
	var (
		e                      store.LogEntry
		us                     int64
		kind, purpose, outcome int
		res                    string
		prev                   []byte
	)
	if err := db.QueryRow(`SELECT time_us, actor_kind, actor_id, purpose, action, patient_id, resources, outcome, detail, prev FROM access_log WHERE seq = ?`, seq).
		Scan(&us, &kind, &e.ActorID, &purpose, &e.Action, &e.PatientID, &res, &outcome, &e.Detail, &prev); err != nil {
		t.Fatal(err)
	}
	e.Seq, e.Time = uint64(seq), time.UnixMicro(us).UTC()
	e.ActorKind, e.Purpose, e.Outcome = store.ActorKind(kind), access.Purpose(purpose), store.Decision(outcome)
	if err := json.Unmarshal([]byte(res), &e.Resources); err != nil {
		t.Fatal(err)
	}
	if len(e.Resources) == 0 {
		e.Resources = nil
	}
	copy(e.Prev[:], prev)
	return store.EntryHash(e.Prev, e)
}

// TestNewDeviceSeesEditsAfterAnchoring: a device without memory (a new
// one, after restoring the words) still catches a history edited after it
// was anchored — what the provider sends no longer hashes to the anchor.
func TestNewDeviceSeesEditsAfterAnchoring(t *testing.T) {
	n := newVerifyNet(t)
	n.anchor(t)
	db := provider(t, n.Sites[0].DB)
	rewriteVersion(t, db, "o1", 1, strings.Replace(o1v1, `71`, `171`, 1))
	fresh := n.wallet(t, patientWords) // no device store
	sc, _ := check(t, fresh)
	if !slices.Contains(kinds(sc.Warnings), HistoryMismatch) || sc.Verified {
		t.Fatalf("a new device: %+v", sc)
	}
}

// TestAccessLogPages: the gateway sends the log in pages of 999 entries;
// the wallet reads them all, checks them all against the anchor, and the
// anchored commitment covers every one.
func TestAccessLogPages(t *testing.T) {
	ctx := context.Background()
	n := newVerifyNet(t)
	s, err := sqlstore.OpenSQLite(ctx, n.Sites[0].DB) // a second handle on the gateway's database
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var extra []store.LogEntry
	for range 2100 {
		extra = append(extra, store.LogEntry{ActorKind: store.ActorGrantee, ActorID: "0xdoc", Purpose: access.Treatment, Action: "read", PatientID: "pat", Outcome: store.Allowed})
	}
	if _, err := s.AppendLog(ctx, extra...); err != nil {
		t.Fatal(err)
	}
	n.anchor(t)
	w := n.session(t)
	rep, err := w.AccessLog(ctx, 1)
	if err != nil || len(rep.Warnings) != 0 || rep.Problem != "" {
		t.Fatalf("log: %v %+v %q", err, rep.Warnings, rep.Problem)
	}
	verified := 0
	for i, e := range rep.Entries {
		if i > 0 && e.Seq <= rep.Entries[i-1].Seq {
			t.Fatalf("entry %d out of order", i)
		}
		if e.Verified {
			verified++
		}
	}
	if len(rep.Entries) < 2103 || verified != len(rep.Entries) {
		t.Fatalf("%d entries, %d verified", len(rep.Entries), verified)
	}
}
