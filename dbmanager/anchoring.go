package dbmanager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/api"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Anchoring: the gateway commits, per batch, the Merkle root of its new
// access-log entries and the root of its records state (every tagged
// patient's records-state hash) to contract Anchors. Batches are per
// provider, never per patient, and only made when something changed.
//
// The store numbers batches and log entries from 0, as the contract does.
// An anchor is stored before it is published; one left unpublished by a
// crash is published by the next round.

// anchorState is the records-state tree as of the latest stored anchor.
type anchorState struct {
	loaded  bool
	states  map[store.Tag][32]byte
	batches []store.Anchor // without States, by batch number
}

func (g *Gateway) loadAnchorsLocked(ctx context.Context) error {
	if g.anchors.loaded {
		return nil
	}
	g.anchors.states = map[store.Tag][32]byte{}
	latest, err := g.cfg.Store.LatestAnchor(ctx)
	if errors.Is(err, store.ErrNotFound) {
		g.anchors.loaded = true
		return nil
	}
	if err != nil {
		return err
	}
	for b := uint64(0); b <= latest.Batch; b++ {
		a, err := g.cfg.Store.Anchor(ctx, b)
		if err != nil {
			return err
		}
		for _, s := range a.States {
			g.anchors.states[s.Tag] = s.Hash
		}
		a.States = nil
		g.anchors.batches = append(g.anchors.batches, a)
	}
	g.anchors.loaded = true
	return nil
}

func (g *Gateway) stateTreeLocked() (*anchor.StateTree, error) {
	leaves := make([]anchor.StateLeaf, 0, len(g.anchors.states))
	for tag, h := range g.anchors.states {
		leaves = append(leaves, anchor.StateLeaf{Tag: tag, State: h})
	}
	return anchor.NewStateTree(leaves)
}

// AnchorOnce publishes any unpublished anchor, then anchors what changed
// since. It reports whether a new batch was made.
func (g *Gateway) AnchorOnce(ctx context.Context) (bool, error) {
	g.anchorMu.Lock()
	defer g.anchorMu.Unlock()
	if err := g.loadAnchorsLocked(ctx); err != nil {
		return false, fmt.Errorf("anchors: load: %w", err)
	}
	if n := len(g.anchors.batches); n > 0 && g.anchors.batches[n-1].TxHash == "" {
		if err := g.publishLocked(ctx, n-1); err != nil {
			return false, err
		}
	}
	from := uint64(0)
	if n := len(g.anchors.batches); n > 0 {
		last := g.anchors.batches[n-1]
		from = last.LogFrom + last.LogCount
	}
	head, err := g.cfg.Store.LogHead(ctx)
	if err != nil {
		return false, fmt.Errorf("anchors: log head: %w", err)
	}
	var count uint64
	if head.Next > from {
		count = head.Next - from
	}
	dirty, err := g.cfg.Store.Dirty(ctx)
	if err != nil {
		return false, fmt.Errorf("anchors: dirty: %w", err)
	}
	if count == 0 && len(dirty) == 0 {
		return false, nil
	}
	leaves, err := g.logLeaves(ctx, from, count)
	if err != nil {
		return false, err
	}
	var logRoot [32]byte
	if count > 0 {
		logRoot = anchor.Root(leaves)
	}
	for _, s := range dirty {
		g.anchors.states[s.Tag] = s.Hash
	}
	tree, err := g.stateTreeLocked()
	if err != nil {
		return false, err
	}
	a, err := g.cfg.Store.AddAnchor(ctx, store.Anchor{LogFrom: from, LogCount: count, LogRoot: logRoot, StateRoot: tree.Root(), States: dirty})
	if err != nil {
		return false, fmt.Errorf("anchors: store: %w", err)
	}
	a.States = nil
	g.anchors.batches = append(g.anchors.batches, a)
	return true, g.publishLocked(ctx, len(g.anchors.batches)-1)
}

func (g *Gateway) logLeaves(ctx context.Context, from, count uint64) ([]common.Hash, error) {
	leaves := make([]common.Hash, 0, count)
	for next := from; next < from+count; {
		entries, err := g.cfg.Store.LogRange(ctx, next, int(min(1000, from+count-next)))
		if err != nil {
			return nil, fmt.Errorf("anchors: log range: %w", err)
		}
		if len(entries) == 0 {
			return nil, fmt.Errorf("anchors: log ends before seq %d", next)
		}
		for _, e := range entries {
			leaves = append(leaves, anchor.LeafHash(e.Hash[:]))
		}
		next += uint64(len(entries))
	}
	return leaves, nil
}

