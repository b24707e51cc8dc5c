package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/wallet"
)

// SMART App Launch approved in the patient's own app: the gateway sends the
// browser here, the patient approves, the browser takes the signed approval
// back to the gateway, and the app gets its code. The tests play the
// patient's browser with net/http and a cookie jar (no script runs in these
// pages: a meta refresh moves the browser on, which the tests follow).

func freeLoopback(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// smartNet is one provider whose gateway sends apps' requests to the
// patient's app at clientAddr, with app registered, and that patient
// signed in and connected (three Observations and a Patient).
func smartNet(t *testing.T, app dbmanager.SMARTApp) (*testnet.Net, testApp) {
	t.Helper()
	clientAddr := freeLoopback(t)
	n := testnet.NewWith(t, 1, func(c *dbmanager.Config) {
		c.SMARTApps = []dbmanager.SMARTApp{app}
		c.PatientApp = "http://" + clientAddr
	})
	ta := newTestAppAt(t, n, filepath.Join(t.TempDir(), "keystore.json"), clientAddr)
	if body := ta.page(t, "POST", "/restore", url.Values{"words": {"test test test test test test test test test test test junk"},
		"password": {testPassword}, "password2": {testPassword}}); !strings.Contains(body, "Your enrolment code") {
		t.Fatalf("restore: %.300s", body)
	}
	n.SeedConnected(t, ta.wallet(), 3)
	n.Staff(t, 1, "POST", "/admin/patients/pat/resources", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+
		`{"resourceType":"Patient","id":"pat","name":[{"family":"Doe","given":["Alex"]}],"gender":"other","birthDate":"1970-01-01"}}]}`)
	return n, ta
}

var (
	metaRefresh = regexp.MustCompile(`http-equiv="refresh" content="0;url=([^"]*)"`)
	hiddenReq   = regexp.MustCompile(`name="request" value="([^"]*)"`)
	firstShare  = regexp.MustCompile(`name="share" value="([^"]*)" checked`)
)

// visit is where a browsed launch ended: the last answer, and the review
// page the patient saw on the way.
type visit struct {
	status   int
	location string
	url      *url.URL
	body     string
	review   string
}

// browse follows a launch in the patient's browser from start: redirects,
// the patient app's meta refreshes, and its review page, answered with
// decision ("approve" or "deny"). hc's redirect policy says where to stop.
func browse(t *testing.T, ta testApp, hc *http.Client, start, decision string) visit {
	t.Helper()
	var v visit
	req, _ := http.NewRequest("GET", start, nil)
	for step := 0; step < 12; step++ {
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("browsing %s: %v", req.URL, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		v = visit{status: res.StatusCode, location: res.Header.Get("Location"), url: res.Request.URL, body: string(b), review: v.review}
		switch m := metaRefresh.FindStringSubmatch(v.body); {
		case res.Request.URL.Path == "/smart/review" && strings.HasPrefix(res.Request.URL.String(), ta.url):
			v.review = v.body
			rm := hiddenReq.FindStringSubmatch(v.body)
			if rm == nil {
				t.Fatalf("the review page has no form: %.500s", v.body)
			}
			form := url.Values{"csrf": {ta.csrf}, "request": {html.UnescapeString(rm[1])}, "decision": {decision}}
			if sm := firstShare.FindStringSubmatch(v.body); sm != nil {
				form.Set("share", html.UnescapeString(sm[1])) // a viewer's: the share offered first
			}
			req, _ = http.NewRequest("POST", ta.url+"/smart/answer", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		case m != nil:
			next, err := res.Request.URL.Parse(html.UnescapeString(m[1]))
			if err != nil {
				t.Fatal(err)
			}
			req, _ = http.NewRequest("GET", next.String(), nil)
		default:
			return v
		}
	}
	t.Fatalf("the launch did not end: %.300s", v.body)
	return v
}

// TestAppApprovedInClient: an app (played by the test) launches at the
// gateway; the patient's own app shows its request and approves it; the
// code buys a token that reads the patient's Observations, each read in
// the patient's access log under the app's name. A refusal in the patient's
// app reaches the app as access_denied.
func TestAppApprovedInClient(t *testing.T) {
	const redirect = "https://app.example/cb"
	n, ta := smartNet(t, dbmanager.SMARTApp{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{redirect}})
	gw := n.Sites[0].URL
	hc := &http.Client{Jar: ta.hc.Jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "app.example" {
			return http.ErrUseLastResponse // the app's own page: not here
		}
		return nil
	}}
	launch := func(decision string) (visit, string, string) {
		verifier := strings.Repeat("v", 20) + decision + strings.Repeat("x", 30)
		h := sha256.Sum256([]byte(verifier))
		q := url.Values{"response_type": {"code"}, "client_id": {"chart"}, "redirect_uri": {redirect}, "state": {"s-" + decision},
			"scope": {"launch/patient patient/Observation.rs"}, "aud": {gw + "/fhir"},
			"code_challenge": {base64.RawURLEncoding.EncodeToString(h[:])}, "code_challenge_method": {"S256"}}
		return browse(t, ta, hc, gw+"/smart/authorize?"+q.Encode(), decision), verifier, "s-" + decision
	}

	v, verifier, state := launch("approve")
	if !strings.Contains(v.review, "Chart App") || !strings.Contains(v.review, "Observation") || !strings.Contains(v.review, "Provider 1") {
		t.Fatalf("the review page does not say who wants what where: %.1500s", v.review)
	}
	// A forged link: the app's name and anything but the provider and the
	// nonce are not read from it; an unknown nonce shows nothing.
	forged := ta.url + "/smart/review?provider=1&request=0x" + strings.Repeat("ab", 32) + "&app=Your+Hospital"
	if body, status, _ := ta.do(t, "GET", strings.TrimPrefix(forged, ta.url), nil); status != 400 || strings.Contains(body, "Your Hospital") || !strings.Contains(body, "does not know this app request") {
		t.Fatalf("a forged link: %d %.600s", status, body)
	}
	back, err := url.Parse(v.location)
	if err != nil || v.status != http.StatusSeeOther || !strings.HasPrefix(v.location, redirect+"?") || back.Query().Get("state") != state || back.Query().Get("code") == "" {
		t.Fatalf("the launch ended at %d %s %.300s", v.status, v.location, v.body)
	}
	res, err := http.PostForm(gw+"/smart/token", url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {"chart"}, "code_verifier": {verifier}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		Patient     string
		Scope       string
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); res.StatusCode != 200 || err != nil || tok.Patient != "pat" || tok.Scope != "launch/patient patient/Observation.rs" {
		t.Fatalf("token: %d %+v %v", res.StatusCode, tok, err)
	}
	res.Body.Close()
	req, _ := http.NewRequest("GET", gw+"/fhir/Observation?patient=pat", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct{ Total int }
	if err := json.NewDecoder(res.Body).Decode(&bundle); res.StatusCode != 200 || err != nil || bundle.Total != 3 {
		t.Fatalf("search with the token: %d %+v %v", res.StatusCode, bundle, err)
	}
	res.Body.Close()
	if log := ta.page(t, "GET", "/log", nil); !strings.Contains(log, "app chart") {
		t.Fatalf("the access log page does not name the app: %.2000s", log)
	}

	v, _, state = launch("deny")
	back, _ = url.Parse(v.location)
	if v.status != http.StatusSeeOther || back.Query().Get("error") != "access_denied" || back.Query().Get("state") != state {
		t.Fatalf("a refusal ended at %d %s", v.status, v.location)
	}
}

// needFHIRClient skips without node or SMART's fhirclient package, unless
// MEDREC_REQUIRE_FHIRCLIENT=1 (make test-go) makes that a failure.
func needFHIRClient(t *testing.T) (node, dir string) {
	t.Helper()
	dir = filepath.Join("..", "dbmanager", "testdata", "fhirclient")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "fhirclient", "package.json"))
	}
	if err != nil {
		if os.Getenv("MEDREC_REQUIRE_FHIRCLIENT") == "1" {
			t.Fatalf("SMART's fhirclient is not installed (make test installs it: cd dbmanager/testdata/fhirclient && npm ci): %v", err)
		}
		t.Skipf("SMART's fhirclient is not installed (cd dbmanager/testdata/fhirclient && npm ci): %v", err)
	}
	return node, dir
}

