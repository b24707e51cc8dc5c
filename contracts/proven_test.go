package contracts_test

import (
	"context"
	"errors"
	"math/big"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
	"github.com/medrec-zk/medrec/zkhash"
)

// provenChain is a simulated chain whose patient registry takes proven
// batches, with a prover holding the insertion keys its verifier was
// compiled from (gnark's single-party setup: a test's keys, never a
// network's), and the Go twin of the registry's leaves.
type provenChain struct {
	c      *simchain.Chain
	p      *prover.Prover
	leaves []fr.Element
}

func newProvenChain(t testing.TB) *provenChain {
	t.Helper()
	ks, v := provertest.Insertion(t)
	return &provenChain{c: simchain.NewWith(t, 2, nil, v), p: prover.New(ks)}
}

// batch is a proven batch as a gateway would send it.
type batch struct {
	leaves  []*big.Int
	newRoot *big.Int
	proof   []byte
}

// prove makes the proof of inserting leaves after old.
func (pc *provenChain) prove(t testing.TB, old, leaves []fr.Element) batch {
	t.Helper()
	a, pub, err := circuits.InsertionWitness(old, leaves)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := pc.p.ProveInsertion(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := pc.p.VerifyInsertion(proof, pub); err != nil {
		t.Fatalf("the prover's own check: %v", err)
	}
	b := batch{newRoot: zkhash.Big(pub.NewRoot), proof: proof[:]}
	for _, l := range leaves {
		b.leaves = append(b.leaves, zkhash.Big(l))
	}
	return b
}

func (pc *provenChain) send(t testing.TB, b batch) (*types.Receipt, error) {
	t.Helper()
	ctx := context.Background()
	tx, err := pc.c.Client.EnrolProven(ctx, pc.c.Auth(pc.c.Providers[0].Gateway), b.leaves, b.newRoot, b.proof)
	if err != nil {
		return nil, err
	}
	return pc.c.Client.Wait(ctx, tx)
}

// state is the registry's root and size.
func (pc *provenChain) state(t *testing.T) (*big.Int, uint32) {
	t.Helper()
	reg := bindings.NewPatientRegistry()
	inst := reg.Instance(pc.c.Backend, pc.c.D.PatientRegistry)
	root, err := bind.Call(inst, nil, reg.PackRoot(), reg.UnpackRoot)
	if err != nil {
		t.Fatal(err)
	}
	size, err := bind.Call(inst, nil, reg.PackSize(), reg.UnpackSize)
	if err != nil {
		t.Fatal(err)
	}
	return root, size
}

// wantState checks the registry against the Go twin's leaves.
func (pc *provenChain) wantState(t *testing.T) {
	t.Helper()
	tree, err := merkle.New(pc.leaves)
	if err != nil {
		t.Fatal(err)
	}
	root, size := pc.state(t)
	if int(size) != len(pc.leaves) || root.Cmp(zkhash.Big(tree.Root())) != 0 {
		t.Fatalf("registry at size %d root %x; want size %d root %x", size, root, len(pc.leaves), zkhash.Big(tree.Root()))
	}
}

func leafList(from, n int) []fr.Element {
	out := make([]fr.Element, n)
	for i := range out {
		out[i] = zkhash.FromUint64(uint64(1000 + from + i))
	}
	return out
}

func wantRevert(t *testing.T, err error, name string) {
	t.Helper()
	var re *contracts.RevertError
	if !errors.As(err, &re) || re.Name != name {
		t.Fatalf("got %v; want the registry to refuse with %s", err, name)
	}
}

// TestEnrolProven: a registry with an insertion verifier takes batches
// proven by circuits.Insertion — full and partial, aligned and across two
// subtrees — and its root after each is the Go tree's; enrolment by the
// frontier is refused there.
func TestEnrolProven(t *testing.T) {
	pc := newProvenChain(t)
	if _, err := pc.c.Client.Enrol(context.Background(), pc.c.Auth(pc.c.Providers[0].Gateway), big.NewInt(7)); err == nil {
		t.Fatal("a frontier batch was accepted by a registry that takes proven ones")
	} else {
		wantRevert(t, err, "ProofRequired")
	}
	for _, n := range []int{circuits.InsertionSize, 100, 40, 1} { // at 0, 128, 228 (across 256), 268
		leaves := leafList(len(pc.leaves), n)
		b := pc.prove(t, pc.leaves, leaves)
		r, err := pc.send(t, b)
		if err != nil {
			t.Fatalf("a true batch of %d at %d: %v", n, len(pc.leaves), err)
		}
		pc.leaves = append(pc.leaves, leaves...)
		pc.wantState(t)
		t.Logf("gas: enrolProven(%d) %d (%d an enrolment)", n, r.GasUsed, r.GasUsed/uint64(n))
		// The goal (issue 16): ≤ 5 k gas an enrolment in a full proven batch.
		if n == circuits.InsertionSize && r.GasUsed/uint64(n) > 5_000 {
			t.Errorf("a full proven batch costs %d gas an enrolment; the goal is ≤ 5,000", r.GasUsed/uint64(n))
		}
	}
}

// BenchmarkEnrolProven: full proven batches on the simulated chain, each
// proved (on this machine's cores, as a gateway would) and sent; gas an
// enrolment is the registry's cost, ms/batch the proof's and the chain's.
func BenchmarkEnrolProven(b *testing.B) {
	pc := newProvenChain(b)
	var gas uint64
	enrolled := 0
	for b.Loop() {
		leaves := leafList(len(pc.leaves), circuits.InsertionSize)
		r, err := pc.send(b, pc.prove(b, pc.leaves, leaves))
		if err != nil {
			b.Fatal(err)
		}
		pc.leaves = append(pc.leaves, leaves...)
		gas += r.GasUsed
		enrolled += len(leaves)
	}
	b.ReportMetric(float64(gas)/float64(enrolled), "gas/enrolment")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/batch")
}

// TestEnrolProvenRefuses: a proof is refused on chain for any list, order,
// position or tree but its own, and a refused batch changes nothing.
func TestEnrolProvenRefuses(t *testing.T) {
	pc := newProvenChain(t)
	first := leafList(0, 10)
	b0 := pc.prove(t, nil, first)
	if _, err := pc.send(t, b0); err != nil {
		t.Fatal(err)
	}
	pc.leaves = append(pc.leaves, first...)

	next := leafList(10, 8)
	good := pc.prove(t, pc.leaves, next)
	skipped := pc.prove(t, append(append([]fr.Element(nil), pc.leaves...), zkhash.FromUint64(1)), next) // as if the tree held 11
	with := func(f func(b *batch)) batch {
		b := good
		b.leaves = append([]*big.Int(nil), good.leaves...)
		b.proof = append([]byte(nil), good.proof...)
		f(&b)
		return b
	}
	cases := []struct {
		name string
		b    batch
		want string
	}{
		{"a wrong leaf", with(func(b *batch) { b.leaves[3] = big.NewInt(99) }), "ProofInvalid"},
		{"a reordered batch", with(func(b *batch) { b.leaves[0], b.leaves[1] = b.leaves[1], b.leaves[0] }), "ProofInvalid"},
		{"a missing leaf", with(func(b *batch) { b.leaves = b.leaves[:len(b.leaves)-1] }), "ProofInvalid"},
		{"an extra leaf", with(func(b *batch) { b.leaves = append(b.leaves, big.NewInt(99)) }), "ProofInvalid"},
		{"another new root", with(func(b *batch) { b.newRoot = new(big.Int).Add(b.newRoot, big.NewInt(1)) }), "ProofInvalid"},
		{"a skipped index", skipped, "ProofInvalid"},
		{"a stale old root (the first batch again)", b0, "ProofInvalid"},
		{"a changed proof", with(func(b *batch) { b.proof[len(b.proof)-1] ^= 1 }), ""},
		{"an empty batch", with(func(b *batch) { b.leaves = nil }), "BatchSize"},
		{"a batch over the proof's size", with(func(b *batch) {
			for len(b.leaves) <= circuits.InsertionSize {
				b.leaves = append(b.leaves, big.NewInt(int64(5000+len(b.leaves))))
			}
		}), "BatchSize"},
		{"a zero commitment", with(func(b *batch) { b.leaves[2] = big.NewInt(0) }), "InvalidCommitment"},
		{"a root outside the field", with(func(b *batch) { b.newRoot = fr.Modulus() }), "InvalidRoot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pc.send(t, tc.b)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != "" {
				wantRevert(t, err, tc.want)
			} else if !errors.Is(err, contracts.ErrReverted) {
				t.Fatalf("got %v; want a revert", err)
			}
			pc.wantState(t)
		})
	}
	// Not a gateway: the same true batch from another account.
	ctx := context.Background()
	if _, err := pc.c.Client.EnrolProven(ctx, pc.c.Auth(pc.c.Providers[0].Authority), good.leaves, good.newRoot, good.proof); err == nil {
		t.Fatal("an authority's key enrolled")
	} else {
		wantRevert(t, err, "NotActiveProvider")
	}
	// And the true batch, after all that, still goes in.
	if _, err := pc.send(t, good); err != nil {
		t.Fatalf("the true batch after the refusals: %v", err)
	}
	pc.leaves = append(pc.leaves, next...)
	pc.wantState(t)
}
