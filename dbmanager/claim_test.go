package dbmanager

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestClaimUnknownRoot: an Ownership proof against a root the chain does not
// know (a stale wallet, a made-up tree) verifies off chain, but the chain
// refuses to open the relationship with it. The claim is refused before the
// tag is mapped — a refused claim writes nothing — so the patient's genuine
// claim succeeds afterwards.
func TestClaimUnknownRoot(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p1"}); r.status != 201 {
		t.Fatalf("create patient: %d %s", r.status, r.body)
	}
	cm, _ := w.keys.Commitment()
	if r := w.staff("POST", "/admin/patients/p1/enrol", map[string]string{"commitment": zkhash.Hex(cm)}); r.status != 200 {
		t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	if err := w.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	path, err := w.view.MerkleProof(cm)
	if err != nil {
		t.Fatal(err)
	}
	path.Siblings[7].SetUint64(12345) // another tree: a root the chain never had
	owner := simchain.Addr(w.owner)
	s, _ := w.keys.Identity()
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, w.chain.ChainID, w.chain.D.Relationships),
	})
	if err != nil {
		t.Fatal(err)
	}
	if root := w.view.Root(); pub.Root == root {
		t.Fatal("the tampered path has the chain's root")
	}
	claim := map[string]string{"tag": zkhash.Hex(pub.Tag), "owner": owner.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()}
	r := w.staff("POST", "/admin/patients/p1/claim", claim)
	if r.status != 400 || !strings.Contains(strings.ToLower(string(r.body)), "root") {
		t.Fatalf("claim against an unknown root: %d %s", r.status, r.body)
	}
	var tag store.Tag
	zkhash.Big(pub.Tag).FillBytes(tag[:])
	if p, err := w.cfg.Store.PatientByTag(ctx, tag); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused claim mapped the tag to %+v (%v)", p, err)
	}
	if r := w.staff("POST", "/admin/patients/p1/claim", w.claimFor(1, owner)); r.status != 200 {
		t.Fatalf("the genuine claim after the refused one: %d %s", r.status, r.body)
	}
}
