package merkle

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"slices"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/zkhash"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func leaves(n int) []fr.Element {
	out := make([]fr.Element, n)
	for i := range out {
		out[i] = zkhash.Commitment(zkhash.FromUint64(uint64(1000 + i)))
	}
	return out
}

// Vectors is the shape of testdata/vectors.json, shared with the Solidity tests.
type Vectors struct {
	Depth int          `json:"depth"`
	Zeros []string     `json:"zeros"`
	Trees []TreeVector `json:"trees"`
}

// TreeVector gives the root after inserting Leaves in order.
type TreeVector struct {
	Leaves []string `json:"leaves"`
	Root   string   `json:"root"`
}

func TestVectors(t *testing.T) {
	v := Vectors{Depth: Depth}
	for h := 0; h <= Depth; h++ {
		v.Zeros = append(v.Zeros, zkhash.Hex(Zero(h)))
	}
	for _, n := range []int{0, 1, 2, 3, 4, 5, 8, 13} {
		tree, err := New(leaves(n))
		if err != nil {
			t.Fatal(err)
		}
		tv := TreeVector{Leaves: []string{}, Root: zkhash.Hex(tree.Root())}
		for _, l := range leaves(n) {
			tv.Leaves = append(tv.Leaves, zkhash.Hex(l))
		}
		v.Trees = append(v.Trees, tv)
	}
	got, _ := json.MarshalIndent(v, "", "  ")
	got = append(got, '\n')
	const path = "testdata/vectors.json"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./merkle -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale or the tree changed", path)
	}
}

func TestInsertMatchesBulkBuild(t *testing.T) {
	var inc Tree
	if inc.Root() != Zero(Depth) {
		t.Fatal("empty tree root is not the zero root")
	}
	all := leaves(37)
	for n, l := range all {
		idx, err := inc.Insert(l)
		if err != nil || idx != n {
			t.Fatalf("Insert #%d = (%d, %v)", n, idx, err)
		}
		bulk, err := New(all[:n+1])
		if err != nil {
			t.Fatal(err)
		}
		if inc.Root() != bulk.Root() {
			t.Fatalf("after %d leaves: incremental root %s, bulk root %s", n+1, zkhash.Hex(inc.Root()), zkhash.Hex(bulk.Root()))
		}
	}
}

func TestProofs(t *testing.T) {
	tree, err := New(leaves(11))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < tree.Len(); i++ {
		p, err := tree.Proof(i)
		if err != nil {
			t.Fatal(err)
		}
		if p.Root() != tree.Root() {
			t.Fatalf("proof of leaf %d does not lead to the root", i)
		}
		// Flipping a path bit, changing a sibling or the leaf must each break it.
		flipped := p
		flipped.Index ^= 1 << (i % Depth)
		if flipped.Root() == tree.Root() {
			t.Fatalf("leaf %d: proof with a flipped path bit still verifies", i)
		}
		bad := p
		bad.Siblings[3] = zkhash.FromUint64(5)
		if bad.Root() == tree.Root() {
			t.Fatalf("leaf %d: proof with a wrong sibling still verifies", i)
		}
		bad = p
		bad.Leaf = zkhash.FromUint64(5)
		if bad.Root() == tree.Root() {
			t.Fatalf("leaf %d: proof of another leaf still verifies", i)
		}
	}
	if _, err := tree.Proof(11); !errors.Is(err, ErrIndexOutside) {
		t.Fatalf("Proof(11) error = %v, want ErrIndexOutside", err)
	}
	if _, err := tree.Proof(-1); !errors.Is(err, ErrIndexOutside) {
		t.Fatalf("Proof(-1) error = %v, want ErrIndexOutside", err)
	}
	if got, _ := tree.IndexOf(leaves(11)[7]); got != 7 {
		t.Fatalf("IndexOf = %d, want 7", got)
	}
	if got, _ := tree.IndexOf(zkhash.FromUint64(5)); got != -1 {
		t.Fatalf("IndexOf(absent) = %d, want -1", got)
	}
}

// TestCapacity: New and Insert refuse a tree beyond Capacity (2^30 leaves
// cannot be allocated in a test: the check they share is tested).
func TestCapacity(t *testing.T) {
	if err := fits(Capacity); err != nil {
		t.Fatalf("a full tree: %v", err)
	}
	if err := fits(Capacity + 1); !errors.Is(err, ErrFull) {
		t.Fatalf("Capacity+1 leaves: error = %v, want ErrFull", err)
	}
}

func BenchmarkNew1000(b *testing.B) {
	l := leaves(1000)
	for b.Loop() {
		if _, err := New(l); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSiblings: a node's siblings are the tail of the path of any leaf
// under it; for a node not yet filled, the path in the tree padded with
// empty leaves (0) up to a leaf under it; outside the tree they are refused.
func TestSiblings(t *testing.T) {
	var leaves []fr.Element
	for i := range 250 {
		leaves = append(leaves, zkhash.FromUint64(uint64(i+1)))
	}
	tree, err := New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ h, i int }{{0, 0}, {0, 249}, {3, 31}, {7, 1}, {7, 0}, {5, 7}, {29, 0}, {0, 250}, {0, 251}, {7, 2}, {8, 1}, {2, 70}} {
		got, err := tree.Siblings(tc.h, tc.i)
		if err != nil {
			t.Fatal(err)
		}
		leaf := tc.i << tc.h
		padded := tree
		if leaf >= tree.Len() {
			ls := append(append([]fr.Element(nil), leaves...), make([]fr.Element, leaf-len(leaves))...)
			if padded, err = New(append(ls, zkhash.FromUint64(7))); err != nil {
				t.Fatal(err)
			}
		}
		p, err := padded.Proof(leaf)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, p.Siblings[tc.h:]) {
			t.Errorf("siblings of node %d at height %d differ from the path's", tc.i, tc.h)
		}
	}
	for _, tc := range []struct{ h, i int }{{-1, 0}, {Depth, 0}, {0, Capacity}, {29, 2}, {3, -1}} {
		if _, err := tree.Siblings(tc.h, tc.i); !errors.Is(err, ErrIndexOutside) {
			t.Errorf("node %d at height %d: %v", tc.i, tc.h, err)
		}
	}
}
