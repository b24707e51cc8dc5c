package contracts

import (
	"flag"
	"math/big"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

var enrolN = flag.Int("enrol-n", 1<<14, "commitments BenchmarkEnrolBatches enrols (1000000 for issue 16's figure)")

// BenchmarkEnrolBatches enrols -enrol-n commitments on the simulated chain
// in batches of MaxEnrolBatch, as a gateway's queue does under load, and
// reports the gas per enrolment (as mined, calldata as sent) and the time
// per batch (the EVM's and the simulated chain's: signing, executing,
// sealing a block). The tree's final root is checked against the same
// leaves inserted in Go.
func BenchmarkEnrolBatches(b *testing.B) {
	n := min(*enrolN, merkle.Capacity)
	for range b.N {
		b.StopTimer()
		e := newEnv(b, 1)
		gw := e.providers[0].gateway
		leaves := make([]fr.Element, n)
		for i := range leaves {
			leaves[i].SetUint64(uint64(i + 1))
			leaves[i] = zkhash.Commitment(leaves[i])
		}
		b.StartTimer()
		var gas uint64
		var batches int
		start := time.Now()
		for i := 0; i < n; i += MaxEnrolBatch {
			k := min(MaxEnrolBatch, n-i)
			batch := make([]*big.Int, k)
			for j := range batch {
				batch[j] = zkhash.Big(leaves[i+j])
			}
			gas += e.mustSend(gw, e.patientsC, e.patients.PackEnrol(batch)).GasUsed
			batches++
		}
		elapsed := time.Since(start)
		b.StopTimer()
		tree, err := merkle.New(leaves)
		if err != nil {
			b.Fatal(err)
		}
		if got := e.root(); got.Cmp(zkhash.Big(tree.Root())) != 0 {
			b.Fatalf("after %d enrolments the registry's root is %#x, not the tree's %#x", n, got, zkhash.Big(tree.Root()))
		}
		b.ReportMetric(float64(gas)/float64(n), "gas/enrolment")
		b.ReportMetric(float64(elapsed.Milliseconds())/float64(batches), "ms/batch")
		b.ReportMetric(float64(n), "enrolments")
		b.ReportMetric(float64(merkle.Capacity), "capacity")
		b.StartTimer()
	}
}
