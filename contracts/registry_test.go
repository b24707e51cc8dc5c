package contracts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestEnrol covers PatientRegistry's insert rules.
func TestEnrol(t *testing.T) {
	e := newEnv(t, 2)
	p1 := e.providers[0]
	c := zkhash.Big(zkhash.Commitment(newSecret("alice")))
	r := zkhash.Modulus()
	one := func(v *big.Int) []*big.Int { return []*big.Int{v} }
	for _, tc := range []struct {
		name  string
		batch []*big.Int
		want  string
	}{
		{"zero", one(big.NewInt(0)), "InvalidCommitment"},
		{"r", one(r), "InvalidCommitment"},
		{"r+1", one(new(big.Int).Add(r, big.NewInt(1))), "InvalidCommitment"},
		{"2^256-1", one(new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))), "InvalidCommitment"},
		{"one bad in a batch", []*big.Int{c, big.NewInt(7), big.NewInt(0), big.NewInt(8)}, "InvalidCommitment"},
		{"empty batch", nil, "BatchSize"},
		{"batch over MAX_BATCH", make([]*big.Int, MaxEnrolBatch+1), "BatchSize"},
	} {
		for i := range tc.batch {
			if tc.batch[i] == nil {
				tc.batch[i] = big.NewInt(int64(i + 1))
			}
		}
		_, err := e.send(p1.gateway, e.patientsC, e.patients.PackEnrol(tc.batch))
		wantRevert(t, err, tc.want)
	}
	if n := call(t, e.patientsC, e.patients.PackSize(), e.patients.UnpackSize); n != 0 {
		t.Fatalf("refused batches left %d leaves", n)
	}
	rcpt := e.mustSend(p1.gateway, e.patientsC, e.patients.PackEnrol(one(c)))
	ev, err := e.patients.UnpackEnrolledEvent(rcpt.Logs[0])
	if err != nil || len(ev.Commitments) != 1 || ev.Commitments[0].Cmp(c) != 0 || ev.Start != 0 || ev.Provider != p1.id || ev.Root.Cmp(e.root()) != 0 {
		t.Fatalf("Enrolled event %+v %v", ev, err)
	}
	// The chain keeps no record per commitment: the same one again is a
	// second leaf (gateways refuse it, the audit reports it).
	e.mustSend(e.providers[1].gateway, e.patientsC, e.patients.PackEnrol(one(c)))
	// r-1 is a valid field element.
	e.mustSend(p1.gateway, e.patientsC, e.patients.PackEnrol(one(new(big.Int).Sub(r, big.NewInt(1)))))
	if n := call(t, e.patientsC, e.patients.PackSize(), e.patients.UnpackSize); n != 3 {
		t.Fatalf("size %d", n)
	}
	// Empty tree: its root is not a valid proof root.
	e2 := newEnv(t, 1)
	if call(t, e2.patientsC, e2.patients.PackIsKnownRoot(e2.root()), e2.patients.UnpackIsKnownRoot) {
		t.Fatal("the empty tree's root is accepted")
	}
}

// TestEnrolBatches: batches of every shape — starting at odd and even
// leaves, spanning subtrees, one leaf, MAX_BATCH — leave the root that
// inserting the same leaves one by one leaves (merkle.Tree, as the chain
// view and the wallets build it), and only each batch's final root is a
// known root.
func TestEnrolBatches(t *testing.T) {
	e := newEnv(t, 1)
	gw := e.providers[0].gateway
	var leaves []fr.Element
	tree, _ := merkle.New(nil)
	n := 0
	for _, k := range []int{1, 1, 3, 2, 5, 8, 16, 1, 31, 64, 7, MaxEnrolBatch, 2, 129} {
		batch := make([]*big.Int, k)
		for i := range batch {
			leaf := zkhash.Commitment(newSecret(fmt.Sprintf("patient %d", n)))
			n++
			leaves = append(leaves, leaf)
			if _, err := tree.Insert(leaf); err != nil {
				t.Fatal(err)
			}
			batch[i] = zkhash.Big(leaf)
		}
		before := e.root()
		rcpt := e.mustSend(gw, e.patientsC, e.patients.PackEnrol(batch))
		want := zkhash.Big(tree.Root())
		if got := e.root(); got.Cmp(want) != 0 {
			t.Fatalf("after a batch of %d at leaf %d: root %#x, want %#x", k, len(leaves)-k, got, want)
		}
		ev, err := e.patients.UnpackEnrolledEvent(rcpt.Logs[0])
		if err != nil || int(ev.Start) != len(leaves)-k || len(ev.Commitments) != k || ev.Root.Cmp(want) != 0 {
			t.Fatalf("event of a batch of %d: %+v %v", k, ev, err)
		}
		if k > 1 {
			// The root after the batch's first leaf alone never existed on chain.
			mid, _ := merkle.New(leaves[:len(leaves)-k+1])
			if call(t, e.patientsC, e.patients.PackIsKnownRoot(zkhash.Big(mid.Root())), e.patients.UnpackIsKnownRoot) {
				t.Fatalf("an intermediate root of a batch of %d is known", k)
			}
		}
		if !call(t, e.patientsC, e.patients.PackIsKnownRoot(before), e.patients.UnpackIsKnownRoot) && len(leaves) > k {
			t.Fatal("the root before the batch is no longer known")
		}
	}
	if sz := call(t, e.patientsC, e.patients.PackSize(), e.patients.UnpackSize); int(sz) != len(leaves) {
		t.Fatalf("size %d, want %d", sz, len(leaves))
	}
}

