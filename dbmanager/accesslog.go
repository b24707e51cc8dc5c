package dbmanager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

// The access log and the nonces of signed requests: every decision the
// gateway takes is logged here before its answer leaves.

// Nonces of signed requests live in the records database, so a replay fails
// after a gateway restart too. A request's nonce is recorded in the same
// commit as the request's first access-log entry (store.UseNonceWithLog):
// one durable write per request, not two. A request whose answer is not
// logged (the owner's own change feed, log and state) records its nonce
// alone, after the handler and before the answer leaves (recordNonce).
// Either way nothing is answered before its nonce is recorded, and the
// nonce's primary key decides between a request and its replays — sent at
// once, after a restart, or to another gateway process on the same
// database: the replay finds the nonce taken, is refused and logged as a
// replay.

// appendLog writes an access-log entry. Allowed reads are logged before any
// data is sent and fail when the log cannot be written; refusals too
// (logRefusal): no answer leaves without its entry.
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

// logRefusal writes the entry of a refusal (or of a read of something not
// there) and returns the refusal. Refusals are logged as durably as allowed
// reads: when the entry cannot be written, the answer is the database's
// fault (503 while it is away, 507 when full, 500) instead of the refusal,
// so every refusal a reader receives is in the patient's log — and nothing
// was done either way.
func (g *Gateway) logRefusal(c *fiber.Ctx, e store.LogEntry, refusal error) error {
	if err := g.appendLog(c, e); err != nil {
		return err // a replay's refusal, or the store's fault
	}
	return refusal
}

// pendingNonce is a verified request's nonce until it is recorded; kept in
// the request's locals.
type pendingNonce struct {
	signed   gatewayauth.Signed
	recorded bool
}

const pendingNonceKey = "medrec.nonce"

func pendingNonceOf(c *fiber.Ctx) *pendingNonce {
	if p, ok := c.Locals(pendingNonceKey).(*pendingNonce); ok && !p.recorded {
		return p
	}
	return nil
}

// appendLogWithNonce writes the request's log entry together with its
// nonce. If the nonce is taken, the request is a replay: the replay is
// logged instead, under the patient whose request it was, and refused.
func (g *Gateway) appendLogWithNonce(c *fiber.Ctx, p *pendingNonce, e store.LogEntry) error {
	_, err := g.cfg.Store.UseNonceWithLog(c.UserContext(), p.signed.Nonce, p.signed.Expires, e)
	if !errors.Is(err, store.ErrConflict) {
		if err == nil {
			p.recorded = true
		}
		return err
	}
	p.recorded = true // by the request it replays
	return g.refuseReplay(c, p, e.Action, e.Resources)
}

// refuseReplay logs a replayed request and returns its refusal (or, when
// the entry cannot be written, the database's fault: logRefusal).
func (g *Gateway) refuseReplay(c *fiber.Ctx, p *pendingNonce, action string, resources []string) error {
	d := g.replayDenial(c, p.signed, gatewayauth.ErrReplay)
	e := store.LogEntry{ActorKind: orSystem(d.kind), ActorID: d.id, Action: action, PatientID: d.patient, Resources: resources, Outcome: store.Denied, Detail: d.err.Error()}
	if _, err := g.cfg.Store.AppendLog(c.UserContext(), e); err != nil {
		g.log.Error("access log append failed", "action", e.Action, "err", err)
		return fmt.Errorf("access log: %w", err)
	}
	return d.err
}

// recordNonce records, after the handler, the nonce of a signed request no
// log entry took with it: an answer that is not logged, or a request that
// failed before it was logged. A replay is refused instead of answered; if
// the nonce cannot be recorded, a successful answer becomes a 503.
func (g *Gateway) recordNonce(c *fiber.Ctx) error {
	err := c.Next()
	p := pendingNonceOf(c)
	if p == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), 10*time.Second)
	defer cancel()
	uerr := g.cfg.Store.UseNonce(ctx, p.signed.Nonce, p.signed.Expires)
	ok := err == nil && c.Response().StatusCode() < 400
	switch {
	case uerr == nil:
		p.recorded = true
		return err
	case errors.Is(uerr, store.ErrConflict):
		p.recorded = true
		if !ok {
			return err // refused anyway
		}
		discardAnswer(c)
		return g.refuseReplay(c, p, strings.TrimPrefix(c.Path(), "/patient/"), nil)
	default:
		g.log.Error("recording a request's nonce failed", "err", uerr)
		if !ok {
			return err
		}
		discardAnswer(c)
		return errf(fiber.StatusServiceUnavailable, "transient", "cannot record the request's nonce; try again")
	}
}

func orSystem(k store.ActorKind) store.ActorKind {
	if k == 0 {
		// Unidentified callers (bad signature) are logged as "system"-observed attempts.
		return store.ActorSystem
	}
	return k
}

func typeRes(typ string) []string {
	if typ == "" {
		return nil
	}
	return []string{typ}
}
