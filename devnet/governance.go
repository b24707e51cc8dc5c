package devnet

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
)

// Governance on a local network: the AgentRegistry decides the providers,
// and the authorities' mirrors make Clique's signer set follow it.

// AuthorityKey returns provider p's authority key: the Clique signer, which
// also signs the provider's governance transactions.
func AuthorityKey(n *chain.Network, p int) (*ecdsa.PrivateKey, error) {
	for _, ns := range n.State().Nodes {
		if ns.Provider == p {
			return Key(n, ns.AuthorityKey)
		}
	}
	return nil, fmt.Errorf("devnet: no provider %d", p)
}

// DialRunning connects to the first running node that answers, trying
// provider p's first when p > 0.
func DialRunning(ctx context.Context, n *chain.Network, p int) (*ethclient.Client, chain.NodeState, error) {
	nodes := n.State().Nodes
	slices.SortStableFunc(nodes, func(a, b chain.NodeState) int {
		if a.Provider == p {
			return -1
		} else if b.Provider == p {
			return 1
		}
		return 0
	})
	last := errors.New("no node is running (`medrec network up`)")
	for _, ns := range nodes {
		if !n.Running(ns.Provider) {
			continue
		}
		c, err := ethclient.DialContext(ctx, ns.RPC)
		if err != nil {
			last = err
			continue
		}
		if _, err := c.BlockNumber(ctx); err != nil {
			c.Close()
			last = err
			continue
		}
		return c, ns, nil
	}
	return nil, chain.NodeState{}, fmt.Errorf("devnet: %w", last)
}

// registrySigners is the AgentRegistry's signer set, read at every call
// from a running node of the network.
type registrySigners struct {
	n *chain.Network
	d *contracts.Deployment
}

// RegistrySigners returns the SignerSource of a deployed local network: the
// authorities of the registry's active providers, read afresh at every call
// from the first running node that answers.
func RegistrySigners(n *chain.Network, d *contracts.Deployment) chain.SignerSource {
	return registrySigners{n, d}
}

func (s registrySigners) ActiveSigners(ctx context.Context) ([]common.Address, error) {
	ec, _, err := DialRunning(ctx, s.n, 0)
	if err != nil {
		return nil, err
	}
	defer ec.Close()
	return contracts.NewClient(ec, s.d).Signers(ctx)
}

// SyncSignerFlags records in network.json which nodes the registry wants
// sealing (NodeState.Signer), so that what reads network.json agrees with
// the registry.
func SyncSignerFlags(n *chain.Network, signers []common.Address) error {
	for _, ns := range n.State().Nodes {
		if want := slices.Contains(signers, ns.Authority); want != ns.Signer {
			if err := n.SetSigner(ns.Provider, want); err != nil {
				return err
			}
		}
	}
	return nil
}

// Admit has provider p, a node of the network, admitted through the
// registry: the first active provider proposes it (named "Provider p", its
// gateway on a free loopback port) and the others vote, one after the other,
// until a majority has carried it out. An open proposal for p's authority is
// voted for instead of making another. It returns the proposal's id (0: p
// was already active). Clique follows once the authorities' mirrors have
// voted (chain.Network.Converge with RegistrySigners).
func Admit(ctx context.Context, n *chain.Network, p int) (uint64, error) {
	var target *chain.NodeState
	st := n.State()
	for i := range st.Nodes {
		if st.Nodes[i].Provider == p {
			target = &st.Nodes[i]
		}
	}
	if target == nil {
		return 0, fmt.Errorf("devnet: %w %d", chain.ErrUnknownProvider, p)
	}
	d, err := LoadDeployment(n.Dir())
	if err != nil {
		return 0, fmt.Errorf("devnet: %w (is the network up? `medrec network up` deploys the contracts)", err)
	}
	ec, _, err := DialRunning(ctx, n, 0)
	if err != nil {
		return 0, err
	}
	defer ec.Close()
	c := contracts.NewClient(ec, d)
	g, err := c.Governance(ctx)
	if err != nil {
		return 0, err
	}
	if slices.Contains(g.Signers, target.Authority) {
		return 0, nil
	}
	// The members' keys, by authority: every member of a local network is one of its nodes.
	keyOf := func(m contracts.Member) (*bind.TransactOpts, error) {
		for _, ns := range st.Nodes {
			if ns.Authority == m.Authority {
				k, err := Key(n, ns.AuthorityKey)
				if err != nil {
					return nil, err
				}
				return bind.NewKeyedTransactor(k, d.ChainID), nil
			}
		}
		return nil, fmt.Errorf("devnet: registry member %d (%s) is no node of this network", m.ID, m.Authority)
	}
	var proposal uint64
	var voted []uint32
	for _, op := range g.Proposals {
		if op.Kind == "add" && op.Authority == target.Authority {
			proposal, voted = op.ID, op.Voters
			break
		}
	}
	for _, m := range g.Members {
		if slices.Contains(voted, m.ID) {
			continue
		}
		auth, err := keyOf(m)
		if err != nil {
			return proposal, err
		}
		var tx *types.Transaction
		if proposal == 0 {
			var port int
			if port, err = gatewayPort(); err != nil {
				return 0, err
			}
			tx, err = c.ProposeAdd(ctx, auth, target.Authority, target.Gateway, fmt.Sprintf("Provider %d", p), fmt.Sprintf("http://127.0.0.1:%d", port))
		} else {
			tx, err = c.Vote(ctx, auth, new(big.Int).SetUint64(proposal))
		}
		var out contracts.Outcome
		if err == nil {
			var r *types.Receipt
			if r, err = waitMined(ctx, ec, tx.Hash()); err == nil {
				out, err = c.GovernanceOutcome(r)
			}
		}
		if err != nil {
			return proposal, fmt.Errorf("devnet: provider %d's vote to admit provider %d: %w", m.ID, p, err)
		}
		proposal = out.Proposal
		if out.Executed {
			return proposal, nil
		}
	}
	return proposal, fmt.Errorf("devnet: proposal %d to admit provider %d has no majority after every member voted", proposal, p)
}

