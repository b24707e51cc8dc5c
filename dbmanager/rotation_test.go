package dbmanager

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// rotate replaces the patient's delegate at provider 1 with rotation
// number counter's, relayed through the gateway, and signs with it from then on.
func (w *world) rotate(counter uint32) {
	w.t.Helper()
	t := w.t
	if err := w.view.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	next, err := w.keys.Delegate(1, counter)
	if err != nil {
		t.Fatal(err)
	}
	cm, _ := w.keys.Commitment()
	path, err := w.view.MerkleProof(cm)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := w.keys.Identity()
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionRotate, next.Address, uint64(counter), w.chain.ChainID, w.chain.D.Relationships),
	})
	if err != nil {
		t.Fatal(err)
	}
	r := w.post("/relay/rotate", map[string]string{"tag": hexutil.EncodeBig(w.tag), "newOwner": next.Address.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()})
	if r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	w.owner = next.PrivateKey()
}

// TestRotationEndsGrants is the lost phone: the thief, holding the old
// delegate, granted a friend everything, and an anonymous viewer holds a
// session. The patient rotates; from the next request on, both are refused
// with the reason, a fresh viewer session too. What the patient grants again
// with the new delegate is honoured.
func TestRotationEndsGrants(t *testing.T) {
	const ended = "the grant ended when the patient replaced the delegate that made it"
	w := newWorld(t)
	w.open()
	friend := simchain.Key("thief-friend")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(friend)), access.AllTypes, access.Treatment); r.status != 200 {
		t.Fatalf("the thief's grant: %d %s", r.status, r.body)
	}
	v, k, tagEl, _ := w.researchViewer()
	session := func() resp {
		t.Helper()
		return w.post("/auth/entitlement", w.entitlementBody(v, k, tagEl, w.newChallenge()))
	}
	r := session()
	if r.status != 200 {
		t.Fatalf("viewer session: %d %s", r.status, r.body)
	}
	token := r.json(t)["token"].(string)
	viewerRead := func() resp {
		// A research reader: it reads resources by its pseudonyms, which
		// a search gives it.
		req := httptest.NewRequest("GET", "/fhir/Observation", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		return w.do(req)
	}
	if r := w.get(friend, "/fhir/Condition/c1"); r.status != 200 {
		t.Fatalf("the friend before the rotation: %d %s", r.status, r.body)
	}
	if r := viewerRead(); r.status != 200 {
		t.Fatalf("the viewer before the rotation: %d %s", r.status, r.body)
	}

	w.rotate(1)
	for name, r := range map[string]func() resp{
		"address grantee":         func() resp { return w.get(friend, "/fhir/Condition/c1") },
		"open viewer session":     viewerRead,
		"new viewer session":      session,
		"address grantee, search": func() resp { return w.get(friend, "/fhir/Patient/$everything") },
	} {
		if got := r(); got.status != 403 || !bytes.Contains(got.body, []byte(ended)) {
			t.Errorf("%s after the rotation: %d %s", name, got.status, got.body)
		}
	}
	// The new delegate reads, and the patient's log shows the refusals with
	// their reason.
	r = w.get(w.owner, "/patient/log")
	if r.status != 200 {
		t.Fatalf("owner log with the new delegate: %d %s", r.status, r.body)
	}
	if n := bytes.Count(r.body, []byte(ended)); n != 4 {
		t.Fatalf("%d log entries give the reason, want 4: %s", n, r.body)
	}

	// The patient keeps the anonymous viewer: the same grant id, signed by
	// the new delegate. Its sessions work again; the friend stays out.
	obsOnly, _ := access.NewScope("Observation")
	g := zkhash.Grant(zkhash.ViewerCommitment(v), tagEl, k)
	if r := w.grant(2, zkhash.Bytes32(g), obsOnly, access.Research); r.status != 200 {
		t.Fatalf("re-grant: %d %s", r.status, r.body)
	}
	if r := session(); r.status != 200 {
		t.Fatalf("viewer session after the re-grant: %d %s", r.status, r.body)
	}
	if r := w.get(friend, "/fhir/Condition/c1"); r.status != 403 {
		t.Fatalf("the friend after the re-grant of another grantee: %d %s", r.status, r.body)
	}
	// Revoking the friend's ended grant is refused by the chain: nothing changes.
	if r := w.revoke(1, contracts.AddressGrantee(simchain.Addr(friend))); r.status != 409 || !bytes.Contains(r.body, []byte("GrantEnded")) {
		t.Fatalf("revoking an ended grant: %d %s", r.status, r.body)
	}
}
