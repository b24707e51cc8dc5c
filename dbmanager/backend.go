package dbmanager

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/smartauth"
)

// SMART Backend Services: the provider's own systems (an EHR's integration
// engine) feed records in standard FHIR (feed.go) with a token they get at
// the token endpoint without a person: grant_type=client_credentials,
// authenticated by a JWT signed with the client's private key
// (private_key_jwt, RFC 7523). The provider registers each such client in
// the gateway's configuration (Config.BackendClients) with the public keys
// of its JWKS; only RS384 and ES384 are accepted, the algorithm the
// registered key is for, never one the JWT's header picks alone.
//
// An assertion is refused unless iss and sub are the client's id, aud is
// this token endpoint's URL, exp lies in the future and at most
// maxAssertionLife ahead, and its jti was never used: the jti is recorded,
// with the token's access-log entry in one commit, as a nonce of the
// records database until the assertion expires, so a replay is refused
// even after a restart. The token it earns (BackendTokenTTL) lives in
// memory only, as its SHA-256, like an app's; it creates and updates the
// types its scopes (system/T.cu) name, and reads nothing.
//
// A backend client acts as the provider's own system: the access log
// records it as staff (store.ActorStaff), its id "backend:" and the
// client id — no staff account id has a colon.

// BackendClient is one of the provider's systems allowed to write records
// (SMART Backend Services): a confidential client authenticated by the
// keys of its JWKS.
type BackendClient struct {
	ClientID string
	Name     string
	// Keys are the public keys the client signs its assertions with: RSA
	// (2048 bits or more) for RS384, or EC P-384 for ES384. A key's "alg",
	// if set, must be that one.
	Keys jose.JSONWebKeySet
	// Scope is the types it may write (0: every grantable type).
	Scope access.Scope
}

// Backend Services' values.
const (
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// maxAssertionLife is how far ahead an assertion's exp may lie (SMART
	// Backend Services: no more than five minutes).
	maxAssertionLife = 5 * time.Minute
	// assertionLeeway forgives clocks a little for nbf and iat.
	assertionLeeway = 30 * time.Second
	maxJTI          = 256 // bytes
	// backendActor prefixes a backend client's id in the access log.
	backendActor = gatewayapi.BackendActorPrefix
)

// backendState is the backend clients' tokens, in memory.
type backendState struct {
	mu     sync.Mutex
	tokens map[string]*backendToken // by tokenHash
}

// backendToken is one backend client's access token.
type backendToken struct {
	client  *BackendClient
	granted smartauth.SystemGranted
	expires time.Time
	hash    string // its tokenHash
}

// actor is the token's client as the access log names it.
func (t *backendToken) actor() string { return backendActor + t.client.ClientID }

func (s *backendState) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tokens {
		if !now.Before(t.expires) {
			delete(s.tokens, k)
		}
	}
}

// token finds a backend token: found, or found but expired.
func (s *backendState) token(tok string, now time.Time) (t *backendToken, ok, expired bool) {
	h := tokenHash(tok)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok = s.tokens[h]; !ok {
		return nil, false, false
	}
	if !now.Before(t.expires) {
		delete(s.tokens, h)
		return t, true, true
	}
	return t, true, false
}

// keyAlg is the one algorithm a registered key verifies: RS384 for an RSA
// key, ES384 for an EC P-384 key.
func keyAlg(k jose.JSONWebKey) (jose.SignatureAlgorithm, error) {
	var alg jose.SignatureAlgorithm
	switch pub := k.Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return "", errors.New("an RSA key has at least 2048 bits")
		}
		alg = jose.RS384
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P384() {
			return "", errors.New("an EC key is on P-384 (ES384)")
		}
		alg = jose.ES384
	default:
		return "", fmt.Errorf("a %T is not a public RSA or EC P-384 key", k.Key)
	}
	if k.Algorithm != "" && k.Algorithm != string(alg) {
		return "", fmt.Errorf("alg %q: only RS384 (RSA) and ES384 (EC P-384) are accepted", k.Algorithm)
	}
	if k.Use != "" && k.Use != "sig" {
		return "", fmt.Errorf("use %q: the key must be for signatures", k.Use)
	}
	return alg, nil
}

// checkBackendClients refuses a registration the gateway could not check
// assertions against.
func checkBackendClients(clients []BackendClient, apps []SMARTApp) error {
	seen := map[string]bool{}
	for _, a := range apps {
		seen[a.ClientID] = true
	}
	for _, b := range clients {
		if b.ClientID == "" || len(b.ClientID) > 128 || seen[b.ClientID] {
			return fmt.Errorf("dbmanager: backend client %q: a client id is unique (apps' included), 1 to 128 bytes", b.ClientID)
		}
		seen[b.ClientID] = true
		if b.Scope != 0 && !b.Scope.Valid() {
			return fmt.Errorf("dbmanager: backend client %q: scope names unknown types", b.ClientID)
		}
		if len(b.Keys.Keys) == 0 {
			return fmt.Errorf("dbmanager: backend client %q has no key", b.ClientID)
		}
		for i, k := range b.Keys.Keys {
			if !k.IsPublic() {
				return fmt.Errorf("dbmanager: backend client %q: key %d is private: register the public key only", b.ClientID, i)
			}
			if _, err := keyAlg(k); err != nil {
				return fmt.Errorf("dbmanager: backend client %q: key %d: %w", b.ClientID, i, err)
			}
		}
	}
	return nil
}

// backendClient returns the registered backend client with this id.
func (g *Gateway) backendClient(clientID string) (*BackendClient, bool) {
	for i := range g.cfg.BackendClients {
		if g.cfg.BackendClients[i].ClientID == clientID {
			return &g.cfg.BackendClients[i], true
		}
	}
	return nil, false
}

