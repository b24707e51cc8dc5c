package contracts

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/logger"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/eth/ethconfig"
	"github.com/ethereum/go-ethereum/ethclient/simulated"
	"github.com/ethereum/go-ethereum/node"
	"github.com/ethereum/go-ethereum/params"
	"github.com/rs/zerolog"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// withoutBogota turns off the unreleased "Bogota" fork the v1.17 simulated
// backend enables (it prices a fresh storage slot at ~132k gas): gas figures
// must follow the production chain's rules.
func withoutBogota(_ *node.Config, eth *ethconfig.Config) {
	cfg := *params.AllDevChainProtocolChanges
	cfg.BogotaTime = nil
	eth.Genesis.Config = &cfg
}

// key returns a deterministic test key; the same label gives the same key.
func key(label string) *ecdsa.PrivateKey {
	k, err := crypto.ToECDSA(crypto.Keccak256([]byte("medrec-zk contracts test/" + label)))
	if err != nil {
		panic(err)
	}
	return k
}

func addr(k *ecdsa.PrivateKey) common.Address { return crypto.PubkeyToAddress(k.PublicKey) }

type testProvider struct {
	id                 uint32
	authority, gateway *ecdsa.PrivateKey
}

// env is one simulated chain with a fresh MedRec-ZK deployment.
type env struct {
	t         testing.TB
	sim       *simulated.Backend
	client    simulated.Client
	chainID   *big.Int
	deployer  *ecdsa.PrivateKey
	stranger  *ecdsa.PrivateKey
	providers []testProvider
	d         *Deployment

	agents    *bindings.AgentRegistry
	patients  *bindings.PatientRegistry
	rels      *bindings.Relationships
	anchors   *bindings.Anchors
	agentsC   *bind.BoundContract
	patientsC *bind.BoundContract
	relsC     *bind.BoundContract
	anchorsC  *bind.BoundContract

	tree *merkle.Tree // the Go twin of PatientRegistry's tree
}

// newEnv starts a chain with n providers (ids 1..n) and deploys the contracts.
func newEnv(t testing.TB, n int) *env {
	t.Helper()
	e := &env{t: t, deployer: key("deployer"), stranger: key("stranger")}
	alloc := types.GenesisAlloc{}
	fund := func(k *ecdsa.PrivateKey) {
		alloc[addr(k)] = types.Account{Balance: new(big.Int).Mul(big.NewInt(1000), big.NewInt(params.Ether))}
	}
	fund(e.deployer)
	fund(e.stranger)
	var initial []Provider
	for i := 1; i <= n; i++ {
		p := testProvider{id: uint32(i), authority: key(fmt.Sprintf("authority-%d", i)), gateway: key(fmt.Sprintf("gateway-%d", i))}
		fund(p.authority)
		fund(p.gateway)
		e.providers = append(e.providers, p)
		initial = append(initial, Provider{Authority: addr(p.authority), Gateway: addr(p.gateway), Name: fmt.Sprintf("Provider %d", i), GatewayURL: fmt.Sprintf("http://127.0.0.1:%d", 8500+i)})
	}
	// Keys not yet registered, for governance tests.
	for _, label := range []string{"authority-new", "gateway-new"} {
		fund(key(label))
	}
	e.sim = simulated.NewBackend(alloc, withoutBogota)
	t.Cleanup(func() { e.sim.Close() })
	e.client = e.sim.Client()
	var err error
	e.chainID, err = e.client.ChainID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	d, txs, err := Deploy(context.Background(), e.client, e.auth(e.deployer), initial, ks.RegistryHash(), DevVerifiers())
	if err != nil {
		t.Fatal(err)
	}
	for _, tx := range txs {
		e.mine(tx)
	}
	if err := d.Wait(context.Background(), e.client, txs); err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.agents, e.patients, e.rels, e.anchors = bindings.NewAgentRegistry(), bindings.NewPatientRegistry(), bindings.NewRelationships(), bindings.NewAnchors()
	e.agentsC = e.agents.Instance(e.client, d.AgentRegistry)
	e.patientsC = e.patients.Instance(e.client, d.PatientRegistry)
	e.relsC = e.rels.Instance(e.client, d.Relationships)
	e.anchorsC = e.anchors.Instance(e.client, d.Anchors)
	e.tree, err = merkle.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) auth(k *ecdsa.PrivateKey) *bind.TransactOpts {
	return bind.NewKeyedTransactor(k, e.chainID)
}

// send transacts data to c from k, mines it and returns the receipt. A call the
// chain refuses returns the decoded custom error and changes nothing (the gas
// estimate fails, so no transaction is sent).
func (e *env) send(k *ecdsa.PrivateKey, c *bind.BoundContract, data []byte) (*types.Receipt, error) {
	e.t.Helper()
	tx, err := bind.Transact(c, e.auth(k), data)
	if err != nil {
		return nil, DecodeRevert(err)
	}
	r := e.mine(tx)
	if r.Status != types.ReceiptStatusSuccessful {
		e.t.Fatalf("transaction %s mined but failed", tx.Hash())
	}
	return r, nil
}

// mine commits blocks until tx is included and returns its receipt. One
// commit is almost always enough, but on a loaded machine the miner may seal
// a block before it has filled in every pending transaction.
func (e *env) mine(tx *types.Transaction) *types.Receipt {
	e.t.Helper()
	for i := 0; i < 50; i++ {
		e.sim.Commit()
		if r, err := e.client.TransactionReceipt(context.Background(), tx.Hash()); err == nil {
			return r
		}
	}
	e.t.Fatalf("transaction %s not mined after 50 blocks", tx.Hash())
	return nil
}

