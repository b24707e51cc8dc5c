package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// SMART Backend Services and EHR feeds: an integration engine signs a
// client assertion (ES384 or RS384), gets a write-only token, and creates,
// updates, conditionally creates and updates, and sends transaction and
// batch Bundles; every bad assertion, scope, resource and Bundle is
// refused with a 4xx, logged, and writes nothing.

const backendTokenURL = "http://example.com/smart/token" // httptest's base

// backendKeys are a test integration engine's keys: one per algorithm.
type backendKeys struct {
	ec  *ecdsa.PrivateKey
	rsa *rsa.PrivateKey
}

var testBackendKeys = func() backendKeys {
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return backendKeys{ec: ec, rsa: rk}
}()

// jwks is the public JWKS the provider registers for the engine.
func (k backendKeys) jwks() jose.JSONWebKeySet {
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &k.ec.PublicKey, KeyID: "ec-1", Algorithm: "ES384", Use: "sig"},
		{Key: &k.rsa.PublicKey, KeyID: "rsa-1", Algorithm: "RS384", Use: "sig"},
	}}
}

// feedWorld is a world whose gateway registers the backend clients
// "engine" (every type, both keys) and "labs" (Observations only, the EC
// key), and holds patient p1.
type feedWorld struct {
	*world
}

func newFeedWorld(t testing.TB, dsn string, opts ...func(*Config)) feedWorld {
	t.Helper()
	obs, _ := access.NewScope("Observation")
	k := testBackendKeys
	w := newWorldOn(t, dsn, append([]func(*Config){func(c *Config) {
		c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30
		c.BackendClients = []BackendClient{
			{ClientID: "engine", Name: "Integration engine", Keys: k.jwks()},
			{ClientID: "labs", Name: "Lab feed", Keys: jose.JSONWebKeySet{Keys: k.jwks().Keys[:1]}, Scope: obs},
		}
		c.SMARTApps = []SMARTApp{{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{smartRedirect}}}
	}}, opts...)...)
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p1"}); r.status != 201 {
		t.Fatalf("create p1: %d %s", r.status, r.body)
	}
	return feedWorld{w}
}

// claims are a valid assertion's claims for client.
func assertionClaims(client string) josejwt.Claims {
	now := time.Now()
	return josejwt.Claims{Issuer: client, Subject: client, Audience: josejwt.Audience{backendTokenURL},
		Expiry: josejwt.NewNumericDate(now.Add(4 * time.Minute)), IssuedAt: josejwt.NewNumericDate(now), ID: randomID()}
}

func randomID() string { s, _ := randomHex(16); return s }

// sign signs claims with key as alg, naming kid.
func sign(t testing.TB, key any, alg jose.SignatureAlgorithm, kid string, claims any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	out, err := josejwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func backendForm(assertion, scope string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "scope": {scope}, "client_assertion_type": {assertionType}, "client_assertion": {assertion}}
}

func (w feedWorld) tokenRequest(t testing.TB, form url.Values) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("POST", "/smart/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := w.do(req)
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("token answer %d %q: %v", r.status, r.body, err)
	}
	return r.status, m
}

// token gets an access token for the engine, signed with its EC key.
func (w feedWorld) token(t testing.TB, client, scope string) string {
	t.Helper()
	status, m := w.tokenRequest(t, backendForm(sign(t, testBackendKeys.ec, jose.ES384, "ec-1", assertionClaims(client)), scope))
	if status != 200 {
		t.Fatalf("token: %d %v", status, m)
	}
	return m["access_token"].(string)
}

// write sends a FHIR write with a bearer token and headers ("Name: value").
func (w feedWorld) write(tok, method, target, body string, headers ...string) (resp, http.Header) {
	w.t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	res, err := w.gw.App().Test(req, -1)
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}, res.Header
}

