package wallet

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/ledger"
)

// What a person calls the people they share with, and who an access-log
// entry's actor is, in one place: every page names a grantee the same way.
//
// Names are the patient's own words ("Dr Lee, cardiology"). They are kept
// only in the encrypted device store (Remember), never in a grant, a
// request or a log: the chain and the gateways see a grant id or an
// address, nothing more. A device without a store (tests, a viewer that
// never remembers) keeps them for the session only.

// MaxNameLen bounds a name, in characters.
const MaxNameLen = 80

// ErrBadName says a name is empty, too long or holds control characters.
var ErrBadName = errors.New("give the person a name of 1 to 80 characters (letters, digits, spaces, punctuation)")

// CleanName trims a name typed by the patient and checks it.
func CleanName(s string) (string, error) {
	s = strings.Join(strings.Fields(s), " ")
	if s == "" || utf8.RuneCountInString(s) > MaxNameLen || !utf8.ValidString(s) {
		return "", ErrBadName
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return "", ErrBadName
		}
	}
	return s, nil
}

// refKey is a grantee's key in the names section.
func refKey(r GrantRef) string { return fmt.Sprintf("%d:%s", r.Kind, hexutil.Encode(r.Grantee[:])) }

// section names a device-store section of this network.
func (w *Wallet) section(kind string) string {
	return fmt.Sprintf("%s/%s/%s", kind, w.d.ChainID, w.d.Relationships.Hex())
}

// getSection reads a section of the device store into v (the session's
// copy without a store).
func (w *Wallet) getSection(name string, v any) error {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	if w.mem.store == nil {
		raw, ok := w.mem.session[name]
		if !ok {
			return nil
		}
		return json.Unmarshal(raw, v)
	}
	_, err := w.mem.store.Get(name, v)
	return err
}

// putSection writes a section (the session's copy without a store).
func (w *Wallet) putSection(name string, v any) error {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	if w.mem.store == nil {
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if w.mem.session == nil {
			w.mem.session = map[string][]byte{}
		}
		w.mem.session[name] = raw
		return nil
	}
	return w.mem.store.Put(name, v)
}

// Names returns every name the patient gave a grantee.
func (w *Wallet) Names() (map[GrantRef]string, error) {
	var raw map[string]string
	if err := w.getSection(w.section("names"), &raw); err != nil {
		return nil, fmt.Errorf("wallet: the names on this device: %w", err)
	}
	out := make(map[GrantRef]string, len(raw))
	for k, name := range raw {
		kind, g, ok := strings.Cut(k, ":")
		b, err := hexutil.Decode(g)
		if !ok || err != nil || len(b) != 32 {
			continue
		}
		var ref GrantRef
		fmt.Sscanf(kind, "%d", &ref.Kind)
		copy(ref.Grantee[:], b)
		out[ref] = name
	}
	return out, nil
}

// SetNames records names for grantees (one write).
func (w *Wallet) SetNames(names map[GrantRef]string) error {
	w.namesMu.Lock()
	defer w.namesMu.Unlock()
	var raw map[string]string
	if err := w.getSection(w.section("names"), &raw); err != nil {
		return fmt.Errorf("wallet: the names on this device: %w", err)
	}
	if raw == nil {
		raw = map[string]string{}
	}
	changed := false
	for ref, name := range names {
		n, err := CleanName(name)
		if err != nil {
			return err
		}
		if raw[refKey(ref)] != n {
			raw[refKey(ref)], changed = n, true
		}
	}
	if !changed {
		return nil
	}
	if err := w.putSection(w.section("names"), raw); err != nil {
		return fmt.Errorf("wallet: keeping the names on this device: %w", err)
	}
	return nil
}

// Seen returns, per provider, the newest record change the patient has
// seen (the "new" badges count what came after).
func (w *Wallet) Seen() (map[uint32]uint64, error) {
	var seen map[uint32]uint64
	if err := w.getSection(w.section("seen"), &seen); err != nil {
		return nil, fmt.Errorf("wallet: what was seen on this device: %w", err)
	}
	if seen == nil {
		seen = map[uint32]uint64{}
	}
	return seen, nil
}

// MarkSeen records that the patient has seen provider p's changes up to seq
// (never going back).
func (w *Wallet) MarkSeen(p uint32, seq uint64) error {
	w.namesMu.Lock()
	defer w.namesMu.Unlock()
	seen, err := w.Seen()
	if err != nil {
		return err
	}
	if seen[p] >= seq {
		return nil
	}
	seen[p] = seq
	if err := w.putSection(w.section("seen"), seen); err != nil {
		return fmt.Errorf("wallet: keeping what was seen on this device: %w", err)
	}
	return nil
}

