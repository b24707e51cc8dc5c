package chainview

import (
	"context"
	"errors"
	"math/big"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// countingNodes counts the writes to a store.
type countingNodes struct {
	merkle.Nodes
	sets int
}

func (c *countingNodes) Set(n int, nodes []merkle.Node) error {
	c.sets++
	return c.Nodes.Set(n, nodes)
}

// enrolBatch enrols the commitments of labels in one transaction.
func enrolBatch(t *testing.T, c *simchain.Chain, labels ...string) {
	t.Helper()
	ctx := context.Background()
	var cms []*big.Int
	for _, l := range labels {
		cms = append(cms, zkhash.Big(zkhash.Commitment(secret(l))))
	}
	tx, err := c.Client.Enrol(ctx, c.Auth(c.Providers[0].Gateway), cms...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
}

// viewOn returns a view of c whose tree is kept in nodes, synced.
func viewOn(t *testing.T, c *simchain.Chain, nodes merkle.Nodes) *View {
	t.Helper()
	v, err := NewWithNodes(c.Backend, c.D, nodes)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTreeInStore: a view whose tree is kept in a store (a gateway's records
// database) follows the chain like one in memory; restarted on the same
// store it checks the stored tree against the chain's enrolments and
// rewrites nothing; what the chain no longer has (a reorg while it was
// down, another deployment) it drops.
func TestTreeInStore(t *testing.T) {
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	enrolBatch(t, c, "a1", "a2", "a3")
	before, _ := c.Backend.HeaderByNumber(ctx, nil)
	enrolBatch(t, c, "b1", "b2")
	nodes := &countingNodes{Nodes: merkle.MemNodes()}
	v := viewOn(t, c, nodes)
	if v.Leaves() != 5 || zkhash.Big(v.Root()).Cmp(mustRoot(t, c)) != 0 {
		t.Fatalf("%d leaves; root %s, chain %#x", v.Leaves(), zkhash.Hex(v.Root()), mustRoot(t, c))
	}

	// Restarted: until it has read the chain, it serves no path; then the
	// same tree, written not once.
	nodes.sets = 0
	again, err := NewWithNodes(c.Backend, c.D, nodes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.MerkleProof(zkhash.Commitment(secret("a2"))); !errors.Is(err, ErrCatchingUp) {
		t.Fatalf("a path before the first sync: %v", err)
	}
	if _, _, _, err := again.Tops(); !errors.Is(err, ErrCatchingUp) {
		t.Fatalf("tops before the first sync: %v", err)
	}
	if err := again.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nodes.sets != 0 || again.Leaves() != 5 || again.Root() != v.Root() {
		t.Fatalf("restarted: %d writes, %d leaves", nodes.sets, again.Leaves())
	}
	p, err := again.MerkleProof(zkhash.Commitment(secret("b2")))
	if err != nil || p.Index != 4 || p.Root() != v.Root() {
		t.Fatalf("b2's path after the restart: %+v %v", p.Index, err)
	}

	// While it runs, a reorg takes batch b out and puts c in its place:
	// the stored tree follows.
	reorgTo(t, c, before.Hash())
	enrolBatch(t, c, "c1")
	if err := again.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if again.Leaves() != 4 || zkhash.Big(again.Root()).Cmp(mustRoot(t, c)) != 0 {
		t.Fatalf("after the reorg: %d leaves, root %s, chain %#x", again.Leaves(), zkhash.Hex(again.Root()), mustRoot(t, c))
	}
	if _, err := again.MerkleProof(zkhash.Commitment(secret("b1"))); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("b1 after the reorg: %v", err)
	}

	// A store ahead of the chain (here: a longer tree written, then the
	// chain reorged while the gateway was down) is cut back on restart.
	if _, err := again.tree.Append([]fr.Element{zkhash.Commitment(secret("never"))}); err != nil {
		t.Fatal(err)
	}
	back := viewOn(t, c, nodes)
	if back.Leaves() != 4 || zkhash.Big(back.Root()).Cmp(mustRoot(t, c)) != 0 {
		t.Fatalf("a store ahead of the chain: %d leaves", back.Leaves())
	}
	if n, _ := nodes.Count(); n != 4 {
		t.Fatalf("the store keeps %d leaves, the chain 4", n)
	}

	// The same store on another deployment: rebuilt from its enrolments.
	other := simchain.New(t, 2, nil)
	enrolBatch(t, other, "z1", "z2")
	moved := viewOn(t, other, nodes)
	if moved.Leaves() != 2 || zkhash.Big(moved.Root()).Cmp(mustRoot(t, other)) != 0 {
		t.Fatalf("another deployment: %d leaves", moved.Leaves())
	}
	if _, err := moved.MerkleProof(zkhash.Commitment(secret("a1"))); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("the first deployment's a1 on the second: %v", err)
	}
}
