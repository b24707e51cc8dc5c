package circuits

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"testing"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
	"github.com/consensys/gnark/logger"
	"github.com/consensys/gnark/test"
	"github.com/ethereum/go-ethereum/common"
	"github.com/rs/zerolog"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	logger.Set(zerolog.Nop())
	os.Exit(m.Run())
}

var field = ecc.BN254.ScalarField()

func rMinus(k int64) fr.Element {
	var e fr.Element
	e.SetBigInt(new(big.Int).Sub(zkhash.Modulus(), big.NewInt(k)))
	return e
}

func plus(e fr.Element, k uint64) fr.Element {
	var one fr.Element
	one.SetUint64(k)
	e.Add(&e, &one)
	return e
}

// hashCircuit checks the in-circuit hash of one domain against an expected output.
type hashCircuit struct {
	domain zkhash.Domain
	In     []frontend.Variable
	Out    frontend.Variable `gnark:",public"`
}

func (c *hashCircuit) Define(api frontend.API) error {
	h, err := newHasher(api)
	if err != nil {
		return err
	}
	api.AssertIsEqual(h.hash(c.domain, c.In...), c.Out)
	return nil
}

// TestHashTwin: the in-circuit hash equals zkhash.Hash on every domain, at the
// boundary values 0 and r−1 and elsewhere.
func TestHashTwin(t *testing.T) {
	values := []fr.Element{{}, zkhash.FromUint64(1), rMinus(1), zkhash.Commitment(zkhash.FromUint64(77))}
	for _, d := range zkhash.Domains() {
		for i := range values {
			in := make([]fr.Element, d.Arity())
			vars := make([]frontend.Variable, d.Arity())
			for j := range in {
				in[j] = values[(i+j)%len(values)]
				vars[j] = in[j]
			}
			want := zkhash.Hash(d, in...)
			circuit := &hashCircuit{domain: d, In: make([]frontend.Variable, d.Arity())}
			if err := test.IsSolved(circuit, &hashCircuit{domain: d, In: vars, Out: want}, field); err != nil {
				t.Fatalf("%s/%d: in-circuit hash differs from zkhash: %v", d.Name(), i, err)
			}
			if err := test.IsSolved(circuit, &hashCircuit{domain: d, In: vars, Out: plus(want, 1)}, field); err == nil {
				t.Fatalf("%s/%d: a wrong output satisfied the hash circuit", d.Name(), i)
			}
		}
	}
}

