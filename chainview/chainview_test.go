package chainview

import (
	"context"
	"math/big"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/access"
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

// prove proves s's ownership at provider p for (action, owner, counter)
// against the view's tree, synced first (as a client does).
func prove(t *testing.T, c *simchain.Chain, v *View, p simchain.Provider, s fr.Element, action circuits.Action, owner common.Address, counter uint64) (prover.Proof, circuits.OwnershipPublic) {
	t.Helper()
	if err := v.Sync(context.Background()); err != nil {
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
		Signal: circuits.OwnershipSignal(action, owner, counter, c.ChainID, c.D.Relationships),
	})
	if err != nil {
		t.Fatal(err)
	}
	return proof, pub
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
	proof, pub := prove(t, c, v, p, s, circuits.ActionOpen, owner, 0)
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
	return grantTo(t, c, relayer, tag, owner, access.AddressGrantee, contracts.AddressGrantee(simchain.Addr(simchain.Key(grantee))), nonce)
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
	got, ok := v.Grant(tag, access.AddressGrantee, g.Grantee)
	if !ok || got.Scope != 5 || got.Expiry != g.Expiry || got.Revoked || !got.Active(c.Now(t)) || got.Active(g.Expiry) {
		t.Fatalf("grant %+v %v", got, ok)
	}
	if len(v.GrantsOf(tag)) != 1 || len(v.GrantsTo(access.AddressGrantee, g.Grantee)) != 1 {
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
	if _, ok := v.Grant(tag, access.AddressGrantee, gA.Grantee); !ok {
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
	_, okA := v.Grant(tag, access.AddressGrantee, gA.Grantee)
	_, okB := v.Grant(tag, access.AddressGrantee, gB.Grantee)
	if okA != (onChainA.Scope != 0) || okB != (onChainB.Scope != 0) {
		t.Fatalf("view (A %v, B %v) differs from the chain (A %v, B %v)", okA, okB, onChainA.Scope != 0, onChainB.Scope != 0)
	}
	if okA || !okB {
		t.Fatalf("after the reorg: A %v, B %v; want only B", okA, okB)
	}
}

// TestOwnedBy: the view indexes relationships by owner, so a gateway can
// refuse a delegate that already owns a relationship elsewhere; a reorg
// that removes an open removes it from the index too.
func TestOwnedBy(t *testing.T) {
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	v, err := New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	owner, other := simchain.Addr(simchain.Key("owner")), simchain.Addr(simchain.Key("other"))
	tag1 := open(t, c, v, c.Providers[0], secret("alice"), owner)
	before, _ := c.Backend.HeaderByNumber(ctx, nil)
	tag2 := open(t, c, v, c.Providers[1], secret("bob"), owner) // the same address at another provider
	open(t, c, v, c.Providers[1], secret("carol"), other)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := v.OwnedBy(owner)
	if len(got) != 2 || got[0].Tag.Cmp(got[1].Tag) >= 0 || (got[0].Tag.Cmp(tag1) != 0 && got[0].Tag.Cmp(tag2) != 0) {
		t.Fatalf("owned by %s: %+v", owner, got)
	}
	if got := v.OwnedBy(simchain.Addr(simchain.Key("nobody"))); len(got) != 0 {
		t.Fatalf("owned by nobody: %+v", got)
	}
	// Fork from before the second open: only the first remains.
	if err := c.Sim.Fork(before.Hash()); err != nil {
		t.Fatal(err)
	}
	c.Sim.Rollback() // the old branch's transactions are not re-mined
	for range 6 {    // longer than the old branch
		c.Sim.Commit()
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := v.OwnedBy(owner); len(got) != 1 || got[0].Tag.Cmp(tag1) != 0 || got[0].Provider != 1 {
		t.Fatalf("after the reorg: %+v", got)
	}
	if got := v.OwnedBy(other); len(got) != 0 {
		t.Fatalf("after the reorg, other owns %+v", got)
	}
}

// rotate proves s's ownership at p again for newOwner at counter and relays
// the rotation with auth.
func rotate(t *testing.T, c *simchain.Chain, v *View, auth *bind.TransactOpts, p simchain.Provider, s fr.Element, tag *big.Int, newOwner common.Address, counter uint64) {
	t.Helper()
	ctx := context.Background()
	proof, pub := prove(t, c, v, p, s, circuits.ActionRotate, newOwner, counter)
	tx, err := c.Client.Rotate(ctx, auth, tag, newOwner, zkhash.Big(pub.Root), proof[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
}

// TestRotationEndsGrants: a rotation ends the grants of the replaced owner
// in the view (Ended, not Active) in every query, a grant of the new owner
// is in force, and a reorg that undoes the rotation brings the old grants
// back into force.
func TestRotationEndsGrants(t *testing.T) {
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	v, err := New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := c.Providers[0], c.Providers[1]
	tag := open(t, c, v, p1, secret("alice"), simchain.Addr(simchain.Key("owner")))
	doctor := grant(t, c, p1, tag, "owner", "doctor", 0)
	anon := grantTo(t, c, p1, tag, "owner", access.AnonymousGrantee, zkhash.Bytes32(secret("g")), 1)
	type ref struct {
		kind    access.GranteeKind
		grantee [32]byte
	}
	both := []ref{{access.AddressGrantee, doctor.Grantee}, {access.AnonymousGrantee, anon.Grantee}}
	// state checks every way a caller can get the grants.
	state := func(when string, wantEnded bool) {
		t.Helper()
		if err := v.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		now := c.Now(t)
		for _, r := range both {
			g, ok := v.Grant(tag, r.kind, r.grantee)
			if !ok || g.Epoch != 0 || g.Ended != wantEnded || g.Active(now) == wantEnded {
				t.Fatalf("%s: grant %+v %v (ended %v, active %v); want ended %v", when, g, ok, g.Ended, g.Active(now), wantEnded)
			}
			for _, l := range [][]Grant{v.GrantsTo(r.kind, r.grantee), v.GrantsOf(tag)} {
				for _, x := range l {
					if x.Kind == r.kind && x.Grantee == r.grantee && (x.Ended != wantEnded || x.Active(now) == wantEnded) {
						t.Fatalf("%s: listed grant %+v; want ended %v", when, x, wantEnded)
					}
				}
			}
		}
	}
	state("before the rotation", false)

	before, _ := c.Backend.HeaderByNumber(ctx, nil)
	rotate(t, c, v, c.Auth(p2.Gateway), p1, secret("alice"), tag, simchain.Addr(simchain.Key("owner-1")), 1)
	state("after the rotation", true)
	if rel, _ := v.Relationship(tag); rel.Rotation != 1 {
		t.Fatalf("rotation %d", rel.Rotation)
	}
	// The new owner grants the doctor again: in force, epoch 1; the
	// anonymous grant stays ended.
	again := grant(t, c, p1, tag, "owner-1", "doctor", 2)
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if g, _ := v.Grant(tag, access.AddressGrantee, again.Grantee); g.Epoch != 1 || g.Ended || !g.Active(c.Now(t)) {
		t.Fatalf("re-granted: %+v", g)
	}
	if g, _ := v.Grant(tag, access.AnonymousGrantee, anon.Grantee); !g.Ended {
		t.Fatalf("anonymous grant after the re-grant: %+v", g)
	}

	// Fork from before the rotation and extend the fork with empty blocks
	// until it is canonical. Commit no further: the reorg puts the rotation
	// back in the pool, and the next block would include it again.
	if err := c.Sim.Fork(before.Hash()); err != nil {
		t.Fatal(err)
	}
	c.Sim.Rollback()
	for i := 0; ; i++ {
		if i == 5 {
			t.Fatal("the fork did not become canonical")
		}
		c.Sim.Commit()
		if rel, err := c.Client.Relationship(ctx, tag); err == nil && rel.Rotation == 0 {
			break
		}
	}
	state("after a reorg that undid the rotation", false)
}

func grantTo(t *testing.T, c *simchain.Chain, relayer simchain.Provider, tag *big.Int, owner string, kind access.GranteeKind, grantee [32]byte, nonce uint32) contracts.GrantRequest {
	t.Helper()
	ctx := context.Background()
	g := contracts.GrantRequest{
		Tag: tag, GranteeKind: uint8(kind), Grantee: grantee,
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

// revokeGrant revokes the address grant of grantee with owner's signature
// at nonce, relayed by relayer.
func revokeGrant(t *testing.T, c *simchain.Chain, relayer simchain.Provider, tag *big.Int, owner, grantee string, nonce uint32) {
	t.Helper()
	ctx := context.Background()
	rv := contracts.RevokeRequest{Tag: tag, GranteeKind: uint8(access.AddressGrantee), Grantee: contracts.AddressGrantee(simchain.Addr(simchain.Key(grantee))), Nonce: nonce, Deadline: c.Now(t) + 600}
	sig, err := contracts.Sign(simchain.Key(owner), contracts.RevokeDigest(contracts.DomainSeparator(c.ChainID, c.D.Relationships), rv))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Client.Revoke(ctx, c.Auth(relayer.Gateway), rv, sig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
}

// reorgTo makes the chain forget every block after parent: the blocks'
// transactions, put back in the pool by the reorg, are dropped (as a
// partition's losing side's are when their deadline passes), and two empty
// blocks are sealed on the new branch.
func reorgTo(t *testing.T, c *simchain.Chain, parent common.Hash) {
	t.Helper()
	if err := c.Sim.Fork(parent); err != nil {
		t.Fatal(err)
	}
	c.Sim.Rollback()
	c.Sim.Commit()
	c.Sim.Commit()
}

// TestRevocationFinality: a revocation the view applied and a reorg then
// removed keeps the grant revoked (RevokeReorged) although the chain says
// it is in force — until the chain includes a revocation again, or the
// owner grants again. The revoked grant itself included again by the new
// branch does not lift it.
func TestRevocationFinality(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// after the reorg: what happens on the new branch
		then        func(t *testing.T, c *simchain.Chain, tag *big.Int)
		wantRevoked bool
		wantReorged bool
	}{
		{"nothing more", func(*testing.T, *simchain.Chain, *big.Int) {}, true, true},
		{"revocation included again", func(t *testing.T, c *simchain.Chain, tag *big.Int) {
			revokeGrant(t, c, c.Providers[1], tag, "owner", "doctor", 1)
		}, true, false},
		{"owner grants again", func(t *testing.T, c *simchain.Chain, tag *big.Int) {
			grant(t, c, c.Providers[1], tag, "owner", "doctor", 1)
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := simchain.New(t, 2, nil)
			v, err := New(c.Backend, c.D)
			if err != nil {
				t.Fatal(err)
			}
			tag := open(t, c, v, c.Providers[0], secret("alice"), simchain.Addr(simchain.Key("owner")))
			g := grant(t, c, c.Providers[0], tag, "owner", "doctor", 0)
			if err := v.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			before, _ := c.Backend.HeaderByNumber(ctx, nil)
			revokeGrant(t, c, c.Providers[0], tag, "owner", "doctor", 1)
			if err := v.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := v.Grant(tag, access.AddressGrantee, g.Grantee); !got.Revoked || got.RevokeReorged || got.Active(c.Now(t)) {
				t.Fatalf("after the revocation: %+v", got)
			}

			reorgTo(t, c, before.Hash())
			if onChain, _ := c.Client.GrantOf(ctx, tag, 1, g.Grantee); onChain.Revoked {
				t.Fatal("the reorg left the revocation on chain")
			}
			if err := v.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := v.Grant(tag, access.AddressGrantee, g.Grantee); !got.Revoked || !got.RevokeReorged || got.Active(c.Now(t)) {
				t.Fatalf("after the reorg removed the revocation: %+v; want it still revoked", got)
			}
			if v.Nonce(tag) != 1 {
				t.Fatalf("nonce %d after the reorg, want 1 (the revocation's is free again)", v.Nonce(tag))
			}

			tc.then(t, c, tag)
			if err := v.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ := v.Grant(tag, access.AddressGrantee, g.Grantee)
			if got.Revoked != tc.wantRevoked || got.RevokeReorged != tc.wantReorged || got.Active(c.Now(t)) == tc.wantRevoked {
				t.Fatalf("then: %+v; want revoked %v, reorged %v", got, tc.wantRevoked, tc.wantReorged)
			}
			for _, l := range [][]Grant{v.GrantsOf(tag), v.GrantsTo(access.AddressGrantee, g.Grantee)} {
				if len(l) != 1 || l[0].Revoked != tc.wantRevoked || l[0].RevokeReorged != tc.wantReorged {
					t.Fatalf("listed: %+v", l)
				}
			}
		})
	}

	// The revoked grant itself, included again by the new branch (its
	// block was reorged out too), stays revoked: its nonce is older than
	// the revocation's.
	t.Run("revoked grant included again", func(t *testing.T) {
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
		g := grant(t, c, c.Providers[0], tag, "owner", "doctor", 0)
		revokeGrant(t, c, c.Providers[0], tag, "owner", "doctor", 1)
		if err := v.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		reorgTo(t, c, before.Hash())
		if err := v.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, ok := v.Grant(tag, access.AddressGrantee, g.Grantee); ok {
			t.Fatal("the grant outlived the reorg that removed it")
		}
		if of, to := v.GrantsOf(tag), v.GrantsTo(access.AddressGrantee, g.Grantee); len(of) != 0 || len(to) != 0 {
			t.Fatalf("the grant is still listed after the reorg removed it: %+v %+v", of, to)
		}
		again := grant(t, c, c.Providers[1], tag, "owner", "doctor", 0) // nonce 0, as the revoked grant had
		if again.Grantee != g.Grantee {
			t.Fatal("not the same grantee")
		}
		if err := v.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got, ok := v.Grant(tag, access.AddressGrantee, g.Grantee); !ok || !got.Revoked || !got.RevokeReorged {
			t.Fatalf("the revoked grant included again: %+v %v; want it still revoked", got, ok)
		}
	})
}
