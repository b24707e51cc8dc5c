package contracts

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestEIP712MatchesGoEthereum computes the grant and revoke digests with
// go-ethereum's independent EIP-712 implementation and with the contract.
func TestEIP712MatchesGoEthereum(t *testing.T) {
	e := newEnv(t, 1)
	if got := call(t, e.relsC, e.rels.PackDomainSeparator(), e.rels.UnpackDomainSeparator); got != e.domain() {
		t.Fatalf("domain separator: contract %x, Go %x", got, e.domain())
	}
	g := GrantRequest{
		Tag: new(big.Int).Sub(zkhash.Modulus(), big.NewInt(5)), GranteeKind: 2, Grantee: [32]byte{0x01, 0x02, 31: 0x03},
		Scope: uint64(access.AllTypes), Purpose: 3, Expiry: 1<<63 + 5, Nonce: 1<<32 - 1, Deadline: 1 << 40,
	}
	rv := RevokeRequest{Tag: g.Tag, GranteeKind: 1, Grantee: AddressGrantee(addr(key("doctor"))), Nonce: 7, Deadline: 99}
	domain := apitypes.TypedDataDomain{
		Name: DomainName, Version: DomainVersion,
		ChainId: (*math.HexOrDecimal256)(e.chainID), VerifyingContract: e.d.Relationships.Hex(),
	}
	domainTypes := []apitypes.Type{
		{Name: "name", Type: "string"}, {Name: "version", Type: "string"},
		{Name: "chainId", Type: "uint256"}, {Name: "verifyingContract", Type: "address"},
	}
	grantTD := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": domainTypes,
			"Grant": {
				{Name: "tag", Type: "uint256"}, {Name: "granteeKind", Type: "uint8"}, {Name: "grantee", Type: "bytes32"},
				{Name: "scope", Type: "uint64"}, {Name: "purpose", Type: "uint8"}, {Name: "expiry", Type: "uint64"},
				{Name: "nonce", Type: "uint32"}, {Name: "deadline", Type: "uint64"},
			},
		},
		PrimaryType: "Grant",
		Domain:      domain,
		Message: apitypes.TypedDataMessage{
			"tag": g.Tag.String(), "granteeKind": fmt.Sprint(g.GranteeKind), "grantee": hexutil.Encode(g.Grantee[:]),
			"scope": fmt.Sprint(g.Scope), "purpose": fmt.Sprint(g.Purpose), "expiry": fmt.Sprint(g.Expiry),
			"nonce": fmt.Sprint(g.Nonce), "deadline": fmt.Sprint(g.Deadline),
		},
	}
	revokeTD := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": domainTypes,
			"Revoke": {
				{Name: "tag", Type: "uint256"}, {Name: "granteeKind", Type: "uint8"}, {Name: "grantee", Type: "bytes32"},
				{Name: "nonce", Type: "uint32"}, {Name: "deadline", Type: "uint64"},
			},
		},
		PrimaryType: "Revoke",
		Domain:      domain,
		Message: apitypes.TypedDataMessage{
			"tag": rv.Tag.String(), "granteeKind": fmt.Sprint(rv.GranteeKind), "grantee": hexutil.Encode(rv.Grantee[:]),
			"nonce": fmt.Sprint(rv.Nonce), "deadline": fmt.Sprint(rv.Deadline),
		},
	}
	for _, c := range []struct {
		name string
		td   apitypes.TypedData
		ours common.Hash
	}{{"grant", grantTD, GrantDigest(e.domain(), g)}, {"revoke", revokeTD, RevokeDigest(e.domain(), rv)}} {
		want, _, err := apitypes.TypedDataAndHash(c.td)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(want, c.ours[:]) {
			t.Errorf("%s digest: ours %x, go-ethereum %x", c.name, c.ours, want)
		}
	}
	// The type hashes in the contract are those of the Go type strings.
	if got := call(t, e.relsC, e.rels.PackGRANTTYPEHASH(), e.rels.UnpackGRANTTYPEHASH); got != crypto.Keccak256Hash([]byte(grantType)) {
		t.Error("GRANT_TYPEHASH differs")
	}
	if got := call(t, e.relsC, e.rels.PackREVOKETYPEHASH(), e.rels.UnpackREVOKETYPEHASH); got != crypto.Keccak256Hash([]byte(revokeType)) {
		t.Error("REVOKE_TYPEHASH differs")
	}
}

