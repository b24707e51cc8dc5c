package desk

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/wallet"
)

// browser is one person's browser at the desk page: a cookie jar, no
// redirects followed automatically (to check them).
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

type page struct {
	status   int
	location string
	body     string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	res, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if m := csrfRE.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return page{res.StatusCode, res.Header.Get("Location"), string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	if form.Get("csrf") == "" {
		form.Set("csrf", b.csrf)
	}
	req, _ := http.NewRequest("POST", b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDesk(t *testing.T, cfg Config) string {
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Listen(ctx, addr)
	for i := 0; i < 100; i++ {
		if res, err := http.Get("http://" + addr + "/login"); err == nil {
			res.Body.Close()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

// TestDeskPage: a clerk signs in, creates and enrols a patient, issues a
// claim code bound to the desk code the patient's app shows and prints it
// (a reload shows the same code; another session cannot see it); the
// patient connects with it. A mistyped desk code is caught at the desk, a
// clerk cannot undo a mapping, an admin imports a Synthea patient and adds
// staff; after logging out nothing is shown; other origins are refused.
func TestDeskPage(t *testing.T) {
	ctx := context.Background()
	n := testnet.New(t, 1)
	gw := n.Sites[0].URL
	admin, _ := NewClient(gw, testnet.StaffToken)
	if _, err := admin.AddStaff(ctx, NewStaff{ID: "ann", Name: "Ann Lee", Role: "clerk", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AddStaff(ctx, NewStaff{ID: "max", Name: "Max Roe", Role: "admin", Password: "staple battery horse"}); err != nil {
		t.Fatal(err)
	}
	base := startDesk(t, Config{Gateway: gw, Provider: "Provider 1"})
	clerk := newBrowser(t, base)
	if p := clerk.get("/"); p.status != 303 || p.location != "/login" {
		t.Fatalf("before signing in: %d %s", p.status, p.location)
	}
	clerk.get("/login")
	if p := clerk.post("/login", url.Values{"staff": {"ann"}, "password": {"wrong horse battery"}}); p.status != 401 || !strings.Contains(p.body, `id="error"`) || !strings.Contains(p.body, `value="ann"`) {
		t.Fatalf("a wrong password: %d %s", p.status, p.body)
	}
	if p := clerk.post("/login", url.Values{"staff": {"ann"}}); p.status != 400 || !strings.Contains(p.body, `id="error"`) || !strings.Contains(p.body, `value="ann"`) {
		t.Fatalf("no password: %d %s", p.status, p.body)
	}
	if p := clerk.post("/patients", url.Values{"id": {"x"}}); p.status != 303 || p.location != "/login" {
		t.Fatalf("a form before signing in: %d %s", p.status, p.location)
	}
	if p := clerk.post("/login", url.Values{"staff": {"ann"}, "password": {"correct horse battery"}}); p.status != 303 || p.location != "/" {
		t.Fatalf("sign in: %d %s", p.status, p.body)
	}
	if p := clerk.get("/"); p.status != 200 || !strings.Contains(p.body, "Ann Lee (clerk)") || strings.Contains(p.body, `href="/import"`) || !strings.Contains(p.body, `id="status"`) {
		t.Fatalf("home: %d %s", p.status, p.body)
	}

	keys, _ := delegate.FromMnemonic("test test test test test test test test test test test junk", "")
	w := wallet.New(keys, n.View(t), n.Chain.D, n.Prover)
	cm, _ := w.Commitment()
	deskCode, _ := w.DeskCode(1)

	if p := clerk.post("/patients", url.Values{"id": {"pat-1"}}); p.status != 303 || !strings.HasPrefix(p.location, "/patient?id=pat-1") {
		t.Fatalf("create: %d %s %s", p.status, p.location, p.body)
	}
	if p := clerk.post("/patients", url.Values{"id": {"pat-1"}}); p.status != 409 || !strings.Contains(p.body, `id="error"`) {
		t.Fatalf("create twice: %d %s", p.status, p.body)
	}
	if p := clerk.post("/patient/enrol", url.Values{"patient": {"pat-1"}, "commitment": {cm}}); p.status != 303 {
		t.Fatalf("enrol: %d %s", p.status, p.body)
	}
	typo := []byte(deskCode.String())
	typo[0] = map[bool]byte{true: 'B', false: 'A'}[typo[0] == 'A']
	if p := clerk.post("/patient/claim-code", url.Values{"patient": {"pat-1"}, "deskcode": {string(typo)}}); p.status != 400 || !strings.Contains(p.body, "mistyped") || !strings.Contains(p.body, string(typo)) {
		t.Fatalf("a mistyped desk code: %d %s", p.status, p.body)
	}
	p := clerk.post("/patient/claim-code", url.Values{"patient": {"pat-1"}, "deskcode": {strings.ToLower(deskCode.String())}})
	if p.status != 303 || !strings.HasPrefix(p.location, "/claim-code/") {
		t.Fatalf("issue: %d %s", p.status, p.body)
	}
	printPath := p.location
	p = clerk.get(printPath)
	code := regexp.MustCompile(`id="claim-code">([0-9a-f]{32})<`).FindStringSubmatch(p.body)
	if p.status != 200 || code == nil || !strings.Contains(p.body, "data:image/png;base64,") || !strings.Contains(p.body, deskCode.String()) {
		t.Fatalf("the printable claim code: %d %s", p.status, p.body)
	}
	if again := clerk.get(printPath); !strings.Contains(again.body, code[1]) {
		t.Fatal("a reload shows another code")
	}
	other := newBrowser(t, base)
	other.get("/login")
	other.post("/login", url.Values{"staff": {"max"}, "password": {"staple battery horse"}})
	if p := other.get(printPath); p.status != 404 {
		t.Fatalf("another session's claim code: %d %s", p.status, p.body)
	}
	if err := w.Connect(ctx, 1, code[1]); err != nil {
		t.Fatalf("the patient connects with the printed code: %v", err)
	}
	if p := clerk.get("/patient?id=pat-1"); !strings.Contains(p.body, "<strong>open</strong>") || strings.Contains(p.body, `id="unmap"`) {
		t.Fatalf("the patient after the claim: %s", p.body)
	}
	if p := clerk.post("/patient/unmap", url.Values{"patient": {"pat-1"}, "reason": {"test"}}); p.status != 403 || !strings.Contains(p.body, "Not allowed") {
		t.Fatalf("the clerk undoes a mapping: %d %s", p.status, p.body)
	}

	// The admin: import a patient's Bundle (a transaction, as Synthea
	// writes them), add a clerk.
	raw, err := os.ReadFile(filepath.Join("testdata", "import-bundle.json"))
	if err != nil {
		t.Fatal(err)
	}
	other.get("/import")
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("csrf", other.csrf)
	fw, _ := mw.CreateFormFile("bundle", "ned.json")
	fw.Write(raw)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/import", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if p := other.do(req); p.status != 303 || !strings.Contains(p.location, "imported") {
		t.Fatalf("import: %d %s %s", p.status, p.location, p.body)
	}
	if p := other.get("/find?name=hintz"); !strings.Contains(p.body, "Ned") || !strings.Contains(p.body, "1 found") {
		t.Fatalf("find: %s", p.body)
	}
	if p := other.get("/find"); p.status != 400 || !strings.Contains(p.body, `id="error"`) {
		t.Fatalf("find without a criterion: %s", p.body)
	}
	other.get("/staff")
	if p := other.post("/staff", url.Values{"id": {"cy"}, "name": {"Cy Park"}, "role": {"clerk"}, "password": {"short"}}); p.status != 400 || !strings.Contains(p.body, `id="error"`) || !strings.Contains(p.body, `value="Cy Park"`) {
		t.Fatalf("a short password: %d %s", p.status, p.body)
	}
	if p := other.post("/staff", url.Values{"id": {"cy"}, "name": {"Cy Park"}, "role": {"clerk"}, "password": {"long enough password"}}); p.status != 303 {
		t.Fatalf("add staff: %d %s", p.status, p.body)
	}
	if p := other.get("/staff"); !strings.Contains(p.body, "Cy Park") {
		t.Fatalf("the staff list: %s", p.body)
	}

	// Another origin cannot drive it; after logging out nothing is shown.
	req, _ = http.NewRequest("POST", base+"/patients", strings.NewReader(url.Values{"id": {"evil"}, "csrf": {clerk.csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	if p := clerk.do(req); p.status != 403 {
		t.Fatalf("a cross-origin post: %d", p.status)
	}
	if p := clerk.post("/patients", url.Values{"id": {"evil"}, "csrf": {"0000"}}); p.status != 403 {
		t.Fatalf("a post without the form token: %d", p.status)
	}
	if p := clerk.post("/logout", url.Values{}); p.status != 303 {
		t.Fatalf("logout: %d %s", p.status, p.body)
	}
	if p := clerk.get("/patient?id=pat-1"); p.status != 303 || p.location != "/login" {
		t.Fatalf("after logout: %d %s", p.status, p.location)
	}
	if p := clerk.get(printPath); p.status != 303 {
		t.Fatalf("the printable page after logout: %d", p.status)
	}
}

// ndFile is one file of a bulk upload.
type ndFile struct{ name, body string }

// upload posts the bulk import form as a browser sends it: the form token
// (if csrf is not "") first, then the files.
func (b *browser) upload(csrf string, files ...ndFile) page {
	return b.uploadAs(false, csrf, files...)
}

// uploadAs is upload, chunked (no Content-Length) if chunked.
func (b *browser) uploadAs(chunked bool, csrf string, files ...ndFile) page {
	b.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if csrf != "" {
		mw.WriteField("csrf", csrf)
	}
	for _, f := range files {
		fw, _ := mw.CreateFormFile("file", f.name)
		io.WriteString(fw, f.body)
	}
	mw.Close()
	req, _ := http.NewRequest("POST", b.base+"/import/ndjson", &body)
	if chunked {
		req, _ = http.NewRequest("POST", b.base+"/import/ndjson", io.MultiReader(&body))
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}

// bulkExport is the gateway's NDJSON test set (3 patients, 5 files, 188
// lines), edited by edit (file name → its text) first.
func bulkExport(t *testing.T, edit func(map[string]string)) []ndFile {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join("..", "dbmanager", "testdata", "ndjson", "*.ndjson"))
	text := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text[filepath.Base(p)] = string(b)
	}
	if len(text) != 5 || filepath.Base(paths[1]) != "Observation.ndjson" {
		t.Fatalf("the NDJSON test set: %d files", len(text))
	}
	if edit != nil {
		edit(text)
	}
	var files []ndFile
	for _, p := range paths {
		files = append(files, ndFile{filepath.Base(p), text[filepath.Base(p)]})
	}
	return files
}

// cell is the text of the report's cell id.
func cell(body, id string) string {
	m := regexp.MustCompile(`id="` + id + `">([^<]*)<`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestDeskBulkImport: an admin uploads a bulk NDJSON export on the import
// page and sees what went in; the patients are in the gateway's store; the
// same upload again leaves them unchanged; a bad line refuses its patient
// (file, line, reason) and the others go in; bad input is refused with a
// message and a failing status, nothing stored; an upload over the desk's
// limit is refused; a clerk sees no form and is refused; a post without the
// form token (or with it after the files) is refused.
func TestDeskBulkImport(t *testing.T) {
	ctx := context.Background()
	n := testnet.New(t, 1)
	gw := n.Sites[0].URL
	admin, _ := NewClient(gw, testnet.StaffToken)
	for _, s := range []NewStaff{{ID: "ann", Name: "Ann Lee", Role: "clerk", Password: "correct horse battery"}, {ID: "max", Name: "Max Roe", Role: "admin", Password: "staple battery horse"}} {
		if _, err := admin.AddStaff(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	base := startDesk(t, Config{Gateway: gw, Provider: "Provider 1"})
	small := startDesk(t, Config{Gateway: gw, Provider: "Provider 1", BulkLimit: 4 << 10})
	signIn := func(base, staff, password string) *browser {
		b := newBrowser(t, base)
		b.get("/login")
		if p := b.post("/login", url.Values{"staff": {staff}, "password": {password}}); p.status != 303 {
			t.Fatalf("sign in %s: %d %s", staff, p.status, p.body)
		}
		return b
	}
	max, ann, maxSmall := signIn(base, "max", "staple battery horse"), signIn(base, "ann", "correct horse battery"), signIn(small, "max", "staple battery horse")
	if p := max.get("/import"); p.status != 200 || !strings.Contains(p.body, `id="ndjson" name="file" type="file" multiple accept=".ndjson,.jsonl,application/fhir+ndjson"`) {
		t.Fatalf("the admin's import page: %d %s", p.status, p.body)
	}
	if p := ann.get("/import"); p.status != 200 || strings.Contains(p.body, `action="/import/ndjson"`) {
		t.Fatalf("the clerk's import page shows the bulk form: %d %s", p.status, p.body)
	}

	export := bulkExport(t, nil)
	badLine := bulkExport(t, func(f map[string]string) {
		f["Observation.ndjson"] = strings.Replace(f["Observation.ndjson"], `"id":"nd-o2-5","status":"final"`, `"id":"nd-o2-5","status":"done"`, 1)
		f["Patient.ndjson"] += `{"resourceType":"Patient","id":"nd-p3","name":[{"family":"Hintz","given":["Ned"]}]}` + "\n"
	})
	const csrf = "(the page's)"
	for _, tc := range []struct {
		name    string
		b       *browser
		csrf    string // csrf: the page's form token
		chunked bool   // no Content-Length: the desk counts as it streams
		files   []ndFile
		status  int
		want    []string          // in the page
		cells   map[string]string // the report's counts
		missing string            // a patient the gateway must not hold after
	}{{
		name: "an export", b: max, csrf: csrf, files: export, status: 200,
		cells: map[string]string{"bulk-files": "5", "bulk-lines": "188", "bulk-patients": "3", "bulk-created": "188", "bulk-updated": "0", "bulk-unchanged": "0"},
	}, {
		name: "the same again", b: max, csrf: csrf, files: export, status: 200,
		cells: map[string]string{"bulk-patients": "3", "bulk-created": "0", "bulk-updated": "0", "bulk-unchanged": "188"},
	}, {
		name: "a bad line", b: max, csrf: csrf, files: badLine, status: 200,
		want:  []string{`id="error"`, "1 refused", "Imported in part", `<td>Observation.ndjson</td><td>126</td><td>nd-p2</td><td>`, "Observation.status"},
		cells: map[string]string{"bulk-files": "5", "bulk-lines": "189", "bulk-patients": "3", "bulk-created": "1", "bulk-unchanged": "126"},
	}, {
		name: "every patient refused", b: max, csrf: csrf, files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p9","gender":"robot"}` + "\n"}}, status: 422,
		want: []string{`id="error"`, "nothing imported, 1 refused", "nd-p9"}, missing: "nd-p9",
	}, {
		name: "no file", b: max, csrf: csrf, files: []ndFile{{"", ""}}, status: 400,
		want: []string{`id="error"`, "Choose one or more NDJSON files"},
	}, {
		name: "an empty file", b: max, csrf: csrf, files: []ndFile{{"Patient.ndjson", ""}}, status: 400,
		want: []string{`id="error"`, "Nothing was imported", "no resources in Patient.ndjson"},
	}, {
		name: "not NDJSON", b: max, csrf: csrf, files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}, {"notes.ndjson", "Dear colleague,\nplease import these.\n"}}, status: 400,
		want: []string{`id="error"`, "Nothing was imported", "notes.ndjson line 1"}, missing: "nd-p8",
	}, {
		name: "a line that is not a FHIR resource", b: max, csrf: csrf, files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n" + `{"name":"Ned","born":1970}` + "\n"}}, status: 400,
		want: []string{`id="error"`, "Nothing was imported", "Patient.ndjson line 2"}, missing: "nd-p8",
	}, {
		name: "over the desk's limit", b: maxSmall, csrf: csrf, files: append([]ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}}, export[1]), status: 413,
		want: []string{`id="error"`, "larger than this desk takes (4096 bytes)"}, missing: "nd-p8",
	}, {
		name: "over the desk's limit, chunked", b: maxSmall, csrf: csrf, chunked: true, files: append([]ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}}, export[1]), status: 413,
		want: []string{`id="error"`, "Nothing was imported", "larger than this desk takes (4096 bytes at most in one upload"}, missing: "nd-p8",
	}, {
		name: "a clerk", b: ann, csrf: csrf, files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}}, status: 403,
		want: []string{"only an admin"}, missing: "nd-p8",
	}, {
		name: "no form token", b: max, files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}}, status: 403,
		want: []string{"the form is stale"}, missing: "nd-p8",
	}, {
		name: "a wrong form token", b: max, csrf: "0000", files: []ndFile{{"Patient.ndjson", `{"resourceType":"Patient","id":"nd-p8"}` + "\n"}}, status: 403,
		want: []string{"the form is stale"}, missing: "nd-p8",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.b.t = t
			tc.b.get("/import")
			if tc.csrf == csrf {
				tc.csrf = tc.b.csrf
			}
			p := tc.b.uploadAs(tc.chunked, tc.csrf, tc.files...)
			if p.status != tc.status {
				t.Fatalf("status %d, want %d: %s", p.status, tc.status, p.body)
			}
			for _, w := range tc.want {
				if !strings.Contains(p.body, w) {
					t.Errorf("the page lacks %q", w)
				}
			}
			for id, w := range tc.cells {
				if got := cell(p.body, id); got != w {
					t.Errorf("%s: %q, want %q", id, got, w)
				}
			}
			if tc.missing != "" {
				if _, err := admin.Patient(ctx, tc.missing); Status(err) != 404 {
					t.Errorf("patient %s after the refused upload: %v", tc.missing, err)
				}
			}
			if t.Failed() {
				t.Logf("the page: %s", p.body)
			}
		})
	}

	// What went in is in the gateway's store: the bad line's patient as
	// the first upload left it, the new one too.
	for id, records := range map[string]int{"nd-p1": 62, "nd-p2": 0, "nd-p3": 1} {
		p, err := admin.Patient(ctx, id)
		if err != nil || records > 0 && p.Records != records || p.Records == 0 {
			t.Errorf("patient %s: %d records, %v", id, p.Records, err)
		}
	}
	if p := max.get("/find?name=kreiger"); !strings.Contains(p.body, "nd-p1") {
		t.Fatalf("find an imported patient: %s", p.body)
	}

	// The form token after the files is no form token.
	max.get("/import")
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("file", "Patient.ndjson")
	io.WriteString(fw, `{"resourceType":"Patient","id":"nd-p8"}`+"\n")
	mw.WriteField("csrf", max.csrf)
	mw.Close()
	req, _ := http.NewRequest("POST", base+"/import/ndjson", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if p := max.do(req); p.status != 403 {
		t.Fatalf("the form token last: %d %s", p.status, p.body)
	}
	if _, err := admin.Patient(ctx, "nd-p8"); Status(err) != 404 {
		t.Fatalf("nd-p8 after the refused uploads: %v", err)
	}
}
