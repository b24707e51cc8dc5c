package wallet

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/zkhash"
)

// connected returns a wallet connected at provider 1 of n, with a few records.
func connected(t *testing.T, n testNet) *Wallet {
	t.Helper()
	w := n.wallet(t, patientWords)
	if err := w.Connect(context.Background(), 1, n.SeedPatient(t, 1, "pat", testnet.ObservationBundle("pat", "o", 3), w, true)); err != nil {
		t.Fatal(err)
	}
	return w
}

// viewerCv is the viewer commitment of the wallet restored from words.
func viewerCv(t *testing.T, v *Wallet) fr.Element {
	t.Helper()
	s, err := v.ViewerCommitment()
	if err != nil {
		t.Fatal(err)
	}
	cv, err := ParseViewerCommitment(s)
	if err != nil {
		t.Fatal(err)
	}
	return cv
}

// grantID is g = H(D_grant; Cv, tag, k) of a share bundle given to cv.
func grantID(t *testing.T, b ShareBundle, cv fr.Element) [32]byte {
	t.Helper()
	tag, err1 := zkhash.ParseHex(b.Tag)
	k, err2 := zkhash.ParseHex(b.K)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return zkhash.Bytes32(zkhash.Grant(cv, tag, k))
}

// TestShareSecretsPerViewer: two anonymous shares made at the same moment to
// two viewers get different grant secrets k and grant ids g (k used to come
// from the chain's grant count, which both saw as the same); sharing again
// with the same viewer gives the same g, so the viewer's bundle keeps working
// and the chain holds one grant per viewer.
func TestShareSecretsPerViewer(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	w := connected(t, n)
	viewers := []*Wallet{n.wallet(t, viewerWords), n.wallet(t, "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about")}
	obs, _ := access.NewScope("Observation")
	bundles := make([]ShareBundle, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, v := range viewers {
		cv := viewerCv(t, v)
		wg.Add(1)
		go func() {
			defer wg.Done()
			bundles[i], errs[i] = w.ShareAnonymous(ctx, 1, cv, obs, access.Treatment, time.Now().Add(48*time.Hour))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent shares: %v", err)
	}
	if bundles[0].K == bundles[1].K {
		t.Fatal("two viewers got the same grant secret k")
	}
	g0, g1 := grantID(t, bundles[0], viewerCv(t, viewers[0])), grantID(t, bundles[1], viewerCv(t, viewers[1]))
	if g0 == g1 {
		t.Fatal("two viewers got the same grant id g")
	}
	for i, v := range viewers {
		if recs, err := v.ReadShared(ctx, bundles[i]); err != nil || len(recs) != 3 {
			t.Fatalf("viewer %d reads: %d %v", i, len(recs), err)
		}
	}
	// The same viewer again (wider scope, later expiry): the same k and g,
	// the grant replaced in place.
	both, _ := access.NewScope("Observation", "Patient")
	again, err := w.ShareAnonymous(ctx, 1, viewerCv(t, viewers[0]), both, access.Family, time.Now().Add(96*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if again.K != bundles[0].K || grantID(t, again, viewerCv(t, viewers[0])) != g0 {
		t.Fatal("sharing again with the same viewer changed its grant id")
	}
	r, err := w.Relationship(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var anon int
	for _, g := range r.Grants {
		if g.Kind == access.AnonymousGrantee {
			anon++
			if g.Grantee == g0 && (g.Scope != both || g.Purpose != access.Family) {
				t.Fatalf("the replaced grant: %+v", g)
			}
		}
	}
	if anon != 2 {
		t.Fatalf("%d anonymous grants on chain, want 2 (one per viewer)", anon)
	}
	if recs, err := viewers[0].ReadShared(ctx, bundles[0]); err != nil || len(recs) != 3 {
		t.Fatalf("the first bundle after sharing again: %d %v", len(recs), err)
	}
}

// TestGrantExpiryRounded: a grant's expiry is rounded up to the end of its
// UTC day, so shares made at several providers in one session do not carry
// the same second; the chain holds the rounded value.
func TestGrantExpiryRounded(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ in, want string }{
		{"2031-03-04T13:22:10Z", "2031-03-05T00:00:00Z"},
		{"2031-03-04T00:00:01Z", "2031-03-05T00:00:00Z"},
		{"2031-03-05T00:00:00Z", "2031-03-05T00:00:00Z"},
		{"2031-03-04T23:30:00-02:00", "2031-03-06T00:00:00Z"}, // 01:30 UTC on the 5th
	} {
		in, _ := time.Parse(time.RFC3339, c.in)
		if got := GrantExpiry(in).UTC().Format(time.RFC3339); got != c.want {
			t.Errorf("GrantExpiry(%s) = %s, want %s", c.in, got, c.want)
		}
	}
	n := newNet(t, 1)
	w := connected(t, n)
	doc, _ := n.wallet(t, viewerWords).Keys().Wallet()
	obs, _ := access.NewScope("Observation")
	asked := time.Now().Add(30 * 24 * time.Hour)
	if err := w.ShareWithAddress(ctx, 1, doc.Address, obs, access.Treatment, asked); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ShareAnonymous(ctx, 1, viewerCv(t, n.wallet(t, viewerWords)), obs, access.Treatment, asked); err != nil {
		t.Fatal(err)
	}
	r, _ := w.Relationship(ctx, 1)
	for _, g := range r.Grants {
		if g.Expiry%86400 != 0 || g.Expiry < uint64(asked.Unix()) || g.Expiry >= uint64(asked.Unix())+86400 {
			t.Fatalf("expiry %d for a share asked until %d: not the end of that UTC day", g.Expiry, asked.Unix())
		}
	}
}

// TestRotateKeepsChosenGrants: the rotation lists the grants in force that it
// will end, ends them all, and re-issues exactly the ones kept — same
// grantee, scope, purpose and expiry, anonymous ones under the same g, so
// the kept viewer's bundle keeps working and the other's stops.
func TestRotateKeepsChosenGrants(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	w := connected(t, n)
	obs, _ := access.NewScope("Observation")
	doc, _ := n.wallet(t, viewerWords).Keys().Wallet()
	nurse, _ := n.wallet(t, "legal winner thank year wave sausage worth useful legal winner thank yellow").Keys().Delegate(9, 0)
	if err := w.ShareWithAddress(ctx, 1, doc.Address, obs, access.Emergency, time.Now().Add(10*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := w.ShareWithAddress(ctx, 1, nurse.Address, access.AllTypes, access.Treatment, time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := w.Revoke(ctx, 1, access.AddressGrantee, contracts.AddressGrantee(nurse.Address)); err != nil {
		t.Fatal(err)
	}
	kept, dropped := n.wallet(t, viewerWords), n.wallet(t, "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about")
	keptBundle, err := w.ShareAnonymous(ctx, 1, viewerCv(t, kept), obs, access.Research, time.Now().Add(5*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	droppedBundle, err := w.ShareAnonymous(ctx, 1, viewerCv(t, dropped), obs, access.Treatment, time.Now().Add(5*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := w.PlanRotation(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Next != 1 || len(plan.Ending) != 3 {
		t.Fatalf("plan: next %d, ending %+v (the revoked grant is not in force)", plan.Next, plan.Ending)
	}
	before := map[GrantRef]chainview.Grant{}
	for _, g := range plan.Ending {
		before[RefOf(g)] = g
	}
	keepDoc := GrantRef{Kind: access.AddressGrantee, Grantee: contracts.AddressGrantee(doc.Address)}
	keepViewer := GrantRef{Kind: access.AnonymousGrantee, Grantee: grantID(t, keptBundle, viewerCv(t, kept))}

	// Keeping a grant that is not in force (the revoked one) is refused
	// before anything happens.
	if _, err := w.Rotate(ctx, 1, []GrantRef{keepDoc, {Kind: access.AddressGrantee, Grantee: contracts.AddressGrantee(nurse.Address)}}); err == nil || !strings.Contains(err.Error(), "not in force") {
		t.Fatalf("keeping a revoked grant: %v", err)
	}
	if r, _ := w.Relationship(ctx, 1); r.Rotation != 0 {
		t.Fatal("a refused rotation rotated")
	}

	res, err := w.Rotate(ctx, 1, []GrantRef{keepViewer, keepDoc, keepDoc})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rotation != 1 || len(res.Ended) != 3 || len(res.Reissued) != 2 {
		t.Fatalf("result: rotation %d, %d ended, %d re-issued", res.Rotation, len(res.Ended), len(res.Reissued))
	}
	r, err := w.Relationship(ctx, 1)
	if err != nil || r.Rotation != 1 || !r.OwnedHere {
		t.Fatalf("after the rotation: %+v %v", r, err)
	}
	inForce := map[GrantRef]chainview.Grant{}
	now := uint64(time.Now().Unix())
	for _, g := range r.Grants {
		if g.Active(now) {
			inForce[RefOf(g)] = g
		}
	}
	if len(inForce) != 2 {
		t.Fatalf("%d grants in force after the rotation, want the 2 kept: %+v", len(inForce), r.Grants)
	}
	for _, ref := range []GrantRef{keepDoc, keepViewer} {
		g, old := inForce[ref], before[ref]
		if g.Epoch != 1 || g.Scope != old.Scope || g.Purpose != old.Purpose || g.Expiry != old.Expiry {
			t.Fatalf("re-issued %+v, was %+v", g, old)
		}
	}
	if recs, err := kept.ReadShared(ctx, keptBundle); err != nil || len(recs) != 3 {
		t.Fatalf("the kept viewer's bundle after the rotation: %d %v", len(recs), err)
	}
	var ge *GatewayError
	if _, err := dropped.ReadShared(ctx, droppedBundle); !errors.As(err, &ge) || ge.Status != 403 || !strings.Contains(ge.Message, "replaced the delegate") {
		t.Fatalf("the dropped viewer's bundle after the rotation: %v", err)
	}
	// The plan of the next rotation lists the re-issued grants.
	if plan, err := w.PlanRotation(ctx, 1); err != nil || plan.Next != 2 || len(plan.Ending) != 2 {
		t.Fatalf("next plan: %+v %v", plan, err)
	}
}
