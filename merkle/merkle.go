// Package merkle owns the plain-Go twin of the patient registry's incremental
// Merkle tree: a binary tree of fixed depth whose leaves are identity
// commitments, nodes are zkhash.Node(left, right) and empty leaves are zero.
// The contract inserts leaves left to right; this package reproduces its roots
// and produces the membership paths the Ownership circuit consumes. Clients
// rebuild it from the registry's events, or compute their path from one
// bucket of leaves and every bucket's root (bucket.go) fetched from any
// server, which learns the bucket but not the leaf; never by asking for
// their path (which would reveal which commitment is theirs).
package merkle

import (
	"errors"
	"fmt"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/zkhash"
)

// Depth is the number of levels between a leaf and the root: 2^30, about
// 1.07 × 10^9 patients in one anonymity set — a nation's (ADR 0002). The
// Ownership proof costs ≈ 1.2× what it cost at depth 20 (same FFT domain).
const Depth = 30

// Capacity is the number of leaves the tree holds.
const Capacity = 1 << Depth

// Errors returned by the tree.
var (
	ErrFull         = errors.New("merkle: tree is full")
	ErrIndexOutside = errors.New("merkle: leaf index is not in the tree")
)

var zeros = func() [Depth + 1]fr.Element {
	var z [Depth + 1]fr.Element // z[0] is the empty leaf, 0
	for i := 1; i <= Depth; i++ {
		z[i] = zkhash.Node(z[i-1], z[i-1])
	}
	return z
}()

// Zero returns the root of an empty subtree of the given height (0 is an empty
// leaf).
func Zero(height int) fr.Element { return zeros[height] }

// Tree is an append-only Merkle tree of depth Depth. The zero value is an
// empty tree. It keeps every filled node, so paths can be produced for any leaf.
type Tree struct {
	levels [Depth + 1][]fr.Element // levels[0] are the leaves; levels[Depth] holds the root once non-empty
}

// New returns a tree holding leaves, inserted in order. It hashes each level
// once, so it is much faster than inserting the leaves one by one.
func New(leaves []fr.Element) (*Tree, error) {
	if err := fits(len(leaves)); err != nil {
		return nil, err
	}
	t := &Tree{}
	t.levels[0] = append([]fr.Element(nil), leaves...)
	for h := 0; h < Depth; h++ {
		below := t.levels[h]
		above := make([]fr.Element, (len(below)+1)/2)
		for i := range above {
			right := zeros[h]
			if 2*i+1 < len(below) {
				right = below[2*i+1]
			}
			above[i] = zkhash.Node(below[2*i], right)
		}
		t.levels[h+1] = above
	}
	return t, nil
}

// fits refuses a tree of n leaves beyond Capacity.
func fits(n int) error {
	if n > Capacity {
		return fmt.Errorf("%d leaves: %w", n, ErrFull)
	}
	return nil
}

// Len returns the number of leaves inserted.
func (t *Tree) Len() int { return len(t.levels[0]) }

// Leaf returns the leaf at index i.
func (t *Tree) Leaf(i int) (fr.Element, error) {
	if i < 0 || i >= t.Len() {
		return fr.Element{}, fmt.Errorf("leaf %d of %d: %w", i, t.Len(), ErrIndexOutside)
	}
	return t.levels[0][i], nil
}

// IndexOf returns the index of the first leaf equal to leaf, or -1.
func (t *Tree) IndexOf(leaf fr.Element) int {
	for i, l := range t.levels[0] {
		if l == leaf {
			return i
		}
	}
	return -1
}

// Insert appends leaf and returns its index.
func (t *Tree) Insert(leaf fr.Element) (int, error) {
	index := t.Len()
	if err := fits(index + 1); err != nil {
		return 0, err
	}
	t.levels[0] = append(t.levels[0], leaf)
	node, i := leaf, index
	for h := 0; h < Depth; h++ {
		var left, right fr.Element
		if i%2 == 0 {
			left, right = node, zeros[h]
		} else {
			left, right = t.levels[h][i-1], node
		}
		node, i = zkhash.Node(left, right), i/2
		if i < len(t.levels[h+1]) {
			t.levels[h+1][i] = node
		} else {
			t.levels[h+1] = append(t.levels[h+1], node)
		}
	}
	return index, nil
}

// Root returns the tree's root.
func (t *Tree) Root() fr.Element {
	if t.Len() == 0 {
		return zeros[Depth]
	}
	return t.levels[Depth][0]
}

// Proof is a membership path: the siblings from the leaf up to the root. Bit h
// of Index tells whether the path's node at height h is a right child.
type Proof struct {
	Leaf     fr.Element
	Index    uint64
	Siblings [Depth]fr.Element
}

// Proof returns the membership path of leaf i.
func (t *Tree) Proof(i int) (Proof, error) {
	leaf, err := t.Leaf(i)
	if err != nil {
		return Proof{}, err
	}
	p := Proof{Leaf: leaf, Index: uint64(i)}
	for h := 0; h < Depth; h++ {
		sibling := i ^ 1
		if sibling < len(t.levels[h]) {
			p.Siblings[h] = t.levels[h][sibling]
		} else {
			p.Siblings[h] = zeros[h]
		}
		i /= 2
	}
	return p, nil
}

// Root recomputes the root the path leads to.
func (p Proof) Root() fr.Element {
	node := p.Leaf
	for h := 0; h < Depth; h++ {
		if (p.Index>>h)&1 == 1 {
			node = zkhash.Node(p.Siblings[h], node)
		} else {
			node = zkhash.Node(node, p.Siblings[h])
		}
	}
	return node
}
