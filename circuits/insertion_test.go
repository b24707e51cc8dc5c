package circuits

import (
	"fmt"
	"slices"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"
	"github.com/consensys/gnark/test"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// insertionLeaves returns n distinct commitments from seed on.
func insertionLeaves(seed, n int) []fr.Element {
	out := make([]fr.Element, n)
	for i := range out {
		out[i] = zkhash.Commitment(zkhash.FromUint64(uint64(seed + i)))
	}
	return out
}

// TestInsertion: a batch inserted at any start — inside one aligned
// subtree, across two, aligned, a single leaf, a full batch — proves; the
// new root is the Go tree's.
func TestInsertion(t *testing.T) {
	for _, tc := range []struct{ start, count int }{
		{0, 1}, {5, 10}, {120, 10}, {InsertionSize, InsertionSize}, {200, InsertionSize}, {2*InsertionSize - 1, 1}, {1, InsertionSize}, {300, 33},
	} {
		t.Run(fmt.Sprintf("start=%d,count=%d", tc.start, tc.count), func(t *testing.T) {
			old, batch := insertionLeaves(1, tc.start), insertionLeaves(10_000, tc.count)
			a, pub, err := InsertionWitness(old, batch)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := merkle.New(append(slices.Clone(old), batch...))
			if pub.NewRoot != want.Root() {
				t.Fatal("the witness's new root is not the tree's")
			}
			if err := test.IsSolved(&Insertion{}, a, field); err != nil {
				t.Fatalf("a true insertion does not prove: %v", err)
			}
		})
	}
}

// TestInsertionRefuses: what the contract would compute from a list other
// than the one in the tree, a skipped index, a stale old root or a wrong
// new root cannot be proved.
func TestInsertionRefuses(t *testing.T) {
	const start, count = InsertionSize - 4, 10 // across two subtrees
	old, batch := insertionLeaves(1, start), insertionLeaves(10_000, count)
	a, pub, err := InsertionWitness(old, batch)
	if err != nil {
		t.Fatal(err)
	}
	// sent is what the contract computes (X, E) from a list it was sent.
	sent := func(list []fr.Element) func(*Insertion) {
		return func(b *Insertion) {
			x := InsertionChallenge(start, pub.OldRoot, pub.NewRoot, list)
			b.X, b.E = x, InsertionEvaluation(list, x)
		}
	}
	wrong := slices.Clone(batch)
	wrong[3] = zkhash.Commitment(zkhash.FromUint64(424242))
	reordered := slices.Clone(batch)
	reordered[2], reordered[7] = reordered[7], reordered[2]
	stale, _ := merkle.New(old[:start-1])
	fewer := batch[:count-1]
	for name, change := range map[string]func(*Insertion){
		"a wrong leaf":       sent(wrong),
		"a reordered batch":  sent(reordered),
		"one leaf fewer":     sent(fewer),
		"one leaf more":      sent(append(slices.Clone(batch), zkhash.FromUint64(5))),
		"a skipped index":    func(b *Insertion) { b.Start = zkhash.FromUint64(start + 1) },
		"an earlier index":   func(b *Insertion) { b.Start = zkhash.FromUint64(start - 1) },
		"a stale old root":   func(b *Insertion) { b.OldRoot = stale.Root() },
		"another new root":   func(b *Insertion) { b.NewRoot = stale.Root() },
		"a count too large":  func(b *Insertion) { b.Count = zkhash.FromUint64(InsertionSize + 1) },
		"a count of zero":    func(b *Insertion) { b.Count = zkhash.FromUint64(0) },
		"a zero challenge":   func(b *Insertion) { b.X, b.E = fr.Element{}, fr.Element{} },
		"a leaf of the tree": func(b *Insertion) { b.Sub[0][0] = zkhash.FromUint64(7) },
	} {
		t.Run(name, func(t *testing.T) {
			b := *a
			change(&b)
			if err := test.IsSolved(&Insertion{}, &b, field); err == nil {
				t.Fatal("proved")
			}
		})
	}
}

// BenchmarkProveInsertion proves a full batch (InsertionSize leaves,
// across two subtrees) with keys from groth16.Setup (random, as a
// ceremony's are; never DummySetup, whose proving is cheaper) and checks
// the proof. It reports the constraints and, per enrolment, the proving
// time a gateway spends.
func BenchmarkProveInsertion(b *testing.B) {
	ccs, err := frontend.Compile(field, r1cs.NewBuilder, &Insertion{})
	if err != nil {
		b.Fatal(err)
	}
	pk, vk, err := groth16.Setup(ccs)
	if err != nil {
		b.Fatal(err)
	}
	a, _, err := InsertionWitness(insertionLeaves(1, 100), insertionLeaves(10_000, InsertionSize))
	if err != nil {
		b.Fatal(err)
	}
	full, err := frontend.NewWitness(a, field)
	if err != nil {
		b.Fatal(err)
	}
	public, err := full.Public()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		proof, err := groth16.Prove(ccs, pk, full)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := groth16.Verify(proof, vk, public); err != nil {
			b.Fatalf("the proof does not verify: %v", err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(ccs.GetNbConstraints()), "constraints")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N)/InsertionSize, "ms/enrolment")
}
