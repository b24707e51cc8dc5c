package audit

import (
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/consensys/gnark-crypto/ecc/bn254"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"

	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/prover"
)

// TestRuntimeMatchesCompiler: the runtime code cut from the bindings'
// creation code is solc's bin-runtime.
func TestRuntimeMatchesCompiler(t *testing.T) {
	raw, err := os.ReadFile("../contracts/build/combined.json")
	if err != nil {
		t.Fatal(err)
	}
	var combined struct {
		Contracts map[string]struct {
			BinRuntime string `json:"bin-runtime"`
		}
	}
	if err := json.Unmarshal(raw, &combined); err != nil {
		t.Fatal(err)
	}
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range prover.Circuits() {
		name := prover.SolidityContractName(c)
		want := combined.Contracts["src/"+name+".sol:"+name].BinRuntime
		if got := hex.EncodeToString(tpls[c].code); got != want || want == "" {
			t.Fatalf("%s: runtime code differs from combined.json", name)
		}
	}
}

// TestTemplateCarriesDevKey: the template's key slots give back the dev key.
func TestTemplateCarriesDevKey(t *testing.T) {
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := prover.DevKeys()
	for _, c := range prover.Circuits() {
		words, err := tpls[c].extract(tpls[c].code)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		k, _ := ks.Keys(c)
		if hashWords(words) != prover.VerifyingKeyHash(k.VK) {
			t.Fatalf("%s: extracted key hash differs from the dev key's", c)
		}
		t.Logf("%s: %d key slots for %d words", c, len(tpls[c].slots), tpls[c].words)
	}
}

// otherKey returns a verifying key of the same shape as the dev ownership key
// with fresh points (multiples of the generators by seeded scalars).
func otherKey(t testing.TB, seed int64, c prover.Circuit) *groth16bn254.VerifyingKey {
	t.Helper()
	ks, _ := prover.DevKeys()
	k, _ := ks.Keys(c)
	dev := k.VK.(*groth16bn254.VerifyingKey)
	_, _, g1, g2 := bn254.Generators()
	n := seed
	scalar := func() *big.Int {
		n++
		var s fr.Element
		s.SetInt64(n*7919 + 12345)
		s.Square(&s)
		return s.BigInt(new(big.Int))
	}
	vk := &groth16bn254.VerifyingKey{}
	vk.G1.Alpha.ScalarMultiplication(&g1, scalar())
	vk.G2.Beta.ScalarMultiplication(&g2, scalar())
	vk.G2.Gamma = dev.G2.Gamma // gnark's ceremony keeps γ = the generator
	vk.G2.Delta.ScalarMultiplication(&g2, scalar())
	vk.G1.K = make([]bn254.G1Affine, len(dev.G1.K))
	for i := range vk.G1.K {
		vk.G1.K[i].ScalarMultiplication(&g1, scalar())
	}
	return vk
}

// patchedCode returns code (creation or runtime code containing the
// template's runtime) with every key slot rewritten to vk's words, keeping
// PUSH32 (a leading zero byte stays in the immediate).
func patchedCode(t testing.TB, tpl *verifierTemplate, code []byte, vk *groth16bn254.VerifyingKey) []byte {
	t.Helper()
	base := len(code) - len(tpl.code)
	out := append([]byte(nil), code...)
	ws := vkWords(vk)
	for at, s := range tpl.slots {
		w := ws[s.word]
		if s.negated {
			w = negate(w)
		}
		copy(out[base+at+1:], w[:])
	}
	return out
}

func TestExtractOtherKey(t *testing.T) {
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	tpl := tpls[prover.Ownership]
	vk := otherKey(t, 1, prover.Ownership)
	words, err := tpl.extract(patchedCode(t, tpl, tpl.code, vk))
	if err != nil {
		t.Fatal(err)
	}
	if hashWords(words) != prover.VerifyingKeyHash(vk) {
		t.Fatal("extracted key hash differs from the planted key's")
	}
	if hashWords(words) == tpl.devHash {
		t.Fatal("planted key equals the dev key")
	}
}

