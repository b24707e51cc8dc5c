package anchor

import (
	"fmt"
	"math/bits"

	"github.com/ethereum/go-ethereum/common"
)

// Consistency proofs show that a tree of m leaves is a prefix of a tree of
// n leaves — that a history only grew between two anchors — with about
// log2(n) hashes (RFC 9162 §2.1.4; the proof is RFC 6962's PROOF(m, D[n])).

// ConsistencyProof returns the proof that the first m of leaves form a
// prefix of the tree over all of leaves. m = 0 and m = len(leaves) give an
// empty proof.
func ConsistencyProof(leaves []common.Hash, m int) ([]common.Hash, error) {
	if m < 0 || m > len(leaves) {
		return nil, fmt.Errorf("anchor: consistency from %d leaves of %d", m, len(leaves))
	}
	if m == 0 {
		return nil, nil
	}
	return subproof(m, leaves, true), nil
}

// subproof is RFC 6962's SUBPROOF(m, D[n], b): b says whether the old tree
// is a subtree of the new one seen so far (its root is then known to the
// verifier and left out).
func subproof(m int, d []common.Hash, b bool) []common.Hash {
	if m == len(d) {
		if b {
			return nil
		}
		return []common.Hash{root(d)}
	}
	k := split(len(d))
	if m <= k {
		return append(subproof(m, d[:k], b), root(d[k:]))
	}
	return append(subproof(m-k, d[k:], false), root(d[:k]))
}

// VerifyConsistency checks that the tree of m leaves with root oldRoot is a
// prefix of the tree of n leaves with root newRoot (RFC 9162 §2.1.4.2). The
// empty tree (m = 0) is a prefix of every tree; a tree is a prefix of
// itself when the roots are equal (then the proof is empty).
func VerifyConsistency(m, n int, oldRoot, newRoot common.Hash, proof []common.Hash) error {
	switch {
	case m < 0 || n < 0 || m > n:
		return fmt.Errorf("%w: consistency from %d leaves to %d", ErrProof, m, n)
	case m == 0:
		if len(proof) != 0 {
			return fmt.Errorf("%w: a proof from the empty tree must be empty", ErrProof)
		}
		return nil
	case m == n:
		if len(proof) != 0 || oldRoot != newRoot {
			return ErrProof
		}
		return nil
	case len(proof) == 0:
		return ErrProof
	}
	path := proof
	if m&(m-1) == 0 { // m is a power of two: the old root is a node of the new tree
		path = append([]common.Hash{oldRoot}, proof...)
	}
	fn, sn := uint64(m-1), uint64(n-1)
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return ErrProof
		}
		if fn&1 == 1 || fn == sn {
			fr = nodeHash(c, fr)
			sr = nodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = nodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || fr != oldRoot || sr != newRoot {
		return ErrProof
	}
	return nil
}

// Frontier is a tree being appended to, kept as the roots of its perfect
// subtrees (one per set bit of its size, largest first): about log2(size)
// hashes are enough to append leaves and to compute the root at any size,
// so a client that verified a history up to some size can go on from there
// without the earlier leaves.
type Frontier struct {
	size  uint64
	nodes []common.Hash
}

// ResumeFrontier rebuilds a frontier from its size and nodes (Size and Nodes
// of an earlier one).
func ResumeFrontier(size uint64, nodes []common.Hash) (Frontier, error) {
	if bits.OnesCount64(size) != len(nodes) {
		return Frontier{}, fmt.Errorf("anchor: a frontier of %d leaves has %d nodes, not %d", size, bits.OnesCount64(size), len(nodes))
	}
	return Frontier{size: size, nodes: append([]common.Hash(nil), nodes...)}, nil
}

// Size returns the number of leaves.
func (f *Frontier) Size() uint64 { return f.size }

// Nodes returns a copy of the perfect subtrees' roots, largest first.
func (f *Frontier) Nodes() []common.Hash { return append([]common.Hash(nil), f.nodes...) }

// Append adds a leaf (a leaf hash).
func (f *Frontier) Append(leaf common.Hash) {
	f.nodes = append(f.nodes, leaf)
	// Each trailing one bit of the old size is a subtree as large as the
	// one just completed: merge them, as a binary counter carries.
	for s := f.size; s&1 == 1; s >>= 1 {
		k := len(f.nodes)
		f.nodes = append(f.nodes[:k-2], nodeHash(f.nodes[k-2], f.nodes[k-1]))
	}
	f.size++
}

// Root returns the RFC 6962 root of the leaves appended so far: the
// perfect subtrees folded from the right, as the tree splits at the largest
// power of two.
func (f *Frontier) Root() common.Hash {
	if len(f.nodes) == 0 {
		return Root(nil)
	}
	r := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		r = nodeHash(f.nodes[i], r)
	}
	return r
}
