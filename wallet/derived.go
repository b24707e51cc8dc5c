package wallet

import (
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// What the wallet derives from the seed again and again — each page finds
// the relationships (a tag per provider, a delegate per relationship) —
// is derived once per session: a BIP32 derivation costs about a
// millisecond, and a page asks for dozens.

// derived holds the session's derivations.
type derived struct {
	tags      map[uint32]fr.Element
	delegates map[[2]uint32]*delegate.Account
}

// tag returns tag_p, derived once.
func (w *Wallet) tag(p uint32) (fr.Element, error) {
	w.namesMu.Lock()
	t, ok := w.der.tags[p]
	w.namesMu.Unlock()
	if ok {
		return t, nil
	}
	t, err := w.keys.Tag(p)
	if err != nil {
		return t, err
	}
	w.namesMu.Lock()
	w.der.tags[p] = t
	w.namesMu.Unlock()
	return t, nil
}

// delegateAccount returns the delegate at provider p, rotation e, derived once.
func (w *Wallet) delegateAccount(p, e uint32) (*delegate.Account, error) {
	k := [2]uint32{p, e}
	w.namesMu.Lock()
	a, ok := w.der.delegates[k]
	w.namesMu.Unlock()
	if ok {
		return a, nil
	}
	a, err := w.keys.Delegate(p, e)
	if err != nil {
		return nil, err
	}
	w.namesMu.Lock()
	w.der.delegates[k] = a
	w.namesMu.Unlock()
	return a, nil
}

// delegateAddress is the address of the delegate at provider p, rotation e.
func (w *Wallet) delegateAddress(p, e uint32) (common.Address, error) {
	a, err := w.delegateAccount(p, e)
	if err != nil {
		return common.Address{}, err
	}
	return a.Address, nil
}

// The access log, within a session. A relationship's log only grows, and
// the wallet checks every entry it receives against the chain; the
// entries it has checked — the verified prefix, every one anchored and
// included — it keeps for the session and does not read again: it reads
// from the first entry after them. All checks still run over the whole
// log (each entry's hash and anchor, the anchored commitment over all of
// the patient's entries, what the device remembers), so an entry changed
// or removed at the provider after it was read shows the moment the
// provider anchors a commitment that no longer holds it. A kept entry is
// not hashed and proven again while its batch's root on chain is the one
// it was verified under. Each new session
// (unlock) reads the whole log again and checks it against the device's
// memory.

type logKey struct {
	provider uint32
	tag, url string
}

// keptEntry is an entry verified this session, and the anchored batch
// root it was verified under.
type keptEntry struct {
	gatewayapi.LogEntry
	root common.Hash
}

// keptLog returns the verified prefix of r's log read this session.
func (w *Wallet) keptLog(r Relationship) []keptEntry {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.logs[logKey{r.Provider.ID, r.Tag.String(), r.Provider.GatewayURL}]
}

// keepLog keeps the verified prefix of entries (checked, in log order),
// each with the root of its batch in anchors.
func (w *Wallet) keepLog(r Relationship, entries []LogEntry, anchors []chainview.Anchor) {
	n := 0
	for n < len(entries) && entries[n].Verified {
		n++
	}
	prefix := make([]keptEntry, n)
	for i := range prefix {
		prefix[i] = keptEntry{LogEntry: entries[i].LogEntry, root: common.Hash(anchors[entries[i].Anchor.Batch].LogRoot)}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.logs[logKey{r.Provider.ID, r.Tag.String(), r.Provider.GatewayURL}] = prefix
}

// forgetLog drops r's kept log (a check found something wrong: read it
// all again next time).
func (w *Wallet) forgetLog(r Relationship) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.logs, logKey{r.Provider.ID, r.Tag.String(), r.Provider.GatewayURL})
}

// KnownRecords returns the records read from every provider earlier this
// session, as they were read, without asking any gateway (nil before the
// first read). Pages that only name records (the access log) use it.
func (w *Wallet) KnownRecords() []Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []Record
	for _, c := range w.cache {
		out = append(out, c.recs...)
	}
	return out
}