// Who is a grantee or an access-log actor as every page shows it.
type Who struct {
	// Key identifies the person across pages and providers (a filter's
	// value): "you", "1:0x…" (an address grantee), "2:0x…" (an anonymous
	// grant id), "staff:P:id", "system:P".
	Key   string
	Name  string // the patient's name for them, "you", or a plain description
	Kind  string // how they read: "anonymous viewer", "by address", "staff", …
	ID    string // the short public id, when there is one
	You   bool
	Named bool
}

// Directory answers who a grantee or an actor is: the names kept on this
// device, and this seed's own delegates at every rotation ("you").
type Directory struct {
	names map[GrantRef]string
	you   map[common.Address]bool
}

// Directory builds the directory for the patient's relationships rels.
func (w *Wallet) Directory(rels []Relationship) (*Directory, error) {
	names, err := w.Names()
	if err != nil {
		return nil, err
	}
	d := &Directory{names: names, you: map[common.Address]bool{}}
	for _, r := range rels {
		for e := uint32(0); e <= r.Rotation; e++ {
			a, err := w.delegateAddress(r.Provider.ID, e)
			if err != nil {
				return nil, err
			}
			d.you[a] = true
		}
	}
	return d, nil
}

func short(s string) string {
	if len(s) <= 14 {
		return s
	}
	return s[:8] + "…" + s[len(s)-4:]
}

// Grantee says who a grant's grantee is.
func (d *Directory) Grantee(kind access.GranteeKind, grantee [32]byte) Who {
	ref := GrantRef{Kind: kind, Grantee: grantee}
	w := Who{Key: refKey(ref)}
	if kind == access.AddressGrantee {
		addr := common.BytesToAddress(grantee[12:])
		w.Kind, w.ID = "by address", short(addr.Hex())
		if d.you[addr] {
			w.Key, w.Name, w.You, w.Kind = "you", "you", true, "your own key"
			return w
		}
	} else {
		w.Kind, w.ID = "anonymous viewer", short(hexutil.Encode(grantee[:]))
	}
	if n, ok := d.names[ref]; ok {
		w.Name, w.Named = n, true
	} else if kind == access.AddressGrantee {
		w.Name = "unnamed reader"
	} else {
		w.Name = "unnamed anonymous viewer"
	}
	return w
}

// Actor says who an access-log entry's actor at provider p is.
func (d *Directory) Actor(p uint32, provider string, kind uint8, id string) Who {
	switch ledger.ActorKind(kind) {
	case ledger.ActorPatient:
		return Who{Key: "you", Name: "you", Kind: "your own key", You: true}
	case ledger.ActorGrantee:
		if common.IsHexAddress(id) {
			addr := common.HexToAddress(id)
			if d.you[addr] {
				return Who{Key: "you", Name: "you", Kind: "your own key", You: true}
			}
			return d.Grantee(access.AddressGrantee, contracts.AddressGrantee(addr))
		}
	case ledger.ActorAnonymous:
		if b, err := hexutil.Decode(id); err == nil && len(b) == 32 {
			return d.Grantee(access.AnonymousGrantee, [32]byte(b))
		}
	case ledger.ActorApp:
		return Who{Key: fmt.Sprintf("app:%d:%s", p, id), Name: "app " + id, Kind: "an app you approved", ID: id}
	case ledger.ActorStaff:
		if client, ok := strings.CutPrefix(id, gatewayapi.BackendActorPrefix); ok && client != "" {
			// A system of the provider's with its own key (a lab feed, a
			// device), not a person at a desk.
			return Who{Key: fmt.Sprintf("staff:%d:%s", p, id), Name: provider + " system " + client, Kind: "the provider's system", ID: client}
		}
		return Who{Key: fmt.Sprintf("staff:%d:%s", p, id), Name: provider + " staff", Kind: "staff", ID: id}
	case ledger.ActorSystem:
		return Who{Key: fmt.Sprintf("system:%d", p), Name: provider + " (its own system)", Kind: "system"}
	}
	// Someone the gateway could not place (a request that failed to
	// authenticate): nobody the patient knows.
	w := Who{Key: "unknown:" + id, Name: "someone not recognised", Kind: "unrecognised"}
	if common.IsHexAddress(id) {
		w.ID = short(common.HexToAddress(id).Hex())
		if d.you[common.HexToAddress(id)] {
			return Who{Key: "you", Name: "you", Kind: "your own key", You: true}
		}
	}
	return w
}

// AnonymousRef is the reference of the anonymous grant a share bundle's
// viewer holds.
func AnonymousRef(g [32]byte) GrantRef { return GrantRef{Kind: access.AnonymousGrantee, Grantee: g} }

// AddressRef is the reference of an address grant.
func AddressRef(a common.Address) GrantRef {
	return GrantRef{Kind: access.AddressGrantee, Grantee: contracts.AddressGrantee(a)}
}
