package wallet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/dbmanager"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

const staffToken = "wallet-test-staff-token"

type site struct {
	gw     *dbmanager.Gateway
	url    string
	cancel context.CancelFunc
}

type net2 struct {
	chain *simchain.Chain
	sites []*site
	pr    *prover.Prover
}

func freeURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// newNet starts a simulated chain with n providers, each with its gateway
// listening on loopback.
func newNet(t *testing.T, n int) *net2 {
	t.Helper()
	var urls []string
	for i := 0; i < n; i++ {
		urls = append(urls, freeURL(t))
	}
	c := simchain.New(t, n, urls)
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	out := &net2{chain: c, pr: prover.New(ks)}
	for i, p := range c.Providers {
		v, err := chainview.New(c.Backend, c.D)
		if err != nil {
			t.Fatal(err)
		}
		db, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), fmt.Sprintf("p%d.db", p.ID)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		gw, err := dbmanager.New(dbmanager.Config{
			Provider: p.ID, Store: db, View: v, Chain: c.Client, Relayer: c.Auth(p.Gateway), Prover: out.pr,
			StaffTokens: map[string]string{dbmanager.TokenHash(staffToken): "desk"}, SyncInterval: time.Nanosecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &site{gw: gw, url: urls[i], cancel: cancel}
		go gw.Listen(ctx, strings.TrimPrefix(urls[i], "http://"))
		t.Cleanup(cancel)
		out.sites = append(out.sites, s)
	}
	for _, s := range out.sites { // wait until listening
		for i := 0; i < 100; i++ {
			if res, err := http.Get(s.url + "/fhir/metadata"); err == nil {
				res.Body.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

func (n *net2) staff(t *testing.T, p int, method, path, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, n.sites[p-1].url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	fmt.Fprint(&b, res.Status)
	buf := make([]byte, 1<<16)
	k, _ := res.Body.Read(buf)
	if res.StatusCode >= 300 {
		t.Fatalf("%s %s: %s %s", method, path, res.Status, buf[:k])
	}
	return string(buf[:k])
}

func (n *net2) wallet(t *testing.T, words string) *Wallet {
	t.Helper()
	keys, err := delegate.FromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	v, err := chainview.New(n.chain.Backend, n.chain.D)
	if err != nil {
		t.Fatal(err)
	}
	return New(keys, v, n.chain.D, n.pr)
}

const (
	patientWords = "test test test test test test test test test test test junk"
	viewerWords  = "legal winner thank year wave sausage worth useful legal winner thank yellow"
)

func TestPatientJourney(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 2)
	w := n.wallet(t, patientWords)
	cm, err := w.Commitment()
	if err != nil {
		t.Fatal(err)
	}
	// Desks: the patient exists at both providers with records; enrolled once.
	codes := map[int]string{}
	for p := 1; p <= 2; p++ {
		n.staff(t, p, "POST", "/admin/patients", `{"id":"pat"}`)
		n.staff(t, p, "POST", "/admin/patients/pat/resources", fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
			{"resource":{"resourceType":"Observation","id":"hr%d","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"effectiveDateTime":"2024-0%d-01T10:00:00Z","valueQuantity":{"value":7%d,"unit":"/min"}}},
			{"resource":{"resourceType":"Condition","id":"c%d","subject":{"reference":"Patient/pat"},"code":{"text":"Asthma"},"recordedDate":"2023-01-0%d"}}]}`, p, p, p, p, p))
		var code struct{ Code string }
		raw := n.staff(t, p, "POST", "/admin/patients/pat/claim-code", "")
		fmt.Sscanf(raw[strings.Index(raw, `"code":"`)+8:], "%32s", &code.Code)
		codes[p] = code.Code
	}
	n.staff(t, 1, "POST", "/admin/patients/pat/enrol", `{"commitment":"`+cm+`"}`)
	if err := w.Connect(ctx, 2, "wrong-code"); err == nil {
		t.Fatal("a wrong claim code was accepted")
	}
	for p := uint32(1); p <= 2; p++ {
		if err := w.Connect(ctx, p, codes[int(p)]); err != nil {
			t.Fatalf("connect %d: %v", p, err)
		}
	}
	rels, err := w.Relationships(ctx)
	if err != nil || len(rels) != 2 || !rels[0].OwnedHere || rels[0].Tag.Cmp(rels[1].Tag) == 0 {
		t.Fatalf("relationships %+v %v", rels, err)
	}
	// One timeline from both providers, newest first.
	recs, results, err := w.Records(ctx)
	if err != nil || len(recs) != 4 || results[0].Err != nil || results[1].Err != nil {
		t.Fatalf("records %d %+v %v", len(recs), results, err)
	}
	if recs[0].ID != "hr2" || recs[1].ID != "hr1" || recs[0].Provider.ID != 2 {
		t.Fatalf("timeline order: %s %s", recs[0].ID, recs[1].ID)
	}

	// Share Observations at provider 1 with an anonymous viewer.
	viewer := n.wallet(t, viewerWords)
	cvHex, _ := viewer.ViewerCommitment()
	cv, err := ParseViewerCommitment(cvHex)
	if err != nil {
		t.Fatal(err)
	}
	obs, _ := access.NewScope("Observation")
	bundle, err := w.ShareAnonymous(ctx, 1, cv, obs, access.Treatment, time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprint(bundle), bundle.K) {
		t.Fatal("printing a share bundle shows its secret")
	}
	parsed, err := ParseShareBundle(bundle.Encode())
	if err != nil || parsed != bundle {
		t.Fatalf("bundle round trip: %v", err)
	}
	shared, err := viewer.ReadShared(ctx, parsed)
	if err != nil || len(shared) != 1 || shared[0].Type != "Observation" {
		t.Fatalf("viewer read: %d %v", len(shared), err)
	}
	// Someone else with the bundle but without v gets nothing.
	thief := n.wallet(t, "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about")
	if _, err := thief.ReadShared(ctx, parsed); err == nil {
		t.Fatal("a leaked bundle was usable without the viewer's secret")
	}
	// Address grantee: the warning about linking appears at the second provider.
	doc := n.wallet(t, viewerWords)
	docAcct, _ := doc.Keys().Wallet()
	if err := w.ShareWithAddress(ctx, 1, docAcct.Address, obs, access.Treatment, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if links, err := w.AddressLinks(ctx, docAcct.Address); err != nil || len(links) != 1 || links[0] != "Provider 1" {
		t.Fatalf("links %v %v", links, err)
	}
	if got, err := doc.SharedWithMe(ctx); err != nil || len(got) != 1 {
		t.Fatalf("shared with me: %v %v", got, err)
	}
	if recs, err := doc.ReadAsGrantee(ctx, 1, rels[0].Tag); err != nil || len(recs) != 1 {
		t.Fatalf("grantee read: %d %v", len(recs), err)
	}
	// Revoke the anonymous grant: the viewer is refused.
	tagEl, _ := zkhash.ParseHex(bundle.Tag)
	k, _ := zkhash.ParseHex(bundle.K)
	g := zkhash.Grant(cv, tagEl, k)
	if err := w.Revoke(ctx, 1, KindAnonymous, zkhash.Bytes32(g)); err != nil {
		t.Fatal(err)
	}
	_, err = viewer.ReadShared(ctx, parsed)
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.Status != 403 {
		t.Fatalf("after revoke: %v", err)
	}

	// Anchor, then verify the access log and the record set against the chain.
	if _, err := n.sites[0].gw.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := w.AccessLog(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var verified, viewerReads, denied int
	for _, e := range entries {
		if !e.HashOK {
			t.Fatalf("entry %d: %s", e.Seq, e.Problem)
		}
		if e.Verified {
			verified++
		}
		if e.Kind == "anonymous" {
			viewerReads++
			if e.Decision == "denied" {
				denied++
			}
		}
	}
	if verified != len(entries) || viewerReads < 3 || denied < 1 {
		t.Fatalf("log: %d entries, %d verified, %d viewer entries (%d denied)", len(entries), verified, viewerReads, denied)
	}
	recs, _, _ = w.Records(ctx)
	sc, err := w.VerifyRecords(ctx, 1, recs)
	if err != nil || !sc.Verified {
		t.Fatalf("record set: %+v %v", sc, err)
	}

	// Restore on a fresh device: both relationships are found again.
	restored := n.wallet(t, patientWords)
	if rels, err := restored.Relationships(ctx); err != nil || len(rels) != 2 {
		t.Fatalf("restored: %d %v", len(rels), err)
	}
	// Lost device: rotate the delegate at provider 2; reads go on with the new one.
	if err := w.Rotate(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Relationship(ctx, 2); err != nil || r.Rotation != 1 {
		t.Fatalf("after rotation: %+v %v", r, err)
	}
	// A dead gateway shows as such and does not block the other.
	n.sites[1].cancel()
	time.Sleep(100 * time.Millisecond)
	recs, results, err = w.Records(ctx)
	if err != nil || results[0].Err != nil || results[1].Err == nil || len(recs) != 2 {
		t.Fatalf("with provider 2 down: %d records, %+v, %v", len(recs), results, err)
	}
}
