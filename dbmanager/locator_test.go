package dbmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestLocatorNotes: an enrolled patient files a sealed note under their
// locator tag with an Ownership proof bound to it and reads it back by the
// tag alone; a filing is refused, and nothing filed, unless the proof is a
// locator proof (scope 0) for that very note against a root the registry
// knows; the latest note is kept.
func TestLocatorNotes(t *testing.T) {
	onBackends(t, func(t *testing.T, dsn string) {
		w := newWorldOn(t, dsn)
		w.createEnrolled("p1", w.keys)
		if err := w.view.Sync(context.Background()); err != nil {
			t.Fatal(err)
		}
		cm, _ := w.keys.Commitment()
		path, err := w.view.MerkleProof(cm)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := w.keys.Identity()
		locTag, _ := w.keys.Tag(circuits.LocatorScope)
		note := func(b byte) []byte { return bytes.Repeat([]byte{b}, gatewayapi.LocatorNoteSize) }
		// filing proves along path at scope for signal, and sends note.
		filing := func(path merkle.Proof, scope uint32, signal fr.Element, note []byte) gatewayapi.LocatorFiling {
			t.Helper()
			proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{Secret: s.Element(), Path: path, Provider: scope, Signal: signal})
			if err != nil {
				t.Fatal(err)
			}
			return gatewayapi.LocatorFiling{Tag: zkhash.Hex(pub.Tag), Note: hexutil.Encode(note), Root: zkhash.Hex(pub.Root), Proof: proof.String()}
		}
		signalOf := func(note []byte) fr.Element {
			return circuits.LocatorSignal(note, w.chain.ChainID, w.chain.D.PatientRegistry)
		}
		find := func(tag string) resp {
			t.Helper()
			return w.post("/registry/locator/find", gatewayapi.LocatorQuery{Tag: tag})
		}
		findOurs := func() string {
			t.Helper()
			r := find(zkhash.Hex(locTag))
			if r.status == 404 {
				return ""
			}
			var out gatewayapi.LocatorNote
			if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
				t.Fatalf("find: %d %s", r.status, r.body)
			}
			return out.Note
		}
		if got := findOurs(); got != "" {
			t.Fatalf("a note before any filing: %s", got)
		}

		fake, _ := merkle.New([]fr.Element{cm, zkhash.FromUint64(7)}) // a tree the registry never had
		fakePath, _ := fake.Proof(0)
		good := filing(path, circuits.LocatorScope, signalOf(note(1)), note(1))
		short := note(1)[:gatewayapi.LocatorNoteSize-1]
		withNote := func(f gatewayapi.LocatorFiling, n []byte) gatewayapi.LocatorFiling {
			f.Note = hexutil.Encode(n)
			return f
		}
		atScope1 := filing(path, 1, signalOf(note(1)), note(1))
		atScope1.Tag = good.Tag // the proof's tag is scope 1's; the gateway checks scope 0's
		claimProof := filing(path, circuits.LocatorScope, circuits.OwnershipSignal(circuits.ActionOpen, common.Address{1}, 0, w.chain.ChainID, w.chain.D.Relationships), note(1))
		for _, tc := range []struct {
			what string
			body any
			want int
		}{
			{"a short note", withNote(filing(path, circuits.LocatorScope, signalOf(short), short), short), 400},
			{"a proof of another note", withNote(good, note(2)), 403},
			{"a proof at a provider's scope", atScope1, 403},
			{"a claim's proof", claimProof, 403},
			{"a root the registry never had", filing(fakePath, circuits.LocatorScope, signalOf(note(1)), note(1)), 400},
			{"a tag that is not hex", gatewayapi.LocatorFiling{Tag: "tag", Note: good.Note, Root: good.Root, Proof: good.Proof}, 400},
			{"no proof", gatewayapi.LocatorFiling{Tag: good.Tag, Note: good.Note, Root: good.Root}, 400},
			{"an unknown field", map[string]string{"tag": good.Tag, "note": good.Note, "root": good.Root, "proof": good.Proof, "leaf": "5"}, 400},
		} {
			if r := w.post("/registry/locator", tc.body); r.status != tc.want || !json.Valid(r.body) {
				t.Fatalf("%s: %d %s, want %d with a JSON message", tc.what, r.status, r.body, tc.want)
			}
			if got := findOurs(); got != "" {
				t.Fatalf("%s: filed %s", tc.what, got)
			}
		}

		if r := w.post("/registry/locator", good); r.status != 204 {
			t.Fatalf("file: %d %s", r.status, r.body)
		}
		if got := findOurs(); got != hexutil.Encode(note(1)) {
			t.Fatalf("found %s, want the note filed", got)
		}
		if r := w.post("/registry/locator", filing(path, circuits.LocatorScope, signalOf(note(2)), note(2))); r.status != 204 {
			t.Fatalf("file again: %d %s", r.status, r.body)
		}
		if got := findOurs(); got != hexutil.Encode(note(2)) {
			t.Fatalf("found %s, want the latest note", got)
		}

		other, _ := w.keys.Tag(1)
		for _, tc := range []struct {
			what, tag string
			want      int
		}{
			{"another tag", zkhash.Hex(other), 404},
			{"a zero tag", "0x0", 400},
			{"a tag outside the field", hexutil.EncodeBig(zkhash.Modulus()), 400},
			{"not hex", "locator", 400},
		} {
			if r := find(tc.tag); r.status != tc.want || !json.Valid(r.body) {
				t.Fatalf("find %s: %d %s, want %d", tc.what, r.status, r.body, tc.want)
			}
		}
	})
}
