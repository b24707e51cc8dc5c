package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/tagcode"
	"github.com/medrec-zk/medrec/zkhash"
)

const staffToken = "staff-secret-token"

// world is one simulated chain with a gateway for provider 1.
type world struct {
	t      testing.TB
	chain  *simchain.Chain
	view   *chainview.View
	gw     *Gateway
	prover *prover.Prover
	keys   *delegate.Keys // the patient
	owner  *ecdsa.PrivateKey
	tag    *big.Int
	cfg    Config // the gateway's configuration
	dbPath string // its database: an SQLite file or a PostgreSQL DSN
}

// newWorld builds a world on an SQLite file.
func newWorld(t testing.TB, opts ...func(*Config)) *world {
	t.Helper()
	return newWorldOn(t, filepath.Join(t.TempDir(), "records.db"), opts...)
}

// onBackends runs f once per records database: SQLite, and PostgreSQL where
// the environment provides one (sqltest.Backends; make test does).
func onBackends(t *testing.T, f func(t *testing.T, dsn string)) {
	for _, b := range sqltest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) { f(t, b.DSN(t)) })
	}
}

// newWorldOn builds a world whose gateway keeps its records at dsn (an
// SQLite path or a PostgreSQL DSN).
func newWorldOn(t testing.TB, dsn string, opts ...func(*Config)) *world {
	t.Helper()
	return newWorldOnChain(t, simchain.New(t, 2, nil), dsn, opts...)
}

// newWorldOnChain builds a world on the deployment of chain c.
func newWorldOnChain(t testing.TB, c *simchain.Chain, dsn string, opts ...func(*Config)) *world {
	t.Helper()
	ctx := context.Background()
	dbPath := dsn
	db, err := sqlstore.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	v, err := chainview.NewWithNodes(c.Backend, c.D, db.RegistryNodes())
	if err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	pr := prover.New(ks)
	cfg := Config{
		Provider: 1, Store: db, View: v, Chain: c.Client, Relayer: c.Auth(c.Providers[0].Gateway), Prover: pr,
		StaffTokens:  map[string]string{tokenHash(staffToken): "desk-1"},
		SyncInterval: time.Nanosecond, BodyLimit: 64 << 10,
	}
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := delegate.FromMnemonic("test test test test test test test test test test test junk", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := keys.Delegate(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, chain: c, view: v, gw: gw, prover: pr, keys: keys, owner: d.PrivateKey(), cfg: cfg, dbPath: dbPath}
}

// restart shuts the gateway down, closes its database and builds a new
// gateway on the same file with a fresh chain view, as restarting the
// gateway process would; opts change the new gateway's configuration.
func (w *world) restart(opts ...func(*Config)) {
	w.t.Helper()
	t := w.t
	if err := w.gw.App().Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := w.cfg.Store.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sqlstore.Open(context.Background(), w.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	v, err := chainview.NewWithNodes(w.chain.Backend, w.chain.D, db.RegistryNodes()) // the tree as the last run left it
	if err != nil {
		t.Fatal(err)
	}
	cfg := w.cfg
	cfg.Store, cfg.View = db, v
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.gw, w.view, w.cfg = gw, v, cfg
}

type resp struct {
	status int
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %q: %v", r.body, err)
	}
	return m
}

func (w *world) do(req *http.Request) resp {
	w.t.Helper()
	res, err := w.gw.App().Test(req, -1)
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}
}

