package dbmanager

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/smartauth"
	"github.com/medrec-zk/medrec/zkhash"
)

// SMART App Launch v2, standalone, approved in the patient's own client.
//
// An app the provider registered (Config.SMARTApps) sends the patient's
// browser to /smart/authorize with PKCE (S256) and its state. The gateway
// checks the app, its exact redirect URI, the audience (this gateway's FHIR
// base) and the scopes, keeps the request in memory under a fresh nonce,
// and sends the browser to the patient's client (Config.PatientApp) with
// the provider's id and that nonce. The client asks this gateway, at the
// URL the chain names, what the request is (/smart/request), shows it, and
// on yes signs, with
// the relationship's owner delegate, an approval (package smartauth)
// naming this provider, the relationship's tag, the app, its redirect URI,
// the scopes, an expiry and the nonce, and sends the browser back to
// /smart/approved. The gateway checks the signer against the chain (the
// owner of that tag at this provider), logs the approval in the patient's
// access log, and redirects to the app with a one-time code. At
// /smart/token the app trades the code and its PKCE verifier for an access
// token (and a refresh token if the patient allowed offline access). An
// anonymous viewer, who holds no owner key, approves instead with its
// Entitlement proof bound to the request's nonce (smartauth.Challenge): the
// app then reads within the viewer's grant, until the grant ends.
//
// Codes, tokens and pending requests are kept in this process's memory
// only, as SHA-256 hashes (the codes and tokens): a leak of the gateway's
// memory or database gives no usable token, and a restart ends every
// approval's tokens (the app launches again; the patient approves again).
// A token is checked on every request (authorize.go): against the chain
// (the relationship still owned by the delegate that approved — a rotation
// ends it; for a viewer's approval, the grant still in force), its expiry
// and the approval's, and its scopes.

// SMARTApp is an app the provider lets its patients approve: a public
// client (no secret; PKCE proves the token request comes from the app that
// asked), registered by the provider in the gateway's configuration.
type SMARTApp struct {
	ClientID     string
	Name         string       // what the patient's client shows
	RedirectURIs []string     // exact matches only
	Scope        access.Scope // the types it may ask for (0: every grantable type)
}

// Lifetimes of SMART App Launch's steps.
const (
	pendingTTL = 10 * time.Minute // the patient approves in their client within this
	codeTTL    = time.Minute      // RFC 6749 §4.1.2: short, single use
	// maxApproval bounds an approval's expiry: a patient who wants longer approves again.
	maxApproval = 366 * 24 * time.Hour
	// defaultApproval is the expiry the gateway proposes: an hour, or with
	// offline access 90 days (the patient's client signs the expiry it
	// shows; the gateway takes any within maxApproval).
	defaultApproval        = time.Hour
	defaultOfflineApproval = 90 * 24 * time.Hour
	// maxPending bounds the authorize requests waiting for a patient: they
	// are made by unauthenticated requests (the public per-address limit
	// bounds each address).
	maxPending = 10000
)

// smartState is what SMART App Launch keeps, in memory.
type smartState struct {
	mu      sync.Mutex
	pending map[[32]byte]*pendingAuth // by nonce
	codes   map[string]*authCode      // by tokenHash(code)
	tokens  map[string]*appToken      // access tokens by tokenHash
	refresh map[string]*appToken      // refresh tokens by tokenHash
}

// pendingAuth is an authorize request waiting for the patient.
type pendingAuth struct {
	app       *SMARTApp
	redirect  string
	state     string
	challenge string // PKCE S256
	granted   smartauth.Granted
	proposed  time.Time // the approval's expiry the gateway proposes
	expires   time.Time
}

// approval is what a patient approved: every token and code of one
// approval points to it, so revoking it (a code used twice) ends them all.
type approval struct {
	app      *SMARTApp
	redirect string
	tag      *big.Int
	owner    common.Address // the delegate that approved; a rotation ends the approval
	grant    *[32]byte      // or the anonymous viewer's grant id g that approved; a revocation ends it
	granted  smartauth.Granted
	expires  time.Time
	revoked  bool // guarded by smartState.mu
}

// authCode is a one-time code.
type authCode struct {
	approval  *approval
	challenge string
	expires   time.Time
	used      bool
}

