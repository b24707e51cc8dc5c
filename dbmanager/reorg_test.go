package dbmanager

import (
	"bytes"
	"context"
	"testing"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// TestRevokedReaderNotReadmittedByReorg: a revocation the gateway enforced
// is taken off the chain by a reorg (the losing side of a partition): the
// chain says the grant is in force again, but the gateway keeps refusing
// the reader, until the owner grants again.
func TestRevokedReaderNotReadmittedByReorg(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()
	doctor := simchain.Key("doctor")
	grantee := contracts.AddressGrantee(simchain.Addr(doctor))
	if r := w.grant(1, grantee, access.AllTypes, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("doctor: %d %s", r.status, r.body)
	}
	before, err := w.chain.Backend.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := w.revoke(1, grantee); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 {
		t.Fatalf("doctor after the revocation: %d %s", r.status, r.body)
	}

	if err := w.chain.Sim.Fork(before.Hash()); err != nil {
		t.Fatal(err)
	}
	w.chain.Sim.Rollback()
	w.chain.Sim.Commit()
	w.chain.Sim.Commit()
	if g, _ := w.chain.Client.GrantOf(ctx, w.tag, 1, grantee); g.Revoked {
		t.Fatal("the reorg left the revocation on chain")
	}
	for i := 0; i < 3; i++ {
		if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 || !bytes.Contains(r.body, []byte("revoked")) {
			t.Fatalf("doctor after the reorg removed the revocation: %d %s", r.status, r.body)
		}
	}
	// The owner grants again (the revocation's nonce, free again): in force.
	if r := w.grant(1, grantee, access.AllTypes, access.Treatment); r.status != 200 {
		t.Fatalf("grant again: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("doctor after the owner granted again: %d %s", r.status, r.body)
	}
}
