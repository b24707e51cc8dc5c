package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/desk"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/wallet"
)

// TestDesk: a provider's admin adds a clerk from the command line; the
// clerk logs in, creates and enrols a patient and issues a claim code bound
// to the desk code the patient's app shows; the patient connects with it.
// The clerk cannot do an admin's job; a mistyped desk code never leaves the
// terminal; logout ends the session.
func TestDesk(t *testing.T) {
	n := testnet.New(t, 1)
	gw := n.Sites[0].URL
	adminToken := writeFile(t, testnet.StaffToken+"\n")
	pw := writeFile(t, "correct horse battery\n")
	home := t.TempDir()
	desk := func(stdin string, args ...string) result {
		t.Helper()
		return medrecAt(t, home, stdin, append([]string{"desk", "--gateway", gw}, args...)...)
	}

	r := desk("", "--token-file", adminToken, "staff", "add", "--id", "ann", "--name", "Ann Lee", "--role", "clerk", "--password-file", pw, "--token")
	if r.code != 0 || !strings.Contains(r.stdout, "API token (shown once") {
		t.Fatalf("staff add: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := desk("", "--token-file", adminToken, "staff", "list"); r.code != 0 || !strings.Contains(r.stdout, "ann") || !strings.Contains(r.stdout, "clerk") {
		t.Fatalf("staff list: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := desk("", "whoami"); r.code != 2 || !strings.Contains(r.stderr, "desk login") {
		t.Fatalf("whoami before login: exit %d: %s", r.code, r.stderr)
	}
	if r := desk("wrong horse battery", "login", "--staff", "ann", "--password-file", "-"); r.code != 1 || !strings.Contains(r.stderr, "wrong staff id or password") {
		t.Fatalf("a wrong password: exit %d: %s", r.code, r.stderr)
	}
	if r := desk("", "login", "--staff", "ann", "--password-file", pw); r.code != 0 || !strings.Contains(r.stdout, "Logged in as Ann Lee (clerk)") {
		t.Fatalf("login: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	session := filepath.Join(home, ".medrec")
	if entries, _ := os.ReadDir(session); len(entries) != 1 {
		t.Fatalf("the session file: %v", entries)
	} else if st, _ := os.Stat(filepath.Join(session, entries[0].Name())); st.Mode().Perm() != 0o600 {
		t.Fatalf("the session file's mode: %v", st.Mode())
	}
	if r := desk("", "--json", "whoami"); r.code != 0 || !strings.Contains(r.stdout, `"role": "clerk"`) {
		t.Fatalf("whoami: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}

	// The patient's app: an enrolment code, and a desk code for provider 1.
	keys, err := delegate.FromMnemonic(testJunk, "")
	if err != nil {
		t.Fatal(err)
	}
	w := wallet.New(keys, n.View(t), n.Chain.D, n.Prover)
	cm, _ := w.Commitment()
	deskCode, _ := w.DeskCode(1)

	if r := desk("", "patient", "create", "pat-1"); r.code != 0 {
		t.Fatalf("patient create: exit %d: %s", r.code, r.stderr)
	}
	if r := desk("", "enrol", "pat-1", cm); r.code != 0 || !strings.Contains(r.stdout, "Enrolled in block") {
		t.Fatalf("enrol: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	typo := []byte(deskCode.String())
	typo[0] = map[bool]byte{true: 'B', false: 'A'}[typo[0] == 'A']
	if r := desk("", "claim-code", "pat-1", string(typo)); r.code != 2 || !strings.Contains(r.stderr, "mistyped") {
		t.Fatalf("a mistyped desk code: exit %d: %s", r.code, r.stderr)
	}
	r = desk("", "claim-code", "pat-1", strings.ToLower(deskCode.String()))
	if r.code != 0 || !strings.Contains(r.stdout, "bound to desk code "+deskCode.String()) || !strings.Contains(r.stdout, "█") {
		t.Fatalf("claim-code: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	code := regexp.MustCompile(`(?m)^\s+([0-9a-f]{32})$`).FindStringSubmatch(r.stdout)
	if code == nil {
		t.Fatalf("no claim code in %s", r.stdout)
	}
	if err := w.Connect(context.Background(), 1, code[1]); err != nil {
		t.Fatalf("the patient connects with the printed code: %v", err)
	}
	r = desk("", "--json", "patient", "show", "pat-1")
	var shown struct {
		Relationship struct{ State, DeskCode string }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &shown) != nil || shown.Relationship.State != "open" || shown.Relationship.DeskCode != deskCode.String() {
		t.Fatalf("patient show: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}

	if r := desk("", "find", "--name", "nobody here"); r.code != 0 || !strings.Contains(r.stdout, "0 found") {
		t.Fatalf("find: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := desk("", "find"); r.code != 1 || !strings.Contains(r.stderr, "give a name") {
		t.Fatalf("find without a criterion: exit %d: %s", r.code, r.stderr)
	}

	// An admin's job, and logging out.
	if r := desk("", "unmap", "--reason", "test", "pat-1"); r.code != 1 || !strings.Contains(r.stderr, "needs an admin") {
		t.Fatalf("the clerk unmaps: exit %d: %s", r.code, r.stderr)
	}
	if r := desk("", "logout"); r.code != 0 {
		t.Fatalf("logout: exit %d: %s", r.code, r.stderr)
	}
	if r := desk("", "whoami"); r.code != 2 {
		t.Fatalf("whoami after logout: exit %d: %s", r.code, r.stderr)
	}
	if r := medrec(t, "", "desk", "whoami"); r.code != 2 || !strings.Contains(r.stderr, "--gateway") {
		t.Fatalf("no gateway: exit %d: %s", r.code, r.stderr)
	}
}

// TestDeskImportNDJSON: an admin imports a bulk NDJSON export (a folder of
// per-type files) in one command, with progress on stderr (plain lines: not
// a terminal); running it again changes nothing; a bad line refuses its
// patient, named with file and line, and the command fails.
func TestDeskImportNDJSON(t *testing.T) {
	n := testnet.New(t, 1)
	gw := n.Sites[0].URL
	adminToken := writeFile(t, testnet.StaffToken+"\n")
	home := t.TempDir()
	desk := func(args ...string) result {
		t.Helper()
		return medrecAt(t, home, "", append([]string{"desk", "--gateway", gw, "--token-file", adminToken}, args...)...)
	}
	src, _ := filepath.Glob("../../dbmanager/testdata/ndjson/*.ndjson")
	dir := t.TempDir()
	for _, f := range src {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := desk("import-ndjson", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "Imported 3 patients from 5 files (188 lines): 188 resources, 188 created, 0 updated, 0 unchanged (2 shared).") {
		t.Fatalf("import-ndjson: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "import: 100% sent, 188 resources") || !strings.Contains(r.stderr, "the gateway is writing the patients") || strings.Contains(r.stderr, "\r") {
		t.Fatalf("progress: %q", r.stderr)
	}
	if r := desk("import-ndjson", filepath.Join(dir, "Patient.ndjson"), filepath.Join(dir, "Observation.ndjson"), filepath.Join(dir, "Encounter.ndjson"), filepath.Join(dir, "Practitioner.ndjson"), filepath.Join(dir, "Organization.ndjson")); r.code != 0 || !strings.Contains(r.stdout, "188 unchanged") {
		t.Fatalf("again: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	obs, _ := os.ReadFile(filepath.Join(dir, "Observation.ndjson"))
	bad := strings.Replace(string(obs), `"id":"nd-o2-5","status":"final"`, `"id":"nd-o2-5","status":"done"`, 1)
	if err := os.WriteFile(filepath.Join(dir, "Observation.ndjson"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	r = desk("import-ndjson", dir)
	if r.code != 1 || !strings.Contains(r.stdout, "Observation.ndjson line 126: patient nd-p2 refused") || !strings.Contains(r.stderr, "1 refused") {
		t.Fatalf("a bad line: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

// TestDeskUploadBar: on a terminal the upload is a bar redrawn in place;
// elsewhere a plain line every 10 %.
func TestDeskUploadBar(t *testing.T) {
	clock := time.Unix(0, 0)
	now := func() time.Time { return clock }
	steps := func(b *uploadBar) {
		for sent := int64(0); sent <= 1000; sent += 50 {
			clock = clock.Add(time.Second)
			b.update(desk.BulkProgress{File: "Observation.ndjson", Sent: sent, Total: 1000, Lines: int(sent / 10)})
		}
		b.update(desk.BulkProgress{Sent: 1000, Total: 1000, Lines: 100, Done: true})
	}
	var tty, plain strings.Builder
	steps(newUploadBar(&tty, true, now))
	steps(newUploadBar(&plain, false, now))
	if !strings.Contains(tty.String(), "\r\033[K[###############...............]  50%  50 resources  5/s  Observation.ndjson") ||
		!strings.HasSuffix(tty.String(), "\r\033[Ksent 100 resources in 21s (5 resources/s); the gateway is writing the patients…\n") {
		t.Fatalf("terminal: %q", tty.String())
	}
	lines := strings.Split(strings.TrimSuffix(plain.String(), "\n"), "\n")
	if len(lines) != 11 || lines[4] != "import: 50% sent, 50 resources, 5 resources/s (Observation.ndjson)" || strings.Contains(plain.String(), "\r") {
		t.Fatalf("plain: %d lines %q", len(lines), plain.String())
	}
}
