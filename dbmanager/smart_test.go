package dbmanager

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/smartauth"
	"github.com/medrec-zk/medrec/zkhash"
)

// SMART App Launch: an app's standalone launch approved by the patient's
// owner delegate (the test signs as the patient's client does, with
// package smartauth), its token, its reads; and everything refused.

const (
	smartAud      = "http://example.com/fhir" // the base httptest's requests reach
	smartRedirect = "https://app.example/cb"
)

// smartWorld is a world whose gateway registers two apps — "chart" (every
// type) and "obs" (Observations only) — on a clock the test moves.
type smartWorld struct {
	*world
	skew *atomic.Int64 // added to the gateway's clock, nanoseconds
}

func newSMARTWorld(t testing.TB, opts ...func(*Config)) smartWorld {
	t.Helper()
	obs, _ := access.NewScope("Observation")
	skew := new(atomic.Int64)
	w := newWorld(t, append([]func(*Config){func(c *Config) {
		c.SMARTApps = []SMARTApp{
			{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{smartRedirect, "https://app.example/other"}},
			{ClientID: "obs", Name: "Obs App", RedirectURIs: []string{smartRedirect}, Scope: obs},
		}
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}}, opts...)...)
	w.open()
	return smartWorld{w, skew}
}

// launch is one app's launch in progress: its PKCE verifier and state.
type launch struct {
	client, redirect, scope, verifier, state string
}

func newLaunch(client, scope string) launch {
	b := make([]byte, 32)
	rand.Read(b)
	return launch{client: client, redirect: smartRedirect, scope: scope, verifier: hex.EncodeToString(b) + "-verifier", state: "st-" + hex.EncodeToString(b[:4])}
}

func (l launch) authorizeQuery() url.Values {
	return url.Values{"response_type": {"code"}, "client_id": {l.client}, "redirect_uri": {l.redirect}, "scope": {l.scope},
		"state": {l.state}, "aud": {smartAud}, "code_challenge": {s256(l.verifier)}, "code_challenge_method": {"S256"}}
}

// get sends a GET and returns the status, the Location and the body.
func (w smartWorld) getRaw(t testing.TB, target string, header ...string) (int, string, []byte) {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := w.gw.App().Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), b
}

// Keys of the request as authorize returns it, besides the link's
// smartauth.ParamProvider and smartauth.ParamRequest.
const (
	reqClientID    = "clientId"
	reqAppName     = "appName"
	reqRedirectURI = "redirectUri"
	reqScope       = "scope"
	reqExpires     = "expires"
)