// logSince returns the access-log entries from seq on.
func (w feedWorld) logSince(t testing.TB, from uint64) []store.LogEntry {
	t.Helper()
	entries, err := w.cfg.Store.LogRange(context.Background(), from, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func (w feedWorld) logHead(t testing.TB) uint64 {
	t.Helper()
	h, err := w.cfg.Store.LogHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Next
}

func observation(id, patient, extra string) string {
	idPart := ""
	if id != "" {
		idPart = `"id":"` + id + `",`
	}
	return `{"resourceType":"Observation",` + idPart + `"status":"final","code":{"text":"glucose"},"subject":{"reference":"` + patient + `"}` + extra + `}`
}

func identified(system, value string) string {
	return `,"identifier":[{"system":"` + system + `","value":"` + value + `"}]`
}

// TestBackendToken: assertions signed with either registered key earn a
// token; every other assertion is refused with RFC 6749's JSON, logged,
// and earns none.
func TestBackendToken(t *testing.T) {
	w := newFeedWorld(t, t.TempDir()+"/records.db")
	k := testBackendKeys
	for _, alg := range []struct {
		key any
		alg jose.SignatureAlgorithm
		kid string
	}{{k.ec, jose.ES384, "ec-1"}, {k.rsa, jose.RS384, "rsa-1"}, {k.ec, jose.ES384, ""}} {
		status, m := w.tokenRequest(t, backendForm(sign(t, alg.key, alg.alg, alg.kid, assertionClaims("engine")), "system/*.cu"))
		if status != 200 || m["token_type"] != "bearer" || m["scope"] != "system/*.cu" || m["access_token"] == "" || m["expires_in"].(float64) > 300 {
			t.Fatalf("%s: %d %v", alg.alg, status, m)
		}
	}
	otherEC, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	replayed := sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine"))
	if status, m := w.tokenRequest(t, backendForm(replayed, "system/*.cu")); status != 200 {
		t.Fatalf("first use: %d %v", status, m)
	}
	claims := func(change func(*josejwt.Claims)) josejwt.Claims {
		c := assertionClaims("engine")
		change(&c)
		return c
	}
	none := base64url(`{"alg":"none","typ":"JWT"}`) + "." + base64url(mustJSON(assertionClaims("engine"))) + "."
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   string
	}{
		{"replayed jti", backendForm(replayed, "system/*.cu"), 401, "invalid_client"},
		{"expired", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.Expiry = josejwt.NewNumericDate(time.Now().Add(-time.Second)) })), "system/*.cu"), 401, "invalid_client"},
		{"exp too far ahead", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.Expiry = josejwt.NewNumericDate(time.Now().Add(10 * time.Minute)) })), "system/*.cu"), 401, "invalid_client"},
		{"no exp", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.Expiry = nil })), "system/*.cu"), 401, "invalid_client"},
		{"wrong aud", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.Audience = josejwt.Audience{"http://example.com/fhir"} })), "system/*.cu"), 401, "invalid_client"},
		{"sub not the client", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.Subject = "labs" })), "system/*.cu"), 401, "invalid_client"},
		{"no jti", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.ID = "" })), "system/*.cu"), 401, "invalid_client"},
		{"nbf ahead", backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims(func(c *josejwt.Claims) { c.NotBefore = josejwt.NewNumericDate(time.Now().Add(3 * time.Minute)) })), "system/*.cu"), 401, "invalid_client"},
		{"unknown client", backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("stranger")), "system/*.cu"), 401, "invalid_client"},
		{"a SMART app is no backend client", backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("chart")), "system/*.cu"), 401, "invalid_client"},
		{"unregistered key", backendForm(sign(t, otherEC, jose.ES384, "ec-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"another client's key", backendForm(sign(t, k.rsa, jose.RS384, "rsa-1", assertionClaims("labs")), "system/Observation.cu"), 401, "invalid_client"},
		{"kid of the other key", backendForm(sign(t, k.ec, jose.ES384, "rsa-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"RS256", backendForm(sign(t, k.rsa, jose.RS256, "rsa-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"PS384", backendForm(sign(t, k.rsa, jose.PS384, "rsa-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"ES256", backendForm(sign(t, p256, jose.ES256, "ec-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"HS384", backendForm(sign(t, []byte(strings.Repeat("k", 48)), jose.HS384, "ec-1", assertionClaims("engine")), "system/*.cu"), 401, "invalid_client"},
		{"alg none", backendForm(none, "system/*.cu"), 401, "invalid_client"},
		{"garbage", backendForm("not.a.jwt", "system/*.cu"), 401, "invalid_client"},
		{"no assertion", backendForm("", "system/*.cu"), 400, "invalid_request"},
		{"wrong assertion type", func() url.Values {
			f := backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine")), "system/*.cu")
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}(), 400, "invalid_request"},
		{"client secret", func() url.Values {
			f := backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine")), "system/*.cu")
			f.Set("client_secret", "s")
			return f
		}(), 401, "invalid_client"},
		{"client_id not the issuer", func() url.Values {
			f := backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine")), "system/*.cu")
			f.Set("client_id", "labs")
			return f
		}(), 401, "invalid_client"},
		{"read scope", backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine")), "system/*.rs"), 400, "invalid_scope"},
		{"scope outside the registration", backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("labs")), "system/Condition.cu"), 400, "invalid_scope"},
		{"patient scope", backendForm(sign(t, k.ec, jose.ES384, "ec-1", assertionClaims("engine")), "patient/*.rs"), 400, "invalid_scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := w.logHead(t)
			status, m := w.tokenRequest(t, c.form)
			if status != c.status || m["error"] != c.code || m["access_token"] != nil {
				t.Fatalf("got %d %v, want %d %s", status, m, c.status, c.code)
			}
			entries := w.logSince(t, before)
			if len(entries) != 1 || entries[0].Outcome != store.Denied || entries[0].Action != "backend-token" {
				t.Fatalf("log: %+v", entries)
			}
			if a := c.form.Get("client_assertion"); a != "" && strings.Contains(entries[0].Detail, a) {
				t.Fatal("the assertion is in the log")
			}
		})
	}
}

func base64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestBackendClientsConfig: the gateway refuses to start with a
// registration it could not check assertions against.
func TestBackendClientsConfig(t *testing.T) {
	k := testBackendKeys
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, c := range []struct {
		name    string
		clients []BackendClient
	}{
		{"no id", []BackendClient{{Keys: k.jwks()}}},
		{"twice", []BackendClient{{ClientID: "a", Keys: k.jwks()}, {ClientID: "a", Keys: k.jwks()}}},
		{"an app's id", []BackendClient{{ClientID: "chart", Keys: k.jwks()}}},
		{"no key", []BackendClient{{ClientID: "a"}}},
		{"private key", []BackendClient{{ClientID: "a", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: k.ec}}}}}},
		{"small RSA key", []BackendClient{{ClientID: "a", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &small.PublicKey}}}}}},
		{"P-256 key", []BackendClient{{ClientID: "a", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p256.PublicKey}}}}}},
		{"alg not the key's", []BackendClient{{ClientID: "a", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.rsa.PublicKey, Algorithm: "RS256"}}}}}},
		{"HMAC key", []BackendClient{{ClientID: "a", Keys: jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: []byte("secret"), Algorithm: "HS384"}}}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			apps := []SMARTApp{{ClientID: "chart", Name: "Chart", RedirectURIs: []string{smartRedirect}}}
			if err := checkBackendClients(c.clients, apps); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if err := checkBackendClients([]BackendClient{{ClientID: "a", Keys: k.jwks()}}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestFeed: an integration engine's writes, on each records database —
// create, update, conditional create and update, a transaction and a
// batch — each answered as FHIR asks and in the access log under the
// client; its token reads nothing, and a patient app's token writes
// nothing.
func TestFeed(t *testing.T) { onBackends(t, testFeed) }

func testFeed(t *testing.T, dsn string) {
	w := newFeedWorld(t, dsn)
	ctx := context.Background()
	tok := w.token(t, "engine", "system/*.cu")
	start := w.logHead(t)

	// Create: 201, Location, ETag, the resource as sent.
	body := observation("", "Patient/p1", identified("urn:lab", "A1"))
	r, h := w.write(tok, "POST", "/fhir/Observation", body)
	if r.status != 201 || h.Get("ETag") != `W/"1"` || !strings.HasPrefix(h.Get("Location"), "http://example.com/fhir/Observation/") || string(r.body) != body {
		t.Fatalf("create: %d %v %s", r.status, h, r.body)
	}
	a1 := strings.Split(strings.TrimPrefix(h.Get("Location"), "http://example.com/fhir/Observation/"), "/")[0]
	if got, err := w.cfg.Store.Get(ctx, "Observation", a1); err != nil || got.PatientID != "p1" || string(got.Raw) != body {
		t.Fatalf("stored: %+v %v", got, err)
	}

	// Update: as create when new, then a new version; Prefer: return=minimal.
	if r, h := w.write(tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", "")); r.status != 201 || h.Get("ETag") != `W/"1"` {
		t.Fatalf("update as create: %d %s", r.status, r.body)
	}
	if r, h := w.write(tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"issued":"2024-01-01T00:00:00Z"`), "Prefer: return=minimal"); r.status != 200 || h.Get("ETag") != `W/"2"` || len(r.body) != 0 {
		t.Fatalf("update: %d %v %s", r.status, h, r.body)
	}

	// Conditional create: the one match is answered, nothing written.
	if r, h := w.write(tok, "POST", "/fhir/Observation", observation("", "Patient/p1", identified("urn:lab", "A1")), "If-None-Exist: identifier=urn:lab|A1"); r.status != 200 ||
		!strings.Contains(h.Get("Location"), "/Observation/"+a1+"/_history/1") || len(r.body) != 0 {
		t.Fatalf("conditional create, matched: %d %v %s", r.status, h, r.body)
	}
	if r, _ := w.write(tok, "POST", "/fhir/Observation", observation("", "Patient/p1", identified("urn:lab", "B1")), "If-None-Exist: identifier=urn:lab|B1"); r.status != 201 {
		t.Fatalf("conditional create, none matched: %d %s", r.status, r.body)
	}
	if r, _ := w.write(tok, "POST", "/fhir/Observation", observation("", "Patient/p1", identified("urn:lab", "B1"))); r.status != 201 {
		t.Fatalf("a second B1: %d %s", r.status, r.body)
	}
	if r, _ := w.write(tok, "POST", "/fhir/Observation", observation("", "Patient/p1", identified("urn:lab", "B1")), "If-None-Exist: identifier=urn:lab|B1"); r.status != 412 || !bytes.Contains(r.body, []byte("OperationOutcome")) {
		t.Fatalf("conditional create, two matched: %d %s", r.status, r.body)
	}

	// Conditional update: the match is updated; no match creates.
	if r, h := w.write(tok, "PUT", "/fhir/Observation?identifier=urn:lab|A1", observation("", "Patient/p1", identified("urn:lab", "A1")+`,"issued":"2024-01-01T00:00:00Z"`)); r.status != 200 || h.Get("ETag") != `W/"2"` {
		t.Fatalf("conditional update: %d %v %s", r.status, h, r.body)
	}
	if r, _ := w.write(tok, "PUT", "/fhir/Observation?identifier=urn:lab|C1", observation("", "Patient/p1", identified("urn:lab", "C1"))); r.status != 201 {
		t.Fatalf("conditional update as create: %d %s", r.status, r.body)
	}

	// A transaction: a new patient, its observation by the patient's
	// fullUrl, a practitioner, and an observation naming it.
	const u = "urn:uuid:5f0c3a34-5ad5-4a52-9a1e-1b1a3f7e9c01"
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[
 {"fullUrl":"` + u + `","resource":{"resourceType":"Patient","name":[{"family":"Feed"}]},"request":{"method":"POST","url":"Patient"}},
 {"resource":` + observation("", u, "") + `,"request":{"method":"POST","url":"Observation"}},
 {"resource":{"resourceType":"Practitioner","id":"pr1","name":[{"family":"Who"}]},"request":{"method":"PUT","url":"Practitioner/pr1"}},
 {"resource":` + observation("o-tx", u, `,"performer":[{"reference":"Practitioner/pr1"}]`) + `,"request":{"method":"PUT","url":"Observation/o-tx"}}]}`
	r, h = w.write(tok, "POST", "/fhir", tx)
	if h.Get("Content-Type") != "application/fhir+json" {
		t.Fatalf("transaction-response as %q", h.Get("Content-Type"))
	}
	var out bundleResponse
	if err := json.Unmarshal(r.body, &out); r.status != 200 || err != nil || out.Type != "transaction-response" || len(out.Entry) != 4 {
		t.Fatalf("transaction: %d %s", r.status, r.body)
	}
	for i, e := range out.Entry {
		if e.Response.Status != "201 Created" || e.Response.Location == "" {
			t.Fatalf("transaction entry %d: %+v", i, e.Response)
		}
	}
	newPatient := strings.TrimPrefix(u, "urn:uuid:")
	if _, err := w.cfg.Store.Patient(ctx, newPatient); err != nil {
		t.Fatalf("the transaction's patient: %v", err)
	}
	if got, err := w.cfg.Store.Get(ctx, "Observation", "o-tx"); err != nil || got.PatientID != newPatient {
		t.Fatalf("o-tx: %+v %v", got.Meta, err)
	}

	// A batch: each entry on its own.
	batch := `{"resourceType":"Bundle","type":"batch","entry":[
 {"resource":` + observation("o-b1", "Patient/p1", "") + `,"request":{"method":"PUT","url":"Observation/o-b1"}},
 {"resource":` + observation("o-b2", "Patient/p1", `,"performer":[{"reference":"Practitioner/ghost"}]`) + `,"request":{"method":"PUT","url":"Observation/o-b2"}}]}`
	r, _ = w.write(tok, "POST", "/fhir/", batch)
	out = bundleResponse{}
	if err := json.Unmarshal(r.body, &out); r.status != 200 || err != nil || out.Type != "batch-response" || len(out.Entry) != 2 ||
		out.Entry[0].Response.Status != "201 Created" || out.Entry[1].Response.Status != "400 Bad Request" || out.Entry[1].Response.Outcome == nil {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	if _, err := w.cfg.Store.Get(ctx, "Observation", "o-b1"); err != nil {
		t.Fatalf("o-b1: %v", err)
	}
	if _, err := w.cfg.Store.Get(ctx, "Observation", "o-b2"); err == nil {
		t.Fatal("o-b2 was written")
	}

	// Who, what, when: every write in the log, under the client.
	var writes, refused int
	for _, e := range w.logSince(t, start) {
		if e.ActorKind != store.ActorStaff || e.ActorID != "backend:engine" || e.Action != "feed" || e.Time.IsZero() {
			t.Fatalf("log entry %+v", e)
		}
		switch e.Outcome {
		case store.Allowed:
			writes++
			if len(e.Resources) == 0 || e.PatientID == "" {
				t.Fatalf("log entry %+v", e)
			}
		case store.Denied:
			refused++
		}
	}
	if writes != 10 || refused != 2 { // 412 and the batch's bad entry
		t.Fatalf("logged %d writes, %d refusals", writes, refused)
	}

	// The backend token reads nothing; an app's token writes nothing.
	if r := w.bearer(tok, "/fhir/Observation/o1"); r.status != 403 {
		t.Fatalf("backend read: %d %s", r.status, r.body)
	}
	appTok := w.appToken(t)
	if r, _ := w.write(appTok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", "")); r.status != 403 {
		t.Fatalf("app write: %d %s", r.status, r.body)
	}

	// An expired token writes nothing.
	w.gw.backend.mu.Lock()
	w.gw.backend.tokens[tokenHash(tok)].expires = time.Now().Add(-time.Second)
	w.gw.backend.mu.Unlock()
	if r, _ := w.write(tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"issued":"2025-01-01T00:00:00Z"`)); r.status != 401 {
		t.Fatalf("expired token: %d %s", r.status, r.body)
	}
}

// bearer GETs target with a bearer token.
func (w feedWorld) bearer(tok, target string) resp {
	req := httptest.NewRequest("GET", target, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return w.do(req)
}

// appToken is a SMART app's live access token (its approval made up: the
// test is about what the token may do, not how it was approved).
func (w feedWorld) appToken(t testing.TB) string {
	tok, _ := randomHex(32)
	ap := &approval{app: &w.cfg.SMARTApps[0], expires: time.Now().Add(time.Hour)}
	w.gw.smart.mu.Lock()
	w.gw.smart.tokens[tokenHash(tok)] = &appToken{approval: ap, expires: time.Now().Add(time.Hour), hash: tokenHash(tok)}
	w.gw.smart.mu.Unlock()
	return tok
}

// TestFeedRefusals: every bad write is a 4xx OperationOutcome, logged as a
// refusal, and writes nothing — in a transaction, not even its good
// entries.
func TestFeedRefusals(t *testing.T) { onBackends(t, testFeedRefusals) }

func testFeedRefusals(t *testing.T, dsn string) {
	w := newFeedWorld(t, dsn)
	ctx := context.Background()
	tok := w.token(t, "engine", "system/*.cu")
	labs := w.token(t, "labs", "system/Observation.cu")
	createOnly := w.token(t, "engine", "system/Observation.c")
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p2"}); r.status != 201 {
		t.Fatalf("create p2: %d %s", r.status, r.body)
	}
	if r, _ := w.write(tok, "PUT", "/fhir/Observation/o-p2", observation("o-p2", "Patient/p2", "")); r.status != 201 {
		t.Fatalf("p2's observation: %d %s", r.status, r.body)
	}
	good := func(id string) string { return observation(id, "Patient/p1", "") }
	entry := func(res, method, url string) string {
		return `{"resource":` + res + `,"request":{"method":"` + method + `","url":"` + url + `"}}`
	}
	bundle := func(typ string, entries ...string) string {
		return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`
	}
	for _, c := range []struct {
		name, token, method, target, body string
		headers                           []string
		status                            int
	}{
		{"no token", "", "PUT", "/fhir/Observation/o1", good("o1"), nil, 401},
		{"unknown token", "nope", "PUT", "/fhir/Observation/o1", good("o1"), nil, 401},
		{"a patient app's token", "app", "PUT", "/fhir/Observation/o1", good("o1"), nil, 403},
		{"a staff token", staffToken, "PUT", "/fhir/Observation/o1", good("o1"), nil, 401},
		{"type outside the scope", labs, "PUT", "/fhir/Condition/c1", `{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}`, nil, 403},
		{"update with a create-only scope", createOnly, "PUT", "/fhir/Observation/o1", good("o1"), nil, 403},
		{"a transaction entry outside the scope", labs, "POST", "/fhir", bundle("transaction", entry(good("o1"), "PUT", "Observation/o1"),
			entry(`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}`, "PUT", "Condition/c1")), nil, 403},
		{"unknown patient", tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/nobody", ""), nil, 400},
		{"no patient", tok, "POST", "/fhir/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`, nil, 400},
		{"reference resolving nowhere", tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"performer":[{"reference":"Practitioner/ghost"}]`), nil, 400},
		{"reference to another patient's resource", tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"hasMember":[{"reference":"Observation/o-p2"}]`), nil, 400},
		{"urn:uuid naming no entry", tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"performer":[{"reference":"urn:uuid:0b6d0a5e-6e4a-4e8e-9a8e-2c0f3b7a9d11"}]`), nil, 400},
		{"conditional reference", tok, "PUT", "/fhir/Observation/o1", observation("o1", "Patient/p1", `,"performer":[{"reference":"Practitioner?identifier=x|1"}]`), nil, 400},
		{"malformed JSON", tok, "PUT", "/fhir/Observation/o1", `{"resourceType":"Observation",`, nil, 400},
		{"not FHIR", tok, "PUT", "/fhir/Observation/o1", `{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p1"}}`, nil, 400},
		{"body of another type", tok, "POST", "/fhir/Condition", good(""), nil, 400},
		{"id not the URL's", tok, "PUT", "/fhir/Observation/o1", good("o2"), nil, 400},
		{"unknown type", tok, "POST", "/fhir/Spaceship", good(""), nil, 400},
		{"an existing id created", tok, "POST", "/fhir/Observation", observation("o-p2", "Patient/p1", ""), nil, 409},
		{"another patient's resource updated", tok, "PUT", "/fhir/Observation/o-p2", observation("o-p2", "Patient/p1", ""), nil, 409},
		{"a condition other than identifier", tok, "POST", "/fhir/Observation", good(""), []string{"If-None-Exist: code=x"}, 400},
		{"malformed Bundle", tok, "POST", "/fhir", `{"resourceType":"Bundle","type":"transaction","entry":[`, nil, 400},
		{"not a Bundle", tok, "POST", "/fhir", good("o1"), nil, 400},
		{"a collection", tok, "POST", "/fhir", bundle("collection", entry(good("o1"), "PUT", "Observation/o1")), nil, 400},
		{"an entry without a request", tok, "POST", "/fhir", bundle("transaction", `{"resource":`+good("o1")+`}`), nil, 400},
		{"a DELETE entry", tok, "POST", "/fhir", bundle("transaction", entry(good("o1"), "DELETE", "Observation/o1")), nil, 400},
		{"an unknown member", tok, "POST", "/fhir", `{"resourceType":"Bundle","type":"transaction","surprise":1,"entry":[` + entry(good("o1"), "PUT", "Observation/o1") + `]}`, nil, 400},
		{"a transaction with one bad entry", tok, "POST", "/fhir", bundle("transaction", entry(good("o1"), "PUT", "Observation/o1"),
			entry(observation("o2", "Patient/p1", `,"performer":[{"reference":"Practitioner/ghost"}]`), "PUT", "Observation/o2")), nil, 400},
		{"a transaction of two patients", tok, "POST", "/fhir", bundle("transaction", entry(good("o1"), "PUT", "Observation/o1"),
			entry(observation("o2", "Patient/p2", ""), "PUT", "Observation/o2")), nil, 400},
		{"a transaction writing one resource twice", tok, "POST", "/fhir", bundle("transaction", entry(good("o1"), "PUT", "Observation/o1"), entry(good("o1"), "PUT", "Observation/o1")), nil, 400},
		{"a transaction with an existing id created", tok, "POST", "/fhir", bundle("transaction", entry(good("o1"), "PUT", "Observation/o1"),
			entry(observation("o-p2", "Patient/p1", ""), "POST", "Observation")), nil, 409},
	} {
		t.Run(c.name, func(t *testing.T) {
			token := c.token
			if token == "app" {
				token = w.appToken(t)
			}
			changes, err := w.cfg.Store.Changes(ctx, "p1", 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			before := w.logHead(t)
			r, _ := w.write(token, c.method, c.target, c.body, c.headers...)
			if r.status != c.status || !bytes.Contains(r.body, []byte(`"resourceType":"OperationOutcome"`)) {
				t.Fatalf("got %d %s, want %d", r.status, r.body, c.status)
			}
			after, err := w.cfg.Store.Changes(ctx, "p1", 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(after) != len(changes) {
				t.Fatalf("written: %+v", after[len(changes):])
			}
			for _, id := range []string{"o1", "o2", "c1"} {
				if _, err := w.cfg.Store.Get(ctx, "Observation", id); err == nil {
					t.Fatalf("Observation/%s written", id)
				}
			}
			entries := w.logSince(t, before)
			if len(entries) != 1 || entries[0].Outcome != store.Denied {
				t.Fatalf("log: %+v", entries)
			}
			if strings.Contains(entries[0].Detail, token) && token != "" {
				t.Fatal("the token is in the log")
			}
			if backend := token == tok || token == labs || token == createOnly; backend != strings.HasPrefix(entries[0].ActorID, "backend:") ||
				backend && entries[0].ActorKind != store.ActorStaff {
				t.Fatalf("refusal logged under %v %q", entries[0].ActorKind, entries[0].ActorID)
			}
		})
	}
}

// TestBackendTokenAudience: with its public URL configured, the gateway
// takes only assertions made for that URL, whatever Host the request
// names: another gateway that registered the same client cannot replay
// here an assertion it received.
func TestBackendTokenAudience(t *testing.T) {
	w := newFeedWorld(t, filepath.Join(t.TempDir(), "records.db"), func(c *Config) { c.PublicURL = "https://gw1.example:8443/" })
	k := testBackendKeys
	for _, c := range []struct {
		aud    string
		status int
	}{
		{backendTokenURL, 401}, // the request's Host: another gateway's name
		{"https://gw1.example:8443/smart/token", 200},
	} {
		claims := assertionClaims("engine")
		claims.Audience = josejwt.Audience{c.aud}
		if status, m := w.tokenRequest(t, backendForm(sign(t, k.ec, jose.ES384, "ec-1", claims), "system/*.cu")); status != c.status {
			t.Errorf("aud %s: %d %v", c.aud, status, m)
		}
	}
}
