package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/params"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
	"github.com/medrec-zk/medrec/zkhash"
)

// sim is a simulated chain with real proofs: patients are named by label,
// their secrets and delegates derived from it.
type sim struct {
	t *testing.T
	c *simchain.Chain
	v *chainview.View
	p *prover.Prover
}

func newSim(t *testing.T, providers int) *sim {
	t.Helper()
	return newSimOn(t, simchain.New(t, providers, nil))
}

func newSimOn(t *testing.T, c *simchain.Chain) *sim {
	t.Helper()
	v, err := chainview.New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	return &sim{t: t, c: c, v: v, p: prover.New(ks)}
}

func secret(label string) fr.Element {
	var s fr.Element
	s.SetBytes(crypto.Keccak256([]byte("audit test/" + label)))
	return s
}

func (s *sim) provider(id uint32) simchain.Provider { return s.c.Providers[id-1] }

func (s *sim) wait(tx *types.Transaction, err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.c.Client.Wait(context.Background(), tx); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sim) enrol(provider uint32, labels ...string) {
	s.t.Helper()
	for _, l := range labels {
		s.wait(s.c.Client.Enrol(context.Background(), s.c.Auth(s.provider(provider).Gateway), zkhash.Big(zkhash.Commitment(secret(l)))))
	}
}