// authorize sends the app's authorize request; on success it returns the
// link's parameters (provider, request) and what the gateway says the
// request is (smartauth.RequestPath) under the req… keys, as the patient's
// client sees them, and the link.
func (w smartWorld) authorize(t testing.TB, q url.Values) (int, url.Values, []byte) {
	t.Helper()
	st, loc, body := w.getRaw(t, "/smart/authorize?"+q.Encode())
	if st != http.StatusSeeOther {
		return st, nil, body
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	link := u.Query()
	rst, _, rb := w.getRaw(t, smartauth.RequestPath+"?"+url.Values{smartauth.ParamRequest: {link.Get(smartauth.ParamRequest)}}.Encode())
	var sr smartauth.Request
	if rst != 200 || json.Unmarshal(rb, &sr) != nil {
		t.Fatalf("the request of %s: %d %s", loc, rst, rb)
	}
	if sr.Provider != 1 || len(link) != 2 {
		t.Fatalf("the link %s; the request %+v", loc, sr)
	}
	link.Set(reqClientID, sr.ClientID)
	link.Set(reqAppName, sr.AppName)
	link.Set(reqRedirectURI, sr.RedirectURI)
	link.Set(reqScope, sr.Scope)
	link.Set(reqExpires, strconv.FormatInt(sr.Expires, 10))
	return st, link, []byte(loc)
}

// approve signs the request as the patient's client does, with key, for
// tag, and sends the answer to the gateway; it returns the status and the
// Location (the app's redirect URI with its code, or an error).
func (w smartWorld) approve(t testing.TB, req url.Values, key *ecdsa.PrivateKey, tag *big.Int, offline bool, change func(*smartauth.Approval)) (int, url.Values, []byte) {
	t.Helper()
	nonce, err := parseBytes32(req.Get(smartauth.ParamRequest))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.ParseUint(req.Get(smartauth.ParamProvider), 10, 32)
	exp, _ := strconv.ParseUint(req.Get(reqExpires), 10, 64)
	granted, err := smartauth.Grant(req.Get(reqScope), access.AllTypes)
	if err != nil {
		t.Fatal(err)
	}
	if !offline {
		granted = granted.WithoutOffline()
	}
	a := smartauth.Approval{Provider: uint32(p), Tag: tag, ClientID: req.Get(reqClientID), RedirectURI: req.Get(reqRedirectURI),
		Scope: granted.Scope, Expiry: exp, Offline: offline, Nonce: nonce}
	signed := a
	if change != nil {
		change(&signed)
	}
	sig, err := signed.Sign(key, smartauth.Domain{ChainID: w.chain.ChainID, Registry: w.chain.D.AgentRegistry})
	if err != nil {
		t.Fatal(err)
	}
	off := "0"
	if offline {
		off = "1"
	}
	q := url.Values{smartauth.ParamRequest: {req.Get(smartauth.ParamRequest)}, smartauth.ParamTag: {hexutil.EncodeBig(tag)},
		smartauth.ParamExpiry: {strconv.FormatUint(a.Expiry, 10)}, smartauth.ParamOffline: {off}, smartauth.ParamSignature: {hexutil.Encode(sig)}}
	st, loc, body := w.getRaw(t, smartauth.ApprovedPath+"?"+q.Encode())
	if st != http.StatusSeeOther {
		return st, nil, body
	}
	u, _ := url.Parse(loc)
	if got := u.Scheme + "://" + u.Host + u.Path; got != a.RedirectURI {
		t.Fatalf("redirected to %s, not the app's %s", got, a.RedirectURI)
	}
	return st, u.Query(), nil
}

// token posts a token request form.
func (w smartWorld) token(t testing.TB, form url.Values) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest("POST", "/smart/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r := w.do(req)
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("token answer %d %q: %v", r.status, r.body, err)
	}
	return r.status, out
}

func (l launch) codeForm(code string) url.Values {
	return url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {l.redirect}, "client_id": {l.client}, "code_verifier": {l.verifier}}
}

// code runs a launch up to its code, approved by the owner.
func (w smartWorld) code(t testing.TB, l launch, offline bool) string {
	t.Helper()
	st, req, body := w.authorize(t, l.authorizeQuery())
	if st != http.StatusSeeOther {
		t.Fatalf("authorize: %d %s", st, body)
	}
	st, back, body := w.approve(t, req, w.owner, w.tag, offline, nil)
	if st != http.StatusSeeOther || back.Get("code") == "" || back.Get("state") != l.state {
		t.Fatalf("approve: %d %v %s", st, back, body)
	}
	return back.Get("code")
}

// accessToken runs a whole launch and returns the token answer.
func (w smartWorld) accessToken(t testing.TB, l launch, offline bool) map[string]any {
	t.Helper()
	st, tok := w.token(t, l.codeForm(w.code(t, l, offline)))
	if st != 200 {
		t.Fatalf("token: %d %v", st, tok)
	}
	return tok
}

func (w smartWorld) bearerGet(t testing.TB, tok any, target string) (int, []byte) {
	t.Helper()
	st, _, body := w.getRaw(t, target, "Authorization", "Bearer "+tok.(string))
	return st, body
}

