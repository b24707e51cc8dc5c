package wallet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/devstore"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/zkhash"
)

// testNet is a loopback test network with a wallet constructor.
type testNet struct{ *testnet.Net }

func newNet(tb testing.TB, n int) testNet { return testNet{testnet.New(tb, n)} }

func (n testNet) staff(tb testing.TB, p int, method, path, body string) string {
	tb.Helper()
	return n.Staff(tb, p, method, path, body)
}

func (n testNet) wallet(tb testing.TB, words string) *Wallet {
	tb.Helper()
	keys, err := delegate.FromMnemonic(words, "")
	if err != nil {
		tb.Fatal(err)
	}
	return New(keys, n.View(tb), n.Chain.D, n.Prover)
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
		desk, err := w.DeskCode(uint32(p))
		if err != nil {
			t.Fatal(err)
		}
		codes[p] = n.ClaimCode(t, p, "pat", desk)
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
	// Read again: nothing changed, so nothing is re-read; a new record at
	// provider 1 is listed as a change and read.
	again, results, err := w.Records(ctx)
	if err != nil || len(again) != 4 || !results[0].Cached || !results[1].Cached {
		t.Fatalf("second read: %d %+v %v", len(again), results, err)
	}
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", `{"resourceType":"Observation","id":"hr9","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/pat"},"effectiveDateTime":"2025-01-01T10:00:00Z","valueQuantity":{"value":80,"unit":"/min"}}`)
	recs, results, err = w.Records(ctx)
	if err != nil || len(recs) != 5 || results[0].Cached || !results[1].Cached || recs[0].ID != "hr9" {
		t.Fatalf("after a new record: %d %+v %v", len(recs), results, err)
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
	if err != nil || len(shared) != 2 || shared[0].Type != "Observation" || shared[1].Type != "Observation" {
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
	if recs, err := doc.ReadAsGrantee(ctx, 1, rels[0].Tag); err != nil || len(recs) != 2 {
		t.Fatalf("grantee read: %d %v", len(recs), err)
	}
	// Revoke the anonymous grant: the viewer is refused.
	tagEl, _ := zkhash.ParseHex(bundle.Tag)
	k, _ := zkhash.ParseHex(bundle.K)
	g := zkhash.Grant(cv, tagEl, k)
	if err := w.Revoke(ctx, 1, access.AnonymousGrantee, zkhash.Bytes32(g)); err != nil {
		t.Fatal(err)
	}
	_, err = viewer.ReadShared(ctx, parsed)
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.Status != 403 {
		t.Fatalf("after revoke: %v", err)
	}

	// Anchor, then verify the access log and the record set against the chain.
	if _, err := n.Sites[0].Gateway.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := w.AccessLog(ctx, 1)
	if err != nil || len(rep.Warnings) != 0 || rep.Problem != "" {
		t.Fatalf("access log: %+v %v", rep.Warnings, err)
	}
	entries := rep.Entries
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
	if _, err := w.Rotate(ctx, 2, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := w.Relationship(ctx, 2); err != nil || r.Rotation != 1 {
		t.Fatalf("after rotation: %+v %v", r, err)
	}
	// A dead gateway shows as such and does not block the other.
	n.Sites[1].Stop()
	time.Sleep(100 * time.Millisecond)
	recs, results, err = w.Records(ctx)
	if err != nil || results[0].Err != nil || results[1].Err == nil || len(recs) != 3 {
		t.Fatalf("with provider 2 down: %d records, %+v, %v", len(recs), results, err)
	}
}

// TestChangesPages: new-record notifications come from the gateway in pages
// of 1,000; the wallet reads them all, in order, and only those after since.
func TestChangesPages(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	w := n.wallet(t, patientWords)
	if err := w.Connect(ctx, 1, n.SeedPatient(t, 1, "pat", "", w, true)); err != nil {
		t.Fatal(err)
	}
	if ch, err := w.Changes(ctx, 1, 0); err != nil || len(ch) != 0 {
		t.Fatalf("before any record: %v %v", ch, err)
	}
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", testnet.ObservationBundle("pat", "a", 1500))
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", testnet.ObservationBundle("pat", "b", 600))
	all, err := w.Changes(ctx, 1, 0)
	if err != nil || len(all) != 2100 {
		t.Fatalf("all changes: %d %v", len(all), err)
	}
	ids := map[string]bool{}
	for i, c := range all {
		if i > 0 && c.Seq <= all[i-1].Seq {
			t.Fatalf("change %d out of order: %d after %d", i, c.Seq, all[i-1].Seq)
		}
		ids[c.ID] = true
	}
	if len(ids) != 2100 || !ids["a0"] || !ids["b599"] {
		t.Fatalf("%d distinct ids", len(ids))
	}
	last := all[len(all)-1].Seq
	// The newest change alone, as a cold read asks for it.
	r, err := w.Relationship(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		Changes []Change `json:"changes"`
		More    bool     `json:"more"`
		Latest  uint64   `json:"latest"`
	}
	if _, err := w.signedGet(ctx, r, "/patient/changes?since=0&limit=1", &head); err != nil || head.Latest != last || len(head.Changes) != 1 || !head.More {
		t.Fatalf("limit=1: %+v %v", head, err)
	}
	var ge *GatewayError
	if _, err := w.signedGet(ctx, r, "/patient/changes?limit=0", &head); !errors.As(err, &ge) || ge.Status != 400 {
		t.Fatalf("limit=0: %v", err)
	}
	if ch, err := w.Changes(ctx, 1, last); err != nil || len(ch) != 0 {
		t.Fatalf("nothing new: %d %v", len(ch), err)
	}
	n.staff(t, 1, "POST", "/admin/patients/pat/resources", testnet.ObservationBundle("pat", "c", 1))
	if ch, err := w.Changes(ctx, 1, last); err != nil || len(ch) != 1 || ch[0].ID != "c0" {
		t.Fatalf("one new: %v %v", ch, err)
	}
}

// laggingNode is a chain node a block behind the head until released: what
// a patient's app meets right after a desk enrolled them on another node.
type laggingNode struct {
	chainview.Source
	released atomic.Bool
}

func (l *laggingNode) HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error) {
	if number == nil && !l.released.Load() {
		head, err := l.Source.HeaderByNumber(ctx, nil)
		if err != nil {
			return nil, err
		}
		return l.Source.HeaderByNumber(ctx, new(big.Int).Sub(head.Number, big.NewInt(1)))
	}
	return l.Source.HeaderByNumber(ctx, number)
}

// TestConnectRightAfterEnrolment: the wallet's node is a block behind the
// desk that just enrolled the patient. Connect waits for the enrolment to
// arrive instead of failing at once; if it never does, it says plainly what
// happened.
func TestConnectRightAfterEnrolment(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	keys, err := delegate.FromMnemonic(patientWords, "")
	if err != nil {
		t.Fatal(err)
	}
	node := &laggingNode{Source: n.Chain.Backend}
	v, err := chainview.New(node, n.Chain.D)
	if err != nil {
		t.Fatal(err)
	}
	w := New(keys, v, n.Chain.D, n.Prover)
	code := n.SeedPatient(t, 1, "pat", "", w, true) // the enrolment is the newest block
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := w.Enrolled(); ok {
		t.Fatal("the lagging node already shows the enrolment")
	}
	// Never caught up: a plain message, after the wait.
	w.enrolWait = 300 * time.Millisecond
	err = w.Connect(ctx, 1, code)
	if !errors.Is(err, ErrNotEnrolled) || !strings.Contains(err.Error(), "try again in a minute") {
		t.Fatalf("connect on a node that never catches up: %v", err)
	}
	// Catching up while the wallet waits.
	w.enrolWait = 15 * time.Second
	time.AfterFunc(time.Second, func() { node.released.Store(true) })
	if err := w.Connect(ctx, 1, code); err != nil {
		t.Fatalf("connect while the node catches up: %v", err)
	}
	if ok, _ := w.Enrolled(); !ok {
		t.Fatal("not enrolled after connecting")
	}
}

// TestBucketPaths: a wallet with no copy of the registry's tree (its view
// reads no registry event) finds its leaf in the enrolments once, fetches
// its path by bucket from the gateways, and connects at two providers —
// the proofs' roots are ones the chain knows, or the opens would fail.
func TestBucketPaths(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 2)
	keys, err := delegate.FromMnemonic(patientWords, "")
	if err != nil {
		t.Fatal(err)
	}
	v, err := chainview.NewWithoutTree(n.Chain.Backend, n.Chain.D)
	if err != nil {
		t.Fatal(err)
	}
	w := New(keys, v, n.Chain.D, n.Prover)
	w.UseBucketPaths(n.Chain.Backend, 0)
	// Others enrolled before and after: the patient's leaf is not the first.
	for i := range 5 {
		other, _ := delegate.FromMnemonic(viewerWords, fmt.Sprint(i))
		c, _ := other.Commitment()
		n.staff(t, 1, "POST", "/admin/patients", fmt.Sprintf(`{"id":"o%d"}`, i))
		n.staff(t, 1, "POST", fmt.Sprintf("/admin/patients/o%d/enrol", i), `{"commitment":"`+zkhash.Hex(c)+`"}`)
	}
	if ok, err := w.Enrolled(); ok || err != nil {
		t.Fatalf("enrolled before the desk enrolled it: %v %v", ok, err)
	}
	code1 := n.SeedPatient(t, 1, "pat", "", w, true)
	code2 := n.SeedPatient(t, 2, "pat", "", w, false)
	if ok, err := w.Enrolled(); !ok || err != nil {
		t.Fatalf("not enrolled after the desk enrolled it: %v %v", ok, err)
	}
	for p, code := range map[uint32]string{1: code1, 2: code2} {
		if err := w.Connect(ctx, p, code); err != nil {
			t.Fatalf("connect at %d by bucket paths: %v", p, err)
		}
	}
	if v.Leaves() != 0 {
		t.Fatalf("the view holds %d leaves", v.Leaves())
	}
	if _, err := v.MerkleProof(zkhash.FromUint64(1)); !errors.Is(err, chainview.ErrNoTree) {
		t.Fatalf("the view's MerkleProof: %v", err)
	}
	if leaf := w.buckets.leaf; leaf != 5 {
		t.Fatalf("the wallet found itself at leaf %d, want 5", leaf)
	}

	// A device that remembers its leaf does not look for it again; a wrong
	// memory is caught by the path's leaf and corrected.
	key, err := keys.DeviceStoreKey()
	if err != nil {
		t.Fatal(err)
	}
	store, err := devstore.Open(filepath.Join(t.TempDir(), "device"), key)
	if err != nil {
		t.Fatal(err)
	}
	w.Remember(store)
	if err := w.rememberLeaf(5); err != nil {
		t.Fatal(err)
	}
	scans := &countingNode{RegistryReader: n.Chain.Backend, registry: n.Chain.D.PatientRegistry}
	v2, _ := chainview.NewWithoutTree(n.Chain.Backend, n.Chain.D)
	w2 := New(keys, v2, n.Chain.D, n.Prover)
	w2.Remember(store)
	w2.UseBucketPaths(scans, 0)
	if _, _, err := w2.ownership(ctx, 1, circuits.ActionOpen, common.Address{1}, 0); err != nil {
		t.Fatalf("a proof from the remembered leaf: %v", err)
	}
	if scans.n.Load() != 0 {
		t.Fatalf("the registry was read %d times with the leaf remembered", scans.n.Load())
	}
	if err := w2.rememberLeaf(3); err != nil {
		t.Fatal(err)
	}
	w3 := New(keys, v2, n.Chain.D, n.Prover)
	w3.Remember(store)
	w3.UseBucketPaths(scans, 0)
	w3.enrolWait = 5 * time.Second
	if _, _, err := w3.ownership(ctx, 1, circuits.ActionOpen, common.Address{1}, 0); err != nil {
		t.Fatalf("a proof after a wrong memory: %v", err)
	}
	// (By the locator note the first wallet filed: TestLocatorNote.)
	if i, ok := w3.recallLeaf(); !ok || i != 5 {
		t.Fatalf("the wrong memory was not corrected: %d %v", i, ok)
	}
}

// countingNode counts the log queries for the registry's events.
type countingNode struct {
	RegistryReader
	registry common.Address
	n        atomic.Int64
}

func (c *countingNode) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	if slices.Contains(q.Addresses, c.registry) {
		c.n.Add(1)
	}
	return c.RegistryReader.FilterLogs(ctx, q)
}

