package merkle

import (
	"errors"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// TestBucketProof: a path computed from a bucket and the tops is the
// tree's own, for leaves in full and partial buckets, first and last; a
// tampered bucket or top, or a bucket of the wrong size, is refused.
func TestBucketProof(t *testing.T) {
	for _, n := range []int{1, 5, BucketSize - 1, BucketSize, BucketSize + 1, 3*BucketSize + 17} {
		tree, err := New(leaves(n))
		if err != nil {
			t.Fatal(err)
		}
		tops, err := tree.Tops()
		if err != nil {
			t.Fatal(err)
		}
		if want := (n + BucketSize - 1) / BucketSize; len(tops) != want {
			t.Fatalf("%d leaves: %d tops, want %d", n, len(tops), want)
		}
		for _, i := range []int{0, 1, n / 2, n - 1, BucketSize} {
			if i >= n {
				continue
			}
			bucket, err := tree.Bucket(i / BucketSize)
			if err != nil {
				t.Fatal(err)
			}
			got, root, err := BucketProof(i, bucket, tops)
			if err != nil {
				t.Fatalf("%d leaves, leaf %d: %v", n, i, err)
			}
			want, _ := tree.Proof(i)
			if got != want || root != tree.Root() || got.Root() != root {
				t.Fatalf("%d leaves, leaf %d: the bucket's path differs from the tree's", n, i)
			}
		}
		bucket, _ := tree.Bucket(0)
		bad := append([]fr.Element(nil), bucket...)
		bad[len(bad)-1].SetUint64(424242)
		if _, _, err := BucketProof(0, bad, tops); !errors.Is(err, ErrInconsistent) {
			t.Fatalf("%d leaves: a tampered bucket: %v", n, err)
		}
		badTops := append([]fr.Element(nil), tops...)
		badTops[0].SetUint64(7)
		if _, _, err := BucketProof(0, bucket, badTops); !errors.Is(err, ErrInconsistent) {
			t.Fatalf("%d leaves: a tampered top: %v", n, err)
		}
		if len(tops) > 1 {
			if _, _, err := BucketProof(0, bucket[:len(bucket)-1], tops); err == nil {
				t.Fatalf("%d leaves: a short bucket that is not the last was accepted", n)
			}
		}
		if _, _, err := BucketProof(n+BucketSize*len(tops), bucket, tops); !errors.Is(err, ErrIndexOutside) {
			t.Fatalf("%d leaves: a leaf beyond the tops: %v", n, err)
		}
	}
	tree, _ := New(leaves(3))
	if _, err := tree.Bucket(1); !errors.Is(err, ErrIndexOutside) {
		t.Fatalf("a bucket beyond the leaves: %v", err)
	}
}

// BenchmarkBucketPath10e8 computes a path as a client would in a tree of
// 10^8 leaves: 24,415 tops and a full bucket (random nodes, the bucket's top
// made to fit), and reports what the client downloads. Issue 16's goal:
// under 5 MB for a path in a tree of 10^8.
func BenchmarkBucketPath10e8(b *testing.B) {
	const n = 100_000_000
	tops := make([]fr.Element, (n+BucketSize-1)/BucketSize)
	for i := range tops {
		tops[i].SetRandom()
	}
	bucket := make([]fr.Element, BucketSize)
	for i := range bucket {
		bucket[i].SetRandom()
	}
	const leaf = 57_000_123
	b.StopTimer()
	var scratch [BucketHeight]fr.Element
	tops[leaf/BucketSize] = path(bucket, leaf%BucketSize, 0, BucketHeight, scratch[:])
	b.StartTimer()
	for b.Loop() {
		if _, _, err := BucketProof(leaf, bucket, tops); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(32*(len(tops)+len(bucket))), "download-bytes")
}
