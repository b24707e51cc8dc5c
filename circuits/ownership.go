package circuits

import (
	"github.com/consensys/gnark/frontend"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// Ownership proves, without revealing which registered patient is proving:
//
//  1. C = H(D_commit; Secret) is the leaf at LeafIndex of the patient-registry
//     tree whose root is Root (membership: the anonymity set is every
//     registered patient);
//  2. Tag = H(D_tag; Secret, Scope): the tag is this patient's at provider Scope;
//  3. Signal is bound to the proof: the proof verifies for this Signal only.
//
// Soundness guards: LeafIndex is decomposed into exactly merkle.Depth bits, so
// the path cannot wrap around; Signal enters a multiplication constraint (a
// public input in no constraint would verify with any value); domain tags are
// constants, so they cannot be chosen by the prover.
type Ownership struct {
	// Secret inputs.
	Secret    frontend.Variable
	LeafIndex frontend.Variable
	Siblings  [merkle.Depth]frontend.Variable

	// Public inputs, in the verifier's order.
	Root   frontend.Variable `gnark:",public"`
	Scope  frontend.Variable `gnark:",public"`
	Tag    frontend.Variable `gnark:",public"`
	Signal frontend.Variable `gnark:",public"`
}

// Define declares the circuit's constraints.
func (c *Ownership) Define(api frontend.API) error {
	return ownership(api, c.Secret, c.LeafIndex, c.Siblings[:], c.Root, c.Scope, c.Tag, c.Signal)
}

// ownership declares Ownership's constraints for a tree of len(siblings)
// levels (merkle.Depth for Ownership; other depths are measured in
// BenchmarkOwnershipDepth).
func ownership(api frontend.API, secret, leafIndex frontend.Variable, siblings []frontend.Variable, root, scope, tag, signal frontend.Variable) error {
	h, err := newHasher(api)
	if err != nil {
		return err
	}
	commitment := h.hash(zkhash.DomainCommit, secret)
	api.AssertIsEqual(h.merkleRoot(commitment, leafIndex, siblings), root)
	api.AssertIsEqual(h.hash(zkhash.DomainTag, secret, scope), tag)
	bindSignal(api, signal)
	return nil
}

// bindSignal puts a public value into a multiplication constraint (as
// Semaphore squares its message): a public input that appears in no
// constraint has a zero verifying-key term, so the Groth16 verifier would
// accept any value there. prover's TestSignalIsBound proves the binding holds.
func bindSignal(api frontend.API, v frontend.Variable) {
	api.Mul(v, v)
}
