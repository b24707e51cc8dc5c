package wallet

import (
	"context"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
)

// TestRevocationResubmittedAfterReorg: a revocation mined and then taken
// off the chain by a reorg stays in force in the wallet's view, which marks
// it; ResubmitRevocations signs it again with the free nonce and the chain
// holds it again; Revoke on a grant already revoked on chain sends nothing.
func TestRevocationResubmittedAfterReorg(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	w := connected(t, n)
	doc, _ := n.wallet(t, viewerWords).Keys().Wallet()
	grantee := contracts.AddressGrantee(doc.Address)
	if err := w.ShareWithAddress(ctx, 1, doc.Address, access.AllTypes, access.Treatment, time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, err := w.Relationship(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	before, err := n.Chain.Backend.HeaderByNumber(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Revoke(ctx, 1, access.AddressGrantee, grantee); err != nil {
		t.Fatal(err)
	}
	// The reorg: the revocation's block is replaced by empty ones, its
	// transaction dropped from the pool.
	if err := n.Chain.Sim.Fork(before.Hash()); err != nil {
		t.Fatal(err)
	}
	n.Chain.Sim.Rollback()
	n.Chain.Sim.Commit()
	n.Chain.Sim.Commit()
	if g, _ := n.Chain.Client.GrantOf(ctx, r.Tag, uint8(access.AddressGrantee), grantee); g.Revoked {
		t.Fatal("the reorg left the revocation on chain")
	}
	if err := w.View().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ := w.View().Grant(r.Tag, access.AddressGrantee, grantee); !g.Revoked || !g.RevokeReorged {
		t.Fatalf("wallet's view after the reorg: %+v", g)
	}

	sent, err := w.ResubmitRevocations(ctx)
	if err != nil || sent != 1 {
		t.Fatalf("re-submitted %d: %v", sent, err)
	}
	if g, _ := n.Chain.Client.GrantOf(ctx, r.Tag, uint8(access.AddressGrantee), grantee); !g.Revoked {
		t.Fatal("the re-submitted revocation is not on chain")
	}
	if g, _ := w.View().Grant(r.Tag, access.AddressGrantee, grantee); !g.Revoked || g.RevokeReorged {
		t.Fatalf("wallet's view after re-submitting: %+v", g)
	}
	// Nothing left to re-submit; revoking again sends nothing.
	nonce := w.View().Nonce(r.Tag)
	if sent, err := w.ResubmitRevocations(ctx); err != nil || sent != 0 {
		t.Fatalf("second sweep: %d %v", sent, err)
	}
	if err := w.Revoke(ctx, 1, access.AddressGrantee, grantee); err != nil {
		t.Fatalf("revoking a revoked grant: %v", err)
	}
	if got := w.View().Nonce(r.Tag); got != nonce {
		t.Fatalf("nonce %d after revoking a revoked grant, was %d: something was sent", got, nonce)
	}
}
