package wallet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/devstore"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/ledger"
)

// Verification against the provider's anchors, and against what this
// device verified before.
//
// A provider anchors, per batch, one leaf per patient: the patient's
// records history (every version, in change order, as an RFC 6962 tree)
// and a commitment over the patient's access-log entries. Each session the
// wallet checks the leaf of the provider's latest anchor against the
// chain, the records and the access log it received against the leaf, and
// — with a device store (Remember) — the leaf against the one it verified
// last time: the anchored history must extend the remembered one
// (consistency proof), every version and log entry it verified must still
// be there, unchanged. It then remembers what it verified. Anything that
// contradicts the chain or the memory is a Warning: evidence that the
// provider changed or hid what it had committed to. What is merely newer
// than the latest anchor is pending, not a warning.

// WarningKind names what a warning is evidence of.
type WarningKind string

// Warning kinds.
const (
	// RecordChanged: a record version's content differs from the one the
	// provider recorded in its history or this device verified.
	RecordChanged WarningKind = "record-changed"
	// RecordVanished: a record in the history is missing from the records,
	// though no change removed it.
	RecordVanished WarningKind = "record-vanished"
	// RecordWentBack: a record is shown at an older version than the
	// history holds, without a change saying so.
	RecordWentBack WarningKind = "record-went-back"
	// RecordUnknown: a record (version) that is not in the history.
	RecordUnknown WarningKind = "record-unknown"
	// HistoryRewritten: the anchored history does not extend the one this
	// device verified before (an earlier version changed or disappeared).
	HistoryRewritten WarningKind = "history-rewritten"
	// HistoryMismatch: the history the provider sent is not the one it
	// anchored, or is malformed.
	HistoryMismatch WarningKind = "history-mismatch"
	// AnchorMismatch: the provider's proof that the leaf is anchored on
	// chain does not hold.
	AnchorMismatch WarningKind = "anchor-mismatch"
	// LogEntryChanged: an access-log entry differs from its own hash, from
	// the anchored one, or from the one this device verified.
	LogEntryChanged WarningKind = "log-entry-changed"
	// LogEntryDropped: an access-log entry this device verified is missing.
	LogEntryDropped WarningKind = "log-entry-dropped"
	// LogMismatch: the entries sent do not match the anchored commitment
	// over the patient's entries (one the provider anchored is missing, or
	// one was changed or added).
	LogMismatch WarningKind = "log-mismatch"
)

// Warning is evidence that a provider changed, removed or hid something it
// had anchored, or that this device had verified.
type Warning struct {
	Kind    WarningKind
	Message string // for the patient
}

func (w Warning) String() string { return w.Message }

// StateCheck is the result of checking a provider's records.
type StateCheck struct {
	Provider string
	// Anchored: the provider's latest anchor holds a leaf for this
	// relationship, proven under the root on chain.
	Anchored bool
	// Verified: every record received is, byte for byte, the current
	// version in the anchored history, and none is missing.
	Verified bool
	// Pending counts records changed since the latest anchor: verifiable
	// once the provider anchors again.
	Pending  int
	Problem  string    // why not verified, when it is not a warning
	Warnings []Warning // evidence of tampering
	// HistorySize is the anchored history's size (changes).
	HistorySize uint64
}

// LogEntry is an access-log entry with what the wallet could check.
type LogEntry struct {
	gatewayapi.LogEntry
	HashOK   bool   // the entry's hash matches its fields
	Verified bool   // included in a batch anchored on chain, and in the patient's anchored log commitment
	Pending  bool   // not anchored yet
	Problem  string // why not verified
}

// LogReport is the checked access log of one relationship.
type LogReport struct {
	Provider string
	Entries  []LogEntry // in log order
	Problem  string     // why the log commitment could not be checked, when it is not a warning
	Warnings []Warning
}

// anchoredLeaf is a relationship's leaf in the provider's latest anchor,
// checked against the chain.
type anchoredLeaf struct {
	batch   uint64
	history ledger.History
	log     ledger.LogCommitment
}