func (w *world) staff(method, path string, body any) resp {
	w.t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest(method, path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	req.Header.Set("Content-Type", "application/json")
	return w.do(req)
}

func (w *world) post(path string, body any) resp {
	w.t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest("POST", path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	return w.do(req)
}

// signed builds a GET signed by key for tag at provider audience.
func (w *world) signed(key *ecdsa.PrivateKey, target string, tag *big.Int, audience uint32) *http.Request {
	w.t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	err := gatewayauth.Sign(req.Header, gatewayauth.Request{
		Method: "GET", Path: req.URL.EscapedPath(), Query: req.URL.RawQuery, BodyHash: gatewayauth.BodyHash(nil),
		Tag: tag, Audience: audience,
	}, key, w.domain(), time.Now())
	if err != nil {
		w.t.Fatal(err)
	}
	return req
}

func (w *world) get(key *ecdsa.PrivateKey, target string) resp {
	return w.do(w.signed(key, target, w.tag, 1))
}

const (
	patientJSON   = `{"resourceType":"Patient","id":"p1","name":[{"family":"Hoeger","given":["Buster"]}],"birthDate":"1961-04-02","gender":"male"}`
	observationJS = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-05-01T10:00:00Z","valueQuantity":{"value":72,"unit":"/min"}}`
	conditionJS   = `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"},"code":{"text":"Hypertension"}}`
)

// open sets up patient p1 with records, enrols, and claims the relationship.
func (w *world) open() {
	w.t.Helper()
	t := w.t
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p1"}); r.status != 201 {
		t.Fatalf("create patient: %d %s", r.status, r.body)
	}
	bundle := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":%s},{"resource":%s},{"resource":%s}]}`, patientJSON, observationJS, conditionJS)
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(bundle))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("add resources: %d %s", r.status, r.body)
	}
	cm, _ := w.keys.Commitment()
	if r := w.staff("POST", "/admin/patients/p1/enrol", map[string]string{"commitment": zkhash.Hex(cm)}); r.status != 200 {
		t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	claim := w.claimFor(1, simchain.Addr(w.owner))
	if r := w.staff("POST", "/admin/patients/p1/claim", claim); r.status != 200 {
		t.Fatalf("claim: %d %s", r.status, r.body)
	}
	tag, _ := w.keys.Tag(1)
	w.tag = zkhash.Big(tag)
}

// researchViewer grants an anonymous viewer (secret v, grant secret k)
// research access to the patient's Observations at provider 1.
func (w *world) researchViewer() (v, k, tag, g fr.Element) {
	w.t.Helper()
	v.SetUint64(4242)
	k.SetUint64(777)
	tag, _ = w.keys.Tag(1)
	g = zkhash.Grant(zkhash.ViewerCommitment(v), tag, k)
	obsOnly, _ := access.NewScope("Observation")
	if r := w.grant(2, zkhash.Bytes32(g), obsOnly, access.Research); r.status != 200 {
		w.t.Fatalf("anonymous grant: %d %s", r.status, r.body)
	}
	return v, k, tag, g
}

// deskCode is the desk code of the tag of keys at provider p: what the
// patient's app shows at p's desk.
func deskCode(t testing.TB, keys *delegate.Keys, p uint32) string {
	t.Helper()
	tag, err := keys.Tag(p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tagcode.Of(zkhash.Big(tag))
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

// newChallenge asks the gateway for an anonymous viewer's challenge.
func (w *world) newChallenge() string {
	w.t.Helper()
	r := w.post("/auth/challenge", nil)
	if r.status != 200 {
		w.t.Fatalf("challenge: %d %s", r.status, r.body)
	}
	var out struct{ Challenge string }
	if err := json.Unmarshal(r.body, &out); err != nil {
		w.t.Fatal(err)
	}
	return out.Challenge
}

// entitlementBody proves the anonymous viewer (v, k) for tag, binding the
// challenge ch (0x hex; any 248-bit value).
func (w *world) entitlementBody(v, k, tag fr.Element, ch string) map[string]string {
	w.t.Helper()
	chEl, err := zkhash.ParseHex(ch)
	if err != nil {
		w.t.Fatal(err)
	}
	proof, pub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v, GrantSecret: k, Tag: tag, Challenge: chEl})
	if err != nil {
		w.t.Fatal(err)
	}
	return map[string]string{"tag": zkhash.Hex(pub.Tag), "grant": zkhash.Hex(pub.Grant), "challenge": zkhash.Hex(pub.Challenge), "proof": proof.String()}
}

// claimFor proves ownership at provider for owner, with a path from chain events.
func (w *world) claimFor(provider uint32, owner common.Address) map[string]string {
	w.t.Helper()
	return w.claimWith(w.keys, provider, owner)
}