// appToken is an access or refresh token.
type appToken struct {
	approval *approval
	expires  time.Time
	hash     string // its tokenHash, the rate limiter's principal
}

func newSMARTState() smartState {
	return smartState{pending: map[[32]byte]*pendingAuth{}, codes: map[string]*authCode{}, tokens: map[string]*appToken{}, refresh: map[string]*appToken{}}
}

// prune forgets what expired (Maintain).
func (s *smartState) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, p := range s.pending {
		if !now.Before(p.expires) {
			delete(s.pending, k)
		}
	}
	for k, c := range s.codes {
		if !now.Before(c.expires) {
			delete(s.codes, k)
		}
	}
	for _, m := range []map[string]*appToken{s.tokens, s.refresh} {
		for k, t := range m {
			if !now.Before(t.expires) || t.approval.revoked {
				delete(m, k)
			}
		}
	}
}

// smartApp returns the registered app with this client id.
func (g *Gateway) smartApp(clientID string) (*SMARTApp, bool) {
	for i := range g.cfg.SMARTApps {
		if g.cfg.SMARTApps[i].ClientID == clientID {
			return &g.cfg.SMARTApps[i], true
		}
	}
	return nil, false
}

// checkSMARTApps refuses a configuration a patient could be misled by.
func checkSMARTApps(apps []SMARTApp) error {
	seen := map[string]bool{}
	for _, a := range apps {
		if a.ClientID == "" || len(a.ClientID) > 128 || seen[a.ClientID] {
			return fmt.Errorf("dbmanager: SMART app %q: a client id is unique, 1 to 128 bytes", a.ClientID)
		}
		seen[a.ClientID] = true
		if a.Scope != 0 && !a.Scope.Valid() {
			return fmt.Errorf("dbmanager: SMART app %q: scope names unknown types", a.ClientID)
		}
		if len(a.RedirectURIs) == 0 {
			return fmt.Errorf("dbmanager: SMART app %q has no redirect URI", a.ClientID)
		}
		for _, r := range a.RedirectURIs {
			u, err := url.Parse(r)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Fragment != "" {
				return fmt.Errorf("dbmanager: SMART app %q: redirect URI %q is not an absolute http(s) URL without a fragment", a.ClientID, r)
			}
		}
	}
	return nil
}

