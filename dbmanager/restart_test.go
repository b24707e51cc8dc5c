package dbmanager

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestRestart: what the gateway must not forget survives a restart on the
// same database. A signed request served before the restart is refused as a
// replay after it, and the refusal is in the access log; a claim code the
// desk issued before the restart opens the relationship after it, once.
func TestRestart(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()

	// A signed read is served, and its exact headers are kept.
	req := w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1)
	replay := req.Clone(ctx)
	if r := w.do(req); r.status != 200 || string(r.body) != observationJS {
		t.Fatalf("read before the restart: %d %s", r.status, r.body)
	}
	// A second patient is enrolled and gets a claim code at the desk.
	keys2, err := delegate.FromMnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p2"}); r.status != 201 {
		t.Fatalf("create p2: %d %s", r.status, r.body)
	}
	cm2, _ := keys2.Commitment()
	if r := w.staff("POST", "/admin/patients/p2/enrol", map[string]string{"commitment": zkhash.Hex(cm2)}); r.status != 200 {
		t.Fatalf("enrol p2: %d %s", r.status, r.body)
	}
	r := w.staff("POST", "/admin/patients/p2/claim-code", map[string]string{"tagCode": deskCode(t, keys2, 1)})
	if r.status != 201 {
		t.Fatalf("claim code: %d %s", r.status, r.body)
	}
	code := r.json(t)["code"].(string)
	if r := w.staff("POST", "/admin/patients/nobody/claim-code", map[string]string{"tagCode": deskCode(t, keys2, 1)}); r.status != 404 {
		t.Fatalf("claim code for an unknown patient: %d %s", r.status, r.body)
	}
	head, err := w.cfg.Store.LogHead(ctx)
	if err != nil {
		t.Fatal(err)
	}

	w.restart()

	// The database holds the code's hash only, never the code.
	files, _ := filepath.Glob(w.dbPath + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(code)) {
			t.Fatalf("%s contains the claim code", filepath.Base(f))
		}
	}
	// The replay is refused, and the refusal logged.
	r = w.do(replay)
	if r.status != 401 || !bytes.Contains(r.body, []byte("nonce already used")) {
		t.Fatalf("replay after the restart: %d %s", r.status, r.body)
	}
	entries, err := w.cfg.Store.LogRange(ctx, head.Next, 100)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(entries, func(e store.LogEntry) bool {
		return e.Outcome == store.Denied && e.Action == "read" && strings.Contains(e.Detail, "nonce already used")
	})
	if i < 0 {
		t.Fatalf("no denial of the replay in the log after seq %d: %+v", head.Next, entries)
	}
	// It is logged as the patient's own request, so the patient sees it.
	if e := entries[i]; e.ActorKind != store.ActorPatient || e.ActorID != simchain.Addr(w.owner).Hex() || e.PatientID != "p1" {
		t.Fatalf("the replay is logged as %s %s about %q", e.ActorKind, e.ActorID, e.PatientID)
	}
	// A fresh request of the same reader is served.
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("fresh read after the restart: %d %s", r.status, r.body)
	}

	// The code issued before the restart opens p2's relationship, once.
	d2, _ := keys2.Delegate(1, 0)
	claim := w.claimWith(keys2, 1, simchain.Addr(d2.PrivateKey()))
	claim["code"] = code
	if r := w.post("/claims", claim); r.status != 200 || r.json(t)["status"] != "opened" {
		t.Fatalf("claim with a code issued before the restart: %d %s", r.status, r.body)
	}
	tag2, _ := keys2.Tag(1)
	var t2 store.Tag
	zkhash.Big(tag2).FillBytes(t2[:])
	if p, err := w.cfg.Store.PatientByTag(ctx, t2); err != nil || p.ID != "p2" {
		t.Fatalf("p2's tag: %+v %v", p, err)
	}
	if r := w.post("/claims", claim); r.status != 401 {
		t.Fatalf("second use of the code: %d %s", r.status, r.body)
	}
	if _, err := w.cfg.Store.ClaimCode(ctx, claimCodeHash(code), time.Now()); err == nil {
		t.Fatal("the code is still stored after the claim")
	}
}