// claimWith is claimFor for the patient holding keys.
func (w *world) claimWith(keys *delegate.Keys, provider uint32, owner common.Address) map[string]string {
	w.t.Helper()
	if err := w.view.Sync(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	cm, _ := keys.Commitment()
	path, err := w.view.MerkleProof(cm)
	if err != nil {
		w.t.Fatal(err)
	}
	s, _ := keys.Identity()
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: provider,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, w.chain.ChainID, w.chain.D.Relationships),
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return map[string]string{"tag": zkhash.Hex(pub.Tag), "owner": owner.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()}
}

// domain is where the world's gateway checks signatures.
func (w *world) domain() gatewayauth.Domain {
	return gatewayauth.Domain{ChainID: w.chain.ChainID, Registry: w.chain.D.AgentRegistry}
}

// rotation is the relay request rotating p1's relationship to newOwner, with
// a fresh Ownership proof bound to it and the next rotation counter.
func (w *world) rotation(newOwner common.Address) map[string]string {
	w.t.Helper()
	rel, ok := w.view.Relationship(w.tag)
	if !ok {
		w.t.Fatal("no relationship to rotate")
	}
	cm, _ := w.keys.Commitment()
	path, err := w.view.MerkleProof(cm)
	if err != nil {
		w.t.Fatal(err)
	}
	s, _ := w.keys.Identity()
	next := uint64(rel.Rotation) + 1
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{Secret: s.Element(), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionRotate, newOwner, next, w.chain.ChainID, w.chain.D.Relationships)})
	if err != nil {
		w.t.Fatal(err)
	}
	return map[string]string{"tag": hexutil.EncodeBig(w.tag), "newOwner": newOwner.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()}
}

// grant signs a grant with the owner and relays it through the gateway.
func (w *world) grant(kind uint8, grantee [32]byte, scope access.Scope, purpose access.Purpose) resp {
	w.t.Helper()
	rel, err := w.chain.Client.Relationship(context.Background(), w.tag)
	if err != nil {
		w.t.Fatal(err)
	}
	now := w.chain.Now(w.t)
	g := contracts.GrantRequest{Tag: w.tag, GranteeKind: kind, Grantee: grantee, Scope: uint64(scope), Purpose: uint8(purpose), Expiry: now + 86400, Nonce: rel.Nonce, Deadline: now + 600}
	sig, err := contracts.Sign(w.owner, contracts.GrantDigest(contracts.DomainSeparator(w.chain.ChainID, w.chain.D.Relationships), g))
	if err != nil {
		w.t.Fatal(err)
	}
	return w.post("/relay/grant", map[string]any{"request": map[string]any{
		"tag": hexutil.EncodeBig(w.tag), "granteeKind": kind, "grantee": hexutil.Encode(grantee[:]), "scope": g.Scope,
		"purpose": g.Purpose, "expiry": g.Expiry, "nonce": g.Nonce, "deadline": g.Deadline,
	}, "signature": hexutil.Encode(sig)})
}

func (w *world) revoke(kind uint8, grantee [32]byte) resp {
	w.t.Helper()
	rel, _ := w.chain.Client.Relationship(context.Background(), w.tag)
	rv := contracts.RevokeRequest{Tag: w.tag, GranteeKind: kind, Grantee: grantee, Nonce: rel.Nonce, Deadline: w.chain.Now(w.t) + 600}
	sig, _ := contracts.Sign(w.owner, contracts.RevokeDigest(contracts.DomainSeparator(w.chain.ChainID, w.chain.D.Relationships), rv))
	return w.post("/relay/revoke", map[string]any{"request": map[string]any{
		"tag": hexutil.EncodeBig(w.tag), "granteeKind": kind, "grantee": hexutil.Encode(grantee[:]), "nonce": rv.Nonce, "deadline": rv.Deadline,
	}, "signature": hexutil.Encode(sig)})
}

func TestOwnerAndAddressGrantee(t *testing.T) { onBackends(t, testOwnerAndAddressGrantee) }