// smartConfiguration answers /.well-known/smart-configuration (SMART App
// Launch 2.0 §2.1).
func (g *Gateway) smartConfiguration(c *fiber.Ctx) error {
	base := g.publicBase(c)
	return c.JSON(fiber.Map{
		"authorization_endpoint":                           base + "/smart/authorize",
		"token_endpoint":                                   base + "/smart/token",
		"token_endpoint_auth_methods_supported":            []string{"none", "private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"grant_types_supported":                            []string{"authorization_code", "refresh_token", "client_credentials"},
		"response_types_supported":                         []string{"code"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"scopes_supported":                                 []string{"launch/patient", "offline_access", "patient/*.rs", "patient/*.read", "system/*.cu"},
		"capabilities": []string{"launch-standalone", "client-public", "client-confidential-asymmetric", "context-standalone-patient",
			"permission-patient", "permission-offline", "permission-v1", "permission-v2"},
	})
}

// smartAuthorize answers an app's authorize request by sending the
// browser to the patient's client. Until the app and its redirect URI are
// known good, errors are answered here (RFC 6749 §4.1.2.1: never redirect
// to an unchecked URI); after, they go to the app's redirect URI.
func (g *Gateway) smartAuthorize(c *fiber.Ctx) error {
	now := g.cfg.Now()
	req, oerr := decodeAuthorizeRequest(string(c.Request().URI().QueryString()))
	if oerr != nil {
		return g.logOAuthRefusal(c, nil, "smart-authorize", "", oerr)
	}
	app, ok := g.smartApp(req.ClientID)
	if !ok {
		return g.logOAuthRefusal(c, nil, "smart-authorize", "", invalidRequest("unknown client_id %.128q: apps are registered by the provider", req.ClientID))
	}
	if !slices.Contains(app.RedirectURIs, req.RedirectURI) {
		return g.logOAuthRefusal(c, app, "smart-authorize", "", invalidRequest("redirect_uri is not one registered for this app (exact match)"))
	}
	fail := func(e *oauthError) error {
		if _, err := g.appendOAuthRefusal(c, app, "smart-authorize", "", e); err != nil {
			return err
		}
		p := url.Values{"error": {e.code}, "error_description": {e.desc}}
		if req.State != "" {
			p.Set("state", req.State)
		}
		return c.Redirect(withParams(req.RedirectURI, p), fiber.StatusSeeOther)
	}
	switch {
	case req.ResponseType != "code":
		return fail(oauthErr(fiber.StatusBadRequest, "unsupported_response_type", "response_type must be code"))
	case req.Launch != "":
		return fail(invalidRequest("only the standalone launch is supported (no launch parameter)"))
	case req.State == "":
		return fail(invalidRequest("state is required"))
	case req.CodeChallengeMethod != "S256" || !pkceValue(req.CodeChallenge):
		return fail(invalidRequest("PKCE is required: code_challenge_method=S256 and a code_challenge"))
	case strings.TrimSuffix(req.Aud, "/") != g.base(c):
		return fail(invalidRequest("aud must be this gateway's FHIR base, %s", g.base(c)))
	}
	allowed := app.Scope
	if allowed == 0 {
		allowed = access.AllTypes
	}
	granted, err := smartauth.Grant(req.Scope, allowed)
	if err != nil {
		return fail(oauthErr(fiber.StatusBadRequest, "invalid_scope", "%v", err))
	}
	var nonce [32]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return err
	}
	g.smart.mu.Lock()
	if len(g.smart.pending) >= maxPending {
		g.smart.mu.Unlock()
		g.smart.prune(now)
		g.smart.mu.Lock()
	}
	full := len(g.smart.pending) >= maxPending
	if !full {
		proposed := defaultApproval
		if granted.Offline {
			proposed = defaultOfflineApproval
		}
		g.smart.pending[nonce] = &pendingAuth{app: app, redirect: req.RedirectURI, state: req.State, challenge: req.CodeChallenge, granted: granted,
			proposed: now.Add(proposed), expires: now.Add(pendingTTL)}
	}
	g.smart.mu.Unlock()
	if full {
		return fail(oauthErr(fiber.StatusServiceUnavailable, "temporarily_unavailable", "too many authorizations waiting; try again later"))
	}
	to := url.Values{smartauth.ParamProvider: {strconv.FormatUint(uint64(g.cfg.Provider), 10)}, smartauth.ParamRequest: {hexutil.Encode(nonce[:])}}
	return c.Redirect(strings.TrimSuffix(g.cfg.PatientApp, "/")+smartauth.ApprovePath+"?"+to.Encode(), fiber.StatusSeeOther)
}

// pendingOf finds a pending authorize request by the nonce in the query's
// request parameter.
func (g *Gateway) pendingOf(v url.Values, now time.Time) ([32]byte, *pendingAuth, *oauthError) {
	nonce, err := parseBytes32(v.Get(smartauth.ParamRequest))
	if err != nil {
		return nonce, nil, invalidRequest("%s: %v", smartauth.ParamRequest, err)
	}
	g.smart.mu.Lock()
	defer g.smart.mu.Unlock()
	p, ok := g.smart.pending[nonce]
	if ok && !now.Before(p.expires) {
		delete(g.smart.pending, nonce)
		ok = false
	}
	if !ok {
		return nonce, nil, invalidRequest("unknown or expired authorization request: start again from the app")
	}
	return nonce, p, nil
}

// smartRequest tells the patient's client what a pending authorize request
// is. The client asks here, at the gateway URL the chain names, rather than
// trusting what a link carries; the nonce (32 random bytes) is what lets
// it ask. Nothing secret is in the answer (not the app's state nor its
// PKCE challenge).
func (g *Gateway) smartRequest(c *fiber.Ctx) error {
	v, oerr := oauthParams(string(c.Request().URI().QueryString()))
	if oerr != nil {
		return oerr
	}
	_, p, oerr := g.pendingOf(v, g.cfg.Now())
	if oerr != nil {
		return oerr
	}
	return c.JSON(smartauth.Request{Provider: g.cfg.Provider, ClientID: p.app.ClientID, AppName: p.app.Name, RedirectURI: p.redirect,
		Scope: p.granted.Scope, Expires: p.proposed.Unix()})
}

// smartApproved takes the answer from the patient's client: an approval
// signed by the relationship's owner delegate, an anonymous viewer's
// Entitlement proof bound to the request, or a refusal. It then redirects
// to the app with a one-time code, or with the error.
func (g *Gateway) smartApproved(c *fiber.Ctx) error {
	now := g.cfg.Now()
	v, oerr := oauthParams(string(c.Request().URI().QueryString()))
	if oerr != nil {
		return g.logOAuthRefusal(c, nil, "smart-approve", "", oerr)
	}
	nonce, p, oerr := g.pendingOf(v, now)
	if oerr != nil {
		return g.logOAuthRefusal(c, nil, "smart-approve", "", oerr)
	}
	toApp := func(params url.Values) error {
		params.Set("state", p.state)
		return c.Redirect(withParams(p.redirect, params), fiber.StatusSeeOther)
	}
	if v.Get(smartauth.ParamError) == smartauth.ErrorDenied {
		g.smart.mu.Lock()
		delete(g.smart.pending, nonce)
		g.smart.mu.Unlock()
		return toApp(url.Values{"error": {smartauth.ErrorDenied}, "error_description": {"the patient did not approve"}})
	}
	approve := g.ownerApproval
	if v.Has(smartauth.ParamProof) {
		approve = g.viewerApproval
	}
	ap, entry, err := approve(c, v, p, nonce, now)
	if err != nil {
		return err
	}
	code, err := randomHex(32)
	if err != nil {
		return err
	}
	g.smart.mu.Lock()
	_, still := g.smart.pending[nonce]
	delete(g.smart.pending, nonce)
	if still {
		g.smart.codes[tokenHash(code)] = &authCode{approval: ap, challenge: p.challenge, expires: now.Add(codeTTL)}
	}
	g.smart.mu.Unlock()
	if !still {
		return invalidRequest("this authorization request was answered already")
	}
	entry.Action, entry.Outcome = "smart-approve", store.Allowed
	entry.Detail = fmt.Sprintf("approved app %s (%s) to read %q until %s", p.app.ClientID, p.app.Name, ap.granted.Scope, ap.expires.UTC().Format(time.RFC3339))
	if err := g.appendLog(c, entry); err != nil {
		return err
	}
	return toApp(url.Values{"code": {code}})
}

// ownerApproval checks an approval signed by the relationship's owner
// delegate. It returns the approval and the log entry naming who approved.
func (g *Gateway) ownerApproval(c *fiber.Ctx, v url.Values, p *pendingAuth, nonce [32]byte, now time.Time) (*approval, store.LogEntry, error) {
	refuse := func(patient string, e *oauthError) (*approval, store.LogEntry, error) {
		return nil, store.LogEntry{}, g.logOAuthRefusal(c, p.app, "smart-approve", patient, e)
	}
	a, sig, oerr := decodeApproval(v, p, nonce, g.cfg.Provider, now)
	if oerr != nil {
		return refuse("", oerr)
	}
	signer, err := a.Signer(sig, g.smartDomain())
	if err != nil {
		return refuse("", invalidRequest("%v", err))
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return nil, store.LogEntry{}, err
	}
	rel, ok := g.cfg.View.Relationship(a.Tag)
	if !ok || rel.Provider != g.cfg.Provider {
		return refuse("", oauthErr(fiber.StatusForbidden, "access_denied", "no relationship with this tag at this provider"))
	}
	patient, perr := g.patientOf(c, a.Tag)
	if perr != nil {
		patient = ""
	}
	if rel.Owner != signer {
		return refuse(patient, oauthErr(fiber.StatusForbidden, "access_denied", "the approval is not signed by the relationship's owner delegate"))
	}
	if perr != nil {
		return refuse("", oauthErr(fiber.StatusForbidden, "access_denied", "%v", perr))
	}
	granted := p.granted
	if !a.Offline {
		granted = granted.WithoutOffline()
	}
	ap := &approval{app: p.app, redirect: p.redirect, tag: a.Tag, owner: signer, granted: granted, expires: time.Unix(int64(a.Expiry), 0)}
	return ap, store.LogEntry{ActorKind: store.ActorPatient, ActorID: signer.Hex(), PatientID: patient}, nil
}

// viewerApproval checks an anonymous viewer's approval: an Entitlement
// proof bound to this request's nonce (smartauth.Challenge) for a grant on
// a relationship at this provider that is in force. The app gets no more
// than the grant (its types; its purpose: a research grant's reads are
// de-identified), no longer than the grant and the expiry the viewer chose,
// and no refresh tokens.
func (g *Gateway) viewerApproval(c *fiber.Ctx, v url.Values, p *pendingAuth, nonce [32]byte, now time.Time) (*approval, store.LogEntry, error) {
	refuse := func(id, patient string, e *oauthError) (*approval, store.LogEntry, error) {
		entry := store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: id, Action: "smart-approve", PatientID: patient, Outcome: store.Denied, Detail: e.Error()}
		if id == "" {
			entry.ActorKind, entry.ActorID = store.ActorApp, p.app.ClientID
		}
		if err := g.appendLog(c, entry); err != nil {
			return nil, store.LogEntry{}, err
		}
		return nil, store.LogEntry{}, e
	}
	challenge := smartauth.Challenge(nonce)
	ins, err := parseFields(v.Get(smartauth.ParamGrant), v.Get(smartauth.ParamTag), hexutil.Encode(challenge[:]))
	if err != nil {
		return refuse("", "", invalidRequest("%s and %s are 0x hex field elements", smartauth.ParamGrant, smartauth.ParamTag))
	}
	pub, err := circuits.ParseEntitlementPublic(ins)
	if err != nil {
		return refuse("", "", invalidRequest("%v", err))
	}
	proof, err := parseProof(v.Get(smartauth.ParamProof))
	if err != nil {
		return refuse("", "", invalidRequest("%s: %v", smartauth.ParamProof, err))
	}
	exp, err := strconv.ParseUint(v.Get(smartauth.ParamExpiry), 10, 63)
	if err != nil || exp <= uint64(now.Unix()) || exp > uint64(now.Add(maxApproval).Unix()) {
		return refuse("", "", invalidRequest("%s must be a future time within %v", smartauth.ParamExpiry, maxApproval))
	}
	grantID := zkhash.Bytes32(pub.Grant)
	id := hexutil.Encode(grantID[:])
	if err := g.cfg.Prover.VerifyEntitlement(proof, pub); err != nil {
		return refuse("", "", oauthErr(fiber.StatusForbidden, "access_denied", "the entitlement proof does not verify for this request"))
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return nil, store.LogEntry{}, err
	}
	tag := zkhash.Big(pub.Tag)
	rel, ok := g.cfg.View.Relationship(tag)
	if !ok || rel.Provider != g.cfg.Provider {
		return refuse(id, "", oauthErr(fiber.StatusForbidden, "access_denied", "no relationship with this tag at this provider"))
	}
	patient, perr := g.patientOf(c, tag)
	gr, ok := g.cfg.View.Grant(tag, access.AnonymousGrantee, grantID)
	if err := grantUsable(gr, ok, now); err != nil {
		return refuse(id, patient, oauthErr(fiber.StatusForbidden, "access_denied", "%v", err))
	}
	if perr != nil {
		return refuse(id, "", oauthErr(fiber.StatusForbidden, "access_denied", "%v", perr))
	}
	granted, err := p.granted.WithoutOffline().Within(access.Scope(gr.Scope))
	if err != nil {
		return refuse(id, patient, oauthErr(fiber.StatusForbidden, "access_denied", "the grant covers none of the types the app asked for"))
	}
	expires := time.Unix(int64(exp), 0)
	if ge := time.Unix(int64(gr.Expiry), 0); ge.Before(expires) {
		expires = ge
	}
	ap := &approval{app: p.app, redirect: p.redirect, tag: tag, grant: &grantID, granted: granted, expires: expires}
	return ap, store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: id, Purpose: access.Purpose(gr.Purpose), PatientID: patient}, nil
}

