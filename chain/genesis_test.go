package chain

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/ethereum/go-ethereum/common"
)

func TestCliqueExtraSortsSigners(t *testing.T) {
	a := common.HexToAddress("0x0000000000000000000000000000000000000001")
	b := common.HexToAddress("0xff00000000000000000000000000000000000000")
	extra := cliqueExtra([]common.Address{b, a})
	if len(extra) != 32+2*20+65 {
		t.Fatalf("length %d", len(extra))
	}
	if !bytes.Equal(extra[32:52], a[:]) || !bytes.Equal(extra[52:72], b[:]) {
		t.Fatalf("signers not sorted: %x", extra)
	}
	for _, z := range append(extra[:32:32], extra[72:]...) {
		if z != 0 {
			t.Fatalf("vanity or seal not zero: %x", extra)
		}
	}
}

func TestGenesisJSON(t *testing.T) {
	spec := GenesisSpec{ChainID: 1515, Period: 1, Timestamp: 1700000000,
		Signers: []common.Address{{1}}, Funded: []common.Address{{1}, {2}}}
	raw, err := spec.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Config map[string]any
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"shanghaiTime", "cancunTime", "terminalTotalDifficulty"} {
		if _, ok := doc.Config[f]; ok {
			t.Errorf("genesis sets %s", f)
		}
	}
	if doc.Config["londonBlock"] != 0.0 {
		t.Errorf("london at %v", doc.Config["londonBlock"])
	}
	h1, err := GenesisHash(raw)
	if err != nil {
		t.Fatal(err)
	}
	spec.Signers = []common.Address{{2}} // the chain id is not in the header; the signers are
	raw2, _ := spec.JSON()
	if h2, _ := GenesisHash(raw2); h1 == h2 || h1 == (common.Hash{}) {
		t.Fatalf("hashes %s %s", h1, h2)
	}
}
