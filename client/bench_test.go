package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/internal/testnet"
)

// benchApp is the patient's app over a loopback test network of providers,
// each holding perProvider Observations of the patient, who is connected to
// all of them; its HTTP client carries the session cookie.
type benchApp struct {
	url string
	hc  *http.Client
}

func newBenchApp(b *testing.B, providers, perProvider int) benchApp {
	b.Helper()
	ctx := context.Background()
	n := testnet.New(b, providers)
	a, err := New(Config{
		Keystore: filepath.Join(b.TempDir(), "keystore.json"), Deployment: n.Chain.D, Prover: n.Prover, LightKDF: true,
		Dial: func(context.Context) (chainview.Source, func(), error) { return n.Chain.Backend, func() {}, nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	actx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	go a.Listen(actx, addr)
	jar, _ := cookiejar.New(nil)
	ba := benchApp{url: "http://" + addr, hc: &http.Client{Jar: jar}}
	for i := 0; i < 100; i++ {
		if _, err := ba.hc.Get(ba.url + "/"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	form := url.Values{"csrf": {a.csrf}, "words": {"test test test test test test test test test test test junk"},
		"password": {"bench-password"}, "password2": {"bench-password"}}
	if body := ba.get(b, "POST", "/restore", form); !strings.Contains(body, "Your identity commitment") {
		b.Fatalf("restore did not sign in: %.300s", body)
	}
	w := a.wallet()
	cm, err := w.Commitment()
	if err != nil {
		b.Fatal(err)
	}
	n.SeedConnected(b, cm, perProvider, w.Connect)
	return ba
}

// get fetches a page (POST with form if form is non-nil), failing on any
// status but 200.
func (ba benchApp) get(b *testing.B, method, path string, form url.Values) string {
	var req *http.Request
	if form != nil {
		req, _ = http.NewRequest(method, ba.url+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, _ = http.NewRequest(method, ba.url+path, nil)
	}
	res, err := ba.hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		b.Fatalf("%s %s: %s %.300s", method, path, res.Status, body)
	}
	return string(body)
}

// BenchmarkPages loads the app's pages over loopback HTTP as the patient
// does, with 5 providers × 1,000 records behind them; each reports its p95.
// /home asks every gateway for new records; /records reads and merges all
// 5,000 and renders charts and the newest 200 (?all=1: all 5,000); /share
// reads the chain view.
// Goal: pages under 100 ms; the merged timeline (/records) ≤ 300 ms p95.
func BenchmarkPages(b *testing.B) {
	ba := newBenchApp(b, 5, 1000)
	for _, page := range []struct{ path, want string }{
		{"/home", "Your identity commitment"},
		{"/records", "p5-obs999"},
		{"/records?all=1", "p1-obs0"},
		{"/records?type=Condition", "Records"},
		{"/share", "Share"},
	} {
		b.Run(strings.TrimPrefix(page.path, "/"), func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				body := ba.get(b, "GET", page.path, nil)
				took = append(took, time.Since(start))
				if !strings.Contains(body, page.want) {
					b.Fatalf("%s lacks %q", page.path, page.want)
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[(len(took)*95+99)/100-1].Microseconds())/1000, "p95-ms")
		})
	}
}
