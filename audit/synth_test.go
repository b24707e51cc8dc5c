package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/prover"
)

// synthChain is an in-memory Source over generated blocks: gen builds a
// block's transactions and logs on demand, so a million events cost no
// memory. Logs are encoded with the bindings' ABI; a transaction's sender is
// carried in its R value (the chain never recovers signatures).
type synthChain struct {
	chainID  *big.Int
	d        *contracts.Deployment
	head     uint64
	interval uint64 // seconds between blocks
	stamp    bool   // logs carry their block's timestamp
	gen      func(b uint64) ([]*types.Transaction, []types.Log)
	code     map[common.Address][]byte
	nonces   map[common.Address]uint64
	balances map[common.Address]*big.Int
	keyHash  [32]byte
	signers  []common.Address
	relOf    func(tag [32]byte) bindings.RelationshipsRelationship
}

const synthGenesisTime = 1_700_000_000

func synthDeployment() *contracts.Deployment {
	a := func(s string) common.Address { return common.BytesToAddress(crypto.Keccak256([]byte(s))[12:]) }
	return &contracts.Deployment{
		ChainID: big.NewInt(4242), Block: 1,
		AgentRegistry: a("agents"), PatientRegistry: a("patients"), Relationships: a("relationships"), Anchors: a("anchors"),
		OwnershipVerifier: a("ownership verifier"), EntitlementVerifier: a("entitlement verifier"),
	}
}

func newSynthChain(head uint64, gen func(b uint64) ([]*types.Transaction, []types.Log)) *synthChain {
	d := synthDeployment()
	tpls, err := templates()
	if err != nil {
		panic(err)
	}
	ks, _ := prover.DevKeys()
	c := &synthChain{
		chainID: d.ChainID, d: d, head: head, interval: 5, stamp: true, gen: gen,
		code: map[common.Address][]byte{
			d.AgentRegistry: {1}, d.PatientRegistry: {1}, d.Relationships: {1}, d.Anchors: {1},
			d.OwnershipVerifier: tpls[prover.Ownership].code, d.EntitlementVerifier: tpls[prover.Entitlement].code,
		},
		nonces: map[common.Address]uint64{}, balances: map[common.Address]*big.Int{},
		keyHash: ks.RegistryHash(),
	}
	return c
}

func (c *synthChain) time(b uint64) uint64 { return synthGenesisTime + b*c.interval }

func (c *synthChain) header(b uint64) *types.Header {
	return &types.Header{Number: new(big.Int).SetUint64(b), Time: c.time(b), Difficulty: big.NewInt(2)}
}

func (c *synthChain) number(n *big.Int) (uint64, error) {
	if n == nil {
		return c.head, nil
	}
	if !n.IsUint64() || n.Uint64() > c.head {
		return 0, ethereum.NotFound
	}
	return n.Uint64(), nil
}

func (c *synthChain) ChainID(context.Context) (*big.Int, error) { return c.chainID, nil }

func (c *synthChain) HeaderByNumber(_ context.Context, n *big.Int) (*types.Header, error) {
	b, err := c.number(n)
	if err != nil {
		return nil, err
	}
	return c.header(b), nil
}

func (c *synthChain) BlockByNumber(_ context.Context, n *big.Int) (*types.Block, error) {
	b, err := c.number(n)
	if err != nil {
		return nil, err
	}
	txs, _ := c.gen(b)
	return types.NewBlockWithHeader(c.header(b)).WithBody(types.Body{Transactions: txs}), nil
}

func (c *synthChain) blockLogs(b uint64) []types.Log {
	txs, logs := c.gen(b)
	h := c.header(b).Hash()
	for i := range logs {
		l := &logs[i]
		l.BlockNumber, l.BlockHash, l.Index, l.TxHash = b, h, uint(i), txs[l.TxIndex].Hash()
		if c.stamp {
			l.BlockTimestamp = c.time(b)
		}
	}
	return logs
}

func (c *synthChain) FilterLogs(_ context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	from, to := q.FromBlock.Uint64(), min(q.ToBlock.Uint64(), c.head)
	want := map[common.Address]bool{}
	for _, a := range q.Addresses {
		want[a] = true
	}
	var out []types.Log
	for b := from; b <= to; b++ {
		for _, l := range c.blockLogs(b) {
			if want[l.Address] {
				out = append(out, l)
			}
		}
	}
	return out, nil
}

func (c *synthChain) TransactionByHash(ctx context.Context, h common.Hash) (*types.Transaction, bool, error) {
	for b := uint64(0); b <= c.head; b++ { // tests only: a linear search
		txs, _ := c.gen(b)
		for _, tx := range txs {
			if tx.Hash() == h {
				return tx, false, nil
			}
		}
	}
	return nil, false, ethereum.NotFound
}