// highS returns the malleable twin of a valid signature: (r, n-s, v^1).
func highS(sig []byte) []byte {
	out := bytes.Clone(sig)
	s := new(big.Int).SetBytes(sig[32:64])
	s.Sub(crypto.S256().Params().N, s)
	s.FillBytes(out[32:64])
	out[64] = 55 - out[64] // 27 <-> 28
	return out
}

// TestGrant signs a valid grant, then changes one field at a time.
func TestGrant(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	o, _ := e.open(e.enrol(p, "alice"), p, key("alice-d"))
	doctor := addr(key("doctor"))
	valid := e.grantRequest(o, doctor)
	sig := e.signGrant(o.owner, valid)

	mutate := func(f func(g *GrantRequest)) GrantRequest { g := valid; f(&g); return g }
	resign := func(g GrantRequest) []byte { return e.signGrant(o.owner, g) }
	zeroR := bytes.Clone(sig)
	for i := 0; i < 32; i++ {
		zeroR[i] = 0
	}
	badV := bytes.Clone(sig)
	badV[64] = 29
	var wideGrantee [32]byte
	wideGrantee[0] = 1
	wideGrantee[31] = 1

	cases := []struct {
		name string
		g    GrantRequest
		sig  []byte
		want string
	}{
		// Changed after signing: the signature no longer recovers the owner.
		{"tag changed", mutate(func(g *GrantRequest) { g.Tag = new(big.Int).Add(g.Tag, big.NewInt(1)) }), sig, "UnknownRelationship"},
		{"grantee changed", mutate(func(g *GrantRequest) { g.Grantee = AddressGrantee(addr(key("mallory"))) }), sig, "WrongSigner"},
		{"kind changed", mutate(func(g *GrantRequest) { g.GranteeKind = 2 }), sig, "WrongSigner"},
		{"scope changed", mutate(func(g *GrantRequest) { g.Scope = 3 }), sig, "WrongSigner"},
		{"purpose changed", mutate(func(g *GrantRequest) { g.Purpose = 2 }), sig, "WrongSigner"},
		{"expiry changed", mutate(func(g *GrantRequest) { g.Expiry++ }), sig, "WrongSigner"},
		{"deadline changed", mutate(func(g *GrantRequest) { g.Deadline++ }), sig, "WrongSigner"},
		{"nonce changed", mutate(func(g *GrantRequest) { g.Nonce++ }), sig, "BadNonce"},
		// Signature form.
		{"high s", valid, highS(sig), "MalleableSignature"},
		{"v 29", valid, badV, "InvalidSignature"},
		{"short signature", valid, sig[:64], "InvalidSignature"},
		{"zero r recovers nothing", valid, zeroR, "InvalidSignature"},
		{"signed by someone else", valid, e.signGrant(key("mallory"), valid), "WrongSigner"},
		{"signed for another contract", valid, mustSign(t, o.owner, GrantDigest(DomainSeparator(e.chainID, e.d.Anchors), valid)), "WrongSigner"},
		{"signed for another chain", valid, mustSign(t, o.owner, GrantDigest(DomainSeparator(big.NewInt(1), e.d.Relationships), valid)), "WrongSigner"},
		// Properly signed but invalid content.
		{"deadline passed", mutate(func(g *GrantRequest) { g.Deadline = e.now() - 1 }), nil, "SignatureExpired"},
		{"expiry passed", mutate(func(g *GrantRequest) { g.Expiry = e.now() - 1 }), nil, "InvalidExpiry"},
		{"purpose 0", mutate(func(g *GrantRequest) { g.Purpose = 0 }), nil, "InvalidPurpose"},
		{"purpose 5", mutate(func(g *GrantRequest) { g.Purpose = 5 }), nil, "InvalidPurpose"},
		{"empty scope", mutate(func(g *GrantRequest) { g.Scope = 0 }), nil, "InvalidScope"},
		{"scope outside FHIR types", mutate(func(g *GrantRequest) { g.Scope = uint64(access.AllTypes) + 1<<63 }), nil, "InvalidScope"},
		{"grantee kind 0", mutate(func(g *GrantRequest) { g.GranteeKind = 0 }), nil, "InvalidGranteeKind"},
		{"grantee kind 3", mutate(func(g *GrantRequest) { g.GranteeKind = 3 }), nil, "InvalidGranteeKind"},
		{"zero address grantee", mutate(func(g *GrantRequest) { g.Grantee = [32]byte{} }), nil, "InvalidGrantee"},
		{"address grantee wider than 160 bits", mutate(func(g *GrantRequest) { g.Grantee = wideGrantee }), nil, "InvalidGrantee"},
		{"anonymous grantee = r", mutate(func(g *GrantRequest) {
			g.GranteeKind = 2
			g.Grantee = [32]byte(zkhash.Modulus().FillBytes(make([]byte, 32)))
		}), nil, "InvalidGrantee"},
		{"nonce from the future", mutate(func(g *GrantRequest) { g.Nonce = 5 }), nil, "BadNonce"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.sig
			if s == nil {
				s = resign(c.g)
			}
			_, err := e.send(e.stranger, e.relsC, e.rels.PackGrant(c.g, s))
			wantRevert(t, err, c.want)
		})
	}
	if got := e.grantOf(o.tag, 1, valid.Grantee); got.Scope != 0 {
		t.Fatalf("a refused grant changed state: %+v", got)
	}

	// Any relayer may submit the valid grant; the signature cannot be replayed.
	rcpt := e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(valid, sig))
	ev, err := e.rels.UnpackGrantedEvent(rcpt.Logs[0])
	if err != nil || ev.Tag.Cmp(o.tag) != 0 || ev.Grantee != valid.Grantee || ev.Scope != valid.Scope || ev.Purpose != 1 || ev.Expiry != valid.Expiry {
		t.Fatalf("Granted event %+v %v", ev, err)
	}
	if got := e.grantOf(o.tag, 1, valid.Grantee); got.Scope != 1 || got.Purpose != 1 || got.Expiry != valid.Expiry || got.Revoked {
		t.Fatalf("grant %+v", got)
	}
	_, err = e.send(e.stranger, e.relsC, e.rels.PackGrant(valid, sig))
	wantRevert(t, err, "BadNonce")
	if n := e.relationship(o.tag).Nonce; n != 1 {
		t.Fatalf("nonce %d after one grant", n)
	}

	// An anonymous grantee g (a field element) works the same way.
	cv := zkhash.ViewerCommitment(newSecret("viewer"))
	gv := zkhash.Grant(cv, zkhash.FromUint64(0), newSecret("k"))
	anon := mutate(func(g *GrantRequest) {
		g.GranteeKind = 2
		g.Grantee = zkhash.Bytes32(gv)
		g.Nonce = 1
		g.Scope = 1<<3 | 1
	})
	e.mustSend(p.gateway, e.relsC, e.rels.PackGrant(anon, resign(anon)))
	if got := e.grantOf(o.tag, 2, anon.Grantee); got.Scope != anon.Scope {
		t.Fatalf("anonymous grant %+v", got)
	}
}

