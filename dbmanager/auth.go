package dbmanager

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// reader is an authenticated reader of one relationship's records.
type reader struct {
	kind    store.ActorKind
	id      string // delegate or grantee address, or g
	tag     *big.Int
	patient string
	scope   access.Scope
	purpose access.Purpose
}

// session is an anonymous viewer's short session after an Entitlement proof.
type session struct {
	tag     *big.Int
	grant   [32]byte
	expires time.Time
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
		return g.authorizeSession(c, tok, now)
	}
	signed, err := g.sigs.Check(http.Header(c.GetReqHeaders()), c.Method(), string(c.Request().URI().PathOriginal()),
		string(c.Request().URI().QueryString()), c.Body(), now)
	if err != nil {
		return nil, &denial{err: unauthorized("%v", err)}
	}
	// The nonce is recorded with the request's log entry (persist.go).
	c.Locals(pendingNonceKey, &pendingNonce{signed: signed})
	g.prune(c.UserContext(), now)
	id := signed.Signer.Hex()
	if signed.Tag == nil {
		return nil, &denial{err: badRequest("the %s header names the relationship", gatewayauth.HeaderTag), id: id}
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
	gr, ok := g.cfg.View.Grant(signed.Tag, chainview.GranteeAddress, contracts.AddressGrantee(signed.Signer))
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
	} else if _, ok := g.cfg.View.Grant(signed.Tag, chainview.GranteeAddress, contracts.AddressGrantee(signed.Signer)); !ok {
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
	gr, ok := g.cfg.View.Grant(s.tag, chainview.GranteeAnonymous, s.grant)
	patient, perr := g.patientOf(c, s.tag)
	if err := grantUsable(gr, ok, now); err != nil {
		return nil, &denial{err: err, kind: store.ActorAnonymous, id: id, patient: patient}
	}
	if perr != nil {
		return nil, &denial{err: perr, kind: store.ActorAnonymous, id: id}
	}
	return &reader{kind: store.ActorAnonymous, id: id, tag: s.tag, patient: patient, scope: access.Scope(gr.Scope), purpose: access.Purpose(gr.Purpose)}, nil
}

func grantUsable(gr chainview.Grant, ok bool, now time.Time) error {
	switch {
	case !ok:
		return forbidden("no grant for this reader on this relationship")
	case gr.Revoked:
		return forbidden("the grant was revoked")
	case !gr.Active(uint64(now.Unix())):
		return forbidden("the grant expired")
	}
	return nil
}

