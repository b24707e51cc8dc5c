package dbmanager

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/zkhash"
)

// TestEnrolmentBatches: enrolments that arrive together go on chain in one
// batch (one transaction, every commitment in the tree, each answered with
// its batch); a commitment already in the tree, or queued, is refused.
func TestEnrolmentBatches(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.EnrolLinger = 500 * time.Millisecond })
	const n = 8
	for i := range n + 1 {
		if r := w.staff("POST", "/admin/patients", map[string]string{"id": fmt.Sprintf("b%d", i)}); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
	}
	commitment := func(i int) fr.Element {
		var c fr.Element
		c.SetUint64(uint64(5000 + i))
		return c
	}
	before := w.cfg.View.Leaves()
	var wg sync.WaitGroup
	results := make([]resp, n)
	for i := range n {
		wg.Go(func() {
			results[i] = w.staff("POST", fmt.Sprintf("/admin/patients/b%d/enrol", i), map[string]string{"commitment": zkhash.Hex(commitment(i))})
		})
	}
	// While they wait (queued, their batch not mined): the same commitment
	// again is refused.
	queued := func() bool {
		w.gw.enrols.mu.Lock()
		defer w.gw.enrols.mu.Unlock()
		return w.gw.enrols.pending[commitment(0)]
	}
	for deadline := time.Now().Add(10 * time.Second); !queued(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the enrolment never reached the queue")
		}
	}
	if r := w.staff("POST", "/admin/patients/b8/enrol", map[string]string{"commitment": zkhash.Hex(commitment(0))}); r.status != 409 || !strings.Contains(string(r.body), "being enrolled") {
		t.Fatalf("a queued commitment again: %d %s", r.status, r.body)
	}
	wg.Wait()
	txs := map[string]int{}
	for i, r := range results {
		var got struct {
			Tx    string
			Batch int
		}
		if r.status != 200 || json.Unmarshal(r.body, &got) != nil {
			t.Fatalf("enrolment %d: %d %s", i, r.status, r.body)
		}
		txs[got.Tx] = got.Batch
	}
	total := 0
	for _, k := range txs {
		total += k
	}
	if total != n || len(txs) >= n {
		t.Fatalf("%d enrolments sent together went in %d transactions (%v)", n, len(txs), txs)
	}
	if err := w.cfg.View.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := w.cfg.View.Leaves(); got != before+n {
		t.Fatalf("%d leaves, want %d", got, before+n)
	}
	for i := range n {
		if _, err := w.cfg.View.MerkleProof(commitment(i)); err != nil {
			t.Fatalf("commitment %d: %v", i, err)
		}
	}
	// Already in the tree: refused, nothing sent.
	if r := w.staff("POST", "/admin/patients/b8/enrol", map[string]string{"commitment": zkhash.Hex(commitment(3))}); r.status != 409 || !strings.Contains(string(r.body), "already enrolled") {
		t.Fatalf("an enrolled commitment again: %d %s", r.status, r.body)
	}
	if got := w.cfg.View.Leaves(); got != before+n {
		t.Fatalf("a refused enrolment changed the tree: %d leaves", got)
	}
}
