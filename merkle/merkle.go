// Package merkle owns the plain-Go twin of the patient registry's incremental
// Merkle tree: a binary tree of fixed depth whose leaves are identity
// commitments, nodes are zkhash.Node(left, right) and empty leaves are zero.
// The contract inserts leaves left to right; this package reproduces its roots
// and produces the membership paths the Ownership circuit consumes, over a
// store of the filled nodes (nodes.go: in memory, or a gateway's database).
// Gateways and the audit rebuild it from the registry's events; clients
// compute their path from one
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

// Tree is an append-only Merkle tree of depth Depth over a store of its
// filled nodes (Nodes): in memory for the zero value and New, or a database
// (Open) — a gateway's records database keeps a nation's tree on disk with
// memory bounded. The zero value is an empty tree in memory. Only the leaf
// count and the root are held; every other node is read from the store when
// needed. A Tree is not safe for concurrent writes.
type Tree struct {
	nodes Nodes
	n     int        // leaves
	root  fr.Element // valid when n > 0
}

// New returns a tree in memory holding leaves, inserted in order. It hashes
// each level once, so it is much faster than inserting the leaves one by one.
func New(leaves []fr.Element) (*Tree, error) {
	if err := fits(len(leaves)); err != nil {
		return nil, err
	}
	m := &memNodes{}
	m.levels[0] = append([]fr.Element(nil), leaves...)
	for h := 0; h < Depth; h++ {
		m.levels[h+1] = parents(m.levels[h], h)
	}
	t := &Tree{nodes: m, n: len(leaves)}
	if t.n > 0 {
		t.root = m.levels[Depth][0]
	}
	return t, nil
}

// Open returns the tree stored in nodes (empty if nothing was stored).
func Open(nodes Nodes) (*Tree, error) {
	n, err := nodes.Count()
	if err != nil {
		return nil, fmt.Errorf("merkle: the stored tree's size: %w", err)
	}
	if err := fits(n); err != nil {
		return nil, err
	}
	t := &Tree{nodes: nodes, n: n}
	if n > 0 {
		r, err := nodes.Get([]Place{{Height: Depth}})
		if err != nil {
			return nil, fmt.Errorf("merkle: the stored tree's root: %w", err)
		}
		t.root = r[0]
	}
	return t, nil
}

// store returns the tree's nodes, in memory for the zero value.
func (t *Tree) store() Nodes {
	if t.nodes == nil {
		t.nodes = &memNodes{}
	}
	return t.nodes
}

// parents hashes nodes of height h, the first a left child, pair by pair
// into the nodes above them (an odd last one with an empty subtree).
func parents(nodes []fr.Element, h int) []fr.Element {
	up := make([]fr.Element, (len(nodes)+1)/2)
	for i := range up {
		right := zeros[h]
		if 2*i+1 < len(nodes) {
			right = nodes[2*i+1]
		}
		up[i] = zkhash.Node(nodes[2*i], right)
	}
	return up
}

// fits refuses a tree of n leaves beyond Capacity.
func fits(n int) error {
	if n > Capacity {
		return fmt.Errorf("%d leaves: %w", n, ErrFull)
	}
	return nil
}

// width returns how many nodes of height h a tree of n leaves has filled.
func width(n, h int) int { return (n + 1<<h - 1) >> h }

// Len returns the number of leaves inserted.
func (t *Tree) Len() int { return t.n }

// Leaf returns the leaf at index i.
func (t *Tree) Leaf(i int) (fr.Element, error) {
	if i < 0 || i >= t.n {
		return fr.Element{}, fmt.Errorf("leaf %d of %d: %w", i, t.n, ErrIndexOutside)
	}
	v, err := t.store().Get([]Place{{Index: i}})
	if err != nil {
		return fr.Element{}, fmt.Errorf("merkle: leaf %d: %w", i, err)
	}
	return v[0], nil
}

// IndexOf returns the index of the first leaf equal to leaf, or -1.
func (t *Tree) IndexOf(leaf fr.Element) (int, error) {
	i, err := t.store().Find(leaf)
	if err != nil {
		return -1, fmt.Errorf("merkle: look up a leaf: %w", err)
	}
	if i >= t.n {
		return -1, nil
	}
	return i, nil
}

// Insert appends leaf and returns its index.
func (t *Tree) Insert(leaf fr.Element) (int, error) {
	return t.Append([]fr.Element{leaf})
}

