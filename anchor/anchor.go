// Package anchor owns the Merkle trees a provider's gateway anchors on chain
// (contract Anchors): the tree of an access-log batch (leaves: the entries'
// chain hashes, in sequence order) and the records-state tree (leaves: tag →
// that patient's state hash, sorted by tag), and the tree of one patient's
// records history (leaves: the patient's record versions in change order;
// its size and root are part of the state hash, see dbmanager/store). A
// patient's client checks its log entries and its records against the
// anchored roots with the inclusion proofs the gateway serves, and checks
// with consistency proofs that a history anchored later only extends the one
// it verified before, so a provider cannot silently rewrite history.
//
// The tree is RFC 6962's (Certificate Transparency) over keccak256: leaf
// hash H(0x00 ‖ data), node H(0x01 ‖ left ‖ right), a tree of n leaves split
// at the largest power of two below n. The prefixes keep a leaf from posing
// as a node. The empty tree's root is H() (keccak256 of nothing).
package anchor

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// ErrProof says an inclusion proof does not lead to the root.
var ErrProof = errors.New("anchor: inclusion proof does not match the root")

// LeafHash is H(0x00 ‖ data).
func LeafHash(data []byte) common.Hash { return crypto.Keccak256Hash([]byte{0}, data) }

func nodeHash(l, r common.Hash) common.Hash { return crypto.Keccak256Hash([]byte{1}, l[:], r[:]) }

// Root returns the root over leaf hashes.
func Root(leaves []common.Hash) common.Hash {
	if len(leaves) == 0 {
		return crypto.Keccak256Hash()
	}
	return root(leaves)
}

func root(l []common.Hash) common.Hash {
	if len(l) == 1 {
		return l[0]
	}
	k := split(len(l))
	return nodeHash(root(l[:k]), root(l[k:]))
}

// split is the largest power of two strictly below n (n ≥ 2).
func split(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// Proof returns the inclusion proof (audit path) of leaf i.
func Proof(leaves []common.Hash, i int) ([]common.Hash, error) {
	return NewTree(leaves).Proof(i)
}

// Tree answers inclusion proofs of many leaves of the same tree, hashing
// each inner node once: a proof alone rehashes most of the tree (its
// siblings' subtrees), so a page of proofs from one batch would rehash it
// once per leaf. It is not safe for concurrent use.
type Tree struct {
	leaves []common.Hash
	nodes  map[[2]int]common.Hash // the root of leaves[lo:hi], for the subtrees met so far
}

// NewTree returns the tree over leaf hashes (kept, not copied).
func NewTree(leaves []common.Hash) *Tree {
	return &Tree{leaves: leaves, nodes: map[[2]int]common.Hash{}}
}

// Len is the number of leaves.
func (t *Tree) Len() int { return len(t.leaves) }

// Proof returns the inclusion proof (audit path) of leaf i.
func (t *Tree) Proof(i int) ([]common.Hash, error) {
	if i < 0 || i >= len(t.leaves) {
		return nil, fmt.Errorf("anchor: leaf %d of %d", i, len(t.leaves))
	}
	var out []common.Hash
	for lo, hi := 0, len(t.leaves); hi-lo > 1; {
		k := lo + split(hi-lo)
		if i < k {
			out = append(out, t.root(k, hi))
			hi = k
		} else {
			out = append(out, t.root(lo, k))
			lo = k
		}
	}
	slices.Reverse(out) // leaf level first
	return out, nil
}

// root is the root of leaves[lo:hi] (hi > lo).
func (t *Tree) root(lo, hi int) common.Hash {
	if hi-lo == 1 {
		return t.leaves[lo]
	}
	if h, ok := t.nodes[[2]int{lo, hi}]; ok {
		return h
	}
	k := lo + split(hi-lo)
	h := nodeHash(t.root(lo, k), t.root(k, hi))
	t.nodes[[2]int{lo, hi}] = h
	return h
}

// Verify checks that leaf (a leaf hash) is leaf i of n under root.
func Verify(root common.Hash, leaf common.Hash, i, n int, proof []common.Hash) error {
	if i < 0 || i >= n {
		return fmt.Errorf("%w: leaf %d of %d", ErrProof, i, n)
	}
	// RFC 9162 §2.1.3.2.
	fn, sn := uint64(i), uint64(n-1)
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return ErrProof
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 || r != root {
		return ErrProof
	}
	return nil
}

// StateLeaf is one patient's entry in the records-state tree.
type StateLeaf struct {
	Tag   [32]byte // the relationship tag
	State [32]byte // hash of the patient's record set
}

// Hash is the leaf hash H(0x00 ‖ tag ‖ state).
func (s StateLeaf) Hash() common.Hash { return LeafHash(append(s.Tag[:], s.State[:]...)) }

// StateTree is the records-state tree, leaves sorted by tag.
type StateTree struct {
	leaves []StateLeaf
	hashes []common.Hash
}

// NewStateTree sorts the leaves by tag; a tag may appear once.
func NewStateTree(leaves []StateLeaf) (*StateTree, error) {
	l := append([]StateLeaf(nil), leaves...)
	sort.Slice(l, func(a, b int) bool { return string(l[a].Tag[:]) < string(l[b].Tag[:]) })
	t := &StateTree{leaves: l, hashes: make([]common.Hash, len(l))}
	for i, s := range l {
		if i > 0 && l[i-1].Tag == s.Tag {
			return nil, fmt.Errorf("anchor: tag %x appears twice", s.Tag)
		}
		t.hashes[i] = s.Hash()
	}
	return t, nil
}

// Root returns the tree's root.
func (t *StateTree) Root() common.Hash { return Root(t.hashes) }

// Len returns the number of leaves.
func (t *StateTree) Len() int { return len(t.leaves) }

// Proof returns the index of tag's leaf and its inclusion proof.
func (t *StateTree) Proof(tag [32]byte) (StateLeaf, int, []common.Hash, error) {
	i := sort.Search(len(t.leaves), func(i int) bool { return string(t.leaves[i].Tag[:]) >= string(tag[:]) })
	if i == len(t.leaves) || t.leaves[i].Tag != tag {
		return StateLeaf{}, 0, nil, fmt.Errorf("anchor: tag %x is not in the state tree", tag)
	}
	p, err := Proof(t.hashes, i)
	return t.leaves[i], i, p, err
}
