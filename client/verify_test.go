package client

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the provider's own handle on its database

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/internal/testnet"
)

// testApp is the patient's app over a loopback test network, signed in.
type testApp struct {
	*App
	url string
	hc  *http.Client
}

func newTestApp(t *testing.T, n *testnet.Net, keystore string) testApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return newTestAppAt(t, n, keystore, addr)
}

// newTestAppAt is newTestApp listening on addr.
func newTestAppAt(t *testing.T, n *testnet.Net, keystore, addr string) testApp {
	t.Helper()
	a, err := New(Config{
		Keystore: keystore, Deployment: n.Chain.D, Prover: n.Prover, TestKeystores: true,
		Dial: func(context.Context) (chainview.Source, func(), error) { return n.Chain.Backend, func() {}, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go a.Listen(ctx, addr)
	jar, _ := cookiejar.New(nil)
	ta := testApp{App: a, url: "http://" + addr, hc: &http.Client{Jar: jar}}
	for i := 0; i < 100; i++ {
		if _, err := ta.hc.Get(ta.url + "/"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ta
}

// page fetches a page (POST with form if form is non-nil); any status but
// 200 fails the test.
func (ta testApp) page(t *testing.T, method, path string, form url.Values) string {
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
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %.500s", method, path, res.Status, body)
	}
	return string(body)
}

// TestPagesShowTampering: the records and access-log pages say plainly
// when everything checked out, and show a warning a person understands
// when the provider changed a record they had seen, removed one, or cut an
// entry from their access log — also after the app was locked and
// unlocked (a new session, from what the device remembered).
func TestPagesShowTampering(t *testing.T) {
	ctx := context.Background()
	n := testnet.New(t, 1)
	keystore := filepath.Join(t.TempDir(), "keystore.json")
	ta := newTestApp(t, n, keystore)
	const password = "patient-password"
	if body := ta.page(t, "POST", "/restore", url.Values{"words": {"test test test test test test test test test test test junk"},
		"password": {password}, "password2": {password}}); !strings.Contains(body, "Your enrolment code") {
		t.Fatalf("restore: %.300s", body)
	}
	n.SeedConnected(t, ta.wallet(), 3)
	gw := n.Sites[0].Gateway
	if _, err := gw.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	records := ta.page(t, "GET", "/records", nil)
	if !strings.Contains(records, "every record checked against Provider 1") || strings.Contains(records, "Warning") {
		t.Fatalf("records of an honest provider: %s", records)
	}
	if _, err := gw.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	logPage := ta.page(t, "GET", "/log", nil)
	if !strings.Contains(logPage, "✔ on chain") || strings.Contains(logPage, "Warning") {
		t.Fatalf("log of an honest provider: %s", logPage)
	}
	if _, err := os.Stat(DeviceStorePath(keystore)); err != nil {
		t.Fatalf("no device store: %v", err)
	}

	// The provider edits its database behind the gateway's back.
	db, err := sql.Open("sqlite", n.Sites[0].DB+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	raw := `{"resourceType":"Observation","id":"p1-obs1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"valueQuantity":{"value":180,"unit":"/min"}}`
	sum := sha256.Sum256([]byte(raw))
	var firstEntry int64
	if err := db.QueryRow(`SELECT min(seq) FROM access_log WHERE patient_id = 'pat'`).Scan(&firstEntry); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DROP TRIGGER resource_versions_no_update`, nil},
		{`DROP TRIGGER access_log_no_delete`, nil},
		{`UPDATE resource_versions SET raw = ?, sha256 = ? WHERE id = 'p1-obs1'`, []any{[]byte(raw), sum[:]}},
		{`UPDATE resources SET sha256 = ? WHERE id = 'p1-obs1'`, []any{sum[:]}},
		{`DELETE FROM resources WHERE id = 'p1-obs2'`, nil},
		{`DELETE FROM access_log WHERE seq = ?`, []any{firstEntry}},
	} {
		if _, err := db.Exec(q.sql, q.args...); err != nil {
			t.Fatalf("%s: %v", q.sql, err)
		}
	}

	// A new session: lock, unlock.
	ta.page(t, "POST", "/lock", url.Values{})
	if body := ta.page(t, "POST", "/unlock", url.Values{"password": {password}}); !strings.Contains(body, "<h1>Home</h1>") {
		t.Fatalf("unlock: %.300s", body)
	}
	records = ta.page(t, "GET", "/records", nil)
	for _, want := range []string{
		`id="records-warnings-1"`,
		"Warning: Provider 1 changed or removed records after they were recorded.",
		"Observation p1-obs1 (version 1) is not what this device verified before at Provider 1: its content changed.",
		"Observation p1-obs2 is missing from Provider 1&#39;s records",
	} {
		if !strings.Contains(records, want) {
			t.Errorf("the records page lacks %q:\n%s", want, records)
		}
	}
	if strings.Contains(records, "every record checked") {
		t.Error("the records page still says verified")
	}
	logPage = ta.page(t, "GET", "/log", nil)
	for _, want := range []string{
		`id="log-warnings-1"`,
		"record of who accessed your records was changed or cut.",
		"which this device verified before, is missing.",
	} {
		if !strings.Contains(logPage, want) {
			t.Errorf("the access-log page lacks %q:\n%s", want, logPage)
		}
	}
}
