package anchor

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

// refProof is RFC 6962 §2.1.2's PROOF(m, D[n]) written out as the RFC
// defines it, on slices of leaves: the reference the production code is
// checked against.
func refProof(m int, d []common.Hash) []common.Hash { return refSubproof(m, d, true) }

func refSubproof(m int, d []common.Hash, b bool) []common.Hash {
	n := len(d)
	if m == n {
		if b {
			return nil
		}
		return []common.Hash{Root(d)}
	}
	k := 1
	for k*2 < n {
		k *= 2
	}
	if m <= k {
		return append(refSubproof(m, d[:k], b), Root(d[k:]))
	}
	return append(refSubproof(m-k, d[k:], false), Root(d[:k]))
}

// otherLeaves are n leaves of a different history: leaf i differs from
// leaves(n)[i] exactly when i == changed.
func otherLeaves(n, changed int) []common.Hash {
	l := leaves(n)
	l[changed] = LeafHash([]byte(fmt.Sprint("rewritten ", changed)))
	return l
}

// TestConsistency: for every 1 ≤ m ≤ n ≤ 40 the proof is the RFC's, it
// verifies, and every malformed variant, wrong old size or rewritten earlier
// tree is refused. (As for inclusion proofs, the new size is bound by what
// commits to it — the anchored leaf holds (size, root) — so one proof may
// serve two sizes of the same shape, and is not a negative case here.)
func TestConsistency(t *testing.T) {
	const max = 40
	all := leaves(max)
	for n := 1; n <= max; n++ {
		newRoot := Root(all[:n])
		for m := 1; m <= n; m++ {
			oldRoot := Root(all[:m])
			p, err := ConsistencyProof(all[:n], m)
			if err != nil {
				t.Fatalf("m=%d n=%d: %v", m, n, err)
			}
			if want := refProof(m, all[:n]); fmt.Sprint(p) != fmt.Sprint(want) {
				t.Fatalf("m=%d n=%d: proof %x, the RFC's %x", m, n, p, want)
			}
			if err := VerifyConsistency(m, n, oldRoot, newRoot, p); err != nil {
				t.Fatalf("m=%d n=%d: %v", m, n, err)
			}
			bad := map[string]error{
				"other old root":  VerifyConsistency(m, n, LeafHash([]byte("x")), newRoot, p),
				"other new root":  VerifyConsistency(m, n, oldRoot, LeafHash([]byte("y")), p),
				"extra element":   VerifyConsistency(m, n, oldRoot, newRoot, append(append([]common.Hash(nil), p...), all[0])),
				"m larger than n": VerifyConsistency(n+1, n, newRoot, newRoot, p),
				"m of zero with a proof": func() error {
					if len(p) == 0 {
						return VerifyConsistency(0, n, oldRoot, newRoot, []common.Hash{all[0]})
					}
					return VerifyConsistency(0, n, oldRoot, newRoot, p)
				}(),
			}
			if m > 1 {
				bad["m-1"] = VerifyConsistency(m-1, n, oldRoot, newRoot, p)
			}
			if m < n {
				bad["m+1"] = VerifyConsistency(m+1, n, oldRoot, newRoot, p)
			}
			if len(p) > 0 {
				bad["short"] = VerifyConsistency(m, n, oldRoot, newRoot, p[:len(p)-1])
				for i := range p {
					q := append([]common.Hash(nil), p...)
					q[i][31] ^= 1
					bad[fmt.Sprintf("element %d flipped", i)] = VerifyConsistency(m, n, oldRoot, newRoot, q)
				}
				if len(p) > 1 {
					q := append([]common.Hash(nil), p...)
					q[0], q[1] = q[1], q[0]
					if q[0] != q[1] {
						bad["swapped"] = VerifyConsistency(m, n, oldRoot, newRoot, q)
					}
				}
			}
			// A history whose first m leaves were rewritten does not extend
			// the old one: its honest proof fails against the old root.
			for i := 0; i < m; i++ {
				o := otherLeaves(n, i)
				q, err := ConsistencyProof(o, m)
				if err != nil {
					t.Fatal(err)
				}
				bad[fmt.Sprintf("leaf %d rewritten", i)] = VerifyConsistency(m, n, oldRoot, Root(o), q)
			}
			for name, err := range bad {
				if !errors.Is(err, ErrProof) {
					t.Fatalf("m=%d n=%d %s: %v", m, n, name, err)
				}
			}
		}
	}
	// Trivial cases: the empty tree is a prefix of every tree, a tree of
	// itself; sizes outside the tree are errors.
	if err := VerifyConsistency(0, 5, Root(nil), Root(all[:5]), nil); err != nil {
		t.Fatalf("from the empty tree: %v", err)
	}
	if p, err := ConsistencyProof(all[:5], 0); err != nil || len(p) != 0 {
		t.Fatalf("proof from the empty tree: %v %v", p, err)
	}
	if err := VerifyConsistency(5, 5, Root(all[:5]), Root(all[:5]), nil); err != nil {
		t.Fatalf("same tree: %v", err)
	}
	if err := VerifyConsistency(5, 5, Root(all[:5]), Root(otherLeaves(5, 4)), nil); !errors.Is(err, ErrProof) {
		t.Fatalf("same size, other tree: %v", err)
	}
	for _, m := range []int{-1, 6} {
		if _, err := ConsistencyProof(all[:5], m); err == nil {
			t.Fatalf("proof from size %d of 5", m)
		}
	}
}

// TestFrontier: appending leaves one by one gives the RFC 6962 root at
// every size, and a frontier resumed from its nodes goes on the same way.
func TestFrontier(t *testing.T) {
	all := leaves(70)
	var f Frontier
	if f.Root() != Root(nil) || f.Size() != 0 {
		t.Fatal("empty frontier")
	}
	for i, l := range all {
		f.Append(l)
		if f.Size() != uint64(i+1) || f.Root() != Root(all[:i+1]) {
			t.Fatalf("size %d: root %x, want %x", i+1, f.Root(), Root(all[:i+1]))
		}
		g, err := ResumeFrontier(f.Size(), f.Nodes())
		if err != nil || g.Root() != f.Root() {
			t.Fatalf("resumed at %d: %v", i+1, err)
		}
	}
	if _, err := ResumeFrontier(5, f.Nodes()); err == nil {
		t.Fatal("a frontier with the wrong number of nodes was resumed")
	}
}