// patientOf returns the patient a relationship's tag is mapped to. A
// mapping is made once and never changes (store.Patients.MapTag), so the
// ones found are kept in memory.
func (g *Gateway) patientOf(c *fiber.Ctx, tag *big.Int) (string, error) {
	var t store.Tag
	tag.FillBytes(t[:])
	if id, ok := g.tagPatients.Load(t); ok {
		return id.(string), nil
	}
	p, err := g.cfg.Store.PatientByTag(c.UserContext(), t)
	if err == nil {
		g.tagPatients.Store(t, p.ID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return "", notFound("this provider holds no records for the relationship (claim not completed)")
	}
	if err != nil {
		return "", err
	}
	return p.ID, nil
}

func bearer(c *fiber.Ctx) (string, bool) {
	h := c.Get(fiber.HeaderAuthorization)
	tok, ok := strings.CutPrefix(h, "Bearer ")
	return tok, ok && tok != ""
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// --- anonymous viewers ------------------------------------------------------------

const challengeTTL = 2 * time.Minute

// challenge issues a fresh, single-use challenge: a field element the
// viewer's Entitlement proof must bind.
func (g *Gateway) challenge(c *fiber.Ctx) error {
	b := make([]byte, 31) // 248 bits: always below r
	if _, err := rand.Read(b); err != nil {
		return err
	}
	ch := hexutil.Encode(new(big.Int).SetBytes(b).FillBytes(make([]byte, 32)))
	now := g.cfg.Now()
	g.mu.Lock()
	for k, exp := range g.challenges {
		if !now.Before(exp) {
			delete(g.challenges, k)
		}
	}
	if len(g.challenges) > 100_000 {
		g.mu.Unlock()
		return errf(fiber.StatusTooManyRequests, "throttled", "too many open challenges")
	}
	g.challenges[ch] = now.Add(challengeTTL)
	g.mu.Unlock()
	return c.JSON(fiber.Map{"challenge": ch, "expires": now.Add(challengeTTL).Unix()})
}

type entitlementRequest struct {
	Tag       string `json:"tag"`
	Grant     string `json:"grant"`
	Challenge string `json:"challenge"`
	Proof     string `json:"proof"`
}

// entitlement checks an anonymous viewer's proof and opens a short session.
func (g *Gateway) entitlement(c *fiber.Ctx) error {
	var req entitlementRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	now := g.cfg.Now()
	ins, err := parseFields(req.Grant, req.Tag, req.Challenge)
	if err != nil {
		return err
	}
	pub, err := circuits.ParseEntitlementPublic(ins)
	if err != nil {
		return badRequest("%v", err)
	}
	proof, err := parseProof(req.Proof)
	if err != nil {
		return err
	}
	grantID := zkhash.Bytes32(pub.Grant)
	logDenied := func(e error, patient string) error {
		g.appendLog(c, store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: hexutil.Encode(grantID[:]), Action: "session", PatientID: patient, Outcome: store.Denied, Detail: e.Error()})
		return e
	}
	// The challenge is used up whatever happens next.
	chBytes := zkhash.Bytes32(pub.Challenge)
	chKey := hexutil.Encode(chBytes[:])
	g.mu.Lock()
	exp, ok := g.challenges[chKey]
	delete(g.challenges, chKey)
	g.mu.Unlock()
	if !ok || !now.Before(exp) {
		return logDenied(unauthorized("unknown, used or expired challenge"), "")
	}
	if err := g.cfg.Prover.VerifyEntitlement(proof, pub); err != nil {
		return logDenied(unauthorized("the entitlement proof does not verify"), "")
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return err
	}
	tag := zkhash.Big(pub.Tag)
	rel, ok := g.cfg.View.Relationship(tag)
	if !ok || rel.Provider != g.cfg.Provider {
		return logDenied(forbidden("no relationship with this tag at this provider"), "")
	}
	patient, perr := g.patientOf(c, tag)
	gr, ok := g.cfg.View.Grant(tag, chainview.GranteeAnonymous, grantID)
	if err := grantUsable(gr, ok, now); err != nil {
		return logDenied(err, patient)
	}
	if perr != nil {
		return logDenied(perr, "")
	}
	tok, err := randomHex(32)
	if err != nil {
		return err
	}
	expires := now.Add(g.cfg.SessionTTL)
	if ge := time.Unix(int64(gr.Expiry), 0); ge.Before(expires) {
		expires = ge
	}
	g.mu.Lock()
	g.sessions[tokenHash(tok)] = &session{tag: tag, grant: grantID, expires: expires}
	g.mu.Unlock()
	if err := g.appendLog(c, store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: hexutil.Encode(grantID[:]), Purpose: access.Purpose(gr.Purpose), Action: "session", PatientID: patient, Outcome: store.Allowed}); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"token": tok, "expires": expires.Unix(), "scope": access.Scope(gr.Scope).Types(), "purpose": access.Purpose(gr.Purpose).String()})
}

// parseFields parses values given as "0x" and 1 to 64 hex digits (leading
// zeros allowed). Ranges are checked by the circuits package's parsers.
func parseFields(ss ...string) ([]*big.Int, error) {
	out := make([]*big.Int, len(ss))
	for i, s := range ss {
		digits, ok := strings.CutPrefix(s, "0x")
		v, okNum := new(big.Int).SetString(digits, 16)
		if !ok || !okNum || len(digits) > 64 || strings.HasPrefix(digits, "-") || strings.HasPrefix(digits, "+") {
			return nil, badRequest("%q is not a 0x-hex number of at most 32 bytes", s)
		}
		out[i] = v
	}
	return out, nil
}

func parseProof(s string) (prover.Proof, error) {
	b, err := hexutil.Decode(s)
	if err != nil {
		return prover.Proof{}, badRequest("proof: %v", err)
	}
	p, err := prover.ParseProof(b)
	if err != nil {
		return prover.Proof{}, badRequest("proof: %v", err)
	}
	return p, nil
}

// appendLog writes an access-log entry. Allowed reads are logged before any
// data is sent and fail when the log cannot be written; for refusals the
// answer is already decided and a logging failure is only reported.
//
// The first entry of a signed request records its nonce in the same commit.
func (g *Gateway) appendLog(c *fiber.Ctx, e store.LogEntry) error {
	if len(e.Detail) > store.MaxLogString {
		e.Detail = e.Detail[:store.MaxLogString]
	}
	var err error
	if p := pendingNonceOf(c); p != nil {
		err = g.appendLogWithNonce(c, p, e)
		var refused *apiError
		if errors.As(err, &refused) {
			return err // a replay (its nonce was taken): refused, and logged as one
		}
	} else {
		_, err = g.cfg.Store.AppendLog(c.UserContext(), e)
	}
	if err != nil {
		g.log.Error("access log append failed", "action", e.Action, "err", err)
		return fmt.Errorf("access log: %w", err)
	}
	return nil
}