// TestVoteTable: a proposal executes exactly when more than half of the
// active providers voted for it (MedRec's registry had no majority rule).
func TestVoteTable(t *testing.T) {
	for _, tc := range []struct {
		active, votes int
		executes      bool
	}{
		{1, 1, true},
		{2, 1, false}, // 1 of 2 must NOT pass
		{2, 2, true},
		{3, 1, false},
		{3, 2, true},
		{4, 2, false},
		{4, 3, true},
		{5, 2, false},
		{5, 3, true},
	} {
		t.Run(fmt.Sprintf("%d of %d", tc.votes, tc.active), func(t *testing.T) {
			e := newEnv(t, tc.active)
			newAuth, newGw := addr(key("authority-new")), addr(key("gateway-new"))
			e.mustSend(e.providers[0].authority, e.agentsC, e.agents.PackProposeAdd(newAuth, newGw, "New", "http://127.0.0.1:9000"))
			for i := 1; i < tc.votes; i++ {
				e.mustSend(e.providers[i].authority, e.agentsC, e.agents.PackVote(big.NewInt(1)))
			}
			prop := call(t, e.agentsC, e.agents.PackProposal(big.NewInt(1)), e.agents.UnpackProposal)
			if prop.Executed != tc.executes {
				t.Fatalf("executed=%v, want %v", prop.Executed, tc.executes)
			}
			signers := call(t, e.agentsC, e.agents.PackSigners(), e.agents.UnpackSigners)
			if want := tc.active + map[bool]int{true: 1}[tc.executes]; len(signers) != want {
				t.Fatalf("%d signers, want %d", len(signers), want)
			}
			if !tc.executes {
				_, err := e.send(e.stranger, e.agentsC, e.agents.PackExecute(big.NewInt(1)))
				wantRevert(t, err, "NoMajority")
			} else if got := call(t, e.agentsC, e.agents.PackProviderOfAuthority(newAuth), e.agents.UnpackProviderOfAuthority); got != uint32(tc.active+1) {
				t.Fatalf("new provider id %d", got)
			}
		})
	}
}

