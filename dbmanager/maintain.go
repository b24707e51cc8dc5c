package dbmanager

import (
	"context"
	"time"
)

// The gateway's housekeeping, off the request path: expired nonces, claim
// codes and finished exports' files are deleted, and idle per-reader rate limiters forgotten,
// about once a minute, in the background (Listen runs it; Maintain runs one
// round).

// maintainInterval is how often Maintain runs while the gateway listens.
const maintainInterval = time.Minute

// maintain runs Maintain every maintainInterval until ctx ends.
func (g *Gateway) maintain(ctx context.Context) {
	t := time.NewTicker(maintainInterval)
	defer t.Stop()
	for {
		g.Maintain(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Maintain deletes the nonces, claim codes and exports that expired by the
// gateway's clock (the one expiries are checked with) and forgets idle rate
// limiters. A failure is only logged: the rows are deleted next time. An
// expired nonce or code is refused whether or not it was deleted yet.
func (g *Gateway) Maintain(ctx context.Context) {
	now := g.cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := g.cfg.Store.PruneNonces(ctx, now); err != nil && ctx.Err() == nil {
		g.log.Warn("pruning expired nonces failed", "err", err)
	}
	if _, err := g.cfg.Store.PruneClaimCodes(ctx, now); err != nil && ctx.Err() == nil {
		g.log.Warn("pruning expired claim codes failed", "err", err)
	}
	// Exported records are copies: not kept past their download window.
	if _, err := g.cfg.Store.PruneExportJobs(ctx, now.Add(-exportTTL)); err != nil && ctx.Err() == nil {
		g.log.Warn("pruning expired exports failed", "err", err)
	}
	g.limits.forgetIdle(time.Now())
	g.smart.prune(now)
	g.backend.prune(now)
}
