package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/wallet"
	"github.com/medrec-zk/medrec/zkhash"
)

const (
	testPassword = "patient-password"
	doctorWords  = "legal winner thank year wave sausage worth useful legal winner thank yellow"
)

// do sends a request and returns the final page, status and path (after
// redirects); it never fails on a status.
func (ta testApp) do(t *testing.T, method, path string, form url.Values) (string, int, string) {
	t.Helper()
	var req *http.Request
	if form != nil {
		form.Set("csrf", ta.csrf)
		req, _ = http.NewRequest(method, ta.url+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, _ = http.NewRequest(method, ta.url+path, nil)
	}
	res, err := ta.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return string(body), res.StatusCode, res.Request.URL.RequestURI()
}

// patientApp is a signed-in patient connected at every provider of n, with
// three Observations at each.
func patientApp(t *testing.T, n *testnet.Net, keystore string) testApp {
	t.Helper()
	ta := newTestApp(t, n, keystore)
	if body := ta.page(t, "POST", "/restore", url.Values{"words": {"test test test test test test test test test test test junk"},
		"password": {testPassword}, "password2": {testPassword}}); !strings.Contains(body, "Your enrolment code") {
		t.Fatalf("restore: %.300s", body)
	}
	n.SeedConnected(t, ta.wallet(), 3)
	return ta
}

var formKey = regexp.MustCompile(`name="key" value="([0-9a-f]+)"`)

// awaitOp reloads an op's page until it is done and returns it.
func (ta testApp) awaitOp(t *testing.T, path string) string {
	t.Helper()
	for i := 0; i < 600; i++ {
		body := ta.page(t, "GET", path, nil)
		if strings.Contains(body, `id="op-done"`) || strings.Contains(body, `id="op-failed"`) {
			if strings.Contains(body, `http-equiv="refresh"`) {
				t.Fatal("a finished op's page still refreshes itself")
			}
			return body
		}
		if !strings.Contains(body, `http-equiv="refresh"`) {
			t.Fatalf("a running op's page does not refresh itself: %.500s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never finished", path)
	return ""
}

// TestShareOnceNamed walks sharing over HTTP: the form, errors shown inline
// with what was typed kept, the review that says what the chain will see,
// a double submit and a reload that make one grant, the name on the
// sharing page, home and the access log, and revoking with confirmation.
func TestShareOnceNamed(t *testing.T) {
	ctx := context.Background()
	n := testnet.New(t, 2)
	ta := patientApp(t, n, filepath.Join(t.TempDir(), "keystore.json"))
	w := ta.wallet()
	doctorKeys, err := delegate.FromMnemonic(doctorWords, "")
	if err != nil {
		t.Fatal(err)
	}
	cv, _ := doctorKeys.ViewerCommitment(0)
	cvHex := zkhash.Hex(cv)

	form := ta.page(t, "GET", "/share", nil)
	key := formKey.FindStringSubmatch(form)
	if key == nil {
		t.Fatal("the share form carries no key")
	}
	for _, want := range []string{`id="share-name"`, `id="preset-labs"`, `id="expiry-7"`, "Observations", "(6 of yours)"} {
		if !strings.Contains(form, want) {
			t.Fatalf("the share form lacks %q", want)
		}
	}

	// Mistakes: shown next to their fields, what was typed kept, nothing sent.
	bad := url.Values{"key": {key[1]}, "name": {""}, "to": {"0x1234"}, "provider": {"1"}, "preset": {"labs"}, "purpose": {"treatment"}, "expiry": {"7"}}
	body, status, _ := ta.do(t, "POST", "/share/review", bad)
	if status != http.StatusBadRequest || !strings.Contains(body, `id="problem-name"`) || !strings.Contains(body, `id="problem-to"`) || !strings.Contains(body, `value="0x1234"`) {
		t.Fatalf("bad form: %d %.2000s", status, body)
	}

	share := url.Values{"key": {key[1]}, "name": {"Dr Lee, cardiology"}, "to": {cvHex}, "provider": {"1", "2"}, "preset": {"labs"}, "purpose": {"treatment"}, "expiry": {"7"}}
	review := ta.page(t, "POST", "/share/review", share)
	for _, want := range []string{"What the chain will see", "anonymous relationship at <strong>Provider 1</strong>", "anonymous relationship at <strong>Provider 2</strong>", "test reports, observations, specimens", "not</strong> show your name", "Dr Lee, cardiology"} {
		if !strings.Contains(review, want) {
			t.Fatalf("the review lacks %q:\n%s", want, review)
		}
	}
	if w.View().Nonce(mustTag(t, w.Keys(), 1)) != 0 {
		t.Fatal("the review granted")
	}

	// A double submit: both land on one operation.
	var wg sync.WaitGroup
	paths := make([]string, 2)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, paths[i] = ta.do(t, "POST", "/share", url.Values(cloneValues(share)))
		}()
	}
	wg.Wait()
	if paths[0] != paths[1] || !strings.HasPrefix(paths[0], "/op/") {
		t.Fatalf("a double submit went to %v", paths)
	}
	done := ta.awaitOp(t, paths[0])
	for _, want := range []string{`id="op-done"`, "in force", "in block", "Dr Lee, cardiology can now read your test reports, observations, specimens at Provider 1 and Provider 2", `id="bundle"`} {
		if !strings.Contains(done, want) {
			t.Fatalf("the outcome lacks %q:\n%s", want, done)
		}
	}
	// A reload of the outcome, and the same form once more: nothing new.
	ta.page(t, "GET", paths[0], nil)
	if _, _, again := ta.do(t, "POST", "/share", cloneValues(share)); again != paths[0] {
		t.Fatalf("the form sent again went to %s", again)
	}
	for p := uint32(1); p <= 2; p++ {
		if err := w.View().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got := w.View().Nonce(mustTag(t, w.Keys(), p)); got != 1 {
			t.Fatalf("provider %d: %d writes for one share", p, got)
		}
	}

	// The name everywhere the grantee appears.
	sharing := ta.page(t, "GET", "/share", nil)
	if strings.Count(section(sharing, `id="grants"`), "Dr Lee, cardiology") != 2 {
		t.Fatalf("the sharing table does not name both grants:\n%s", section(sharing, `id="grants"`))
	}
	if home := ta.page(t, "GET", "/home", nil); !strings.Contains(section(home, `id="home-grants"`), "Dr Lee, cardiology") {
		t.Fatal("home does not name the grantee")
	}
	// The doctor reads with the share text: the log names them.
	doctor := wallet.New(doctorKeys, n.View(t), n.Chain.D, n.Prover)
	bundles, err := wallet.ParseShareBundles(between(done, `readonly>`, `</textarea>`))
	if err != nil || len(bundles) != 2 {
		t.Fatalf("share texts: %v (%d)", err, len(bundles))
	}
	if recs, err := doctor.ReadShared(ctx, bundles[0]); err != nil || len(recs) != 3 {
		t.Fatalf("the doctor reads %d records: %v", len(recs), err)
	}
	logPage := ta.page(t, "GET", "/log", nil)
	row := rowWith(section(logPage, `id="log"`), "Dr Lee, cardiology")
	for _, want := range []string{"3 observations: heart rate", "treatment", "allowed", "just now", "Provider 1"} {
		if !strings.Contains(row, want) {
			t.Fatalf("the doctor's read in the log lacks %q: %s", want, row)
		}
	}
	if !strings.Contains(logPage, `<strong class="who">you</strong>`) {
		t.Fatal("the patient's own reads are not shown as you")
	}

	// Revoke: a confirmation that says what happens, then done once.
	link := regexp.MustCompile(`href="(/revoke\?[^"]+)"`).FindStringSubmatch(sharing)
	if link == nil {
		t.Fatal("no Stop sharing link")
	}
	confirm := ta.page(t, "GET", strings.ReplaceAll(link[1], "&amp;", "&"), nil)
	if !strings.Contains(confirm, "Stop sharing with Dr Lee, cardiology?") || !strings.Contains(confirm, "refuses them from the moment the chain records it") {
		t.Fatalf("the revoke confirmation:\n%s", confirm)
	}
	if w.View().Nonce(mustTag(t, w.Keys(), 1))+w.View().Nonce(mustTag(t, w.Keys(), 2)) != 2 {
		t.Fatal("the confirmation page revoked")
	}
	rk := formKey.FindStringSubmatch(confirm)
	rv := url.Values{"key": {rk[1]}}
	for _, f := range []string{"provider", "kind", "grantee"} {
		m := regexp.MustCompile(`name="` + f + `" value="([^"]+)"`).FindStringSubmatch(confirm)
		rv.Set(f, m[1])
	}
	_, _, op := ta.do(t, "POST", "/revoke", rv)
	if out := ta.awaitOp(t, op); !strings.Contains(out, "Dr Lee, cardiology can no longer read your records at Provider") {
		t.Fatalf("revoked: %s", out)
	}
	if s := ta.page(t, "GET", "/share", nil); strings.Count(s, `class="status">revoked`) != 1 {
		t.Fatalf("after revoking:\n%s", section(s, `id="grants"`))
	}
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// between returns the text between the first from and the next to.
func between(s, from, to string) string {
	i := strings.Index(s, from)
	if i < 0 {
		return ""
	}
	s = s[i+len(from):]
	if j := strings.Index(s, to); j >= 0 {
		return s[:j]
	}
	return s
}

// rowWith returns the first table row that contains text.
func rowWith(page, text string) string {
	i := strings.Index(page, text)
	if i < 0 {
		return ""
	}
	start := strings.LastIndex(page[:i], "<tr")
	end := strings.Index(page[i:], "</tr>")
	if start < 0 || end < 0 {
		return ""
	}
	return page[start : i+end]
}

// TestLockAndRestart: every page with health data says no-store; Lock ends
// the session (the pages send the browser to unlock, and back to where it
// was once unlocked); a blank or wrong password is a plain message; after a
// restart (a new app on the same keystore) the new-record badges are as
// they were, and once the records are seen they stay seen.
func TestLockAndRestart(t *testing.T) {
	n := testnet.New(t, 1)
	keystore := filepath.Join(t.TempDir(), "keystore.json")
	ta := patientApp(t, n, keystore)
	for _, path := range []string{"/home", "/records", "/share", "/log", "/viewer", "/connect?provider=1", "/rotate?provider=1", "/records?type=Observation"} {
		res, err := ta.hc.Get(ta.url + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: %d, Cache-Control %q", path, res.StatusCode, res.Header.Get("Cache-Control"))
		}
	}
	// Records seen; then two more arrive.
	n.Staff(t, 1, "POST", "/admin/patients/pat/resources", testnet.ObservationBundle("pat", "late", 2))
	if home := ta.page(t, "GET", "/home", nil); !strings.Contains(home, `id="badge-1" href="/records?provider=1">2 new`) {
		t.Fatalf("no badge for 2 new records:\n%s", section(home, `id="providers"`))
	}

	body, _, path := ta.do(t, "POST", "/lock", url.Values{})
	if path != "/?locked=1" || !strings.Contains(body, "Locked.") {
		t.Fatalf("lock: %s %.300s", path, body)
	}
	if ta.wallet() != nil {
		t.Fatal("the wallet is still open after Lock")
	}
	body, _, path = ta.do(t, "GET", "/log?page=1", nil)
	if !strings.HasPrefix(path, "/?next=") || strings.Contains(body, "Who saw your records") {
		t.Fatalf("a locked app shows %s: %.300s", path, body)
	}
	if body, status, _ := ta.do(t, "POST", "/unlock", url.Values{"password": {""}, "next": {"/log?page=1"}}); status != 400 || !strings.Contains(body, "Type your password") || !strings.Contains(body, `id="unlock-password"`) {
		t.Fatalf("blank password: %d %.500s", status, body)
	}
	if body, status, _ := ta.do(t, "POST", "/unlock", url.Values{"password": {"wrong-password"}}); status != 400 || !strings.Contains(body, "not the one for this computer") {
		t.Fatalf("wrong password: %d %.300s", status, body)
	}
	if _, _, path := ta.do(t, "POST", "/unlock", url.Values{"password": {testPassword}, "next": {"/log?page=1"}}); path != "/log?page=1" {
		t.Fatalf("unlock went to %s, not back to the page", path)
	}
	if _, _, path := ta.do(t, "POST", "/unlock", url.Values{"password": {testPassword}, "next": {"//evil.example/"}}); path != "/home" {
		t.Fatalf("unlock followed a foreign next to %s", path)
	}

	// A restart: a new app, the same keystore and device store.
	restarted := newTestApp(t, n, keystore)
	ta.page(t, "POST", "/lock", url.Values{})
	restarted.page(t, "POST", "/unlock", url.Values{"password": {testPassword}})
	if home := restarted.page(t, "GET", "/home", nil); !strings.Contains(home, `2 new`) {
		t.Fatalf("the badge changed across a restart:\n%s", section(home, `id="providers"`))
	}
	restarted.page(t, "GET", "/records", nil)
	if home := restarted.page(t, "GET", "/home", nil); strings.Contains(home, " new</a>") {
		t.Fatal("seen records still have a badge")
	}
	again := newTestApp(t, n, keystore)
	restarted.page(t, "POST", "/lock", url.Values{})
	again.page(t, "POST", "/unlock", url.Values{"password": {testPassword}})
	if home := again.page(t, "GET", "/home", nil); strings.Contains(home, " new</a>") {
		t.Fatal("a badge came back after a restart")
	}
}

// TestWordsNotInternals: what a person can get wrong is answered in words,
// without the program's internals, and never strands them.
func TestWordsNotInternals(t *testing.T) {
	n := testnet.New(t, 1)
	keystore := filepath.Join(t.TempDir(), "keystore.json")
	ta := patientApp(t, n, keystore)
	ta.page(t, "POST", "/lock", url.Values{})
	internals := []string{"mnemonic", "answered", "illegal base64", keystore, "wallet:", "BIP39", "keystore"}
	for _, c := range []struct {
		name, path string
		form       url.Values
		want       string
	}{
		{"a restore over existing keys", "/restore", url.Values{"words": {"test test test test test test test test test test test junk"}, "password": {"abcdefgh"}, "password2": {"abcdefgh"}}, "already has keys"},
		{"an unknown word", "/restore", url.Values{"words": {"test test test test test test test test test test test junkk"}, "password": {"abcdefgh"}, "password2": {"abcdefgh"}}, "is not one of the words"},
		{"too few words", "/restore", url.Values{"words": {"test test"}, "password": {"abcdefgh"}, "password2": {"abcdefgh"}}, "12 words"},
		{"words out of order", "/restore", url.Values{"words": {"junk test test test test test test test test test test test"}, "password": {"abcdefgh"}, "password2": {"abcdefgh"}}, "do not fit together"},
		{"a blank password", "/unlock", url.Values{"password": {""}}, "Type your password"},
	} {
		body, status, _ := ta.do(t, "POST", c.path, c.form)
		if status != 400 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d, lacks %q: %.400s", c.name, status, c.want, between(body, `<main id="main">`, "</main>"))
		}
		// The way back to unlocking stays.
		if !strings.Contains(body, `id="unlock-password"`) {
			t.Errorf("%s: the page lost the unlock form", c.name)
		}
		main := between(body, `<main id="main">`, "</main>")
		for _, bad := range internals {
			if strings.Contains(strings.ToLower(main), strings.ToLower(bad)) {
				t.Errorf("%s: the page says %q: %s", c.name, bad, main)
			}
		}
	}
	ta.page(t, "POST", "/unlock", url.Values{"password": {testPassword}})
	body, status, _ := ta.do(t, "POST", "/viewer/read", url.Values{"bundle": {"medrec-share:not!base64"}})
	defer func() {
		// Creating keys shows the words on a page a reload shows again, the
		// same words (post/redirect/get).
		fresh := newTestApp(t, n, filepath.Join(t.TempDir(), "fresh.json"))
		first, _, path := fresh.do(t, "POST", "/create", url.Values{})
		again := fresh.page(t, "GET", path, nil)
		if path != "/create/words" || between(first, `id="words">`, "</ol>") == "" || between(first, `id="words">`, "</ol>") != between(again, `id="words">`, "</ol>") {
			t.Fatalf("create: at %s, words %q then %q", path, between(first, `id="words">`, "</ol>"), between(again, `id="words">`, "</ol>"))
		}
	}()
	if status != 400 || !strings.Contains(body, "cut short or damaged") || strings.Contains(body, "illegal") {
		t.Fatalf("a damaged share text: %d %s", status, between(body, `<main id="main">`, "</main>"))
	}
}

// TestViewerMode: the doctor's view lists every share received — address
// grants from the chain, share texts saved on the device the first time
// they are pasted — with provider, records, purpose and expiry; one no
// longer in force has no way to read it, and reading it anyway is refused;
// the view has no patient form.
func TestViewerMode(t *testing.T) {
	ctx := context.Background()
	n := testnet.New(t, 1)
	patient := patientApp(t, n, filepath.Join(t.TempDir(), "patient.json"))
	w := patient.wallet()
	doctor := newTestApp(t, n, filepath.Join(t.TempDir(), "doctor.json"))
	doctor.page(t, "POST", "/restore", url.Values{"words": {doctorWords}, "password": {"doctor-password"}, "password2": {"doctor-password"}})
	dkeys, _ := delegate.FromMnemonic(doctorWords, "")
	acct, _ := dkeys.Wallet()
	cv, _ := dkeys.ViewerCommitment(0)
	obs, _ := access.NewScope("Observation")
	if err := w.ShareWithAddress(ctx, 1, acct.Address, obs, access.Family, time.Now().Add(72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	b, err := w.ShareAnonymous(ctx, 1, cv, obs, access.Emergency, time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	view := doctor.page(t, "GET", "/viewer", nil)
	if !strings.Contains(view, "Doctor's view") || strings.Contains(view, `action="/share`) || strings.Contains(view, `href="/share"`) {
		t.Fatalf("the doctor's view:\n%s", view)
	}
	if row := rowWith(view, "to your address"); !strings.Contains(row, "Observations") || !strings.Contains(row, "family or carer") || !strings.Contains(row, "active") || !strings.Contains(row, "/viewer/read/a-1-") {
		t.Fatalf("the address grant: %s", row)
	}
	// Pasted once, read at once, listed from then on.
	body, _, path := doctor.do(t, "POST", "/viewer/read", url.Values{"bundle": {b.Encode()}})
	if !strings.HasPrefix(path, "/viewer/read/b-") || strings.Count(body, `class="rec rec-Observation"`) != 3 || !strings.Contains(body, "emergency care") {
		t.Fatalf("read with the share text (%s): %.800s", path, between(body, `<main id="main">`, "</main>"))
	}
	view = doctor.page(t, "GET", "/viewer", nil)
	if strings.Count(view, `class="read"`) != 2 {
		t.Fatalf("the saved share is not listed:\n%s", section(view, `id="received"`))
	}
	// The patient revokes the anonymous share: no Read, and reading is refused.
	g, _ := b.GrantID(cv)
	if err := w.Revoke(ctx, 1, access.AnonymousGrantee, g); err != nil {
		t.Fatal(err)
	}
	view = doctor.page(t, "GET", "/viewer", nil)
	if strings.Count(view, `class="read"`) != 1 || !strings.Contains(section(view, `id="received"`), "revoked") {
		t.Fatalf("after the revocation:\n%s", section(view, `id="received"`))
	}
	if body, status, _ := doctor.do(t, "GET", path, nil); status != 400 || !strings.Contains(body, "can no longer be read") {
		t.Fatalf("reading a revoked share: %d %.300s", status, body)
	}
	// The patient's log shows the emergency read, standing out.
	logPage := patient.page(t, "GET", "/log", nil)
	if em := between(logPage, `id="emergency"`, "</section>"); !strings.Contains(em, "emergency care 1 time") || !strings.Contains(em, "unnamed anonymous viewer") {
		t.Fatalf("the emergency read does not stand out: %s", em)
	}
}