func mustSign(t *testing.T, k *ecdsa.PrivateKey, d common.Hash) []byte {
	t.Helper()
	s, err := Sign(k, d)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) grantOf(tag *big.Int, kind uint8, grantee [32]byte) GrantState {
	return call(e.t, e.relsC, e.rels.PackGrantOf(tag, kind, grantee), e.rels.UnpackGrantOf)
}

// TestRevoke revokes a grant; replays, tampering, unknown and repeated
// revocations fail; an expired grant stays expired on chain.
func TestRevoke(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	o, _ := e.open(e.enrol(p, "alice"), p, key("alice-d"))
	doctor := addr(key("doctor"))
	g := e.grantRequest(o, doctor)
	e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(o.owner, g)))

	rv := RevokeRequest{Tag: o.tag, GranteeKind: 1, Grantee: g.Grantee, Nonce: 1, Deadline: e.now() + 600}
	sig := e.signRevoke(o.owner, rv)
	mutate := func(f func(r *RevokeRequest)) RevokeRequest { r := rv; f(&r); return r }
	cases := []struct {
		name string
		r    RevokeRequest
		sig  []byte
		want string
	}{
		{"grantee changed", mutate(func(r *RevokeRequest) { r.Grantee = AddressGrantee(addr(key("nobody"))) }), sig, "NoSuchGrant"},
		{"deadline changed", mutate(func(r *RevokeRequest) { r.Deadline++ }), sig, "WrongSigner"},
		{"nonce replayed", mutate(func(r *RevokeRequest) { r.Nonce = 0 }), nil, "BadNonce"},
		{"high s", rv, highS(sig), "MalleableSignature"},
		{"signed by the grantee", rv, e.signRevoke(key("doctor"), rv), "WrongSigner"},
		{"deadline passed", mutate(func(r *RevokeRequest) { r.Deadline = e.now() - 1 }), nil, "SignatureExpired"},
		{"unknown relationship", mutate(func(r *RevokeRequest) { r.Tag = big.NewInt(3) }), nil, "UnknownRelationship"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := c.sig
			if s == nil {
				s = e.signRevoke(o.owner, c.r)
			}
			_, err := e.send(e.stranger, e.relsC, e.rels.PackRevoke(c.r, s))
			wantRevert(t, err, c.want)
		})
	}
	rcpt := e.mustSend(e.stranger, e.relsC, e.rels.PackRevoke(rv, sig))
	if ev, err := e.rels.UnpackRevokedEvent(rcpt.Logs[0]); err != nil || ev.Grantee != g.Grantee || ev.Tag.Cmp(o.tag) != 0 {
		t.Fatalf("Revoked event %+v %v", ev, err)
	}
	if got := e.grantOf(o.tag, 1, g.Grantee); !got.Revoked {
		t.Fatalf("grant not revoked: %+v", got)
	}
	// Replaying the revocation, or revoking again with a fresh nonce, fails.
	_, err := e.send(e.stranger, e.relsC, e.rels.PackRevoke(rv, sig))
	wantRevert(t, err, "AlreadyRevoked")
	rv2 := mutate(func(r *RevokeRequest) { r.Nonce = 2 })
	_, err = e.send(e.stranger, e.relsC, e.rels.PackRevoke(rv2, e.signRevoke(o.owner, rv2)))
	wantRevert(t, err, "AlreadyRevoked")
	// Replaying the old grant signature does not restore it.
	_, err = e.send(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(o.owner, g)))
	wantRevert(t, err, "BadNonce")

	// A grant expires on its own: the chain keeps the expiry, gateways enforce it.
	g2 := e.grantRequest(o, addr(key("nurse")))
	g2.Expiry = e.now() + 120
	e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(g2, e.signGrant(o.owner, g2)))
	e.advance(10 * time.Minute)
	if got := e.grantOf(o.tag, 1, g2.Grantee); got.Expiry > e.now() || got.Revoked {
		t.Fatalf("grant should be expired: %+v at %d", got, e.now())
	}
	// Its signature, once expired, cannot be submitted again either.
	_, err = e.send(e.stranger, e.relsC, e.rels.PackGrant(g2, e.signGrant(o.owner, g2)))
	wantRevert(t, err, "InvalidExpiry")
}

