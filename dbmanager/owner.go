package dbmanager

import (
	"fmt"
	"strconv"

	"github.com/ethereum/go-ethereum/common"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// What the owner's client checks its records against: the patient's leaf
// in the latest published records-state tree (with the history and log
// commitment it commits to, and a consistency proof from the history size
// the client verified before), and the history itself, paged. Owner only;
// these answers are not logged (like the change feed and the log itself).

// ownerPage is the most entries the owner's pages carry (one more is read
// to tell whether another page follows, so it stays below the store's
// MaxCount).
const ownerPage = gatewayapi.MaxPage

var _ = [store.MaxCount - ownerPage - 1]struct{}{} // compile-time: ownerPage < store.MaxCount

// pageParams reads ?from= (a number, default 0) and ?limit= (1…ownerPage,
// default ownerPage).
func pageParams(c *fiber.Ctx, what string) (from uint64, limit int, err error) {
	from, err = strconv.ParseUint(c.Query("from", "0"), 10, 64)
	if err != nil {
		return 0, 0, badRequest("from must be %s", what)
	}
	limit = ownerPage
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > ownerPage {
			return 0, 0, badRequest("limit must be a number from 1 to %d", ownerPage)
		}
		limit = n
	}
	return from, limit, nil
}

// patientState answers the hash of the owner's current record set and,
// once anchored, the patient's leaf in the latest published records-state
// tree with its inclusion proof, what the leaf commits to, and a
// consistency proof from ?from= (a history size the client verified) to
// the anchored history.
func (g *Gateway) patientState(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "state")
	if err != nil {
		return err
	}
	from, err := strconv.ParseUint(c.Query("from", "0"), 10, 64)
	if err != nil {
		return badRequest("from must be a history size")
	}
	ctx := c.UserContext()
	st, err := g.cfg.Store.State(ctx, r.patient)
	if err != nil {
		return storeError(err)
	}
	out := gatewayapi.State{Hash: st.Hash, Seq: st.Seq, Count: st.Count, Dirty: st.Dirty}
	var tag store.Tag
	r.tag.FillBytes(tag[:])
	sa, err := g.stateAnchor(c, tag)
	if err != nil {
		return err
	}
	if sa != nil && sa.History != nil && from > 0 && from < sa.History.Size {
		leaves, err := g.historyLeaves(c, r.patient, sa.History.Size)
		if err != nil {
			return err
		}
		if sa.Consistency, err = anchor.ConsistencyProof(leaves, int(from)); err != nil {
			return err
		}
		sa.From = from
	}
	out.Anchor = sa
	return c.JSON(out)
}

// stateAnchor returns the patient's leaf in the latest published anchor,
// nil if there is none yet or it has no leaf for tag.
func (g *Gateway) stateAnchor(c *fiber.Ctx, tag store.Tag) (*gatewayapi.StateAnchor, error) {
	g.anchorMu.Lock()
	defer g.anchorMu.Unlock()
	if err := g.loadAnchorsLocked(c.UserContext()); err != nil {
		return nil, err
	}
	n := len(g.anchors.batches)
	if n == 0 || g.anchors.batches[n-1].TxHash == "" {
		return nil, nil
	}
	tree, err := g.stateTreeLocked()
	if err != nil {
		return nil, err
	}
	leaf, i, p, err := tree.Proof(tag)
	if err != nil {
		return nil, nil // not anchored yet
	}
	sa := &gatewayapi.StateAnchor{Batch: uint64(n - 1), StateRoot: tree.Root(), State: leaf.State, Index: i, Count: tree.Len(), Proof: p}
	if ps := g.anchors.states[tag]; !ps.Legacy {
		sa.History = &gatewayapi.History{Size: ps.History.Size, Root: ps.History.Root}
		sa.Log = &gatewayapi.LogCommitment{Through: ps.Log.Through, Count: ps.Log.Count, Head: ps.Log.Head}
	}
	return sa, nil
}

