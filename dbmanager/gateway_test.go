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
	"github.com/medrec-zk/medrec/dbmanager/api"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
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
	ctx := context.Background()
	c := simchain.New(t, 2, nil)
	v, err := chainview.New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	dbPath := dsn
	db, err := sqlstore.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
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
	v, err := chainview.New(w.chain.Backend, w.chain.D)
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
	}, key, w.chain.ChainID, time.Now())
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
	var log api.LogPage
	if err := json.Unmarshal(r.body, &log); err != nil {
		t.Fatal(err)
	}
	doctorAddr := simchain.Addr(doctor).Hex()
	var allowed, denied int
	for _, e := range log.Entries {
		if got := api.LogEntry.Store(e); store.EntryHash(e.Prev, got) != e.Hash {
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
		ch, err := zkhash.ParseHex(challenge)
		if err != nil {
			t.Fatal(err)
		}
		proof, pub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v, GrantSecret: k, Tag: tagEl, Challenge: ch})
		if err != nil {
			t.Fatal(err)
		}
		return w.post("/auth/entitlement", map[string]string{"tag": zkhash.Hex(pub.Tag), "grant": zkhash.Hex(pub.Grant), "challenge": zkhash.Hex(pub.Challenge), "proof": proof.String()})
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
	// reader's stable pseudonyms, references included.
	r = read("/fhir/Observation/o1")
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
	if obs.ID == "o1" || len(obs.ID) != 36 || !strings.HasPrefix(obs.Subject.Reference, "Patient/") || obs.Subject.Reference == "Patient/p1" {
		t.Fatalf("research ids: %+v", obs)
	}
	if again := read("/fhir/Observation/o1"); !bytes.Equal(again.body, r.body) {
		t.Fatalf("pseudonyms are not stable: %s then %s", r.body, again.body)
	}
	search := read("/fhir/Observation")
	if search.status != 200 || !bytes.Contains(search.body, []byte(`"fullUrl":"Observation/`+obs.ID+`"`)) || bytes.Contains(search.body, []byte("o1")) {
		t.Fatalf("research search: %d %s", search.status, search.body)
	}
	if r := read("/fhir/Patient/p1"); r.status != 403 {
		t.Fatalf("outside scope: %d", r.status)
	}
	if r := w.revoke(2, zkhash.Bytes32(gID)); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := read("/fhir/Observation/o1"); r.status != 403 {
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
	// The records state: the anchored leaf is the current hash, under the chain's root.
	var st struct {
		Hash   string
		Dirty  bool
		Anchor struct {
			Batch     int
			StateRoot string
			State     string
			Index     int
			Count     int
			Proof     []string
		}
	}
	r = w.get(w.owner, "/patient/state")
	if err := json.Unmarshal(r.body, &st); err != nil || st.Dirty || st.Anchor.State != st.Hash {
		t.Fatalf("state %s: %v", r.body, err)
	}
	if common.HexToHash(st.Anchor.StateRoot) != common.Hash(onChain[0].StateRoot) {
		t.Fatal("state root differs from the chain's")
	}
	var proof []common.Hash
	for _, p := range st.Anchor.Proof {
		proof = append(proof, common.HexToHash(p))
	}
	var tag [32]byte
	w.tag.FillBytes(tag[:])
	leaf := stateLeafHash(tag, common.HexToHash(st.Hash))
	if err := anchor.Verify(onChain[0].StateRoot, leaf, st.Anchor.Index, st.Anchor.Count, proof); err != nil {
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
