package devnet

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"io"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// The fault tests run the system on a real network (geth Clique) and check
// what users see: signed reads through a gateway, grants and revocations
// relayed on the real chain. Figures they log as MEASURED are collected in
// docs/reliability.md.

const faultStaffToken = "fault-test-staff-token"

// faultWorld is a real network with the contracts, a patient with records
// at provider `at`, opened on chain, and what it takes to build that
// provider's gateway again and again on the same records database.
type faultWorld struct {
	t     *testing.T
	n     *chain.Network
	d     *contracts.Deployment
	ks    *prover.KeySet
	at    int               // the patient's provider
	db    string            // its records database (SQLite file)
	owner *ecdsa.PrivateKey // the relationship's owner delegate
	tag   *big.Int
	nonce uint32 // the relationship's next signature nonce
}

// newFaultWorld deploys on n and opens a patient's relationship at
// provider at, through that provider's gateway.
func newFaultWorld(t *testing.T, n *chain.Network, at int) *faultWorld {
	t.Helper()
	return newFaultWorldOf(t, n, at, "test test test test test test test test test test test junk", gatewaySetup{interval: time.Nanosecond})
}

// newFaultWorldOf is newFaultWorld for the patient of words, its gateway
// set up with s while the patient is opened.
func newFaultWorldOf(t *testing.T, n *chain.Network, at int, words string, setup gatewaySetup) *faultWorld {
	t.Helper()
	ctx := t.Context()
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Deploy(ctx, n, ks, contracts.DevVerifiers())
	if err != nil {
		t.Fatal(err)
	}
	w := &faultWorld{t: t, n: n, d: d, ks: ks, at: at, db: filepath.Join(t.TempDir(), "records.db")}
	g := w.gateway(setup)
	defer g.close()
	keys, err := delegate.FromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	g.mustStaff("POST", "/admin/patients", `{"id":"p7"}`, 201)
	g.mustStaff("POST", "/admin/patients/p7/resources", faultObservation, 201)
	cm, _ := keys.Commitment()
	g.mustStaff("POST", "/admin/patients/p7/enrol", `{"commitment":"`+zkhash.Hex(cm)+`"}`, 200)
	if err := g.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mp, err := g.view.MerkleProof(cm)
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := keys.Delegate(uint32(at), 0)
	s, _ := keys.Identity()
	proof, pub, err := prover.New(ks).ProveOwnership(circuits.OwnershipWitness{Secret: s.Element(), Path: mp, Provider: uint32(at),
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner.Address, 0, d.ChainID, d.Relationships)})
	if err != nil {
		t.Fatal(err)
	}
	claim := fmt.Sprintf(`{"tag":"%s","owner":"%s","root":"%s","proof":"%s"}`, zkhash.Hex(pub.Tag), owner.Address.Hex(), zkhash.Hex(pub.Root), proof)
	g.mustStaff("POST", "/admin/patients/p7/claim", claim, 200)
	w.owner, w.tag = owner.PrivateKey(), zkhash.Big(pub.Tag)
	// The claim answered once the opening was mined on the gateway's node;
	// a Clique reorg (two signers sealing the same height) can take that
	// block out until the transaction is mined again a block or two later,
	// and the gateway, following its node, refuses meanwhile. Allow that,
	// and say so; anything lasting is a failure.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, body := g.readBody(w.owner)
		if st == 200 {
			break
		}
		depth, node := deepestReorg(t, n)
		if !time.Now().Before(deadline) {
			t.Fatalf("owner read after the claim: %d %s (deepest reorg logged: %d block(s), at provider %d)", st, body, depth, node)
		}
		t.Logf("owner read after the claim: %d %s (deepest reorg logged: %d block(s), at provider %d); reading again", st, body, depth, node)
		time.Sleep(250 * time.Millisecond)
	}
	return w
}

const faultObservation = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p7"}}`

// gatewaySetup is how a test gateway follows the chain.
type gatewaySetup struct {
	heads    bool          // follow new heads over the node's WebSocket
	interval time.Duration // SyncInterval
	node     int           // the node it reads (default: its own provider's)
	// ipc: read the node over its IPC socket (view and heads), as a gateway
	// on the node's own host may — a cut network link does not cut it off.
	ipc bool
}

// testGateway is provider w.at's gateway on w.db.
type testGateway struct {
	w    *faultWorld
	g    *dbmanager.Gateway
	view *chainview.View
	stop []func()
}

func (g *testGateway) close() {
	for i := len(g.stop) - 1; i >= 0; i-- {
		g.stop[i]()
	}
}