// TestRotationEndsGrants tells the lost-phone story: a thief holding the old
// delegate grants a stranger ten years of everything; the patient rotates.
// Every grant made under the replaced owner (both kinds) ends with it; the
// new owner can grant again, to the same grantee, and revoke what it made.
func TestRotationEndsGrants(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	alice := e.enrol(p, "alice")
	o, _ := e.open(alice, p, key("alice-d0"))

	thiefGrant := e.grantRequest(o, addr(key("thief-friend")))
	thiefGrant.Scope, thiefGrant.Expiry = uint64(access.AllTypes), e.now()+10*365*86400
	rcpt := e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(thiefGrant, e.signGrant(o.owner, thiefGrant)))
	if ev, err := e.rels.UnpackGrantedEvent(rcpt.Logs[0]); err != nil || ev.Epoch != 0 {
		t.Fatalf("Granted event of epoch 0: %+v %v", ev, err)
	}
	cv := zkhash.ViewerCommitment(newSecret("viewer"))
	anon := e.grantRequest(o, common.Address{})
	anon.GranteeKind, anon.Grantee = 2, zkhash.Bytes32(zkhash.Grant(cv, zkhash.FromUint64(1), newSecret("k")))
	e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(anon, e.signGrant(o.owner, anon)))
	grants := []struct {
		name    string
		kind    uint8
		grantee [32]byte
	}{{"address", 1, thiefGrant.Grantee}, {"anonymous", 2, anon.Grantee}}
	for _, g := range grants {
		if !e.inForce(o.tag, g.kind, g.grantee) {
			t.Fatalf("%s grant not in force before the rotation", g.name)
		}
	}

	d1 := key("alice-d1")
	proof, _ := e.ownership(alice, p.id, circuits.ActionRotate, addr(d1), 1)
	e.mustSend(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(d1), e.root(), proof[:]))
	for _, g := range grants {
		t.Run(g.name, func(t *testing.T) {
			if e.inForce(o.tag, g.kind, g.grantee) {
				t.Fatal("a grant of the replaced owner is still in force")
			}
			// The record stays (its epoch says why it ended); it is neither
			// revoked nor expired.
			if st := e.grantOf(o.tag, g.kind, g.grantee); st.Epoch != 0 || st.Revoked || st.Expiry <= e.now() {
				t.Fatalf("grant record %+v", st)
			}
			// Revoking an ended grant is refused: nothing is left to end.
			rv := RevokeRequest{Tag: o.tag, GranteeKind: g.kind, Grantee: g.grantee, Nonce: e.relationship(o.tag).Nonce, Deadline: e.now() + 600}
			_, err := e.send(e.stranger, e.relsC, e.rels.PackRevoke(rv, e.signRevoke(d1, rv)))
			wantRevert(t, err, "GrantEnded")
		})
	}

	// The new owner keeps the friend it trusts: the same grant, signed again.
	again := thiefGrant
	again.Nonce, again.Deadline = e.relationship(o.tag).Nonce, e.now()+600
	rcpt = e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(again, e.signGrant(d1, again)))
	if ev, err := e.rels.UnpackGrantedEvent(rcpt.Logs[0]); err != nil || ev.Epoch != 1 || ev.Expiry != thiefGrant.Expiry {
		t.Fatalf("Granted event after the rotation: %+v %v", ev, err)
	}
	if !e.inForce(o.tag, 1, again.Grantee) || e.grantOf(o.tag, 1, again.Grantee).Epoch != 1 {
		t.Fatal("a grant of the current owner is not in force")
	}
	if e.inForce(o.tag, 2, anon.Grantee) {
		t.Fatal("re-granting one grantee revived another")
	}
	// ...and can revoke it.
	rv := RevokeRequest{Tag: o.tag, GranteeKind: 1, Grantee: again.Grantee, Nonce: again.Nonce + 1, Deadline: e.now() + 600}
	e.mustSend(e.stranger, e.relsC, e.rels.PackRevoke(rv, e.signRevoke(d1, rv)))
	if e.inForce(o.tag, 1, again.Grantee) {
		t.Fatal("a revoked grant is in force")
	}
	// An expired grant of the current owner is not in force either.
	short := e.grantRequest(o, addr(key("nurse")))
	short.Expiry = e.now() + 120
	e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(short, e.signGrant(d1, short)))
	e.advance(10 * time.Minute)
	if e.inForce(o.tag, 1, short.Grantee) || e.inForce(o.tag, 1, AddressGrantee(addr(key("nobody")))) {
		t.Fatal("an expired or unknown grant is in force")
	}
}

