package anchor

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

func leaves(n int) []common.Hash {
	out := make([]common.Hash, n)
	for i := range out {
		out[i] = LeafHash([]byte(fmt.Sprint("entry ", i)))
	}
	return out
}

// TestShape checks the RFC 6962 shape on small trees by hand.
func TestShape(t *testing.T) {
	l := leaves(3)
	want := nodeHash(nodeHash(l[0], l[1]), l[2])
	if got := Root(l); got != want {
		t.Fatalf("root of 3: %x, want %x", got, want)
	}
	if Root(nil) != crypto.Keccak256Hash() {
		t.Fatal("empty root")
	}
	if Root(l[:1]) != l[0] {
		t.Fatal("root of 1")
	}
}

// TestProofs: every leaf of every tree size up to 40 verifies, and any
// change of leaf, index, root or path element fails. (As in Certificate
// Transparency, the size is bound by the anchor, which records the count.)
func TestProofs(t *testing.T) {
	for n := 1; n <= 40; n++ {
		l := leaves(n)
		r := Root(l)
		tree := NewTree(l) // one tree for every leaf's proof: its nodes reused
		for i := 0; i < n; i++ {
			p, err := Proof(l, i)
			if err != nil {
				t.Fatal(err)
			}
			if q, err := tree.Proof(i); err != nil || fmt.Sprint(q) != fmt.Sprint(p) {
				t.Fatalf("n=%d i=%d: the shared tree's proof %v differs from %v (%v)", n, i, q, p, err)
			}
			if err := Verify(r, l[i], i, n, p); err != nil {
				t.Fatalf("n=%d i=%d: %v", n, i, err)
			}
			bad := []struct {
				name string
				err  error
			}{
				{"other leaf", Verify(r, LeafHash([]byte("x")), i, n, p)},
				{"other root", Verify(LeafHash([]byte("y")), l[i], i, n, p)},
				{"index+1", Verify(r, l[i], i+1, n, p)},
				{"index outside", Verify(r, l[i], n, n, p)},
				{"extra element", Verify(r, l[i], i, n, append(append([]common.Hash(nil), p...), l[0]))},
			}
			if len(p) > 0 {
				q := append([]common.Hash(nil), p...)
				q[len(q)-1][0] ^= 1
				bad = append(bad, struct {
					name string
					err  error
				}{"flipped path", Verify(r, l[i], i, n, q)})
				bad = append(bad, struct {
					name string
					err  error
				}{"short path", Verify(r, l[i], i, n, p[:len(p)-1])})
			}
			for _, b := range bad {
				if b.name == "index+1" && i+1 < n && l[i] == l[i+1] {
					continue
				}
				if !errors.Is(b.err, ErrProof) {
					t.Fatalf("n=%d i=%d %s: %v", n, i, b.name, b.err)
				}
			}
		}
	}
	if _, err := Proof(leaves(3), 3); err == nil {
		t.Fatal("proof of a missing leaf")
	}
}

func TestStateTree(t *testing.T) {
	var ls []StateLeaf
	for i := 5; i > 0; i-- {
		ls = append(ls, StateLeaf{Tag: [32]byte{byte(i)}, State: [32]byte{9, byte(i)}})
	}
	tr, err := NewStateTree(ls)
	if err != nil {
		t.Fatal(err)
	}
	leaf, i, p, err := tr.Proof([32]byte{3})
	if err != nil || leaf.State != ([32]byte{9, 3}) || i != 2 {
		t.Fatalf("proof %v %d %v", leaf, i, err)
	}
	if err := Verify(tr.Root(), leaf.Hash(), i, tr.Len(), p); err != nil {
		t.Fatal(err)
	}
	// A provider that changed one patient's record set changes the root.
	ls[0].State[5] = 1
	tr2, _ := NewStateTree(ls)
	if tr2.Root() == tr.Root() {
		t.Fatal("root ignores a state change")
	}
	if _, _, _, err := tr.Proof([32]byte{7}); err == nil {
		t.Fatal("proof for an absent tag")
	}
	if _, err := NewStateTree(append(ls, ls[0])); err == nil {
		t.Fatal("duplicate tag accepted")
	}
}