// gateway builds provider w.at's gateway as set up; when following heads it
// returns once subscribed.
func (w *faultWorld) gateway(s gatewaySetup) *testGateway {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g := &testGateway{w: w, stop: []func(){cancel}}
	if s.node == 0 {
		s.node = w.at
	}
	ns := w.n.State().Nodes[s.node-1]
	rpcURL, wsURL := ns.RPC, ns.WS()
	if s.ipc {
		rpcURL, wsURL = ns.IPC, ns.IPC
	}
	ec, err := ethclient.DialContext(ctx, rpcURL)
	if err != nil {
		t.Fatal(err)
	}
	g.stop = append(g.stop, ec.Close)
	db, err := sqlstore.OpenSQLite(ctx, w.db)
	if err != nil {
		t.Fatal(err)
	}
	g.stop = append(g.stop, func() { db.Close() })
	if g.view, err = chainview.NewWithNodes(ec, w.d, db.RegistryNodes()); err != nil {
		t.Fatal(err)
	}
	key, err := GatewayKey(w.n, w.at)
	if err != nil {
		t.Fatal(err)
	}
	cfg := dbmanager.Config{
		Provider: uint32(w.at), Store: db, View: g.view, Chain: contracts.NewClient(ec, w.d),
		Relayer: bind.NewKeyedTransactor(key, w.d.ChainID), Prover: prover.New(w.ks),
		StaffTokens: map[string]string{dbmanager.TokenHash(faultStaffToken): "desk"}, SyncInterval: s.interval,
		RateLimit: 1 << 30, ReaderRateLimit: 1 << 30,
	}
	if s.heads {
		ws, err := ethclient.DialContext(ctx, wsURL)
		if err != nil {
			t.Fatal(err)
		}
		g.stop = append(g.stop, ws.Close)
		cfg.Heads = ws
	}
	if g.g, err = dbmanager.New(cfg); err != nil {
		t.Fatal(err)
	}
	if s.heads {
		go g.g.FollowHeads(ctx)
		// Subscribed once a new head has been seen through it: the view
		// then advances without any request.
		h := g.view.Head()
		eventually(t, 20*time.Second, "the gateway follows heads", func() bool { return g.view.Head() > h+1 })
	}
	return g
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *testGateway) mustStaff(method, target, body string, want int) {
	g.w.t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+faultStaffToken)
	res, err := g.g.App().Test(req, -1)
	if err != nil {
		g.w.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		g.w.t.Fatalf("%s %s: %d %s", method, target, res.StatusCode, b)
	}
}

// read is a signed read of the patient's observation by key: its status.
func (g *testGateway) read(key *ecdsa.PrivateKey) int {
	g.w.t.Helper()
	st, _ := g.readBody(key)
	return st
}

