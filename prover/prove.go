package prover

import (
	"errors"
	"fmt"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/backend/groth16"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/consensys/gnark/backend/witness"
	"github.com/consensys/gnark/frontend"

	"github.com/medrec-zk/medrec/circuits"
)

// Prover proves and verifies the MedRec-ZK circuits with one key set.
type Prover struct {
	keys *KeySet
}

// New returns a prover over ks.
func New(ks *KeySet) *Prover { return &Prover{keys: ks} }

// KeySet returns the keys in use.
func (p *Prover) KeySet() *KeySet { return p.keys }

func (p *Prover) prove(c Circuit, assignment frontend.Circuit) (Proof, error) {
	k, err := p.keys.Keys(c)
	if err != nil {
		return Proof{}, err
	}
	if k.PK == nil {
		return Proof{}, ErrNoProvingKey
	}
	w, err := frontend.NewWitness(assignment, ecc.BN254.ScalarField())
	if err != nil {
		return Proof{}, fmt.Errorf("prover: %s witness: %w", c, err)
	}
	proof, err := groth16.Prove(k.Compiled.CS, k.PK, w)
	if err != nil {
		// The solver fails on an unsatisfied constraint: the witness is wrong.
		return Proof{}, fmt.Errorf("%w: %s: %v", ErrWitness, c, err)
	}
	return encodeProof(proof.(*groth16bn254.Proof)), nil
}

func (p *Prover) verify(c Circuit, proof Proof, public []fr.Element) error {
	k, err := p.keys.Keys(c)
	if err != nil {
		return err
	}
	g, err := proof.decode()
	if err != nil {
		return err
	}
	w, err := witness.New(ecc.BN254.ScalarField())
	if err != nil {
		return err
	}
	values := make(chan any, len(public))
	for _, v := range public {
		values <- v
	}
	close(values)
	if err := w.Fill(len(public), 0, values); err != nil {
		return fmt.Errorf("prover: %s public witness: %w", c, err)
	}
	if err := groth16.Verify(g, k.VK, w); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidProof, c, err)
	}
	return nil
}

// ProveOwnership proves an Ownership witness and returns the proof and the
// public inputs it proves.
func (p *Prover) ProveOwnership(w circuits.OwnershipWitness) (Proof, circuits.OwnershipPublic, error) {
	if err := w.Check(); err != nil {
		return Proof{}, circuits.OwnershipPublic{}, errors.Join(ErrWitness, err)
	}
	proof, err := p.prove(Ownership, w.Assignment())
	return proof, w.Public(), err
}

// VerifyOwnership verifies an Ownership proof against its public inputs.
func (p *Prover) VerifyOwnership(proof Proof, pub circuits.OwnershipPublic) error {
	return p.verify(Ownership, proof, pub.Inputs())
}

// ProveEntitlement proves an Entitlement witness.
func (p *Prover) ProveEntitlement(w circuits.EntitlementWitness) (Proof, circuits.EntitlementPublic, error) {
	proof, err := p.prove(Entitlement, w.Assignment())
	return proof, w.Public(), err
}

// VerifyEntitlement verifies an Entitlement proof against its public inputs.
func (p *Prover) VerifyEntitlement(proof Proof, pub circuits.EntitlementPublic) error {
	return p.verify(Entitlement, proof, pub.Inputs())
}

// ProveInsertion proves a batch insertion: a, from circuits.InsertionWitness
// (or a gateway's stored tree). It needs the key set's insertion keys.
func (p *Prover) ProveInsertion(a *circuits.Insertion) (Proof, error) {
	return p.prove(Insertion, a)
}

// VerifyInsertion verifies a batch-insertion proof against its public inputs.
func (p *Prover) VerifyInsertion(proof Proof, pub circuits.InsertionPublic) error {
	return p.verify(Insertion, proof, pub.Inputs())
}