// proof proves label's ownership at provider, binding owner and counter.
func (s *sim) proof(provider uint32, label string, action circuits.Action, owner common.Address, counter uint64) ([]byte, circuits.OwnershipPublic) {
	s.t.Helper()
	if err := s.v.Sync(context.Background()); err != nil {
		s.t.Fatal(err)
	}
	path, err := s.v.MerkleProof(zkhash.Commitment(secret(label)))
	if err != nil {
		s.t.Fatal(err)
	}
	proof, pub, err := s.p.ProveOwnership(circuits.OwnershipWitness{
		Secret: secret(label), Path: path, Provider: provider,
		Signal: circuits.OwnershipSignal(action, owner, counter, s.c.ChainID, s.c.D.Relationships),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return proof[:], pub
}

// open opens label's relationship at provider for owner, relayed by the provider's gateway.
func (s *sim) open(provider uint32, label string, owner *ecdsa.PrivateKey) *big.Int {
	s.t.Helper()
	proof, pub := s.proof(provider, label, circuits.ActionOpen, simchain.Addr(owner), 0)
	s.wait(s.c.Client.Open(context.Background(), s.c.Auth(s.provider(provider).Gateway), zkhash.Big(pub.Tag), provider, simchain.Addr(owner), zkhash.Big(pub.Root), proof))
	return zkhash.Big(pub.Tag)
}

func (s *sim) grant(relayer uint32, tag *big.Int, owner *ecdsa.PrivateKey, kind uint8, grantee [32]byte, nonce uint32) {
	s.t.Helper()
	s.grantUntil(relayer, tag, owner, kind, grantee, nonce, s.c.Now(s.t)+3600)
}

// grantUntil is grant with the expiry given.
func (s *sim) grantUntil(relayer uint32, tag *big.Int, owner *ecdsa.PrivateKey, kind uint8, grantee [32]byte, nonce uint32, expiry uint64) {
	s.t.Helper()
	g := contracts.GrantRequest{Tag: tag, GranteeKind: kind, Grantee: grantee, Scope: 5, Purpose: 1,
		Expiry: expiry, Nonce: nonce, Deadline: s.c.Now(s.t) + 600}
	sig, err := contracts.Sign(owner, contracts.GrantDigest(contracts.DomainSeparator(s.c.ChainID, s.c.D.Relationships), g))
	if err != nil {
		s.t.Fatal(err)
	}
	s.wait(s.c.Client.Grant(context.Background(), s.c.Auth(s.provider(relayer).Gateway), g, sig))
}

func (s *sim) revoke(relayer uint32, tag *big.Int, owner *ecdsa.PrivateKey, kind uint8, grantee [32]byte, nonce uint32) {
	s.t.Helper()
	r := contracts.RevokeRequest{Tag: tag, GranteeKind: kind, Grantee: grantee, Nonce: nonce, Deadline: s.c.Now(s.t) + 600}
	sig, err := contracts.Sign(owner, contracts.RevokeDigest(contracts.DomainSeparator(s.c.ChainID, s.c.D.Relationships), r))
	if err != nil {
		s.t.Fatal(err)
	}
	s.wait(s.c.Client.Revoke(context.Background(), s.c.Auth(s.provider(relayer).Gateway), r, sig))
}

// later moves the chain's clock.
func (s *sim) later(d time.Duration) {
	s.t.Helper()
	s.c.Later(s.t, d)
}

// source is the chain as an RPC client sees it, with raw calls, as Dial
// gives. (The simulated backend hides its *ethclient.Client behind an
// unexported wrapper; reflection reaches the embedded field.)
func (s *sim) source() Source {
	ec := reflect.ValueOf(s.c.Sim.Client()).FieldByName("Client").Interface().(*ethclient.Client)
	return rpcSource{ec}
}

func (s *sim) audit(cfg Config) *Report {
	s.t.Helper()
	return s.auditOf(s.c.D, cfg)
}

func (s *sim) auditOf(d *contracts.Deployment, cfg Config) *Report {
	s.t.Helper()
	r, err := Run(context.Background(), s.source(), d, cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

// send sends a raw transaction from key (mined even if it reverts).
func (s *sim) send(key *ecdsa.PrivateKey, to common.Address, value *big.Int, data []byte) *types.Transaction {
	s.t.Helper()
	ctx := context.Background()
	nonce, err := s.c.Backend.PendingNonceAt(ctx, simchain.Addr(key))
	if err != nil {
		s.t.Fatal(err)
	}
	head, _ := s.c.Backend.HeaderByNumber(ctx, nil)
	tx, err := types.SignTx(types.NewTx(&types.DynamicFeeTx{
		ChainID: s.c.ChainID, Nonce: nonce, To: &to, Value: value, Data: data, Gas: 100_000,
		GasTipCap: big.NewInt(params.GWei), GasFeeCap: new(big.Int).Add(new(big.Int).Mul(head.BaseFee, big.NewInt(2)), big.NewInt(params.GWei)),
	}), types.LatestSignerForChainID(s.c.ChainID), key)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.c.Backend.SendTransaction(ctx, tx); err != nil {
		s.t.Fatal(err)
	}
	return tx
}

func key(label string) *ecdsa.PrivateKey { return simchain.Key("audit/" + label) }

func anonGrantee(label string) [32]byte { return zkhash.Bytes32(secret("grant/" + label)) }

// expectClean: every check but the verifiers (dev keys: a warning) and the
// signers (not Clique: skipped) passes.
func expectClean(t *testing.T, r *Report) {
	t.Helper()
	want := map[string]Status{CheckVerifiers: StatusWarn, CheckSigners: StatusSkip}
	for _, c := range r.Checks {
		w, ok := want[c.Name]
		if !ok {
			w = StatusPass
		}
		if c.Status != w {
			t.Errorf("%s: %s (%s), want %s: %+v", c.Name, c.Status, c.Summary, w, c.Findings)
		}
	}
	if r.Failed() || !r.Passed {
		t.Fatal("a clean chain failed the audit")
	}
}

// TestCleanChain: several patients enrolled, opens at two providers relayed
// by their gateways (ten minutes apart), an anonymous grant, a grant to a
// clinician at one provider and its revocation, a rotation and an anchor.
func TestCleanChain(t *testing.T) {
	s := newSim(t, 2)
	s.enrol(1, "alice", "bob")
	s.enrol(2, "carol", "dave")
	alice := s.open(1, "alice", key("alice-1"))
	bob := s.open(1, "bob", key("bob-1"))
	s.later(11 * time.Minute)
	s.open(2, "carol", key("carol-2"))
	s.open(2, "dave", key("dave-2"))
	s.grant(1, alice, key("alice-1"), 2, anonGrantee("viewer"), 0)
	doctor := contracts.AddressGrantee(simchain.Addr(key("doctor")))
	s.grant(1, bob, key("bob-1"), 1, doctor, 0)
	s.revoke(2, bob, key("bob-1"), 1, doctor, 1)
	proof, pub := s.proof(1, "bob", circuits.ActionRotate, simchain.Addr(key("bob-1b")), 1)
	s.wait(s.c.Client.Rotate(context.Background(), s.c.Auth(s.provider(2).Gateway), bob, simchain.Addr(key("bob-1b")), zkhash.Big(pub.Root), proof))
	s.wait(s.c.Client.Anchor(context.Background(), s.c.Auth(s.provider(1).Gateway), [32]byte{1}, 0, 3, [32]byte{2}))

	for _, logsOnly := range []bool{false, true} {
		r := s.audit(Config{LogsOnly: logsOnly})
		expectClean(t, r)
		st := r.Stats
		if st.Providers != 2 || st.Enrolled != 4 || st.Opens != 4 || st.Rotations != 1 || st.Delegates != 5 || st.AddressGrants != 1 ||
			st.AnonymousGrants != 1 || st.Revocations != 1 || st.Anchors != 1 || st.MinAnonymitySet != 4 {
			t.Fatalf("stats %+v", st)
		}
		if !logsOnly && st.Transactions == 0 {
			t.Fatal("no transactions scanned")
		}
	}

	// The simulated backend's client is a Source too (without raw calls).
	src, ok := s.c.Sim.Client().(Source)
	if !ok {
		t.Fatal("the simulated client is not a Source")
	}
	r, err := Run(context.Background(), src, s.c.D, Config{})
	if err != nil {
		t.Fatal(err)
	}
	expectClean(t, r)
	expect(t, r, CheckSigners, StatusSkip)

	// The outputs: JSON for machines, a table for people, the chart.
	r = s.audit(Config{})
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Checks) != 10 || !back.Passed {
		t.Fatalf("JSON: %v %+v", err, back)
	}
	var text bytes.Buffer
	r.WriteText(&text, 5)
	for _, want := range []string{"anonymity-set", "PASS", "WARN", "SKIP", "not a Clique chain", "Audit PASSED"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("text output lacks %q:\n%s", want, text.String())
		}
	}
	var svg bytes.Buffer
	if err := r.WriteChart(&svg, false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(svg.String(), "<svg") || strings.Count(svg.String(), "<circle") != 4+1 || strings.Contains(svg.String(), "http://") && !strings.Contains(svg.String(), `xmlns="http://www.w3.org/2000/svg"`) {
		t.Fatalf("chart:\n%s", svg.String())
	}
}

// TestDecodeMatchesBindings: the hand decoders agree with the bindings on
// the logs of a real chain.
func TestDecodeMatchesBindings(t *testing.T) {
	s := newSim(t, 1)
	s.enrol(1, "alice", "bob")
	tag := s.open(1, "alice", key("alice-1"))
	s.grant(1, tag, key("alice-1"), 1, contracts.AddressGrantee(simchain.Addr(key("doctor"))), 0)
	s.revoke(1, tag, key("alice-1"), 1, contracts.AddressGrantee(simchain.Addr(key("doctor"))), 1)
	proof, pub := s.proof(1, "alice", circuits.ActionRotate, simchain.Addr(key("alice-1b")), 1)
	s.wait(s.c.Client.Rotate(context.Background(), s.c.Auth(s.provider(1).Gateway), tag, simchain.Addr(key("alice-1b")), zkhash.Big(pub.Root), proof))
	s.grant(1, tag, key("alice-1b"), 2, anonGrantee("viewer"), 2) // epoch 1
	logs, err := s.c.Backend.FilterLogs(context.Background(), ethereumQuery(s.c.D))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := contractABIs()
	rels, patients := bindings.NewRelationships(), bindings.NewPatientRegistry()
	seen := map[string]bool{}
	for i := range logs {
		l := &logs[i]
		switch l.Topics[0] {
		case a.opened:
			got, err1 := decodeOpened(l)
			want, err2 := rels.UnpackOpenedEvent(l)
			if err1 != nil || err2 != nil || got.owner != want.Owner || got.provider != want.Provider || new(big.Int).SetBytes(got.tag[:]).Cmp(want.Tag) != 0 || new(big.Int).SetBytes(got.root[:]).Cmp(want.Root) != 0 {
				t.Fatalf("Opened: %+v %+v %v %v", got, want, err1, err2)
			}
			seen["Opened"] = true
		case a.rotated:
			got, err1 := decodeRotated(l)
			want, err2 := rels.UnpackRotatedEvent(l)
			if err1 != nil || err2 != nil || got.owner != want.Owner || got.rotation != want.Rotation || new(big.Int).SetBytes(got.tag[:]).Cmp(want.Tag) != 0 {
				t.Fatalf("Rotated: %+v %+v", got, want)
			}
			seen["Rotated"] = true
		case a.granted, a.revoked:
			got, err1 := decodeGranted(l, l.Topics[0] == a.revoked)
			var kind uint8
			var grantee [32]byte
			var expiry uint64
			var epoch uint32
			var err2 error
			if l.Topics[0] == a.revoked {
				var e *bindings.RelationshipsRevoked
				e, err2 = rels.UnpackRevokedEvent(l)
				kind, grantee = e.GranteeKind, e.Grantee
				seen["Revoked"] = true
			} else {
				var e *bindings.RelationshipsGranted
				e, err2 = rels.UnpackGrantedEvent(l)
				kind, grantee, expiry, epoch = e.GranteeKind, e.Grantee, e.Expiry, e.Epoch
				seen["Granted"] = true
			}
			if err1 != nil || err2 != nil || got.kind != kind || got.grantee != grantee || got.expiry != expiry || got.epoch != epoch {
				t.Fatalf("grant event: %+v %v %v", got, err1, err2)
			}
		case a.enrolled:
			got, err1 := decodeEnrolled(l)
			want, err2 := patients.UnpackEnrolledEvent(l)
			if err1 != nil || err2 != nil || got.start != want.Start || got.provider != want.Provider || new(big.Int).SetBytes(got.root[:]).Cmp(want.Root) != 0 ||
				len(got.commitments) != len(want.Commitments) {
				t.Fatalf("Enrolled: %+v %+v", got, want)
			}
			for i, c := range want.Commitments {
				if new(big.Int).SetBytes(got.commitments[i][:]).Cmp(c) != 0 {
					t.Fatalf("Enrolled commitment %d: %x, want %x", i, got.commitments[i], c)
				}
			}
			seen["Enrolled"] = true
		}
	}
	if len(seen) != 5 {
		t.Fatalf("events seen: %v", seen)
	}
}

func TestSharedOwnerAcrossProviders(t *testing.T) {
	s := newSim(t, 2)
	s.enrol(1, "alice", "bob", "carol")
	a1 := s.open(1, "alice", key("alice"))
	a2 := s.open(2, "alice", key("alice")) // the same delegate at both providers
	r := s.audit(Config{})
	owner := simchain.Addr(key("alice")).Hex()
	c := expect(t, r, CheckSharedOwner, StatusFail, "address "+owner+" owns (or owned) relationships at providers [1 2]")
	if len(c.Findings[0].Tags) != 2 || c.Findings[0].Tags[0] != tagHex([32]byte(common.LeftPadBytes(a1.Bytes(), 32))) || c.Findings[0].Tags[1] != tagHex([32]byte(common.LeftPadBytes(a2.Bytes(), 32))) {
		t.Fatalf("tags %v", c.Findings[0].Tags)
	}
	if len(r.Clusters) != 1 || len(r.Clusters[0].Owners) != 1 || r.Clusters[0].Owners[0].Hex() != owner {
		t.Fatalf("clusters %+v", r.Clusters)
	}
	if !r.Failed() {
		t.Fatal("audit passed")
	}
}

func TestFundedDelegate(t *testing.T) {
	s := newSim(t, 1)
	s.enrol(1, "alice", "bob")
	s.open(1, "alice", key("alice"))
	delegate := simchain.Addr(key("alice"))
	funding := s.send(s.c.Deployer, delegate, big.NewInt(params.Ether), nil)
	r := s.audit(Config{})
	expect(t, r, CheckDelegateEth, StatusFail,
		"delegate "+delegate.Hex()+" received 1 ether (1000000000000000000 wei) from "+simchain.Addr(s.c.Deployer).Hex()+" in transaction "+funding.Hash().Hex(),
		"holds 1 ether")
	// The delegate spends: its own transaction and its nonce are found too.
	s.send(key("alice"), simchain.Addr(s.c.Deployer), big.NewInt(params.GWei), nil)
	r = s.audit(Config{})
	expect(t, r, CheckDelegateEth, StatusFail, "delegate "+delegate.Hex()+" sent transaction", "has sent 1 transaction(s)")
	// Without the transaction scan the head state still gives it away.
	r = s.audit(Config{LogsOnly: true})
	expect(t, r, CheckDelegateEth, StatusFail, "has sent 1 transaction(s)", "holds")
}

func TestSharedAddressGrantee(t *testing.T) {
	s := newSim(t, 2)
	s.enrol(1, "alice", "bob")
	s.enrol(2, "carol")
	alice := s.open(1, "alice", key("alice-1"))
	s.later(time.Hour)
	carol := s.open(2, "carol", key("carol-2"))
	doctor := simchain.Addr(key("doctor"))
	s.grant(1, alice, key("alice-1"), 1, contracts.AddressGrantee(doctor), 0)
	s.grant(2, carol, key("carol-2"), 1, contracts.AddressGrantee(doctor), 0)
	r := s.audit(Config{})
	expect(t, r, CheckGranteeLinks, StatusFail, "address grantee "+doctor.Hex()+" holds grants on 2 relationships at providers [1 2]")
	if len(r.Clusters) != 1 || len(r.Clusters[0].Grantees) != 1 || r.Clusters[0].Grantees[0] != doctor || len(r.Clusters[0].Tags) != 2 {
		t.Fatalf("clusters %+v", r.Clusters)
	}
	for _, name := range []string{CheckSharedOwner, CheckAnonymitySet, CheckCloseOpens} {
		expect(t, r, name, StatusPass)
	}
}

// TestSingletonOpen: one patient enrolled and opening at once — the proof's
// anonymity set is that patient alone.
func TestSingletonOpen(t *testing.T) {
	s := newSim(t, 1)
	s.enrol(1, "alice")
	s.open(1, "alice", key("alice"))
	s.enrol(1, "bob", "carol")
	s.open(1, "bob", key("bob"))
	r := s.audit(Config{})
	c := expect(t, r, CheckAnonymitySet, StatusFail, "anonymity set 1 (below 2)")
	if len(c.Findings) != 1 || r.Stats.MinAnonymitySet != 1 {
		t.Fatalf("%+v", c)
	}
	// With a higher threshold the second open (set 3) fails too.
	r = s.audit(Config{MinAnonymity: 4})
	if c := expect(t, r, CheckAnonymitySet, StatusFail, "anonymity set 3 (below 4)"); len(c.Findings) != 2 {
		t.Fatalf("%+v", c)
	}
}

func TestCloseOpensWarn(t *testing.T) {
	s := newSim(t, 2)
	s.enrol(1, "alice", "bob")
	s.open(1, "alice", key("alice-1"))
	s.later(3 * time.Minute)
	s.open(2, "alice", key("alice-2"))
	r := s.audit(Config{})
	expect(t, r, CheckCloseOpens, StatusWarn, "opens at providers 1")
	if r.Failed() {
		t.Fatal("a warning failed the audit")
	}
	// A two-minute window does not see them.
	expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckCloseOpens, StatusPass)
}

// TestGatewayMovedAfterOpen: the contract lets only the provider's gateway
// open, so a non-relayer open cannot be planted here (TestNonRelayerOpen
// tests the check on synthetic logs). After the provider moves its gateway,
// earlier opens are judged against the gateway of their own block.
func TestGatewayMovedAfterOpen(t *testing.T) {
	s := newSim(t, 1)
	s.enrol(1, "alice", "bob")
	s.open(1, "alice", key("alice"))
	p := s.provider(1)
	tx, err := bind.Transact(bindings.NewAgentRegistry().Instance(s.c.Backend, s.c.D.AgentRegistry), s.c.Auth(p.Authority),
		bindings.NewAgentRegistry().PackSetGateway(simchain.Addr(key("new gateway")), "http://new"))
	s.wait(tx, err)
	// The old gateway can no longer open.
	proof, pub := s.proof(1, "bob", circuits.ActionOpen, simchain.Addr(key("bob")), 0)
	_, err = s.c.Client.Open(context.Background(), s.c.Auth(p.Gateway), zkhash.Big(pub.Tag), 1, simchain.Addr(key("bob")), zkhash.Big(pub.Root), proof)
	if contracts.RevertName(err) != "NotProviderGateway" {
		t.Fatalf("open by the old gateway: %v", err)
	}
	expect(t, s.audit(Config{}), CheckRelayer, StatusPass)
}

// TestPerTagUpdate: a gateway publishing a per-patient "records updated"
// call — it reverts, but its calldata is on chain for good.
func TestPerTagUpdate(t *testing.T) {
	s := newSim(t, 1)
	s.enrol(1, "alice", "bob")
	tag := s.open(1, "alice", key("alice"))
	data := append(crypto.Keccak256([]byte("recordsUpdated(uint256)"))[:4], common.LeftPadBytes(tag.Bytes(), 32)...)
	tx := s.send(s.provider(1).Gateway, s.c.D.Relationships, nil, data)
	r := s.audit(Config{})
	expect(t, r, CheckPerPatient, StatusFail, "transaction "+tx.Hash().Hex(), "selector 0x"+hex.EncodeToString(data[:4]))
}

// deployWith deploys a second MedRec-ZK network on s's chain, like
// contracts.Deploy but with the given OwnershipVerifier creation code and
// registry key hash.
func deployWith(t *testing.T, s *sim, ownershipBin []byte, keyHash [32]byte) *contracts.Deployment {
	t.Helper()
	ctx := context.Background()
	from := simchain.Addr(s.c.Deployer)
	nonce, err := s.c.Backend.PendingNonceAt(ctx, from)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := s.c.Backend.HeaderByNumber(ctx, nil)
	at := func(i uint64) common.Address { return crypto.CreateAddress(from, nonce+i) }
	d := &contracts.Deployment{ChainID: s.c.ChainID, Block: head.Number.Uint64(),
		OwnershipVerifier: at(0), EntitlementVerifier: at(1), AgentRegistry: at(2), PatientRegistry: at(3), Relationships: at(4), Anchors: at(5)}
	var initial []bindings.AgentRegistryInitialProvider
	for i, p := range s.c.Providers {
		initial = append(initial, bindings.AgentRegistryInitialProvider{Authority: simchain.Addr(p.Authority), Gateway: simchain.Addr(p.Gateway), Name: "P" + string(rune('1'+i)), GatewayURL: "http://gw"})
	}
	steps := []struct {
		bin  []byte
		args []byte
	}{
		{ownershipBin, nil},
		{common.FromHex(bindings.EntitlementVerifierMetaData.Bin), nil},
		{common.FromHex(bindings.AgentRegistryMetaData.Bin), bindings.NewAgentRegistry().PackConstructor(initial, keyHash, bindings.AgentRegistryLinks{
			OwnershipVerifier: d.OwnershipVerifier, EntitlementVerifier: d.EntitlementVerifier, PatientRegistry: d.PatientRegistry, Relationships: d.Relationships, Anchors: d.Anchors})},
		{common.FromHex(bindings.PatientRegistryMetaData.Bin), bindings.NewPatientRegistry().PackConstructor(d.AgentRegistry, common.Address{}, [32]byte{})},
		{common.FromHex(bindings.RelationshipsMetaData.Bin), bindings.NewRelationships().PackConstructor(d.AgentRegistry, d.PatientRegistry, d.OwnershipVerifier)},
		{common.FromHex(bindings.AnchorsMetaData.Bin), bindings.NewAnchors().PackConstructor(d.AgentRegistry)},
	}
	for i, st := range steps {
		opts := s.c.Auth(s.c.Deployer)
		opts.Nonce = new(big.Int).SetUint64(nonce + uint64(i))
		got, tx, err := bind.DeployContract(opts, st.bin, s.c.Backend, st.args)
		if err != nil || got != at(uint64(i)) {
			t.Fatalf("deploy step %d: %v (%s)", i, err, got)
		}
		s.wait(tx, nil)
	}
	return d
}

// TestMismatchedVerifier: a network whose OwnershipVerifier was built from
// another key set than the one the registry records is flagged, naming the
// verifier; the same verifier with a registry recording its key passes.
func TestMismatchedVerifier(t *testing.T) {
	s := newSim(t, 2)
	tpls, err := templates()
	if err != nil {
		t.Fatal(err)
	}
	other := otherKey(t, 3, prover.Ownership)
	bin := patchedCode(t, tpls[prover.Ownership], common.FromHex(bindings.OwnershipVerifierMetaData.Bin), other)
	dev, _ := prover.DevKeys()

	d := deployWith(t, s, bin, dev.RegistryHash())
	r := s.auditOf(d, Config{})
	expect(t, r, CheckVerifiers, StatusFail, "OwnershipVerifier at "+d.OwnershipVerifier.Hex()+" carries verifying key")
	if c, _ := r.Check(CheckVerifiers); len(c.Findings) != 1 {
		t.Fatalf("only the ownership verifier differs: %+v", c.Findings)
	}

	// A registry that records the other key: consistent, and not the dev keys.
	ent, _ := dev.Keys(prover.Entitlement)
	oh, eh := prover.VerifyingKeyHash(other), prover.VerifyingKeyHash(ent.VK)
	d = deployWith(t, s, bin, [32]byte(crypto.Keccak256(oh[:], eh[:])))
	expect(t, s.auditOf(d, Config{}), CheckVerifiers, StatusPass)

	// A verifier whose logic differs (one opcode) is not the template at all.
	broken := common.FromHex(bindings.OwnershipVerifierMetaData.Bin)
	for i := len(broken) - len(tpls[prover.Ownership].code); i < len(broken); i += 1 + pushLen(broken[i]) {
		if broken[i] == 0x52 { // MSTORE → MLOAD
			broken[i] = 0x51
			break
		}
	}
	d = deployWith(t, s, broken, dev.RegistryHash())
	expect(t, s.auditOf(d, Config{}), CheckVerifiers, StatusFail, "is not gnark's Groth16 verifier")
}

func ethereumQuery(d *contracts.Deployment) ethereum.FilterQuery {
	return ethereum.FilterQuery{FromBlock: new(big.Int).SetUint64(d.Block), Addresses: []common.Address{d.PatientRegistry, d.Relationships}}
}

// TestGrantTimesWarn: a patient who shares at two providers in one sitting
// is tied together by the grants' times: grants minutes apart warn (within
// --window), and so do grants ending in the same second, or at the same
// rounded 00:00 UTC when each provider holds just one relationship ending
// then. A rounded end shared by several relationships at a provider is the
// crowd the rounding is for: no warning.
func TestGrantTimesWarn(t *testing.T) {
	s := newSim(t, 2)
	s.enrol(1, "alice", "bob", "carol", "dave", "erin")
	tags := map[string]*big.Int{}
	for _, o := range []struct {
		label    string
		provider uint32
	}{{"alice", 1}, {"alice", 2}, {"bob", 1}, {"carol", 2}, {"dave", 1}, {"erin", 1}, {"erin", 2}} {
		name := fmt.Sprintf("%s-%d", o.label, o.provider)
		tags[name] = s.open(o.provider, o.label, key(name))
		s.later(11 * time.Minute) // no close opens
	}
	const day = 24 * 60 * 60
	midnight := (s.c.Now(t)/day + 3) * day
	viewer := anonGrantee("viewer")

	// Alice shares at 1, then at 2 three minutes later, ending an hour apart.
	s.grantUntil(1, tags["alice-1"], key("alice-1"), 2, viewer, 0, s.c.Now(t)+5*day+17)
	s.later(3 * time.Minute)
	s.grantUntil(2, tags["alice-2"], key("alice-2"), 2, viewer, 0, s.c.Now(t)+5*day+3600)
	r := s.audit(Config{})
	c := expect(t, r, CheckGrantTimes, StatusWarn, "grants at providers 1")
	if len(c.Findings) != 1 || !strings.Contains(c.Findings[0].Message, ") 3m") || len(c.Findings[0].Tags) != 2 {
		t.Fatalf("%+v", c)
	}
	if r.Failed() {
		t.Fatal("a warning failed the audit")
	}
	expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckGrantTimes, StatusPass)

	// Hours apart, but ending in the same second: bob at 1, carol at 2.
	s.later(2 * time.Hour)
	end := s.c.Now(t) + 7*day + 5
	s.grantUntil(1, tags["bob-1"], key("bob-1"), 2, viewer, 0, end)
	s.later(2 * time.Hour)
	s.grantUntil(2, tags["carol-2"], key("carol-2"), 2, viewer, 0, end)
	c = expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckGrantTimes, StatusWarn, "end in the same second")
	if len(c.Findings) != 1 {
		t.Fatalf("%+v", c)
	}

	// The same 00:00 UTC at two providers, one relationship each: erin.
	s.later(2 * time.Hour)
	s.grantUntil(1, tags["erin-1"], key("erin-1"), 2, viewer, 0, midnight)
	s.later(2 * time.Hour)
	s.grantUntil(2, tags["erin-2"], key("erin-2"), 2, viewer, 0, midnight)
	c = expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckGrantTimes, StatusWarn, "the only grants ending at")
	if len(c.Findings) != 2 || !strings.Contains(c.Summary, "2 expiries shared across providers (1 to the second, 1 unambiguous") {
		t.Fatalf("%+v", c)
	}
	// Granting again on the same relationship (a re-issue) is still one
	// relationship ending then.
	s.later(2 * time.Hour)
	s.grantUntil(1, tags["erin-1"], key("erin-1"), 2, anonGrantee("other viewer"), 1, midnight)
	if c := expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckGrantTimes, StatusWarn, "the only grants ending at"); len(c.Findings) != 2 {
		t.Fatalf("%+v", c)
	}
	// Dave at 1 ends then too: provider 1 now has two relationships ending
	// at that midnight, so erin's grants no longer pair up.
	s.later(2 * time.Hour)
	s.grantUntil(1, tags["dave-1"], key("dave-1"), 2, viewer, 0, midnight)
	c = expect(t, s.audit(Config{Window: 2 * time.Minute}), CheckGrantTimes, StatusWarn)
	if len(c.Findings) != 1 || strings.Contains(c.Findings[0].Message, "the only grants") {
		t.Fatalf("%+v", c)
	}
}

