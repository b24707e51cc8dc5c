package audit

import (
	"context"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
)

// Source is everything an audit reads from a chain: plain JSON-RPC through
// go-ethereum's ethclient.Client, which satisfies it, as does the simulated
// backend's client. An in-memory implementation drives the benchmark.
type Source interface {
	ChainID(ctx context.Context) (*big.Int, error)
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
	BlockByNumber(ctx context.Context, number *big.Int) (*types.Block, error)
	FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error)
	TransactionByHash(ctx context.Context, hash common.Hash) (tx *types.Transaction, isPending bool, err error)
	// TransactionSender returns the sender of a mined transaction; ethclient
	// answers from the block it fetched without recovering the signature.
	TransactionSender(ctx context.Context, tx *types.Transaction, block common.Hash, index uint) (common.Address, error)
	BalanceAt(ctx context.Context, account common.Address, block *big.Int) (*big.Int, error)
	NonceAt(ctx context.Context, account common.Address, block *big.Int) (uint64, error)
	CodeAt(ctx context.Context, account common.Address, block *big.Int) ([]byte, error)
	CallContract(ctx context.Context, call ethereum.CallMsg, block *big.Int) ([]byte, error)
}

var _ Source = (*ethclient.Client)(nil)

// RawCaller is the raw JSON-RPC access a Source may also offer (an
// *rpc.Client does). The signer check needs it for clique_getSigners; without
// it, or when the node does not know the method, that check is skipped.
type RawCaller interface {
	CallContext(ctx context.Context, result any, method string, args ...any) error
}