// decodeApproval reads the patient's approval of pending request p from
// the client's answer.
func decodeApproval(v url.Values, p *pendingAuth, nonce [32]byte, provider uint32, now time.Time) (smartauth.Approval, []byte, *oauthError) {
	tag, err := zkhash.ParseHex(v.Get(smartauth.ParamTag))
	if err != nil {
		return smartauth.Approval{}, nil, invalidRequest("%s: %v", smartauth.ParamTag, err)
	}
	exp, err := strconv.ParseUint(v.Get(smartauth.ParamExpiry), 10, 63)
	if err != nil || exp <= uint64(now.Unix()) || exp > uint64(now.Add(maxApproval).Unix()) {
		return smartauth.Approval{}, nil, invalidRequest("%s must be a future time within %v", smartauth.ParamExpiry, maxApproval)
	}
	offline := false
	switch v.Get(smartauth.ParamOffline) {
	case "", "0":
	case "1":
		if !p.granted.Offline {
			return smartauth.Approval{}, nil, invalidRequest("the app did not ask for offline access")
		}
		offline = true
	default:
		return smartauth.Approval{}, nil, invalidRequest("%s is 0 or 1", smartauth.ParamOffline)
	}
	sig, err := hexutil.Decode(v.Get(smartauth.ParamSignature))
	if err != nil || len(sig) != 65 {
		return smartauth.Approval{}, nil, invalidRequest("%s is 65 bytes of 0x hex", smartauth.ParamSignature)
	}
	granted := p.granted
	if !offline {
		granted = granted.WithoutOffline()
	}
	return smartauth.Approval{
		Provider: provider, Tag: zkhash.Big(tag), ClientID: p.app.ClientID, RedirectURI: p.redirect,
		Scope: granted.Scope, Expiry: exp, Offline: offline, Nonce: nonce,
	}, sig, nil
}

