package dbmanager

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/smartauth"
)

// Fuzz tests of SMART App Launch's request decoders: whatever an authorize
// query or a token request body holds, the decoder answers a request or an
// RFC 6749 error (invalid_request, 400), never panics, and what it accepts
// names each parameter once, each value within the limits.

func FuzzAuthorizeRequest(f *testing.F) {
	l := newLaunch("chart", "launch/patient patient/*.rs offline_access")
	f.Add(l.authorizeQuery().Encode())
	f.Add("response_type=code&client_id=a&client_id=b")
	f.Add("scope=%zz&state=%")
	f.Add("code_challenge=" + strings.Repeat("A", 43) + "&code_challenge_method=S256&aud=http%3A%2F%2Fexample.com%2Ffhir")
	f.Fuzz(func(t *testing.T, raw string) {
		req, oerr := decodeAuthorizeRequest(raw)
		if oerr != nil {
			if oerr.status != 400 || oerr.code != "invalid_request" || !utf8.ValidString(string(oerr.body())) {
				t.Fatalf("error %+v", oerr)
			}
			return
		}
		v, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("accepted a query url.ParseQuery refuses: %v", err)
		}
		for k, vs := range v {
			if len(vs) != 1 || len(vs[0]) > maxOAuthValue {
				t.Fatalf("accepted %q ×%d", k, len(vs))
			}
		}
		if req.ClientID != v.Get("client_id") || req.CodeChallenge != v.Get("code_challenge") || req.Scope != v.Get("scope") {
			t.Fatalf("decoded %+v from %v", req, v)
		}
	})
}

func FuzzTokenRequest(f *testing.F) {
	l := newLaunch("chart", "patient/*.rs")
	f.Add("application/x-www-form-urlencoded", l.codeForm(strings.Repeat("ab", 32)).Encode())
	f.Add("application/x-www-form-urlencoded; charset=utf-8", "grant_type=refresh_token&refresh_token=x&client_id=chart")
	f.Add("application/json", `{"grant_type":"authorization_code"}`)
	f.Add("application/x-www-form-urlencoded", "code=a&code=b&client_secret=s")
	f.Add("application/x-www-form-urlencoded", "grant_type=client_credentials&scope=system%2F%2A.cu&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=eyJhbGciOiJFUzM4NCJ9.e30.sig")
	f.Fuzz(func(t *testing.T, contentType, body string) {
		req, oerr := decodeTokenRequest(contentType, body)
		if oerr != nil {
			if oerr.status != 400 || oerr.code != "invalid_request" {
				t.Fatalf("error %+v", oerr)
			}
			return
		}
		v, err := url.ParseQuery(body)
		if err != nil {
			t.Fatalf("accepted a body url.ParseQuery refuses: %v", err)
		}
		for k, vs := range v {
			if len(vs) != 1 || len(vs[0]) > maxOAuthValue {
				t.Fatalf("accepted %q ×%d", k, len(vs))
			}
		}
		if req.Code != v.Get("code") || req.CodeVerifier != v.Get("code_verifier") || req.ClientSecret != v.Has("client_secret") ||
			req.ClientAssertion != v.Get("client_assertion") || req.ClientAssertionType != v.Get("client_assertion_type") {
			t.Fatalf("decoded %+v from %v", req, v)
		}
		if req.CodeVerifier != "" && pkceValue(req.CodeVerifier) && len(s256(req.CodeVerifier)) != 43 {
			t.Fatalf("S256 of %q", req.CodeVerifier)
		}
	})
}

var smartRoutes = []string{"GET /smart/authorize", "GET /smart/approved", "POST /smart/token", "GET /fhir/Observation/o1", "GET /smart/request"}

