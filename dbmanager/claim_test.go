package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/json"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/merkle"
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
	claim, pub := w.claimAlong(path, owner)
	if root := w.view.Root(); pub.Root == root {
		t.Fatal("the tampered path has the chain's root")
	}
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

// TestClaimRootAhead: the claimant's node may be a block ahead of the
// gateway's (a desk enrolled someone a moment ago, and the wallet proved
// against the root that made). The gateway looks again for a while before
// it refuses a root its node does not know yet.
func TestClaimRootAhead(t *testing.T) {
	w := newWorld(t)
	w.createEnrolled("p1", w.keys)
	next := mustKeys(t, "legal winner thank year wave sausage worth useful legal winner thank yellow")
	cm, _ := w.keys.Commitment()
	cm2, _ := next.Commitment()
	ahead, err := merkle.New([]fr.Element{cm, cm2}) // the registry once next is enrolled
	if err != nil {
		t.Fatal(err)
	}
	path, err := ahead.Proof(0)
	if err != nil {
		t.Fatal(err)
	}
	owner := simchain.Addr(w.owner)
	claim, _ := w.claimAlong(path, owner)
	// The root becomes known a second into the claim (inside rootWait).
	enrolled := make(chan error, 1)
	time.AfterFunc(time.Second, func() {
		ctx := context.Background()
		tx, err := w.chain.Client.Enrol(ctx, w.chain.Auth(w.chain.Providers[1].Gateway), zkhash.Big(cm2))
		if err == nil {
			_, err = w.chain.Client.Wait(ctx, tx)
		}
		enrolled <- err
	})
	r := w.staff("POST", "/admin/patients/p1/claim", claim)
	if err := <-enrolled; err != nil {
		t.Fatal(err)
	}
	if r.status != 200 {
		t.Fatalf("a claim against a root mined a moment later: %d %s", r.status, r.body)
	}
	if err := w.view.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := w.view.Root(); got != ahead.Root() {
		t.Fatalf("the registry's root is not the one proved against")
	}
}

// claimAlong is a claim (at provider 1, for owner) proved along path,
// whatever tree it is in.
func (w *world) claimAlong(path merkle.Proof, owner common.Address) (map[string]string, circuits.OwnershipPublic) {
	w.t.Helper()
	s, _ := w.keys.Identity()
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, w.chain.ChainID, w.chain.D.Relationships),
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return map[string]string{"tag": zkhash.Hex(pub.Tag), "owner": owner.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()}, pub
}

// enrolOnChain enrols keys' commitment at provider 2 directly on chain: a
// patient of another provider, unknown to this gateway's desk.
func (w *world) enrolOnChain(keys *delegate.Keys) {
	w.t.Helper()
	ctx := context.Background()
	cm, _ := keys.Commitment()
	tx, err := w.chain.Client.Enrol(ctx, w.chain.Auth(w.chain.Providers[1].Gateway), zkhash.Big(cm))
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.chain.Client.Wait(ctx, tx); err != nil {
		w.t.Fatal(err)
	}
}

// createEnrolled creates patient id at the desk and enrols keys for it.
func (w *world) createEnrolled(id string, keys *delegate.Keys) {
	w.t.Helper()
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": id}); r.status != 201 {
		w.t.Fatalf("create %s: %d %s", id, r.status, r.body)
	}
	cm, _ := keys.Commitment()
	if r := w.staff("POST", "/admin/patients/"+id+"/enrol", map[string]string{"commitment": zkhash.Hex(cm)}); r.status != 200 {
		w.t.Fatalf("enrol %s: %d %s", id, r.status, r.body)
	}
}

