package contracts

import (
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts/bindings"
)

// Backend is what deploying and transacting need from a chain: the v2 binding
// backend plus receipts. An ethclient.Client and a simulated backend's client
// both satisfy it.
type Backend interface {
	bind.ContractBackend
	bind.DeployBackend
	ChainID(ctx context.Context) (*big.Int, error)
}

// Provider is an initial provider of a new network.
type Provider struct {
	Authority  common.Address `json:"authority"`
	Gateway    common.Address `json:"gateway"`
	Name       string         `json:"name"`
	GatewayURL string         `json:"gatewayURL"`
}

// Deployment records where the MedRec-ZK contracts of one network live; every
// component finds the contracts through it.
type Deployment struct {
	ChainID             *big.Int       `json:"chainId"`
	Block               uint64         `json:"block"` // first block to scan for events
	AgentRegistry       common.Address `json:"agentRegistry"`
	PatientRegistry     common.Address `json:"patientRegistry"`
	Relationships       common.Address `json:"relationships"`
	Anchors             common.Address `json:"anchors"`
	OwnershipVerifier   common.Address `json:"ownershipVerifier"`
	EntitlementVerifier common.Address `json:"entitlementVerifier"`
	// InsertionVerifier is the batch-insertion verifier of a registry whose
	// gateways enrol with proofs (PatientRegistry.enrolProven); zero for one
	// that inserts by its frontier (enrol).
	InsertionVerifier common.Address `json:"insertionVerifier,omitempty"`
}

// Verifiers is the creation bytecode of the Groth16 verifier contracts a
// network deploys. It must be compiled from the keys whose registry hash
// the AgentRegistry records (package contracts/verifiers compiles it from
// any key set); DevVerifiers is the bindings' code, from the dev keys.
// Insertion is optional: with it, the patient registry takes proven batches
// only (enrolProven); without, frontier batches only (enrol).
type Verifiers struct {
	Ownership   []byte
	Entitlement []byte
	Insertion   []byte
	// InsertionKeyHash is prover.VerifyingKeyHash of the key Insertion was
	// compiled from: the patient registry records it for auditors.
	InsertionKeyHash [32]byte
}

// DevVerifiers returns the verifiers compiled from the dev ceremony's keys
// (prover.DevKeys), as generated into the bindings by `make generate`.
func DevVerifiers() Verifiers {
	return Verifiers{
		Ownership:   common.FromHex(bindings.OwnershipVerifierMetaData.Bin),
		Entitlement: common.FromHex(bindings.EntitlementVerifierMetaData.Bin),
	}
}

// Deployment order: the registry is told, in its constructor, the addresses
// of the contracts deployed after it (CREATE addresses follow from the
// deployer's nonce), so the set is linked without any admin step.
const (
	slotOwnershipVerifier = iota
	slotEntitlementVerifier
	slotAgentRegistry
	slotPatientRegistry
	slotRelationships
	slotAnchors
	slotInsertionVerifier // only when Verifiers.Insertion is set
	slots
)

