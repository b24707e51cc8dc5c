package chain

import (
	"math/big"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

func TestPickWinner(t *testing.T) {
	a, b, c := common.Hash{0xa}, common.Hash{0xb}, common.Hash{0xc}
	h := func(hash common.Hash, td int64) head { return head{hash: hash, td: big.NewInt(td)} }
	tests := []struct {
		name  string
		heads []head
		want  common.Hash
	}{
		{"higher difficulty wins", []head{h(a, 10), h(b, 11), h(a, 10)}, b},
		{"then more nodes", []head{h(c, 10), h(b, 10), h(c, 10)}, c},
		{"then the lower hash", []head{h(c, 10), h(b, 10)}, b},
		{"whatever the order", []head{h(b, 10), h(c, 10)}, b},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickWinner(tt.heads); got != tt.want {
				t.Fatalf("winner %x, want %x", got[:1], tt.want[:1])
			}
		})
	}
}

// TestHealForkedSigners builds Clique's stall on purpose: three signers are
// cut off from each other, so the two allowed to seal the next block each
// seal their own; the third crashes; the two are reconnected, each on its
// own fork and each having "signed recently" there. Heal moves one onto the
// other's fork and blocks come again.
func TestHealForkedSigners(t *testing.T) {
	n := newTestNetwork(t, 3)
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := n.State()
	cs := []*Node{client(t, n, 1), client(t, n, 2), client(t, n, 3)}
	peer := func(a, b int, method string) {
		if err := adminCall(t.Context(), st.Nodes[a].IPC, nil, method, st.Nodes[b].Enode); err != nil {
			t.Fatal(err)
		}
	}
	for a := range 3 {
		for b := range 3 {
			if a != b {
				peer(a, b, "admin_removePeer")
			}
		}
	}
	eventually(t, 10*time.Second, "isolated nodes", func() (bool, string) {
		for _, c := range cs {
			if p, _ := c.Peers(t.Context()); p != 0 {
				return false, ""
			}
		}
		return true, ""
	})
	// Two of the three may seal the next height; wait until both did.
	h0 := max(height(t, cs[0]), height(t, cs[1]), height(t, cs[2]))
	var forked []int
	eventually(t, 10*time.Second, "two nodes sealing their own next block", func() (bool, string) {
		forked = forked[:0]
		for i, c := range cs {
			if height(t, c) > h0 {
				forked = append(forked, i)
			}
		}
		return len(forked) == 2, ""
	})
	a, b := forked[0], forked[1]
	crash(n, 3-a-b+1) // the third one
	ha, _ := cs[a].block(t.Context(), nil)
	hb, _ := cs[b].block(t.Context(), nil)
	if ha.Number != hb.Number || ha.Hash == hb.Hash {
		t.Fatalf("no fork: %d %s, %d %s", ha.Number, ha.Hash, hb.Number, hb.Hash)
	}
	// Reconnect them. geth redials a peer only 35 s after its last dial, so
	// restart one: the new process dials its static peers at once, and
	// comes back on its own fork (its head on disk).
	if err := n.Restart(t.Context(), a+1); err != nil {
		t.Fatal(err)
	}
	cs[a] = client(t, n, a+1)
	if h, _ := cs[a].block(t.Context(), nil); h.Hash != ha.Hash {
		t.Fatalf("provider %d came back at %d %s, not on its fork", a+1, h.Number, h.Hash)
	}
	eventually(t, 10*time.Second, "reconnected", func() (bool, string) {
		p, _ := cs[a].Peers(t.Context())
		return p == 1, ""
	})

	start := time.Now()
	moved, err := n.Heal(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(moved) != 1 {
		t.Fatalf("healed %v, want one of %d, %d", moved, a+1, b+1)
	}
	t.Logf("MEASURED heal of a forked stall: %s (providers %v moved)", time.Since(start).Round(10*time.Millisecond), moved)
	top := uint64(ha.Number)
	eventually(t, 20*time.Second, "blocks after healing", func() (bool, string) {
		return height(t, cs[a]) >= top+2 && height(t, cs[b]) >= top+2, ""
	})
	x, _ := cs[a].block(t.Context(), &top)
	y, _ := cs[b].block(t.Context(), &top)
	if x.Hash != y.Hash {
		t.Fatalf("still forked at %d: %s, %s", top, x.Hash, y.Hash)
	}
	if again, err := n.Heal(t.Context()); err != nil || len(again) != 0 {
		t.Fatalf("second heal moved %v, %v", again, err)
	}
}
