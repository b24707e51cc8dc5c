package audit

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/big"
	"strings"
	"sync"

	"github.com/consensys/gnark-crypto/ecc/bn254/fp"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/prover"
)

// How the verifier check works (docs/audit.md, "verifiers").
//
// gnark's Groth16 verifier is one template whose only key-dependent parts are
// the verifying key's coordinates, inlined as PUSH32 constants (β, γ, δ
// negated). The bindings hold the verifier compiled from the dev keys; in its
// runtime code we locate every constant that carries a dev-key coordinate (or
// its negation). A deployed verifier is then read as "the template with some
// key in those slots": it must match the template instruction by instruction
// everywhere else, its constants give the key it carries, and that key's
// prover.VerifyingKeyHash values, hashed as prover.KeySet.RegistryHash does,
// must equal the hash the AgentRegistry records. So the check needs no key
// files and holds for any ceremony's keys, and a verifier with different
// logic (an always-accept verifier carrying the right constants) fails too.
//
// A coordinate with leading zero bytes is pushed with a shorter PUSH by solc,
// shifting every later offset; the alignment accepts any PUSH size in a key
// slot, and a constant that differs only by that shift when it is a jump
// target or the offset of the constants solc stores after the code (the
// field moduli, which the code CODECOPYs), those stored constants being
// byte for byte the template's.

// slot says which word of a verifying key's raw layout a PUSH32 carries.
type slot struct {
	word    int
	negated bool // the template holds p − word
}

type verifierTemplate struct {
	circuit prover.Circuit
	code    []byte
	slots   map[int]slot // instruction offset → key word
	words   int
	devHash [32]byte // VerifyingKeyHash of the dev key the template carries
	data    int      // offset of the constants stored after the code; len(code) if none
}

const (
	opPUSH1    = 0x60
	opPUSH32   = 0x7f
	opJUMPDEST = 0x5b
	opINVALID  = 0xfe
)

func pushLen(op byte) int {
	if op >= opPUSH1 && op <= opPUSH32 {
		return int(op-opPUSH1) + 1
	}
	return 0
}

// operand returns the immediate of the PUSH at i, left-padded to 32 bytes
// (a PUSH running past the end of code reads zeros, as the EVM does).
func operand(code []byte, i int) [32]byte {
	n := pushLen(code[i])
	var imm [32]byte
	end := min(i+1+n, len(code))
	copy(imm[32-n:], code[i+1:end])
	return imm
}

// runtimeCode returns the runtime part of solc creation code for a contract
// without constructor arguments or immutables: the init code ends with
// PUSH2 len DUP1 PUSH2 off PUSH1 0 CODECOPY PUSH1 0 RETURN INVALID and the
// runtime is the code from off to the end.
func runtimeCode(creation []byte) ([]byte, error) {
	for i := 0; i+14 <= len(creation); i++ {
		c := creation[i:]
		if c[0] == 0x61 && c[3] == 0x80 && c[4] == 0x61 && bytes.Equal(c[7:14], []byte{0x60, 0x00, 0x39, 0x60, 0x00, 0xf3, 0xfe}) {
			n, off := int(c[1])<<8|int(c[2]), int(c[5])<<8|int(c[6])
			if off == i+14 && off+n == len(creation) {
				return creation[off:], nil
			}
		}
	}
	return nil, fmt.Errorf("audit: creation code without the expected CODECOPY/RETURN epilogue")
}

// vkWords returns the 32-byte words prover.VerifyingKeyHash hashes.
func vkWords(vk *groth16bn254.VerifyingKey) [][32]byte { return prover.VerifyingKeyWords(vk) }

func hashWords(ws [][32]byte) [32]byte {
	buf := make([]byte, 0, 32*len(ws))
	for _, w := range ws {
		buf = append(buf, w[:]...)
	}
	return [32]byte(crypto.Keccak256(buf))
}

var fpModulus = fp.Modulus()

// negate returns p − w for a field element w (0 for 0).
func negate(w [32]byte) [32]byte {
	x := new(big.Int).SetBytes(w[:])
	if x.Sign() == 0 {
		return w
	}
	var out [32]byte
	new(big.Int).Sub(fpModulus, x).FillBytes(out[:])
	return out
}

func newTemplate(c prover.Circuit, creationHex string, vk *groth16bn254.VerifyingKey) (*verifierTemplate, error) {
	creation, err := hex.DecodeString(strings.TrimPrefix(creationHex, "0x"))
	if err != nil {
		return nil, fmt.Errorf("audit: %s verifier bytecode: %w", c, err)
	}
	code, err := runtimeCode(creation)
	if err != nil {
		return nil, fmt.Errorf("%w (%s verifier)", err, c)
	}
	ws := vkWords(vk)
	want := map[[32]byte]slot{}
	for i, w := range ws {
		want[w] = slot{word: i}
	}
	for i, w := range ws {
		if _, dup := want[negate(w)]; !dup {
			want[negate(w)] = slot{word: i, negated: true}
		}
	}
	t := &verifierTemplate{circuit: c, code: code, slots: map[int]slot{}, words: len(ws), devHash: hashWords(ws)}
	found := make([]bool, len(ws))
	for i := 0; i < len(code); i += 1 + pushLen(code[i]) {
		if code[i] != opPUSH32 {
			continue
		}
		if s, ok := want[operand(code, i)]; ok {
			t.slots[i] = s
			found[s.word] = true
		}
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("audit: the %s verifier template does not carry key word %d as a constant (gnark template changed?)", c, i)
		}
	}
	t.data = dataOffset(code)
	return t, nil
}

