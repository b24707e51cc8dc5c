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

func startDesk(t *testing.T, gateway string) string {
	a, err := New(Config{Gateway: gateway, Provider: "Provider 1"})
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
	base := startDesk(t, gw)
	clerk := newBrowser(t, base)
	if p := clerk.get("/"); p.status != 303 || p.location != "/login" {
		t.Fatalf("before signing in: %d %s", p.status, p.location)
	}
	clerk.get("/login")
	if p := clerk.post("/login", url.Values{"staff": {"ann"}, "password": {"wrong horse battery"}}); p.status != 200 || !strings.Contains(p.body, `id="error"`) || !strings.Contains(p.body, `value="ann"`) {
		t.Fatalf("a wrong password: %d %s", p.status, p.body)
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
	if p := clerk.post("/patients", url.Values{"id": {"pat-1"}}); p.status != 200 || !strings.Contains(p.body, "conflict") && !strings.Contains(p.body, "exists") && !strings.Contains(p.body, `id="error"`) {
		t.Fatalf("create twice: %d %s", p.status, p.body)
	}
	if p := clerk.post("/patient/enrol", url.Values{"patient": {"pat-1"}, "commitment": {cm}}); p.status != 303 {
		t.Fatalf("enrol: %d %s", p.status, p.body)
	}
	typo := []byte(deskCode.String())
	typo[0] = map[bool]byte{true: 'B', false: 'A'}[typo[0] == 'A']
	if p := clerk.post("/patient/claim-code", url.Values{"patient": {"pat-1"}, "deskcode": {string(typo)}}); p.status != 200 || !strings.Contains(p.body, "mistyped") || !strings.Contains(p.body, string(typo)) {
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
	if p := clerk.post("/patient/unmap", url.Values{"patient": {"pat-1"}, "reason": {"test"}}); !strings.Contains(p.body, "Not allowed") {
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
	if p := other.get("/find"); !strings.Contains(p.body, `id="error"`) {
		t.Fatalf("find without a criterion: %s", p.body)
	}
	other.get("/staff")
	if p := other.post("/staff", url.Values{"id": {"cy"}, "name": {"Cy Park"}, "role": {"clerk"}, "password": {"short"}}); !strings.Contains(p.body, `id="error"`) || !strings.Contains(p.body, `value="Cy Park"`) {
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