// TestSMARTLaunch: discovery, the whole standalone launch, reads and
// searches with the token, each in the access log naming the app, a
// refresh when offline access was approved, and a rotation of the owner's
// delegate ending the token.
func TestSMARTLaunch(t *testing.T) {
	w := newSMARTWorld(t)
	ctx := context.Background()

	st, _, body := w.getRaw(t, "/fhir/.well-known/smart-configuration")
	var conf struct {
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		TokenEndpoint         string   `json:"token_endpoint"`
		Methods               []string `json:"code_challenge_methods_supported"`
		Capabilities          []string
	}
	if st != 200 || json.Unmarshal(body, &conf) != nil || conf.AuthorizationEndpoint != "http://example.com/smart/authorize" ||
		conf.TokenEndpoint != "http://example.com/smart/token" || len(conf.Methods) != 1 || conf.Methods[0] != "S256" {
		t.Fatalf("smart-configuration: %d %s", st, body)
	}
	if st, _, b := w.getRaw(t, "/.well-known/smart-configuration"); st != 200 || string(b) != string(body) {
		t.Fatalf("root smart-configuration: %d %s", st, b)
	}
	st, _, body = w.getRaw(t, "/fhir/metadata")
	if st != 200 || !strings.Contains(string(body), `"code":"SMART-on-FHIR"`) || !strings.Contains(string(body), `"valueUri":"http://example.com/smart/token"`) {
		t.Fatalf("metadata lacks rest.security: %.400s", body)
	}

	l := newLaunch("chart", "launch/patient patient/Observation.rs patient/Condition.r offline_access openid fhirUser")
	st, req, body := w.authorize(t, l.authorizeQuery())
	if st != http.StatusSeeOther {
		t.Fatalf("authorize: %d %s", st, body)
	}
	if !strings.HasPrefix(string(body), "http://127.0.0.1:7600"+smartauth.ApprovePath+"?") {
		t.Fatalf("authorize sends the browser to %s, not the patient's client", body)
	}
	if req.Get(reqAppName) != "Chart App" || req.Get(smartauth.ParamProvider) != "1" ||
		req.Get(reqScope) != "launch/patient patient/Condition.r patient/Observation.rs offline_access" {
		t.Fatalf("the client is asked %v", req)
	}
	before, _ := w.cfg.Store.LogHead(ctx)
	st, back, body := w.approve(t, req, w.owner, w.tag, true, nil)
	if st != http.StatusSeeOther || back.Get("state") != l.state || len(back.Get("code")) != 64 {
		t.Fatalf("approve: %d %v %s", st, back, body)
	}
	st, tok := w.token(t, l.codeForm(back.Get("code")))
	if st != 200 || tok["token_type"] != "Bearer" || tok["patient"] != "p1" || tok["scope"] != "launch/patient patient/Condition.r patient/Observation.rs offline_access" ||
		tok["refresh_token"] == nil || tok["expires_in"].(float64) > 600 || tok["expires_in"].(float64) < 590 {
		t.Fatalf("token: %d %v", st, tok)
	}

	for _, c := range []struct {
		target string
		status int
	}{
		{"/fhir/Observation/o1", 200},
		{"/fhir/Observation?patient=p1", 200},
		{"/fhir/Condition/c1", 200},
		{"/fhir/Condition?patient=p1", 403}, // read (r) but not search (s)
		{"/fhir/Patient/p1", 403},           // not in the scope
		{"/fhir/AuditEvent", 403},           // the owner's views are the owner's
		{"/fhir/Patient/$grants", 403},
		{"/patient/log", 403},
	} {
		if st, b := w.bearerGet(t, tok["access_token"], c.target); st != c.status {
			t.Errorf("%s: %d %.200s, want %d", c.target, st, b, c.status)
		}
	}
	entries, err := w.cfg.Store.LogRange(ctx, before.Next, 100)
	if err != nil {
		t.Fatal(err)
	}
	var approved, reads, refused int
	for _, e := range entries {
		switch {
		case e.Action == "smart-approve" && e.ActorKind == store.ActorPatient && e.ActorID == simchain.Addr(w.owner).Hex() && e.PatientID == "p1":
			approved++
		case e.ActorKind == store.ActorApp && e.ActorID == "chart" && e.Outcome == store.Allowed && (e.Action == "read" || e.Action == "search"):
			reads++
		case e.ActorKind == store.ActorApp && e.ActorID == "chart" && e.Outcome == store.Denied && e.PatientID == "p1":
			refused++
		}
		if tk := tok["access_token"].(string); strings.Contains(e.Detail, tk) || strings.Contains(e.Detail, back.Get("code")) {
			t.Errorf("a token or code in the log: %+v", e)
		}
	}
	if approved != 1 || reads != 3 || refused < 4 {
		t.Errorf("log: %d approvals, %d reads, %d refusals of the app; want 1, 3, ≥4: %+v", approved, reads, refused, entries)
	}

	// A refresh token is used once and gives a new pair.
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}, "client_id": {"chart"}}
	st, tok2 := w.token(t, refresh)
	if st != 200 || tok2["access_token"] == tok["access_token"] || tok2["refresh_token"] == nil {
		t.Fatalf("refresh: %d %v", st, tok2)
	}
	if st, again := w.token(t, refresh); st != 400 || again["error"] != "invalid_grant" {
		t.Fatalf("refresh token used twice: %d %v", st, again)
	}
	if st, b := w.bearerGet(t, tok2["access_token"], "/fhir/Observation/o1"); st != 200 {
		t.Fatalf("refreshed token: %d %s", st, b)
	}

	// Without offline access, no refresh token.
	if tok := w.accessToken(t, newLaunch("chart", "patient/*.rs offline_access"), false); tok["refresh_token"] != nil || tok["scope"] != "patient/*.rs" {
		t.Fatalf("offline declined: %v", tok)
	}

	// The patient replaces the delegate: the approval ends with it.
	nd, _ := w.keys.Delegate(1, 1)
	if r := w.post("/relay/rotate", w.rotation(nd.Address)); r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	if st, b := w.bearerGet(t, tok2["access_token"], "/fhir/Observation/o1"); st != 403 || !strings.Contains(string(b), "rotation") {
		t.Fatalf("after a rotation: %d %s", st, b)
	}
	if st, out := w.token(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok2["refresh_token"].(string)}, "client_id": {"chart"}}); st != 400 || out["error"] != "invalid_grant" {
		t.Fatalf("refresh after a rotation: %d %v", st, out)
	}
}