// readBody is read, with the answer's body.
func (g *testGateway) readBody(key *ecdsa.PrivateKey) (int, string) {
	g.w.t.Helper()
	w := g.w
	req := httptest.NewRequest("GET", "/fhir/Observation/o1", nil)
	if err := gatewayauth.Sign(req.Header, gatewayauth.Request{Method: "GET", Path: req.URL.EscapedPath(), BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: uint32(w.at)},
		key, gatewayauth.Domain{ChainID: w.d.ChainID, Registry: w.d.AgentRegistry}, time.Now()); err != nil {
		w.t.Fatal(err)
	}
	res, err := g.g.App().Test(req, -1)
	if err != nil {
		w.t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// send signs a grant (revoke false) or a revocation of grantee with the
// owner and sends it with provider via's gateway account to via's node —
// never through the gateway under test, which learns of it from the chain
// alone. It returns the transaction; the caller waits for it.
func (w *faultWorld) send(via int, grantee *ecdsa.PrivateKey, revoke bool) *types.Transaction {
	w.t.Helper()
	tx, err := w.trySend(w.t.Context(), via, grantee, revoke, w.nonce)
	if err != nil {
		w.t.Fatal(err)
	}
	w.nonce++
	return tx
}

// trySend is send at an explicit owner nonce, failing with an error.
func (w *faultWorld) trySend(ctx context.Context, via int, grantee *ecdsa.PrivateKey, revoke bool, nonce uint32) (*types.Transaction, error) {
	ec, err := ethclient.DialContext(ctx, w.n.State().Nodes[via-1].IPC)
	if err != nil {
		return nil, err
	}
	defer ec.Close()
	key, err := GatewayKey(w.n, via)
	if err != nil {
		return nil, err
	}
	c := contracts.NewClient(ec, w.d)
	head, err := ec.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, err
	}
	dom := contracts.DomainSeparator(w.d.ChainID, w.d.Relationships)
	addr := contracts.AddressGrantee(crypto.PubkeyToAddress(grantee.PublicKey))
	if revoke {
		rv := contracts.RevokeRequest{Tag: w.tag, GranteeKind: 1, Grantee: addr, Nonce: nonce, Deadline: head.Time + 600}
		sig, _ := contracts.Sign(w.owner, contracts.RevokeDigest(dom, rv))
		return c.Revoke(ctx, bind.NewKeyedTransactor(key, w.d.ChainID), rv, sig)
	}
	gr := contracts.GrantRequest{Tag: w.tag, GranteeKind: 1, Grantee: addr, Scope: uint64(access.AllTypes), Purpose: uint8(access.Treatment), Expiry: head.Time + 86400, Nonce: nonce, Deadline: head.Time + 600}
	sig, _ := contracts.Sign(w.owner, contracts.GrantDigest(dom, gr))
	return c.Grant(ctx, bind.NewKeyedTransactor(key, w.d.ChainID), gr, sig)
}

// ipc dials provider p's node over its IPC socket: the test runs on the
// nodes' machine, and a cut network link (partition_test.go) leaves it.
func (w *faultWorld) ipc(p int) *ethclient.Client {
	w.t.Helper()
	ec, err := ethclient.DialContext(w.t.Context(), w.n.State().Nodes[p-1].IPC)
	if err != nil {
		w.t.Fatal(err)
	}
	return ec
}

// minedOn waits until node p has tx in a block and returns when it saw it
// (polled every millisecond: the moment the block is in p's node, to ~1 ms).
func (w *faultWorld) minedOn(p int, tx *types.Transaction, limit time.Duration) time.Time {
	t := w.t
	t.Helper()
	ec := w.ipc(p)
	defer ec.Close()
	deadline := time.Now().Add(limit)
	for {
		if r, err := ec.TransactionReceipt(t.Context(), tx.Hash()); err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				t.Fatalf("transaction %s failed", tx.Hash())
			}
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("transaction %s not in node %d within %s", tx.Hash(), p, limit)
		}
		time.Sleep(time.Millisecond)
	}
}

// revocationWindow grants doctor, waits until g serves it, then has the
// revocation mined (sent to node via) while doctor reads through g back to
// back. It returns how long after the revocation's block was in g's node a
// read was still served (≤ 0: none was), and when the first was refused.
func (w *faultWorld) revocationWindow(g *testGateway, via int) (served, refused time.Duration) {
	t := w.t
	t.Helper()
	doctor, _ := crypto.GenerateKey()
	w.minedOn(w.at, w.send(via, doctor, false), 30*time.Second)
	eventually(t, 10*time.Second, "the grant served", func() bool { return g.read(doctor) == 200 })

	type attempt struct {
		start  time.Time
		status int
	}
	var (
		mu       sync.Mutex
		attempts []attempt
		stop     = make(chan struct{})
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			st := g.read(doctor)
			mu.Lock()
			attempts = append(attempts, attempt{start, st})
			mu.Unlock()
		}
	}()
	inNode := w.minedOn(w.at, w.send(via, doctor, true), 30*time.Second)
	eventually(t, 10*time.Second, "the revocation enforced", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(attempts) > 0 && attempts[len(attempts)-1].status == 403
	})
	close(stop)
	<-done
	served, refused = -time.Hour, time.Hour
	sawRefusal := false
	for _, a := range attempts {
		switch a.status {
		case 200:
			if sawRefusal {
				t.Fatalf("a read was served after one was refused")
			}
			served = max(served, a.start.Sub(inNode))
		case 403:
			sawRefusal = true
			refused = min(refused, a.start.Sub(inNode))
		default:
			t.Fatalf("read answered %d", a.status)
		}
	}
	return served, refused
}

