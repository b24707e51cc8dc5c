package dbmanager

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

// Who is asking, and what may they read: every reader's request is decided
// here (begin), before anything is logged (accesslog.go) or answered (the
// handlers in read.go and owner.go). Staff are decided by staffOnly.

// reader is an authenticated reader of one relationship's records.
type reader struct {
	kind    store.ActorKind
	id      string // delegate or grantee address, g, or an app's client id
	tag     *big.Int
	patient string
	scope   access.Scope
	purpose access.Purpose
	// An app (SMART) is granted reads (r) and searches (s) of each type
	// apart: search is the types it may search, scope those it may read.
	search access.Scope
	// principal is what the per-reader rate limit counts: the reader's id,
	// or an app's token (an app reads for many patients).
	principal string
}

// allows reports whether the reader may do action on resource type typ.
func (r *reader) allows(action, typ string) bool {
	if r.kind == store.ActorApp && action == "search" {
		return r.search.Allows(typ)
	}
	return r.scope.Allows(typ)
}

// limitedAs is the reader's principal for the per-reader rate limit.
func (r *reader) limitedAs() string {
	if r.principal != "" {
		return r.principal
	}
	return r.id
}

// denial is an authorization failure that is logged before it is returned.
type denial struct {
	err     error
	kind    store.ActorKind
	id      string
	patient string
}

// authorize identifies the reader of a request and what it may read. Every
// refusal is logged by the caller through the returned denial.
func (g *Gateway) authorize(c *fiber.Ctx) (*reader, *denial) {
	now := g.cfg.Now()
	if tok, ok := bearer(c); ok {
		if t, ok, expired := g.appToken(tok, now); ok {
			return g.authorizeApp(c, t, expired, now)
		}
		if t, ok, _ := g.backend.token(tok, now); ok {
			return nil, &denial{err: forbidden("a backend client's token writes records and reads none"), kind: store.ActorStaff, id: t.actor()}
		}
		return g.authorizeSession(c, tok, now)
	}
	signed, err := g.sigs.Check(http.Header(c.GetReqHeaders()), c.Method(), string(c.Request().URI().PathOriginal()),
		string(c.Request().URI().QueryString()), c.Body(), now)
	if err != nil {
		return nil, &denial{err: unauthorized("%v", err)}
	}
	// The nonce is recorded with the request's log entry (persist.go).
	c.Locals(pendingNonceKey, &pendingNonce{signed: signed})
	id := signed.Signer.Hex()
	if signed.Tag == nil {
		return nil, &denial{err: badRequest("the %s header names the relationship (tag-less requests are for /fhir/Group/ only)", gatewayauth.HeaderTag), id: id}
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return nil, &denial{err: err, id: id}
	}
	rel, ok := g.cfg.View.Relationship(signed.Tag)
	if !ok {
		return nil, &denial{err: forbidden("no relationship with this tag"), id: id}
	}
	if rel.Provider != g.cfg.Provider {
		return nil, &denial{err: forbidden("the relationship is at provider %d, this is provider %d", rel.Provider, g.cfg.Provider), id: id}
	}
	patient, perr := g.patientOf(c, signed.Tag)
	if rel.Owner == signed.Signer {
		if perr != nil {
			return nil, &denial{err: perr, kind: store.ActorPatient, id: id}
		}
		return &reader{kind: store.ActorPatient, id: id, tag: signed.Tag, patient: patient, scope: access.AllTypes}, nil
	}
	gr, ok := g.cfg.View.Grant(signed.Tag, access.AddressGrantee, contracts.AddressGrantee(signed.Signer))
	if err := grantUsable(gr, ok, now); err != nil {
		return nil, &denial{err: err, kind: store.ActorGrantee, id: id, patient: patient}
	}
	if perr != nil {
		return nil, &denial{err: perr, kind: store.ActorGrantee, id: id}
	}
	return &reader{kind: store.ActorGrantee, id: id, tag: signed.Tag, patient: patient, scope: access.Scope(gr.Scope), purpose: access.Purpose(gr.Purpose)}, nil
}