// Deploy sends the six deployment transactions of a new network (seven with
// an insertion verifier) from auth, with consecutive nonces, and returns
// the addresses they will have and the transactions. Call Wait once they
// are mined. The registry records
// verifyingKeyHash (prover.KeySet.RegistryHash); v must be the verifiers
// compiled from those same keys, or no proof made with them will verify.
func Deploy(ctx context.Context, b Backend, auth *bind.TransactOpts, providers []Provider, verifyingKeyHash [32]byte, v Verifiers) (*Deployment, []*types.Transaction, error) {
	if len(providers) == 0 {
		return nil, nil, errors.New("contracts: a network needs at least one provider")
	}
	if len(v.Ownership) == 0 || len(v.Entitlement) == 0 {
		return nil, nil, errors.New("contracts: no verifier bytecode to deploy")
	}
	if len(v.Insertion) > 0 && v.InsertionKeyHash == ([32]byte{}) {
		return nil, nil, errors.New("contracts: an insertion verifier needs its key's hash, for the registry to record")
	}
	chainID, err := b.ChainID(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("contracts: chain id: %w", err)
	}
	nonce, err := b.PendingNonceAt(ctx, auth.From)
	if err != nil {
		return nil, nil, fmt.Errorf("contracts: nonce of %s: %w", auth.From, err)
	}
	n := slotInsertionVerifier
	if len(v.Insertion) > 0 {
		n = slots
	} else {
		v.InsertionKeyHash = [32]byte{} // no verifier: the registry records no key
	}
	var addr [slots]common.Address
	for i := range n {
		addr[i] = crypto.CreateAddress(auth.From, nonce+uint64(i))
	}
	d := &Deployment{
		ChainID:             chainID,
		AgentRegistry:       addr[slotAgentRegistry],
		PatientRegistry:     addr[slotPatientRegistry],
		Relationships:       addr[slotRelationships],
		Anchors:             addr[slotAnchors],
		OwnershipVerifier:   addr[slotOwnershipVerifier],
		EntitlementVerifier: addr[slotEntitlementVerifier],
		InsertionVerifier:   addr[slotInsertionVerifier], // zero unless deployed
	}
	if head, err := b.HeaderByNumber(ctx, nil); err == nil {
		d.Block = head.Number.Uint64()
	}

	initial := make([]bindings.AgentRegistryInitialProvider, len(providers))
	for i, p := range providers {
		initial[i] = bindings.AgentRegistryInitialProvider{Authority: p.Authority, Gateway: p.Gateway, Name: p.Name, GatewayURL: p.GatewayURL}
	}
	links := bindings.AgentRegistryLinks{
		OwnershipVerifier:   d.OwnershipVerifier,
		EntitlementVerifier: d.EntitlementVerifier,
		PatientRegistry:     d.PatientRegistry,
		Relationships:       d.Relationships,
		Anchors:             d.Anchors,
	}
	agentArgs := bindings.NewAgentRegistry().PackConstructor(initial, verifyingKeyHash, links)
	steps := [slots]struct {
		name string
		bin  []byte
		args []byte
	}{
		slotOwnershipVerifier:   {"OwnershipVerifier", v.Ownership, nil},
		slotEntitlementVerifier: {"EntitlementVerifier", v.Entitlement, nil},
		slotAgentRegistry:       {"AgentRegistry", common.FromHex(bindings.AgentRegistryMetaData.Bin), agentArgs},
		slotPatientRegistry:     {"PatientRegistry", common.FromHex(bindings.PatientRegistryMetaData.Bin), bindings.NewPatientRegistry().PackConstructor(d.AgentRegistry, d.InsertionVerifier, v.InsertionKeyHash)},
		slotRelationships:       {"Relationships", common.FromHex(bindings.RelationshipsMetaData.Bin), bindings.NewRelationships().PackConstructor(d.AgentRegistry, d.PatientRegistry, d.OwnershipVerifier)},
		slotAnchors:             {"Anchors", common.FromHex(bindings.AnchorsMetaData.Bin), bindings.NewAnchors().PackConstructor(d.AgentRegistry)},
		slotInsertionVerifier:   {"InsertionVerifier", v.Insertion, nil},
	}
	txs := make([]*types.Transaction, 0, n)
	for i, s := range steps[:n] {
		opts := *auth
		opts.Context = ctx
		opts.Nonce = new(big.Int).SetUint64(nonce + uint64(i))
		got, tx, err := bind.DeployContract(&opts, s.bin, b, s.args)
		if err != nil {
			return nil, nil, fmt.Errorf("contracts: deploy %s: %w", s.name, err)
		}
		if got != addr[i] {
			return nil, nil, fmt.Errorf("contracts: %s deployed at %s, expected %s (was the deployer used concurrently?)", s.name, got, addr[i])
		}
		txs = append(txs, tx)
	}
	return d, txs, nil
}

// Wait waits for the deployment transactions and checks that each succeeded
// and left code at its address.
func (d *Deployment) Wait(ctx context.Context, b Backend, txs []*types.Transaction) error {
	for _, tx := range txs {
		r, err := bind.WaitMined(ctx, b, tx.Hash())
		if err != nil {
			return fmt.Errorf("contracts: wait for %s: %w", tx.Hash(), err)
		}
		if r.Status != types.ReceiptStatusSuccessful {
			return fmt.Errorf("contracts: deployment transaction %s failed (gas used %d)", tx.Hash(), r.GasUsed)
		}
	}
	return d.Check(ctx, b)
}
