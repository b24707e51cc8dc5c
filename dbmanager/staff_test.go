package dbmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// jsonRaw is a body sent as it is.
func jsonRaw(s string) json.RawMessage { return json.RawMessage(s) }

// as sends a staff request with token.
func (w *world) as(token, method, path string, body any) resp {
	w.t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if body != nil {
		b, _ := json.Marshal(body)
		req = httptest.NewRequest(method, path, bytes.NewReader(b))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	return w.do(req)
}

// TestStaffAccounts: the provider's admin (a configured token) adds a
// clerk; the clerk logs in with a password or uses an API token, does the
// desk's work, and is refused — and logged — when doing an admin's job;
// disabling the account ends its token and sessions.
func TestStaffAccounts(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	for _, bad := range []struct {
		name   string
		body   string
		status int
	}{
		{"short password", `{"id":"ann","name":"Ann Lee","role":"clerk","password":"short"}`, 400},
		{"unknown role", `{"id":"ann","name":"Ann Lee","role":"root","token":true}`, 400},
		{"neither password nor token", `{"id":"ann","name":"Ann Lee","role":"clerk"}`, 400},
		{"bad id", `{"id":"a b","name":"Ann Lee","role":"clerk","token":true}`, 400},
		{"no name", `{"id":"ann","role":"clerk","token":true}`, 400},
		{"unknown field", `{"id":"ann","name":"Ann Lee","role":"clerk","token":true,"admin":true}`, 400},
	} {
		if r := w.staff("POST", "/admin/staff", jsonRaw(bad.body)); r.status != bad.status {
			t.Fatalf("%s: %d %s", bad.name, r.status, r.body)
		}
	}
	r := w.staff("POST", "/admin/staff", map[string]any{"id": "ann", "name": "Ann Lee", "role": "clerk", "password": "correct horse battery", "token": true})
	if r.status != 201 {
		t.Fatalf("add a clerk: %d %s", r.status, r.body)
	}
	annToken := r.json(t)["token"].(string)
	if r := w.staff("POST", "/admin/staff", map[string]any{"id": "ann", "name": "Ann Again", "role": "admin", "token": true}); r.status != 409 {
		t.Fatalf("the same id again: %d %s", r.status, r.body)
	}
	if r := w.staff("GET", "/admin/staff", nil); r.status != 200 || bytes.Contains(r.body, []byte("argon2")) || !bytes.Contains(r.body, []byte(`"role":"clerk"`)) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}

	// A password login opens a session.
	if r := w.post("/admin/login", map[string]string{"staff": "ann", "password": "wrong horse battery"}); r.status != 401 {
		t.Fatalf("a wrong password: %d %s", r.status, r.body)
	}
	if r := w.post("/admin/login", map[string]string{"staff": "nobody", "password": "correct horse battery"}); r.status != 401 {
		t.Fatalf("an unknown account: %d %s", r.status, r.body)
	}
	r = w.post("/admin/login", map[string]string{"staff": "ann", "password": "correct horse battery"})
	if r.status != 200 || r.json(t)["role"] != "clerk" {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	session := r.json(t)["token"].(string)
	if r := w.as(session, "GET", "/admin/me", nil); r.status != 200 || r.json(t)["staff"] != "ann" {
		t.Fatalf("me: %d %s", r.status, r.body)
	}

	// The clerk's work, logged under the clerk.
	head, _ := w.cfg.Store.LogHead(ctx)
	if r := w.as(annToken, "POST", "/admin/patients", map[string]string{"id": "p1"}); r.status != 201 {
		t.Fatalf("the clerk creates a patient: %d %s", r.status, r.body)
	}
	log, _ := w.cfg.Store.LogRange(ctx, head.Next, 10)
	if len(log) != 1 || log[0].Action != "create-patient" || log[0].ActorID != "ann" || log[0].PatientID != "p1" {
		t.Fatalf("the creation in the log: %+v", log)
	}
	// An admin's job: refused, logged, nothing done.
	for _, job := range []struct{ path, body string }{
		{"/admin/patients/p1/unmap", `{"reason":"x"}`},
		{"/admin/patients/p1/resources", observationJS},
		{"/admin/import", `{"resourceType":"Bundle","type":"collection","entry":[]}`},
		{"/admin/staff", `{"id":"eve","name":"Eve","role":"admin","token":true}`},
		{"/admin/staff/ann", `{"role":"admin"}`},
	} {
		head, _ := w.cfg.Store.LogHead(ctx)
		r := w.as(session, "POST", job.path, jsonRaw(job.body))
		if r.status != 403 || !bytes.Contains(r.body, []byte("needs an admin")) {
			t.Fatalf("the clerk at %s: %d %s", job.path, r.status, r.body)
		}
		if log, _ := w.cfg.Store.LogRange(ctx, head.Next, 10); len(log) != 1 || log[0].Outcome != store.Denied || log[0].ActorID != "ann" {
			t.Fatalf("the refusal at %s in the log: %+v", job.path, log)
		}
	}
	if a, _ := w.cfg.Store.StaffAccount(ctx, "ann"); a.Role != store.RoleClerk {
		t.Fatalf("the clerk promoted itself: %+v", a)
	}
	if _, err := w.cfg.Store.StaffAccount(ctx, "eve"); err == nil {
		t.Fatal("the clerk added an account")
	}

	// An admin may not disable or demote itself; disabling the clerk ends
	// her token and session.
	if r := w.staff("POST", "/admin/staff/desk-1", map[string]any{"disabled": true}); r.status != 409 {
		t.Fatalf("an admin disabling itself: %d %s", r.status, r.body)
	}
	if r := w.staff("POST", "/admin/staff/ann", map[string]any{"disabled": true}); r.status != 200 {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	for _, tok := range []string{annToken, session} {
		if r := w.as(tok, "GET", "/admin/me", nil); r.status != 401 {
			t.Fatalf("a disabled account's credentials: %d %s", r.status, r.body)
		}
	}
	if r := w.post("/admin/login", map[string]string{"staff": "ann", "password": "correct horse battery"}); r.status != 401 {
		t.Fatalf("a disabled account's login: %d %s", r.status, r.body)
	}
	// Enabled again with a new token; logout ends a session.
	r = w.staff("POST", "/admin/staff/ann", map[string]any{"disabled": false, "newToken": true})
	if r.status != 200 {
		t.Fatalf("enable: %d %s", r.status, r.body)
	}
	if r := w.as(r.json(t)["token"].(string), "GET", "/admin/me", nil); r.status != 200 {
		t.Fatalf("the new token: %d %s", r.status, r.body)
	}
	if r := w.as(annToken, "GET", "/admin/me", nil); r.status != 401 {
		t.Fatalf("the replaced token: %d %s", r.status, r.body)
	}
	session = w.post("/admin/login", map[string]string{"staff": "ann", "password": "correct horse battery"}).json(t)["token"].(string)
	if r := w.as(session, "POST", "/admin/logout", nil); r.status != 200 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := w.as(session, "GET", "/admin/me", nil); r.status != 401 {
		t.Fatalf("after logout: %d %s", r.status, r.body)
	}
}

// TestLoginLockout: ten failed logins of one account within 15 minutes
// refuse its next logins, the right password included; other accounts are
// not affected.
func TestLoginLockout(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.RateLimit = 1 << 30 })
	for _, id := range []string{"ann", "bob"} {
		if r := w.staff("POST", "/admin/staff", map[string]any{"id": id, "name": id, "role": "clerk", "password": "correct horse battery"}); r.status != 201 {
			t.Fatalf("add: %d %s", r.status, r.body)
		}
	}
	for range maxFailures {
		if r := w.post("/admin/login", map[string]string{"staff": "ann", "password": "guess"}); r.status != 401 {
			t.Fatalf("a guess: %d %s", r.status, r.body)
		}
	}
	if r := w.post("/admin/login", map[string]string{"staff": "ann", "password": "correct horse battery"}); r.status != 429 {
		t.Fatalf("the right password after ten guesses: %d %s", r.status, r.body)
	}
	if r := w.post("/admin/login", map[string]string{"staff": "bob", "password": "correct horse battery"}); r.status != 200 {
		t.Fatalf("another account: %d %s", r.status, r.body)
	}
}