// TestGovernance covers removal, expiry, double votes and votes of removed providers.
func TestGovernance(t *testing.T) {
	e := newEnv(t, 4)
	p := e.providers
	one := big.NewInt(1)
	// Remove provider 4: needs 3 of 4.
	e.mustSend(p[0].authority, e.agentsC, e.agents.PackProposeRemove(4))
	_, err := e.send(p[0].authority, e.agentsC, e.agents.PackVote(one))
	wantRevert(t, err, "AlreadyVoted")
	e.mustSend(p[1].gateway, e.agentsC, e.agents.PackVote(one)) // a gateway votes for its provider
	_, err = e.send(p[1].authority, e.agentsC, e.agents.PackVote(one))
	wantRevert(t, err, "AlreadyVoted")
	rcpt := e.mustSend(p[2].authority, e.agentsC, e.agents.PackVote(one))
	if len(rcpt.Logs) < 3 {
		t.Fatalf("%d logs; want Voted, ProviderRemoved, Executed", len(rcpt.Logs))
	}
	prov := call(t, e.agentsC, e.agents.PackProvider(4), e.agents.UnpackProvider)
	if prov.Active {
		t.Fatal("provider 4 still active")
	}
	_, err = e.send(p[0].authority, e.agentsC, e.agents.PackVote(one))
	wantRevert(t, err, "ProposalExecuted")
	_, err = e.send(p[3].authority, e.agentsC, e.agents.PackVote(one))
	wantRevert(t, err, "NotActiveProvider")
	// A removed provider can no longer propose, vote, enrol or anchor.
	_, err = e.send(p[3].authority, e.agentsC, e.agents.PackProposeRemove(1))
	wantRevert(t, err, "NotActiveProvider")
	_, err = e.send(p[3].gateway, e.patientsC, e.patients.PackEnrol([]*big.Int{big.NewInt(5)}))
	wantRevert(t, err, "NotActiveProvider")
	if ids := call(t, e.agentsC, e.agents.PackActiveProviders(), e.agents.UnpackActiveProviders); fmt.Sprint(ids) != "[1 2 3]" {
		t.Fatalf("active providers %v", ids)
	}

	// A proposal expires after the voting period.
	e.mustSend(p[0].authority, e.agentsC, e.agents.PackProposeRemove(3))
	e.advance(8 * 24 * time.Hour)
	_, err = e.send(p[1].authority, e.agentsC, e.agents.PackVote(big.NewInt(2)))
	wantRevert(t, err, "ProposalExpired")
	_, err = e.send(p[1].authority, e.agentsC, e.agents.PackVote(big.NewInt(9)))
	wantRevert(t, err, "UnknownProposal")

	// Votes of providers removed since they voted no longer count.
	e2 := newEnv(t, 5)
	q := e2.providers
	e2.mustSend(q[0].authority, e2.agentsC, e2.agents.PackProposeAdd(addr(key("authority-new")), addr(key("gateway-new")), "New", ""))
	e2.mustSend(q[4].authority, e2.agentsC, e2.agents.PackVote(one)) // 2 of 5
	// Remove provider 5 (3 of 5: 1, 2, 3).
	e2.mustSend(q[0].authority, e2.agentsC, e2.agents.PackProposeRemove(5))
	e2.mustSend(q[1].authority, e2.agentsC, e2.agents.PackVote(big.NewInt(2)))
	e2.mustSend(q[2].authority, e2.agentsC, e2.agents.PackVote(big.NewInt(2)))
	if v := call(t, e2.agentsC, e2.agents.PackVotes(one), e2.agents.UnpackVotes); v != 1 {
		t.Fatalf("proposal 1 counts %d votes; provider 5's vote must no longer count", v)
	}
	// 1 of 4 active: no majority; a second vote (2 of 4) still none; a third passes.
	e2.mustSend(q[1].authority, e2.agentsC, e2.agents.PackVote(one))
	_, err = e2.send(e2.stranger, e2.agentsC, e2.agents.PackExecute(one))
	wantRevert(t, err, "NoMajority")
	e2.mustSend(q[2].authority, e2.agentsC, e2.agents.PackVote(one))
	if !call(t, e2.agentsC, e2.agents.PackProposal(one), e2.agents.UnpackProposal).Executed {
		t.Fatal("3 of 4 did not execute")
	}
	// The last provider can never be removed.
	e3 := newEnv(t, 1)
	_, err = e3.send(e3.providers[0].authority, e3.agentsC, e3.agents.PackProposeRemove(1))
	wantRevert(t, err, "NoProviders")
}