// checkLeaf checks the patient's leaf the gateway sent against the chain:
// the leaf is the state of the history and log commitment sent with it, it
// is included under the batch's state root, which is the chain's. It
// returns the leaf, or why there is none to check against (problem), or
// the evidence that the proof is false (warnings).
func (w *Wallet) checkLeaf(r Relationship, sa *gatewayapi.StateAnchor) (*anchoredLeaf, string, []Warning) {
	name := r.Provider.Name
	if sa == nil {
		return nil, "not anchored yet: " + name + " has not anchored your records since they were created", nil
	}
	anchors := w.view.Anchors(r.Provider.ID)
	if sa.Batch >= uint64(len(anchors)) {
		return nil, fmt.Sprintf("%s's latest anchor (batch %d) is not on the chain this app reads yet", name, sa.Batch), nil
	}
	bad := func(why string) (*anchoredLeaf, string, []Warning) {
		return nil, "", []Warning{{AnchorMismatch, fmt.Sprintf("%s's proof that your records are anchored on the chain does not hold: %s.", name, why)}}
	}
	a := anchors[sa.Batch]
	var tag [32]byte
	r.Tag.FillBytes(tag[:])
	switch {
	case common.Hash(a.StateRoot) != sa.StateRoot:
		return bad(fmt.Sprintf("the state root it sent differs from the one on chain for batch %d", sa.Batch))
	case anchor.Verify(sa.StateRoot, anchor.StateLeaf{Tag: tag, State: sa.State}.Hash(), sa.Index, sa.Count, sa.Proof) != nil:
		return bad("your entry is not under the anchored root")
	}
	if sa.History == nil || sa.Log == nil {
		return nil, fmt.Sprintf("%s's latest anchor predates record histories; verifiable after its next anchor", name), nil
	}
	leaf := &anchoredLeaf{batch: sa.Batch,
		history: ledger.History{Size: sa.History.Size, Root: sa.History.Root},
		log:     ledger.LogCommitment{Through: sa.Log.Through, Count: sa.Log.Count, Head: sa.Log.Head}}
	if ledger.StateHashV2(leaf.history, leaf.log) != sa.State {
		return bad("the anchored entry is not the history and access log it sent")
	}
	if n := len(anchors) - 1; sa.Batch < uint64(n) {
		// A gateway answering just before it records its newest batch as
		// published; or one hiding it. Not proof of tampering either way.
		return leaf, fmt.Sprintf("%s showed anchor %d, but the chain has %d; verified against the older one", name, sa.Batch, n), nil
	}
	return leaf, "", nil
}

