package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/medrec-zk/medrec/audit"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// rpcProxy serves JSON-RPC over HTTP by forwarding each call to c (the
// simulated chain's in-process client), so the binary audits it like a node.
// It records the Authorization header it last saw.
type rpcProxy struct {
	c    *rpc.Client
	mu   sync.Mutex
	auth string
}

func (p *rpcProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.auth = r.Header.Get("Authorization")
	p.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	batch := len(body) > 0 && body[0] == '['
	var reqs []json.RawMessage
	if batch {
		json.Unmarshal(body, &reqs)
	} else {
		reqs = []json.RawMessage{body}
	}
	var out []map[string]any
	for _, raw := range reqs {
		var req struct {
			ID     json.RawMessage   `json:"id"`
			Method string            `json:"method"`
			Params []json.RawMessage `json:"params"`
		}
		json.Unmarshal(raw, &req)
		args := make([]any, len(req.Params))
		for i, a := range req.Params {
			args[i] = a
		}
		var res json.RawMessage
		resp := map[string]any{"jsonrpc": "2.0", "id": req.ID}
		if err := p.c.CallContext(r.Context(), &res, req.Method, args...); err != nil {
			e := map[string]any{"code": -32000, "message": err.Error()}
			var re rpc.Error
			if errors.As(err, &re) {
				e["code"] = re.ErrorCode()
			}
			var de rpc.DataError
			if errors.As(err, &de) {
				e["data"] = de.ErrorData()
			}
			resp["error"] = e
		} else {
			resp["result"] = res
		}
		out = append(out, resp)
	}
	w.Header().Set("Content-Type", "application/json")
	if batch {
		json.NewEncoder(w).Encode(out)
	} else {
		json.NewEncoder(w).Encode(out[0])
	}
}

func auditSecret(label string) fr.Element {
	var s fr.Element
	s.SetBytes(crypto.Keccak256([]byte("cli audit test/" + label)))
	return s
}

