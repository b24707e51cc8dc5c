package contracts

import (
	"encoding/json"
	"math/big"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// The shared vectors of package zkhash and merkle, read as JSON.
type hashVectors struct {
	Permutation []struct {
		In, Out []string
	} `json:"permutation"`
	Hashes []struct {
		Domain string   `json:"domain"`
		Inputs []string `json:"inputs"`
		Output string   `json:"output"`
	} `json:"hashes"`
}

type treeVectors struct {
	Zeros []string `json:"zeros"`
	Trees []struct {
		Leaves []string `json:"leaves"`
		Root   string   `json:"root"`
	} `json:"trees"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func hexBig(t *testing.T, s string) *big.Int {
	t.Helper()
	v, ok := new(big.Int).SetString(s, 0)
	if !ok {
		t.Fatalf("bad hex %q", s)
	}
	return v
}

func deployHarness(t *testing.T, e *env) (*bindings.Poseidon2Harness, *bind.BoundContract) {
	t.Helper()
	h := bindings.NewPoseidon2Harness()
	a, tx, err := bind.DeployContract(e.auth(e.deployer), common.FromHex(bindings.Poseidon2HarnessMetaData.Bin), e.client, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.mine(tx); r.Status != types.ReceiptStatusSuccessful {
		t.Fatal("deploy harness failed")
	}
	return h, h.Instance(e.client, a)
}

// TestPoseidon2MatchesGo checks the Solidity H against package zkhash on the
// shared vectors and on random inputs, for the permutation and every domain.
func TestPoseidon2MatchesGo(t *testing.T) {
	e := newEnv(t, 1)
	h, c := deployHarness(t, e)
	var v hashVectors
	readJSON(t, "../zkhash/testdata/vectors.json", &v)
	if len(v.Permutation) == 0 || len(v.Hashes) == 0 {
		t.Fatal("empty vector file")
	}
	for i, pv := range v.Permutation {
		out := call(t, c, h.PackPermute(hexBig(t, pv.In[0]), hexBig(t, pv.In[1]), hexBig(t, pv.In[2])), h.UnpackPermute)
		got := []*big.Int{out.Arg0, out.Arg1, out.Arg2}
		for j := range got {
			if got[j].Cmp(hexBig(t, pv.Out[j])) != 0 {
				t.Errorf("permutation vector %d lane %d: got %#x want %s", i, j, got[j], pv.Out[j])
			}
		}
	}
	for i, hv := range v.Hashes {
		in := make([]*big.Int, len(hv.Inputs))
		for j, s := range hv.Inputs {
			in[j] = hexBig(t, s)
		}
		var data []byte
		var unpack func([]byte) (*big.Int, error)
		switch hv.Domain {
		case "commit":
			data, unpack = h.PackCommitment(in[0]), h.UnpackCommitment
		case "tag":
			data, unpack = h.PackTag(in[0], in[1]), h.UnpackTag
		case "viewer":
			data, unpack = h.PackViewerCommitment(in[0]), h.UnpackViewerCommitment
		case "grant":
			data, unpack = h.PackGrant(in[0], in[1], in[2]), h.UnpackGrant
		case "node":
			data, unpack = h.PackNode(in[0], in[1]), h.UnpackNode
		default:
			t.Fatalf("vector %d: unknown domain %q", i, hv.Domain)
		}
		if got := call(t, c, data, unpack); got.Cmp(hexBig(t, hv.Output)) != 0 {
			t.Errorf("%s vector %d: got %#x want %s", hv.Domain, i, got, hv.Output)
		}
	}
	// Random field elements, including values near r, against the Go twin.
	rng := rand.New(rand.NewPCG(1, 2))
	r := zkhash.Modulus()
	for i := 0; i < 32; i++ {
		a, b, k := randField(rng, r), randField(rng, r), randField(rng, r)
		fa, _ := zkhash.FromBig(a)
		fb, _ := zkhash.FromBig(b)
		fk, _ := zkhash.FromBig(k)
		if got, want := call(t, c, h.PackNode(a, b), h.UnpackNode), zkhash.Big(zkhash.Node(fa, fb)); got.Cmp(want) != 0 {
			t.Fatalf("node(%#x, %#x): got %#x want %#x", a, b, got, want)
		}
		if got, want := call(t, c, h.PackGrant(a, b, k), h.UnpackGrant), zkhash.Big(zkhash.Grant(fa, fb, fk)); got.Cmp(want) != 0 {
			t.Fatalf("grant: got %#x want %#x", got, want)
		}
	}
	gas := call(t, c, h.PackNodeGas(big.NewInt(1), big.NewInt(2)), h.UnpackNodeGas)
	t.Logf("gas: poseidon2 node %d", gas)
}

// randField returns a uniform element, or one of the edge values 0, 1, r-1.
func randField(rng *rand.Rand, r *big.Int) *big.Int {
	switch rng.IntN(8) {
	case 0:
		return big.NewInt(0)
	case 1:
		return big.NewInt(1)
	case 2:
		return new(big.Int).Sub(r, big.NewInt(1))
	}
	var b [32]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return new(big.Int).Mod(new(big.Int).SetBytes(b[:]), r)
}

// TestTreeMatchesGo enrols the leaves of the merkle package's vector trees and
// checks the contract's root after each insertion, and its zero hashes.
func TestTreeMatchesGo(t *testing.T) {
	var v treeVectors
	readJSON(t, "../merkle/testdata/vectors.json", &v)
	for h, z := range v.Zeros {
		if zkhash.Big(merkle.Zero(h)).Cmp(hexBig(t, z)) != 0 {
			t.Fatalf("zero %d differs from the Go twin", h)
		}
	}
	// The largest vector tree contains the smaller ones as prefixes.
	var longest int
	for i, tr := range v.Trees {
		if len(tr.Leaves) > len(v.Trees[longest].Leaves) {
			longest = i
		}
	}
	e := newEnv(t, 1)
	gw := e.providers[0].gateway
	roots := map[int]string{}
	for _, tr := range v.Trees {
		roots[len(tr.Leaves)] = tr.Root
	}
	if got := e.root(); got.Cmp(hexBig(t, roots[0])) != 0 {
		t.Fatalf("empty root %#x, want %s", got, roots[0])
	}
	for i, leaf := range v.Trees[longest].Leaves {
		e.mustSend(gw, e.patientsC, e.patients.PackEnrol([]*big.Int{hexBig(t, leaf)}))
		if want, ok := roots[i+1]; ok {
			if got := e.root(); got.Cmp(hexBig(t, want)) != 0 {
				t.Fatalf("root after %d leaves: %#x, want %s", i+1, got, want)
			}
		}
	}
	if len(roots) < 3 {
		t.Fatalf("only %d vector trees checked", len(roots))
	}
}
