package merkle

import (
	"fmt"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// Place is a node's place in the tree: its height (0 for a leaf, Depth for
// the root) and its index among the nodes of that height, left to right.
type Place struct {
	Height, Index int
}

// Node is a node's value at its place.
type Node struct {
	Place
	Value fr.Element
}

// Nodes stores the filled nodes of a Tree of some number of leaves n: at
// height h, the nodes 0 to ⌈n/2^h⌉−1. A Tree asks only for filled nodes
// and writes each change at once, so an implementation on a database keeps
// the tree consistent across crashes. The Tree is its only writer.
type Nodes interface {
	// Count returns n, the number of leaves stored.
	Count() (int, error)
	// Get returns the nodes at places, in order; each must be filled.
	Get(places []Place) ([]fr.Element, error)
	// Range returns up to count nodes of height h from index from on,
	// fewer where the filled ones end.
	Range(h, from, count int) ([]fr.Element, error)
	// Find returns the index of the first leaf equal to leaf, or -1.
	Find(leaf fr.Element) (int, error)
	// Set makes the stored tree one of n leaves, all or nothing: it drops
	// the nodes beyond (at height h, index ⌈n/2^h⌉ and up) and stores
	// nodes, replacing those already at their places.
	Set(n int, nodes []Node) error
}

// MemNodes returns an empty store in memory: what the zero Tree and New use.
func MemNodes() Nodes { return &memNodes{} }

// memNodes keeps every filled node in memory, 64 bytes a leaf.
type memNodes struct {
	levels [Depth + 1][]fr.Element // levels[0] are the leaves
}

func (m *memNodes) Count() (int, error) { return len(m.levels[0]), nil }

func (m *memNodes) Get(places []Place) ([]fr.Element, error) {
	out := make([]fr.Element, len(places))
	for k, p := range places {
		if p.Height < 0 || p.Height > Depth || p.Index < 0 || p.Index >= len(m.levels[p.Height]) {
			return nil, fmt.Errorf("node %d at height %d: %w", p.Index, p.Height, ErrIndexOutside)
		}
		out[k] = m.levels[p.Height][p.Index]
	}
	return out, nil
}

func (m *memNodes) Range(h, from, count int) ([]fr.Element, error) {
	if h < 0 || h > Depth || from < 0 || count < 0 {
		return nil, fmt.Errorf("nodes %d+%d at height %d: %w", from, count, h, ErrIndexOutside)
	}
	level := m.levels[h]
	if from >= len(level) {
		return nil, nil
	}
	return append([]fr.Element(nil), level[from:min(from+count, len(level))]...), nil
}

func (m *memNodes) Find(leaf fr.Element) (int, error) {
	for i, l := range m.levels[0] {
		if l == leaf {
			return i, nil
		}
	}
	return -1, nil
}

func (m *memNodes) Set(n int, nodes []Node) error {
	if err := CheckSet(len(m.levels[0]), n, nodes); err != nil {
		return err
	}
	for h := range m.levels {
		m.levels[h] = m.levels[h][:min(len(m.levels[h]), width(n, h))]
	}
	for _, nd := range nodes {
		level := &m.levels[nd.Height]
		if nd.Index == len(*level) {
			*level = append(*level, nd.Value)
		} else {
			(*level)[nd.Index] = nd.Value
		}
	}
	return nil
}

// CheckSet checks, for a store holding a tree of have leaves, that
// Set(n, nodes) leaves a whole tree of n leaves: each node inside it, given
// in order of index within its height, and no node missing. A Nodes
// implementation calls it before it writes.
func CheckSet(have, n int, nodes []Node) error {
	if n < 0 || n > Capacity {
		return fmt.Errorf("a tree of %d leaves: %w", n, ErrIndexOutside)
	}
	var lens [Depth + 1]int // filled nodes a height, after the write
	for h := range lens {
		lens[h] = min(width(have, h), width(n, h))
	}
	for _, nd := range nodes {
		h, i := nd.Height, nd.Index
		if h < 0 || h > Depth || i < 0 || i >= width(n, h) || i > lens[h] {
			return fmt.Errorf("node %d at height %d in a tree of %d leaves: %w", i, h, n, ErrIndexOutside)
		}
		if i == lens[h] {
			lens[h]++
		}
	}
	for h, l := range lens {
		if l != width(n, h) {
			return fmt.Errorf("a tree of %d leaves would hold %d nodes at height %d, not %d: %w", n, l, h, width(n, h), ErrIndexOutside)
		}
	}
	return nil
}