func mustKeys(t testing.TB, words string) *delegate.Keys {
	t.Helper()
	k, err := delegate.FromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const attackerWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"

// TestClaimCodeHijack: someone enrolled elsewhere who learns a patient's
// claim code (a printout, a shoulder, a clerk) cannot use it: the code is
// bound to the desk code of the patient's own tag, and a claim for any
// other tag is refused — logged under the patient, nothing mapped, the code
// left for the patient, who then claims with it.
func TestClaimCodeHijack(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.createEnrolled("p1", w.keys)
	attacker := mustKeys(t, attackerWords)
	w.enrolOnChain(attacker)

	for _, bad := range []struct{ name, body string }{
		{"no desk code", `{}`},
		{"an empty desk code", `{"tagCode":""}`},
		{"a mistyped desk code", `{"tagCode":"` + mistype(deskCode(t, w.keys, 1)) + `"}`},
		{"a tag instead of a desk code", `{"tagCode":"0x1234"}`},
	} {
		req := httptest.NewRequest("POST", "/admin/patients/p1/claim-code", strings.NewReader(bad.body))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		if r := w.do(req); r.status != 400 || !bytes.Contains(r.body, []byte("tagCode")) {
			t.Fatalf("%s: %d %s", bad.name, r.status, r.body)
		}
	}
	r := w.staff("POST", "/admin/patients/p1/claim-code", map[string]string{"tagCode": strings.ToLower(strings.ReplaceAll(deskCode(t, w.keys, 1), "-", " "))})
	if r.status != 201 || r.json(t)["tagCode"] != deskCode(t, w.keys, 1) {
		t.Fatalf("claim code: %d %s", r.status, r.body)
	}
	code := r.json(t)["code"].(string)

	// The attacker's genuine proof, for the attacker's own tag, with the code.
	thief := simchain.Addr(simchain.Key("thief"))
	claim := w.claimWith(attacker, 1, thief)
	claim["code"] = code
	head, _ := w.cfg.Store.LogHead(ctx)
	if r := w.post("/claims", claim); r.status != 403 || !bytes.Contains(r.body, []byte("bound to another relationship")) {
		t.Fatalf("a claim for another tag with the code: %d %s", r.status, r.body)
	}
	if p, _ := w.cfg.Store.Patient(ctx, "p1"); p.Tag != nil {
		t.Fatalf("the refused claim mapped %s", p.Tag)
	}
	if err := w.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if rel, ok := w.view.Relationship(zkhash.Big(mustTag(t, attacker, 1))); ok {
		t.Fatalf("the refused claim opened %+v", rel)
	}
	log, _ := w.cfg.Store.PatientLog(ctx, "p1", head.Next, 10)
	if len(log) != 1 || log[0].Action != "claim" || log[0].Outcome != store.Denied || log[0].ActorID != thief.Hex() {
		t.Fatalf("the refusal in the patient's log: %+v", log)
	}

	// The patient claims with the same code.
	owner := simchain.Addr(w.owner)
	claim = w.claimFor(1, owner)
	claim["code"] = code
	if r := w.post("/claims", claim); r.status != 200 || r.json(t)["status"] != "opened" {
		t.Fatalf("the patient's claim: %d %s", r.status, r.body)
	}
	w.tag = zkhash.Big(mustTag(t, w.keys, 1))
	if r := w.get(w.owner, "/fhir/Patient/p1"); r.status != 404 || !bytes.Contains(r.body, []byte("Patient")) {
		// p1 has no Patient resource in this world: a 404 of the store, not a refusal
		t.Fatalf("the patient reads: %d %s", r.status, r.body)
	}
}

// TestClaimCodeIssuedBeforeBinding: a claim code stored before codes were
// bound (no desk code) claims nothing.
func TestClaimCodeIssuedBeforeBinding(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.createEnrolled("p1", w.keys)
	db, err := sql.Open("sqlite", w.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	h := claimCodeHash("old-code")
	if _, err := db.Exec(`INSERT INTO claim_codes (code_hash, patient_id, expires_us) VALUES (?, 'p1', ?)`, h[:], time.Now().Add(time.Hour).UnixMicro()); err != nil {
		t.Fatal(err)
	}
	claim := w.claimFor(1, simchain.Addr(w.owner))
	claim["code"] = "old-code"
	if r := w.post("/claims", claim); r.status != 401 || !bytes.Contains(r.body, []byte("new one")) {
		t.Fatalf("an unbound code: %d %s", r.status, r.body)
	}
	if p, _ := w.cfg.Store.Patient(ctx, "p1"); p.Tag != nil {
		t.Fatalf("mapped %s", p.Tag)
	}
}

// TestUnmapTag: a relationship opened by the wrong person (here: staff
// claimed with the wrong patient's proof) reads the patient's records until
// staff undo the mapping, with a reason; then it reads nothing, the patient
// claims with a new bound code, and reads the unmapping, with its reason,
// in their own log.
func TestUnmapTag(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open() // p1's relationship, owned by w.owner, with records
	// The wrong mapping: p2 is claimed at the desk by someone else's device.
	other := mustKeys(t, attackerWords)
	w.createEnrolled("p2", other)
	obs2 := strings.ReplaceAll(strings.ReplaceAll(observationJS, "p1", "p2"), `"o1"`, `"o2"`)
	if r := w.staff("POST", "/admin/patients/p2/resources", json.RawMessage(obs2)); r.status != 201 {
		t.Fatalf("p2's record: %d %s", r.status, r.body)
	}
	wrongKey := simchain.Key("wrong person")
	if r := w.staff("POST", "/admin/patients/p2/claim", w.claimWith(other, 1, simchain.Addr(wrongKey))); r.status != 200 {
		t.Fatalf("the wrong claim: %d %s", r.status, r.body)
	}
	wrongTag := zkhash.Big(mustTag(t, other, 1))
	read := func(key *ecdsa.PrivateKey, tag *big.Int) resp {
		target := "/fhir/Observation/o2"
		if tag.Cmp(w.tag) == 0 {
			target = "/fhir/Observation/o1"
		}
		return w.do(w.signed(key, target, tag, 1))
	}
	if r := read(wrongKey, wrongTag); r.status != 200 {
		t.Fatalf("the wrong person reads p2 before the undo: %d %s", r.status, r.body)
	}

	for _, bad := range []struct {
		name, id string
		body     any
		status   int
	}{
		{"no reason", "p2", map[string]string{}, 400},
		{"a blank reason", "p2", map[string]string{"reason": "  "}, 400},
		{"a reason on two lines", "p2", map[string]string{"reason": "a\nb"}, 400},
		{"a reason too long", "p2", map[string]string{"reason": strings.Repeat("x", maxReason+1)}, 400},
		{"another tag", "p2", map[string]string{"reason": "x", "tag": "0x5"}, 409},
		{"a malformed tag", "p2", map[string]string{"reason": "x", "tag": "five"}, 400},
		{"an unknown patient", "nobody", map[string]string{"reason": "x"}, 404},
		{"a patient without a tag", "p3", map[string]string{"reason": "x"}, 409},
	} {
		if bad.id == "p3" {
			w.staff("POST", "/admin/patients", map[string]string{"id": "p3"})
		}
		if r := w.staff("POST", "/admin/patients/"+bad.id+"/unmap", bad.body); r.status != bad.status {
			t.Fatalf("%s: %d %s", bad.name, r.status, r.body)
		}
	}
	if r := read(wrongKey, wrongTag); r.status != 200 {
		t.Fatalf("refused undos changed the mapping: %d %s", r.status, r.body)
	}
	req := httptest.NewRequest("POST", "/admin/patients/p2/unmap", strings.NewReader(`{"reason":"claimed at the desk with another person's phone"}`))
	if r := w.do(req); r.status != 401 {
		t.Fatalf("unmap without a staff token: %d %s", r.status, r.body)
	}
	if r := w.staff("POST", "/admin/patients/p2/unmap", map[string]string{"reason": "claimed at the desk with another person's phone", "tag": zkhash.Hex(mustTag(t, other, 1))}); r.status != 200 || r.json(t)["status"] != "unmapped" {
		t.Fatalf("unmap: %d %s", r.status, r.body)
	}
	if r := read(wrongKey, wrongTag); r.status != 404 {
		t.Fatalf("the wrong person after the undo: %d %s", r.status, r.body)
	}
	// p1 is untouched.
	if r := read(w.owner, w.tag); r.status != 200 {
		t.Fatalf("p1 after p2's undo: %d %s", r.status, r.body)
	}

	// p2's real owner claims with a new code bound to their tag.
	real := mustKeys(t, "legal winner thank year wave sausage worth useful legal winner thank yellow")
	w.enrolOnChain(real)
	r := w.staff("POST", "/admin/patients/p2/claim-code", map[string]string{"tagCode": deskCode(t, real, 1)})
	if r.status != 201 {
		t.Fatalf("claim code: %d %s", r.status, r.body)
	}
	realKey := simchain.Key("p2's own delegate")
	claim := w.claimWith(real, 1, simchain.Addr(realKey))
	claim["code"] = r.json(t)["code"].(string)
	if r := w.post("/claims", claim); r.status != 200 {
		t.Fatalf("the real claim: %d %s", r.status, r.body)
	}
	realTag := zkhash.Big(mustTag(t, real, 1))
	if r := read(realKey, realTag); r.status != 200 {
		t.Fatalf("the real patient reads: %d %s", r.status, r.body)
	}
	var page gatewayapi.LogPage
	if r := w.do(w.signed(realKey, "/patient/log", realTag, 1)); r.status != 200 || json.Unmarshal(r.body, &page) != nil {
		t.Fatalf("log: %d %s", r.status, r.body)
	}
	var found bool
	for _, e := range page.Entries {
		if e.Action == "unmap" {
			found = e.Actor == "desk-1" && strings.Contains(e.Detail, "another person's phone") && strings.Contains(e.Detail, zkhash.Hex(mustTag(t, other, 1)))
		}
	}
	if !found {
		t.Fatalf("the undo is not in the patient's log as it should be: %+v", page.Entries)
	}
	if _, err := store.VerifyLog(ctx, w.cfg.Store); err != nil {
		t.Fatal(err)
	}
}

// TestClaimOwnerElsewhere: a delegate that already owns a relationship, at
// this provider or another, cannot open a second one (the two would be
// linked on chain through it); nor can a rotation hand a relationship to it.
func TestClaimOwnerElsewhere(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	shared := simchain.Key("one delegate for two providers")
	// A relationship at provider 2 owned by shared, opened by provider 2.
	other := mustKeys(t, attackerWords)
	w.enrolOnChain(other)
	c := w.claimWith(other, 2, simchain.Addr(shared))
	tag2, _ := parseFields(c["tag"])
	root, _ := parseFields(c["root"])
	proof, err := parseProof(c["proof"])
	if err != nil {
		t.Fatal(err)
	}
	tx, err := w.chain.Client.Open(ctx, w.chain.Auth(w.chain.Providers[1].Gateway), tag2[0], 2, simchain.Addr(shared), root[0], proof[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.chain.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}

	w.createEnrolled("p1", w.keys)
	r := w.staff("POST", "/admin/patients/p1/claim-code", map[string]string{"tagCode": deskCode(t, w.keys, 1)})
	claim := w.claimFor(1, simchain.Addr(shared))
	claim["code"] = r.json(t)["code"].(string)
	if r := w.post("/claims", claim); r.status != 409 || !bytes.Contains(r.body, []byte("already owns a relationship at provider 2")) {
		t.Fatalf("a claim by a delegate of provider 2: %d %s", r.status, r.body)
	}
	if r := w.staff("POST", "/admin/patients/p1/claim", w.claimFor(1, simchain.Addr(shared))); r.status != 409 {
		t.Fatalf("a staff claim by a delegate of provider 2: %d %s", r.status, r.body)
	}
	if p, _ := w.cfg.Store.Patient(ctx, "p1"); p.Tag != nil {
		t.Fatalf("mapped %s", p.Tag)
	}
	// With a delegate of its own, the claim succeeds.
	claim = w.claimFor(1, simchain.Addr(w.owner))
	claim["code"] = r.json(t)["code"].(string)
	if r := w.post("/claims", claim); r.status != 200 {
		t.Fatalf("the patient's claim: %d %s", r.status, r.body)
	}
	// A rotation to the delegate of provider 2 is refused too.
	w.tag = zkhash.Big(mustTag(t, w.keys, 1))
	if err := w.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if r := w.post("/relay/rotate", w.rotation(simchain.Addr(shared))); r.status != 409 || !bytes.Contains(r.body, []byte("already owns a relationship")) {
		t.Fatalf("rotation to a delegate of provider 2: %d %s", r.status, r.body)
	}
	if rel, _ := w.view.Relationship(w.tag); rel.Owner != simchain.Addr(w.owner) || rel.Rotation != 0 {
		t.Fatalf("after the refused rotation: %+v", rel)
	}
}

func mustTag(t testing.TB, keys *delegate.Keys, p uint32) fr.Element {
	t.Helper()
	tag, err := keys.Tag(p)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// mistype changes one character of a desk code.
func mistype(code string) string {
	b := []byte(code)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}