// dataOffset returns where the constants solc stores after the code begin:
// the smallest pushed offset that follows an INVALID instruction and is no
// jump target (the code CODECOPYs from there), or len(code) if none is.
func dataOffset(code []byte) int {
	boundary := map[int]bool{}
	for i := 0; i < len(code); i += 1 + pushLen(code[i]) {
		boundary[i] = true
	}
	data := len(code)
	for i := 0; i < len(code); i += 1 + pushLen(code[i]) {
		n := pushLen(code[i])
		if n == 0 || n > 4 {
			continue
		}
		imm := operand(code, i)
		v := int(new(big.Int).SetBytes(imm[:]).Int64())
		if v > 0 && v < data && boundary[v-1] && code[v-1] == opINVALID && code[v] != opJUMPDEST {
			data = v
		}
	}
	return data
}

// extract aligns code with the template and returns the verifying-key words
// code carries, or why code is not this template.
func (t *verifierTemplate) extract(code []byte) ([][32]byte, error) {
	tc := t.code
	words := make([][32]byte, t.words)
	have := make([]bool, t.words)
	offset := make([]int, len(tc)+1) // template instruction offset → code offset
	for i := range offset {
		offset[i] = -1
	}
	type jump struct{ at, dAt int }
	var moved []jump
	ti, di := 0, 0
	for ti < len(tc) {
		if di >= len(code) {
			return nil, fmt.Errorf("code ends at byte %d, inside the template", di)
		}
		offset[ti] = di
		top, dop := tc[ti], code[di]
		if s, ok := t.slots[ti]; ok {
			if pushLen(dop) == 0 {
				return nil, fmt.Errorf("byte %d: opcode 0x%02x where the template pushes key word %d", di, dop, s.word)
			}
			w := operand(code, di)
			if s.negated {
				w = negate(w)
			}
			if have[s.word] && words[s.word] != w {
				return nil, fmt.Errorf("byte %d: key word %d differs from its other occurrence", di, s.word)
			}
			words[s.word], have[s.word] = w, true
			ti = min(ti+1+pushLen(top), len(tc))
			di = min(di+1+pushLen(dop), len(code))
			continue
		}
		if top != dop {
			return nil, fmt.Errorf("byte %d: opcode 0x%02x, the template has 0x%02x (template byte %d)", di, dop, top, ti)
		}
		if n := pushLen(top); n > 0 {
			if operand(tc, ti) != operand(code, di) {
				moved = append(moved, jump{ti, di})
			}
			// A push running past the end (data after the code) ends both.
			ti, di = min(ti+1+n, len(tc)), min(di+1+n, len(code))
			continue
		}
		ti++
		di++
	}
	if di != len(code) {
		return nil, fmt.Errorf("code has %d bytes beyond the template", len(code)-di)
	}
	offset[len(tc)] = di
	// The stored constants are the template's, at the same distance from the end.
	dataAt := len(code) - (len(tc) - t.data)
	if offset[t.data] != dataAt || !bytes.Equal(tc[t.data:], code[dataAt:]) {
		return nil, fmt.Errorf("the %d bytes of constants after the code differ from the template's", len(tc)-t.data)
	}
	// A differing constant is accepted only as a jump target or the stored
	// constants' offset, moved by a shorter key push.
	for _, m := range moved {
		tv, dv := new(big.Int).SetBytes(tc[m.at+1:m.at+1+pushLen(tc[m.at])]), new(big.Int).SetBytes(code[m.dAt+1:min(m.dAt+1+pushLen(code[m.dAt]), len(code))])
		ok := tv.IsInt64() && dv.IsInt64() && tv.Int64() < int64(len(tc))
		if ok {
			to, want := int(tv.Int64()), int(dv.Int64())
			switch {
			case to < t.data:
				ok = tc[to] == opJUMPDEST && offset[to] >= 0 && offset[to] == want
			default:
				ok = want == dataAt+(to-t.data)
			}
		}
		if !ok {
			return nil, fmt.Errorf("byte %d: constant 0x%x, the template has 0x%x", m.dAt, dv, tv)
		}
	}
	return words, nil
}

// templates are the verifier templates, one per circuit, built once from the
// bindings and the dev keys.
var templates = sync.OnceValues(func() (map[prover.Circuit]*verifierTemplate, error) {
	ks, err := prover.DevKeys()
	if err != nil {
		return nil, err
	}
	bins := map[prover.Circuit]string{
		prover.Ownership:   bindings.OwnershipVerifierMetaData.Bin,
		prover.Entitlement: bindings.EntitlementVerifierMetaData.Bin,
	}
	out := map[prover.Circuit]*verifierTemplate{}
	for _, c := range prover.Circuits() {
		k, err := ks.Keys(c)
		if err != nil {
			return nil, err
		}
		t, err := newTemplate(c, bins[c], k.VK.(*groth16bn254.VerifyingKey))
		if err != nil {
			return nil, err
		}
		out[c] = t
	}
	// The insertion verifier's template: the bindings' code from the
	// template key (prover.InsertionTemplateVK), never a network's.
	vk, err := prover.InsertionTemplateVK()
	if err != nil {
		return nil, err
	}
	t, err := newTemplate(prover.Insertion, bindings.InsertionVerifierMetaData.Bin, vk.(*groth16bn254.VerifyingKey))
	if err != nil {
		return nil, err
	}
	out[prover.Insertion] = t
	return out, nil
})
