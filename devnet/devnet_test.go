package devnet

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/params"

	"github.com/medrec-zk/medrec/audit"
	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
	"github.com/medrec-zk/medrec/zkhash"
)

// testNetwork brings up a real 3-provider Clique network (geth v1.13.15,
// London) in the test's directory; skipped without $MEDREC_GETH unless
// MEDREC_REQUIRE_GETH=1.
func testNetwork(t *testing.T) *chain.Network {
	t.Helper()
	path := os.Getenv(chain.GethEnv)
	if path == "" {
		if os.Getenv("MEDREC_REQUIRE_GETH") == "1" {
			t.Fatalf("%s is unset but MEDREC_REQUIRE_GETH=1", chain.GethEnv)
		}
		t.Skipf("%s unset: no geth to run", chain.GethEnv)
	}
	geth, err := chain.FindGeth(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := chain.Create(t.Context(), t.TempDir(), geth, chain.Options{Providers: 3, Period: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Down(ctx); err != nil {
			t.Logf("down: %v", err)
		}
	})
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRealNetwork deploys the contracts on the real London chain, enrols a
// patient and opens a relationship with a real proof, grants and revokes,
// and confirms the gas figures of the simulated chain.
func TestRealNetwork(t *testing.T) {
	ctx := t.Context()
	n := testNetwork(t)
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Deploy(ctx, n, ks, contracts.DevVerifiers())
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Deploy(ctx, n, ks, contracts.DevVerifiers()); err != nil || again.Relationships != d.Relationships {
		t.Fatalf("second deploy: %v", err)
	}
	ec, err := Dial(ctx, n, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	c := contracts.NewClient(ec, d)
	gwKey, err := GatewayKey(n, 1)
	if err != nil {
		t.Fatal(err)
	}
	relayer := bind.NewKeyedTransactor(gwKey, d.ChainID)
	gas := map[string]uint64{}
	wait := func(op string, tx *types.Transaction, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := c.Wait(ctx, tx)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		zeros := uint64(bytes.Count(tx.Data(), []byte{0}))
		gas[op] = r.GasUsed + zeros*(params.TxDataNonZeroGasEIP2028-params.TxDataZeroGas)
	}

	var first, s = zkhash.FromUint64(0), zkhash.FromUint64(0)
	first.SetBytes(crypto.Keccak256([]byte("devnet first patient")))
	tx, err := c.Enrol(ctx, relayer, zkhash.Big(zkhash.Commitment(first)))
	wait("enrol", tx, err)
	// A batch of 64 with the test's patient among them: enrolled in a
	// batch, the patient opens below.
	s.SetBytes(crypto.Keccak256([]byte("devnet test patient")))
	batch := make([]*big.Int, 64)
	for i := range batch {
		batch[i] = zkhash.Big(zkhash.Commitment(zkhash.FromUint64(uint64(1000 + i))))
	}
	batch[17] = zkhash.Big(zkhash.Commitment(s))
	tx, err = c.Enrol(ctx, relayer, batch...)
	wait("enrol batch", tx, err)
	if per := gas["enrol batch"] / 64; per > 30_000 {
		t.Errorf("a batch of 64 on the real chain: %d gas a commitment, above 30,000", per)
	} else {
		t.Logf("gas (real London chain): a batch of 64 at leaves 1–64, %d a commitment", per)
	}

	view, err := chainview.New(ec, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	path, err := view.MerkleProof(zkhash.Commitment(s))
	if err != nil || path.Index != 18 {
		t.Fatalf("the batch's patient: leaf %d, %v", path.Index, err)
	}
	owner, _ := crypto.GenerateKey()
	proof, pub, err := prover.New(ks).ProveOwnership(circuits.OwnershipWitness{
		Secret: s, Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, crypto.PubkeyToAddress(owner.PublicKey), 0, d.ChainID, d.Relationships),
	})
	if err != nil {
		t.Fatal(err)
	}
	tag := zkhash.Big(pub.Tag)
	tx, err = c.Open(ctx, relayer, tag, 1, crypto.PubkeyToAddress(owner.PublicKey), zkhash.Big(pub.Root), proof[:])
	wait("open", tx, err)

	head, _ := ec.HeaderByNumber(ctx, nil)
	doctor, _ := crypto.GenerateKey()
	g := contracts.GrantRequest{Tag: tag, GranteeKind: 1, Grantee: contracts.AddressGrantee(crypto.PubkeyToAddress(doctor.PublicKey)), Scope: 1, Purpose: 1, Expiry: head.Time + 3600, Deadline: head.Time + 600}
	sig, _ := contracts.Sign(owner, contracts.GrantDigest(contracts.DomainSeparator(d.ChainID, d.Relationships), g))
	tx, err = c.Grant(ctx, relayer, g, sig)
	wait("grant", tx, err)
	rv := contracts.RevokeRequest{Tag: tag, GranteeKind: 1, Grantee: g.Grantee, Nonce: 1, Deadline: head.Time + 600}
	sig, _ = contracts.Sign(owner, contracts.RevokeDigest(contracts.DomainSeparator(d.ChainID, d.Relationships), rv))
	tx, err = c.Revoke(ctx, relayer, rv, sig)
	wait("revoke", tx, err)

	// The same figures as the simulated chain under production rules (grant
	// and revoke differ by a few gas: v of a signature over other times).
	golden := readGolden(t, "../contracts/testdata/gas.golden")
	for _, op := range []string{"enrol", "open", "grant", "revoke"} {
		t.Logf("gas (real London chain, geth %s): %s %d (simulated %d)", chain.GethVersion, op, gas[op], golden[op])
		if diff := int64(gas[op]) - int64(golden[op]); diff > 100 || diff < -100 {
			t.Errorf("%s: %d gas on the real chain, %d simulated", op, gas[op], golden[op])
		}
	}
}

func readGolden(t *testing.T, path string) map[string]uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 {
			out[f[1]], _ = strconv.ParseUint(f[2], 10, 64)
		}
	}
	return out
}

// TestGatewayOnRealNetwork runs provider 2's gateway against the real chain:
// staff enrol a patient and accept its claim, the owner reads its record.
func TestGatewayOnRealNetwork(t *testing.T) {
	ctx := t.Context()
	n := testNetwork(t)
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Deploy(ctx, n, ks, contracts.DevVerifiers())
	if err != nil {
		t.Fatal(err)
	}
	g, err := OpenGateway(ctx, n, 2, GatewayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	walkPatient(t, n, d, ks, g)
	if made, err := g.AnchorOnce(ctx); err != nil || !made {
		t.Fatalf("anchor on the real chain: %v %v", made, err)
	}
	// The mirror sees no drift: the registry's providers are the signers.
	if drift, err := g.Mirror.Step(ctx); err != nil || !drift.None() {
		t.Fatalf("mirror: %v %v", drift, err)
	}

	// The auditor, with only the node's RPC URL, reads the real Clique chain:
	// the consensus signers equal the registry's, the verifiers carry the dev
	// ceremony's keys, the open came from the provider's gateway, no
	// delegate ever transacted — and this lone patient, enrolled and then
	// opened with nobody else in the tree, had an anonymity set of 1: named.
	rep := auditNode(t, n, d)
	want := map[string]audit.Status{
		audit.CheckSigners: audit.StatusPass, audit.CheckVerifiers: audit.StatusWarn, // dev keys: named as not for production audit.CheckRelayer: audit.StatusPass,
		audit.CheckDelegateEth: audit.StatusPass, audit.CheckSharedOwner: audit.StatusPass, audit.CheckPerPatient: audit.StatusPass,
		audit.CheckAnonymitySet: audit.StatusFail,
	}
	for name, st := range want {
		c, ok := rep.Check(name)
		if !ok || c.Status != st {
			var b bytes.Buffer
			rep.WriteText(&b, 5)
			t.Fatalf("audit check %s: want %s\n%s", name, st, b.String())
		}
	}
	if !rep.Failed() || rep.Stats.Relationships != 1 || rep.Stats.MinAnonymitySet != 1 || rep.Stats.Anchors != 1 {
		t.Fatalf("audit: failed=%v, %+v", rep.Failed(), rep.Stats)
	}
}

// walkPatient walks one patient through provider 2's gateway g on the real
// network: created with a record, enrolled (in a batch of one, proven where
// the registry takes proven batches), a relationship opened with a real
// Ownership proof through the desk, and the record read by its owner.
func walkPatient(t *testing.T, n *chain.Network, d *contracts.Deployment, ks *prover.KeySet, g *Gateway) {
	t.Helper()
	ctx := t.Context()
	tokens, err := os.ReadFile(n.Path("provider2/staff-tokens"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(tokens)), "\n")
	staff := strings.Fields(lines[len(lines)-1])[1]
	call := func(method, target, body string, sign *ecdsa.PrivateKey, tag *big.Int) (int, []byte) {
		t.Helper()
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		if sign != nil {
			if err := gatewayauth.Sign(req.Header, gatewayauth.Request{Method: method, Path: req.URL.EscapedPath(), Query: req.URL.RawQuery, BodyHash: gatewayauth.BodyHash([]byte(body)), Tag: tag, Audience: 2}, sign, gatewayauth.Domain{ChainID: d.ChainID, Registry: d.AgentRegistry}, time.Now()); err != nil {
				t.Fatal(err)
			}
		} else {
			req.Header.Set("Authorization", "Bearer "+staff)
		}
		res, err := g.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	keys, err := delegate.FromMnemonic("test test test test test test test test test test test junk", "")
	if err != nil {
		t.Fatal(err)
	}
	if st, b := call("POST", "/admin/patients", `{"id":"p7"}`, nil, nil); st != 201 {
		t.Fatalf("patient: %d %s", st, b)
	}
	obs := `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p7"}}`
	if st, b := call("POST", "/admin/patients/p7/resources", obs, nil, nil); st != 201 {
		t.Fatalf("resources: %d %s", st, b)
	}
	cm, _ := keys.Commitment()
	if st, b := call("POST", "/admin/patients/p7/enrol", `{"commitment":"`+zkhash.Hex(cm)+`"}`, nil, nil); st != 200 {
		t.Fatalf("enrol: %d %s", st, b)
	}
	if err := g.View.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	path, err := g.View.MerkleProof(cm)
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := keys.Delegate(2, 0)
	s, _ := keys.Identity()
	proof, pub, err := prover.New(ks).ProveOwnership(circuits.OwnershipWitness{Secret: s.Element(), Path: path, Provider: 2,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner.Address, 0, d.ChainID, d.Relationships)})
	if err != nil {
		t.Fatal(err)
	}
	claim := fmt.Sprintf(`{"tag":"%s","owner":"%s","root":"%s","proof":"%s"}`, zkhash.Hex(pub.Tag), owner.Address.Hex(), zkhash.Hex(pub.Root), proof)
	if st, b := call("POST", "/admin/patients/p7/claim", claim, nil, nil); st != 200 {
		t.Fatalf("claim: %d %s", st, b)
	}
	if st, b := call("GET", "/fhir/Observation/o1", "", owner.PrivateKey(), zkhash.Big(pub.Tag)); st != 200 || string(b) != obs {
		t.Fatalf("owner read: %d %s", st, b)
	}
}

// TestProvenEnrolmentOnRealNetwork: a network whose keys hold the insertion
// circuit's (as `medrec network up --keys` installs them; here a test's
// single-party keys) deploys a registry that takes proven batches. On the
// real Clique chain a desk's enrolment goes in a batch the gateway proves,
// the patient opens a relationship and reads; the audit reads the insertion
// verifier's key from its code and finds the one the registry records.
func TestProvenEnrolmentOnRealNetwork(t *testing.T) {
	ctx := t.Context()
	keyDir, v := provertest.InsertionDir(t)
	n := testNetwork(t)
	if _, err := InstallKeys(n.Dir(), keyDir); err != nil {
		t.Fatal(err)
	}
	ks, err := Keys(n.Dir(), true)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Deploy(ctx, n, ks, v)
	if err != nil {
		t.Fatal(err)
	}
	if d.InsertionVerifier == (common.Address{}) {
		t.Fatal("keys with the insertion circuit's deployed a frontier registry")
	}
	g, err := OpenGateway(ctx, n, 2, GatewayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	walkPatient(t, n, d, ks, g)

	rep := auditNode(t, n, d)
	// The insertion verifier carries the key the registry records; with no
	// ceremony's keys given the audit says it cannot tie it to one (and the
	// patients' verifiers carry the dev keys): warnings, no failure.
	c, ok := rep.Check(audit.CheckVerifiers)
	if !ok || c.Status != audit.StatusWarn || len(c.Findings) == 0 || !strings.Contains(c.Findings[0].Message, "insertion verifier at "+d.InsertionVerifier.Hex()+" carries the key the registry records") {
		t.Fatalf("the audit of a proven registry's verifiers: %+v", c)
	}
	if rep.Stats.Enrolled != 1 {
		t.Fatalf("the audit counted %d enrolments; want 1", rep.Stats.Enrolled)
	}
}

// auditNode audits deployment d with only the RPC URL of n's first node.
func auditNode(t *testing.T, n *chain.Network, d *contracts.Deployment) *audit.Report {
	t.Helper()
	src, err := audit.Dial(t.Context(), n.State().Nodes[0].RPC, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Run(t.Context(), src, d, audit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
