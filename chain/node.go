package chain

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"syscall"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"
)

// Node is a JSON-RPC connection to one Clique node: the eth namespace
// through ethclient, and the clique namespace (signers, votes).
type Node struct {
	URL string
	rpc *rpc.Client
	eth *ethclient.Client
}

// Dial connects to a node's HTTP endpoint and checks that it answers;
// ErrUnreachable (naming the URL) if it does not.
func Dial(ctx context.Context, rawURL string) (*Node, error) {
	if u, err := url.Parse(rawURL); err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: %q is not a node URL", ErrUnreachable, rawURL)
	}
	c, err := rpc.DialContext(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, rawURL, err)
	}
	n := &Node{URL: rawURL, rpc: c, eth: ethclient.NewClient(c)}
	if _, err := n.Height(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return n, nil
}

// Close releases the connection.
func (n *Node) Close() { n.rpc.Close() }

// Eth is the node's eth namespace.
func (n *Node) Eth() *ethclient.Client { return n.eth }

// RPC is the raw client.
func (n *Node) RPC() *rpc.Client { return n.rpc }

// call wraps connection failures in ErrUnreachable with the URL.
func (n *Node) call(ctx context.Context, result any, method string, args ...any) error {
	return n.wrap(method, n.rpc.CallContext(ctx, result, method, args...))
}

func (n *Node) wrap(method string, err error) error {
	if err == nil {
		return nil
	}
	var (
		opErr  *net.OpError
		rpcErr rpc.Error
	)
	if errors.As(err, &opErr) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, n.URL, err)
	}
	if errors.As(err, &rpcErr) {
		return fmt.Errorf("%s %s: %w", n.URL, method, err)
	}
	return fmt.Errorf("%s %s: %w", n.URL, method, err)
}

// Height is the number of the node's head block.
func (n *Node) Height(ctx context.Context) (uint64, error) {
	h, err := n.eth.BlockNumber(ctx)
	return h, n.wrap("eth_blockNumber", err)
}

// Header returns the header of block number (nil: the head).
func (n *Node) Header(ctx context.Context, number *uint64) (*types.Header, error) {
	var num *big.Int
	if number != nil {
		num = new(big.Int).SetUint64(*number)
	}
	h, err := n.eth.HeaderByNumber(ctx, num)
	return h, n.wrap("eth_getBlockByNumber", err)
}

// Peers is the node's connected peer count.
func (n *Node) Peers(ctx context.Context) (int, error) {
	var c hexutil.Uint
	err := n.call(ctx, &c, "net_peerCount")
	return int(c), err
}

// Signers is the Clique signer set at the head.
func (n *Node) Signers(ctx context.Context) ([]common.Address, error) {
	var s []common.Address
	err := n.call(ctx, &s, "clique_getSigners")
	return s, err
}

// SignerOf is the authority that sealed block number. (A Clique header's
// coinbase is a vote target, not the sealer.)
func (n *Node) SignerOf(ctx context.Context, number uint64) (common.Address, error) {
	var a common.Address
	err := n.call(ctx, &a, "clique_getSigner", hexutil.Uint64(number))
	return a, err
}

// Proposals are the node's standing votes: address → authorize.
func (n *Node) Proposals(ctx context.Context) (map[common.Address]bool, error) {
	p := map[common.Address]bool{}
	err := n.call(ctx, &p, "clique_proposals")
	return p, err
}

// Propose makes the node vote, in every block it seals, to add (authorize)
// or remove addr as a signer, until discarded.
func (n *Node) Propose(ctx context.Context, addr common.Address, authorize bool) error {
	return n.call(ctx, nil, "clique_propose", addr, authorize)
}

// Discard withdraws the node's standing vote about addr.
func (n *Node) Discard(ctx context.Context, addr common.Address) error {
	return n.call(ctx, nil, "clique_discard", addr)
}