// auditChain is a simulated network with three patients enrolled and one
// relationship opened with a real proof, served over HTTP.
func auditChain(t *testing.T) (*simchain.Chain, *rpcProxy, string, string) {
	t.Helper()
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	gw := c.Providers[0].Gateway
	for _, l := range []string{"alice", "bob", "carol"} {
		tx, err := c.Client.Enrol(ctx, c.Auth(gw), zkhash.Big(zkhash.Commitment(auditSecret(l))))
		if err != nil {
			t.Fatal(err)
		}
		c.Client.Wait(ctx, tx)
	}
	v, err := chainview.New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	path, err := v.MerkleProof(zkhash.Commitment(auditSecret("alice")))
	if err != nil {
		t.Fatal(err)
	}
	ks, _ := prover.DevKeys()
	owner := simchain.Addr(simchain.Key("cli audit/alice-1"))
	proof, pub, err := prover.New(ks).ProveOwnership(circuits.OwnershipWitness{Secret: auditSecret("alice"), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, c.ChainID, c.D.Relationships)})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.Client.Open(ctx, c.Auth(gw), zkhash.Big(pub.Tag), 1, owner, zkhash.Big(pub.Root), proof[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.Wait(ctx, tx); err != nil {
		t.Fatal(err)
	}
	ec := reflect.ValueOf(c.Sim.Client()).FieldByName("Client").Interface().(*ethclient.Client)
	proxy := &rpcProxy{c: ec.Client()}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	dep := filepath.Join(t.TempDir(), "deployment.json")
	if err := c.D.Save(dep); err != nil {
		t.Fatal(err)
	}
	return c, proxy, srv.URL, dep
}

func TestAuditCommand(t *testing.T) {
	c, proxy, url, dep := auditChain(t)
	dir := t.TempDir()
	chart := filepath.Join(dir, "anonymity.svg")
	headers := writeFile(t, "# credentials\nAuthorization: Bearer s3cr3t-token\n")

	r := medrec(t, "", "audit", "--rpc", url, "--deployment", dep, "--json", "--chart", chart, "--rpc-header-file", headers)
	if r.code != 0 {
		t.Fatalf("clean chain: exit %d\n%s\n%s", r.code, r.stderr, r.stdout)
	}
	var rep audit.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.Passed || rep.Stats.Opens != 1 || rep.Stats.MinAnonymitySet != 3 {
		t.Fatalf("JSON: %v\n%s", err, r.stdout)
	}
	if proxy.auth != "Bearer s3cr3t-token" {
		t.Fatalf("header file not sent: %q", proxy.auth)
	}
	if svg, err := os.ReadFile(chart); err != nil || !strings.HasPrefix(string(svg), "<svg") {
		t.Fatalf("chart: %v", err)
	}
	page := filepath.Join(dir, "anonymity.html")
	r = medrec(t, "", "audit", "--rpc", url, "--deployment", dep, "--chart", page, "--logs-only")
	if r.code != 0 || !strings.Contains(r.stdout, "Audit PASSED") || !strings.Contains(r.stdout, "anonymity-set") {
		t.Fatalf("text: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if html, err := os.ReadFile(page); err != nil || !strings.Contains(string(html), "<svg") || strings.Contains(string(html), "<script") {
		t.Fatalf("html chart: %v", err)
	}

	// Plant a violation: ether to the delegate. Exit 1, the check named.
	ctx := context.Background()
	owner := simchain.Addr(simchain.Key("cli audit/alice-1"))
	nonce, _ := c.Backend.PendingNonceAt(ctx, simchain.Addr(c.Deployer))
	head, _ := c.Backend.HeaderByNumber(ctx, nil)
	tx, _ := types.SignTx(types.NewTx(&types.DynamicFeeTx{ChainID: c.ChainID, Nonce: nonce, To: &owner, Value: big.NewInt(params.Ether), Gas: 21000,
		GasTipCap: big.NewInt(params.GWei), GasFeeCap: new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), big.NewInt(params.GWei))}),
		types.LatestSignerForChainID(c.ChainID), c.Deployer)
	if err := c.Backend.SendTransaction(ctx, tx); err != nil {
		t.Fatal(err)
	}
	r = medrec(t, "", "audit", "--rpc", url, "--deployment", dep)
	if r.code != 1 || !strings.Contains(r.stdout, "delegate-ether") || !strings.Contains(r.stdout, "FAIL") || !strings.Contains(r.stdout, "received 1 ether") || !strings.Contains(r.stderr, "audit failed") {
		t.Fatalf("funded delegate: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestAuditBadInput(t *testing.T) {
	c, _, url, dep := auditChain(t)
	dir := t.TempDir()
	save := func(name string, edit func(d *contracts.Deployment)) string {
		d := *c.D
		edit(&d)
		p := filepath.Join(dir, name)
		if err := d.Save(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	wrongChain := save("wrong-chain.json", func(d *contracts.Deployment) { d.ChainID = big.NewInt(1) })
	missing := save("missing.json", func(d *contracts.Deployment) {
		d.Anchors = common.HexToAddress("0x00000000000000000000000000000000000000aa")
	})
	secretURL := "http://auditor:hunter2hunter2@127.0.0.1:1/rpc?apikey=topsecretkey"

	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no rpc", []string{"audit", "--deployment", dep}, 2, "missing --rpc"},
		{"no deployment", []string{"audit", "--rpc", url}, 2, "missing --deployment"},
		{"bad window", []string{"audit", "--rpc", url, "--deployment", dep, "--window", "-1m"}, 2, "--window"},
		{"bad duration", []string{"audit", "--rpc", url, "--deployment", dep, "--window", "soon"}, 2, "invalid value"},
		{"zero threshold", []string{"audit", "--rpc", url, "--deployment", dep, "--min-anonymity", "0"}, 2, "--min-anonymity"},
		{"chart type", []string{"audit", "--rpc", url, "--deployment", dep, "--chart", filepath.Join(dir, "c.png")}, 2, ".svg or .html"},
		{"range too large", []string{"audit", "--rpc", url, "--deployment", dep, "--max-range", "3"}, 2, "block range too large"},
		{"from after head", []string{"audit", "--rpc", url, "--deployment", dep, "--from", "99999"}, 2, "after the head"},
		{"deployment missing", []string{"audit", "--rpc", url, "--deployment", filepath.Join(dir, "none.json")}, 3, "no such file"},
		{"deployment malformed", []string{"audit", "--rpc", url, "--deployment", writeFile(t, `{"chainId": 1337}`)}, 3, "incomplete deployment record"},
		{"unreachable", []string{"audit", "--rpc", secretURL, "--deployment", dep}, 3, "RPC endpoint unreachable"},
		{"bad scheme", []string{"audit", "--rpc", "ftp://example.invalid", "--deployment", dep}, 3, "unreachable"},
		{"wrong chain", []string{"audit", "--rpc", url, "--deployment", wrongChain}, 3, "wrong chain: the endpoint serves chain 1337, the deployment record is for chain 1"},
		{"not deployed", []string{"audit", "--rpc", url, "--deployment", missing}, 3, "not deployed: no Anchors code"},
		{"bad header file", []string{"audit", "--rpc", url, "--deployment", dep, "--rpc-header-file", writeFile(t, "Authorization Bearer topsecretkey\n")}, 3, "line 1"},
		{"bad key dir", []string{"audit", "--rpc", url, "--deployment", dep, "--keys", dir}, 3, "manifest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := medrec(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tt.code, r.stderr, tt.stderr)
			}
			for _, secret := range []string{"hunter2", "topsecretkey"} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Fatalf("a secret reached the output: %s", r.stderr)
				}
			}
		})
	}
}