// fhirclientApp runs smart-app.cjs: SMART's fhirclient in a Node app at
// appAddr, launching at the gateway gw as clientID with scope. It stops
// with the test.
func fhirclientApp(t *testing.T, gw, appAddr, clientID, scope string) *bytes.Buffer {
	t.Helper()
	node, dir := needFHIRClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "smart-app.cjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MEDREC_FHIR_BASE="+gw+"/fhir", "MEDREC_APP_ADDR="+appAddr, "MEDREC_APP_CLIENT_ID="+clientID,
		"MEDREC_APP_SCOPE="+scope)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 64)
		_, err := stdout.Read(b)
		if err == nil && !bytes.HasPrefix(b, []byte("listening")) {
			err = errors.New(string(b))
		}
		ready <- err
		io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("the app did not start: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the app did not start in 30 s\n%s", stderr.String())
	}
	return &stderr
}

// fhirclientRun is what smart-app.cjs read after its launch.
type fhirclientRun struct {
	Error, Patient, Scope, TokenType, PatientResource, Read string
	Refresh                                                 bool
	Pages                                                   []struct {
		Total int
		Refs  []string
	}
	Everything   []string
	OutsideScope int
	Export       struct {
		KickOff int
		Files   map[string]int
	}
}

// launchFHIRClient plays the browser of ta's user through the app's launch
// (approving it in ta) and returns what the app read, and the review page.
func launchFHIRClient(t *testing.T, ta testApp, appAddr string, stderr *bytes.Buffer) (fhirclientRun, string) {
	t.Helper()
	hc := &http.Client{Jar: ta.hc.Jar, Timeout: time.Minute}
	v := browse(t, ta, hc, "http://"+appAddr+"/launch", "approve")
	var got fhirclientRun
	if err := json.Unmarshal([]byte(v.body), &got); err != nil || v.status != 200 || got.Error != "" {
		t.Fatalf("the app answered %d %q (%v)\n%s", v.status, v.body, err, stderr.String())
	}
	var paged []string
	for _, p := range got.Pages {
		if p.Total != 3 || len(p.Refs) != 1 {
			t.Fatalf("pages: %+v", got.Pages)
		}
		paged = append(paged, p.Refs...)
	}
	if strings.Join(paged, " ") != "Observation/p1-obs0 Observation/p1-obs1 Observation/p1-obs2" {
		t.Fatalf("the search read %v", paged)
	}
	if got.Read != "Observation/p1-obs0" || got.OutsideScope != 403 || got.Export.KickOff != 202 || got.Export.Files["Observation"] != 3 {
		t.Fatalf("read %q, outside the scope %d, export %+v", got.Read, got.OutsideScope, got.Export)
	}
	return got, v.review
}

