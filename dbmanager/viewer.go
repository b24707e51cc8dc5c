package dbmanager

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"
	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/zkhash"
)

// Anonymous viewers: a challenge, an Entitlement proof bound to it, and a
// short session whose grant is checked again on every request (authorize.go).

// session is an anonymous viewer's short session after an Entitlement proof.
type session struct {
	tag     *big.Int
	grant   [32]byte
	expires time.Time
}

const challengeTTL = 2 * time.Minute

// Challenges are stateless until used. A challenge is a field element whose
// 31 bytes are its expiry (8), a random part (7) and a MAC of both (16)
// under a key of this gateway process: issuing one stores nothing, so no
// client can fill a table and lock the other viewers out. A challenge is
// remembered only once a valid proof used it, until it expires, so it is
// used once; the memory that takes grows with valid Entitlement proofs
// (each costs its maker a proof), never with requests for challenges.
const (
	challengeRandom = 7
	challengeMAC    = 16
)

func (g *Gateway) challengeTag(b []byte) []byte {
	m := hmac.New(sha256.New, g.challengeKey)
	m.Write([]byte("medrec-challenge-v1"))
	m.Write(binary.BigEndian.AppendUint32(nil, g.cfg.Provider))
	m.Write(b)
	return m.Sum(nil)[:challengeMAC]
}

// challenge issues a fresh, single-use challenge: a field element the
// viewer's Entitlement proof must bind.
func (g *Gateway) challenge(c *fiber.Ctx) error {
	now := g.cfg.Now()
	exp := now.Add(challengeTTL)
	var b [32]byte // b[0] = 0: 248 bits, always below r
	binary.BigEndian.PutUint64(b[1:9], uint64(exp.Unix()))
	if _, err := rand.Read(b[9 : 9+challengeRandom]); err != nil {
		return err
	}
	copy(b[9+challengeRandom:], g.challengeTag(b[1:9+challengeRandom]))
	return c.JSON(fiber.Map{"challenge": hexutil.Encode(b[:]), "expires": exp.Unix()})
}

// checkChallenge reports whether b is a challenge this process issued that
// has not expired at now.
func (g *Gateway) checkChallenge(b [32]byte, now time.Time) bool {
	if b[0] != 0 || !hmac.Equal(b[9+challengeRandom:], g.challengeTag(b[1:9+challengeRandom])) {
		return false
	}
	return now.Unix() < int64(binary.BigEndian.Uint64(b[1:9]))
}

// useChallenge records a checked challenge as used; false if it was.
func (g *Gateway) useChallenge(b [32]byte, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.challengesSwept) > challengeTTL/4 {
		for k, exp := range g.usedChallenges {
			if !now.Before(exp) {
				delete(g.usedChallenges, k)
			}
		}
		g.challengesSwept = now
	}
	if _, used := g.usedChallenges[b]; used {
		return false
	}
	g.usedChallenges[b] = time.Unix(int64(binary.BigEndian.Uint64(b[1:9])), 0)
	return true
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
		return g.logRefusal(c, store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: hexutil.Encode(grantID[:]), Action: "session", PatientID: patient, Outcome: store.Denied, Detail: e.Error()}, e)
	}
	// A challenge of this process, not expired, bound by a valid proof, and
	// then used up whatever happens next.
	chBytes := zkhash.Bytes32(pub.Challenge)
	if !g.checkChallenge(chBytes, now) {
		return logDenied(unauthorized("unknown, used or expired challenge"), "")
	}
	if err := g.cfg.Prover.VerifyEntitlement(proof, pub); err != nil {
		return logDenied(unauthorized("the entitlement proof does not verify"), "")
	}
	if !g.useChallenge(chBytes, now) {
		return logDenied(unauthorized("unknown, used or expired challenge"), "")
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
	gr, ok := g.cfg.View.Grant(tag, access.AnonymousGrantee, grantID)
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
