package prover

import (
	"encoding/hex"
	"fmt"
	"strings"

	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
)

// ProofSize is the size of an encoded proof.
const ProofSize = 256

// Proof is a Groth16 proof in the encoding the Solidity verifier takes:
// A.x, A.y, B.x.im, B.x.re, B.y.im, B.y.re, C.x, C.y, each 32 bytes big-endian.
type Proof [ProofSize]byte

func encodeProof(p *groth16bn254.Proof) Proof {
	var out Proof
	a, b, c := p.Ar.RawBytes(), p.Bs.RawBytes(), p.Krs.RawBytes()
	copy(out[0:64], a[:])
	copy(out[64:192], b[:])
	copy(out[192:256], c[:])
	return out
}

// decode checks the encoding strictly: canonical coordinates, points on the
// curve and in the prime-order subgroups, no point at infinity.
func (p Proof) decode() (*groth16bn254.Proof, error) {
	var g groth16bn254.Proof
	if _, err := g.Ar.SetBytes(p[0:64]); err != nil {
		return nil, fmt.Errorf("%w: A: %v", ErrProofEncoding, err)
	}
	if _, err := g.Bs.SetBytes(p[64:192]); err != nil {
		return nil, fmt.Errorf("%w: B: %v", ErrProofEncoding, err)
	}
	if _, err := g.Krs.SetBytes(p[192:256]); err != nil {
		return nil, fmt.Errorf("%w: C: %v", ErrProofEncoding, err)
	}
	if g.Ar.IsInfinity() || g.Bs.IsInfinity() || g.Krs.IsInfinity() {
		return nil, fmt.Errorf("%w: point at infinity", ErrProofEncoding)
	}
	if !g.Ar.IsInSubGroup() || !g.Bs.IsInSubGroup() || !g.Krs.IsInSubGroup() {
		return nil, fmt.Errorf("%w: point not in the subgroup", ErrProofEncoding)
	}
	if encodeProof(&g) != p {
		return nil, fmt.Errorf("%w: non-canonical encoding", ErrProofEncoding)
	}
	return &g, nil
}

// String returns the proof as 0x-prefixed hex.
func (p Proof) String() string { return "0x" + hex.EncodeToString(p[:]) }

// MarshalText encodes the proof as 0x-prefixed hex.
func (p Proof) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText decodes 0x-prefixed hex; the points are checked when the
// proof is verified.
func (p *Proof) UnmarshalText(b []byte) error {
	s := string(b)
	if !strings.HasPrefix(s, "0x") || len(s) != 2+2*ProofSize {
		return fmt.Errorf("%w: want 0x and %d hex digits", ErrProofEncoding, 2*ProofSize)
	}
	if _, err := hex.Decode(p[:], b[2:]); err != nil {
		return fmt.Errorf("%w: %v", ErrProofEncoding, err)
	}
	return nil
}

// ParseProof decodes and checks a proof's points.
func ParseProof(b []byte) (Proof, error) {
	var p Proof
	if len(b) != ProofSize {
		return p, fmt.Errorf("%w: %d bytes, want %d", ErrProofEncoding, len(b), ProofSize)
	}
	copy(p[:], b)
	if _, err := p.decode(); err != nil {
		return Proof{}, err
	}
	return p, nil
}
