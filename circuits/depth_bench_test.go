package circuits

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"

	"github.com/medrec-zk/medrec/zkhash"
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ownershipAt is Ownership over a tree of len(Siblings) levels.
type ownershipAt struct {
	Secret, LeafIndex        frontend.Variable
	Siblings                 []frontend.Variable
	Root, Scope, Tag, Signal frontend.Variable `gnark:",public"`
}

func (c *ownershipAt) Define(api frontend.API) error {
	return ownership(api, c.Secret, c.LeafIndex, c.Siblings, c.Root, c.Scope, c.Tag, c.Signal)
}

// BenchmarkOwnershipDepth proves Ownership at the registry's depth (20) and
// at the depths a nation's registry needs (docs/adr/0002-registry-depth.md),
// with throwaway keys (groth16.DummySetup: proving costs what it costs with
// a ceremony's keys). It reports the constraints, the proving time and the
// CPU time per proof.
func BenchmarkOwnershipDepth(b *testing.B) {
	for _, depth := range []int{20, 24, 30, 32} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			ccs, err := frontend.Compile(field, r1cs.NewBuilder, &ownershipAt{Siblings: make([]frontend.Variable, depth)})
			if err != nil {
				b.Fatal(err)
			}
			pk, err := groth16.DummySetup(ccs)
			if err != nil {
				b.Fatal(err)
			}
			// A leaf at the last index of the tree, random siblings.
			secret := zkhash.FromUint64(7)
			index := uint64(1)<<depth - 1
			w := &ownershipAt{Secret: secret, LeafIndex: index, Siblings: make([]frontend.Variable, depth),
				Scope: 3, Signal: 11}
			node := zkhash.Hash(zkhash.DomainCommit, secret)
			for l := 0; l < depth; l++ {
				var s fr.Element
				s.SetRandom()
				w.Siblings[l] = s
				if index>>l&1 == 1 {
					node = zkhash.Hash(zkhash.DomainNode, s, node)
				} else {
					node = zkhash.Hash(zkhash.DomainNode, node, s)
				}
			}
			w.Root = node
			w.Tag = zkhash.Hash(zkhash.DomainTag, secret, zkhash.FromUint64(3))
			full, err := frontend.NewWitness(w, field)
			if err != nil {
				b.Fatal(err)
			}
			cpu0 := cpuTime()
			for b.Loop() {
				if _, err := groth16.Prove(ccs, pk, full); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ccs.GetNbConstraints()), "constraints")
			// CPU time per proof: what the proof costs, less sensitive than
			// the wall time to whatever else runs on the machine.
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}