// publishLocked sends batch i to the chain, unless the chain already has it.
func (g *Gateway) publishLocked(ctx context.Context, i int) error {
	a := g.anchors.batches[i]
	batches, _, err := g.cfg.Chain.AnchorHead(ctx, g.cfg.Provider)
	if err != nil {
		return fmt.Errorf("anchors: chain head: %w", err)
	}
	want := contracts.AnchorBatchHash(a.LogRoot, a.LogFrom, a.LogCount, a.StateRoot)
	switch {
	case batches > uint64(i):
		got, err := g.cfg.Chain.BatchHash(ctx, g.cfg.Provider, uint64(i))
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("anchors: batch %d on chain differs from the stored batch", i)
		}
		return g.markPublished(ctx, i, "published")
	case batches < uint64(i):
		return fmt.Errorf("anchors: the chain has %d batches, the store %d", batches, i+1)
	}
	ctx, cancel := context.WithTimeout(ctx, chainTimeout)
	defer cancel()
	tx, err := g.cfg.Chain.Anchor(ctx, g.cfg.Relayer, a.LogRoot, a.LogFrom, a.LogCount, a.StateRoot)
	if err != nil {
		return fmt.Errorf("anchors: publish batch %d: %w", i, err)
	}
	if _, err := g.cfg.Chain.Wait(ctx, tx); err != nil {
		return fmt.Errorf("anchors: publish batch %d: %w", i, err)
	}
	return g.markPublished(ctx, i, tx.Hash().Hex())
}

func (g *Gateway) markPublished(ctx context.Context, i int, tx string) error {
	if err := g.cfg.Store.SetAnchorTx(ctx, g.anchors.batches[i].Batch, tx); err != nil {
		return fmt.Errorf("anchors: record tx: %w", err)
	}
	g.anchors.batches[i].TxHash = tx
	return nil
}

// RunAnchors anchors every interval until ctx ends.
func (g *Gateway) RunAnchors(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := g.AnchorOnce(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("anchoring failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// logProofs returns inclusion proofs for published entries, by seq.
func (g *Gateway) logProofs(ctx context.Context, seqs []uint64) (map[uint64]*api.LogProof, error) {
	g.anchorMu.Lock()
	defer g.anchorMu.Unlock()
	if err := g.loadAnchorsLocked(ctx); err != nil {
		return nil, err
	}
	out := map[uint64]*api.LogProof{}
	cache := map[int][]common.Hash{}
	for _, s := range seqs {
		for i, a := range g.anchors.batches {
			if a.TxHash == "" || s < a.LogFrom || s >= a.LogFrom+a.LogCount {
				continue
			}
			leaves, ok := cache[i]
			if !ok {
				var err error
				if leaves, err = g.logLeaves(ctx, a.LogFrom, a.LogCount); err != nil {
					return nil, err
				}
				cache[i] = leaves
			}
			p, err := anchor.Proof(leaves, int(s-a.LogFrom))
			if err != nil {
				return nil, err
			}
			out[s] = &api.LogProof{Batch: uint64(i), Index: int(s - a.LogFrom), Count: a.LogCount, Proof: p}
		}
	}
	return out, nil
}

// patientState answers the owner's records state and, once anchored, its
// leaf in the latest published records-state tree with the inclusion proof.
func (g *Gateway) patientState(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "state")
	if err != nil {
		return err
	}
	st, err := g.cfg.Store.State(c.UserContext(), r.patient)
	if err != nil {
		return storeError(err)
	}
	out := api.State{Hash: st.Hash, Seq: st.Seq, Count: st.Count, Dirty: st.Dirty}
	g.anchorMu.Lock()
	defer g.anchorMu.Unlock()
	if err := g.loadAnchorsLocked(c.UserContext()); err != nil {
		return err
	}
	n := len(g.anchors.batches)
	if n > 0 && g.anchors.batches[n-1].TxHash != "" {
		tree, err := g.stateTreeLocked()
		if err != nil {
			return err
		}
		var tag store.Tag
		r.tag.FillBytes(tag[:])
		if leaf, i, p, err := tree.Proof(tag); err == nil {
			out.Anchor = &api.StateAnchor{Batch: uint64(n - 1), StateRoot: tree.Root(), State: leaf.State, Index: i, Count: tree.Len(), Proof: p}
		}
	}
	return c.JSON(out)
}