// backendToken answers a client_credentials token request (smartToken
// dispatches it here): a valid assertion of a registered client, and
// scopes within its registration, for a write-only access token.
func (g *Gateway) backendToken(c *fiber.Ctx, req tokenRequest) error {
	now := g.cfg.Now()
	client, claims, oerr := g.checkAssertion(c, req, now)
	refuse := func(e *oauthError) error {
		entry := store.LogEntry{ActorKind: store.ActorSystem, Action: "backend-token", Outcome: store.Denied, Detail: e.Error()}
		if client != nil {
			entry.ActorKind, entry.ActorID = store.ActorStaff, backendActor+client.ClientID
		}
		if err := g.appendLog(c, entry); err != nil {
			return err
		}
		return e
	}
	if oerr != nil {
		return refuse(oerr)
	}
	allowed := client.Scope
	if allowed == 0 {
		allowed = access.AllTypes
	}
	granted, err := smartauth.GrantSystem(req.Scope, allowed)
	if err != nil {
		return refuse(oauthErr(fiber.StatusBadRequest, "invalid_scope", "%v", err))
	}
	tok, err := randomHex(32)
	if err != nil {
		return err
	}
	expires := now.Add(g.cfg.BackendTokenTTL)
	// The jti is used up with the token's log entry, in one commit: a
	// replayed assertion finds it taken, even after a restart.
	entry := store.LogEntry{ActorKind: store.ActorStaff, ActorID: backendActor + client.ClientID, Action: "backend-token", Outcome: store.Allowed,
		Detail: fmt.Sprintf("client_credentials: an access token until %s for %q", expires.UTC().Format(time.RFC3339), granted.Scope)}
	_, err = g.cfg.Store.UseNonceWithLog(c.UserContext(), jtiNonce(client.ClientID, claims.ID), claims.Expiry.Time(), entry)
	if errors.Is(err, store.ErrConflict) {
		return refuse(oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion's jti was used already: sign a new assertion for every token request"))
	}
	if err != nil {
		return fmt.Errorf("backend token: %w", err)
	}
	h := tokenHash(tok)
	g.backend.mu.Lock()
	g.backend.tokens[h] = &backendToken{client: client, granted: granted, expires: expires, hash: h}
	g.backend.mu.Unlock()
	return c.JSON(fiber.Map{"access_token": tok, "token_type": "bearer", "expires_in": int(expires.Sub(now) / time.Second), "scope": granted.Scope})
}

// jtiNonce is the nonce an assertion's jti is recorded under: apart per
// client, and apart from signed requests' nonces.
func jtiNonce(clientID, jti string) [32]byte {
	return sha256.Sum256([]byte("medrec backend assertion\x00" + clientID + "\x00" + jti))
}

// checkAssertion checks a client_credentials request's client assertion
// (RFC 7523 §3, SMART Backend Services): the client it names, once its
// signature verifies with one of the client's registered keys, is the
// first result (nil before).
func (g *Gateway) checkAssertion(c *fiber.Ctx, req tokenRequest, now time.Time) (*BackendClient, josejwt.Claims, *oauthError) {
	var claims josejwt.Claims
	switch {
	case req.ClientSecret:
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "backend clients authenticate with a client_assertion (private_key_jwt), not a secret")
	case req.ClientAssertionType != assertionType:
		return nil, claims, invalidRequest("client_assertion_type must be %s", assertionType)
	case req.ClientAssertion == "":
		return nil, claims, invalidRequest("client_assertion is required")
	}
	tok, err := josejwt.ParseSigned(req.ClientAssertion, []jose.SignatureAlgorithm{jose.RS384, jose.ES384})
	if err != nil {
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion is not a JWT signed with RS384 or ES384")
	}
	var unverified josejwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion's claims are malformed")
	}
	client, ok := g.backendClient(unverified.Issuer)
	if !ok {
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "unknown client %.128q: backend clients are registered by the provider", unverified.Issuer)
	}
	if req.ClientID != "" && req.ClientID != client.ClientID {
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "client_id differs from the assertion's issuer")
	}
	head := tok.Headers[0]
	verified := false
	for _, k := range client.Keys.Keys {
		if head.KeyID != "" && k.KeyID != head.KeyID {
			continue
		}
		// The key decides the algorithm: a header naming another one is
		// not tried with it.
		if alg, err := keyAlg(k); err != nil || string(alg) != head.Algorithm {
			continue
		}
		if tok.Claims(k.Key, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion's signature does not verify with a registered key of %s (kid and alg must match one)", client.ClientID)
	}
	aud := g.publicBase(c) + "/smart/token"
	switch {
	case claims.Issuer != client.ClientID || claims.Subject != client.ClientID:
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "iss and sub must both be the client id")
	case !slices.Contains([]string(claims.Audience), aud):
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "aud must be this token endpoint, %s", aud)
	case claims.Expiry == nil:
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "exp is required")
	case !now.Before(claims.Expiry.Time()):
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion expired")
	case claims.Expiry.Time().After(now.Add(maxAssertionLife)):
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "exp is more than %v ahead", maxAssertionLife)
	case claims.NotBefore != nil && claims.NotBefore.Time().After(now.Add(assertionLeeway)):
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion is not valid yet (nbf)")
	case claims.IssuedAt != nil && claims.IssuedAt.Time().After(now.Add(assertionLeeway)):
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "the client_assertion was issued in the future (iat)")
	case claims.ID == "" || len(claims.ID) > maxJTI:
		return client, claims, oauthErr(fiber.StatusUnauthorized, "invalid_client", "jti is required, at most %d bytes", maxJTI)
	}
	return client, claims, nil
}