// TestFHIRClientLaunch: SMART's own fhirclient (npm, pinned, unmodified),
// in a small Node app on loopback, completes a standalone launch with PKCE
// approved in the patient's app, then reads the patient, searches page by
// page, reads $everything and a resource by id, exports in bulk (kick-off,
// status, NDJSON files), and is refused a type outside its scope.
func TestFHIRClientLaunch(t *testing.T) {
	needFHIRClient(t)
	appAddr := freeLoopback(t)
	n, ta := smartNet(t, dbmanager.SMARTApp{ClientID: "fhirclient-app", Name: "fhirclient test app", RedirectURIs: []string{"http://" + appAddr + "/app"}})
	stderr := fhirclientApp(t, n.Sites[0].URL, appAddr, "fhirclient-app", "launch/patient patient/Patient.r patient/Observation.rs")
	got, review := launchFHIRClient(t, ta, appAddr, stderr)
	if !strings.Contains(review, "fhirclient test app") || !strings.Contains(review, "Observation, Patient") {
		t.Fatalf("the review page: %.1500s", review)
	}
	if got.Patient != "pat" || got.PatientResource != "Patient/pat" || got.TokenType != "Bearer" || got.Refresh ||
		got.Scope != "launch/patient patient/Observation.rs patient/Patient.r" {
		t.Fatalf("the app's launch: %+v", got)
	}
	if strings.Join(got.Everything, " ") != "Observation/p1-obs0 Observation/p1-obs1 Observation/p1-obs2 Patient/pat" {
		t.Fatalf("$everything: %v", got.Everything)
	}
	if got.Export.Files["Patient"] != 1 || len(got.Export.Files) != 2 {
		t.Fatalf("export: %+v", got.Export)
	}
}

