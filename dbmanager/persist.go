package dbmanager

import (
	"context"
	"errors"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

// storeNonces keeps the nonces of signed requests in the records database
// (store.Nonces), so a replay fails after a gateway restart too.
type storeNonces struct{ g *Gateway }

// UseNonce implements gatewayauth.NonceStore.
func (n storeNonces) UseNonce(ctx context.Context, nonce [32]byte, expires, now time.Time) error {
	n.g.prune(ctx, now)
	err := n.g.cfg.Store.UseNonce(ctx, nonce, expires)
	if errors.Is(err, store.ErrConflict) {
		return gatewayauth.ErrReplay
	}
	return err
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