// TestInsertionVerifier: a registry that takes proven enrolment batches
// trusts an insertion verifier for its roots. The audit reads it as gnark's
// verifier with some key in it: the key the registry records passes (with a
// warning until the ceremony's keys are given), and a verifier carrying
// another key, the audit's own template key, or a key other than the
// ceremony's fails. The proven batch's leaves are counted like any others.
func TestInsertionVerifier(t *testing.T) {
	ks, v := provertest.Insertion(t)
	s := newSimOn(t, simchain.NewWith(t, 2, nil, v))
	leaves := []fr.Element{zkhash.Commitment(secret("p1")), zkhash.Commitment(secret("p2")), zkhash.Commitment(secret("p3"))}
	a, pub, err := circuits.InsertionWitness(nil, leaves)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := prover.New(ks).ProveInsertion(a)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := s.c.Client.EnrolProven(t.Context(), s.c.Auth(s.c.Providers[0].Gateway), []*big.Int{zkhash.Big(leaves[0]), zkhash.Big(leaves[1]), zkhash.Big(leaves[2])}, zkhash.Big(pub.NewRoot), proof[:])
	if err == nil {
		_, err = s.c.Client.Wait(t.Context(), tx)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := s.audit(Config{})
	expect(t, r, CheckVerifiers, StatusWarn, "insertion verifier at "+s.c.D.InsertionVerifier.Hex()+" carries the key the registry records")
	if int(r.Stats.Enrolled) != len(leaves) {
		t.Fatalf("the audit counted %d enrolments; want %d", r.Stats.Enrolled, len(leaves))
	}
	tpl, err := prover.InsertionTemplateVK()
	if err != nil {
		t.Fatal(err)
	}
	// With the ceremony's keys: tied to them, no insertion finding.
	c, _ := s.audit(Config{Keys: []*prover.KeySet{ks}}).Check(CheckVerifiers)
	for _, f := range c.Findings {
		if strings.Contains(f.Message, "insertion") {
			t.Fatalf("the ceremony's insertion key given: %s", f.Message)
		}
	}

	other := v
	other.InsertionKeyHash[0] ^= 1
	// A ceremony whose insertion key is another (here: the template's).
	keys := provertest.KeyMap(t, ks)
	keys[prover.Insertion] = &prover.Keys{Compiled: keys[prover.Insertion].Compiled, PK: keys[prover.Insertion].PK, VK: tpl}
	elsewhere := t.TempDir()
	if _, err := prover.WriteKeyDir(elsewhere, "another ceremony", "", keys); err != nil {
		t.Fatal(err)
	}
	otherCeremony, err := prover.LoadKeyDir(elsewhere, false)
	if err != nil {
		t.Fatal(err)
	}
	template := v
	template.Insertion, template.InsertionKeyHash = common.FromHex(bindings.InsertionVerifierMetaData.Bin), prover.VerifyingKeyHash(tpl)
	for _, tc := range []struct {
		name string
		v    contracts.Verifiers
		keys []*prover.KeySet
		want string
	}{
		{"a recorded hash the verifier does not carry", other, nil, "the patient registry records"},
		{"the audit's template key", template, nil, "carries the audit's template key"},
		{"a key other than the ceremony's", v, []*prover.KeySet{otherCeremony}, "the ceremony's (another ceremony) is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSimOn(t, simchain.NewWith(t, 2, nil, tc.v))
			expect(t, s.audit(Config{Keys: tc.keys}), CheckVerifiers, StatusFail, tc.want)
		})
	}
}
