package contracts

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
)

// Governance, read: the AgentRegistry's members and the proposals that can
// still be voted for, all read at one block.

// Proposal kinds, as AgentRegistry.Kind.
const (
	KindAdd    uint8 = 1
	KindRemove uint8 = 2
)

// KindName names a proposal kind: "add" or "remove".
func KindName(kind uint8) string {
	switch kind {
	case KindAdd:
		return "add"
	case KindRemove:
		return "remove"
	}
	return fmt.Sprintf("kind %d", kind)
}

// Member is an active provider of the registry.
type Member struct {
	ID         uint32         `json:"id"`
	Name       string         `json:"name"`
	Authority  common.Address `json:"authority"`
	Gateway    common.Address `json:"gateway"`
	GatewayURL string         `json:"gateway_url"`
}

// OpenProposal is a proposal neither executed nor expired.
type OpenProposal struct {
	ID       uint64 `json:"id"`
	Kind     string `json:"kind"`     // "add" or "remove"
	Provider uint32 `json:"provider"` // remove: the provider to remove
	Proposer uint32 `json:"proposer"`
	// Add: the new provider.
	Authority  common.Address `json:"authority"`
	Gateway    common.Address `json:"gateway,omitzero"`
	Name       string         `json:"name,omitempty"`
	GatewayURL string         `json:"gateway_url,omitempty"`
	Deadline   time.Time      `json:"deadline"`
	Votes      uint32         `json:"votes"`  // of providers active now
	Voters     []uint32       `json:"voters"` // their ids
}

// Governance is the registry's governance state at one block.
type Governance struct {
	Block     uint64           `json:"block"`
	Members   []Member         `json:"members"`
	Needed    uint32           `json:"needed"` // votes that execute a proposal: a strict majority of the members
	Proposals []OpenProposal   `json:"proposals"`
	Signers   []common.Address `json:"signers"` // the members' authorities: the signer set Clique must follow
}

// Governance reads the members and the open proposals at the latest block.
// Proposals are read newest first and the scan stops at the first expired
// one: deadlines follow creation order, so every older one expired too.
func (c *Client) Governance(ctx context.Context) (*Governance, error) {
	head, err := c.b.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("contracts: head: %w", err)
	}
	opts := &bind.CallOpts{Context: ctx, BlockNumber: head.Number}
	g := &Governance{Block: head.Number.Uint64(), Members: []Member{}, Proposals: []OpenProposal{}, Signers: []common.Address{}}
	ids, err := callWith(opts, c.agentsC, c.agents.PackActiveProviders(), c.agents.UnpackActiveProviders)
	if err != nil {
		return nil, fmt.Errorf("contracts: active providers: %w", err)
	}
	for _, id := range ids {
		p, err := callWith(opts, c.agentsC, c.agents.PackProvider(id), c.agents.UnpackProvider)
		if err != nil {
			return nil, fmt.Errorf("contracts: provider %d: %w", id, err)
		}
		g.Members = append(g.Members, Member{ID: id, Name: p.Name, Authority: p.Authority, Gateway: p.Gateway, GatewayURL: p.GatewayURL})
		g.Signers = append(g.Signers, p.Authority)
	}
	g.Needed = uint32(len(ids))/2 + 1
	count, err := callWith(opts, c.agentsC, c.agents.PackProposalCount(), c.agents.UnpackProposalCount)
	if err != nil {
		return nil, fmt.Errorf("contracts: proposal count: %w", err)
	}
	for id := count.Uint64(); id >= 1; id-- {
		p, err := callWith(opts, c.agentsC, c.agents.PackProposal(new(big.Int).SetUint64(id)), c.agents.UnpackProposal)
		if err != nil {
			return nil, fmt.Errorf("contracts: proposal %d: %w", id, err)
		}
		if p.Deadline < head.Time {
			break
		}
		if p.Executed {
			continue
		}
		op := OpenProposal{
			ID: id, Kind: KindName(p.Kind), Proposer: p.Proposer,
			Authority: p.Authority, Gateway: p.Gateway, Name: p.Name, GatewayURL: p.GatewayURL,
			Deadline: time.Unix(int64(p.Deadline), 0).UTC(), Voters: []uint32{},
		}
		if p.Kind == KindRemove {
			op.Provider = p.Provider
			for _, m := range g.Members {
				if m.ID == p.Provider {
					op.Authority, op.Name = m.Authority, m.Name
				}
			}
		}
		for _, m := range g.Members {
			voted, err := callWith(opts, c.agentsC, c.agents.PackHasVoted(new(big.Int).SetUint64(id), m.ID), c.agents.UnpackHasVoted)
			if err != nil {
				return nil, fmt.Errorf("contracts: proposal %d: %w", id, err)
			}
			if voted {
				op.Voters = append(op.Voters, m.ID)
			}
		}
		op.Votes = uint32(len(op.Voters))
		g.Proposals = append(g.Proposals, op)
	}
	return g, nil
}

func callWith[T any](opts *bind.CallOpts, bc *bind.BoundContract, data []byte, unpack func([]byte) (T, error)) (T, error) {
	v, err := bind.Call(bc, opts, data, unpack)
	if err != nil {
		var zero T
		return zero, DecodeRevert(err)
	}
	return v, nil
}

// ProviderOfAuthority reads the registry id of the active provider whose
// authority is addr (0: none).
func (c *Client) ProviderOfAuthority(ctx context.Context, addr common.Address) (uint32, error) {
	return callAt(ctx, c.agentsC, c.agents.PackProviderOfAuthority(addr), c.agents.UnpackProviderOfAuthority)
}

// Outcome is what a governance transaction did, read from its receipt.
type Outcome struct {
	Proposal uint64 // the proposal voted for (made, for a proposal)
	Executed bool   // the vote reached a majority and the change is made
	Kind     uint8  // executed: KindAdd or KindRemove
	Provider uint32 // executed: the provider added or removed
}

// GovernanceOutcome reads the registry's Proposed, Voted and Executed events
// of a mined proposeAdd, proposeRemove or vote.
func (c *Client) GovernanceOutcome(r *types.Receipt) (Outcome, error) {
	var out Outcome
	found := false
	for _, l := range r.Logs {
		if l.Address != c.d.AgentRegistry {
			continue
		}
		if ev, err := c.agents.UnpackVotedEvent(l); err == nil {
			out.Proposal, found = ev.Proposal.Uint64(), true
		} else if ev, err := c.agents.UnpackExecutedEvent(l); err == nil {
			out.Proposal, out.Executed, out.Kind, out.Provider, found = ev.Proposal.Uint64(), true, ev.Kind, ev.Provider, true
		}
	}
	if !found {
		return out, errors.New("contracts: the transaction voted for no proposal")
	}
	return out, nil
}