// FuzzSMARTEndpoints sends SMART App Launch's requests through the real
// handlers of a gateway on a simulated chain: authorize queries, the
// patient's client's questions and answers, token forms, and reads with any
// bearer token. Whatever
// they hold, the answer is a redirect, a 2xx or a 4xx — never a 5xx — an
// OAuth endpoint's error is RFC 6749 JSON (a FHIR read's an
// OperationOutcome), nothing logs an error, and nothing but the access log
// is written. Seeds include a genuine launch's requests.
func FuzzSMARTEndpoints(f *testing.F) {
	fw := newFuzzWorld(f)
	w := smartWorld{fw.world, new(atomic.Int64)}
	l := newLaunch("chart", "launch/patient patient/*.rs offline_access")
	q := l.authorizeQuery()
	q.Set("aud", "http://gateway/fhir") // the base mustRequest's requests reach
	f.Add(uint8(0), q.Encode(), []byte(nil))
	st, req, _ := w.authorize(f, l.authorizeQuery())
	if st != http.StatusSeeOther {
		f.Fatalf("authorize: %d", st)
	}
	nonce, _ := parseBytes32(req.Get(smartauth.ParamRequest))
	exp, _ := strconv.ParseUint(req.Get(reqExpires), 10, 64)
	granted, _ := smartauth.Grant(req.Get(reqScope), access.AllTypes)
	a := smartauth.Approval{Provider: 1, Tag: w.tag, ClientID: "chart", RedirectURI: smartRedirect, Scope: granted.Scope, Expiry: exp, Offline: true, Nonce: nonce}
	sig, err := a.Sign(w.owner, smartauth.Domain{ChainID: w.chain.ChainID, Registry: w.chain.D.AgentRegistry})
	if err != nil {
		f.Fatal(err)
	}
	answer := url.Values{smartauth.ParamRequest: {req.Get(smartauth.ParamRequest)}, smartauth.ParamTag: {hexutil.EncodeBig(w.tag)},
		smartauth.ParamExpiry: {strconv.FormatUint(exp, 10)}, smartauth.ParamOffline: {"1"}, smartauth.ParamSignature: {hexutil.Encode(sig)}}
	f.Add(uint8(1), answer.Encode(), []byte(nil))
	answer.Set(smartauth.ParamProof, generatorProof())
	answer.Set(smartauth.ParamGrant, "0x01")
	f.Add(uint8(1), answer.Encode(), []byte(nil))
	f.Add(uint8(1), smartauth.ParamRequest+"="+req.Get(smartauth.ParamRequest)+"&error=access_denied", []byte(nil))
	f.Add(uint8(2), "", []byte(l.codeForm(strings.Repeat("ab", 32)).Encode()))
	f.Add(uint8(2), "", []byte("grant_type=refresh_token&refresh_token=x&client_id=chart"))
	f.Add(uint8(3), strings.Repeat("ab", 32), []byte(nil))
	f.Add(uint8(3), "", []byte(nil))
	f.Add(uint8(4), smartauth.ParamRequest+"="+req.Get(smartauth.ParamRequest), []byte(nil))
	f.Add(uint8(4), smartauth.ParamRequest+"=0x00", []byte(nil))
	f.Fuzz(func(t *testing.T, route uint8, query string, body []byte) {
		method, path, _ := strings.Cut(smartRoutes[int(route)%len(smartRoutes)], " ")
		var r *http.Request
		switch {
		case method == "POST":
			r = mustRequest(t, "POST", path, body)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		case strings.ContainsFunc(query, func(c rune) bool { return c < 0x20 || c == 0x7f || c == ' ' || c == '#' }):
			t.Skip("not a query or header value a client sends")
		case path == "/fhir/Observation/o1":
			r = mustRequest(t, "GET", path, nil)
			r.Header.Set("Authorization", "Bearer "+query)
		default:
			r = mustRequest(t, "GET", path, nil)
			r.URL.RawQuery = query
		}
		before := fw.snapshot(t)
		res, err := fw.gw.App().Test(r, -1)
		if err != nil {
			if strings.Contains(err.Error(), "small read buffer") {
				return // a request line longer than fasthttp reads: a listener answers 431
			}
			t.Fatalf("%s %s: %v", r.Method, r.URL, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		after := fw.snapshot(t)
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s: %d %s", r.Method, r.URL, res.StatusCode, b)
		}
		if res.StatusCode >= 400 {
			var e struct {
				Error, ResourceType string
			}
			if json.Unmarshal(b, &e) != nil || (e.Error == "" && e.ResourceType != "OperationOutcome") {
				t.Fatalf("%s %s: %d is neither an OAuth error nor an OperationOutcome: %q", r.Method, r.URL, res.StatusCode, b)
			}
		}
		if after.errs != before.errs {
			t.Fatalf("%s %s: %d; logged %v", r.Method, r.URL, res.StatusCode, fw.errs.msgs[before.errs:])
		}
		if after.writes != before.writes || after.p1 != before.p1 || after.p2 != before.p2 {
			t.Fatalf("%s %s: %d, yet wrote %v", r.Method, r.URL, res.StatusCode, fw.rec.writes[before.writes:])
		}
	})
}