// VerifyRecords checks the records read from provider p (recs may hold
// other providers' records too) against the provider's latest anchor and
// what this device verified before, and remembers what it verified.
func (w *Wallet) VerifyRecords(ctx context.Context, p uint32, recs []Record) (StateCheck, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return StateCheck{}, err
	}
	name := r.Provider.Name
	sc := StateCheck{Provider: name}
	mem := w.recall(r)
	var st gatewayapi.State
	if _, err := w.signedGet(ctx, r, fmt.Sprintf("/patient/state?from=%d", mem.History.Size), &st); err != nil {
		return sc, err
	}
	leaf, problem, warns := w.checkLeaf(r, st.Anchor)
	sc.Problem, sc.Warnings = problem, warns
	warn := func(k WarningKind, format string, args ...any) {
		sc.Warnings = append(sc.Warnings, Warning{k, fmt.Sprintf(format, args...)})
	}

	// The anchored history must extend the one verified before.
	m := mem.History.Size
	base := m // the history is read from here on; what comes before is remembered
	if leaf != nil {
		sc.Anchored, sc.HistorySize = true, leaf.history.Size
		n := leaf.history.Size
		switch {
		case n < m:
			warn(HistoryRewritten, "%s's anchored history of your records is shorter than the one this device verified before (%d changes, now %d): records were removed from it.", name, m, n)
			base = 0
		case m > 0 && (st.Anchor.From != m && m < n || anchor.VerifyConsistency(int(m), int(n), mem.History.Root, leaf.history.Root, st.Anchor.Consistency) != nil):
			warn(HistoryRewritten, "%s changed records this device had already verified: its anchored history no longer extends the one verified before (an earlier version was changed or removed).", name)
			base = 0
		}
	}
	hist, err := w.history(ctx, r, base)
	if err != nil {
		return sc, err
	}

	// The history sent must be the anchored one: the remembered part goes
	// on from its frontier, a fresh one is hashed from its first change.
	var f anchor.Frontier
	if base > 0 {
		if f, err = anchor.ResumeFrontier(m, mem.History.Frontier); err != nil {
			return sc, fmt.Errorf("wallet: this device's memory of %s: %w", name, err)
		}
	}
	for i, e := range hist {
		if e.Seq != base+uint64(i)+1 {
			warn(HistoryMismatch, "The record history %s sent is malformed: change %d where %d should be.", name, e.Seq, base+uint64(i)+1)
			hist = hist[:i]
			break
		}
	}
	if leaf != nil && leaf.history.Size >= base {
		n := leaf.history.Size
		for _, e := range hist {
			if e.Seq > n {
				break
			}
			f.Append(ledger.HistoryLeaf(e))
		}
		if f.Size() != n || f.Root() != common.Hash(leaf.history.Root) {
			warn(HistoryMismatch, "The record history %s sent does not match what it anchored on the chain.", name)
		}
	}

	// Every version: remembered (verified), or in the history sent.
	versions := map[string][]version{}
	if base > 0 {
		for k, vs := range mem.Versions {
			versions[k] = append([]version(nil), vs...)
		}
	}
	for _, e := range hist {
		k := e.Type + "/" + e.ID
		vs := versions[k]
		if want := int64(len(vs)) + 1; e.Version != want {
			warn(HistoryMismatch, "The record history %s sent lists version %d of %s where version %d should be.", name, e.Version, k, want)
			continue
		}
		versions[k] = append(vs, version{V: e.Version, Seq: e.Seq, SHA: e.SHA256})
	}
	// What the memory says must still be so, whatever the history says now.
	for k, vs := range mem.Versions {
		for _, v := range vs {
			got := versions[k]
			if int(v.V) > len(got) || got[v.V-1].SHA != v.SHA || got[v.V-1].Seq != v.Seq {
				warn(HistoryRewritten, "%s version %d, which this device verified before, is no longer what %s recorded.", label(k), v.V, name)
			}
		}
	}

	// The records received against the history: each one the newest
	// version, byte for byte, and none missing. Changes after the records
	// were read (past snapshot) may be missing from them.
	size := base + uint64(len(hist))
	snapshot, ok := w.recordsSeq(r)
	if !ok || snapshot > size {
		snapshot = size
	}
	anchoredSize := uint64(0)
	if leaf != nil {
		anchoredSize = leaf.history.Size
	}
	shown := map[string]bool{}
	for _, rec := range recs {
		if rec.Provider.ID != p || rec.Type == "" {
			continue
		}
		k := rec.Type + "/" + rec.ID
		shown[k] = true
		sum := sha256.Sum256(rec.Raw)
		if mv := mem.Versions[k]; int(rec.Version) >= 1 && int(rec.Version) <= len(mv) && mv[rec.Version-1].SHA != sum {
			warn(RecordChanged, "%s (version %d) is not what this device verified before at %s: its content changed.", label(k), rec.Version, name)
			continue
		}
		vs := versions[k]
		switch {
		case rec.Version < 1 || int(rec.Version) > len(vs):
			warn(RecordUnknown, "%s (version %d) is shown but is not in %s's history of your records.", label(k), rec.Version, name)
			continue
		case vs[rec.Version-1].SHA != sum:
			warn(RecordChanged, "%s (version %d) is not what %s recorded: its content changed without a new version.", label(k), rec.Version, name)
			continue
		}
		newest := vs[len(vs)-1]
		if rec.Version < newest.V {
			if vs[rec.Version].Seq <= snapshot {
				warn(RecordWentBack, "%s is shown at version %d, but %s recorded version %d: it went back to an older version.", label(k), rec.Version, name, newest.V)
			} else {
				sc.Pending++ // changed while the records were read
			}
			continue
		}
		if newest.Seq > anchoredSize {
			sc.Pending++
		}
	}
	for k, vs := range versions {
		if !shown[k] && len(vs) > 0 && vs[0].Seq <= snapshot {
			warn(RecordVanished, "%s is missing from %s's records, though no change removed it.", label(k), name)
			shown[k] = true // once
		}
	}
	for k := range mem.Versions { // verified before, whatever the history says now
		if !shown[k] {
			warn(RecordVanished, "%s, which this device verified before, is missing from %s's records.", label(k), name)
		}
	}
	sort.SliceStable(sc.Warnings, func(i, j int) bool { return sc.Warnings[i].Message < sc.Warnings[j].Message })
	switch {
	case len(sc.Warnings) > 0:
		sc.Problem = ""
	case leaf == nil:
	case sc.Pending > 0:
		sc.Problem = fmt.Sprintf("%d record(s) changed since %s's latest anchor: verifiable after its next one", sc.Pending, name)
	default:
		sc.Verified = sc.Problem == ""
	}

	// Remember what the anchor proved, unless anything contradicted it:
	// a warning stays until someone looks into it.
	if len(sc.Warnings) == 0 && leaf != nil && leaf.history.Size >= m {
		err := w.remember(r, func(mem *memory) bool {
			if mem.Versions != nil && mem.History.Size == f.Size() && mem.History.Root == f.Root() {
				return false // the versions up to that size are what was remembered
			}
			mem.History = rememberedHistory{Size: f.Size(), Root: f.Root(), Frontier: f.Nodes()}
			mem.Versions = map[string][]version{}
			for k, vs := range versions {
				for _, v := range vs {
					if v.Seq <= f.Size() {
						mem.Versions[k] = append(mem.Versions[k], v)
					}
				}
			}
			return true
		})
		if err != nil {
			return sc, err
		}
	}
	return sc, nil
}

