package contracts

import (
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestOpen opens a relationship with a real proof, then takes that valid call
// and changes one field at a time: each must fail with its exact error.
func TestOpen(t *testing.T) {
	e := newEnv(t, 2)
	p1, p2 := e.providers[0], e.providers[1]
	alice := e.enrol(p1, "alice")
	e.enrol(p1, "bob")
	owner := key("alice-delegate-1")
	proof, pub := e.ownership(alice, p1.id, circuits.ActionOpen, addr(owner), 0)
	tag, root := zkhash.Big(pub.Tag), zkhash.Big(pub.Root)
	r := zkhash.Modulus()
	flipped := proof
	flipped[100] ^= 1
	otherRoot := zkhash.Big(zkhash.FromUint64(12345))

	cases := []struct {
		name     string
		from     testProvider
		tag      *big.Int
		provider uint32
		owner    common.Address
		root     *big.Int
		proof    []byte
		want     string
	}{
		{"provider of another gateway", p2, tag, p1.id, addr(owner), root, proof[:], "NotProviderGateway"},
		{"other provider id", p2, tag, p2.id, addr(owner), root, proof[:], "ProofInvalid"},
		{"zero owner", p1, tag, p1.id, common.Address{}, root, proof[:], "ZeroOwner"},
		{"other owner", p1, tag, p1.id, addr(key("mallory")), root, proof[:], "ProofInvalid"},
		{"other tag", p1, new(big.Int).Add(tag, big.NewInt(1)), p1.id, addr(owner), root, proof[:], "ProofInvalid"},
		{"tag plus r", p1, new(big.Int).Add(tag, r), p1.id, addr(owner), root, proof[:], "PublicInputNotInField"},
		{"unknown root", p1, tag, p1.id, addr(owner), otherRoot, proof[:], "UnknownRoot"},
		{"flipped proof bit", p1, tag, p1.id, addr(owner), root, flipped[:], "ProofInvalid"},
		{"short proof", p1, tag, p1.id, addr(owner), root, proof[:255], ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.send(c.from.gateway, e.relsC, e.rels.PackOpen(c.tag, c.provider, c.owner, c.root, c.proof))
			if c.want == "" {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			wantRevert(t, err, c.want)
		})
	}
	if e.relationship(tag).Owner != (common.Address{}) {
		t.Fatal("a refused open changed state")
	}

	// A proof made for another contract (or chain) binds another signal.
	foreign := circuits.OwnershipSignal(circuits.ActionOpen, addr(owner), 0, e.chainID, e.d.PatientRegistry)
	if foreign == pub.Signal {
		t.Fatal("signal does not depend on the contract")
	}

	rcpt := e.mustSend(p1.gateway, e.relsC, e.rels.PackOpen(tag, p1.id, addr(owner), root, proof[:]))
	rel := e.relationship(tag)
	if rel.Owner != addr(owner) || rel.Provider != p1.id || rel.Rotation != 0 || rel.Nonce != 0 {
		t.Fatalf("relationship %+v", rel)
	}
	ev, err := e.rels.UnpackOpenedEvent(rcpt.Logs[0])
	if err != nil || ev.Tag.Cmp(tag) != 0 || ev.Owner != addr(owner) || ev.Provider != p1.id || ev.Root.Cmp(root) != 0 {
		t.Fatalf("Opened event %+v, %v", ev, err)
	}
	// Replaying the same proof, or opening the tag again with a fresh one, fails.
	_, err = e.send(p1.gateway, e.relsC, e.rels.PackOpen(tag, p1.id, addr(owner), root, proof[:]))
	wantRevert(t, err, "TagInUse")
	again, pub2 := e.ownership(alice, p1.id, circuits.ActionOpen, addr(key("alice-delegate-x")), 0)
	_, err = e.send(p1.gateway, e.relsC, e.rels.PackOpen(zkhash.Big(pub2.Tag), p1.id, addr(key("alice-delegate-x")), zkhash.Big(pub2.Root), again[:]))
	wantRevert(t, err, "TagInUse")

	// The same patient opens at provider 2 with an unrelated tag and delegate.
	o2, _ := e.open(alice, p2, key("alice-delegate-2"))
	if o2.tag.Cmp(tag) == 0 {
		t.Fatal("tags at two providers are equal")
	}
}

// TestOpenRootHistory: a proof against a root replaced less than ROOT_TTL ago
// still opens; after that it is refused.
func TestOpenRootHistory(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	alice := e.enrol(p, "alice")
	owner := key("alice-delegate")
	proof, pub := e.ownership(alice, p.id, circuits.ActionOpen, addr(owner), 0)
	e.enrol(p, "bob") // replaces the root alice proved against
	data := e.rels.PackOpen(zkhash.Big(pub.Tag), p.id, addr(owner), zkhash.Big(pub.Root), proof[:])

	e.advance(2 * time.Hour)
	_, err := e.send(p.gateway, e.relsC, data)
	wantRevert(t, err, "UnknownRoot")

	e2 := newEnv(t, 1)
	alice2 := e2.enrol(e2.providers[0], "alice")
	proof2, pub2 := e2.ownership(alice2, p.id, circuits.ActionOpen, addr(owner), 0)
	e2.enrol(e2.providers[0], "bob")
	e2.advance(30 * time.Minute)
	e2.mustSend(e2.providers[0].gateway, e2.relsC, e2.rels.PackOpen(zkhash.Big(pub2.Tag), p.id, addr(owner), zkhash.Big(pub2.Root), proof2[:]))
}

// TestRotate replaces a lost delegate; old proofs can never be replayed.
func TestRotate(t *testing.T) {
	e := newEnv(t, 1)
	p := e.providers[0]
	alice := e.enrol(p, "alice")
	o, _ := e.open(alice, p, key("alice-d0"))
	root := e.root()

	d1, d2 := key("alice-d1"), key("alice-d2")
	proof1, _ := e.ownership(alice, p.id, circuits.ActionRotate, addr(d1), 1)
	openAgain, _ := e.ownership(alice, p.id, circuits.ActionOpen, addr(d1), 0)

	cases := []struct {
		name  string
		tag   *big.Int
		owner common.Address
		root  *big.Int
		proof []byte
		want  string
	}{
		{"unknown relationship", big.NewInt(7), addr(d1), root, proof1[:], "UnknownRelationship"},
		{"zero owner", o.tag, common.Address{}, root, proof1[:], "ZeroOwner"},
		{"same owner", o.tag, addr(o.owner), root, proof1[:], "SameOwner"},
		{"unknown root", o.tag, addr(d1), big.NewInt(99), proof1[:], "UnknownRoot"},
		{"other new owner", o.tag, addr(d2), root, proof1[:], "ProofInvalid"},
		{"open proof as rotation", o.tag, addr(d1), root, openAgain[:], "ProofInvalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.send(e.stranger, e.relsC, e.rels.PackRotate(c.tag, c.owner, c.root, c.proof))
			wantRevert(t, err, c.want)
		})
	}
	// Anyone may relay a rotation: the proof is the authorisation.
	rcpt := e.mustSend(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(d1), root, proof1[:]))
	if ev, err := e.rels.UnpackRotatedEvent(rcpt.Logs[0]); err != nil || ev.Owner != addr(d1) || ev.Rotation != 1 {
		t.Fatalf("Rotated event %+v %v", ev, err)
	}
	proof2, _ := e.ownership(alice, p.id, circuits.ActionRotate, addr(d2), 2)
	e.mustSend(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(d2), root, proof2[:]))
	if rel := e.relationship(o.tag); rel.Owner != addr(d2) || rel.Rotation != 2 {
		t.Fatalf("after two rotations: %+v", rel)
	}
	// Replaying the first rotation (back to d1) fails: the counter moved on.
	_, err := e.send(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(d1), root, proof1[:]))
	wantRevert(t, err, "ProofInvalid")
	// Someone who knows only the tag cannot rotate: a proof needs the secret.
	mallory := e.enrol(p, "mallory")
	forged, _ := e.ownership(mallory, p.id, circuits.ActionRotate, addr(key("mallory-d")), 3)
	_, err = e.send(e.stranger, e.relsC, e.rels.PackRotate(o.tag, addr(key("mallory-d")), e.root(), forged[:]))
	wantRevert(t, err, "ProofInvalid")
	// The old delegate can no longer sign.
	g := e.grantRequest(o, addr(key("doctor")))
	_, err = e.send(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(o.owner, g)))
	wantRevert(t, err, "WrongSigner")
	_, err = e.send(e.stranger, e.relsC, e.rels.PackGrant(g, e.signGrant(d2, g)))
	if err != nil {
		t.Fatalf("grant by the new owner: %v", err)
	}
}