// TestRevocationFollowsHeads: on a real network, a revocation relayed
// through another provider reaches the gateway through the chain only.
// Following heads over the node's WebSocket with SyncInterval an hour, the
// gateway enforces it without any poll (a polling gateway would serve the
// revoked doctor for the hour). The windows of the default setting, with
// and without heads, are measured for docs/reliability.md.
func TestRevocationFollowsHeads(t *testing.T) {
	n := testNetwork(t)
	w := newFaultWorld(t, n, 2)

	g := w.gateway(gatewaySetup{heads: true, interval: time.Hour})
	served, refused := w.revocationWindow(g, 1)
	g.close()
	t.Logf("MEASURED revocation, heads followed, SyncInterval 1 h: last read served %s, first refused %s after the block was in the gateway's node", fmtWindow(served), fmtWindow(refused))

	for _, s := range []struct {
		name  string
		setup gatewaySetup
	}{
		{"polling every 500 ms (before)", gatewaySetup{interval: 500 * time.Millisecond}},
		{"heads followed, SyncInterval 500 ms (default)", gatewaySetup{heads: true, interval: 500 * time.Millisecond}},
	} {
		var servedAll []time.Duration
		for range faultCycles() {
			g := w.gateway(s.setup)
			served, refused := w.revocationWindow(g, 1)
			g.close()
			servedAll = append(servedAll, served)
			t.Logf("revocation, %s: last read served %s, first refused %s after the block was in the node", s.name, fmtWindow(served), fmtWindow(refused))
		}
		slices.Sort(servedAll)
		t.Logf("MEASURED revocation, %s: reads served up to %s after the block was in the gateway's node (worst of %d)", s.name, fmtWindow(servedAll[len(servedAll)-1]), len(servedAll))
	}
}

// faultCycles is how many times the measuring tests repeat a measurement:
// MEDREC_FAULT_CYCLES (make soak sets more), default 1.
func faultCycles() int {
	if n, err := strconv.Atoi(os.Getenv("MEDREC_FAULT_CYCLES")); err == nil && n > 0 {
		return n
	}
	return 1
}

func fmtWindow(d time.Duration) string {
	if d <= 0 {
		return "none (" + d.Round(100*time.Microsecond).String() + ")"
	}
	return d.Round(100 * time.Microsecond).String()
}

// TestReadsWhileAuthorityDown: what users see while authorities crash. One
// authority of three down: the chain goes on with two, the owner and a
// doctor read through provider 2's gateway as before, and a revocation
// relayed meanwhile is enforced. The gateway's own node down: reads are
// refused with 503 (it cannot see the chain), none served; when the node is
// back, the gateway follows its heads again and serves.
func TestReadsWhileAuthorityDown(t *testing.T) {
	ctx := t.Context()
	n := testNetwork(t)
	w := newFaultWorld(t, n, 2)
	g := w.gateway(gatewaySetup{heads: true, interval: 500 * time.Millisecond})
	defer g.close()
	doctor, _ := crypto.GenerateKey()
	w.minedOn(2, w.send(1, doctor, false), 30*time.Second)
	eventually(t, 10*time.Second, "the grant served", func() bool { return g.read(doctor) == 200 })

	if err := n.Kill(ctx, 3); err != nil {
		t.Fatal(err)
	}
	h := g.view.Head()
	reads := 0
	for start := time.Now(); g.view.Head() < h+3; reads += 2 {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no 3 blocks with provider 3 down (head %d)", g.view.Head())
		}
		if st := g.read(w.owner); st != 200 {
			t.Fatalf("owner read with provider 3 down: %d", st)
		}
		if st := g.read(doctor); st != 200 {
			t.Fatalf("doctor read with provider 3 down: %d", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("provider 3 down: %d reads served over 3 blocks", reads)
	w.minedOn(2, w.send(1, doctor, true), 30*time.Second)
	eventually(t, 5*time.Second, "the revocation enforced with provider 3 down", func() bool { return g.read(doctor) == 403 })

	if err := n.Start(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := n.Kill(ctx, 2); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var lastServed time.Duration
	eventually(t, 10*time.Second, "reads refused with the gateway's node down", func() bool {
		at := time.Since(killed)
		switch st := g.read(w.owner); st {
		case 200:
			lastServed = at
			return false
		case 503:
			return true
		default:
			t.Fatalf("owner read with the gateway's node down: %d", st)
			return false
		}
	})
	for i := 0; i < 3; i++ {
		if st := g.read(w.owner); st != 503 {
			t.Fatalf("read %d with the gateway's node down: %d", i, st)
		}
	}
	t.Logf("MEASURED gateway's node killed: reads served on the view for %s (SyncInterval 500 ms), then 503", lastServed.Round(time.Millisecond))

	restart := time.Now()
	if err := n.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "reads again, following heads", func() bool { return g.g.FollowingHeads() && g.read(w.owner) == 200 })
	t.Logf("MEASURED gateway's node restarted: serving and following heads again %s after the restart began", time.Since(restart).Round(10*time.Millisecond))
	if st := g.read(doctor); st != 403 {
		t.Fatalf("the revoked doctor after the restart: %d", st)
	}
}