// label turns "Observation/o1" into "Observation o1".
func label(key string) string { return strings.Replace(key, "/", " ", 1) }

// history reads the relationship's records history after size from, every
// page.
func (w *Wallet) history(ctx context.Context, r Relationship, from uint64) ([]ledger.HistoryEntry, error) {
	var out []ledger.HistoryEntry
	for page := 0; ; page++ {
		var hp gatewayapi.HistoryPage
		if _, err := w.signedGet(ctx, r, fmt.Sprintf("/patient/history?from=%d", from), &hp); err != nil {
			return out, err
		}
		for _, e := range hp.Entries {
			out = append(out, e.Ledger())
		}
		if !hp.More || len(hp.Entries) == 0 {
			return out, nil
		}
		if hp.Next != from+uint64(len(hp.Entries)) || page >= maxPages {
			return out, fmt.Errorf("%s: history page after %d points to %d", r.Provider.Name, from, hp.Next)
		}
		from = hp.Next
	}
}

// logEntries reads every entry of the relationship's access log, every
// page (after the verified prefix kept this session).
func (w *Wallet) logEntries(ctx context.Context, r Relationship) ([]gatewayapi.LogEntry, error) {
	// The prefix verified earlier this session is not read again (derived.go).
	kept := w.keptLog(r)
	out := make([]gatewayapi.LogEntry, len(kept))
	for i, k := range kept {
		out[i] = k.LogEntry
	}
	from := uint64(0)
	if n := len(out); n > 0 {
		from = out[n-1].Seq + 1
	}
	for {
		var lp gatewayapi.LogPage
		if _, err := w.signedGet(ctx, r, fmt.Sprintf("/patient/log?from=%d", from), &lp); err != nil {
			return out, err
		}
		for _, e := range lp.Entries {
			if e.Seq < from || (len(out) > 0 && e.Seq <= out[len(out)-1].Seq) {
				return out, fmt.Errorf("%s: access-log entry %d out of order", r.Provider.Name, e.Seq)
			}
			out = append(out, e)
		}
		if !lp.More || len(lp.Entries) == 0 {
			return out, nil
		}
		if lp.Next <= from || len(out) >= maxPages*gatewayapi.MaxPage {
			return out, fmt.Errorf("%s: access-log page after %d points back to %d, or the log is too long", r.Provider.Name, from, lp.Next)
		}
		from = lp.Next
	}
}

// maxPages bounds how many pages of history or log the wallet reads from
// one gateway (about 10 million entries).
const maxPages = 10000