// TestExtractShortPush: a key word with a leading zero byte is pushed by solc
// with PUSH31, which moves every later jump target, and the offset of the
// constants stored after the code, by one byte; the alignment still reads
// the key, and still refuses any other change.
func TestExtractShortPush(t *testing.T) {
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	tpl := tpls[prover.Ownership]
	// Find the first slot and rebuild the code with that push shortened.
	first := len(tpl.code)
	for at := range tpl.slots {
		first = min(first, at)
	}
	s := tpl.slots[first]
	ws := vkWords(otherKey(t, 2, prover.Ownership))
	var short [32]byte
	copy(short[1:], ws[s.word][1:]) // a word with a leading zero byte
	ws[s.word] = short
	stored := short
	if s.negated {
		stored = negate(short)
	}
	if stored[0] != 0 {
		// p − w has no leading zero: use w = p − (short) instead so the stored word does.
		stored = short
		ws[s.word] = negate(short)
	}
	// Assemble: every slot gets its word; the first as PUSH31; jump targets
	// and the stored constants' offset after it move by −1.
	code := tpl.code
	var out []byte
	shift := func(off int) int {
		if off > first {
			return off - 1
		}
		return off
	}
	for i := 0; i < len(code); {
		op := code[i]
		n := pushLen(op)
		switch {
		case i == first:
			out = append(out, opPUSH32-1)
			out = append(out, stored[1:]...)
		case isSlot(tpl, i):
			w := ws[tpl.slots[i].word]
			if tpl.slots[i].negated {
				w = negate(w)
			}
			out = append(out, op)
			out = append(out, w[:]...)
		case n == 2:
			v := int(code[i+1])<<8 | int(code[i+2])
			if v < len(code) && v > first && (code[v] == opJUMPDEST || v == tpl.data) {
				v = shift(v)
			}
			out = append(out, op, byte(v>>8), byte(v))
		default:
			out = append(out, code[i:min(i+1+n, len(code))]...)
		}
		i += 1 + n
	}
	words, err := tpl.extract(out)
	if err != nil {
		t.Fatal(err)
	}
	if words[s.word] != ws[s.word] {
		t.Fatalf("word %d: got %x, want %x", s.word, words[s.word], ws[s.word])
	}
	// Any other byte change is refused.
	bad := append([]byte(nil), out...)
	for i := 0; i < len(bad); i += 1 + pushLen(bad[i]) {
		if bad[i] == 0x52 { // the first MSTORE becomes an MLOAD
			bad[i] = 0x51
			break
		}
	}
	if _, err := tpl.extract(bad); err == nil {
		t.Fatal("a changed byte outside the key slots was accepted")
	}
	if tpl.data >= len(tpl.code) {
		t.Fatal("the template stores no constants after its code (solc changed?)")
	}
	bad = append([]byte(nil), out...)
	bad[len(bad)-1] ^= 1 // the last stored constant (a field modulus)
	if _, err := tpl.extract(bad); err == nil {
		t.Fatal("a changed stored constant was accepted")
	}
}

// TestExtractCompiledShortPush: the verifiers solc really compiles for keys
// from a `medrec run` ceremony (testdata/shortpush-keys, verifying keys
// only) whose ownership key has a word with a leading zero byte, so its
// verifier is shorter than the template, still give back their keys.
func TestExtractCompiledShortPush(t *testing.T) {
	if err := verifiers.Check("../contracts"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI has no Solidity toolchain: %v", err)
		}
		t.Skipf("%v (make test installs it)", err)
	}
	ks, err := prover.LoadKeys(shortPushKeys(t), false)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verifiers.Compile(t.Context(), "../contracts", ks)
	if err != nil {
		t.Fatal(err)
	}
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	for c, bin := range map[prover.Circuit][]byte{prover.Ownership: v.Ownership, prover.Entitlement: v.Entitlement} {
		code, err := runtimeCode(bin)
		if err != nil {
			t.Fatal(err)
		}
		if c == prover.Ownership && len(code) >= len(tpls[c].code) {
			t.Fatalf("the testdata's ownership verifier is %d bytes, not shorter than the template's %d", len(code), len(tpls[c].code))
		}
		words, err := tpls[c].extract(code)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		k, _ := ks.Keys(c)
		if hashWords(words) != prover.VerifyingKeyHash(k.VK) {
			t.Fatalf("%s: extracted key hash differs from the keys'", c)
		}
	}
}

// shortPushKeys is testdata/shortpush-keys, the verifying keys of a
// ceremony for the depth-20 Ownership circuit, presented as keys of the
// circuits this binary compiles: a verifier's code depends on its verifying
// key alone (and the number of public inputs, the same at every depth), so
// the keys still compile to the short verifier this test is about, while
// prover refuses keys for another circuit. Only the manifest's circuit
// digests and constraint counts are replaced, in memory.
func shortPushKeys(t *testing.T) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, f := range []string{prover.ManifestFile, "ownership.vk", "entitlement.vk"} {
		b, err := os.ReadFile(filepath.Join("testdata", "shortpush-keys", f))
		if err != nil {
			t.Fatal(err)
		}
		fsys[f] = &fstest.MapFile{Data: b}
	}
	var m prover.Manifest
	if err := json.Unmarshal(fsys[prover.ManifestFile].Data, &m); err != nil {
		t.Fatal(err)
	}
	dev, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	for c, e := range m.Circuits {
		e.R1CS, e.Constraints = dev.Manifest.Circuits[c].R1CS, dev.Manifest.Circuits[c].Constraints
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	fsys[prover.ManifestFile] = &fstest.MapFile{Data: b}
	return fsys
}

func isSlot(tpl *verifierTemplate, i int) bool { _, ok := tpl.slots[i]; return ok }