// TestSMARTRefusals: every bad authorize, approval, token and read request
// is a clear 4xx (RFC 6749 errors on the OAuth endpoints), serves nothing,
// and is logged.
func TestSMARTRefusals(t *testing.T) {
	w := newSMARTWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	ctx := context.Background()

	// Authorize: errors answered at the gateway while the app or its
	// redirect URI is not known good, sent to the app after.
	for _, c := range []struct {
		name     string
		change   func(url.Values)
		status   int
		errCode  string
		redirect bool
	}{
		{"unknown client", func(q url.Values) { q.Set("client_id", "nobody") }, 400, "invalid_request", false},
		{"wrong redirect URI", func(q url.Values) { q.Set("redirect_uri", "https://app.example/cb/") }, 400, "invalid_request", false},
		{"redirect URI of another app", func(q url.Values) { q.Set("client_id", "obs"); q.Set("redirect_uri", "https://app.example/other") }, 400, "invalid_request", false},
		{"parameter twice", func(q url.Values) { q.Add("scope", "patient/*.rs") }, 400, "invalid_request", false},
		{"no PKCE", func(q url.Values) { q.Del("code_challenge") }, 303, "invalid_request", true},
		{"plain PKCE", func(q url.Values) { q.Set("code_challenge_method", "plain") }, 303, "invalid_request", true},
		{"short challenge", func(q url.Values) { q.Set("code_challenge", "abc") }, 303, "invalid_request", true},
		{"no state", func(q url.Values) { q.Del("state") }, 303, "invalid_request", true},
		{"implicit flow", func(q url.Values) { q.Set("response_type", "token") }, 303, "unsupported_response_type", true},
		{"another server's aud", func(q url.Values) { q.Set("aud", "https://other.example/fhir") }, 303, "invalid_request", true},
		{"EHR launch", func(q url.Values) { q.Set("launch", "xyz") }, 303, "invalid_request", true},
		{"scope wider than the registration", func(q url.Values) { q.Set("client_id", "obs"); q.Set("scope", "patient/Condition.rs") }, 303, "invalid_scope", true},
		{"write-only scope", func(q url.Values) { q.Set("scope", "patient/Observation.cud") }, 303, "invalid_scope", true},
		{"user scope", func(q url.Values) { q.Set("scope", "user/*.rs") }, 303, "invalid_scope", true},
	} {
		t.Run("authorize/"+c.name, func(t *testing.T) {
			before, _ := w.cfg.Store.LogHead(ctx)
			q := newLaunch("chart", "patient/*.rs").authorizeQuery()
			c.change(q)
			st, loc, body := w.getRaw(t, "/smart/authorize?"+q.Encode())
			if st != c.status {
				t.Fatalf("%d %s %s, want %d", st, loc, body, c.status)
			}
			if c.redirect {
				u, _ := url.Parse(loc)
				if !strings.HasPrefix(loc, smartRedirect+"?") || u.Query().Get("error") != c.errCode || u.Query().Get("state") != q.Get("state") {
					t.Fatalf("redirected to %s", loc)
				}
			} else {
				var e map[string]string
				if loc != "" || json.Unmarshal(body, &e) != nil || e["error"] != c.errCode || e["error_description"] == "" {
					t.Fatalf("answered %s %s", loc, body)
				}
			}
			after, _ := w.cfg.Store.LogHead(ctx)
			if after.Next != before.Next+1 {
				t.Fatalf("%d log entries, want the refusal's", after.Next-before.Next)
			}
		})
	}
	// The scope is narrowed, not refused, when part of it can be granted.
	if _, req, _ := w.authorize(t, func() url.Values {
		q := newLaunch("obs", "patient/*.rs").authorizeQuery()
		return q
	}()); req.Get(reqScope) != "patient/Observation.rs" {
		t.Fatalf("obs app asking for everything is offered %q", req.Get(reqScope))
	}

	// Approvals.
	other, _ := crypto.GenerateKey()
	otherTag := new(big.Int).Add(w.tag, big.NewInt(1))
	for _, c := range []struct {
		name    string
		key     *ecdsa.PrivateKey
		tag     *big.Int
		offline bool
		change  func(*smartauth.Approval)
		status  int
	}{
		{"signed by someone else", other, w.tag, false, nil, 403},
		{"another relationship's tag", w.owner, otherTag, false, nil, 403},
		{"signed for another provider", w.owner, w.tag, false, func(a *smartauth.Approval) { a.Provider = 2 }, 403},
		{"signed for another app", w.owner, w.tag, false, func(a *smartauth.Approval) { a.ClientID = "obs" }, 403},
		{"signed for a wider scope", w.owner, w.tag, false, func(a *smartauth.Approval) { a.Scope = "patient/*.rs" }, 403},
		{"offline not asked for", w.owner, w.tag, true, nil, 400},
	} {
		t.Run("approve/"+c.name, func(t *testing.T) {
			_, req, _ := w.authorize(t, newLaunch("chart", "patient/Observation.rs").authorizeQuery())
			before, _ := w.cfg.Store.LogHead(ctx)
			st, back, body := w.approve(t, req, c.key, c.tag, c.offline, c.change)
			if st != c.status || back != nil {
				t.Fatalf("%d %v %s, want %d", st, back, body, c.status)
			}
			var e map[string]string
			if json.Unmarshal(body, &e) != nil || e["error"] == "" {
				t.Fatalf("not an OAuth error: %s", body)
			}
			after, _ := w.cfg.Store.LogHead(ctx)
			if after.Next != before.Next+1 {
				t.Fatalf("%d log entries, want the refusal's", after.Next-before.Next)
			}
		})
	}
	t.Run("approve/unknown request", func(t *testing.T) {
		before, _ := w.cfg.Store.LogHead(ctx)
		st, _, body := w.getRaw(t, "/smart/approved?request=0x"+strings.Repeat("ab", 32))
		if st != 400 || !strings.Contains(string(body), "invalid_request") {
			t.Fatalf("%d %s", st, body)
		}
		if after, _ := w.cfg.Store.LogHead(ctx); after.Next != before.Next+1 {
			t.Fatalf("%d log entries, want the refusal's", after.Next-before.Next)
		}
		if st, _, body := w.getRaw(t, smartauth.RequestPath+"?request=0x"+strings.Repeat("ab", 32)); st != 400 || !strings.Contains(string(body), "invalid_request") {
			t.Fatalf("the request of an unknown nonce: %d %s", st, body)
		}
	})
	t.Run("approve/answered twice", func(t *testing.T) {
		_, req, _ := w.authorize(t, newLaunch("chart", "patient/Observation.rs").authorizeQuery())
		if st, _, _ := w.approve(t, req, w.owner, w.tag, false, nil); st != 303 {
			t.Fatal(st)
		}
		if st, _, body := w.approve(t, req, w.owner, w.tag, false, nil); st != 400 {
			t.Fatalf("%d %s", st, body)
		}
	})
	t.Run("approve/denied", func(t *testing.T) {
		l := newLaunch("chart", "patient/Observation.rs")
		_, req, _ := w.authorize(t, l.authorizeQuery())
		st, loc, _ := w.getRaw(t, "/smart/approved?"+url.Values{smartauth.ParamRequest: {req.Get(smartauth.ParamRequest)}, smartauth.ParamError: {smartauth.ErrorDenied}}.Encode())
		u, _ := url.Parse(loc)
		if st != 303 || u.Query().Get("error") != "access_denied" || u.Query().Get("state") != l.state {
			t.Fatalf("%d %s", st, loc)
		}
	})

	// Tokens.
	l := newLaunch("chart", "patient/Observation.rs")
	for _, c := range []struct {
		name    string
		form    func(code string) url.Values
		ctype   string
		status  int
		errCode string
	}{
		{"bad PKCE verifier", func(code string) url.Values {
			f := l.codeForm(code)
			f.Set("code_verifier", strings.Repeat("x", 50))
			return f
		}, "", 400, "invalid_grant"},
		{"malformed verifier", func(code string) url.Values { f := l.codeForm(code); f.Set("code_verifier", "short"); return f }, "", 400, "invalid_request"},
		{"wrong redirect URI", func(code string) url.Values {
			f := l.codeForm(code)
			f.Set("redirect_uri", "https://app.example/other")
			return f
		}, "", 400, "invalid_grant"},
		{"another app's code", func(code string) url.Values { f := l.codeForm(code); f.Set("client_id", "obs"); return f }, "", 400, "invalid_grant"},
		{"unknown client", func(code string) url.Values { f := l.codeForm(code); f.Set("client_id", "nobody"); return f }, "", 401, "invalid_client"},
		{"client secret", func(code string) url.Values { f := l.codeForm(code); f.Set("client_secret", "s"); return f }, "", 401, "invalid_client"},
		{"unknown code", func(string) url.Values { return l.codeForm(strings.Repeat("0", 64)) }, "", 400, "invalid_grant"},
		{"password grant", func(code string) url.Values { f := l.codeForm(code); f.Set("grant_type", "password"); return f }, "", 400, "unsupported_grant_type"},
		{"JSON body", func(code string) url.Values { return l.codeForm(code) }, "application/json", 400, "invalid_request"},
		{"parameter twice", func(code string) url.Values { f := l.codeForm(code); f.Add("code", code); return f }, "", 400, "invalid_request"},
	} {
		t.Run("token/"+c.name, func(t *testing.T) {
			code := w.code(t, l, false)
			before, _ := w.cfg.Store.LogHead(ctx)
			req := httptest.NewRequest("POST", "/smart/token", strings.NewReader(c.form(code).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			r := w.do(req)
			var e map[string]any
			if r.status != c.status || json.Unmarshal(r.body, &e) != nil || e["error"] != c.errCode || e["access_token"] != nil {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, c.status, c.errCode)
			}
			after, _ := w.cfg.Store.LogHead(ctx)
			if after.Next != before.Next+1 {
				t.Fatalf("%d log entries, want the refusal's", after.Next-before.Next)
			}
		})
	}
	t.Run("token/code used twice revokes its token", func(t *testing.T) {
		code := w.code(t, l, false)
		st, tok := w.token(t, l.codeForm(code))
		if st != 200 {
			t.Fatal(st, tok)
		}
		if st, b := w.bearerGet(t, tok["access_token"], "/fhir/Observation/o1"); st != 200 {
			t.Fatal(st, string(b))
		}
		if st, again := w.token(t, l.codeForm(code)); st != 400 || again["error"] != "invalid_grant" {
			t.Fatalf("second use: %d %v", st, again)
		}
		if st, b := w.bearerGet(t, tok["access_token"], "/fhir/Observation/o1"); st != 401 {
			t.Fatalf("the first use's token still reads: %d %s", st, b)
		}
	})
	t.Run("token/code expired", func(t *testing.T) {
		code := w.code(t, l, false)
		w.skew.Add(int64(codeTTL + time.Second))
		defer w.skew.Store(0)
		if st, out := w.token(t, l.codeForm(code)); st != 400 || out["error"] != "invalid_grant" {
			t.Fatalf("%d %v", st, out)
		}
	})

	// Reads. Another patient at this provider, with an Observation of theirs.
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p2"}); r.status != 201 {
		t.Fatalf("create p2: %d %s", r.status, r.body)
	}
	p2rec := httptest.NewRequest("POST", "/admin/patients/p2/resources", strings.NewReader(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+
		`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p2"}}}]}`))
	p2rec.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(p2rec); r.status != 201 {
		t.Fatalf("p2's record: %d %s", r.status, r.body)
	}
	tok := w.accessToken(t, newLaunch("obs", "patient/*.rs"), false)
	for _, c := range []struct {
		name, target, token string
		status              int
	}{
		{"type outside the scope", "/fhir/Condition/c1", tok["access_token"].(string), 403},
		{"another patient's $everything", "/fhir/Patient/p2/$everything", tok["access_token"].(string), 404},
		{"another patient's record", "/fhir/Observation/o2", tok["access_token"].(string), 404},
		{"unknown token", "/fhir/Observation/o1", strings.Repeat("ab", 32), 401},
	} {
		t.Run("read/"+c.name, func(t *testing.T) {
			before, _ := w.cfg.Store.LogHead(ctx)
			st, b := w.bearerGet(t, c.token, c.target)
			if st != c.status || !strings.Contains(string(b), "OperationOutcome") {
				t.Fatalf("%d %s, want %d", st, b, c.status)
			}
			after, _ := w.cfg.Store.LogHead(ctx)
			if after.Next != before.Next+1 {
				t.Fatalf("%d log entries, want the refusal's", after.Next-before.Next)
			}
		})
	}
	t.Run("read/expired token", func(t *testing.T) {
		w.skew.Add(int64(11 * time.Minute))
		defer w.skew.Store(0)
		if st, b := w.bearerGet(t, tok["access_token"], "/fhir/Observation/o1"); st != 401 || !strings.Contains(string(b), "expired") {
			t.Fatalf("%d %s", st, b)
		}
	})
	t.Run("read/token of another provider", func(t *testing.T) {
		// The same chain's provider 2 runs its own gateway: provider 1's
		// tokens mean nothing there.
		w2 := newWorldOnChain(t, w.chain, t.TempDir()+"/p2.db", func(c *Config) { c.Provider = 2; c.Relayer = w.chain.Auth(w.chain.Providers[1].Gateway) })
		tok := w.accessToken(t, newLaunch("chart", "patient/*.rs"), false)
		res := w2.do(func() *http.Request {
			r := httptest.NewRequest("GET", "/fhir/Observation/o1", nil)
			r.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
			return r
		}())
		if res.status != 401 {
			t.Fatalf("%d %s", res.status, res.body)
		}
	})
}