// TestFHIRClientLaunchByViewer: the same unmodified fhirclient app,
// launched by a doctor who holds an anonymous share of the patient's
// Observations: the doctor approves in the doctor's own MedRec app with an
// Entitlement proof (no key of the patient's reaches it), and the app
// reads, searches, reads $everything and exports what the share covers —
// and nothing else (the Patient resource, Conditions). The patient's log
// names the app.
func TestFHIRClientLaunchByViewer(t *testing.T) {
	needFHIRClient(t)
	appAddr := freeLoopback(t)
	doctorAddr := freeLoopback(t)
	n := testnet.NewWith(t, 1, func(c *dbmanager.Config) {
		c.SMARTApps = []dbmanager.SMARTApp{{ClientID: "fhirclient-app", Name: "fhirclient test app", RedirectURIs: []string{"http://" + appAddr + "/app"}}}
		c.PatientApp = "http://" + doctorAddr
	})
	patient := patientApp(t, n, filepath.Join(t.TempDir(), "patient.json"))
	n.Staff(t, 1, "POST", "/admin/patients/pat/resources", `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+
		`{"resourceType":"Patient","id":"pat","name":[{"family":"Doe","given":["Alex"]}],"gender":"other","birthDate":"1970-01-01"}}]}`)
	doctor := doctorWithShare(t, n, patient, doctorAddr)

	stderr := fhirclientApp(t, n.Sites[0].URL, appAddr, "fhirclient-app", "launch/patient patient/*.rs")
	got, review := launchFHIRClient(t, doctor, appAddr, stderr)
	if !strings.Contains(review, "fhirclient test app") || !strings.Contains(review, "As the viewer of a share") {
		t.Fatalf("the doctor's review page: %.2000s", review)
	}
	if got.Scope != "launch/patient patient/Observation.rs" || got.PatientResource != "" || got.Refresh || got.TokenType != "Bearer" {
		t.Fatalf("the app's launch: %+v", got)
	}
	if strings.Join(got.Everything, " ") != "Observation/p1-obs0 Observation/p1-obs1 Observation/p1-obs2" {
		t.Fatalf("$everything beyond the share: %v", got.Everything)
	}
	if len(got.Export.Files) != 1 {
		t.Fatalf("export beyond the share: %+v", got.Export)
	}
	if log := patient.page(t, "GET", "/log", nil); !strings.Contains(log, "app fhirclient-app") {
		t.Fatalf("the patient's log does not name the app: %.2000s", log)
	}
}

// chromiumTab is one tab of a headless Chromium that ends with the test.
type chromiumTab struct {
	t   *testing.T
	ctx context.Context
}

// headlessChromium starts Chromium (MEDREC_CHROMIUM, or /usr/bin/chromium);
// without one the test is skipped, or fails under MEDREC_REQUIRE_CHROMIUM=1.
func headlessChromium(t *testing.T) chromiumTab {
	t.Helper()
	chromium := os.Getenv("MEDREC_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("MEDREC_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("no Chromium at %s but MEDREC_REQUIRE_CHROMIUM=1", chromium)
		}
		t.Skipf("no Chromium at %s", chromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-sync", true))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browser, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	return chromiumTab{t, browser}
}

// page is the tab's address and text, for a failure's message.
func (b chromiumTab) page() string {
	c, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, _ := chromedp.Run(c, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
	return v
}

// run does actions in the tab within a minute, or fails the test.
func (b chromiumTab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	c, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		b.t.Fatalf("%s: %v; the page shows:\n%s", what, err, b.page())
	}
}

// TestAppApprovedInChromium: the same approval in a real browser, where
// the gateway (reached as localhost) and the patient's app (127.0.0.1) are
// different sites: the landing page is a cross-site navigation (Sec-Fetch-
// Site: cross-site, no SameSite=Strict cookie), the patient unlocks their
// app, approves on its review page under its content security policy, and
// the browser ends at the app's redirect URI with a code.
func TestAppApprovedInChromium(t *testing.T) {
	browser := headlessChromium(t)
	codes := make(chan url.Values, 1)
	appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case codes <- r.URL.Query():
		default:
		}
		io.WriteString(w, "<!doctype html><title>app</title><p id=app>back in the app</p>")
	}))
	defer appSrv.Close()
	redirect := appSrv.URL + "/cb"
	n, ta := smartNet(t, dbmanager.SMARTApp{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{redirect}})
	gw := strings.Replace(n.Sites[0].URL, "127.0.0.1", "localhost", 1)
	ta.page(t, "POST", "/lock", url.Values{}) // the browser below unlocks it itself

	verifier := strings.Repeat("chromium-verifier-", 4)
	h := sha256.Sum256([]byte(verifier))
	start := gw + "/smart/authorize?" + url.Values{"response_type": {"code"}, "client_id": {"chart"}, "redirect_uri": {redirect},
		"state": {"st-chromium"}, "scope": {"launch/patient patient/Observation.rs"}, "aud": {gw + "/fhir"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(h[:])}, "code_challenge_method": {"S256"}}.Encode()

	page, run := browser.page, browser.run
	run("launch", chromedp.Navigate(start), chromedp.WaitVisible(chromedp.CSS("#unlock-password")))
	run("unlock", chromedp.SendKeys(chromedp.CSS("#unlock-password"), testPassword), chromedp.Click(chromedp.CSS("#unlock")),
		chromedp.WaitVisible(chromedp.CSS("#smart-approve")))
	// The gateway was reached as localhost; the patient's app asked it at
	// the URL on the chain, and answers there.
	if p := page(); !strings.Contains(p, "Chart App (app id chart) wants to read Observation at Provider 1") ||
		!strings.Contains(p, "at "+n.Sites[0].URL+" (the address the network's registry gives)") {
		t.Fatalf("the review page says:\n%s", p)
	}
	run("approve", chromedp.Click(chromedp.CSS("#smart-approve")), chromedp.WaitVisible(chromedp.CSS("#app")))
	select {
	case q := <-codes:
		if q.Get("code") == "" || q.Get("state") != "st-chromium" {
			t.Fatalf("the app got %v", q)
		}
		res, err := http.PostForm(gw+"/smart/token", url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
			"redirect_uri": {redirect}, "client_id": {"chart"}, "code_verifier": {verifier}})
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != 200 {
			b, _ := io.ReadAll(res.Body)
			t.Fatalf("token: %d %s", res.StatusCode, b)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the app got no code; the page shows:\n%s", page())
	}
}

// doctorWithShare is a doctor's MedRec app at addr, signed in, holding the
// patient's anonymous share of Observations at provider 1 (treatment, a day).
func doctorWithShare(t *testing.T, n *testnet.Net, patient testApp, addr string) testApp {
	t.Helper()
	doctor := newTestAppAt(t, n, filepath.Join(t.TempDir(), "doctor.json"), addr)
	doctor.page(t, "POST", "/restore", url.Values{"words": {doctorWords}, "password": {"doctor-password"}, "password2": {"doctor-password"}})
	dkeys, _ := delegate.FromMnemonic(doctorWords, "")
	cv, _ := dkeys.ViewerCommitment(0)
	obs, _ := access.NewScope("Observation")
	b, err := patient.wallet().ShareAnonymous(context.Background(), 1, cv, obs, access.Treatment, time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doctor.wallet().SaveBundles([]wallet.ShareBundle{b}); err != nil {
		t.Fatal(err)
	}
	return doctor
}

// TestAppApprovedByViewer: a doctor holding a patient's anonymous share
// approves an app in the doctor's own MedRec app, with an Entitlement proof
// (no key of the patient's); the app reads what the share allows.
func TestAppApprovedByViewer(t *testing.T) {
	const redirect = "https://app.example/cb"
	doctorAddr := freeLoopback(t)
	n := testnet.NewWith(t, 1, func(c *dbmanager.Config) {
		c.SMARTApps = []dbmanager.SMARTApp{{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{redirect}}}
		c.PatientApp = "http://" + doctorAddr
	})
	patient := patientApp(t, n, filepath.Join(t.TempDir(), "patient.json"))
	doctor := doctorWithShare(t, n, patient, doctorAddr)

	gw := n.Sites[0].URL
	verifier := strings.Repeat("viewer-verifier-", 4)
	h := sha256.Sum256([]byte(verifier))
	start := gw + "/smart/authorize?" + url.Values{"response_type": {"code"}, "client_id": {"chart"}, "redirect_uri": {redirect},
		"state": {"st-viewer"}, "scope": {"patient/*.rs"}, "aud": {gw + "/fhir"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(h[:])}, "code_challenge_method": {"S256"}}.Encode()
	hc := &http.Client{Jar: doctor.hc.Jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host == "app.example" {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	v := browse(t, doctor, hc, start, "approve")
	if !strings.Contains(v.review, "read what was shared with you") || !strings.Contains(v.review, "As the viewer of a share") || !strings.Contains(v.review, "observations, for treatment") {
		t.Fatalf("the doctor's review page: %.2000s", v.review[strings.Index(v.review, "<h1"):])
	}
	back, _ := url.Parse(v.location)
	if v.status != http.StatusSeeOther || back.Query().Get("code") == "" || back.Query().Get("state") != "st-viewer" {
		t.Fatalf("the launch ended at %d %s %.300s", v.status, v.location, v.body)
	}
	res, err := http.PostForm(gw+"/smart/token", url.Values{"grant_type": {"authorization_code"}, "code": {back.Query().Get("code")},
		"redirect_uri": {redirect}, "client_id": {"chart"}, "code_verifier": {verifier}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		Scope       string
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); res.StatusCode != 200 || err != nil || tok.Scope != "patient/Observation.rs" {
		t.Fatalf("token: %d %+v %v", res.StatusCode, tok, err)
	}
	res.Body.Close()
	req, _ := http.NewRequest("GET", gw+"/fhir/Observation", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct{ Total int }
	if err := json.NewDecoder(res.Body).Decode(&bundle); res.StatusCode != 200 || err != nil || bundle.Total != 3 {
		t.Fatalf("search with the token: %d %+v %v", res.StatusCode, bundle, err)
	}
	res.Body.Close()
}

// TestBrowserAppInChromium: a browser-only SMART app — its whole code runs
// in its page, SMART's fhirclient browser build (npm, pinned, unmodified) —
// at its own origin, in real Chromium. It discovers the gateway, sends the
// browser to the patient's app, which approves it, trades its code and reads
// (search page by page, $everything, a read by id, a bulk export) from the
// page: each of those is a cross-origin request, which the browser allows
// only because the gateway answers the registered app's origin (CORS) — the
// same requests from a page at an unregistered origin are blocked.
func TestBrowserAppInChromium(t *testing.T) {
	_, dir := needFHIRClient(t)
	browser := headlessChromium(t)
	var origin string
	appPage := func(body string) string {
		return `<!doctype html><meta charset=utf-8><title>web app</title>` +
			`<script src="/fhir-client.js"></script><script src="/reads.js"></script><script>` + body + `</script>`
	}
	var iss string
	appSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fhir-client.js", "/reads.js":
			file := map[string]string{"/fhir-client.js": "node_modules/fhirclient/build/fhir-client.js", "/reads.js": "reads.cjs"}[r.URL.Path]
			w.Header().Set("Content-Type", "text/javascript")
			http.ServeFile(w, r, filepath.Join(dir, file))
		case "/app/launch.html":
			io.WriteString(w, appPage(`FHIR.oauth2.authorize({iss: `+jsString(iss)+`, clientId: "web",
				scope: "launch/patient patient/Patient.r patient/Observation.rs", redirectUri: "index.html", pkceMode: "required"});`))
		case "/app/index.html":
			io.WriteString(w, appPage(`(async () => {
				const out = {error: ""};
				try { await medrecReads(await FHIR.oauth2.ready(), out); } catch (e) { out.error = String(e && e.message || e); }
				const pre = document.createElement("pre"); pre.id = "done"; pre.textContent = JSON.stringify(out);
				document.body.appendChild(pre);
			})();`))
		case "/elsewhere.html":
			// The same page at an origin the gateway does not know.
			io.WriteString(w, appPage(`(async () => {
				let got;
				try { got = (await fetch(`+jsString(iss)+` + "/metadata")).status; } catch (e) { got = "blocked"; }
				const pre = document.createElement("pre"); pre.id = "done"; pre.textContent = String(got);
				document.body.appendChild(pre);
			})();`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer appSrv.Close()
	origin = appSrv.URL
	n, ta := smartNet(t, dbmanager.SMARTApp{ClientID: "web", Name: "Web App", RedirectURIs: []string{origin + "/app/index.html"}})
	gw := strings.Replace(n.Sites[0].URL, "127.0.0.1", "localhost", 1)
	iss = gw + "/fhir"
	ta.page(t, "POST", "/lock", url.Values{}) // the browser unlocks it itself

	browser.run("launch", chromedp.Navigate(origin+"/app/launch.html"), chromedp.WaitVisible(chromedp.CSS("#unlock-password")))
	browser.run("unlock", chromedp.SendKeys(chromedp.CSS("#unlock-password"), testPassword), chromedp.Click(chromedp.CSS("#unlock")),
		chromedp.WaitVisible(chromedp.CSS("#smart-approve")))
	if p := browser.page(); !strings.Contains(p, "Web App (app id web) wants to read Observation, Patient at Provider 1") {
		t.Fatalf("the review page says:\n%s", p)
	}
	browser.run("approve", chromedp.Click(chromedp.CSS("#smart-approve")), chromedp.WaitVisible(chromedp.CSS("#done")))
	var got fhirclientRun
	text := readDone(t, browser)
	if err := json.Unmarshal([]byte(text), &got); err != nil || got.Error != "" {
		t.Fatalf("the app's page shows %q (%v)", text, err)
	}
	if got.Patient != "pat" || got.PatientResource != "Patient/pat" || got.Scope != "launch/patient patient/Observation.rs patient/Patient.r" {
		t.Fatalf("the app's launch: %+v", got)
	}
	var paged []string
	for _, p := range got.Pages {
		paged = append(paged, p.Refs...)
	}
	if strings.Join(paged, " ") != "Observation/p1-obs0 Observation/p1-obs1 Observation/p1-obs2" || got.Read != "Observation/p1-obs0" ||
		strings.Join(got.Everything, " ") != "Observation/p1-obs0 Observation/p1-obs1 Observation/p1-obs2 Patient/pat" ||
		got.OutsideScope != 403 || got.Export.KickOff != 202 || got.Export.Files["Observation"] != 3 || got.Export.Files["Patient"] != 1 {
		t.Fatalf("the app read %+v", got)
	}

	// The same fetch from a page at an origin the gateway does not know:
	// the browser blocks it (localhost and 127.0.0.1 are different origins).
	elsewhere := strings.Replace(origin, "127.0.0.1", "localhost", 1) + "/elsewhere.html"
	browser.run("elsewhere", chromedp.Navigate(elsewhere), chromedp.WaitVisible(chromedp.CSS("#done")))
	if text := readDone(t, browser); text != "blocked" {
		t.Fatalf("a page at an unregistered origin read the gateway: %s", text)
	}
}

// readDone is the text of the page's #done element.
func readDone(t *testing.T, b chromiumTab) string {
	t.Helper()
	c, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	text, err := chromedp.Run(c, chromedp.Evaluate[string](`document.getElementById("done").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestAppKeepsNoTree: the patient's app keeps no copy of the registry's
// tree — its chain view reads no enrolment — and still connects (the
// membership paths come by bucket from the gateways).
func TestAppKeepsNoTree(t *testing.T) {
	n := testnet.New(t, 2)
	ta := patientApp(t, n, filepath.Join(t.TempDir(), "keystore.json")) // connected at both providers
	if got := ta.wallet().View().Leaves(); got != 0 {
		t.Fatalf("the app's view holds %d leaves of the registry", got)
	}
	if ok, err := ta.wallet().Enrolled(); !ok || err != nil {
		t.Fatalf("enrolled: %v %v", ok, err)
	}
}