// TestPasswordHash: argon2id, salted (two hashes of one password differ),
// checked in full; a malformed or foreign encoding matches nothing.
func TestPasswordHash(t *testing.T) {
	a, err := hashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := hashPassword("correct horse battery")
	if a == b || !strings.HasPrefix(a, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hashes %q %q", a, b)
	}
	if !checkPassword(a, "correct horse battery") || checkPassword(a, "correct horse batterY") || checkPassword(a, "") {
		t.Fatal("check")
	}
	for _, bad := range []string{"", "plain", strings.Replace(a, "argon2id", "argon2i", 1), strings.Replace(a, "m=19456", "m=0", 1), a[:len(a)-4], strings.Replace(a, "v=19", "v=16", 1)} {
		if checkPassword(bad, "correct horse battery") {
			t.Fatalf("%q matched", bad)
		}
	}
}

// TestDeskReads: what the desk sees of a patient (the relationship's state,
// the desk code, how many records, anchored or not — never a record) and of
// the gateway (its log and anchors); a clerk may read them, nobody else.
func TestDeskReads(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p0"}); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := w.staff("GET", "/admin/patients/p0", nil); r.status != 200 || !bytes.Contains(r.body, []byte(`"state":"not claimed"`)) {
		t.Fatalf("an unclaimed patient: %d %s", r.status, r.body)
	}
	w.open()
	r := w.staff("POST", "/admin/staff", map[string]any{"id": "ann", "name": "Ann", "role": "clerk", "token": true})
	clerk := r.json(t)["token"].(string)
	r = w.as(clerk, "GET", "/admin/patients/p1", nil)
	if r.status != 200 {
		t.Fatalf("p1: %d %s", r.status, r.body)
	}
	var p struct {
		Records      int
		Anchored     bool
		Relationship struct {
			State, Owner, DeskCode   string
			Rotations, GrantsInForce int
		}
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Records != 3 || p.Anchored || p.Relationship.State != "open" || p.Relationship.Owner != simchain.Addr(w.owner).Hex() || p.Relationship.DeskCode != deskCode(t, w.keys, 1) {
		t.Fatalf("p1 at the desk: %s", r.body)
	}
	if bytes.Contains(r.body, []byte("Heart rate")) || bytes.Contains(r.body, []byte("Hoeger")) {
		t.Fatalf("the desk read shows a record: %s", r.body)
	}
	if r := w.as(clerk, "GET", "/admin/patients/nobody", nil); r.status != 404 {
		t.Fatalf("an unknown patient: %d %s", r.status, r.body)
	}
	if r := w.get(w.owner, "/admin/patients/p1"); r.status != 401 {
		t.Fatalf("the patient's delegate at the desk: %d %s", r.status, r.body)
	}
	r = w.as(clerk, "GET", "/admin/status", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"batch":null`)) {
		t.Fatalf("status before anchoring: %d %s", r.status, r.body)
	}
	if _, err := w.gw.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	r = w.as(clerk, "GET", "/admin/status", nil)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"batch":0`)) || !bytes.Contains(r.body, []byte(`"published":true`)) {
		t.Fatalf("status after anchoring: %d %s", r.status, r.body)
	}
	if r := w.as(clerk, "GET", "/admin/patients/p1", nil); !bytes.Contains(r.body, []byte(`"anchored":true`)) {
		t.Fatalf("p1 after anchoring: %s", r.body)
	}
}