// replayDenial refuses a replayed request and logs it under the patient
// whose owner delegate or grantee signed it, so the patient sees replays of
// their requests in their own log.
func (g *Gateway) replayDenial(c *fiber.Ctx, signed gatewayauth.Signed, err error) *denial {
	d := &denial{err: unauthorized("%v", err), id: signed.Signer.Hex()}
	if signed.Tag == nil || g.syncChain(c.UserContext()) != nil {
		return d
	}
	rel, ok := g.cfg.View.Relationship(signed.Tag)
	if !ok || rel.Provider != g.cfg.Provider {
		return d
	}
	d.kind = store.ActorGrantee
	if rel.Owner == signed.Signer {
		d.kind = store.ActorPatient
	} else if _, ok := g.cfg.View.Grant(signed.Tag, access.AddressGrantee, contracts.AddressGrantee(signed.Signer)); !ok {
		return d // neither owner nor grantee: not the patient's request
	}
	if patient, perr := g.patientOf(c, signed.Tag); perr == nil {
		d.patient = patient
	}
	return d
}

func (g *Gateway) authorizeSession(c *fiber.Ctx, tok string, now time.Time) (*reader, *denial) {
	g.mu.Lock()
	s, ok := g.sessions[tokenHash(tok)]
	if ok && !now.Before(s.expires) {
		delete(g.sessions, tokenHash(tok))
		ok = false
	}
	g.mu.Unlock()
	if !ok {
		return nil, &denial{err: unauthorized("unknown or expired session")}
	}
	id := hexutil.Encode(s.grant[:])
	if err := g.syncChain(c.UserContext()); err != nil {
		return nil, &denial{err: err, kind: store.ActorAnonymous, id: id}
	}
	// The grant is checked again on every request: a revocation ends the session.
	gr, ok := g.cfg.View.Grant(s.tag, access.AnonymousGrantee, s.grant)
	patient, perr := g.patientOf(c, s.tag)
	if err := grantUsable(gr, ok, now); err != nil {
		return nil, &denial{err: err, kind: store.ActorAnonymous, id: id, patient: patient}
	}
	if perr != nil {
		return nil, &denial{err: perr, kind: store.ActorAnonymous, id: id}
	}
	return &reader{kind: store.ActorAnonymous, id: id, tag: s.tag, patient: patient, scope: access.Scope(gr.Scope), purpose: access.Purpose(gr.Purpose)}, nil
}

// authorizeApp authorizes an app's access token (SMART, smart.go): not
// expired, its approval not revoked, and — checked against the chain view on
// every request — the approval still holding (approvalHolds: the owner
// that approved still owns the relationship, or the viewer's grant is still
// in force). The app reads with the scopes approved, within the viewer's
// grant and with its purpose when a viewer approved.
func (g *Gateway) authorizeApp(c *fiber.Ctx, t *appToken, expired bool, now time.Time) (*reader, *denial) {
	ap := t.approval
	id := ap.app.ClientID
	if expired {
		return nil, &denial{err: unauthorized("the access token expired or was revoked"), kind: store.ActorApp, id: id}
	}
	if origin := c.Get(fiber.HeaderOrigin); !ap.app.fromOrigin(origin) {
		return nil, &denial{err: forbidden("this token is app %s's; a page at %.100q may not use it", id, origin), kind: store.ActorApp, id: id}
	}
	scope, purpose, err := g.approvalHolds(c, ap, now)
	if err != nil {
		patient, _ := g.patientOf(c, ap.tag)
		return nil, &denial{err: err, kind: store.ActorApp, id: id, patient: patient}
	}
	patient, err := g.patientOf(c, ap.tag)
	if err != nil {
		return nil, &denial{err: err, kind: store.ActorApp, id: id}
	}
	return &reader{kind: store.ActorApp, id: id, tag: ap.tag, patient: patient, scope: ap.granted.Read & scope, search: ap.granted.Search & scope,
		purpose: purpose, principal: "token:" + t.hash}, nil
}

func grantUsable(gr chainview.Grant, ok bool, now time.Time) error {
	switch {
	case !ok:
		return forbidden("no grant for this reader on this relationship")
	case gr.Revoked:
		return forbidden("the grant was revoked")
	case gr.Ended:
		return forbidden("the grant ended when the patient replaced the delegate that made it")
	case !gr.Active(uint64(now.Unix())):
		return forbidden("the grant expired")
	}
	return nil
}

// tagCacheTTL is how long a tag → patient mapping is used from memory. Staff
// can undo a wrong mapping (unmapTag), which this process forgets at once;
// another gateway process on the same database within this time.
const tagCacheTTL = 2 * time.Second

type cachedPatient struct {
	id    string
	until time.Time
}