// Append appends leaves in order and returns the first one's index. It
// writes the new nodes (about two a leaf, and one a level) to the store at
// once; if the store fails, the tree is as it was.
func (t *Tree) Append(leaves []fr.Element) (int, error) {
	start, end := t.n, t.n+len(leaves)
	if len(leaves) == 0 {
		return start, nil
	}
	if err := fits(end); err != nil {
		return 0, err
	}
	// The left neighbours of the new nodes, one a level at most, are all
	// the stored nodes the new ones need.
	var need []Place
	for h := 0; h < Depth; h++ {
		if lo := start >> h; lo%2 == 1 {
			need = append(need, Place{Height: h, Index: lo - 1})
		}
	}
	left, err := t.store().Get(need)
	if err != nil {
		return 0, fmt.Errorf("merkle: the nodes left of leaf %d: %w", start, err)
	}
	out := make([]Node, 0, 2*len(leaves)+Depth)
	level, lo := append([]fr.Element(nil), leaves...), start
	for h := 0; ; h++ {
		for j, v := range level {
			out = append(out, Node{Place{Height: h, Index: lo + j}, v})
		}
		if h == Depth {
			break
		}
		if lo%2 == 1 {
			level, lo = append([]fr.Element{left[0]}, level...), lo-1
			left = left[1:]
		}
		level, lo = parents(level, h), lo/2
	}
	if err := t.store().Set(end, out); err != nil {
		return 0, fmt.Errorf("merkle: store leaves %d–%d: %w", start, end-1, err)
	}
	t.n, t.root = end, level[0]
	return start, nil
}

// Truncate drops the leaves from index n on (a reorg took their enrolment
// out), restoring the tree's earlier root.
func (t *Tree) Truncate(n int) error {
	switch {
	case n == t.n:
		return nil
	case n < 0 || n > t.n:
		return fmt.Errorf("truncate %d leaves to %d: %w", t.n, n, ErrIndexOutside)
	case n == 0:
		if err := t.store().Set(0, nil); err != nil {
			return fmt.Errorf("merkle: empty the tree: %w", err)
		}
		t.n, t.root = 0, fr.Element{}
		return nil
	}
	// The path of the last leaf kept is the right edge: recompute it, its
	// right siblings now empty.
	last := n - 1
	need := []Place{{Index: last}}
	for h := 0; h < Depth; h++ {
		if i := last >> h; i%2 == 1 {
			need = append(need, Place{Height: h, Index: i - 1})
		}
	}
	got, err := t.store().Get(need)
	if err != nil {
		return fmt.Errorf("merkle: the path of leaf %d: %w", last, err)
	}
	node, left := got[0], got[1:]
	edge := make([]Node, 0, Depth)
	for h := 0; h < Depth; h++ {
		if i := last >> h; i%2 == 1 {
			node, left = zkhash.Node(left[0], node), left[1:]
		} else {
			node = zkhash.Node(node, zeros[h])
		}
		edge = append(edge, Node{Place{Height: h + 1, Index: last >> (h + 1)}, node})
	}
	if err := t.store().Set(n, edge); err != nil {
		return fmt.Errorf("merkle: truncate to %d leaves: %w", n, err)
	}
	t.n, t.root = n, node
	return nil
}

// Root returns the tree's root.
func (t *Tree) Root() fr.Element {
	if t.n == 0 {
		return zeros[Depth]
	}
	return t.root
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
	if i < 0 || i >= t.n {
		return Proof{}, fmt.Errorf("leaf %d of %d: %w", i, t.n, ErrIndexOutside)
	}
	need := []Place{{Index: i}}
	for h := 0; h < Depth; h++ {
		if s := (i >> h) ^ 1; s < width(t.n, h) {
			need = append(need, Place{Height: h, Index: s})
		}
	}
	got, err := t.store().Get(need)
	if err != nil {
		return Proof{}, fmt.Errorf("merkle: the path of leaf %d: %w", i, err)
	}
	p := Proof{Leaf: got[0], Index: uint64(i)}
	got = got[1:]
	for h := 0; h < Depth; h++ {
		if s := (i >> h) ^ 1; s < width(t.n, h) {
			p.Siblings[h], got = got[0], got[1:]
		} else {
			p.Siblings[h] = zeros[h]
		}
	}
	return p, nil
}

// Siblings returns the siblings of the node at height h and index i (h
// and up, Depth - h of them): a path from that node to the root. Nodes
// past the filled ones are the empty subtrees' roots, so the node itself
// need not be filled (an insertion proves where leaves will go).
func (t *Tree) Siblings(h, i int) ([]fr.Element, error) {
	if h < 0 || h >= Depth || i < 0 || i >= 1<<(Depth-h) {
		return nil, fmt.Errorf("merkle: node %d at height %d: %w", i, h, ErrIndexOutside)
	}
	var need []Place
	for j := h; j < Depth; j++ {
		if s := (i >> (j - h)) ^ 1; s < width(t.n, j) {
			need = append(need, Place{Height: j, Index: s})
		}
	}
	got, err := t.store().Get(need)
	if err != nil {
		return nil, fmt.Errorf("merkle: the siblings of node %d at height %d: %w", i, h, err)
	}
	out := make([]fr.Element, Depth-h)
	for j := h; j < Depth; j++ {
		if s := (i >> (j - h)) ^ 1; s < width(t.n, j) {
			out[j-h], got = got[0], got[1:]
		} else {
			out[j-h] = zeros[j]
		}
	}
	return out, nil
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
