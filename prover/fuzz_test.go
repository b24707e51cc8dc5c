package prover

import (
	"bytes"
	"errors"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
)

// generatorProof is a well-encoded proof (A, C the G1 generator, B the G2
// generator): it parses, and never verifies.
func generatorProof() Proof {
	_, _, g1, g2 := bn254.Generators()
	return encodeProof(&groth16bn254.Proof{Ar: g1, Bs: g2, Krs: g1})
}

// FuzzParseProof: the gateway parses the proofs of claims, anonymous viewers
// and rotations from request bodies. ParseProof never panics; it accepts
// exactly 256 bytes of canonical, on-curve, in-subgroup, finite points and
// returns them unchanged, and refuses anything else with ErrProofEncoding.
func FuzzParseProof(f *testing.F) {
	good := generatorProof()
	f.Add(good[:])
	f.Add(good[:255])
	f.Add(append(good[:], 0))
	f.Add(make([]byte, ProofSize))
	for _, i := range []int{0, 31, 32, 64, 96, 128, 160, 192, 224, 255} {
		p := good
		p[i] ^= 1
		f.Add(p[:])
	}
	for _, flag := range []byte{0x40, 0x80, 0xc0} {
		p := good
		p[0] |= flag
		f.Add(p[:])
		p = good
		p[64] |= flag
		f.Add(p[:])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProof(b)
		if err != nil {
			if !errors.Is(err, ErrProofEncoding) {
				t.Fatalf("refused with %v, not ErrProofEncoding", err)
			}
			if p != (Proof{}) {
				t.Fatal("refused, yet returned a proof")
			}
			return
		}
		if !bytes.Equal(p[:], b) {
			t.Fatalf("parsed %x as %x", b, p)
		}
		var q Proof
		if err := q.UnmarshalText([]byte(p.String())); err != nil || q != p {
			t.Fatalf("text round trip: %v", err)
		}
		g, err := p.decode()
		if err != nil || g.Ar.IsInfinity() || !g.Bs.IsOnCurve() || !g.Krs.IsInSubGroup() {
			t.Fatalf("accepted points do not decode: %v", err)
		}
	})
}
