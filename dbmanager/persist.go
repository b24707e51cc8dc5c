package dbmanager

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

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

// refuseReplay logs a replayed request (best effort) and returns its refusal.
func (g *Gateway) refuseReplay(c *fiber.Ctx, p *pendingNonce, action string, resources []string) error {
	d := g.replayDenial(c, p.signed, gatewayauth.ErrReplay)
	e := store.LogEntry{ActorKind: orSystem(d.kind), ActorID: d.id, Action: action, PatientID: d.patient, Resources: resources, Outcome: store.Denied, Detail: d.err.Error()}
	if _, err := g.cfg.Store.AppendLog(c.UserContext(), e); err != nil {
		g.log.Error("access log append failed", "action", e.Action, "err", err)
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

// pruneInterval is how often expired nonces and claim codes are deleted.
const pruneInterval = time.Minute

// prune deletes expired nonces and claim codes, at most once a
// pruneInterval, by the gateway's clock (the one expiries are checked
// with). A failure is only logged: the rows are deleted next time.
func (g *Gateway) prune(ctx context.Context, now time.Time) {
	g.pruneMu.Lock()
	due := now.Sub(g.pruned) >= pruneInterval
	if due {
		g.pruned = now
	}
	g.pruneMu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := g.cfg.Store.PruneNonces(ctx, now); err != nil {
		g.log.Warn("pruning expired nonces failed", "err", err)
	}
	if _, err := g.cfg.Store.PruneClaimCodes(ctx, now); err != nil {
		g.log.Warn("pruning expired claim codes failed", "err", err)
	}
}
