package merkle

import (
	"errors"
	"fmt"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// Paths without the whole tree. A client that rebuilds the tree from the
// registry's events downloads 32 bytes a patient (3.2 GB at 10^8); one that
// asks a server for "my path" names its leaf. In between: the tree is cut
// at height BucketHeight into buckets of 2^BucketHeight consecutive leaves.
// Anyone holding the tree (a gateway's chain view, a mirror) publishes the
// buckets' roots (Tops) and each bucket's leaves (Bucket); a client fetches
// every top and its own bucket, and computes its whole path itself
// (BucketProof). The server learns only which bucket — one of 4,096
// patients enrolled at about the same time — and cannot lie: the path must
// lead to a root the chain knows, which the caller checks.

// BucketHeight is the height at which the tree is cut into buckets:
// 4,096 leaves, 128 KiB a bucket.
const BucketHeight = 12

// BucketSize is the number of leaves in a full bucket.
const BucketSize = 1 << BucketHeight

// ErrInconsistent says published tops and a bucket do not fit together.
var ErrInconsistent = errors.New("merkle: the bucket does not hash to its published top")

// Tops returns the roots of the tree's buckets, left to right: the nodes at
// height BucketHeight (the last one over a partial bucket).
func (t *Tree) Tops() ([]fr.Element, error) {
	tops, err := t.store().Range(BucketHeight, 0, width(t.n, BucketHeight))
	if err != nil {
		return nil, fmt.Errorf("merkle: the buckets' tops: %w", err)
	}
	return tops, nil
}

// Bucket returns the leaves of bucket b (fewer than BucketSize in the last).
func (t *Tree) Bucket(b int) ([]fr.Element, error) {
	if b < 0 || b*BucketSize >= t.n {
		return nil, fmt.Errorf("bucket %d of %d leaves: %w", b, t.n, ErrIndexOutside)
	}
	leaves, err := t.store().Range(0, b*BucketSize, min(BucketSize, t.n-b*BucketSize))
	if err != nil {
		return nil, fmt.Errorf("merkle: bucket %d: %w", b, err)
	}
	return leaves, nil
}

// Leaves returns up to count leaves from index from on.
func (t *Tree) Leaves(from, count int) ([]fr.Element, error) {
	if from < 0 || count < 0 || from > t.n {
		return nil, fmt.Errorf("leaves %d+%d of %d: %w", from, count, t.n, ErrIndexOutside)
	}
	leaves, err := t.store().Range(0, from, min(count, t.n-from))
	if err != nil {
		return nil, fmt.Errorf("merkle: leaves %d+%d: %w", from, count, err)
	}
	return leaves, nil
}

// BucketProof returns the membership path of leaf i and the root it leads
// to, from the leaves of i's bucket and every bucket's top, as a client
// computes it after fetching them. It fails if the bucket does not hash to
// its top or the sizes do not fit; the caller must check that the root is
// one the chain knows (a server can withhold, not forge).
func BucketProof(i int, bucket, tops []fr.Element) (Proof, fr.Element, error) {
	b := i / BucketSize
	switch {
	case i < 0 || i >= Capacity:
		return Proof{}, fr.Element{}, fmt.Errorf("leaf %d: %w", i, ErrIndexOutside)
	case b >= len(tops) || len(tops) > Capacity/BucketSize:
		return Proof{}, fr.Element{}, fmt.Errorf("leaf %d is in bucket %d, and %d tops are published: %w", i, b, len(tops), ErrIndexOutside)
	case len(bucket) == 0 || len(bucket) > BucketSize || i%BucketSize >= len(bucket):
		return Proof{}, fr.Element{}, fmt.Errorf("leaf %d is not in a bucket of %d leaves: %w", i, len(bucket), ErrIndexOutside)
	case b < len(tops)-1 && len(bucket) != BucketSize:
		return Proof{}, fr.Element{}, fmt.Errorf("bucket %d is not the last but holds %d leaves: %w", b, len(bucket), ErrInconsistent)
	}
	p := Proof{Leaf: bucket[i%BucketSize], Index: uint64(i)}
	top := path(bucket, i%BucketSize, 0, BucketHeight, p.Siblings[:BucketHeight])
	if top != tops[b] {
		return Proof{}, fr.Element{}, fmt.Errorf("bucket %d: %w", b, ErrInconsistent)
	}
	root := path(tops, b, BucketHeight, Depth-BucketHeight, p.Siblings[BucketHeight:])
	return p, root, nil
}

// path fills siblings with the path of nodes[i] in a subtree of the given
// height whose nodes sit at height base of the tree (missing ones are empty
// subtrees), and returns the subtree's root.
func path(nodes []fr.Element, i, base, height int, siblings []fr.Element) fr.Element {
	level := nodes
	for h := 0; h < height; h++ {
		if s := i ^ 1; s < len(level) {
			siblings[h] = level[s]
		} else {
			siblings[h] = zeros[base+h]
		}
		level, i = parents(level, base+h), i/2
	}
	return level[0]
}