func (e *env) inForce(tag *big.Int, kind uint8, grantee [32]byte) bool {
	return call(e.t, e.relsC, e.rels.PackInForce(tag, kind, grantee), e.rels.UnpackInForce)
}

// TestGrantIsOneSlot pins the grant's storage packing the gas goal relies
// on: scope, expiry, purpose, revoked and epoch share one slot (the epoch
// costs no extra SSTORE). Storage: _relationships at slot 0, _grants at 1.
func TestGrantIsOneSlot(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	alice := e.enrol(p, "alice")
	o, _ := e.open(alice, p, key("alice-d0"))
	d1 := key("alice-d1")
	proof, _ := e.ownership(alice, p.id, circuits.ActionRotate, addr(d1), 1)
	e.mustSend(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(d1), e.root(), proof[:]))
	g := e.grantRequest(o, addr(key("doctor")))
	g.Scope, g.Purpose, g.Expiry = 0x1_0203_0405, 3, 0x0a0b_0c0d_0e0f
	e.mustSend(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(d1, g)))

	slot := crypto.Keccak256(word(o.tag), u64(1))
	slot = crypto.Keccak256(u64(uint64(g.GranteeKind)), slot)
	slot = crypto.Keccak256(g.Grantee[:], slot)
	want := new(big.Int).SetUint64(g.Scope)
	want.Or(want, new(big.Int).Lsh(new(big.Int).SetUint64(g.Expiry), 64))
	want.Or(want, new(big.Int).Lsh(big.NewInt(int64(g.Purpose)), 128))
	want.Or(want, new(big.Int).Lsh(big.NewInt(1), 144)) // epoch 1; revoked (bit 136) false
	at := func(s []byte) *big.Int {
		v, err := e.client.StorageAt(context.Background(), e.d.Relationships, common.BytesToHash(s), nil)
		if err != nil {
			t.Fatal(err)
		}
		return new(big.Int).SetBytes(v)
	}
	if got := at(slot); got.Cmp(want) != 0 {
		t.Fatalf("grant slot %#x, want %#x", got, want)
	}
	next := new(big.Int).Add(new(big.Int).SetBytes(slot), big.NewInt(1))
	if got := at(word(next)); got.Sign() != 0 {
		t.Fatalf("the grant spills into a second slot: %#x", got)
	}
}
