// Package bucketpath fetches a patient's membership path in the registry's
// tree without downloading the whole tree and without naming the leaf: the
// roots of every bucket of 4,096 leaves and the leaves of one bucket, from
// any server of them (a gateway's /registry/, a mirror), from which it
// computes the path itself (merkle.BucketProof). In a tree of 10^8
// commitments that is about 0.9 MB; the server learns which bucket. The
// path's root must then be checked against the chain by the caller: a
// server can withhold or serve stale data, not forge a path to a root the
// chain knows.
package bucketpath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// Paths of the two resources under a server's base URL.
const (
	TopsPath    = "/registry/tops"
	BucketsPath = "/registry/buckets/" // + the bucket's number
)

// Headers of the tops' answer: the tree they are of.
const (
	HeaderLeaves = "X-Registry-Leaves"
	HeaderRoot   = "X-Registry-Root"
)

// ErrServer says a server's answer is not what it should be.
var ErrServer = errors.New("bucketpath: the server's answer is not the registry's")

// Fetch returns the membership path of leaf i and the root it leads to,
// fetched from the server at base with hc. The bucket must hash to its
// top, the tops to the root the server announces, and i must be a leaf of
// that tree; the caller checks the root against the chain.
func Fetch(ctx context.Context, hc *http.Client, base string, i int) (merkle.Proof, fr.Element, error) {
	if i < 0 || i >= merkle.Capacity {
		return merkle.Proof{}, fr.Element{}, fmt.Errorf("bucketpath: leaf %d is not in a tree of depth %d", i, merkle.Depth)
	}
	tops, h, err := get(ctx, hc, base+TopsPath, merkle.Capacity/merkle.BucketSize)
	if err != nil {
		return merkle.Proof{}, fr.Element{}, err
	}
	leaves, err := strconv.Atoi(h.Get(HeaderLeaves))
	if err != nil || leaves < 0 || (leaves+merkle.BucketSize-1)/merkle.BucketSize != len(tops) {
		return merkle.Proof{}, fr.Element{}, fmt.Errorf("%w: %d tops of %q leaves", ErrServer, len(tops), h.Get(HeaderLeaves))
	}
	if i >= leaves {
		return merkle.Proof{}, fr.Element{}, fmt.Errorf("bucketpath: leaf %d is not enrolled yet: the server's tree has %d leaves", i, leaves)
	}
	bucket, _, err := get(ctx, hc, base+BucketsPath+strconv.Itoa(i/merkle.BucketSize), merkle.BucketSize)
	if err != nil {
		return merkle.Proof{}, fr.Element{}, err
	}
	p, root, err := merkle.BucketProof(i, bucket, tops)
	if err != nil {
		return merkle.Proof{}, fr.Element{}, fmt.Errorf("%w: %w", ErrServer, err)
	}
	if zkhash.Hex(root) != h.Get(HeaderRoot) {
		return merkle.Proof{}, fr.Element{}, fmt.Errorf("%w: the tops lead to %s, the server announced %.80q", ErrServer, zkhash.Hex(root), h.Get(HeaderRoot))
	}
	return p, root, nil
}

// get fetches url's nodes, at most max of them.
func get(ctx context.Context, hc *http.Client, url string, max int) ([]fr.Element, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("bucketpath: %w", err)
	}
	res, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("bucketpath: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("%w: %s answered %s", ErrServer, url, res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, int64(32*max)+1))
	if err != nil {
		return nil, nil, fmt.Errorf("bucketpath: %s: %w", url, err)
	}
	if len(body)%32 != 0 || len(body) > 32*max {
		return nil, nil, fmt.Errorf("%w: %s: %d bytes", ErrServer, url, len(body))
	}
	nodes := make([]fr.Element, len(body)/32)
	for k := range nodes {
		if err := nodes[k].SetBytesCanonical(body[32*k : 32*k+32]); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: node %d is not a field element", ErrServer, url, k)
		}
	}
	return nodes, res.Header, nil
}
