// Package simchain starts an in-process simulated chain (go-ethereum's
// ethclient/simulated) with a fresh MedRec-ZK deployment, for the tests of the
// packages above contracts. Every transaction is mined as soon as it is sent.
// The unreleased "Bogota" fork of the v1.17 simulated backend is switched off,
// so gas follows the production chain's rules. Test code only.
package simchain

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/params"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/prover"
)

// Provider is a test provider's keys.
type Provider struct {
	ID                 uint32
	Authority, Gateway *ecdsa.PrivateKey
}

// Chain is a simulated chain with the contracts deployed.
type Chain struct {
	Sim       *simulated.Backend
	Backend   contracts.Backend // mines each transaction on send
	Client    *contracts.Client
	D         *contracts.Deployment
	ChainID   *big.Int
	Deployer  *ecdsa.PrivateKey
	Providers []Provider

	initial   []contracts.Provider
	verifiers contracts.Verifiers
}

// Key returns a deterministic key for label.
func Key(label string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte("medrec-zk simchain/" + label)))
	if err != nil {
		panic(err)
	}
	return k
}

// Addr is the address of k.
func Addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

// withoutBogota: see the package comment.
func withoutBogota(_ *node.Config, eth *ethconfig.Config) {
	cfg := *params.AllDevChainProtocolChanges
	cfg.BogotaTime = nil
	eth.Genesis.Config = &cfg
}

// autoMine mines a block after every transaction it sends.
type autoMine struct {
	simulated.Client
	sim *simulated.Backend
}

// SendTransaction sends tx and commits blocks until it is included: one is
// almost always enough, but on a loaded machine the miner may seal a block
// before it has filled in every pending transaction.
func (a autoMine) SendTransaction(ctx context.Context, tx *types.Transaction) error {
	if err := a.Client.SendTransaction(ctx, tx); err != nil {
		return err
	}
	for i := 0; i < 50; i++ {
		a.sim.Commit()
		if _, err := a.Client.TransactionReceipt(ctx, tx.Hash()); err == nil {
			return nil
		}
	}
	return fmt.Errorf("simchain: transaction %s not mined after 50 blocks", tx.Hash())
}

// New starts a chain with n providers (ids 1..n, named "Provider i", gateway
// URLs from urls when given) and deploys the contracts with the dev keys' hash and verifiers.
// extra accounts are funded too.
func New(tb testing.TB, n int, urls []string, extra ...common.Address) *Chain {
	tb.Helper()
	return NewWith(tb, n, urls, contracts.DevVerifiers(), extra...)
}

// NewWith is New with the verifiers v (their keys' registry hash is the dev
// keys': v may add an insertion verifier to the dev verifiers, not replace them).
func NewWith(tb testing.TB, n int, urls []string, v contracts.Verifiers, extra ...common.Address) *Chain {
	tb.Helper()
	c := &Chain{Deployer: Key("deployer"), verifiers: v}
	alloc := types.GenesisAlloc{}
	eth := new(big.Int).Mul(big.NewInt(1000), big.NewInt(params.Ether))
	alloc[Addr(c.Deployer)] = types.Account{Balance: eth}
	for _, a := range extra {
		alloc[a] = types.Account{Balance: eth}
	}
	var initial []contracts.Provider
	for i := 1; i <= n; i++ {
		p := Provider{ID: uint32(i), Authority: Key(fmt.Sprintf("authority-%d", i)), Gateway: Key(fmt.Sprintf("gateway-%d", i))}
		alloc[Addr(p.Authority)] = types.Account{Balance: eth}
		alloc[Addr(p.Gateway)] = types.Account{Balance: eth}
		c.Providers = append(c.Providers, p)
		url := fmt.Sprintf("http://127.0.0.1:%d", 8500+i)
		if i <= len(urls) {
			url = urls[i-1]
		}
		initial = append(initial, contracts.Provider{Authority: Addr(p.Authority), Gateway: Addr(p.Gateway), Name: fmt.Sprintf("Provider %d", i), GatewayURL: url})
	}
	c.Sim = simulated.NewBackend(alloc, withoutBogota)
	tb.Cleanup(func() { c.Sim.Close() })
	c.Backend = autoMine{Client: c.Sim.Client(), sim: c.Sim}
	ctx := context.Background()
	var err error
	if c.ChainID, err = c.Backend.ChainID(ctx); err != nil {
		tb.Fatal(err)
	}
	c.initial = initial
	c.deploy(tb)
	return c
}

func (c *Chain) deploy(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	ks, err := prover.DevKeys()
	if err != nil {
		tb.Fatal(err)
	}
	d, txs, err := contracts.Deploy(ctx, c.Backend, c.Auth(c.Deployer), c.initial, ks.RegistryHash(), c.verifiers)
	if err != nil {
		tb.Fatal(err)
	}
	if err := d.Wait(ctx, c.Backend, txs); err != nil {
		tb.Fatal(err)
	}
	c.D = d
	c.Client = contracts.NewClient(c.Backend, d)
}

// Redeploy returns the same chain with a second, independent deployment of
// the contracts (the same providers): another network on the same chain id.
func (c *Chain) Redeploy(tb testing.TB) *Chain {
	tb.Helper()
	c2 := *c
	c2.deploy(tb)
	return &c2
}

// Auth returns transact options for k on this chain.
func (c *Chain) Auth(k *ecdsa.PrivateKey) *bind.TransactOpts {
	return bind.NewKeyedTransactor(k, c.ChainID)
}

// Now returns the latest block's timestamp.
func (c *Chain) Now(tb testing.TB) uint64 {
	h, err := c.Backend.HeaderByNumber(context.Background(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return h.Time
}

// Later moves the chain's clock by d with an empty block. The simulated
// backend refuses while its transaction pool still lists a pending
// transaction, and the pool drops a mined one only when it catches up with
// the new head, asynchronously: a just-mined transaction can still be
// listed. Later waits for that (at most 10 s).
func (c *Chain) Later(tb testing.TB, d time.Duration) {
	tb.Helper()
	if err := AdjustTime(c.Sim, d); err != nil {
		tb.Fatal(err)
	}
}

// AdjustTime is Chain.Later for any simulated backend.
func AdjustTime(sim *simulated.Backend, d time.Duration) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := sim.AdjustTime(d)
		if err == nil || !strings.Contains(err.Error(), "non-empty block") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