// fundEach is what FundProvider gives each of a new provider's accounts.
var fundEach = new(big.Int).Mul(big.NewInt(1000), big.NewInt(1e18)) // 1,000 ether

// FundProvider has the deployer send ether to provider p's authority and
// gateway: a provider added after genesis has none, and both accounts send
// transactions (governance votes; relays and anchors). Accounts already
// holding fundEach are left alone.
func FundProvider(ctx context.Context, n *chain.Network, p int) error {
	var target *chain.NodeState
	st := n.State()
	for i := range st.Nodes {
		if st.Nodes[i].Provider == p {
			target = &st.Nodes[i]
		}
	}
	if target == nil {
		return fmt.Errorf("devnet: %w %d", chain.ErrUnknownProvider, p)
	}
	key, err := Key(n, st.DeployerKey)
	if err != nil {
		return err
	}
	ec, _, err := DialRunning(ctx, n, 0)
	if err != nil {
		return err
	}
	defer ec.Close()
	id, err := ec.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("devnet: chain id: %w", err)
	}
	nonce, err := ec.PendingNonceAt(ctx, st.Deployer)
	if err != nil {
		return fmt.Errorf("devnet: deployer nonce: %w", err)
	}
	tip, err := ec.SuggestGasTipCap(ctx)
	if err != nil {
		return fmt.Errorf("devnet: gas tip: %w", err)
	}
	head, err := ec.HeaderByNumber(ctx, nil)
	if err != nil {
		return fmt.Errorf("devnet: head: %w", err)
	}
	feeCap := new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), tip)
	var sent []*types.Transaction
	for _, to := range []common.Address{target.Authority, target.Gateway} {
		bal, err := ec.BalanceAt(ctx, to, nil)
		if err != nil {
			return fmt.Errorf("devnet: balance of %s: %w", to, err)
		}
		if bal.Cmp(fundEach) >= 0 {
			continue
		}
		tx, err := types.SignNewTx(key, types.LatestSignerForChainID(id), &types.DynamicFeeTx{
			ChainID: id, Nonce: nonce, GasTipCap: tip, GasFeeCap: feeCap, Gas: 21000, To: &to, Value: fundEach,
		})
		if err != nil {
			return fmt.Errorf("devnet: sign: %w", err)
		}
		if err := ec.SendTransaction(ctx, tx); err != nil {
			return fmt.Errorf("devnet: fund %s: %w", to, err)
		}
		nonce++
		sent = append(sent, tx)
	}
	for _, tx := range sent {
		if _, err := waitMined(ctx, ec, tx.Hash()); err != nil {
			return fmt.Errorf("devnet: fund: %w", err)
		}
	}
	return nil
}

// waitMined polls for a transaction's receipt every 100 ms (bind.WaitMined
// polls once a second, a whole block period here) and checks it succeeded.
func waitMined(ctx context.Context, ec *ethclient.Client, tx common.Hash) (*types.Receipt, error) {
	for {
		r, err := ec.TransactionReceipt(ctx, tx)
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return r, fmt.Errorf("transaction %s failed", tx)
			}
			return r, nil
		}
		if !errors.Is(err, ethereum.NotFound) {
			return nil, fmt.Errorf("wait for %s: %w", tx, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", tx, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