// historyLeaves reads the leaf hashes of the patient's first size changes.
func (g *Gateway) historyLeaves(c *fiber.Ctx, patient string, size uint64) ([]common.Hash, error) {
	leaves := make([]common.Hash, 0, size)
	for uint64(len(leaves)) < size {
		page, err := g.cfg.Store.History(c.UserContext(), patient, uint64(len(leaves)), int(min(store.MaxCount, size-uint64(len(leaves)))))
		if err != nil {
			return nil, fmt.Errorf("history of the anchored state: %w", err)
		}
		if len(page) == 0 {
			return nil, fmt.Errorf("the history ends at %d changes, the anchor has %d", len(leaves), size)
		}
		for _, e := range page {
			leaves = append(leaves, store.HistoryLeaf(e))
		}
	}
	return leaves, nil
}

// patientHistory answers a page of the owner's records history: the
// version each change wrote, from the history size ?from= on.
func (g *Gateway) patientHistory(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "history")
	if err != nil {
		return err
	}
	from, limit, err := pageParams(c, "a history size")
	if err != nil {
		return err
	}
	entries, err := g.cfg.Store.History(c.UserContext(), r.patient, from, limit+1)
	if err != nil {
		return storeError(err)
	}
	out := gatewayapi.HistoryPage{More: len(entries) > limit, Entries: make([]gatewayapi.HistoryEntry, 0, min(len(entries), limit))}
	for _, e := range entries[:min(len(entries), limit)] {
		out.Entries = append(out.Entries, gatewayapi.HistoryEntry{Seq: e.Seq, Type: e.Type, ID: e.ID, Version: e.Version, SHA256: e.SHA256})
	}
	out.Next = from + uint64(len(out.Entries))
	return c.JSON(out)
}

// changes lists the patient's new record versions since a sequence number
// (notifications by authenticated poll). Owner only.
func (g *Gateway) changes(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "changes")
	if err != nil {
		return err
	}
	since, err := strconv.ParseUint(c.Query("since", "0"), 10, 64)
	if err != nil {
		return badRequest("since must be a sequence number")
	}
	page := store.MaxCount - 1 // one more tells whether another page follows
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > page {
			return badRequest("limit must be a number from 1 to %d", page)
		}
		page = n
	}
	// The patient's newest change, read first: a client that reads the
	// records next and later asks for changes since it misses nothing.
	p, err := g.cfg.Store.Patient(c.UserContext(), r.patient)
	if err != nil {
		return storeError(err)
	}
	ch, err := g.cfg.Store.Changes(c.UserContext(), r.patient, since, page+1)
	if err != nil {
		return storeError(err)
	}
	more := len(ch) > page
	if more {
		ch = ch[:page]
	}
	out := make([]fiber.Map, len(ch))
	for i, x := range ch {
		out[i] = fiber.Map{"seq": x.Seq, "type": x.Type, "id": x.ID, "version": x.Version, "time": x.Time}
	}
	return c.JSON(fiber.Map{"changes": out, "more": more, "latest": p.Seq})
}

// patientLog returns a page of the access-log entries about the owner's
// records, from seq ?from= on; More says another page follows at Next.
func (g *Gateway) patientLog(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "log")
	if err != nil {
		return err
	}
	from, limit, err := pageParams(c, "a sequence number")
	if err != nil {
		return err
	}
	entries, err := g.cfg.Store.PatientLog(c.UserContext(), r.patient, from, limit+1)
	if err != nil {
		return storeError(err)
	}
	more := len(entries) > limit
	if more {
		entries = entries[:limit]
	}
	seqs := make([]uint64, len(entries))
	for i, e := range entries {
		seqs[i] = e.Seq
	}
	proofs, err := g.logProofs(c.UserContext(), seqs)
	if err != nil {
		return err
	}
	out := gatewayapi.LogPage{Entries: make([]gatewayapi.LogEntry, len(entries)), More: more, Next: from}
	for i, e := range entries {
		out.Entries[i] = gatewayapi.FromLedger(e, proofs[e.Seq])
	}
	if n := len(entries); n > 0 {
		out.Next = entries[n-1].Seq + 1
	}
	return c.JSON(out)
}
