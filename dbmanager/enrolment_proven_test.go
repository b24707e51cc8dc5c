package dbmanager

import (
	"encoding/json"
	"fmt"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestEnrolmentProven: where the registry takes proven batches, the desks'
// enrolments go on chain in batches the gateway proves from its own tree;
// when another gateway's batch lands between the proof and its sending,
// the registry refuses the stale proof and the gateway proves again; every
// commitment ends in the tree, whose root is the registry's.
func TestEnrolmentProven(t *testing.T) {
	ks, v := provertest.Insertion(t)
	inserter := prover.New(ks)
	c := simchain.NewWith(t, 2, nil, v)
	w := newWorldOnChain(t, c, filepath.Join(t.TempDir(), "records.db"), func(cfg *Config) {
		cfg.Inserter = inserter
		cfg.EnrolLinger = 300 * time.Millisecond
	})

	// Without the insertion proving key the gateway does not start.
	cfg := w.cfg
	cfg.Inserter = nil
	if _, err := New(cfg); err == nil {
		t.Fatal("a gateway without the insertion proving key started on a registry that takes proven batches")
	}

	commitment := func(i int) fr.Element { return zkhash.FromUint64(uint64(7000 + i)) }
	const n = 5
	for i := range n {
		if r := w.staff("POST", "/admin/patients", map[string]string{"id": fmt.Sprintf("p%d", i)}); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
	}
	// Another provider's batch lands after the first proof is made.
	other := []fr.Element{zkhash.FromUint64(9001), zkhash.FromUint64(9002)}
	var once sync.Once
	sends := 0 // batches proved and sent, refused or not
	testHookProvenSend = func() {
		sends++ // one batch at a time: no lock needed
		once.Do(func() {
			var a *circuits.Insertion
			var pub circuits.InsertionPublic
			if err := w.view.ReadTree(func(tree *merkle.Tree) (err error) {
				a, pub, err = circuits.InsertionWitnessTree(tree, other)
				return err
			}); err != nil {
				t.Error(err)
				return
			}
			proof, err := inserter.ProveInsertion(a)
			if err != nil {
				t.Error(err)
				return
			}
			tx, err := c.Client.EnrolProven(t.Context(), c.Auth(c.Providers[1].Gateway), []*big.Int{zkhash.Big(other[0]), zkhash.Big(other[1])}, zkhash.Big(pub.NewRoot), proof[:])
			if err == nil {
				_, err = c.Client.Wait(t.Context(), tx)
			}
			if err != nil {
				t.Errorf("the other provider's batch: %v", err)
			}
		})
	}
	t.Cleanup(func() { testHookProvenSend = nil })

	var wg sync.WaitGroup
	results := make([]resp, n)
	for i := range n {
		wg.Go(func() {
			results[i] = w.staff("POST", fmt.Sprintf("/admin/patients/p%d/enrol", i), map[string]string{"commitment": zkhash.Hex(commitment(i))})
		})
	}
	wg.Wait()
	txs := map[string]bool{}
	for i, r := range results {
		var got struct{ Tx string }
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
			t.Fatalf("enrolment %d: %d %s", i, r.status, r.body)
		}
		txs[got.Tx] = true
	}
	// The first proof went stale: one more send than batches mined.
	if sends != len(txs)+1 {
		t.Fatalf("%d batches sent for %d mined; want the stale one proved again, once", sends, len(txs))
	}
	if err := w.view.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := w.view.Leaves(); got != n+len(other) {
		t.Fatalf("%d leaves; want %d", got, n+len(other))
	}
	for i := range n {
		if _, err := w.view.MerkleProof(commitment(i)); err != nil {
			t.Fatalf("commitment %d: %v", i, err)
		}
	}
	onChain, err := c.Client.Root(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if onChain.Cmp(zkhash.Big(w.view.Root())) != 0 {
		t.Fatal("the registry's root is not the gateway's tree's")
	}
}