func (c *synthChain) TransactionSender(_ context.Context, tx *types.Transaction, _ common.Hash, _ uint) (common.Address, error) {
	_, r, _ := tx.RawSignatureValues()
	return common.BigToAddress(r), nil
}

func (c *synthChain) BalanceAt(_ context.Context, a common.Address, _ *big.Int) (*big.Int, error) {
	if v, ok := c.balances[a]; ok {
		return v, nil
	}
	return new(big.Int), nil
}

func (c *synthChain) NonceAt(_ context.Context, a common.Address, _ *big.Int) (uint64, error) {
	return c.nonces[a], nil
}

func (c *synthChain) CodeAt(_ context.Context, a common.Address, _ *big.Int) ([]byte, error) {
	return c.code[a], nil
}

var (
	synthAgents   = bindings.NewAgentRegistry()
	synthRels     = bindings.NewRelationships()
	synthPatients = bindings.NewPatientRegistry()
)

func (c *synthChain) CallContract(_ context.Context, m ethereum.CallMsg, _ *big.Int) ([]byte, error) {
	is := func(packed []byte) bool { return bytes.Equal(m.Data[:4], packed[:4]) }
	word := func(a common.Address) []byte { return common.LeftPadBytes(a[:], 32) }
	switch {
	case *m.To == c.d.AgentRegistry && is(synthAgents.PackVerifyingKeyHash()):
		return c.keyHash[:], nil
	case *m.To == c.d.AgentRegistry && is(synthAgents.PackOwnershipVerifier()):
		return word(c.d.OwnershipVerifier), nil
	case *m.To == c.d.AgentRegistry && is(synthAgents.PackEntitlementVerifier()):
		return word(c.d.EntitlementVerifier), nil
	case *m.To == c.d.Relationships && is(synthRels.PackVerifier()):
		return word(c.d.OwnershipVerifier), nil
	case *m.To == c.d.PatientRegistry && is(synthPatients.PackInsertion()):
		return word(c.d.InsertionVerifier), nil // a frontier registry: none
	case *m.To == c.d.AgentRegistry && is(synthAgents.PackSigners()):
		return mustABI(&bindings.AgentRegistryMetaData).Methods["signers"].Outputs.Pack(c.signers)
	case *m.To == c.d.Relationships && is(synthRels.PackRelationship(big.NewInt(0))):
		var tag [32]byte
		copy(tag[:], m.Data[4:36])
		r := bindings.RelationshipsRelationship{}
		if c.relOf != nil {
			r = c.relOf(tag)
		}
		return mustABI(&bindings.RelationshipsMetaData).Methods["relationship"].Outputs.Pack(r)
	}
	return nil, errors.New("synthChain: unsupported call")
}

// cliqueChain adds clique_getSigners.
type cliqueChain struct {
	*synthChain
	clique []common.Address
}

func (c cliqueChain) CallContext(_ context.Context, result any, method string, _ ...any) error {
	if method != "clique_getSigners" {
		return fmt.Errorf("method %s does not exist", method)
	}
	*(result.(*[]common.Address)) = c.clique
	return nil
}

// synthTx is a transaction from `from` (carried in R).
func synthTx(nonce uint64, from common.Address, to *common.Address, value *big.Int, data []byte) *types.Transaction {
	if value == nil {
		value = new(big.Int)
	}
	return types.NewTx(&types.LegacyTx{Nonce: nonce, To: to, Value: value, Gas: 300_000, GasPrice: big.NewInt(1), Data: data,
		V: big.NewInt(27), R: new(big.Int).SetBytes(from[:]), S: big.NewInt(1)})
}

// eventLog encodes event name of contract md at addr with args in the
// event's declaration order, emitted by the block's transaction txIndex.
func eventLog(md *bind.MetaData, addr common.Address, txIndex uint, name string, args ...any) types.Log {
	ev := mustABI(md).Events[name]
	topics := []common.Hash{ev.ID}
	var data []any
	for i, in := range ev.Inputs {
		if in.Indexed {
			t, err := abi.MakeTopics([]any{args[i]})
			if err != nil {
				panic(err)
			}
			topics = append(topics, t[0][0])
		} else {
			data = append(data, args[i])
		}
	}
	packed, err := ev.Inputs.NonIndexed().Pack(data...)
	if err != nil {
		panic(fmt.Sprintf("%s: %v", name, err))
	}
	return types.Log{Address: addr, Topics: topics, Data: packed, TxIndex: txIndex}
}

func mustABI(md *bind.MetaData) *abi.ABI {
	parsed, err := md.ParseABI()
	if err != nil {
		panic(err)
	}
	return parsed
}
