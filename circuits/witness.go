package circuits

import (
	"fmt"
	"math/big"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// OwnershipPublic holds the Ownership circuit's public inputs.
type OwnershipPublic struct {
	Root, Scope, Tag, Signal fr.Element
}

// Inputs returns the public inputs in the verifier's order.
func (p OwnershipPublic) Inputs() []fr.Element { return []fr.Element{p.Root, p.Scope, p.Tag, p.Signal} }

// OwnershipWitness is everything needed to prove Ownership: the identity
// secret, its membership path, the provider and the signal to bind.
type OwnershipWitness struct {
	Secret   fr.Element
	Path     merkle.Proof
	Provider uint32
	Signal   fr.Element
}

// Public computes the public inputs the witness proves.
func (w OwnershipWitness) Public() OwnershipPublic {
	return OwnershipPublic{
		Root:   w.Path.Root(),
		Scope:  zkhash.FromUint64(uint64(w.Provider)),
		Tag:    zkhash.Tag(w.Secret, w.Provider),
		Signal: w.Signal,
	}
}

// Check reports whether the witness is consistent (its path starts at the
// secret's commitment) before any proving work is spent on it.
func (w OwnershipWitness) Check() error {
	if w.Path.Leaf != zkhash.Commitment(w.Secret) {
		return fmt.Errorf("%w: the path's leaf is not the commitment of this secret", ErrWitness)
	}
	if w.Path.Index >= merkle.Capacity {
		return fmt.Errorf("%w: leaf index %d outside the tree", ErrWitness, w.Path.Index)
	}
	return nil
}

// Assignment returns the full circuit assignment.
func (w OwnershipWitness) Assignment() *Ownership {
	pub := w.Public()
	a := &Ownership{
		Secret:    w.Secret,
		LeafIndex: w.Path.Index,
		Root:      pub.Root,
		Scope:     pub.Scope,
		Tag:       pub.Tag,
		Signal:    pub.Signal,
	}
	for i := range a.Siblings {
		a.Siblings[i] = w.Path.Siblings[i]
	}
	return a
}

// EntitlementPublic holds the Entitlement circuit's public inputs.
type EntitlementPublic struct {
	Grant, Tag, Challenge fr.Element
}

// Inputs returns the public inputs in the verifier's order.
func (p EntitlementPublic) Inputs() []fr.Element { return []fr.Element{p.Grant, p.Tag, p.Challenge} }

// EntitlementWitness is everything a viewer needs to prove Entitlement.
type EntitlementWitness struct {
	ViewerSecret fr.Element
	GrantSecret  fr.Element
	Tag          fr.Element
	Challenge    fr.Element
}

// Public computes the public inputs the witness proves.
func (w EntitlementWitness) Public() EntitlementPublic {
	return EntitlementPublic{
		Grant:     zkhash.Grant(zkhash.ViewerCommitment(w.ViewerSecret), w.Tag, w.GrantSecret),
		Tag:       w.Tag,
		Challenge: w.Challenge,
	}
}

// Assignment returns the full circuit assignment.
func (w EntitlementWitness) Assignment() *Entitlement {
	pub := w.Public()
	return &Entitlement{
		ViewerSecret: w.ViewerSecret,
		GrantSecret:  w.GrantSecret,
		Grant:        pub.Grant,
		Tag:          pub.Tag,
		Challenge:    pub.Challenge,
	}
}

// Action is what an Ownership proof authorises; it is part of the signal.
type Action uint8

// Actions bound by Ownership proofs.
const (
	ActionOpen   Action = 1 // open a relationship with a first delegate
	ActionRotate Action = 2 // replace the relationship's delegate
	// ActionLocator files a sealed locator note at a gateway (off chain,
	// with Scope LocatorScope; LocatorSignal).
	ActionLocator Action = 3
)

// LocatorScope is the Scope of the Ownership proofs that file a patient's
// locator note. No provider has id 0 (the agent registry numbers them
// from 1), so the locator tag H(D_tag; s, 0) is no provider's tag, and a
// locator proof is no claim anywhere, nor a claim a locator proof.
const LocatorScope = 0

// LocatorSignal computes the signal of a proof that files note under the
// patient's locator tag:
//
//	uint256(keccak256(abi.encode(uint8 3, bytes32 keccak256(note),
//	                             uint256 chainId, address registry))) mod r
//
// so the proof files this note only, on one network (its patient registry).
func LocatorSignal(note []byte, chainID *big.Int, registry common.Address) fr.Element {
	var buf [4 * 32]byte
	buf[31] = byte(ActionLocator)
	copy(buf[32:64], crypto.Keccak256(note))
	chainID.FillBytes(buf[64:96])
	copy(buf[96+12:128], registry[:])
	var e fr.Element
	e.SetBigInt(new(big.Int).SetBytes(crypto.Keccak256(buf[:]))) // reduces modulo r
	return e
}

// OwnershipSignal computes the signal an Ownership proof binds:
//
//	uint256(keccak256(abi.encode(uint8 action, address delegate, uint64 counter,
//	                             uint256 chainId, address contract))) mod r
//
// so a proof authorises one action, for one delegate, at one rotation counter,
// on one chain and one contract; it cannot be replayed elsewhere.
func OwnershipSignal(action Action, delegate common.Address, counter uint64, chainID *big.Int, contract common.Address) fr.Element {
	var buf [5 * 32]byte
	buf[31] = byte(action)
	copy(buf[32+12:64], delegate[:])
	new(big.Int).SetUint64(counter).FillBytes(buf[64:96])
	chainID.FillBytes(buf[96:128])
	copy(buf[128+12:160], contract[:])
	var e fr.Element
	e.SetBigInt(new(big.Int).SetBytes(crypto.Keccak256(buf[:]))) // reduces modulo r
	return e
}

// ParseOwnershipPublic builds Ownership public inputs from untrusted values
// (a request, a transaction), refusing anything but exactly four canonical
// field elements: a value ≥ r would alias a smaller one inside the circuit.
func ParseOwnershipPublic(in []*big.Int) (OwnershipPublic, error) {
	e, err := parseInputs(in, 4)
	if err != nil {
		return OwnershipPublic{}, err
	}
	return OwnershipPublic{Root: e[0], Scope: e[1], Tag: e[2], Signal: e[3]}, nil
}

// ParseEntitlementPublic is ParseOwnershipPublic for Entitlement.
func ParseEntitlementPublic(in []*big.Int) (EntitlementPublic, error) {
	e, err := parseInputs(in, 3)
	if err != nil {
		return EntitlementPublic{}, err
	}
	return EntitlementPublic{Grant: e[0], Tag: e[1], Challenge: e[2]}, nil
}

func parseInputs(in []*big.Int, n int) ([]fr.Element, error) {
	if len(in) != n {
		return nil, fmt.Errorf("%w: %d public inputs, want %d", ErrPublicInputs, len(in), n)
	}
	out := make([]fr.Element, n)
	for i, x := range in {
		e, err := zkhash.FromBig(x)
		if err != nil {
			return nil, fmt.Errorf("%w: input %d: %v", ErrPublicInputs, i, err)
		}
		out[i] = e
	}
	return out, nil
}
