package dbmanager

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// The OAuth 2.0 requests of SMART App Launch (smart.go) and their errors:
// decoders of the authorize and token requests, and RFC 6749's error
// answer.

// oauthError is an RFC 6749 error: answered as {"error", "error_description"}
// with its status on the OAuth endpoints (errorHandler), or sent to the
// app's redirect URI by the authorize step.
type oauthError struct {
	status int
	code   string // RFC 6749 §4.1.2.1, §5.2: invalid_request, invalid_grant, …
	desc   string
}

func (e *oauthError) Error() string { return e.code + ": " + e.desc }

func oauthErr(status int, code, format string, args ...any) *oauthError {
	return &oauthError{status: status, code: code, desc: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *oauthError {
	return oauthErr(fiber.StatusBadRequest, "invalid_request", format, args...)
}

func invalidGrant(format string, args ...any) *oauthError {
	return oauthErr(fiber.StatusBadRequest, "invalid_grant", format, args...)
}

// body is the error's JSON answer.
func (e *oauthError) body() []byte {
	b, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{e.code, e.desc})
	return b
}

// Limits on the OAuth requests' values.
const (
	maxOAuthValue  = 2048 // bytes, any parameter
	maxOAuthParams = 32
)

// oauthParams parses a query string or a form body: each parameter at most
// once (RFC 6749 §3.1, §3.2), none longer than maxOAuthValue; unknown ones
// are kept and ignored by the caller, as RFC 6749 asks.
func oauthParams(raw string) (url.Values, *oauthError) {
	if len(raw) > maxOAuthParams*maxOAuthValue {
		return nil, invalidRequest("request too long")
	}
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, invalidRequest("malformed parameters: %v", err)
	}
	if len(v) > maxOAuthParams {
		return nil, invalidRequest("more than %d parameters", maxOAuthParams)
	}
	for k, vs := range v {
		if len(vs) > 1 {
			return nil, invalidRequest("parameter %q given more than once", k)
		}
		if len(vs[0]) > maxOAuthValue || len(k) > maxOAuthValue {
			return nil, invalidRequest("parameter %.64q longer than %d bytes", k, maxOAuthValue)
		}
	}
	return v, nil
}

// authorizeRequest is an app's authorization request (RFC 6749 §4.1.1,
// RFC 7636 §4.3, SMART App Launch standalone).
type authorizeRequest struct {
	ResponseType, ClientID, RedirectURI, Scope, State, Aud string
	CodeChallenge, CodeChallengeMethod, Launch             string
}

// decodeAuthorizeRequest reads an authorize request's query string. It
// checks the form only: who the client is and what it may have is
// decided by the handler.
func decodeAuthorizeRequest(rawQuery string) (authorizeRequest, *oauthError) {
	v, err := oauthParams(rawQuery)
	if err != nil {
		return authorizeRequest{}, err
	}
	return authorizeRequest{
		ResponseType: v.Get("response_type"), ClientID: v.Get("client_id"), RedirectURI: v.Get("redirect_uri"),
		Scope: v.Get("scope"), State: v.Get("state"), Aud: v.Get("aud"),
		CodeChallenge: v.Get("code_challenge"), CodeChallengeMethod: v.Get("code_challenge_method"), Launch: v.Get("launch"),
	}, nil
}

// tokenRequest is a token request (RFC 6749 §4.1.3, §4.4, §6; RFC 7636
// §4.5; RFC 7523 §2.2 for a backend client's assertion).
type tokenRequest struct {
	GrantType, Code, RedirectURI, ClientID, CodeVerifier, RefreshToken, Scope string
	ClientAssertionType, ClientAssertion                                      string
	ClientSecret                                                              bool // a secret was sent (never accepted here)
}

// decodeTokenRequest reads a token request's body, which must be a form
// (application/x-www-form-urlencoded).
func decodeTokenRequest(contentType, body string) (tokenRequest, *oauthError) {
	mt, _, _ := strings.Cut(contentType, ";")
	if !strings.EqualFold(strings.TrimSpace(mt), "application/x-www-form-urlencoded") {
		return tokenRequest{}, invalidRequest("the token request is a form (application/x-www-form-urlencoded)")
	}
	v, err := oauthParams(body)
	if err != nil {
		return tokenRequest{}, err
	}
	return tokenRequest{
		GrantType: v.Get("grant_type"), Code: v.Get("code"), RedirectURI: v.Get("redirect_uri"), ClientID: v.Get("client_id"),
		CodeVerifier: v.Get("code_verifier"), RefreshToken: v.Get("refresh_token"), Scope: v.Get("scope"),
		ClientAssertionType: v.Get("client_assertion_type"), ClientAssertion: v.Get("client_assertion"),
		ClientSecret: v.Has("client_secret"),
	}, nil
}

// pkceValue reports whether s is a PKCE code verifier or S256 challenge's
// form: 43 to 128 unreserved characters (RFC 7636 §4.1, §4.2).
func pkceValue(s string) bool {
	if len(s) < 43 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '.' || b == '_' || b == '~') {
			return false
		}
	}
	return true
}

// s256 is the S256 challenge of a code verifier (RFC 7636 §4.2).
func s256(verifier string) string {
	h := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// withParams returns u with the parameters added to its query (an app's
// redirect URI may have one of its own).
func withParams(u string, params url.Values) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + params.Encode()
}
