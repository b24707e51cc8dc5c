package chain

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestRecommit: the miner rebuilds a pending block half a second before its
// time, never on the beat of the blocks; at 1 s blocks geth's default stays.
func TestRecommit(t *testing.T) {
	for _, c := range []struct {
		period uint64
		want   time.Duration
	}{
		{1, 0},
		{2, 1500 * time.Millisecond},
		{5, 4500 * time.Millisecond},
	} {
		if got := recommit(c.period); got != c.want {
			t.Errorf("recommit(%d) = %v, want %v", c.period, got, c.want)
		}
		if got := recommit(c.period); got > 0 && got%time.Second == 0 {
			t.Errorf("recommit(%d) = %v: a whole number of seconds fires as blocks are sealed", c.period, got)
		}
	}
}

// TestClaimPort: a port claimed by one network is not picked by another
// created at the same moment, until the claim is stale.
func TestClaimPort(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ports {
		if claimPort(p) {
			t.Errorf("port %d was claimed twice", p)
		}
	}
	path := filepath.Join(os.TempDir(), "medrec-port-claims", strconv.Itoa(ports[0]))
	old := time.Now().Add(-2 * portClaimTTL)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if !claimPort(ports[0]) {
		t.Error("a stale claim was not taken over")
	}
}
