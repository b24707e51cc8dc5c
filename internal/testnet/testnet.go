// Package testnet runs providers' gateways on loopback HTTP over a simulated
// chain (internal/simchain), so that the tests and benchmarks of the layers
// above the gateway (wallet, client) exercise the real gateway, store and
// chain code end to end. Test code only.
package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/dbmanager"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/tagcode"
)

// StaffToken is every test gateway's staff bearer token.
const StaffToken = "testnet-staff-token"

// Site is one provider's gateway.
type Site struct {
	Gateway *dbmanager.Gateway
	URL     string // http://127.0.0.1:port
	Stop    func() // shuts the gateway down (the test's end does too)
	DB      string // its SQLite file (tests play a provider editing it behind the gateway's back)
}

// Net is a simulated chain with n providers and their gateways.
type Net struct {
	Chain  *simchain.Chain
	Sites  []*Site // Sites[p-1] is provider p's
	Prover *prover.Prover
}

func freeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// New starts a simulated chain with n providers, each with its gateway on a
// SQLite file, listening on loopback until the test ends. Gateways sync the
// chain view before every decision (SyncInterval 1 ns), the strictest setting.
func New(tb testing.TB, n int) *Net {
	tb.Helper()
	return NewWith(tb, n, nil)
}

// NewWith is New with each gateway's configuration changed by configure
// (when not nil) before the gateway starts.
func NewWith(tb testing.TB, n int, configure func(*dbmanager.Config)) *Net {
	tb.Helper()
	var addrs, urls []string
	for i := 0; i < n; i++ {
		addrs = append(addrs, freeAddr(tb))
		urls = append(urls, "http://"+addrs[i])
	}
	c := simchain.New(tb, n, urls)
	ks, err := prover.DevKeys()
	if err != nil {
		tb.Fatal(err)
	}
	out := &Net{Chain: c, Prover: prover.New(ks)}
	for i, p := range c.Providers {
		dbPath := filepath.Join(tb.TempDir(), fmt.Sprintf("p%d.db", p.ID))
		db, err := sqlstore.OpenSQLite(context.Background(), dbPath)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { db.Close() })
		v, err := chainview.NewWithNodes(c.Backend, c.D, db.RegistryNodes())
		if err != nil {
			tb.Fatal(err)
		}
		cfg := dbmanager.Config{
			Provider: p.ID, Store: db, View: v, Chain: c.Client, Relayer: c.Auth(p.Gateway), Prover: out.Prover,
			StaffTokens: map[string]string{dbmanager.TokenHash(StaffToken): "desk"}, SyncInterval: time.Nanosecond,
			// One loopback client reads as fast as it can (benchmarks); the
			// per-IP limit is the gateway's own tests' business.
			RateLimit: 1 << 30, ReaderRateLimit: 1 << 30,
		}
		if configure != nil {
			configure(&cfg)
		}
		gw, err := dbmanager.New(cfg)
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		tb.Cleanup(cancel)
		go gw.Listen(ctx, addrs[i])
		out.Sites = append(out.Sites, &Site{Gateway: gw, URL: urls[i], Stop: cancel, DB: dbPath})
	}
	for _, s := range out.Sites { // wait until listening
		for i := 0; i < 100; i++ {
			if res, err := http.Get(s.URL + "/fhir/metadata"); err == nil {
				res.Body.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// Staff calls provider p's admin API as desk staff and returns the response
// body; a status ≥ 300 fails the test.
func (n *Net) Staff(tb testing.TB, p int, method, path, body string) string {
	tb.Helper()
	req, err := http.NewRequest(method, n.Sites[p-1].URL+path, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+StaffToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if res.StatusCode >= 300 {
		tb.Fatalf("%s %s: %s %s", method, path, res.Status, b)
	}
	return string(b)
}

// ClaimCode has provider p's desk issue a claim code for a patient, bound
// to the desk code the patient's app shows for p.
func (n *Net) ClaimCode(tb testing.TB, p int, patient string, desk tagcode.Code) string {
	tb.Helper()
	var out struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(n.Staff(tb, p, "POST", "/admin/patients/"+patient+"/claim-code", `{"tagCode":"`+desk.String()+`"}`)), &out); err != nil || out.Code == "" {
		tb.Fatalf("claim code: %v", err)
	}
	return out.Code
}

// Patient is what a desk meets of a patient: the commitment to enrol (at
// the first desk), the desk code for each provider, and a way to connect
// with a claim code (a wallet is one).
type Patient interface {
	Commitment() (string, error)
	DeskCode(p uint32) (tagcode.Code, error)
	Connect(ctx context.Context, p uint32, code string) error
}

// SeedPatient has provider p's desk create the patient with the resources
// of bundle (a transaction Bundle; "" for none), enrol the patient's
// commitment if enrol (a patient is enrolled once, at any provider), and
// issue a claim code bound to the patient's desk code for p, which it
// returns.
func (n *Net) SeedPatient(tb testing.TB, p int, patient, bundle string, pat Patient, enrol bool) string {
	tb.Helper()
	n.Staff(tb, p, "POST", "/admin/patients", `{"id":"`+patient+`"}`)
	if bundle != "" {
		n.Staff(tb, p, "POST", "/admin/patients/"+patient+"/resources", bundle)
	}
	if enrol {
		cm, err := pat.Commitment()
		if err != nil {
			tb.Fatal(err)
		}
		n.Staff(tb, p, "POST", "/admin/patients/"+patient+"/enrol", `{"commitment":"`+cm+`"}`)
	}
	desk, err := pat.DeskCode(uint32(p))
	if err != nil {
		tb.Fatal(err)
	}
	return n.ClaimCode(tb, p, patient, desk)
}

// SeedConnected gives patient "pat" count Observations at every provider
// (ids p<provider>-obs<i>), enrols it once (at provider 1) and connects it
// everywhere.
func (n *Net) SeedConnected(tb testing.TB, pat Patient, count int) {
	tb.Helper()
	for p := 1; p <= len(n.Sites); p++ {
		code := n.SeedPatient(tb, p, "pat", ObservationBundle("pat", fmt.Sprintf("p%d-obs", p), count), pat, p == 1)
		if err := pat.Connect(context.Background(), uint32(p), code); err != nil {
			tb.Fatalf("connect %d: %v", p, err)
		}
	}
}

// View is a fresh chain view of the deployment.
func (n *Net) View(tb testing.TB) *chainview.View {
	tb.Helper()
	v, err := chainview.New(n.Chain.Backend, n.Chain.D)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// ObservationBundle is a transaction Bundle of count heart-rate Observations
// of the given patient, one a day from 2020-01-01; ids are prefixed by prefix.
func ObservationBundle(patient, prefix string, count int) string {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	day := time.Date(2020, 1, 1, 8, 0, 0, 0, time.UTC)
	for i := 0; i < count; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"resource":{"resourceType":"Observation","id":"%s%d","status":"final",`+
			`"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],`+
			`"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},`+
			`"subject":{"reference":"Patient/%s"},"effectiveDateTime":"%s","valueQuantity":{"value":%d,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}}`,
			prefix, i, patient, day.Add(time.Duration(i)*24*time.Hour).Format(time.RFC3339), 60+(i*7)%40)
	}
	b.WriteString(`]}`)
	return b.String()
}