// TestSMARTRateLimitPerToken: the per-reader limit counts each token: one
// token reading in a loop is slowed (429, not logged), another token of
// the same app for the same patient is not.
func TestSMARTRateLimitPerToken(t *testing.T) {
	w := newSMARTWorld(t, func(c *Config) { c.ReaderRateLimit = 60 }) // bursts of 6
	a := w.accessToken(t, newLaunch("chart", "patient/*.rs"), false)["access_token"]
	b := w.accessToken(t, newLaunch("chart", "patient/*.rs"), false)["access_token"]
	throttled := 0
	for range 10 {
		if st, _ := w.bearerGet(t, a, "/fhir/Observation/o1"); st == http.StatusTooManyRequests {
			throttled++
		}
	}
	if throttled == 0 {
		t.Fatal("ten reads in a row with one token, none throttled")
	}
	if st, body := w.bearerGet(t, b, "/fhir/Observation/o1"); st != 200 {
		t.Fatalf("the other token: %d %s", st, body)
	}
}

// TestSMARTViewerApproval: an anonymous viewer approves an app with its
// Entitlement proof bound to the authorize request (no owner key). The app
// reads within the grant (its types; a research grant's reads
// de-identified), the approval is logged under the viewer's grant id, a
// proof for another request or a tampered one is refused, and revoking the
// grant ends the app's token.
func TestSMARTViewerApproval(t *testing.T) {
	w := newSMARTWorld(t)
	v, k, tag, gID := w.researchViewer() // Observations, research
	ctx := context.Background()

	answer := func(req url.Values, challenge [32]byte, change func(url.Values)) (int, url.Values, []byte) {
		t.Helper()
		body := w.entitlementBody(v, k, tag, hexutil.Encode(challenge[:]))
		q := url.Values{smartauth.ParamRequest: {req.Get(smartauth.ParamRequest)}, smartauth.ParamTag: {body["tag"]}, smartauth.ParamGrant: {body["grant"]},
			smartauth.ParamProof: {body["proof"]}, smartauth.ParamExpiry: {req.Get(reqExpires)}}
		if change != nil {
			change(q)
		}
		st, loc, b := w.getRaw(t, "/smart/approved?"+q.Encode())
		if st != http.StatusSeeOther {
			return st, nil, b
		}
		u, _ := url.Parse(loc)
		return st, u.Query(), nil
	}
	nonceOf := func(req url.Values) [32]byte {
		n, err := parseBytes32(req.Get(smartauth.ParamRequest))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Refused: a proof bound to another request, a tampered proof.
	_, req, _ := w.authorize(t, newLaunch("chart", "patient/*.rs").authorizeQuery())
	if st, _, b := answer(req, smartauth.Challenge([32]byte{1, 2, 3}), nil); st != 403 || !strings.Contains(string(b), "access_denied") {
		t.Fatalf("a proof for another request: %d %s", st, b)
	}
	if st, _, b := answer(req, smartauth.Challenge(nonceOf(req)), func(q url.Values) { q.Set(smartauth.ParamGrant, "0x01") }); st != 403 {
		t.Fatalf("another grant id: %d %s", st, b)
	}

	// Approved: the app gets the grant's types only, no refresh token.
	l := newLaunch("chart", "launch/patient patient/*.rs offline_access")
	_, req, _ = w.authorize(t, l.authorizeQuery())
	before, _ := w.cfg.Store.LogHead(ctx)
	st, back, b := answer(req, smartauth.Challenge(nonceOf(req)), nil)
	if st != http.StatusSeeOther || back.Get("code") == "" || back.Get("state") != l.state {
		t.Fatalf("viewer approval: %d %v %s", st, back, b)
	}
	st, tok := w.token(t, l.codeForm(back.Get("code")))
	if st != 200 || tok["scope"] != "launch/patient patient/Observation.rs" || tok["refresh_token"] != nil {
		t.Fatalf("token: %d %v", st, tok)
	}
	// A research reader: searches by its pseudonyms, reads nothing else.
	st, body := w.bearerGet(t, tok["access_token"], "/fhir/Observation")
	if st != 200 || !strings.Contains(string(body), `"total":1`) || strings.Contains(string(body), `"id":"o1"`) {
		t.Fatalf("the app's search: %d %s", st, body)
	}
	if st, b := w.bearerGet(t, tok["access_token"], "/fhir/Condition/c1"); st != 403 {
		t.Fatalf("outside the grant: %d %s", st, b)
	}
	entries, _ := w.cfg.Store.LogRange(ctx, before.Next, 100)
	gBytes := zkhash.Bytes32(gID)
	gHex := hexutil.Encode(gBytes[:])
	var approvals int
	for _, e := range entries {
		if e.Action == "smart-approve" && e.ActorKind == store.ActorAnonymous && e.ActorID == gHex && e.Purpose == access.Research && e.Outcome == store.Allowed {
			approvals++
		}
	}
	if approvals != 1 {
		t.Fatalf("the viewer's approval is not logged under its grant: %+v", entries)
	}

	// The patient revokes the viewer's grant: the app's token ends with it.
	if r := w.revoke(2, zkhash.Bytes32(gID)); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if st, b := w.bearerGet(t, tok["access_token"], "/fhir/Observation"); st != 403 || !strings.Contains(string(b), "revoked") {
		t.Fatalf("after the revocation: %d %s", st, b)
	}
}

// TestSMARTAudIsTheGatewaysOwn: where the gateway knows its address
// (Config.PublicURL), an app's aud must name it, whatever Host the request
// carries — an aud for another server that forwards the request with its
// own Host is refused — and the endpoints it announces are under it.
func TestSMARTAudIsTheGatewaysOwn(t *testing.T) {
	const public = "https://gw.example:8443"
	w := newSMARTWorld(t, func(c *Config) { c.PublicURL = public + "/" })
	authorize := func(aud string) (int, string) {
		t.Helper()
		q := newLaunch("chart", "patient/*.rs").authorizeQuery()
		q.Set("aud", aud)
		// The request as a proxy for other.example would pass it on.
		st, loc, _ := w.getRaw(t, "http://other.example/smart/authorize?"+q.Encode())
		return st, loc
	}
	st, loc := authorize("http://other.example/fhir")
	if u, _ := url.Parse(loc); st != 303 || !strings.HasPrefix(loc, smartRedirect+"?") || u.Query().Get("error") != "invalid_request" {
		t.Fatalf("an aud naming the request's Host, not the gateway: %d %s", st, loc)
	}
	st, loc = authorize(public + "/fhir")
	if u, _ := url.Parse(loc); st != 303 || strings.HasPrefix(loc, smartRedirect) || u.Query().Get(smartauth.ParamRequest) == "" {
		t.Fatalf("the gateway's own aud: %d %s", st, loc)
	}
	st, _, body := w.getRaw(t, "http://other.example/.well-known/smart-configuration")
	var conf map[string]any
	if st != 200 || json.Unmarshal(body, &conf) != nil || conf["token_endpoint"] != public+"/smart/token" || conf["authorization_endpoint"] != public+"/smart/authorize" {
		t.Fatalf("smart-configuration: %d %s", st, body)
	}
}