// TestFindPatients: the desk finds patients by a part of a name, a birth
// date and a record number (all given must hold), and logs each patient it
// found under that patient; without a criterion it asks for one.
func TestFindPatients(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, func(c *Config) { c.BodyLimit = 4 << 20 })
	for _, f := range []string{"Buster_Hoeger_ad2e3fc5-2b5d-4cb9-8d03-9ea0f4ac8423.json", "Ned_Hintz_e4b9259d-0f54-48d1-a35d-b526729a4dfe.json"} {
		raw := syntheatest.Read(t, filepath.Join(syntheatest.Dir(t), f))
		req := httptest.NewRequest("POST", "/admin/import", bytes.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		if r := w.do(req); r.status != 201 {
			t.Fatalf("import %s: %d %s", f, r.status, r.body)
		}
	}
	find := func(q string) []string {
		t.Helper()
		r := w.staff("GET", "/admin/patients?"+q, nil)
		if r.status != 200 {
			t.Fatalf("find %s: %d %s", q, r.status, r.body)
		}
		var out struct{ Patients []struct{ ID string } }
		json.Unmarshal(r.body, &out)
		var ids []string
		for _, p := range out.Patients {
			ids = append(ids, p.ID)
		}
		return ids
	}
	buster := "e4531916-b162-4f4b-90c2-ce37e132b8d4"
	for _, tc := range []struct {
		q    string
		want int
	}{
		{"name=hoeg", 1}, {"name=BUSTER", 1}, {"birthdate=1988-03-16", 1}, {"birthdate=1988", 1},
		{"identifier=S99935998", 1}, {"name=hoeger&birthdate=1988", 1}, {"name=hoeger&birthdate=1990", 0},
		{"identifier=S9993599", 0}, {"name=zz", 0},
	} {
		got := find(tc.q)
		if len(got) != tc.want || tc.want == 1 && got[0] != buster {
			t.Fatalf("find %s: %v", tc.q, got)
		}
	}
	for _, bad := range []string{"", "name=x", "birthdate=16-03-1988", "identifier=" + strings.Repeat("9", 65)} {
		if r := w.staff("GET", "/admin/patients?"+bad, nil); r.status != 400 {
			t.Fatalf("find %q: %d %s", bad, r.status, r.body)
		}
	}
	log, _ := w.cfg.Store.PatientLog(ctx, buster, 0, 100)
	var finds int
	for _, e := range log {
		if e.Action == "find" && e.ActorID == "desk-1" {
			finds++
		}
	}
	if finds != 6 {
		t.Fatalf("Buster's log holds %d desk searches that found him, want 6", finds)
	}
}