func testTree(t *testing.T, n int) (*merkle.Tree, []fr.Element) {
	t.Helper()
	secrets := make([]fr.Element, n)
	leaves := make([]fr.Element, n)
	for i := range secrets {
		secrets[i] = zkhash.FromUint64(uint64(500 + i))
		leaves[i] = zkhash.Commitment(secrets[i])
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	return tree, secrets
}

func ownershipWitness(t *testing.T, tree *merkle.Tree, secret fr.Element, provider uint32) OwnershipWitness {
	t.Helper()
	idx, _ := tree.IndexOf(zkhash.Commitment(secret))
	path, err := tree.Proof(idx)
	if err != nil {
		t.Fatal(err)
	}
	w := OwnershipWitness{
		Secret: secret, Path: path, Provider: provider,
		Signal: OwnershipSignal(ActionOpen, common.HexToAddress("0x80be4b699095bAD2e717A0854DcF176D611D413B"), 0, big.NewInt(1337), common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")),
	}
	if err := w.Check(); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestOwnership(t *testing.T) {
	tree, secrets := testTree(t, 13)
	// A tree whose one leaf is the commitment of s = r−1.
	edgeTree, err := merkle.New([]fr.Element{zkhash.Commitment(rMinus(1))})
	if err != nil {
		t.Fatal(err)
	}
	valid := ownershipWitness(t, tree, secrets[5], 2)
	a := valid.Assignment()

	mutate := func(f func(a *Ownership)) *Ownership {
		b := *valid.Assignment()
		f(&b)
		return &b
	}
	other := ownershipWitness(t, tree, secrets[6], 2).Assignment()
	invalid := map[string]*Ownership{
		"wrong secret":             mutate(func(b *Ownership) { b.Secret = secrets[6] }),
		"secret of another leaf":   mutate(func(b *Ownership) { b.Secret = other.Secret; b.Tag = other.Tag }),
		"wrong sibling":            mutate(func(b *Ownership) { b.Siblings[4] = zkhash.FromUint64(9) }),
		"path bit flipped":         mutate(func(b *Ownership) { b.LeafIndex = valid.Path.Index ^ 1 }),
		"high path bit flipped":    mutate(func(b *Ownership) { b.LeafIndex = valid.Path.Index ^ (1 << 19) }),
		"index beyond the tree":    mutate(func(b *Ownership) { b.LeafIndex = valid.Path.Index + merkle.Capacity }),
		"root + 1":                 mutate(func(b *Ownership) { b.Root = plus(valid.Public().Root, 1) }),
		"scope + 1":                mutate(func(b *Ownership) { b.Scope = 3 }),
		"tag + 1":                  mutate(func(b *Ownership) { b.Tag = plus(valid.Public().Tag, 1) }),
		"tag of another provider":  mutate(func(b *Ownership) { b.Tag = zkhash.Tag(secrets[5], 3) }),
		"root and tag swapped":     mutate(func(b *Ownership) { b.Root, b.Tag = a.Tag, a.Root }),
		"scope and signal swapped": mutate(func(b *Ownership) { b.Scope, b.Signal = a.Signal, a.Scope }),
		"old root":                 mutate(func(b *Ownership) { b.Root = merkle.Zero(merkle.Depth) }),
	}
	opts := []test.TestingOption{
		test.WithCurves(ecc.BN254), test.WithBackends(backend.GROTH16),
		test.NoFuzzing(), test.NoSerializationChecks(), test.NoSolidityChecks(),
		test.WithValidAssignment(a),
		// Boundaries: first and last leaf, s = r−1, scope 0, signal 0 and r−1.
		test.WithValidAssignment(ownershipWitness(t, tree, secrets[0], 0).Assignment()),
		test.WithValidAssignment(ownershipWitness(t, tree, secrets[12], 1<<31-1).Assignment()),
		test.WithValidAssignment(ownershipWitness(t, edgeTree, rMinus(1), 1).Assignment()),
		test.WithValidAssignment(mutate(func(b *Ownership) { b.Signal = 0 })),
		test.WithValidAssignment(mutate(func(b *Ownership) { b.Signal = rMinus(1) })),
	}
	for name, inv := range invalid {
		if err := test.IsSolved(&Ownership{}, inv, field); err == nil {
			t.Errorf("invalid assignment %q satisfies Ownership", name)
		}
		opts = append(opts, test.WithInvalidAssignment(inv))
	}
	test.NewAssert(t).CheckCircuit(&Ownership{}, opts...)
}

func TestEntitlement(t *testing.T) {
	tag := zkhash.Tag(zkhash.FromUint64(42), 7)
	valid := EntitlementWitness{
		ViewerSecret: zkhash.FromUint64(1001),
		GrantSecret:  zkhash.FromUint64(2002),
		Tag:          tag,
		Challenge:    zkhash.FromUint64(31337),
	}
	a := valid.Assignment()
	mutate := func(f func(b *Entitlement)) *Entitlement {
		b := *valid.Assignment()
		f(&b)
		return &b
	}
	invalid := map[string]*Entitlement{
		"wrong viewer secret":     mutate(func(b *Entitlement) { b.ViewerSecret = zkhash.FromUint64(1002) }),
		"wrong grant secret":      mutate(func(b *Entitlement) { b.GrantSecret = zkhash.FromUint64(2003) }),
		"commitment as secret":    mutate(func(b *Entitlement) { b.ViewerSecret = zkhash.ViewerCommitment(valid.ViewerSecret) }),
		"grant + 1":               mutate(func(b *Entitlement) { b.Grant = plus(valid.Public().Grant, 1) }),
		"tag + 1":                 mutate(func(b *Entitlement) { b.Tag = plus(tag, 1) }),
		"grant and tag swapped":   mutate(func(b *Entitlement) { b.Grant, b.Tag = a.Tag, a.Grant }),
		"tag of another provider": mutate(func(b *Entitlement) { b.Tag = zkhash.Tag(zkhash.FromUint64(42), 8) }),
	}
	edge := valid
	edge.ViewerSecret, edge.GrantSecret, edge.Tag, edge.Challenge = rMinus(1), fr.Element{}, rMinus(1), rMinus(1)
	opts := []test.TestingOption{
		test.WithCurves(ecc.BN254), test.WithBackends(backend.GROTH16),
		test.NoFuzzing(), test.NoSerializationChecks(), test.NoSolidityChecks(),
		test.WithValidAssignment(a),
		test.WithValidAssignment(edge.Assignment()),
	}
	for name, inv := range invalid {
		if err := test.IsSolved(&Entitlement{}, inv, field); err == nil {
			t.Errorf("invalid assignment %q satisfies Entitlement", name)
		}
		opts = append(opts, test.WithInvalidAssignment(inv))
	}
	test.NewAssert(t).CheckCircuit(&Entitlement{}, opts...)
}

// TestNonCanonicalInputsAliasInCircuit documents why every verifier in this
// project refuses public inputs ≥ r: inside the circuit r is 0, so a proof for
// scope 0 is also a proof for "scope r". The prover's Verify and the Solidity
// verifier reject such encodings; this test guards the premise.
func TestNonCanonicalInputsAliasInCircuit(t *testing.T) {
	tree, secrets := testTree(t, 2)
	w := ownershipWitness(t, tree, secrets[1], 0)
	a := w.Assignment()
	a.Scope = new(big.Int).Set(zkhash.Modulus()) // "r"
	if err := test.IsSolved(&Ownership{}, a, field); err != nil {
		t.Fatalf("expected r to alias 0 inside the circuit: %v", err)
	}
}

// TestConstraintCounts pins the circuits' sizes to testdata/constraints.golden:
// a change in size is a change in the statement or in proving cost, and must
// be deliberate.
func TestConstraintCounts(t *testing.T) {
	var b bytes.Buffer
	for _, c := range []struct {
		name    string
		circuit frontend.Circuit
	}{{"ownership", &Ownership{}}, {"entitlement", &Entitlement{}}, {"insertion", &Insertion{}}} {
		ccs, err := frontend.Compile(field, r1cs.NewBuilder, c.circuit)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		fmt.Fprintf(&b, "%s constraints=%d public=%d secret=%d\n", c.name, ccs.GetNbConstraints(), ccs.GetNbPublicVariables()-1, ccs.GetNbSecretVariables())
	}
	const path = "testdata/constraints.golden"
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("constraint counts changed:\n got: %s\nwant: %s", b.Bytes(), want)
	}
}

func TestOwnershipSignal(t *testing.T) {
	d := common.HexToAddress("0x80be4b699095bAD2e717A0854DcF176D611D413B")
	c := common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")
	base := OwnershipSignal(ActionOpen, d, 0, big.NewInt(1337), c)
	variants := map[string]fr.Element{
		"rotate":         OwnershipSignal(ActionRotate, d, 0, big.NewInt(1337), c),
		"other delegate": OwnershipSignal(ActionOpen, c, 0, big.NewInt(1337), c),
		"counter 1":      OwnershipSignal(ActionOpen, d, 1, big.NewInt(1337), c),
		"other chain":    OwnershipSignal(ActionOpen, d, 0, big.NewInt(1), c),
		"other contract": OwnershipSignal(ActionOpen, d, 0, big.NewInt(1337), d),
	}
	for name, v := range variants {
		if v == base {
			t.Errorf("signal ignores %s", name)
		}
	}
	// Pinned in testdata/signals.json, which the Solidity tests read too.
	type vector struct {
		Action   Action `json:"action"`
		Delegate string `json:"delegate"`
		Counter  uint64 `json:"counter"`
		ChainID  int64  `json:"chainId"`
		Contract string `json:"contract"`
		Signal   string `json:"signal"`
	}
	var vs []vector
	for _, v := range []vector{
		{ActionOpen, d.Hex(), 0, 1337, c.Hex(), ""},
		{ActionRotate, d.Hex(), 1, 1337, c.Hex(), ""},
		{ActionRotate, c.Hex(), 1 << 40, 20261125, d.Hex(), ""},
	} {
		v.Signal = zkhash.Hex(OwnershipSignal(v.Action, common.HexToAddress(v.Delegate), v.Counter, big.NewInt(v.ChainID), common.HexToAddress(v.Contract)))
		vs = append(vs, v)
	}
	got, _ := json.MarshalIndent(vs, "", "  ")
	got = append(got, '\n')
	const path = "testdata/signals.json"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale or the signal encoding changed", path)
	}
}

func TestWitnessCheck(t *testing.T) {
	tree, secrets := testTree(t, 3)
	w := ownershipWitness(t, tree, secrets[1], 1)
	w.Secret = secrets[2]
	if err := w.Check(); err == nil {
		t.Fatal("Check accepted a secret that is not the path's leaf")
	}
}

func TestParsePublicInputs(t *testing.T) {
	r := zkhash.Modulus()
	rm1 := new(big.Int).Sub(r, big.NewInt(1))
	ok := []*big.Int{big.NewInt(0), big.NewInt(1), rm1, big.NewInt(5)}
	if _, err := ParseOwnershipPublic(ok); err != nil {
		t.Fatalf("canonical inputs refused: %v", err)
	}
	for i := range ok {
		bad := append([]*big.Int{}, ok...)
		bad[i] = new(big.Int).Set(r)
		if _, err := ParseOwnershipPublic(bad); !errors.Is(err, ErrPublicInputs) {
			t.Errorf("input %d = r accepted: %v", i, err)
		}
		bad[i] = big.NewInt(-1)
		if _, err := ParseOwnershipPublic(bad); !errors.Is(err, ErrPublicInputs) {
			t.Errorf("input %d = -1 accepted: %v", i, err)
		}
	}
	if _, err := ParseOwnershipPublic(ok[:3]); !errors.Is(err, ErrPublicInputs) {
		t.Errorf("three inputs accepted: %v", err)
	}
	if _, err := ParseEntitlementPublic(ok[:3]); err != nil {
		t.Errorf("entitlement inputs refused: %v", err)
	}
	if _, err := ParseEntitlementPublic([]*big.Int{big.NewInt(1), new(big.Int).Add(r, big.NewInt(7)), big.NewInt(2)}); !errors.Is(err, ErrPublicInputs) {
		t.Errorf("entitlement input r+7 accepted: %v", err)
	}
}
