package dbmanager

import (
	"context"
	"errors"
	"time"

	"github.com/medrec-zk/medrec/chainview"
)

// How fresh the chain view is at a decision.
//
// Without a head source (Config.Heads) the view is synced at most every
// SyncInterval, and only when a request needs it: a revocation mined just
// after a sync is not seen until the next, up to SyncInterval later (363 ms
// was measured on a real network with the 500 ms default).
//
// With one, the gateway follows the node's new heads by subscription. Every
// announced head bumps a counter; a decision is taken on the view as it is
// only if no head was announced since the last sync began (and that sync is
// within SyncInterval), otherwise the view is synced first. A background
// loop also syncs as soon as a head arrives, so requests rarely wait for it.
// So a revocation is enforced from the moment the node's announcement of its
// block reaches the gateway: the window left is the announcement's delivery
// time (docs/reliability.md has it measured), not SyncInterval. SyncInterval
// stays as a backstop: a node rewound by hand (debug_setHead) announces
// nothing, and a stalled subscription is caught by it.
//
// While the subscription is down (the node restarting, the connection lost,
// or an HTTP-only node), SyncInterval alone applies, as without a source;
// the follower subscribes again every second, and the first decision after
// that syncs.

// headFollow is the gateway's side of following heads. Fields other than
// follower are guarded by Gateway.syncMu.
type headFollow struct {
	follower *chainview.Heads // nil without Config.Heads
	synced   uint64           // the follower's Seq when the last successful sync began
	running  bool             // FollowHeads is running (guarded by syncMu)
}

// seq is the follower's Seq now (0 without a follower).
func (h *headFollow) seq() uint64 {
	if h.follower == nil {
		return 0
	}
	return h.follower.State().Seq
}

// viewFresh reports whether a decision may be taken on the view as it is.
// The caller holds syncMu.
func (g *Gateway) viewFresh(now time.Time) bool {
	if g.lastSync.IsZero() || now.Sub(g.lastSync) >= g.cfg.SyncInterval {
		return false
	}
	if g.heads.follower == nil {
		return true
	}
	st := g.heads.follower.State()
	// Not live: nothing is announced, SyncInterval alone bounds the age.
	// Live: fresh only if nothing was announced since the last sync began.
	return !st.Live || st.Seq == g.heads.synced
}

// ErrNoHeadSource is returned by FollowHeads on a gateway built without
// Config.Heads.
var ErrNoHeadSource = errors.New("dbmanager: no head source configured (Config.Heads)")

// FollowHeads follows the node's new heads (Config.Heads) until ctx ends,
// syncing the chain view as soon as each arrives; Listen runs it. It
// returns ctx's error, or chainview.ErrNoSubscriptions when the node cannot
// push heads on that connection — the gateway then keeps to SyncInterval.
func (g *Gateway) FollowHeads(ctx context.Context) error {
	f := g.heads.follower
	if f == nil {
		return ErrNoHeadSource
	}
	g.syncMu.Lock()
	if g.heads.running {
		g.syncMu.Unlock()
		return errors.New("dbmanager: FollowHeads is already running")
	}
	g.heads.running = true
	g.syncMu.Unlock()
	defer func() {
		g.syncMu.Lock()
		g.heads.running = false
		g.syncMu.Unlock()
	}()

	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for {
		changed := f.Changed()
		if st := f.State(); st.Live {
			// An error here is the next request's too, which answers 503.
			if err := g.syncChain(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn("Chain view not synced after a new head", "err", err)
			}
		}
		select {
		case err := <-done:
			if errors.Is(err, chainview.ErrNoSubscriptions) {
				g.log.Warn("The node cannot push new heads; the chain view is synced every SyncInterval", "interval", g.cfg.SyncInterval)
			}
			return err
		case <-changed:
		}
	}
}

// FollowingHeads reports whether the gateway is subscribed to its node's
// new heads now (false: it decides by SyncInterval alone).
func (g *Gateway) FollowingHeads() bool {
	return g.heads.follower != nil && g.heads.follower.State().Live
}