// lowestScan records the lowest block a registry look started at.
type lowestScan struct {
	RegistryReader
	registry common.Address
	mu       sync.Mutex
	lowest   uint64 // 0: no look yet
}

func (l *lowestScan) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	if slices.Contains(q.Addresses, l.registry) && q.FromBlock != nil {
		l.mu.Lock()
		if from := q.FromBlock.Uint64(); l.lowest == 0 || from < l.lowest {
			l.lowest = from
		}
		l.mu.Unlock()
	}
	return l.RegistryReader.FilterLogs(ctx, q)
}

// TestLeafLookResumes: a device remembers how far it looked for its
// enrolment, so a later session does not read the registry's history again
// (only the last blocks, in case a reorg changed them); a seed made on this
// device is looked for from when it was made; a seed restored from its
// words, from the registry's deployment.
func TestLeafLookResumes(t *testing.T) {
	n := newNet(t, 2)
	d := n.Chain.D
	wallet := func(words string, store *devstore.Store) (*Wallet, *lowestScan) {
		t.Helper()
		keys, err := delegate.FromMnemonic(words, "")
		if err != nil {
			t.Fatal(err)
		}
		v, err := chainview.NewWithoutTree(n.Chain.Backend, d)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		scans := &lowestScan{RegistryReader: n.Chain.Backend, registry: d.PatientRegistry}
		w := New(keys, v, d, n.Prover)
		w.Remember(store)
		w.UseBucketPaths(scans, 0)
		return w, scans
	}
	storeOf := func(words string) *devstore.Store {
		t.Helper()
		keys, _ := delegate.FromMnemonic(words, "")
		key, err := keys.DeviceStoreKey()
		if err != nil {
			t.Fatal(err)
		}
		s, err := devstore.Open(filepath.Join(t.TempDir(), "device"), key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	blocks := func(k int) {
		for range k {
			n.Chain.Sim.Commit()
		}
	}
	blocks(3 * reorgMargin)

	// Not enrolled yet: the first look reads from the deployment, the
	// next session only the last reorgMargin blocks before where it stopped.
	store := storeOf(patientWords)
	w1, scans1 := wallet(patientWords, store)
	if ok, err := w1.Enrolled(); ok || err != nil {
		t.Fatalf("enrolled before any desk: %v %v", ok, err)
	}
	if scans1.lowest != d.Block {
		t.Fatalf("the first look started at block %d, not the deployment's %d", scans1.lowest, d.Block)
	}
	stopped := w1.buckets.from
	blocks(reorgMargin)
	n.SeedPatient(t, 1, "pat", "", w1, true)
	w2, scans2 := wallet(patientWords, store)
	if ok, err := w2.Enrolled(); !ok || err != nil {
		t.Fatalf("not found once enrolled: %v %v", ok, err)
	}
	if want := stopped - reorgMargin; scans2.lowest != want {
		t.Fatalf("the second session's look started at block %d, want %d", scans2.lowest, want)
	}

	// A seed made here: looked for from its making on.
	fresh := storeOf(viewerWords)
	w3, scans3 := wallet(viewerWords, fresh)
	made := w3.view.Head()
	if err := w3.SeedMadeNow(); err != nil {
		t.Fatal(err)
	}
	blocks(2 * reorgMargin)
	if ok, err := w3.Enrolled(); ok || err != nil {
		t.Fatalf("a new seed enrolled: %v %v", ok, err)
	}
	if want := made - reorgMargin; scans3.lowest != want {
		t.Fatalf("a new seed's look started at block %d, want %d", scans3.lowest, want)
	}
	// The same words restored on another device: from the deployment.
	w4, scans4 := wallet(viewerWords, storeOf(viewerWords))
	if ok, err := w4.Enrolled(); ok || err != nil {
		t.Fatalf("restored: %v %v", ok, err)
	}
	if scans4.lowest != d.Block {
		t.Fatalf("a restored seed's look started at block %d, not the deployment's %d", scans4.lowest, d.Block)
	}
}

// TestLocatorNote: a wallet that proved from its leaf files its locator
// note; the same words restored on a new device find the leaf from the
// note, reading no registry event; a note of the wrong leaf is caught by
// the path, the events are read, and the note is corrected.
func TestLocatorNote(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 2)
	d := n.Chain.D
	for i := range 5 {
		other, _ := delegate.FromMnemonic(viewerWords, fmt.Sprint(i))
		c, _ := other.Commitment()
		n.staff(t, 1, "POST", "/admin/patients", fmt.Sprintf(`{"id":"o%d"}`, i))
		n.staff(t, 1, "POST", fmt.Sprintf("/admin/patients/o%d/enrol", i), `{"commitment":"`+zkhash.Hex(c)+`"}`)
	}
	// device is the wallet of patientWords on a device of its own.
	device := func() (*Wallet, *countingNode) {
		t.Helper()
		keys, err := delegate.FromMnemonic(patientWords, "")
		if err != nil {
			t.Fatal(err)
		}
		key, _ := keys.DeviceStoreKey()
		store, err := devstore.Open(filepath.Join(t.TempDir(), "device"), key)
		if err != nil {
			t.Fatal(err)
		}
		v, err := chainview.NewWithoutTree(n.Chain.Backend, d)
		if err != nil {
			t.Fatal(err)
		}
		scans := &countingNode{RegistryReader: n.Chain.Backend, registry: d.PatientRegistry}
		w := New(keys, v, d, n.Prover)
		w.Remember(store)
		w.UseBucketPaths(scans, 0)
		w.enrolWait = 5 * time.Second
		return w, scans
	}
	prove := func(w *Wallet) {
		t.Helper()
		if _, _, err := w.ownership(ctx, 1, circuits.ActionOpen, common.Address{1}, 0); err != nil {
			t.Fatalf("a proof: %v", err)
		}
	}

	// A restored device before any note: the events, from the deployment.
	first, scans := device()
	if ok, err := first.Enrolled(); ok || err != nil {
		t.Fatalf("enrolled before the desk: %v %v", ok, err)
	}
	n.SeedPatient(t, 1, "pat", "", first, true)
	prove(first)
	if scans.n.Load() == 0 {
		t.Fatal("no note, yet the events were not read")
	}
	if m := first.recallRegistry(); m.Leaf != 5 || !m.Filed {
		t.Fatalf("after the first proof the device remembers %+v, want leaf 5 filed", m)
	}

	// Restored again: the note, not the events.
	second, scans := device()
	prove(second)
	if got := scans.n.Load(); got != 0 {
		t.Fatalf("a restored device read the registry's events %d times despite its note", got)
	}
	if m := second.recallRegistry(); m.Leaf != 5 || !m.Filed {
		t.Fatalf("the restored device remembers %+v", m)
	}

	// A note of the wrong leaf (filed with a valid proof: only the words
	// can): the path shows it, the events find the leaf, the note is filed
	// right again.
	wrong, err := second.sealLeaf(3)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := second.keys.Commitment()
	path, err := second.bucketPath(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := second.fileNote(ctx, path, wrong); !ok || err != nil {
		t.Fatalf("filing a note: %v %v", ok, err)
	}
	third, scans := device()
	if i, err := third.findLocator(ctx); i != 3 || err != nil {
		t.Fatalf("the gateways' note says %d (%v), want the wrong 3", i, err)
	}
	prove(third)
	if scans.n.Load() == 0 {
		t.Fatal("a wrong note was believed")
	}
	if m := third.recallRegistry(); m.Leaf != 5 || !m.Filed {
		t.Fatalf("after a wrong note the device remembers %+v", m)
	}
	fourth, scans := device()
	prove(fourth)
	if got := scans.n.Load(); got != 0 {
		t.Fatalf("the corrected note was not used: %d reads", got)
	}

	// A device that knows its leaf but never filed (connected before notes
	// existed) files once unlocked (KeepLocator), and then not again.
	wrong2, _ := fourth.sealLeaf(2)
	if ok, err := fourth.fileNote(ctx, path, wrong2); !ok || err != nil {
		t.Fatalf("filing a note: %v %v", ok, err)
	}
	if err := fourth.putRegistry(registryMemory{Leaf: 5}); err != nil {
		t.Fatal(err)
	}
	fourth.buckets.filed = false
	if err := fourth.KeepLocator(ctx); err != nil {
		t.Fatal(err)
	}
	if m := fourth.recallRegistry(); m.Leaf != 5 || !m.Filed {
		t.Fatalf("after KeepLocator the device remembers %+v", m)
	}
	if i, err := fourth.findLocator(ctx); i != 5 || err != nil {
		t.Fatalf("the gateways' note after KeepLocator says %d (%v)", i, err)
	}
	if err := fourth.KeepLocator(ctx); err != nil {
		t.Fatal(err)
	}

	// A note does not open for other words, nor on another network.
	if _, err := fourth.openNote(wrong[:len(wrong)-1]); err == nil {
		t.Fatal("a truncated note opened")
	}
	tampered := bytes.Clone(wrong)
	tampered[15] ^= 1
	if _, err := fourth.openNote(tampered); err == nil {
		t.Fatal("a changed note opened")
	}
	otherKeys, _ := delegate.FromMnemonic(viewerWords, "")
	if _, err := New(otherKeys, fourth.view, d, n.Prover).openNote(wrong); err == nil {
		t.Fatal("another seed opened the note")
	}
	elsewhere := *d
	elsewhere.PatientRegistry = common.Address{9}
	if _, err := New(fourth.keys, fourth.view, &elsewhere, n.Prover).openNote(wrong); err == nil {
		t.Fatal("the note opened for another registry")
	}
}
