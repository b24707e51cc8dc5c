package contracts

import (
	"context"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts/bindings"
)

// Client sends the MedRec-ZK transactions and reads contract state of one
// deployment. Refusals come back as *RevertError naming the contract's custom
// error; a refused call sends nothing (the gas estimate fails first).
type Client struct {
	b Backend
	d *Deployment

	agents                              *bindings.AgentRegistry
	patients                            *bindings.PatientRegistry
	rels                                *bindings.Relationships
	anchors                             *bindings.Anchors
	agentsC, patientsC, relsC, anchorsC *bind.BoundContract
}

// NewClient binds the deployment d on backend b.
func NewClient(b Backend, d *Deployment) *Client {
	c := &Client{
		b: b, d: d,
		agents: bindings.NewAgentRegistry(), patients: bindings.NewPatientRegistry(),
		rels: bindings.NewRelationships(), anchors: bindings.NewAnchors(),
	}
	c.agentsC = c.agents.Instance(b, d.AgentRegistry)
	c.patientsC = c.patients.Instance(b, d.PatientRegistry)
	c.relsC = c.rels.Instance(b, d.Relationships)
	c.anchorsC = c.anchors.Instance(b, d.Anchors)
	return c
}

// Deployment returns the deployment the client is bound to.
func (c *Client) Deployment() *Deployment { return c.d }

// Backend returns the chain connection.
func (c *Client) Backend() Backend { return c.b }

func (c *Client) transact(ctx context.Context, auth *bind.TransactOpts, bc *bind.BoundContract, data []byte) (*types.Transaction, error) {
	opts := *auth
	opts.Context = ctx
	tx, err := bind.Transact(bc, &opts, data)
	if err != nil {
		return nil, DecodeRevert(err)
	}
	return tx, nil
}

// Wait waits until tx is mined and checks that it succeeded.
func (c *Client) Wait(ctx context.Context, tx *types.Transaction) (*types.Receipt, error) {
	r, err := bind.WaitMined(ctx, c.b, tx.Hash())
	if err != nil {
		return nil, fmt.Errorf("contracts: wait for %s: %w", tx.Hash(), err)
	}
	if r.Status != types.ReceiptStatusSuccessful {
		return r, fmt.Errorf("contracts: transaction %s failed", tx.Hash())
	}
	return r, nil
}

// Enrol inserts identity commitments, in order, at the registry's next
// leaves: one batch, 1 to MaxEnrolBatch (auth: an active provider's gateway).
func (c *Client) Enrol(ctx context.Context, auth *bind.TransactOpts, commitments ...*big.Int) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.patientsC, c.patients.PackEnrol(commitments))
}

// MaxEnrolBatch is the most commitments one Enrol may insert
// (PatientRegistry.MAX_BATCH).
const MaxEnrolBatch = 256

// EnrolProven inserts identity commitments, in order, at the registry's
// next leaves with a batch-insertion proof (prover.ProveInsertion) that
// newRoot is the tree's root after them: one batch, 1 to MaxProvenBatch, in
// a registry deployed with an insertion verifier (auth: an active
// provider's gateway).
func (c *Client) EnrolProven(ctx context.Context, auth *bind.TransactOpts, commitments []*big.Int, newRoot *big.Int, proof []byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.patientsC, c.patients.PackEnrolProven(commitments, newRoot, proof))
}

// MaxProvenBatch is the most commitments one EnrolProven may insert
// (PatientRegistry.PROVEN_BATCH, circuits.InsertionSize).
const MaxProvenBatch = 128

// Open opens relationship tag at provider for owner (auth: that provider's gateway).
func (c *Client) Open(ctx context.Context, auth *bind.TransactOpts, tag *big.Int, provider uint32, owner common.Address, root *big.Int, proof []byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.relsC, c.rels.PackOpen(tag, provider, owner, root, proof))
}

// Rotate replaces a relationship's owner with a fresh proof (auth: any relayer).
func (c *Client) Rotate(ctx context.Context, auth *bind.TransactOpts, tag *big.Int, newOwner common.Address, root *big.Int, proof []byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.relsC, c.rels.PackRotate(tag, newOwner, root, proof))
}

// Grant submits an owner-signed grant (auth: any relayer).
func (c *Client) Grant(ctx context.Context, auth *bind.TransactOpts, g GrantRequest, sig []byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.relsC, c.rels.PackGrant(g, sig))
}

// Revoke submits an owner-signed revocation (auth: any relayer).
func (c *Client) Revoke(ctx context.Context, auth *bind.TransactOpts, r RevokeRequest, sig []byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.relsC, c.rels.PackRevoke(r, sig))
}

// Anchor anchors a batch of a provider's access log and its records-state root
// (auth: the provider's gateway).
func (c *Client) Anchor(ctx context.Context, auth *bind.TransactOpts, logRoot [32]byte, fromSeq, count uint64, stateRoot [32]byte) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.anchorsC, c.anchors.PackAnchor(logRoot, fromSeq, count, stateRoot))
}