// mustSend is send for steps that must succeed.
func (e *env) mustSend(k *ecdsa.PrivateKey, c *bind.BoundContract, data []byte) *types.Receipt {
	e.t.Helper()
	r, err := e.send(k, c, data)
	if err != nil {
		e.t.Fatalf("transaction refused: %v", err)
	}
	return r
}

// wantRevert checks that err is the custom error name.
func wantRevert(t testing.TB, err error, name string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want %s", name)
	}
	var re *RevertError
	if !errors.As(err, &re) {
		t.Fatalf("got %v; want custom error %s", err, name)
	}
	if re.Name != name {
		t.Fatalf("got %s%v; want %s", re.Name, re.Args, name)
	}
}

func call[T any](t testing.TB, c *bind.BoundContract, data []byte, unpack func([]byte) (T, error)) T {
	t.Helper()
	v, err := bind.Call(c, nil, data, unpack)
	if err != nil {
		t.Fatalf("call: %v", DecodeRevert(err))
	}
	return v
}

// now is the timestamp of the latest block.
func (e *env) now() uint64 {
	h, err := e.client.HeaderByNumber(context.Background(), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return h.Time
}

// advance moves the chain's clock by d. The simulated backend refuses while
// its pool still lists a transaction, and the pool forgets a mined one only
// when it catches up with the head, asynchronously: retry for a while.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := e.sim.AdjustTime(d)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "non-empty block") || time.Now().After(deadline) {
			e.t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// patient is a test patient: an identity secret and where its commitment sits.
type patient struct {
	secret fr.Element
	index  int
}

func newSecret(label string) fr.Element {
	var s fr.Element
	s.SetBytes(crypto.Keccak256([]byte("medrec-zk contracts test secret/" + label)))
	return s
}

// enrol inserts a patient's commitment through provider p's gateway and the Go twin.
func (e *env) enrol(p testProvider, label string) patient {
	e.t.Helper()
	s := newSecret(label)
	c := zkhash.Commitment(s)
	e.mustSend(p.gateway, e.patientsC, e.patients.PackEnrol([]*big.Int{zkhash.Big(c)}))
	idx, err := e.tree.Insert(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return patient{secret: s, index: idx}
}

func (e *env) root() *big.Int {
	return call(e.t, e.patientsC, e.patients.PackRoot(), e.patients.UnpackRoot)
}

var testProver = sync.OnceValues(func() (*prover.Prover, error) {
	logger.Set(zerolog.Nop())
	ks, err := prover.DevKeys()
	if err != nil {
		return nil, err
	}
	return prover.New(ks), nil
})

// ownership proves that pt owns its tag at provider, binding (action, owner,
// counter) for this deployment, against the current tree.
func (e *env) ownership(pt patient, provider uint32, action circuits.Action, owner common.Address, counter uint64) (prover.Proof, circuits.OwnershipPublic) {
	e.t.Helper()
	pr, err := testProver()
	if err != nil {
		e.t.Fatal(err)
	}
	path, err := e.tree.Proof(pt.index)
	if err != nil {
		e.t.Fatal(err)
	}
	w := circuits.OwnershipWitness{
		Secret:   pt.secret,
		Path:     path,
		Provider: provider,
		Signal:   circuits.OwnershipSignal(action, owner, counter, e.chainID, e.d.Relationships),
	}
	proof, pub, err := pr.ProveOwnership(w)
	if err != nil {
		e.t.Fatal(err)
	}
	return proof, pub
}

// opened is an open relationship in a test.
type opened struct {
	tag   *big.Int
	owner *ecdsa.PrivateKey
	p     testProvider
	pt    patient
}

// open enrols nothing: it proves and relays an open of pt at provider p for owner.
func (e *env) open(pt patient, p testProvider, owner *ecdsa.PrivateKey) (opened, *types.Receipt) {
	e.t.Helper()
	proof, pub := e.ownership(pt, p.id, circuits.ActionOpen, addr(owner), 0)
	r := e.mustSend(p.gateway, e.relsC, e.rels.PackOpen(zkhash.Big(pub.Tag), p.id, addr(owner), zkhash.Big(pub.Root), proof[:]))
	return opened{tag: zkhash.Big(pub.Tag), owner: owner, p: p, pt: pt}, r
}

func (e *env) domain() [32]byte { return DomainSeparator(e.chainID, e.d.Relationships) }

func (e *env) relationship(tag *big.Int) bindings.RelationshipsRelationship {
	return call(e.t, e.relsC, e.rels.PackRelationship(tag), e.rels.UnpackRelationship)
}

// signGrant signs g with k.
func (e *env) signGrant(k *ecdsa.PrivateKey, g GrantRequest) []byte {
	e.t.Helper()
	sig, err := Sign(k, GrantDigest(e.domain(), g))
	if err != nil {
		e.t.Fatal(err)
	}
	return sig
}

func (e *env) signRevoke(k *ecdsa.PrivateKey, r RevokeRequest) []byte {
	e.t.Helper()
	sig, err := Sign(k, RevokeDigest(e.domain(), r))
	if err != nil {
		e.t.Fatal(err)
	}
	return sig
}

// grantRequest is a valid grant of o's relationship to an address for a day.
func (e *env) grantRequest(o opened, grantee common.Address) GrantRequest {
	rel := e.relationship(o.tag)
	return GrantRequest{
		Tag: o.tag, GranteeKind: 1, Grantee: AddressGrantee(grantee),
		Scope: 1, Purpose: 1, Expiry: e.now() + 86400, Nonce: rel.Nonce, Deadline: e.now() + 3600,
	}
}

func bigOne() *big.Int { return big.NewInt(1) }
