package chainview

import (
	"context"
	"math/big"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

func secret(label string) fr.Element {
	var s fr.Element
	s.SetBytes(crypto.Keccak256([]byte("chainview test/" + label)))
	return s
}

// open enrols s at provider p and opens its relationship for owner, proving
// against the view's own tree (as a client does).
func open(t *testing.T, c *simchain.Chain, v *View, p simchain.Provider, s fr.Element, owner common.Address) *big.Int {
	t.Helper()
	ctx := context.Background()
	tx, err := c.Client.Enrol(ctx, c.Auth(p.Gateway), zkhash.Big(zkhash.Commitment(s)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	path, err := v.MerkleProof(zkhash.Commitment(s))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	proof, pub, err := prover.New(ks).ProveOwnership(circuits.OwnershipWitness{
		Secret: s, Path: path, Provider: p.ID,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, c.ChainID, c.D.Relationships),
	})
	if err != nil {
		t.Fatal(err)
	}
	tx, err = c.Client.Open(ctx, c.Auth(p.Gateway), zkhash.Big(pub.Tag), p.ID, owner, zkhash.Big(pub.Root), proof[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
	return zkhash.Big(pub.Tag)
}

func grant(t *testing.T, c *simchain.Chain, relayer simchain.Provider, tag *big.Int, owner, grantee string, nonce uint32) contracts.GrantRequest {
	t.Helper()
	ctx := context.Background()
	g := contracts.GrantRequest{
		Tag: tag, GranteeKind: 1, Grantee: contracts.AddressGrantee(simchain.Addr(simchain.Key(grantee))),
		Scope: 5, Purpose: 1, Expiry: c.Now(t) + 3600, Nonce: nonce, Deadline: c.Now(t) + 600,
	}
	sig, err := contracts.Sign(simchain.Key(owner), contracts.GrantDigest(contracts.DomainSeparator(c.ChainID, c.D.Relationships), g))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Client.Grant(ctx, c.Auth(relayer.Gateway), g, sig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
	return g
}

func TestFollow(t *testing.T) {
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	v, err := New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	ps := v.Providers()
	if len(ps) != 2 || ps[0].Name != "Provider 1" || !ps[1].Active || ps[1].Gateway != simchain.Addr(c.Providers[1].Gateway) {
		t.Fatalf("providers %+v", ps)
	}
	signers, _ := v.ActiveSigners(ctx)
	chainSigners, _ := c.Client.Signers(ctx)
	if len(signers) != 2 || signers[0] != chainSigners[0] || signers[1] != chainSigners[1] {
		t.Fatalf("signers %v, chain %v", signers, chainSigners)
	}

	owner := simchain.Addr(simchain.Key("owner"))
	tag := open(t, c, v, c.Providers[0], secret("alice"), owner)
	g := grant(t, c, c.Providers[1], tag, "owner", "doctor", 0)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	rel, ok := v.Relationship(tag)
	if !ok || rel.Owner != owner || rel.Provider != 1 {
		t.Fatalf("relationship %+v %v", rel, ok)
	}
	got, ok := v.Grant(tag, GranteeAddress, g.Grantee)
	if !ok || got.Scope != 5 || got.Expiry != g.Expiry || got.Revoked || !got.Active(c.Now(t)) || got.Active(g.Expiry) {
		t.Fatalf("grant %+v %v", got, ok)
	}
	if len(v.GrantsOf(tag)) != 1 || len(v.GrantsTo(GranteeAddress, g.Grantee)) != 1 {
		t.Fatal("grant listings")
	}
	if root := v.Root(); zkhash.Big(root).Cmp(mustRoot(t, c)) != 0 {
		t.Fatal("view root differs from the chain's")
	}

	// Anchors, and a second sync with nothing new is a no-op.
	tx, err := c.Client.Anchor(ctx, c.Auth(c.Providers[0].Gateway), [32]byte{1}, 0, 2, [32]byte{2})
	if err != nil {
		t.Fatal(err)
	}
	c.Client.Wait(ctx, tx)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if a := v.Anchors(1); len(a) != 1 || a[0].Count != 2 || a[0].StateRoot != [32]byte{2} {
		t.Fatalf("anchors %+v", a)
	}
	if _, err := v.MerkleProof(zkhash.Commitment(secret("nobody"))); err == nil {
		t.Fatal("proof for an unenrolled commitment")
	}
}

func mustRoot(t *testing.T, c *simchain.Chain) *big.Int {
	t.Helper()
	v, err := New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return zkhash.Big(v.Root())
}

// TestReorg: a grant in a block that a reorg replaces disappears from the
// view; the replacing branch's grant appears.
func TestReorg(t *testing.T) {
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	v, err := New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	tag := open(t, c, v, c.Providers[0], secret("alice"), simchain.Addr(simchain.Key("owner")))
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := c.Backend.HeaderByNumber(ctx, nil)
	gA := grant(t, c, c.Providers[0], tag, "owner", "doctor-a", 0)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Grant(tag, GranteeAddress, gA.Grantee); !ok {
		t.Fatal("grant A not seen")
	}
	// Fork from before grant A; on the new branch the owner grants B instead
	// (same signature nonce, so A can never be re-included successfully).
	if err := c.Sim.Fork(before.Hash()); err != nil {
		t.Fatal(err)
	}
	c.Sim.Rollback()
	gB := grant(t, c, c.Providers[1], tag, "owner", "doctor-b", 0)
	c.Sim.Commit()
	c.Sim.Commit()
	head, _ := c.Backend.HeaderByNumber(ctx, nil)
	if head.Number.Uint64() <= before.Number.Uint64()+1 {
		t.Fatalf("fork did not become canonical (head %d)", head.Number)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	onChainA, _ := c.Client.GrantOf(ctx, tag, 1, gA.Grantee)
	onChainB, _ := c.Client.GrantOf(ctx, tag, 1, gB.Grantee)
	_, okA := v.Grant(tag, GranteeAddress, gA.Grantee)
	_, okB := v.Grant(tag, GranteeAddress, gB.Grantee)
	if okA != (onChainA.Scope != 0) || okB != (onChainB.Scope != 0) {
		t.Fatalf("view (A %v, B %v) differs from the chain (A %v, B %v)", okA, okB, onChainA.Scope != 0, onChainB.Scope != 0)
	}
	if okA || !okB {
		t.Fatalf("after the reorg: A %v, B %v; want only B", okA, okB)
	}
}