// patientOf returns the patient a relationship's tag is mapped to, from
// memory for up to tagCacheTTL.
func (g *Gateway) patientOf(c *fiber.Ctx, tag *big.Int) (string, error) {
	var t store.Tag
	tag.FillBytes(t[:])
	now := time.Now()
	if v, ok := g.tagPatients.Load(t); ok {
		if p := v.(cachedPatient); now.Before(p.until) {
			return p.id, nil
		}
	}
	p, err := g.cfg.Store.PatientByTag(c.UserContext(), t)
	if errors.Is(err, store.ErrNotFound) {
		g.tagPatients.Delete(t)
		return "", notFound("this provider holds no records for the relationship (claim not completed)")
	}
	if err != nil {
		return "", err
	}
	g.tagPatients.Store(t, cachedPatient{id: p.ID, until: now.Add(tagCacheTTL)})
	return p.ID, nil
}

// forgetTag drops a mapping from memory once staff undid it.
func (g *Gateway) forgetTag(t store.Tag) { g.tagPatients.Delete(t) }

func bearer(c *fiber.Ctx) (string, bool) {
	h := c.Get(fiber.HeaderAuthorization)
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return tok, ok && tok != ""
}

// begin authorizes a read and checks the resource type against the scope;
// refusals are logged and returned.
func (g *Gateway) begin(c *fiber.Ctx, action, typ string) (*reader, error) {
	r, d := g.authorize(c)
	if d != nil {
		return nil, g.logRefusal(c, store.LogEntry{ActorKind: orSystem(d.kind), ActorID: d.id, Action: action, PatientID: d.patient, Resources: typeRes(typ), Outcome: store.Denied, Detail: d.err.Error()}, d.err)
	}
	if typ != "" && !r.allows(action, typ) {
		err := forbidden("the grant does not cover %s %s", action, typ)
		return nil, g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Resources: typeRes(typ), Outcome: store.Denied, Detail: err.Error()}, err)
	}
	// Throttled per reader, not per address. A throttled request is not
	// logged: logging a flood would let it fill the patient's log.
	if !g.limits.allow(r.kind, r.limitedAs()) {
		return nil, errf(fiber.StatusTooManyRequests, "throttled", "too many requests from this reader; slow down")
	}
	return r, nil
}

// ownerOnly authorizes the relationship's owner delegate only.
func (g *Gateway) ownerOnly(c *fiber.Ctx, action string) (*reader, error) {
	r, err := g.begin(c, action, "")
	if err != nil {
		return nil, err
	}
	if r.kind != store.ActorPatient {
		err := forbidden("only the relationship's owner may do this")
		return nil, g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Outcome: store.Denied, Detail: err.Error()}, err)
	}
	return r, nil
}

// TokenHash is how the gateway keeps a bearer token: SHA-256, hex.
func TokenHash(token string) string { return tokenHash(token) }

// NewToken returns a fresh random bearer token.
func NewToken() (string, error) { return randomHex(32) }

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// staffOnly admits the provider's staff: a bearer token of Config.StaffTokens
// (the provider's admins), or a staff account's API token or desk session.
// It records who they are and their role for the handlers and the log.
func (g *Gateway) staffOnly(c *fiber.Ctx) error {
	tok, ok := bearer(c)
	if !ok {
		return unauthorized("staff bearer token required")
	}
	if id, ok := g.cfg.StaffTokens[tokenHash(tok)]; ok {
		c.Locals("staff", id)
		c.Locals("role", store.RoleAdmin)
		return c.Next()
	}
	a, err := g.cfg.Store.StaffByToken(c.UserContext(), sha256.Sum256([]byte(tok)), g.cfg.Now())
	if errors.Is(err, store.ErrNotFound) {
		return unauthorized("unknown or expired staff token")
	}
	if err != nil {
		return err
	}
	c.Locals("staff", a.ID)
	c.Locals("role", a.Role)
	return c.Next()
}

// adminOnly refuses, and logs, a clerk doing an admin's job.
func (g *Gateway) adminOnly(c *fiber.Ctx) error {
	if staffRole(c) == store.RoleAdmin {
		return c.Next()
	}
	err := forbidden("this needs an admin of the desk; %s is a %s", staffID(c), staffRole(c))
	return g.logRefusal(c, store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: c.Method() + " " + c.Route().Path, PatientID: c.Params("id"), Outcome: store.Denied, Detail: err.Error()}, err)
}

func staffID(c *fiber.Ctx) string { s, _ := c.Locals("staff").(string); return s }

func staffRole(c *fiber.Ctx) store.StaffRole { r, _ := c.Locals("role").(store.StaffRole); return r }