func (g *Gateway) smartDomain() smartauth.Domain {
	d := g.cfg.Chain.Deployment()
	return smartauth.Domain{ChainID: d.ChainID, Registry: d.AgentRegistry}
}

// smartToken answers the token endpoint: a code and its PKCE verifier, or
// a refresh token, for an access token.
func (g *Gateway) smartToken(c *fiber.Ctx) error {
	now := g.cfg.Now()
	c.Set("Pragma", "no-cache")
	req, oerr := decodeTokenRequest(c.Get(fiber.HeaderContentType), string(c.Body()))
	if oerr != nil {
		return g.logOAuthRefusal(c, nil, "smart-token", "", oerr)
	}
	if req.GrantType == "client_credentials" && c.Get(fiber.HeaderAuthorization) == "" {
		return g.backendToken(c, req) // SMART Backend Services (backend.go)
	}
	if req.ClientSecret || req.ClientAssertion != "" || req.ClientAssertionType != "" || c.Get(fiber.HeaderAuthorization) != "" {
		return g.logOAuthRefusal(c, nil, "smart-token", "", oauthErr(fiber.StatusUnauthorized, "invalid_client", "apps here are public clients: no client secret or assertion"))
	}
	app, ok := g.smartApp(req.ClientID)
	if !ok {
		return g.logOAuthRefusal(c, nil, "smart-token", "", oauthErr(fiber.StatusUnauthorized, "invalid_client", "unknown client_id %.128q", req.ClientID))
	}
	if origin := c.Get(fiber.HeaderOrigin); !app.fromOrigin(origin) {
		return g.logOAuthRefusal(c, app, "smart-token", "", oauthErr(fiber.StatusUnauthorized, "invalid_client", "a page at %.100q is not this app's", origin))
	}
	var ap *approval
	switch req.GrantType {
	case "authorization_code":
		ap, oerr = g.redeemCode(req, app, now)
	case "refresh_token":
		ap, oerr = g.redeemRefresh(req, app, now)
	default:
		oerr = oauthErr(fiber.StatusBadRequest, "unsupported_grant_type", "grant_type is authorization_code, refresh_token or (backend clients) client_credentials")
	}
	patient := ""
	if ap != nil {
		p, err := g.patientOf(c, ap.tag)
		var refused *apiError
		if err != nil && !errors.As(err, &refused) {
			return err // the store's fault, not the app's
		}
		patient = p
	}
	if oerr == nil {
		var err error
		if oerr, err = g.approvalStands(c, ap, now); err != nil {
			return err
		}
	}
	if oerr != nil {
		return g.logOAuthRefusal(c, app, "smart-token", patient, oerr)
	}
	if patient == "" {
		return g.logOAuthRefusal(c, app, "smart-token", "", invalidGrant("this provider holds no records for the relationship"))
	}
	accessToken, err := randomHex(32)
	if err != nil {
		return err
	}
	var refresh string
	if ap.granted.Offline {
		if refresh, err = randomHex(32); err != nil {
			return err
		}
	}
	expires := now.Add(g.cfg.AppTokenTTL)
	if ap.expires.Before(expires) {
		expires = ap.expires
	}
	// Logged before it is issued: a token the log does not know is never handed out.
	if err := g.appendLog(c, store.LogEntry{ActorKind: store.ActorApp, ActorID: app.ClientID, Action: "smart-token", PatientID: patient, Outcome: store.Allowed,
		Detail: fmt.Sprintf("%s: an access token until %s for %q", req.GrantType, expires.UTC().Format(time.RFC3339), ap.granted.Scope)}); err != nil {
		return err
	}
	g.smart.mu.Lock()
	g.smart.tokens[tokenHash(accessToken)] = &appToken{approval: ap, expires: expires, hash: tokenHash(accessToken)}
	if refresh != "" {
		g.smart.refresh[tokenHash(refresh)] = &appToken{approval: ap, expires: ap.expires, hash: tokenHash(refresh)}
	}
	g.smart.mu.Unlock()
	out := fiber.Map{"access_token": accessToken, "token_type": "Bearer", "expires_in": int(expires.Sub(now) / time.Second),
		"scope": ap.granted.Scope, "patient": patient}
	if refresh != "" {
		out["refresh_token"] = refresh
	}
	return c.JSON(out)
}