// TestRegistryRecords checks what the deployment recorded and the proposal
// and setGateway input rules.
func TestRegistryRecords(t *testing.T) {
	e := newEnv(t, 2)
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	if got := call(t, e.agentsC, e.agents.PackVerifyingKeyHash(), e.agents.UnpackVerifyingKeyHash); got != ks.RegistryHash() {
		t.Fatalf("verifying key hash %x", got)
	}
	for name, c := range map[string]struct {
		data []byte
		want common.Address
	}{
		"patientRegistry":   {e.agents.PackPatientRegistry(), e.d.PatientRegistry},
		"relationships":     {e.agents.PackRelationships(), e.d.Relationships},
		"anchors":           {e.agents.PackAnchors(), e.d.Anchors},
		"ownershipVerifier": {e.agents.PackOwnershipVerifier(), e.d.OwnershipVerifier},
	} {
		got := call(t, e.agentsC, c.data, func(b []byte) (common.Address, error) { return common.BytesToAddress(b), nil })
		if got != c.want {
			t.Errorf("%s: %s, want %s", name, got, c.want)
		}
	}
	// The verifiers are the code Deploy was given: a verifier's creation code
	// ends with its runtime code.
	v := DevVerifiers()
	for name, c := range map[string]struct {
		at       common.Address
		creation []byte
	}{
		"OwnershipVerifier":   {e.d.OwnershipVerifier, v.Ownership},
		"EntitlementVerifier": {e.d.EntitlementVerifier, v.Entitlement},
	} {
		code, err := e.client.CodeAt(context.Background(), c.at, nil)
		if err != nil || len(code) == 0 || !bytes.HasSuffix(c.creation, code) {
			t.Errorf("%s: %d bytes of code (%v), not the given verifier", name, len(code), err)
		}
	}
	if _, _, err := Deploy(context.Background(), e.client, e.auth(e.deployer), []Provider{{Authority: addr(key("a")), Gateway: addr(key("g")), Name: "X", GatewayURL: "http://x"}}, ks.RegistryHash(), Verifiers{}); err == nil || !strings.Contains(err.Error(), "no verifier bytecode") {
		t.Fatalf("deploy without verifiers: %v", err)
	}
	unhashed := DevVerifiers()
	unhashed.Insertion = unhashed.Ownership // any code: refused before anything is sent
	if _, _, err := Deploy(context.Background(), e.client, e.auth(e.deployer), []Provider{{Authority: addr(key("a")), Gateway: addr(key("g")), Name: "X", GatewayURL: "http://x"}}, ks.RegistryHash(), unhashed); err == nil || !strings.Contains(err.Error(), "needs its key's hash") {
		t.Fatalf("deploy with an insertion verifier but no key hash: %v", err)
	}
	p1 := e.providers[0]
	taken := addr(e.providers[1].gateway)
	for _, tc := range []struct {
		name     string
		auth, gw common.Address
		provName string
		want     string
	}{
		{"zero authority", common.Address{}, addr(key("g")), "X", "ZeroAddress"},
		{"zero gateway", addr(key("a")), common.Address{}, "X", "ZeroAddress"},
		{"empty name", addr(key("a")), addr(key("g")), "", "EmptyName"},
		{"authority of another provider", addr(e.providers[1].authority), addr(key("g")), "X", "AuthorityTaken"},
		{"authority = a gateway", taken, addr(key("g")), "X", "AuthorityTaken"},
		{"gateway taken", addr(key("a")), taken, "X", "GatewayTaken"},
	} {
		_, err := e.send(p1.authority, e.agentsC, e.agents.PackProposeAdd(tc.auth, tc.gw, tc.provName, ""))
		wantRevert(t, err, tc.want)
	}
	_, err = e.send(p1.authority, e.agentsC, e.agents.PackProposeRemove(9))
	wantRevert(t, err, "UnknownProvider")
	// setGateway: the authority moves its gateway; the old one loses its rights.
	_, err = e.send(p1.authority, e.agentsC, e.agents.PackSetGateway(taken, "x"))
	wantRevert(t, err, "GatewayTaken")
	_, err = e.send(p1.gateway, e.agentsC, e.agents.PackSetGateway(addr(key("gw-moved")), "x"))
	wantRevert(t, err, "NotAuthority")
	e.mustSend(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(key("gw-moved")), "http://127.0.0.1:9999"))
	_, err = e.send(p1.gateway, e.patientsC, e.patients.PackEnrol([]*big.Int{big.NewInt(5)}))
	wantRevert(t, err, "NotActiveProvider")
	if id := call(t, e.agentsC, e.agents.PackActiveGateway(addr(key("gw-moved"))), e.agents.UnpackActiveGateway); id != 1 {
		t.Fatalf("moved gateway maps to %d", id)
	}
}

// TestAnchors covers the anchoring rules.
func TestAnchors(t *testing.T) {
	e := newEnv(t, 2)
	gw := e.providers[0].gateway
	logRoot, stateRoot := [32]byte{1}, [32]byte{2}
	_, err := e.send(e.providers[0].authority, e.anchorsC, e.anchors.PackAnchor(logRoot, 0, 3, stateRoot))
	wantRevert(t, err, "NotActiveProvider")
	_, err = e.send(gw, e.anchorsC, e.anchors.PackAnchor(logRoot, 1, 3, stateRoot))
	wantRevert(t, err, "NonContiguous")
	_, err = e.send(gw, e.anchorsC, e.anchors.PackAnchor(logRoot, 0, 0, stateRoot))
	wantRevert(t, err, "LogRootWithoutEntries")
	_, err = e.send(gw, e.anchorsC, e.anchors.PackAnchor([32]byte{}, 0, 0, [32]byte{}))
	wantRevert(t, err, "EmptyBatch")
	rcpt := e.mustSend(gw, e.anchorsC, e.anchors.PackAnchor(logRoot, 0, 3, stateRoot))
	ev, err := e.anchors.UnpackAnchoredEvent(rcpt.Logs[0])
	if err != nil || ev.Provider != 1 || ev.Batch != 0 || ev.FromSeq != 0 || ev.Count != 3 || ev.LogRoot != logRoot || ev.StateRoot != stateRoot {
		t.Fatalf("Anchored event %+v %v", ev, err)
	}
	e.mustSend(gw, e.anchorsC, e.anchors.PackAnchor([32]byte{}, 3, 0, [32]byte{3})) // records changed only
	// The same again (a gateway resending after a crash) is refused; another
	// state is a new batch.
	_, err = e.send(gw, e.anchorsC, e.anchors.PackAnchor([32]byte{}, 3, 0, [32]byte{3}))
	wantRevert(t, err, "RepeatedBatch")
	e.mustSend(gw, e.anchorsC, e.anchors.PackAnchor([32]byte{}, 3, 0, [32]byte{4}))
	_, err = e.send(gw, e.anchorsC, e.anchors.PackAnchor(logRoot, 0, 3, stateRoot))
	wantRevert(t, err, "NonContiguous")
	latest := call(t, e.anchorsC, e.anchors.PackLatest(1), e.anchors.UnpackLatest)
	if latest.Batches != 3 || latest.NextSeq != 3 {
		t.Fatalf("latest %+v", latest)
	}
	// Each provider has its own sequence.
	e.mustSend(e.providers[1].gateway, e.anchorsC, e.anchors.PackAnchor(logRoot, 0, 1, stateRoot))
}

