package dbmanager

import (
	"context"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// Anchoring: the gateway commits, per batch, the Merkle root of its new
// access-log entries and the root of its records state — every tagged
// patient's state: the patient's records history and log commitment
// (store.StateHashV2) — to contract Anchors. Batches are per provider,
// never per patient, and only made when something changed. A patient's
// leaf changes in a batch when the patient's records changed or the batch
// holds log entries about the patient; the store computes each new leaf
// from its rows, in this pass, so no read pays for it.
//
// The store numbers batches and log entries from 0, as the contract does.
// An anchor is stored before it is published; one left unpublished by a
// crash is published by the next round.

// anchorState is the records-state tree as of the latest stored anchor.
type anchorState struct {
	loaded  bool
	states  map[store.Tag]store.PatientState // every tagged patient's latest leaf
	batches []store.Anchor                   // without States, by batch number
	tree    *anchor.StateTree                // over states; nil until built
	trees   []cachedTree                     // anchored log batches' trees, the latest built (batchTree)
}

func (g *Gateway) loadAnchorsLocked(ctx context.Context) error {
	if g.anchors.loaded {
		return nil
	}
	g.anchors.states, g.anchors.batches, g.anchors.tree, g.anchors.trees = map[store.Tag]store.PatientState{}, nil, nil, nil
	for {
		page, err := g.cfg.Store.Batches(ctx, uint64(len(g.anchors.batches)), store.MaxCount)
		if err != nil {
			return err
		}
		g.anchors.batches = append(g.anchors.batches, page...)
		if len(page) < store.MaxCount {
			break
		}
	}
	states, err := g.cfg.Store.LatestStates(ctx)
	if err != nil {
		return err
	}
	for _, s := range states {
		g.anchors.states[s.Tag] = s
	}
	g.anchors.loaded = true
	return nil
}

// stateTreeLocked returns the tree of the latest stored anchor, built once.
func (g *Gateway) stateTreeLocked() (*anchor.StateTree, error) {
	if g.anchors.tree == nil {
		t, err := stateTree(g.anchors.states)
		if err != nil {
			return nil, err
		}
		g.anchors.tree = t
	}
	return g.anchors.tree, nil
}

func stateTree(states map[store.Tag]store.PatientState) (*anchor.StateTree, error) {
	leaves := make([]anchor.StateLeaf, 0, len(states))
	for tag, s := range states {
		leaves = append(leaves, anchor.StateLeaf{Tag: tag, State: s.Hash})
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
	dirty, err := g.cfg.Store.Dirty(ctx, from+count)
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
	// The new leaves replace the old ones only once the batch is stored.
	states := maps.Clone(g.anchors.states)
	for _, s := range dirty {
		states[s.Tag] = s
	}
	tree, err := stateTree(states)
	if err != nil {
		return false, err
	}
	a, err := g.cfg.Store.AddAnchor(ctx, store.Anchor{LogFrom: from, LogCount: count, LogRoot: logRoot, StateRoot: tree.Root(), States: dirty})
	if err != nil {
		return false, fmt.Errorf("anchors: store: %w", err)
	}
	a.States = nil
	g.anchors.states, g.anchors.tree = states, tree
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
	tx, err := g.sendTx(ctx, func(ctx context.Context) (*types.Transaction, error) {
		return g.cfg.Chain.Anchor(ctx, g.cfg.Relayer, a.LogRoot, a.LogFrom, a.LogCount, a.StateRoot)
	})
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
// batchTree returns the Merkle tree of anchored batch i (entries from, from
// + count), from the anchorState's small cache: an anchored batch never
// changes, and a patient paging through the log asks for proofs in the same
// batches again and again. g.anchorMu held.
func (g *Gateway) batchTree(ctx context.Context, i int, from uint64, count uint64) (*anchor.Tree, error) {
	for _, c := range g.anchors.trees {
		if c.batch == i && uint64(c.tree.Len()) == count {
			return c.tree, nil
		}
	}
	leaves, err := g.logLeaves(ctx, from, count)
	if err != nil {
		return nil, err
	}
	t := anchor.NewTree(leaves)
	g.anchors.trees = append(g.anchors.trees, cachedTree{i, t})
	if len(g.anchors.trees) > maxCachedTrees {
		g.anchors.trees = g.anchors.trees[1:]
	}
	return t, nil
}

// maxCachedTrees bounds the batch trees kept in memory (a batch of 10,000
// entries: about 2 MB with its inner nodes).
const maxCachedTrees = 4

type cachedTree struct {
	batch int
	tree  *anchor.Tree
}

func (g *Gateway) logProofs(ctx context.Context, seqs []uint64) (map[uint64]*gatewayapi.LogProof, error) {
	g.anchorMu.Lock()
	defer g.anchorMu.Unlock()
	if err := g.loadAnchorsLocked(ctx); err != nil {
		return nil, err
	}
	out := map[uint64]*gatewayapi.LogProof{}
	batches := g.anchors.batches
	for _, s := range seqs {
		// The first batch ending after s holds it, if any does (a batch
		// without entries ends where it starts and is passed over).
		i := sort.Search(len(batches), func(i int) bool { return batches[i].LogFrom+batches[i].LogCount > s })
		if i < len(batches) {
			a := batches[i]
			if a.TxHash == "" || s < a.LogFrom {
				continue
			}
			tree, err := g.batchTree(ctx, i, a.LogFrom, a.LogCount)
			if err != nil {
				return nil, err
			}
			p, err := tree.Proof(int(s - a.LogFrom))
			if err != nil {
				return nil, err
			}
			out[s] = &gatewayapi.LogProof{Batch: uint64(i), Index: int(s - a.LogFrom), Count: a.LogCount, Proof: p}
		}
	}
	return out, nil
}