// ProposeAdd proposes a new provider (auth: an active provider's authority or gateway).
func (c *Client) ProposeAdd(ctx context.Context, auth *bind.TransactOpts, authority, gateway common.Address, name, gatewayURL string) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.agentsC, c.agents.PackProposeAdd(authority, gateway, name, gatewayURL))
}

// ProposeRemove proposes removing a provider.
func (c *Client) ProposeRemove(ctx context.Context, auth *bind.TransactOpts, id uint32) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.agentsC, c.agents.PackProposeRemove(id))
}

// Vote votes for a proposal.
func (c *Client) Vote(ctx context.Context, auth *bind.TransactOpts, proposal *big.Int) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.agentsC, c.agents.PackVote(proposal))
}

// Execute carries out a proposal that has a strict majority of the providers
// active now but was not executed by its last vote (the active set shrank
// since). Anyone may send it.
func (c *Client) Execute(ctx context.Context, auth *bind.TransactOpts, proposal *big.Int) (*types.Transaction, error) {
	return c.transact(ctx, auth, c.agentsC, c.agents.PackExecute(proposal))
}

// --- reads ------------------------------------------------------------------------

func callAt[T any](ctx context.Context, bc *bind.BoundContract, data []byte, unpack func([]byte) (T, error)) (T, error) {
	v, err := bind.Call(bc, &bind.CallOpts{Context: ctx}, data, unpack)
	if err != nil {
		var zero T
		return zero, DecodeRevert(err)
	}
	return v, nil
}

// Relationship reads the relationship of tag (a zero owner: none).
func (c *Client) Relationship(ctx context.Context, tag *big.Int) (bindings.RelationshipsRelationship, error) {
	return callAt(ctx, c.relsC, c.rels.PackRelationship(tag), c.rels.UnpackRelationship)
}

// GrantOf reads a grant.
func (c *Client) GrantOf(ctx context.Context, tag *big.Int, kind uint8, grantee [32]byte) (GrantState, error) {
	return callAt(ctx, c.relsC, c.rels.PackGrantOf(tag, kind, grantee), c.rels.UnpackGrantOf)
}

// Root returns the patient registry's current root.
func (c *Client) Root(ctx context.Context) (*big.Int, error) {
	return callAt(ctx, c.patientsC, c.patients.PackRoot(), c.patients.UnpackRoot)
}

// IsKnownRoot reports whether proofs may be made against root.
func (c *Client) IsKnownRoot(ctx context.Context, root *big.Int) (bool, error) {
	return callAt(ctx, c.patientsC, c.patients.PackIsKnownRoot(root), c.patients.UnpackIsKnownRoot)
}

// Signers reads the authorities of the active providers.
func (c *Client) Signers(ctx context.Context) ([]common.Address, error) {
	return callAt(ctx, c.agentsC, c.agents.PackSigners(), c.agents.UnpackSigners)
}

// ActiveSigners is Signers, shaped as the chain package's SignerSource.
func (c *Client) ActiveSigners(ctx context.Context) ([]common.Address, error) { return c.Signers(ctx) }

// VerifyingKeyHash reads the ceremony's verifying-key hash.
func (c *Client) VerifyingKeyHash(ctx context.Context) ([32]byte, error) {
	return callAt(ctx, c.agentsC, c.agents.PackVerifyingKeyHash(), c.agents.UnpackVerifyingKeyHash)
}

// ProposalCount reads how many proposals were made (the newest has this id).
func (c *Client) ProposalCount(ctx context.Context) (*big.Int, error) {
	return callAt(ctx, c.agentsC, c.agents.PackProposalCount(), c.agents.UnpackProposalCount)
}

// AnchorHead reads how many batches provider anchored and the next log
// position the contract expects.
func (c *Client) AnchorHead(ctx context.Context, provider uint32) (batches, nextSeq uint64, err error) {
	out, err := callAt(ctx, c.anchorsC, c.anchors.PackLatest(provider), c.anchors.UnpackLatest)
	if err != nil {
		return 0, 0, err
	}
	return out.Batches, out.NextSeq, nil
}

// BatchHash reads the hash the contract keeps of one anchored batch.
func (c *Client) BatchHash(ctx context.Context, provider uint32, batch uint64) ([32]byte, error) {
	return callAt(ctx, c.anchorsC, c.anchors.PackBatchHash(provider, batch), c.anchors.UnpackBatchHash)
}

// AnchorBatchHash is the hash Anchors keeps of a batch:
// keccak256(abi.encode(logRoot, fromSeq, count, stateRoot)).
func AnchorBatchHash(logRoot [32]byte, fromSeq, count uint64, stateRoot [32]byte) [32]byte {
	return crypto.Keccak256Hash(logRoot[:], u64(fromSeq), u64(count), stateRoot[:])
}