// TestDeploymentRecord round-trips the record and checks it against the chain.
func TestDeploymentRecord(t *testing.T) {
	e := newEnv(t, 1)
	path := t.TempDir() + "/" + DeploymentFile
	if err := e.d.Save(path); err != nil {
		t.Fatal(err)
	}
	d, err := LoadDeployment(path)
	if err != nil {
		t.Fatal(err)
	}
	if d.ChainID.Cmp(e.d.ChainID) != 0 || d.Relationships != e.d.Relationships || d.Block != e.d.Block {
		t.Fatalf("round trip: %+v vs %+v", d, e.d)
	}
	if err := d.Check(context.Background(), e.client); err != nil {
		t.Fatal(err)
	}
	wrong := *d
	wrong.Anchors = common.HexToAddress("0x1234")
	if err := wrong.Check(context.Background(), e.client); !errors.Is(err, ErrNotDeployed) {
		t.Fatalf("missing code: %v", err)
	}
	wrong = *d
	wrong.ChainID = big.NewInt(5)
	if err := wrong.Check(context.Background(), e.client); err == nil {
		t.Fatal("wrong chain accepted")
	}
	if _, err := LoadDeployment(t.TempDir() + "/none.json"); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestGatewayNeverAnAuthority: an address is never both an authority and a
// gateway. setGateway used to accept another provider's authority (or its
// own) as the gateway, which registration refuses; both now refuse it alike.
func TestGatewayNeverAnAuthority(t *testing.T) {
	e := newEnv(t, 2)
	p1, p2 := e.providers[0], e.providers[1]
	fresh := addr(key("authority-new"))
	for _, tc := range []struct {
		name string
		send func() error
		want string
	}{
		{"setGateway: another provider's authority", func() error {
			_, err := e.send(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(p2.authority), "http://127.0.0.1:1"))
			return err
		}, "GatewayTaken"},
		{"setGateway: its own authority", func() error {
			_, err := e.send(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(p1.authority), "http://127.0.0.1:1"))
			return err
		}, "GatewayTaken"},
		{"setGateway: another provider's gateway", func() error {
			_, err := e.send(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(p2.gateway), "http://127.0.0.1:1"))
			return err
		}, "GatewayTaken"},
		{"setGateway: zero", func() error {
			_, err := e.send(p1.authority, e.agentsC, e.agents.PackSetGateway(common.Address{}, "http://127.0.0.1:1"))
			return err
		}, "ZeroAddress"},
		{"proposeAdd: one address as authority and gateway", func() error {
			_, err := e.send(p1.authority, e.agentsC, e.agents.PackProposeAdd(fresh, fresh, "X", ""))
			return err
		}, "GatewayTaken"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantRevert(t, tc.send(), tc.want) })
	}
	// Nothing moved: both providers keep their gateways.
	for _, p := range e.providers {
		if id := call(t, e.agentsC, e.agents.PackActiveGateway(addr(p.gateway)), e.agents.UnpackActiveGateway); id != p.id {
			t.Fatalf("provider %d's gateway maps to %d", p.id, id)
		}
	}
	// Keeping its own gateway (a new URL only) and moving to a fresh account
	// are still allowed.
	e.mustSend(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(p1.gateway), "http://127.0.0.1:2"))
	e.mustSend(p1.authority, e.agentsC, e.agents.PackSetGateway(addr(key("gw-moved")), "http://127.0.0.1:3"))
}