func testOwnerAndAddressGrantee(t *testing.T, dsn string) {
	w := newWorldOn(t, dsn)
	w.open()

	// The owner reads its records, byte for byte as stored.
	r := w.get(w.owner, "/fhir/Observation/o1")
	if r.status != 200 || string(r.body) != observationJS {
		t.Fatalf("owner read: %d %s", r.status, r.body)
	}
	if r := w.get(w.owner, "/fhir/Patient/$everything"); r.status != 200 || len(r.json(t)["entry"].([]any)) != 3 {
		t.Fatalf("owner everything: %d %s", r.status, r.body)
	}
	// A signature for provider 2 fails here; a replay fails.
	if r := w.do(w.signed(w.owner, "/fhir/Observation/o1", w.tag, 2)); r.status != 401 {
		t.Fatalf("other audience: %d %s", r.status, r.body)
	}
	req := w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1)
	replay := req.Clone(context.Background())
	if r := w.do(req); r.status != 200 {
		t.Fatalf("first: %d", r.status)
	}
	if r := w.do(replay); r.status != 401 {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
	// A stranger, and a doctor before any grant, are refused.
	doctor := simchain.Key("doctor")
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 {
		t.Fatalf("doctor before grant: %d %s", r.status, r.body)
	}
	obsOnly, _ := access.NewScope("Observation")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), obsOnly, access.Treatment); r.status != 200 {
		t.Fatalf("relay grant: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 || string(r.body) != observationJS {
		t.Fatalf("doctor read: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Condition/c1"); r.status != 403 {
		t.Fatalf("doctor outside scope: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation"); r.status != 200 || len(r.json(t)["entry"].([]any)) != 1 {
		t.Fatalf("doctor search: %d %s", r.status, r.body)
	}
	r = w.get(doctor, "/fhir/Patient/$everything")
	if r.status != 200 || len(r.json(t)["entry"].([]any)) != 1 || !bytes.Contains(r.body, []byte(observationJS)) {
		t.Fatalf("doctor everything: %d %s", r.status, r.body)
	}
	// Revoked: refused at the next request.
	if r := w.revoke(1, contracts.AddressGrantee(simchain.Addr(doctor))); r.status != 200 {
		t.Fatalf("relay revoke: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 || !bytes.Contains(r.body, []byte("revoked")) {
		t.Fatalf("doctor after revoke: %d %s", r.status, r.body)
	}
	// The owner sees every attempt in its access log, allowed and denied.
	r = w.get(w.owner, "/patient/log")
	if r.status != 200 {
		t.Fatalf("log: %d %s", r.status, r.body)
	}
	var log gatewayapi.LogPage
	if err := json.Unmarshal(r.body, &log); err != nil {
		t.Fatal(err)
	}
	doctorAddr := simchain.Addr(doctor).Hex()
	var allowed, denied int
	for _, e := range log.Entries {
		if got := e.Ledger(); store.EntryHash(e.Prev, got) != e.Hash {
			t.Fatalf("entry %d: hash does not match its fields", e.Seq)
		}
		if e.Actor == doctorAddr {
			switch e.Decision {
			case "allowed":
				allowed++
			case "denied":
				denied++
			}
		}
	}
	if allowed != 3 || denied != 3 {
		t.Fatalf("doctor log entries: %d allowed, %d denied; log %s", allowed, denied, r.body)
	}
	// The doctor may not read the log.
	if r := w.get(doctor, "/patient/log"); r.status != 403 {
		t.Fatalf("doctor log: %d", r.status)
	}
}

func TestAnonymousViewer(t *testing.T) { onBackends(t, testAnonymousViewer) }

func testAnonymousViewer(t *testing.T, dsn string) {
	w := newWorldOn(t, dsn)
	w.open()
	v, k, tagEl, gID := w.researchViewer()
	session := func(challenge string, v fr.Element) resp {
		return w.post("/auth/entitlement", w.entitlementBody(v, k, tagEl, challenge))
	}
	ch := w.post("/auth/challenge", nil).json(t)["challenge"].(string)
	r := session(ch, v)
	if r.status != 200 {
		t.Fatalf("entitlement: %d %s", r.status, r.body)
	}
	token := r.json(t)["token"].(string)
	// The challenge is single use.
	if r := session(ch, v); r.status != 401 {
		t.Fatalf("challenge reuse: %d %s", r.status, r.body)
	}
	// A viewer without v cannot prove (a wrong v gives another g: no grant).
	ch2 := w.post("/auth/challenge", nil).json(t)["challenge"].(string)
	var wrong fr.Element
	wrong.SetUint64(1)
	if r := session(ch2, wrong); r.status != 403 {
		t.Fatalf("wrong viewer secret: %d %s", r.status, r.body)
	}
	read := func(target string) resp {
		req := httptest.NewRequest("GET", target, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		return w.do(req)
	}
	// Research purpose: de-identified — dates reduced to the year, the
	// provider's ids (the patient's is a record number) replaced by this
	// reader's stable pseudonyms, references included. The search names
	// each resource by its pseudonym, which the reader reads it by; the
	// provider's id names nothing.
	search := read("/fhir/Observation")
	var found struct{ Entry []struct{ FullURL string } }
	if err := json.Unmarshal(search.body, &found); search.status != 200 || err != nil || len(found.Entry) != 1 || bytes.Contains(search.body, []byte("o1")) {
		t.Fatalf("research search: %d %s", search.status, search.body)
	}
	pseudo := found.Entry[0].FullURL[strings.LastIndex(found.Entry[0].FullURL, "/")+1:]
	if r := read("/fhir/Observation/o1"); r.status != 404 {
		t.Fatalf("research read by the provider's id: %d %s", r.status, r.body)
	}
	r = read("/fhir/Observation/" + pseudo)
	if r.status != 200 || bytes.Contains(r.body, []byte("p1")) || !bytes.Contains(r.body, []byte(`"effectiveDateTime":"2020"`)) {
		t.Fatalf("anonymous research read: %d %s", r.status, r.body)
	}
	var obs struct {
		ID      string `json:"id"`
		Subject struct {
			Reference string `json:"reference"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(r.body, &obs); err != nil {
		t.Fatal(err)
	}
	if obs.ID != pseudo || len(obs.ID) != 36 || !strings.HasPrefix(obs.Subject.Reference, "Patient/") || obs.Subject.Reference == "Patient/p1" {
		t.Fatalf("research ids: %+v", obs)
	}
	if again := read("/fhir/Observation/" + pseudo); !bytes.Equal(again.body, r.body) {
		t.Fatalf("pseudonyms are not stable: %s then %s", r.body, again.body)
	}
	if r := read("/fhir/Patient/p1"); r.status != 403 {
		t.Fatalf("outside scope: %d", r.status)
	}
	if r := w.revoke(2, zkhash.Bytes32(gID)); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := read("/fhir/Observation/" + pseudo); r.status != 403 {
		t.Fatalf("after revoke: %d %s", r.status, r.body)
	}
}

func TestBadInput(t *testing.T) {
	w := newWorld(t)
	w.open()
	outcome := func(r resp, status int) {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
		}
		if m := r.json(t); m["resourceType"] != "OperationOutcome" {
			t.Fatalf("not an OperationOutcome: %s", r.body)
		}
	}
	outcome(w.post("/auth/entitlement", map[string]any{"tag": "0x1", "bogus": 1}), 400)
	outcome(w.do(httptest.NewRequest("POST", "/auth/entitlement", strings.NewReader(`{"tag":"0x1"} {}`))), 400)
	outcome(w.post("/admin/patients", map[string]string{"id": "x"}), 401)
	outcome(w.staff("POST", "/admin/patients", map[string]string{"id": "p1"}), 409)
	outcome(w.staff("POST", "/admin/patients", map[string]string{"id": "bad id!"}), 400)
	big := httptest.NewRequest("POST", "/admin/patients/p1/resources", bytes.NewReader(make([]byte, 100<<10)))
	big.Header.Set("Authorization", "Bearer "+staffToken)
	outcome(w.do(big), 413)
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(`{"resourceType":"Nonsense","id":"n"}`))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	outcome(w.do(req), 400)
	// A Bundle entry asking for a DELETE (or a Bundle of another kind) is
	// refused, never written as an update.
	before, _ := w.cfg.Store.State(context.Background(), "p1")
	for _, b := range []string{
		`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + observationJS + `,"request":{"method":"DELETE","url":"Observation/o1"}}]}`,
		`{"resourceType":"Bundle","type":"searchset","entry":[{"resource":` + observationJS + `}]}`,
	} {
		req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		outcome(w.do(req), 400)
	}
	if after, _ := w.cfg.Store.State(context.Background(), "p1"); after.Hash != before.Hash || after.Seq != before.Seq {
		t.Fatalf("a refused bundle changed the records: %+v → %+v", before, after)
	}
	outcome(w.get(w.owner, "/fhir/Observation/missing"), 404)
	outcome(w.get(w.owner, "/fhir/Observation?name=x"), 400)
	outcome(w.do(httptest.NewRequest("GET", "/fhir/Observation/o1", nil)), 401)
	// A claim whose proof was made for another owner is refused before any transaction.
	claim := w.claimFor(1, simchain.Addr(simchain.Key("someone")))
	claim["owner"] = simchain.Addr(w.owner).Hex()
	outcome(w.staff("POST", "/admin/patients/p1/claim", claim), 403)
	// Other patients' resources are invisible.
	w.staff("POST", "/admin/patients", map[string]string{"id": "p2"})
	req = httptest.NewRequest("POST", "/admin/patients/p2/resources", strings.NewReader(`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}`))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("p2 resource: %d %s", r.status, r.body)
	}
	outcome(w.get(w.owner, "/fhir/Observation/o2"), 404)
	if r := w.do(httptest.NewRequest("GET", "/fhir/metadata", nil)); r.status != 200 || r.json(t)["resourceType"] != "CapabilityStatement" {
		t.Fatalf("metadata: %d %s", r.status, r.body)
	}
}

// TestAnchoring anchors the log and the records state, then checks the
// owner's entries and record-set hash against the roots on chain.
func TestAnchoring(t *testing.T) { onBackends(t, testAnchoring) }

func testAnchoring(t *testing.T, dsn string) {
	ctx := context.Background()
	w := newWorldOn(t, dsn)
	w.open()
	w.get(w.owner, "/fhir/Observation/o1")
	w.get(simchain.Key("nosy"), "/fhir/Observation/o1") // denied, logged
	made, err := w.gw.AnchorOnce(ctx)
	if err != nil || !made {
		t.Fatalf("anchor: %v %v", made, err)
	}
	if made, err := w.gw.AnchorOnce(ctx); err != nil || made {
		t.Fatalf("nothing changed, yet anchored again: %v %v", made, err)
	}
	if err := w.view.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	onChain := w.view.Anchors(1)
	if len(onChain) != 1 || onChain[0].FromSeq != 0 {
		t.Fatalf("anchors on chain: %+v", onChain)
	}
	r := w.get(w.owner, "/patient/log")
	var log struct {
		Entries []struct {
			Seq    uint64
			Hash   string
			Anchor *struct {
				Batch uint64
				Index int
				Count uint64
				Proof []string
			}
		}
	}
	if err := json.Unmarshal(r.body, &log); err != nil || len(log.Entries) < 3 {
		t.Fatalf("log %s: %v", r.body, err)
	}
	for _, e := range log.Entries {
		if e.Anchor == nil {
			t.Fatalf("entry %d not anchored", e.Seq)
		}
		var proof []common.Hash
		for _, p := range e.Anchor.Proof {
			proof = append(proof, common.HexToHash(p))
		}
		a := onChain[e.Anchor.Batch]
		h := common.HexToHash(e.Hash)
		if err := anchorVerify(a.LogRoot, h, e.Anchor.Index, int(e.Anchor.Count), proof); err != nil || uint64(e.Anchor.Index) != e.Seq-a.FromSeq {
			t.Fatalf("entry %d: %v", e.Seq, err)
		}
	}
	// The records state: the anchored leaf commits to the patient's
	// history and log commitment, and is under the chain's root.
	var st gatewayapi.State
	r = w.get(w.owner, "/patient/state")
	if err := json.Unmarshal(r.body, &st); err != nil || st.Dirty || st.Anchor == nil || st.Anchor.History == nil || st.Anchor.Log == nil {
		t.Fatalf("state %s: %v", r.body, err)
	}
	if st.Anchor.StateRoot != common.Hash(onChain[0].StateRoot) {
		t.Fatal("state root differs from the chain's")
	}
	hist := w.history(t, 0)
	h, err := store.HistoryRoot(hist)
	if err != nil || h.Size != 3 || h.Root != st.Anchor.History.Root || h.Size != st.Anchor.History.Size {
		t.Fatalf("history %+v %v; anchored %+v", h, err, st.Anchor.History)
	}
	var c store.LogCommitment
	for _, e := range log.Entries {
		if e.Seq < st.Anchor.Log.Through {
			c = c.Extend(e.Seq, common.HexToHash(e.Hash))
		}
	}
	if c.Count == 0 || c.Count != st.Anchor.Log.Count || c.Head != st.Anchor.Log.Head {
		t.Fatalf("log commitment %+v; anchored %+v", c, st.Anchor.Log)
	}
	c.Through = st.Anchor.Log.Through
	if st.Anchor.State != store.StateHashV2(h, c) {
		t.Fatal("the anchored leaf is not the state of the history and the log commitment")
	}
	var tag [32]byte
	w.tag.FillBytes(tag[:])
	if err := anchor.Verify(onChain[0].StateRoot, stateLeafHash(tag, st.Anchor.State), st.Anchor.Index, st.Anchor.Count, st.Anchor.Proof); err != nil {
		t.Fatalf("state proof: %v", err)
	}
	// A new record makes the patient dirty until the next anchor.
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(`{"resourceType":"Observation","id":"o3","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	w.do(req)
	if r := w.get(w.owner, "/patient/state"); !bytes.Contains(r.body, []byte(`"dirty":true`)) {
		t.Fatalf("state after a write: %s", r.body)
	}
	if made, err := w.gw.AnchorOnce(ctx); err != nil || !made {
		t.Fatalf("second anchor: %v %v", made, err)
	}
	w.view.Sync(ctx)
	if got := w.view.Anchors(1); len(got) != 2 || got[1].FromSeq != got[0].FromSeq+got[0].Count {
		t.Fatalf("second batch %+v", got)
	}
	// The second anchored history extends the first: a consistency proof
	// from the size the client names.
	var st2 gatewayapi.State
	if err := json.Unmarshal(w.get(w.owner, "/patient/state?from=3").body, &st2); err != nil || st2.Anchor == nil || st2.Anchor.History.Size != 4 || st2.Anchor.From != 3 {
		t.Fatalf("state after the second anchor: %+v %v", st2.Anchor, err)
	}
	if err := anchor.VerifyConsistency(3, 4, st.Anchor.History.Root, st2.Anchor.History.Root, st2.Anchor.Consistency); err != nil {
		t.Fatalf("consistency: %v", err)
	}
	// A restarted gateway serves the same leaf and proofs, from the store.
	w.restart()
	var st3 gatewayapi.State
	if err := json.Unmarshal(w.get(w.owner, "/patient/state?from=3").body, &st3); err != nil || st3.Anchor == nil {
		t.Fatalf("state after a restart: %v", err)
	}
	if b1, _ := json.Marshal(st2.Anchor); string(b1) != string(must(json.Marshal(st3.Anchor))) {
		t.Fatalf("after a restart: %+v, before %+v", st3.Anchor, st2.Anchor)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// history reads the owner's whole records history from size from on, a
// page of two at a time.
func (w *world) history(t *testing.T, from uint64) []store.HistoryEntry {
	t.Helper()
	var out []store.HistoryEntry
	for {
		var page gatewayapi.HistoryPage
		r := w.get(w.owner, fmt.Sprintf("/patient/history?from=%d&limit=2", from))
		if err := json.Unmarshal(r.body, &page); r.status != 200 || err != nil {
			t.Fatalf("history from %d: %d %s", from, r.status, r.body)
		}
		for _, e := range page.Entries {
			out = append(out, e.Ledger())
		}
		if !page.More {
			return out
		}
		if page.Next != from+uint64(len(page.Entries)) {
			t.Fatalf("next %d after %d entries from %d", page.Next, len(page.Entries), from)
		}
		from = page.Next
	}
}

// TestImportSynthea imports a real Synthea bundle through the admin API,
// unchanged; a second import changes nothing; a resource of another patient
// is refused.
func TestImportSynthea(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.BodyLimit = 64 << 20 })
	patients, _ := syntheatest.Bundles(t)
	raw := syntheatest.Read(t, patients[0])
	post := func(path string, body []byte) resp {
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		return w.do(req)
	}
	r := post("/admin/import", raw)
	if r.status != 201 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	first := r.json(t)
	if first["created"].(float64) < 10 {
		t.Fatalf("import created %v", first)
	}
	r = post("/admin/import", raw)
	if r.status != 201 || r.json(t)["created"].(float64) != 0 || r.json(t)["updated"].(float64) != 0 {
		t.Fatalf("re-import changed something: %s", r.body)
	}
	w.staff("POST", "/admin/patients", map[string]string{"id": "px"})
	other := `{"resourceType":"Observation","id":"ox","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/someone-else"}}`
	if r := post("/admin/patients/px/resources", []byte(other)); r.status != 400 {
		t.Fatalf("resource of another patient: %d %s", r.status, r.body)
	}
}

// TestOwnerPages: the owner's log and history come in pages that say
// whether another follows and where; bad parameters are refused, and only
// the owner may read either.
func TestOwnerPages(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()
	var extra []store.LogEntry
	for range 1500 {
		extra = append(extra, store.LogEntry{ActorKind: store.ActorGrantee, ActorID: "0xdoc", Purpose: access.Treatment, Action: "read", PatientID: "p1", Outcome: store.Allowed})
	}
	if _, err := w.cfg.Store.AppendLog(ctx, extra...); err != nil {
		t.Fatal(err)
	}
	all, err := w.cfg.Store.PatientLog(ctx, "p1", 0, store.MaxCount)
	if err != nil {
		t.Fatal(err)
	}
	want := len(all)
	if more, err := w.cfg.Store.PatientLog(ctx, "p1", all[len(all)-1].Seq+1, store.MaxCount); err == nil {
		want += len(more)
	}
	var got []gatewayapi.LogEntry
	pages := 0
	for from := uint64(0); ; pages++ {
		var page gatewayapi.LogPage
		r := w.get(w.owner, fmt.Sprintf("/patient/log?from=%d", from))
		if err := json.Unmarshal(r.body, &page); r.status != 200 || err != nil {
			t.Fatalf("log from %d: %d %s", from, r.status, r.body)
		}
		if len(page.Entries) > ownerPage || (page.More && page.Next != page.Entries[len(page.Entries)-1].Seq+1) {
			t.Fatalf("page of %d entries, more %v, next %d", len(page.Entries), page.More, page.Next)
		}
		got = append(got, page.Entries...)
		if !page.More {
			break
		}
		from = page.Next
	}
	if pages < 1 || len(got) != want || want < 1500 {
		t.Fatalf("%d entries in %d pages, want %d", len(got), pages+1, want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Fatalf("entry %d out of order", i)
		}
	}
	if r := w.get(w.owner, "/patient/log?from=0&limit=2"); !bytes.Contains(r.body, []byte(`"more":true`)) || len(r.json(t)["entries"].([]any)) != 2 {
		t.Fatalf("limit 2: %s", r.body)
	}
	// Past the anchored history, no consistency proof: the client sees the
	// anchored size is below its own.
	if _, err := w.gw.AnchorOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var st gatewayapi.State
	if err := json.Unmarshal(w.get(w.owner, "/patient/state?from=99").body, &st); err != nil || st.Anchor == nil || st.Anchor.From != 0 || len(st.Anchor.Consistency) != 0 || st.Anchor.History.Size != 3 {
		t.Fatalf("state from beyond the history: %+v %v", st.Anchor, err)
	}
	for _, target := range []string{"/patient/log?from=x", "/patient/log?limit=0", "/patient/log?limit=1000", "/patient/history?from=-1",
		"/patient/history?limit=x", "/patient/state?from=1.5"} {
		if r := w.get(w.owner, target); r.status != 400 || r.json(t)["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
	doctor := simchain.Key("doctor")
	obsOnly, _ := access.NewScope("Observation")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), obsOnly, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	for _, target := range []string{"/patient/history", "/patient/state", "/patient/log"} {
		if r := w.get(doctor, target); r.status != 403 {
			t.Errorf("a grantee read %s: %d", target, r.status)
		}
	}
}
