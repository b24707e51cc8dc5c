package chain

import (
	"bytes"
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
)

// Clique's liveness hole. A signer may seal one block in every ⌊N/2⌋+1.
// When two signers are eligible at once — typically right after others
// crashed, while the crashed ones still fill the "signed recently" window —
// both may seal the same height within one propagation delay. At equal
// difficulty each miner keeps its own block, and if the live signers are
// exactly a quorum, every one of them has now "signed recently" on its own
// fork: nobody can seal the next block, forever. Heal breaks such a stall.

// stallAfter is how long without a new block counts as a stall: a period
// plus the largest out-of-turn delay (⌊N/2⌋+1 half-seconds), twice, with
// slack for a loaded machine.
func stallAfter(st State) time.Duration {
	wiggle := time.Duration(len(st.Nodes)/2+1) * 500 * time.Millisecond
	return 2*(time.Duration(st.Period)*time.Second+wiggle) + 2*time.Second
}

// head is a node's head as Heal needs it.
type head struct {
	provider int
	ipc      string
	node     *Node
	number   uint64
	hash     common.Hash
	td       *big.Int
}

type rpcBlock struct {
	Number hexutil.Uint64 `json:"number"`
	Hash   common.Hash    `json:"hash"`
	TD     *hexutil.Big   `json:"totalDifficulty"`
}

func (n *Node) block(ctx context.Context, number *uint64) (rpcBlock, error) {
	tag := "latest"
	if number != nil {
		tag = hexutil.EncodeUint64(*number)
	}
	var b *rpcBlock
	if err := n.call(ctx, &b, "eth_getBlockByNumber", tag, false); err != nil {
		return rpcBlock{}, err
	}
	if b == nil || b.TD == nil {
		return rpcBlock{}, fmt.Errorf("%s: no block %s", n.URL, tag)
	}
	return *b, nil
}

// pickWinner chooses the head every node should follow: the highest total
// difficulty (what geth itself prefers), then the most nodes, then the
// lowest hash — a choice every supervisor makes the same way.
func pickWinner(heads []head) common.Hash {
	count := map[common.Hash]int{}
	for _, h := range heads {
		count[h.hash]++
	}
	best := heads[0]
	for _, h := range heads[1:] {
		switch c := h.td.Cmp(best.td); {
		case c > 0:
			best = h
		case c < 0:
		case count[h.hash] > count[best.hash]:
			best = h
		case count[h.hash] == count[best.hash] && bytes.Compare(h.hash[:], best.hash[:]) < 0:
			best = h
		}
	}
	return best.hash
}

// Heal looks at the heads of the running nodes and, if they disagree,
// moves every node off the losing fork: miner_stop, debug_setHead to the
// last block it shares with the winner (over IPC), wait until it has
// synced onto the winner's chain (geth syncs with few peers every 10 s),
// miner_start. It returns the providers it moved. Call it only when no
// block came for a while (stallAfter): forks that resolve themselves are
// normal.
func (n *Network) Heal(ctx context.Context) ([]int, error) {
	st := n.State()
	var heads []head
	defer func() {
		for _, h := range heads {
			h.node.Close()
		}
	}()
	for _, ns := range st.Nodes {
		if !alive(ns.PID, n.datadir(&ns)) {
			continue
		}
		c, err := Dial(ctx, ns.RPC)
		if err != nil {
			continue
		}
		b, err := c.block(ctx, nil)
		if err != nil {
			c.Close()
			continue
		}
		heads = append(heads, head{ns.Provider, ns.IPC, c, uint64(b.Number), b.Hash, b.TD.ToInt()})
	}
	if len(heads) < 2 {
		return nil, nil
	}
	win := pickWinner(heads)
	var winner head
	for _, h := range heads {
		if h.hash == win {
			winner = h
		}
	}
	type loser struct {
		head
		ancestor uint64
	}
	var losers []loser
	for _, h := range heads {
		if h.hash == win {
			continue
		}
		ancestor, err := commonAncestor(ctx, h.node, winner.node, min(h.number, winner.number))
		if err != nil {
			return nil, fmt.Errorf("provider %d: %w", h.provider, err)
		}
		if ancestor == h.number {
			continue // merely behind: it is syncing, not forked
		}
		losers = append(losers, loser{h, ancestor})
	}
	if len(losers) == 0 {
		return nil, nil
	}
	// Stop every loser sealing before any rewinds, so none syncs onto
	// another loser's fork or seals a new one, and restart them all at
	// the end whatever happens.
	var moved []int
	for _, l := range losers {
		n.log.Warn("Healing a forked node", "provider", l.provider, "head", l.number, "hash", l.hash,
			"winner", win, "rewind_to", l.ancestor)
		if err := setMining(ctx, l.ipc, false); err != nil {
			return nil, fmt.Errorf("provider %d: %w", l.provider, err)
		}
		defer setMining(context.WithoutCancel(ctx), l.ipc, true)
		moved = append(moved, l.provider)
	}
	for _, l := range losers {
		if err := adminCall(ctx, l.ipc, nil, "debug_setHead", hexutil.Uint64(l.ancestor)); err != nil {
			return moved, fmt.Errorf("provider %d: %w", l.provider, err)
		}
	}
	// geth syncs from a better peer at once with enough peers, otherwise
	// at its next 10 s cycle.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	at := winner.number
	for _, l := range losers {
		for {
			if b, err := l.node.block(ctx, &at); err == nil && b.Hash == winner.hash {
				break
			}
			select {
			case <-ctx.Done():
				return moved, fmt.Errorf("provider %d did not sync onto %s after the rewind: %w", l.provider, winner.hash, ctx.Err())
			case <-time.After(pollEvery):
			}
		}
	}
	return moved, nil
}

// commonAncestor is the highest block number at or below from where a and
// b hold the same block.
func commonAncestor(ctx context.Context, a, b *Node, from uint64) (uint64, error) {
	for k := from; ; k-- {
		x, err := a.block(ctx, &k)
		if err != nil {
			return 0, err
		}
		y, err := b.block(ctx, &k)
		if err != nil {
			return 0, err
		}
		if x.Hash == y.Hash || k == 0 {
			return k, nil
		}
	}
}
