package prover

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/constraint"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/frontend/cs/r1cs"

	"github.com/medrec-zk/medrec/circuits"
)

// Circuit names a circuit of package circuits.
type Circuit string

// The circuits.
const (
	Ownership   Circuit = "ownership"
	Entitlement Circuit = "entitlement"
	// Insertion is the gateways' batch-insertion circuit. Its keys are
	// optional in a key set (its domain is 2^17: a proving key of tens of MB,
	// made where the network is set up, not kept in git; ADR 0002): a
	// network without them enrols by the registry's frontier.
	Insertion Circuit = "insertion"
)

// Circuits lists the circuits every key set holds, in a fixed order: the
// patients' and viewers' circuits, whose verifying keys the agent registry
// records.
func Circuits() []Circuit { return []Circuit{Ownership, Entitlement} }

// OptionalCircuits lists the circuits a key set may hold.
func OptionalCircuits() []Circuit { return []Circuit{Insertion} }

func (c Circuit) definition() (frontend.Circuit, error) {
	switch c {
	case Ownership:
		return &circuits.Ownership{}, nil
	case Entitlement:
		return &circuits.Entitlement{}, nil
	case Insertion:
		return &circuits.Insertion{}, nil
	}
	return nil, fmt.Errorf("%q: %w", string(c), ErrUnknownCircuit)
}

// Compiled is a compiled circuit and the digest of its constraint system.
type Compiled struct {
	Circuit Circuit
	CS      constraint.ConstraintSystem
	// Digest is the SHA-256 of the serialised constraint system: keys are
	// accepted for a circuit only if they were made for this digest.
	Digest string
}

// Domain returns the FFT domain size Groth16 uses for the circuit.
func (c *Compiled) Domain() uint64 { return ecc.NextPowerOfTwo(uint64(c.CS.GetNbConstraints())) }

var compiled sync.Map // Circuit → func() (*Compiled, error)

// Compile compiles the circuit once per process and returns it.
func Compile(c Circuit) (*Compiled, error) {
	f, _ := compiled.LoadOrStore(c, sync.OnceValues(func() (*Compiled, error) { return compile(c) }))
	return f.(func() (*Compiled, error))()
}

func compile(c Circuit) (*Compiled, error) {
	def, err := c.definition()
	if err != nil {
		return nil, err
	}
	cs, err := frontend.Compile(ecc.BN254.ScalarField(), r1cs.NewBuilder, def)
	if err != nil {
		return nil, fmt.Errorf("prover: compile %s: %w", c, err)
	}
	var buf bytes.Buffer
	if _, err := cs.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("prover: serialise %s: %w", c, err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return &Compiled{Circuit: c, CS: cs, Digest: hex.EncodeToString(sum[:])}, nil
}
