package dbmanager

import (
	"context"
	"errors"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/core/types"
	"github.com/gofiber/fiber/v2"
	"github.com/medrec-zk/medrec/contracts"
)

// The gateway's chain: the view it decides by (synced at most every
// SyncInterval before a decision) and the transactions it sends from its
// account (relays, enrolments, anchors), one at a time.

// sendTx signs and sends one transaction of the gateway's account with do,
// one at a time: two sent at once would both read the same pending nonce,
// and the node would refuse the second.
func (g *Gateway) sendTx(ctx context.Context, do func(ctx context.Context) (*types.Transaction, error)) (*types.Transaction, error) {
	g.txMu.Lock()
	defer g.txMu.Unlock()
	return do(ctx)
}

// syncChain brings the chain view up to date unless it is fresh: synced
// within SyncInterval and, while heads are followed, since the node's last
// announced head (viewFresh, heads.go).
func (g *Gateway) syncChain(ctx context.Context) error {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	now := time.Now()
	if g.viewFresh(now) {
		return nil
	}
	seq := g.heads.seq()
	if err := g.cfg.View.Sync(ctx); err != nil {
		return errf(fiber.StatusServiceUnavailable, "transient", "the chain is unreachable: %v", err)
	}
	g.lastSync = now
	g.heads.synced = seq
	return nil
}

// chainTimeout bounds how long a request waits for its transaction to be mined.
const chainTimeout = 60 * time.Second

// send waits for a relayed transaction and maps contract refusals to HTTP.
func (g *Gateway) send(c *fiber.Ctx, do func(ctx context.Context) (*types.Transaction, error)) (*types.Receipt, error) {
	ctx, cancel := context.WithTimeout(c.UserContext(), chainTimeout)
	defer cancel()
	return g.transact(ctx, do)
}

// transact sends a transaction with do, waits for it to be mined, and maps
// contract refusals to HTTP.
func (g *Gateway) transact(ctx context.Context, do func(ctx context.Context) (*types.Transaction, error)) (*types.Receipt, error) {
	tx, err := g.sendTx(ctx, do)
	if err != nil {
		var re *contracts.RevertError
		if errors.As(err, &re) {
			status := fiber.StatusBadRequest
			switch re.Name {
			case "TagInUse", "AlreadyRevoked", "GrantEnded", "BadNonce":
				status = fiber.StatusConflict
			case "WrongSigner", "InvalidSignature", "MalleableSignature", "ProofInvalid":
				status = fiber.StatusForbidden
			case "NotProviderGateway", "NotActiveProvider":
				return nil, errf(fiber.StatusServiceUnavailable, "transient", "this gateway is not the provider's registered gateway (%s)", re.Name)
			}
			return nil, errf(status, "business-rule", "the chain refused: %s", re.Name)
		}
		return nil, errf(fiber.StatusServiceUnavailable, "transient", "the chain is unreachable: %v", err)
	}
	r, err := g.cfg.Chain.Wait(ctx, tx)
	if err != nil {
		return nil, errf(fiber.StatusServiceUnavailable, "transient", "transaction %s: %v", tx.Hash(), err)
	}
	// The next decision reads the chain afresh: the patient's next request
	// must see the relationship, delegate or grant this transaction made.
	g.syncMu.Lock()
	g.lastSync = time.Time{}
	g.syncMu.Unlock()
	return r, nil
}

// rootWait bounds how long a claim waits for this gateway's node to know
// the root of its proof: the claimant's node may be a block ahead (a
// desk's enrolment mined a moment ago), and only a root no node will know
// should be refused.
const rootWait = 3 * time.Second

// knownRoot reports whether the patient registry knows root, looking again
// for up to rootWait before it says no.
func (g *Gateway) knownRoot(ctx context.Context, root *big.Int) (bool, error) {
	deadline := time.Now().Add(rootWait)
	for {
		known, err := g.cfg.Chain.IsKnownRoot(ctx, root)
		if err != nil {
			return false, errf(fiber.StatusServiceUnavailable, "transient", "the chain is unreachable: %v", err)
		}
		if known || !time.Now().Before(deadline) {
			return known, nil
		}
		select {
		case <-ctx.Done():
			return false, errf(fiber.StatusServiceUnavailable, "transient", "the chain is unreachable: %v", ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
