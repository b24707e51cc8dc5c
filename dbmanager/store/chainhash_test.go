package store

import (
	"testing"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/crypto"
)

// TestChainHashMatchesABI: Anchor.ChainHash is the Anchors contract's
// keccak256(abi.encode(bytes32 logRoot, uint64 fromSeq, uint64 count, bytes32 stateRoot)).
func TestChainHashMatchesABI(t *testing.T) {
	b32, _ := abi.NewType("bytes32", "", nil)
	u64, _ := abi.NewType("uint64", "", nil)
	args := abi.Arguments{{Type: b32}, {Type: u64}, {Type: u64}, {Type: b32}}
	for _, a := range []Anchor{
		{},
		{LogRoot: [32]byte{1, 2, 3}, LogFrom: 7, LogCount: 42, StateRoot: [32]byte{31: 9}},
		{LogFrom: 1<<64 - 1, LogCount: 1 << 63, StateRoot: [32]byte{0xff}},
	} {
		enc, err := args.Pack(a.LogRoot, a.LogFrom, a.LogCount, a.StateRoot)
		if err != nil {
			t.Fatal(err)
		}
		if want := crypto.Keccak256Hash(enc); a.ChainHash() != want {
			t.Fatalf("%+v: %x, abi says %x", a, a.ChainHash(), want)
		}
	}
}