// AccessLog fetches the whole access log of the relationship at p and
// verifies it: each entry against its hash and its inclusion in the batch
// anchored on chain; all of them together against the anchored commitment
// over the patient's entries (so an anchored entry cannot go missing); and
// against the entries this device verified before, which it then
// remembers. Entries of the newest, unanchored batch are pending.
func (w *Wallet) AccessLog(ctx context.Context, p uint32) (LogReport, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return LogReport{}, err
	}
	name := r.Provider.Name
	rep := LogReport{Provider: name}
	warn := func(k WarningKind, format string, args ...any) {
		rep.Warnings = append(rep.Warnings, Warning{k, fmt.Sprintf(format, args...)})
	}
	mem := w.recall(r)
	entries, err := w.logEntries(ctx, r)
	if err != nil {
		return rep, err
	}
	var st gatewayapi.State // read after the log: an entry's batch is never newer than this leaf
	if _, err := w.signedGet(ctx, r, "/patient/state", &st); err != nil {
		return rep, err
	}
	leaf, problem, warns := w.checkLeaf(r, st.Anchor)
	rep.Problem, rep.Warnings = problem, warns

	anchors := w.view.Anchors(p)
	bySeq := map[uint64]common.Hash{}
	rep.Entries = make([]LogEntry, len(entries))
	kept := w.keptLog(r)
	for i, e := range entries {
		bySeq[e.Seq] = e.Hash
		// Verified earlier this session under the batch root still on chain:
		// the same entry, the same proof (derived.go).
		if i < len(kept) && kept[i].Seq == e.Seq && kept[i].Hash == e.Hash && e.Anchor != nil && e.Anchor.Batch < uint64(len(anchors)) &&
			common.Hash(anchors[e.Anchor.Batch].LogRoot) == kept[i].root && (leaf == nil || e.Seq < leaf.log.Through) {
			rep.Entries[i] = LogEntry{LogEntry: e, HashOK: true, Verified: true}
			continue
		}
		v := LogEntry{LogEntry: e, HashOK: ledger.EntryHash(e.Prev, e.Ledger()) == e.Hash}
		switch {
		case !v.HashOK:
			v.Problem = "changed after it was written: it does not match its hash"
			warn(LogEntryChanged, "Access-log entry #%d at %s was changed after it was written.", e.Seq, name)
		case e.Anchor == nil:
			v.Pending, v.Problem = true, "not anchored yet"
		case e.Anchor.Batch >= uint64(len(anchors)):
			v.Pending, v.Problem = true, "its batch is not on the chain this app reads yet"
		default:
			a := anchors[e.Anchor.Batch]
			switch {
			case a.FromSeq+uint64(e.Anchor.Index) != e.Seq || a.Count != e.Anchor.Count:
				v.Problem = "its position disagrees with the anchored batch"
				warn(LogEntryChanged, "Access-log entry #%d at %s is not where the provider anchored it.", e.Seq, name)
			case anchor.Verify(a.LogRoot, anchor.LeafHash(e.Hash[:]), e.Anchor.Index, int(a.Count), e.Anchor.Proof) != nil:
				v.Problem = "not the entry that was anchored"
				warn(LogEntryChanged, "Access-log entry #%d at %s is not the one it anchored on the chain.", e.Seq, name)
			case leaf != nil && e.Seq >= leaf.log.Through:
				v.Problem = "anchored, but not in your anchored log"
				warn(LogMismatch, "Access-log entry #%d at %s is anchored but missing from the log it anchored for you.", e.Seq, name)
			default:
				v.Verified = true
			}
		}
		rep.Entries[i] = v
	}
	// What this device verified before must still be there, unchanged.
	var seqs []uint64
	for s := range mem.Entries {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, s := range seqs {
		switch h, ok := bySeq[s]; {
		case !ok:
			warn(LogEntryDropped, "Access-log entry #%d at %s, which this device verified before, is missing.", s, name)
		case h != mem.Entries[s]:
			warn(LogEntryChanged, "Access-log entry #%d at %s, which this device verified before, was changed.", s, name)
		}
	}
	// The anchored commitment over the patient's entries: all of those
	// before its end, exactly, in order — and it only grows.
	if leaf != nil {
		var c ledger.LogCommitment
		for _, e := range entries {
			if e.Seq < leaf.log.Through {
				c = c.Extend(e.Seq, e.Hash)
			}
		}
		switch {
		case leaf.log.Through < mem.Log.Through || leaf.log.Count < mem.Log.Count:
			warn(LogMismatch, "%s's anchored access log for you is shorter than the one this device verified before.", name)
		case c.Count < leaf.log.Count:
			warn(LogMismatch, "%d access-log entr%s about you that %s anchored %s missing.", leaf.log.Count-c.Count, plural(leaf.log.Count-c.Count, "y", "ies"), name, plural(leaf.log.Count-c.Count, "is", "are"))
		case c.Count != leaf.log.Count || c.Head != leaf.log.Head:
			warn(LogMismatch, "The access log %s sent does not match what it anchored for you: entries were changed, added or removed.", name)
		}
	}
	if len(rep.Warnings) > 0 {
		rep.Problem = ""
		w.forgetLog(r)
	} else {
		w.keepLog(r, rep.Entries, anchors)
	}
	if len(rep.Warnings) == 0 && leaf != nil {
		err := w.remember(r, func(mem *memory) bool {
			l := rememberedLog{Through: leaf.log.Through, Count: leaf.log.Count, Head: leaf.log.Head}
			changed := mem.Log != l
			mem.Log = l
			if mem.Entries == nil {
				mem.Entries = map[uint64]common.Hash{}
			}
			for _, e := range rep.Entries {
				if _, ok := mem.Entries[e.Seq]; e.Verified && !ok {
					mem.Entries[e.Seq], changed = e.Hash, true
				}
			}
			return changed
		})
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// --- what this device remembers ----------------------------------------------------

// memories is the wallet's access to its device store, and what it read
// from it (decoded once per session, written through).
type memories struct {
	mu    sync.Mutex
	store *devstore.Store
	read  map[string]memory
	// session holds the sections a wallet without a store keeps for the
	// session only (names.go).
	session map[string][]byte
}

// memory is what this device verified of one relationship (provider, tag):
// the anchored history and log commitment it last verified, every record
// version and access-log entry it verified.
type memory struct {
	History  rememberedHistory      `json:"history"`
	Versions map[string][]version   `json:"versions"` // "Type/id" → versions 1, 2, …
	Log      rememberedLog          `json:"log"`
	Entries  map[uint64]common.Hash `json:"entries"` // access-log seq → entry hash
}

type rememberedHistory struct {
	Size     uint64        `json:"size"`
	Root     common.Hash   `json:"root"`
	Frontier []common.Hash `json:"frontier"` // anchor.Frontier's nodes at Size
}

type version struct {
	V   int64       `json:"v"`
	Seq uint64      `json:"s"` // the change that wrote it
	SHA common.Hash `json:"h"` // SHA-256 of its JSON
}

type rememberedLog struct {
	Through uint64      `json:"through"`
	Count   uint64      `json:"count"`
	Head    common.Hash `json:"head"`
}

// Remember makes the wallet remember, in s, what it verified at each
// provider, and check each session against it. Without it (viewers,
// tests) each session checks against the chain alone.
func (w *Wallet) Remember(s *devstore.Store) {
	w.mem.mu.Lock()
	w.mem.store, w.mem.read = s, map[string]memory{}
	w.mem.mu.Unlock()
}

// memoryName is the relationship's section: per network (chain, contract),
// provider and tag — a rotation keeps it.
func (w *Wallet) memoryName(r Relationship) string {
	return fmt.Sprintf("verified/%s/%s/%d/%#x", w.d.ChainID, w.d.Relationships.Hex(), r.Provider.ID, r.Tag)
}

// recallLocked returns what this device remembers of r (nothing without a
// store). The maps are shared: never change them in place.
func (w *Wallet) recallLocked(r Relationship) memory {
	if w.mem.store == nil {
		return memory{}
	}
	name := w.memoryName(r)
	if m, ok := w.mem.read[name]; ok {
		return m
	}
	var m memory
	if _, err := w.mem.store.Get(name, &m); err != nil {
		m = memory{} // a section this version cannot read: start afresh
	}
	w.mem.read[name] = m
	return m
}

// recall returns what this device remembers of r, to read only.
func (w *Wallet) recall(r Relationship) memory {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	return w.recallLocked(r)
}

// remember applies update to (a copy of) what this device remembers of r
// and, if update reports a change, saves it (nothing without a store).
func (w *Wallet) remember(r Relationship, update func(*memory) bool) error {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	if w.mem.store == nil {
		return nil
	}
	m := w.recallLocked(r)
	m.Versions, m.Entries = maps.Clone(m.Versions), maps.Clone(m.Entries)
	if !update(&m) {
		return nil
	}
	if err := w.mem.store.Put(w.memoryName(r), m); err != nil {
		return fmt.Errorf("wallet: remembering what was verified at %s: %w", r.Provider.Name, err)
	}
	w.mem.read[w.memoryName(r)] = m
	return nil
}

// recordsSeq returns the change number the relationship's cached records
// were read at: every change up to it is in them.
func (w *Wallet) recordsSeq(r Relationship) (uint64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.cache[recordsKey{provider: r.Provider.ID, tag: r.Tag.String(), url: r.Provider.GatewayURL}]
	return c.seq, ok
}
