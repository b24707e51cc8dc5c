package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/ethereum/go-ethereum/accounts/keystore"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/devnet"
	"github.com/medrec-zk/medrec/prover"
)

// The browser test runs the web app in real headless Chromium against a real
// Clique network (geth v1.13.15) with two providers' gateways. Without
// $MEDREC_GETH or Chromium it is skipped, unless MEDREC_REQUIRE_GETH=1 /
// MEDREC_REQUIRE_CHROMIUM=1 (make test sets both) make that a failure.

func need(t *testing.T) (geth *chain.Geth, chromium string) {
	t.Helper()
	chromium = os.Getenv("MEDREC_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("MEDREC_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("no Chromium at %s but MEDREC_REQUIRE_CHROMIUM=1", chromium)
		}
		t.Skipf("no Chromium at %s", chromium)
	}
	path := os.Getenv(chain.GethEnv)
	if path == "" {
		if os.Getenv("MEDREC_REQUIRE_GETH") == "1" {
			t.Fatalf("%s is unset but MEDREC_REQUIRE_GETH=1", chain.GethEnv)
		}
		t.Skipf("%s unset", chain.GethEnv)
	}
	g, err := chain.FindGeth(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return g, chromium
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type staffAPI struct {
	t     *testing.T
	url   string
	token string
}

func (s staffAPI) post(path, body string) string {
	s.t.Helper()
	req, _ := http.NewRequest("POST", s.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		s.t.Fatalf("%s: %d %s", path, res.StatusCode, b)
	}
	return string(b)
}

func TestBrowserJourney(t *testing.T) {
	geth, chromium := need(t)
	ctx := t.Context()
	dir := t.TempDir()
	n, err := chain.Create(ctx, dir, geth, chain.Options{Providers: 3, Period: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n.Down(c)
	})
	if err := n.Up(ctx); err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	d, err := devnet.Deploy(ctx, n, ks, contracts.DevVerifiers())
	if err != nil {
		t.Fatal(err)
	}
	srv, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gws := map[int]*devnet.Gateway{}
	staff := map[int]staffAPI{}
	for p := 1; p <= 2; p++ {
		g, err := devnet.OpenGateway(ctx, n, p, devnet.GatewayOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Close)
		gws[p] = g
		go g.Listen(srv, g.Addr)
		tokens, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("provider%d", p), "staff-tokens"))
		lines := strings.Split(strings.TrimSpace(string(tokens)), "\n")
		staff[p] = staffAPI{t: t, url: "http://" + g.Addr, token: strings.Fields(lines[len(lines)-1])[1]}
	}
	time.Sleep(200 * time.Millisecond)
	for p := 1; p <= 2; p++ {
		staff[p].post("/admin/patients", `{"id":"pat"}`)
		staff[p].post("/admin/patients/pat/resources", fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Observation","id":"obs%d","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"effectiveDateTime":"2025-0%d-01T10:00:00Z","valueQuantity":{"value":7%d,"unit":"/min"}}},
			{"resource":{"resourceType":"Condition","id":"cond%d","subject":{"reference":"Patient/pat"},"code":{"text":"Condition at provider %d"},"recordedDate":"2024-01-0%d"}}]}`, p, p, p, p, p, p))
	}

	rpc := n.State().Nodes[0].RPC
	app := func(keystorePath string) string {
		a, err := New(Config{Keystore: keystorePath, RPC: rpc, Deployment: d, Prover: prover.New(ks), LightKDF: true})
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		go a.Listen(srv, addr)
		time.Sleep(100 * time.Millisecond)
		return "http://" + addr
	}
	patientURL := app(filepath.Join(dir, "patient.json"))
	viewerKS := filepath.Join(dir, "viewer.json")
	const viewerWords = "legal winner thank year wave sausage worth useful legal winner thank yellow"
	if err := delegate.WriteKeystore(viewerKS, delegate.Keystore{Mnemonic: viewerWords}, "viewer-password", keystore.LightScryptN, keystore.LightScryptP); err != nil {
		t.Fatal(err)
	}
	viewerURL := app(viewerKS)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1100, 900))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first Run starts the browser and must not carry a timeout.
	if err := chromedp.Do(browser, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	page := func() string {
		c, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		v, _ := chromedp.Run(c, chromedp.Evaluate[string](`document.location.href + "\n" + document.body.innerText`))
		return v
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(browser, 2*time.Minute)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			t.Fatalf("%s: %v; the page shows:\n%s", what, err, page())
		}
	}
	get := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		c, cancel := context.WithTimeout(browser, time.Minute)
		defer cancel()
		v, err := chromedp.Run(c, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	count := func(expr string) int {
		t.Helper()
		c, cancel := context.WithTimeout(browser, time.Minute)
		defer cancel()
		v, err := chromedp.Run(c, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	text := func(sel string) string { t.Helper(); return get("read "+sel, chromedp.Text(chromedp.CSS(sel))) }
	// With MEDREC_SCREENSHOTS=DIR the journey's pages are saved there (never
	// a page showing a secret: the words, a share bundle).
	shots := os.Getenv("MEDREC_SCREENSHOTS")
	nshot := 0
	shot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		nshot++
		c, cancel := context.WithTimeout(browser, time.Minute)
		defer cancel()
		img, err := chromedp.Run(c, chromedp.FullScreenshot(85))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s.jpg", nshot, name)), img, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Onboard: create, the words are shown once, three are confirmed.
	run("create", chromedp.Navigate(patientURL+"/"), chromedp.Click(chromedp.CSS("#create")), chromedp.WaitVisible(chromedp.CSS("#words")))
	words := text("#words")
	list := strings.Fields(words)
	if len(list) != 12 {
		t.Fatalf("words %q", words)
	}
	run("confirm", chromedp.SendKeys(chromedp.CSS("#w3"), list[2]), chromedp.SendKeys(chromedp.CSS("#w7"), list[6]),
		chromedp.SendKeys(chromedp.CSS("#w11"), list[10]), chromedp.SendKeys(chromedp.CSS("#password"), "patient-password"),
		chromedp.SendKeys(chromedp.CSS("#password2"), "patient-password"), chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS("#commitment")))
	commitment := strings.TrimSpace(text("#commitment"))

	// Enrol at the desk of provider 1; claim codes at both.
	staff[1].post("/admin/patients/pat/enrol", `{"commitment":"`+commitment+`"}`)
	for p := 1; p <= 2; p++ {
		raw := staff[p].post("/admin/patients/pat/claim-code", "")
		code := raw[strings.Index(raw, `"code":"`)+8:]
		code = code[:strings.Index(code, `"`)]
		run(fmt.Sprintf("connect %d", p), chromedp.Navigate(patientURL+"/home"),
			chromedp.SendKeys(chromedp.CSS(fmt.Sprintf("#code-%d", p)), code), chromedp.Click(chromedp.CSS(fmt.Sprintf("#connect-%d", p))),
			chromedp.WaitVisible(chromedp.CSS("#flash")))
	}
	if got := text("#providers"); strings.Count(got, "connected") < 2 || strings.Count(got, "not connected") != 1 {
		t.Fatalf("providers after connecting: %q", got)
	}
	shot("home")

	// The merged timeline has both providers' records.
	run("timeline", chromedp.Navigate(patientURL+"/records"), chromedp.WaitVisible(chromedp.CSS("#timeline")))
	timeline := text("#timeline")
	shot("timeline")
	for _, want := range []string{"Condition at provider 1", "Condition at provider 2", "Heart rate: 71", "Heart rate: 72"} {
		if !strings.Contains(timeline, want) {
			t.Fatalf("timeline lacks %q: %s", want, timeline)
		}
	}

	// The viewer unlocks and hands over its viewer commitment.
	run("viewer unlock", chromedp.Navigate(viewerURL+"/"), chromedp.SendKeys(chromedp.CSS("#unlock-password"), "viewer-password"),
		chromedp.Click(chromedp.CSS("#unlock")), chromedp.WaitVisible(chromedp.CSS("#commitment")), chromedp.Navigate(viewerURL+"/viewer"))
	viewerCommitment := strings.TrimSpace(text("#my-viewer"))

	// Share Observations only at provider 1 with the viewer, anonymously.
	run("share", chromedp.Navigate(patientURL+"/share"), chromedp.SetValue(chromedp.CSS("#share-provider"), "1"),
		chromedp.SendKeys(chromedp.CSS("#share-to"), viewerCommitment), chromedp.Click(chromedp.CSS("#type-Observation")),
		chromedp.Click(chromedp.CSS("#share")), chromedp.WaitVisible(chromedp.CSS("#bundle")))
	bundle := get("bundle", chromedp.Value(chromedp.CSS("#bundle")))
	if !strings.HasPrefix(bundle, "medrec-share:") {
		t.Fatalf("bundle %q", bundle)
	}
	run("viewer reads", chromedp.Navigate(viewerURL+"/viewer"), chromedp.SetValue(chromedp.CSS("#viewer-bundle"), bundle),
		chromedp.Click(chromedp.CSS("#viewer-read")), chromedp.WaitVisible(chromedp.CSS("#shared")))
	c, cancelRows := context.WithTimeout(browser, time.Minute)
	rows, err := chromedp.Run(c, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#shared tr.rec")).map(r => r.className)`))
	cancelRows()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || !strings.Contains(rows[0], "rec-Observation") {
		t.Fatalf("the viewer sees %v; want one Observation and nothing else", rows)
	}
	shot("viewer-reads")

	// Revoke: the viewer is refused.
	run("revoke", chromedp.Navigate(patientURL+"/share"), chromedp.Click(chromedp.CSS("button.revoke")), chromedp.WaitVisible(chromedp.CSS("#flash")))
	if got := text("#grants"); !strings.Contains(got, "revoked") {
		t.Fatalf("grants after revoke: %q", got)
	}
	shot("sharing-revoked")
	run("viewer refused", chromedp.Navigate(viewerURL+"/viewer"), chromedp.SetValue(chromedp.CSS("#viewer-bundle"), bundle),
		chromedp.Click(chromedp.CSS("#viewer-read")), chromedp.WaitVisible(chromedp.CSS("#error")))
	if got := text("#error"); !strings.Contains(got, "revoked") {
		t.Fatalf("viewer after revoke: %q", got)
	}
	shot("viewer-refused")

	// Anchor, then the access log shows all of it, verified against the chain.
	for _, g := range gws {
		if _, err := g.AnchorOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run("log", chromedp.Navigate(patientURL+"/log"), chromedp.WaitVisible(chromedp.CSS("table.log")))
	entries := count(`document.querySelectorAll("table.log tr.entry").length`)
	verified := count(`document.querySelectorAll("table.log .verified").length`)
	anonAllowed := count(`Array.from(document.querySelectorAll("table.log tr.entry.allowed")).filter(r => r.textContent.includes("anonymous")).length`)
	anonDenied := count(`Array.from(document.querySelectorAll("table.log tr.entry.denied")).filter(r => r.textContent.includes("anonymous")).length`)
	// The log page itself read the records once more after anchoring: those
	// newest entries are not anchored yet.
	if anonAllowed < 2 || anonDenied < 1 || verified < entries-4 || verified == 0 {
		t.Fatalf("log: %d entries, %d verified, viewer %d allowed / %d denied", entries, verified, anonAllowed, anonDenied)
	}
	if got := text("#state"); !strings.Contains(got, "verified against") {
		t.Fatalf("record set: %q", got)
	}
	shot("access-log")

	// A fresh client restored from the 12 words finds both relationships.
	restoredURL := app(filepath.Join(dir, "restored.json"))
	run("restore", chromedp.Navigate(restoredURL+"/"), chromedp.SendKeys(chromedp.CSS("#restore-words"), words),
		chromedp.SendKeys(chromedp.CSS("#restore-password"), "restored-password"), chromedp.SendKeys(chromedp.CSS("#restore-password2"), "restored-password"),
		chromedp.Click(chromedp.CSS("#restore")), chromedp.WaitVisible(chromedp.CSS("#providers")))
	if got := text("#providers"); strings.Count(got, "connected") < 2 || strings.Count(got, "not connected") != 1 {
		t.Fatalf("restored client: %q", got)
	}
	shot("restored")
	// Wrong words: a human message, nothing written.
	otherURL := app(filepath.Join(dir, "other.json"))
	run("bad words", chromedp.Navigate(otherURL+"/"), chromedp.SendKeys(chromedp.CSS("#restore-words"), "not a real phrase at all"),
		chromedp.SendKeys(chromedp.CSS("#restore-password"), "some-password"), chromedp.SendKeys(chromedp.CSS("#restore-password2"), "some-password"),
		chromedp.Click(chromedp.CSS("#restore")), chromedp.WaitVisible(chromedp.CSS("#error")))
	if _, err := os.Stat(filepath.Join(dir, "other.json")); err == nil {
		t.Fatal("a keystore was written for invalid words")
	}
}
