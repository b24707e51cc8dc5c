// Package merkletest checks a merkle.Nodes implementation: a tree kept in
// it must give the roots, paths, buckets and lookups of the same tree built
// in memory, through appends in batches, truncations (reorgs) and reopening.
package merkletest

import (
	"errors"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// Leaves returns n distinct commitments, the same for every caller.
func Leaves(n int) []fr.Element {
	out := make([]fr.Element, n)
	for i := range out {
		out[i] = zkhash.Commitment(zkhash.FromUint64(uint64(7000 + i)))
	}
	return out
}

// Run checks the store that open returns: a fresh, empty one the first
// time; the same store again (as after a restart) on later calls.
func Run(t *testing.T, open func(t *testing.T) merkle.Nodes) {
	t.Helper()
	nodes := open(t)
	tree, err := merkle.Open(nodes)
	if err != nil {
		t.Fatal(err)
	}
	if tree.Len() != 0 || tree.Root() != merkle.Zero(merkle.Depth) {
		t.Fatalf("a fresh store holds %d leaves", tree.Len())
	}
	all := Leaves(merkle.BucketSize + 300)
	// Batches of every shape: one, odd sizes, across a bucket's end.
	steps := []struct {
		name   string
		append int // leaves to append
		keep   int // or, when append is 0, leaves to truncate to
	}{
		{"one", 1, 0},
		{"odd batch", 6, 0},
		{"truncate inside the last batch", 0, 4},
		{"batch of 64", 64, 0},
		{"truncate to one", 0, 1},
		{"up to a bucket's end", merkle.BucketSize - 1, 0},
		{"across it", 250, 0},
		{"truncate to the bucket's end", 0, merkle.BucketSize},
		{"again", 299, 0},
	}
	for _, s := range steps {
		if s.append > 0 {
			start := tree.Len()
			first, err := tree.Append(all[start : start+s.append])
			if err != nil || first != start {
				t.Fatalf("%s: Append = %d, %v", s.name, first, err)
			}
		} else if err := tree.Truncate(s.keep); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		same(t, s.name, tree, all[:tree.Len()])
	}
	// Reopened, it is the same tree.
	n := tree.Len()
	again, err := merkle.Open(open(t))
	if err != nil {
		t.Fatal(err)
	}
	if again.Len() != n {
		t.Fatalf("reopened: %d leaves, want %d", again.Len(), n)
	}
	same(t, "reopened", again, all[:n])
	// A write outside the tree is refused and changes nothing.
	if err := nodes.Set(n, []merkle.Node{{Place: merkle.Place{Height: 0, Index: n + 5}}}); err == nil {
		t.Fatal("a node beyond the leaves was stored")
	}
	same(t, "after a refused write", again, all[:n])
	if err := again.Truncate(n + 1); !errors.Is(err, merkle.ErrIndexOutside) {
		t.Fatalf("truncating to more leaves: %v", err)
	}
	if err := again.Truncate(0); err != nil {
		t.Fatal(err)
	}
	same(t, "emptied", again, nil)
	if c, err := open(t).Count(); err != nil || c != 0 {
		t.Fatalf("emptied, the store counts %d leaves (%v)", c, err)
	}
}

// same checks tree against the tree of leaves built in memory.
func same(t *testing.T, step string, tree *merkle.Tree, leaves []fr.Element) {
	t.Helper()
	want, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	if tree.Len() != len(leaves) || tree.Root() != want.Root() {
		t.Fatalf("%s: %d leaves and root %s, want %d and %s", step, tree.Len(), zkhash.Hex(tree.Root()), len(leaves), zkhash.Hex(want.Root()))
	}
	tops, err := tree.Tops()
	if err != nil {
		t.Fatal(err)
	}
	wantTops, _ := want.Tops()
	if len(tops) != len(wantTops) {
		t.Fatalf("%s: %d tops, want %d", step, len(tops), len(wantTops))
	}
	for i := range tops {
		if tops[i] != wantTops[i] {
			t.Fatalf("%s: top %d differs", step, i)
		}
	}
	for _, i := range []int{0, 1, len(leaves) / 2, len(leaves) - 2, len(leaves) - 1} {
		if i < 0 || i >= len(leaves) {
			continue
		}
		p, err := tree.Proof(i)
		if err != nil {
			t.Fatalf("%s: path of %d: %v", step, i, err)
		}
		if p.Leaf != leaves[i] || p.Root() != want.Root() {
			t.Fatalf("%s: the path of leaf %d does not lead to the root", step, i)
		}
		if got, err := tree.IndexOf(leaves[i]); err != nil || got != i {
			t.Fatalf("%s: IndexOf(leaf %d) = %d, %v", step, i, got, err)
		}
		b := i / merkle.BucketSize
		bucket, err := tree.Bucket(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, root, err := merkle.BucketProof(i, bucket, tops); err != nil || root != want.Root() {
			t.Fatalf("%s: the path of leaf %d by bucket: %v", step, i, err)
		}
	}
	if len(leaves) > 0 {
		if got, err := tree.IndexOf(zkhash.FromUint64(3)); err != nil || got != -1 {
			t.Fatalf("%s: IndexOf(absent) = %d, %v", step, got, err)
		}
	}
	// The next leaf (perhaps inserted once, then truncated away) is not found.
	next := Leaves(len(leaves) + 1)[len(leaves)]
	if got, err := tree.IndexOf(next); err != nil || got != -1 {
		t.Fatalf("%s: IndexOf(the next leaf, not inserted) = %d, %v", step, got, err)
	}
}
