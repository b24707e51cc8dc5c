package chain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core"
)

// Genesis defaults.
const (
	DefaultPeriod  = 2    // seconds between blocks
	DefaultChainID = 1515 // dev networks
	CliqueEpoch    = 30000
	genesisGas     = 30_000_000
)

// fundEach is what the genesis gives every funded account: 1,000,000 ether.
var fundEach = new(big.Int).Mul(big.NewInt(1_000_000), big.NewInt(1e18))

// GenesisSpec is what a Clique genesis is made of.
type GenesisSpec struct {
	ChainID   uint64
	Period    uint64
	Timestamp uint64
	Signers   []common.Address // initial authorities, any order
	Funded    []common.Address // accounts given fundEach
}

// cliqueExtra is 32 zero bytes ‖ signers sorted ascending ‖ 65 zero bytes
// (the seal slot, empty in the genesis).
func cliqueExtra(signers []common.Address) []byte {
	s := slices.Clone(signers)
	slices.SortFunc(s, func(a, b common.Address) int { return bytes.Compare(a[:], b[:]) })
	extra := make([]byte, 32, 32+len(s)*common.AddressLength+65)
	for _, a := range s {
		extra = append(extra, a[:]...)
	}
	return append(extra, make([]byte, 65)...)
}

// JSON renders the genesis file geth 1.13 reads with `geth init`: every fork
// up to London at block 0, nothing later (no Shanghai, no Cancun: Clique
// predates withdrawals and blobs), Clique with the given period.
func (g GenesisSpec) JSON() ([]byte, error) {
	if len(g.Signers) == 0 {
		return nil, fmt.Errorf("genesis: no signers")
	}
	config := map[string]any{"chainId": g.ChainID}
	for _, f := range []string{"homestead", "eip150", "eip155", "eip158", "byzantium", "constantinople",
		"petersburg", "istanbul", "muirGlacier", "berlin", "london", "arrowGlacier", "grayGlacier"} {
		config[f+"Block"] = 0
	}
	config["clique"] = map[string]uint64{"period": g.Period, "epoch": CliqueEpoch}
	alloc := map[string]map[string]string{}
	for _, a := range g.Funded {
		alloc[a.Hex()] = map[string]string{"balance": hexutil.EncodeBig(fundEach)}
	}
	doc := map[string]any{
		"config":     config,
		"nonce":      "0x0",
		"timestamp":  hexutil.EncodeUint64(g.Timestamp),
		"extraData":  hexutil.Encode(cliqueExtra(g.Signers)),
		"gasLimit":   hexutil.EncodeUint64(genesisGas),
		"difficulty": "0x1",
		"mixHash":    common.Hash{}.Hex(),
		"coinbase":   common.Address{}.Hex(),
		"alloc":      alloc,
		"number":     "0x0",
		"gasUsed":    "0x0",
		"parentHash": common.Hash{}.Hex(),
	}
	return json.MarshalIndent(doc, "", "  ")
}

// GenesisHash is the hash of the block a genesis file describes (as geth
// computes it; the supervisor checks it against block 0 of a running node).
func GenesisHash(genesisJSON []byte) (common.Hash, error) {
	var g core.Genesis
	if err := json.Unmarshal(genesisJSON, &g); err != nil {
		return common.Hash{}, fmt.Errorf("genesis: %w", err)
	}
	return g.ToBlock().Hash(), nil
}