// redeemCode uses up a code: the right app, redirect URI and PKCE verifier,
// once. A code presented again revokes its approval, so the tokens issued
// with it end too (RFC 6749 §4.1.2).
func (g *Gateway) redeemCode(req tokenRequest, app *SMARTApp, now time.Time) (*approval, *oauthError) {
	if req.Code == "" || req.RedirectURI == "" || req.CodeVerifier == "" {
		return nil, invalidRequest("code, redirect_uri and code_verifier are required")
	}
	if !pkceValue(req.CodeVerifier) {
		return nil, invalidRequest("code_verifier is 43 to 128 unreserved characters")
	}
	g.smart.mu.Lock()
	defer g.smart.mu.Unlock()
	code, ok := g.smart.codes[tokenHash(req.Code)]
	switch {
	case !ok || code.approval.app != app:
		return nil, invalidGrant("unknown code")
	case code.used:
		code.approval.revoked = true
		return code.approval, invalidGrant("the code was used already; the tokens issued with it are revoked")
	}
	code.used = true // whatever follows: one try per code
	switch {
	case !now.Before(code.expires):
		return code.approval, invalidGrant("the code expired")
	case req.RedirectURI != code.approval.redirect:
		return code.approval, invalidGrant("redirect_uri differs from the authorization request's")
	case s256(req.CodeVerifier) != code.challenge:
		return code.approval, invalidGrant("the code_verifier does not match the code_challenge")
	}
	return code.approval, nil
}