// TestClaimCodeExpires: a code is refused after its 24 hours, also by a
// gateway restarted in the meantime.
func TestClaimCodeExpires(t *testing.T) {
	w := newWorld(t)
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p1"}); r.status != 201 {
		t.Fatalf("create patient: %d %s", r.status, r.body)
	}
	r := w.staff("POST", "/admin/patients/p1/claim-code", map[string]string{"tagCode": deskCode(t, w.keys, 1)})
	if r.status != 201 {
		t.Fatalf("claim code: %d %s", r.status, r.body)
	}
	code := r.json(t)["code"].(string)
	later := time.Now().Add(claimCodeTTL + time.Minute)
	w.restart(func(c *Config) { c.Now = func() time.Time { return later } })
	body := map[string]string{"code": code, "tag": "0x1", "owner": simchain.Addr(w.owner).Hex(), "root": "0x1", "proof": "0x00"}
	if r := w.post("/claims", body); r.status != 401 || !bytes.Contains(r.body, []byte("expired")) {
		t.Fatalf("expired code: %d %s", r.status, r.body)
	}
	// The housekeeping round (off the request path) prunes the expired one,
	// by the gateway's clock.
	if r := w.staff("POST", "/admin/patients/p1/claim-code", map[string]string{"tagCode": deskCode(t, w.keys, 1)}); r.status != 201 {
		t.Fatalf("second claim code: %d %s", r.status, r.body)
	}
	w.gw.Maintain(context.Background())
	if n, err := w.cfg.Store.PruneClaimCodes(context.Background(), later); err != nil || n != 0 {
		t.Fatalf("expired code left for the next prune: %d %v", n, err)
	}
}

// brokenNonces is a store whose nonce table cannot be written.
type brokenNonces struct{ store.Store }

var errDisk = errors.New("disk I/O error")

func (brokenNonces) UseNonce(context.Context, [32]byte, time.Time) error { return errDisk }

func (brokenNonces) UseNonceWithLog(context.Context, [32]byte, time.Time, ...store.LogEntry) ([]store.LogEntry, error) {
	return nil, errDisk
}

// TestNonceStoreDown: when a signed request's nonce cannot be recorded, the
// request is refused, never answered: a read (whose nonce is recorded with
// its log entry) and the owner's change feed (which is not logged, and
// records its nonce after the handler).
func TestNonceStoreDown(t *testing.T) {
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/fhir/Observation/o1", 500},
		{"/patient/changes", 503},
	} {
		t.Run(tt.path, func(t *testing.T) {
			w := newWorld(t, func(c *Config) { c.Store = brokenNonces{c.Store} })
			w.open()
			r := w.get(w.owner, tt.path)
			if r.status != tt.status || bytes.Contains(r.body, []byte(observationJS)) || bytes.Contains(r.body, []byte(`"changes"`)) {
				t.Fatalf("read with the nonce store down: %d %s", r.status, r.body)
			}
		})
	}
}

// TestReplayToAnotherProcess: two gateway processes on one database; a
// request read at the first and replayed at the second is refused there,
// not answered, and logged under the patient. The same for the owner's
// change feed, which records its nonce after the handler.
func TestReplayToAnotherProcess(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()
	other, err := New(w.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/fhir/Observation/o1", "/patient/changes"} {
		req := w.signed(w.owner, path, w.tag, 1)
		again := httptest.NewRequest("GET", path, nil)
		again.Header = req.Header.Clone()
		if r := w.do(req); r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		res, err := other.App().Test(again, -1)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 401 || !bytes.Contains(body, []byte("nonce already used")) || res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("ETag") != "" {
			t.Fatalf("%s replayed at the other process: %d %v %s", path, res.StatusCode, res.Header, body)
		}
		head, err := store.VerifyLog(ctx, w.cfg.Store)
		if err != nil {
			t.Fatal(err)
		}
		last, err := w.cfg.Store.LogRange(ctx, head.Next-1, 1)
		if err != nil || len(last) != 1 || last[0].Outcome != store.Denied || last[0].PatientID != "p1" || last[0].ActorKind != store.ActorPatient {
			t.Fatalf("%s: last log entry %+v %v", path, last, err)
		}
	}
}

// TestRelayRefreshesView: after the gateway relays a transaction, its next
// decision sees it, however long the sync interval — a patient who just
// connected is not refused as a stranger.
func TestRelayRefreshesView(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.SyncInterval = time.Hour })
	w.open()
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("read right after the open: %d %s", r.status, r.body)
	}
}