// redeemRefresh uses up a refresh token (each is used once: the answer
// carries the next).
func (g *Gateway) redeemRefresh(req tokenRequest, app *SMARTApp, now time.Time) (*approval, *oauthError) {
	if req.RefreshToken == "" {
		return nil, invalidRequest("refresh_token is required")
	}
	g.smart.mu.Lock()
	defer g.smart.mu.Unlock()
	t, ok := g.smart.refresh[tokenHash(req.RefreshToken)]
	if !ok || t.approval.app != app {
		return nil, invalidGrant("unknown refresh token")
	}
	delete(g.smart.refresh, t.hash)
	if !now.Before(t.expires) {
		return t.approval, invalidGrant("the refresh token expired")
	}
	if req.Scope != "" && req.Scope != t.approval.granted.Scope {
		return t.approval, oauthErr(fiber.StatusBadRequest, "invalid_scope", "a refreshed token has the approval's scope, %q", t.approval.granted.Scope)
	}
	return t.approval, nil
}

// approvalStands checks an approval against the chain and the clock: not
// revoked, not expired, the relationship still owned by the delegate that
// approved at this provider.
// A refusal is the first result; the second is a fault (the chain view
// could not be brought up to date).
func (g *Gateway) approvalStands(c *fiber.Ctx, ap *approval, now time.Time) (*oauthError, error) {
	g.smart.mu.Lock()
	revoked := ap.revoked
	g.smart.mu.Unlock()
	switch {
	case revoked:
		return invalidGrant("the approval was revoked"), nil
	case !now.Before(ap.expires):
		return invalidGrant("the patient's approval expired"), nil
	}
	if _, _, err := g.approvalHolds(c, ap, now); err != nil {
		var refused *apiError
		if errors.As(err, &refused) && refused.status == fiber.StatusForbidden {
			return invalidGrant("%v", err), nil
		}
		return nil, err
	}
	return nil, nil
}

// approvalHolds checks against the chain view that the approval still
// holds: its relationship still at this provider and, for an owner's
// approval, still owned by the delegate that approved (a rotation ends
// it), for a viewer's, its grant still in force (a revocation or expiry
// ends it). It returns the types and purpose the approval's reader reads
// with: every type and no purpose for an owner's approval, the grant's for
// a viewer's.
func (g *Gateway) approvalHolds(c *fiber.Ctx, ap *approval, now time.Time) (access.Scope, access.Purpose, error) {
	if err := g.syncChain(c.UserContext()); err != nil {
		return 0, 0, err
	}
	rel, ok := g.cfg.View.Relationship(ap.tag)
	switch {
	case !ok || rel.Provider != g.cfg.Provider:
		return 0, 0, forbidden("no relationship with this tag at this provider")
	case ap.grant != nil:
		gr, ok := g.cfg.View.Grant(ap.tag, access.AnonymousGrantee, *ap.grant)
		if err := grantUsable(gr, ok, now); err != nil {
			return 0, 0, err
		}
		return access.Scope(gr.Scope), access.Purpose(gr.Purpose), nil
	case rel.Owner != ap.owner:
		return 0, 0, forbidden("the relationship's owner delegate changed since the patient approved the app (a rotation ends approvals)")
	}
	return access.AllTypes, 0, nil
}

// appToken finds an access token: found, or found but expired.
func (g *Gateway) appToken(tok string, now time.Time) (t *appToken, ok, expired bool) {
	h := tokenHash(tok)
	g.smart.mu.Lock()
	defer g.smart.mu.Unlock()
	t, ok = g.smart.tokens[h]
	if !ok {
		return nil, false, false
	}
	if !now.Before(t.expires) || t.approval.revoked {
		delete(g.smart.tokens, h)
		return t, true, true
	}
	return t, true, false
}

// appendOAuthRefusal logs a refused OAuth request: under the app when it
// is a registered one, with the patient when known. It returns the error
// to answer with (the refusal, or the log's failure).
func (g *Gateway) appendOAuthRefusal(c *fiber.Ctx, app *SMARTApp, action, patient string, e *oauthError) (*oauthError, error) {
	entry := store.LogEntry{ActorKind: store.ActorSystem, Action: action, PatientID: patient, Outcome: store.Denied, Detail: e.Error()}
	if app != nil {
		entry.ActorKind, entry.ActorID = store.ActorApp, app.ClientID
	}
	if err := g.appendLog(c, entry); err != nil {
		return nil, err
	}
	return e, nil
}

// logOAuthRefusal logs a refused OAuth request and answers its error.
func (g *Gateway) logOAuthRefusal(c *fiber.Ctx, app *SMARTApp, action, patient string, e *oauthError) error {
	refusal, err := g.appendOAuthRefusal(c, app, action, patient, e)
	if err != nil {
		return err
	}
	return refusal
}

// writeOAuthError reports whether err is an OAuth error, and if so writes
// its answer (RFC 6749 §5.2).
func writeOAuthError(c *fiber.Ctx, err error) bool {
	var oe *oauthError
	if !errors.As(err, &oe) {
		return false
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	c.Status(oe.status).Send(oe.body())
	return true
}
