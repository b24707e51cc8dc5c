package wallet

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/api"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/zkhash"
)

// Grant kinds.
const (
	KindAddress   = uint8(access.AddressGrantee)
	KindAnonymous = uint8(access.AnonymousGrantee)
)

func (w *Wallet) relay(ctx context.Context, r Relationship, path string, req any, sig []byte) error {
	return w.postJSON(ctx, r.Provider, path, map[string]any{"request": req, "signature": hexutil.Encode(sig)}, nil)
}

// grant signs and relays a grant of the relationship at p.
func (w *Wallet) grant(ctx context.Context, p uint32, kind uint8, grantee [32]byte, scope access.Scope, purpose access.Purpose, expiry time.Time) (Relationship, error) {
	if !scope.Valid() {
		return Relationship{}, errors.New("wallet: choose at least one resource type")
	}
	if !purpose.Valid() {
		return Relationship{}, errors.New("wallet: choose a purpose of use")
	}
	if !expiry.After(w.now()) {
		return Relationship{}, errors.New("wallet: the expiry must be in the future")
	}
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return r, err
	}
	g := contracts.GrantRequest{Tag: r.Tag, GranteeKind: kind, Grantee: grantee, Scope: uint64(scope), Purpose: uint8(purpose),
		Expiry: uint64(expiry.Unix()), Nonce: w.view.Nonce(r.Tag), Deadline: uint64(w.now().Add(10 * time.Minute).Unix())}
	sig, err := contracts.Sign(r.Delegate.PrivateKey(), contracts.GrantDigest(contracts.DomainSeparator(w.d.ChainID, w.d.Relationships), g))
	if err != nil {
		return r, err
	}
	return r, w.relay(ctx, r, "/relay/grant", map[string]any{
		"tag": hexutil.EncodeBig(r.Tag), "granteeKind": kind, "grantee": hexutil.Encode(grantee[:]), "scope": g.Scope,
		"purpose": g.Purpose, "expiry": g.Expiry, "nonce": g.Nonce, "deadline": g.Deadline,
	}, sig)
}

// ShareWithAddress grants an address (a clinician's account) access to the
// relationship at provider p.
func (w *Wallet) ShareWithAddress(ctx context.Context, p uint32, grantee common.Address, scope access.Scope, purpose access.Purpose, expiry time.Time) error {
	if grantee == (common.Address{}) {
		return errors.New("wallet: the grantee address is empty")
	}
	_, err := w.grant(ctx, p, KindAddress, contracts.AddressGrantee(grantee), scope, purpose, expiry)
	return err
}

// AddressLinks lists the providers where grantee already holds a grant on
// one of this patient's relationships: granting it at another provider too
// lets anyone link those relationships.
func (w *Wallet) AddressLinks(ctx context.Context, grantee common.Address) ([]string, error) {
	rels, err := w.Relationships(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rels {
		if g, ok := w.view.Grant(r.Tag, chainview.GranteeAddress, contracts.AddressGrantee(grantee)); ok && !g.Revoked {
			out = append(out, r.Provider.Name)
		}
	}
	return out, nil
}

// ShareBundle is what a patient hands an anonymous viewer, privately: where
// the records are, which relationship, and the grant secret k. Without the
// viewer's own secret v it is useless; without k nobody can tell which
// relationships were granted to a published viewer commitment.
type ShareBundle struct {
	ChainID  uint64 `json:"chainId"`
	Provider uint32 `json:"provider"`
	Gateway  string `json:"gateway"`
	Tag      string `json:"tag"`
	K        string `json:"k"`
}

const bundlePrefix = "medrec-share:"

// Encode returns the bundle as one line of text to copy. It holds the grant
// secret k: hand it over privately.
func (b ShareBundle) Encode() string {
	raw, _ := json.Marshal(b)
	return bundlePrefix + base64.RawURLEncoding.EncodeToString(raw)
}

// String keeps k out of anything printed with %v.
func (b ShareBundle) String() string { return fmt.Sprintf("share bundle for provider %d", b.Provider) }

// LogValue keeps k out of logs.
func (b ShareBundle) LogValue() slog.Value { return slog.StringValue(b.String()) }

// ParseShareBundle decodes the text form.
func ParseShareBundle(s string) (ShareBundle, error) {
	var b ShareBundle
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), bundlePrefix)
	if !ok {
		return b, errors.New("wallet: a share bundle starts with " + bundlePrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return b, fmt.Errorf("wallet: share bundle: %w", err)
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Provider == 0 || b.Tag == "" || b.K == "" {
		return b, errors.New("wallet: the share bundle is incomplete")
	}
	return b, nil
}

// ParseViewerCommitment reads a viewer commitment Cv (0x hex).
func ParseViewerCommitment(s string) (fr.Element, error) {
	return zkhash.ParseHex(strings.TrimSpace(s))
}

// ShareAnonymous grants the relationship at p to the viewer whose commitment
// is cv, under a fresh grant id g = H(D_grant; Cv, tag, k), and returns the
// bundle to hand to the viewer.
func (w *Wallet) ShareAnonymous(ctx context.Context, p uint32, cv fr.Element, scope access.Scope, purpose access.Purpose, expiry time.Time) (ShareBundle, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return ShareBundle{}, err
	}
	// k is derived (index = anonymous grants on this relationship so far), so a
	// restored wallet can recompute it.
	j := uint32(0)
	for _, g := range r.Grants {
		if g.Kind == chainview.GranteeAnonymous {
			j++
		}
	}
	k, err := w.keys.GrantSecret(p, j)
	if err != nil {
		return ShareBundle{}, err
	}
	tagEl, err := zkhash.FromBig(r.Tag)
	if err != nil {
		return ShareBundle{}, err
	}
	g := zkhash.Grant(cv, tagEl, k.Element())
	if _, err := w.grant(ctx, p, KindAnonymous, zkhash.Bytes32(g), scope, purpose, expiry); err != nil {
		return ShareBundle{}, err
	}
	return ShareBundle{ChainID: w.d.ChainID.Uint64(), Provider: p, Gateway: r.Provider.GatewayURL, Tag: zkhash.Hex(tagEl), K: zkhash.Hex(k.Element())}, nil
}

// Revoke signs and relays the revocation of a grant.
func (w *Wallet) Revoke(ctx context.Context, p uint32, kind uint8, grantee [32]byte) error {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return err
	}
	rv := contracts.RevokeRequest{Tag: r.Tag, GranteeKind: kind, Grantee: grantee, Nonce: w.view.Nonce(r.Tag), Deadline: uint64(w.now().Add(10 * time.Minute).Unix())}
	sig, err := contracts.Sign(r.Delegate.PrivateKey(), contracts.RevokeDigest(contracts.DomainSeparator(w.d.ChainID, w.d.Relationships), rv))
	if err != nil {
		return err
	}
	return w.relay(ctx, r, "/relay/revoke", map[string]any{
		"tag": hexutil.EncodeBig(r.Tag), "granteeKind": kind, "grantee": hexutil.Encode(grantee[:]), "nonce": rv.Nonce, "deadline": rv.Deadline,
	}, sig)
}

// --- verification against anchors ---------------------------------------------------

// LogEntry is an access-log entry with what the wallet could check.
type LogEntry struct {
	api.LogEntry
	HashOK   bool   // the entry's hash matches its fields
	Verified bool   // included in a batch whose root is anchored on chain
	Problem  string // why not, when it should be
}

// AccessLog fetches the access log of the relationship at p and verifies
// every entry: its hash against its fields, and its inclusion in the batch
// anchored on chain (entries of the newest, unanchored batch are not yet
// verifiable).
func (w *Wallet) AccessLog(ctx context.Context, p uint32) ([]LogEntry, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return nil, err
	}
	var page api.LogPage
	if _, err := w.signedGet(ctx, r, "/patient/log?from=0", &page); err != nil {
		return nil, err
	}
	anchors := w.view.Anchors(p)
	out := make([]LogEntry, len(page.Entries))
	for i, e := range page.Entries {
		v := LogEntry{LogEntry: e, HashOK: store.EntryHash(e.Prev, e.Store()) == e.Hash}
		switch {
		case !v.HashOK:
			v.Problem = "the entry does not match its hash"
		case e.Anchor == nil:
			v.Problem = "not anchored yet"
		case e.Anchor.Batch >= uint64(len(anchors)):
			v.Problem = "the batch is not on chain"
		default:
			a := anchors[e.Anchor.Batch]
			switch {
			case a.FromSeq+uint64(e.Anchor.Index) != e.Seq || a.Count != e.Anchor.Count:
				v.Problem = "the entry's position disagrees with the anchored batch"
			case anchor.Verify(a.LogRoot, anchor.LeafHash(e.Hash[:]), e.Anchor.Index, int(a.Count), e.Anchor.Proof) != nil:
				v.Problem = "not included under the anchored root"
			default:
				v.Verified = true
			}
		}
		out[i] = v
	}
	return out, nil
}

// StateCheck is the result of checking a record set against its anchor.
type StateCheck struct {
	Provider string
	Computed common.Hash // from the records as received
	Claimed  common.Hash // what the gateway says the state is
	Anchored common.Hash // the leaf under the anchored root (zero: not anchored)
	Pending  bool        // records changed since the latest anchor
	Verified bool        // computed == anchored, and the leaf is under the chain's root
	Problem  string
}

// VerifyRecords checks the records read from provider p against the
// provider's latest records-state anchor.
func (w *Wallet) VerifyRecords(ctx context.Context, p uint32, recs []Record) (StateCheck, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return StateCheck{}, err
	}
	var st api.State
	if _, err := w.signedGet(ctx, r, "/patient/state", &st); err != nil {
		return StateCheck{}, err
	}
	var entries []store.StateEntry
	for _, rec := range recs {
		if rec.Provider.ID == p && rec.Type != "" {
			entries = append(entries, store.StateEntry{Type: rec.Type, ID: rec.ID, Version: rec.Version, SHA256: sha256.Sum256(rec.Raw)})
		}
	}
	sc := StateCheck{Provider: r.Provider.Name, Computed: store.StateHash(entries), Claimed: st.Hash, Pending: st.Dirty}
	switch {
	case sc.Computed != sc.Claimed:
		sc.Problem = "the records received do not hash to the state the gateway reports"
	case st.Anchor == nil:
		sc.Problem = "not anchored yet"
	default:
		sc.Anchored = st.Anchor.State
		anchors := w.view.Anchors(p)
		var tag [32]byte
		r.Tag.FillBytes(tag[:])
		leaf := anchor.StateLeaf{Tag: tag, State: st.Anchor.State}.Hash()
		switch {
		case st.Anchor.Batch >= uint64(len(anchors)):
			sc.Problem = "the anchor is not on chain"
		case common.Hash(anchors[st.Anchor.Batch].StateRoot) != st.Anchor.StateRoot:
			sc.Problem = "the state root differs from the chain's"
		case anchor.Verify(st.Anchor.StateRoot, leaf, st.Anchor.Index, st.Anchor.Count, st.Anchor.Proof) != nil:
			sc.Problem = "the record set is not included under the anchored root"
		case sc.Anchored != sc.Computed:
			if st.Dirty {
				sc.Problem = "new records since the latest anchor (verifiable after the next one)"
			} else {
				sc.Problem = "the anchored state differs from the records received"
			}
		default:
			sc.Verified = true
		}
	}
	return sc, nil
}

// --- reading what others shared ------------------------------------------------------

// ViewerCommitment is what this wallet hands a patient to be granted
// anonymously (viewer secret number 0).
func (w *Wallet) ViewerCommitment() (string, error) {
	cv, err := w.keys.ViewerCommitment(0)
	if err != nil {
		return "", err
	}
	return zkhash.Hex(cv), nil
}

// ReadShared reads the records a share bundle gives access to: an
// Entitlement proof bound to the gateway's fresh challenge opens a short
// session, then the allowed records are read.
func (w *Wallet) ReadShared(ctx context.Context, b ShareBundle) ([]Record, error) {
	if err := w.view.Sync(ctx); err != nil {
		return nil, err
	}
	prov, ok := w.view.Provider(b.Provider)
	if !ok {
		return nil, fmt.Errorf("wallet: provider %d is not registered", b.Provider)
	}
	v, err := w.keys.Viewer(0)
	if err != nil {
		return nil, err
	}
	tag, err := zkhash.ParseHex(b.Tag)
	if err != nil {
		return nil, fmt.Errorf("wallet: share bundle tag: %w", err)
	}
	k, err := zkhash.ParseHex(b.K)
	if err != nil {
		return nil, fmt.Errorf("wallet: share bundle secret: %w", err)
	}
	var ch struct {
		Challenge string `json:"challenge"`
	}
	if err := w.postJSON(ctx, prov, "/auth/challenge", nil, &ch); err != nil {
		return nil, err
	}
	chEl, err := zkhash.ParseHex(ch.Challenge)
	if err != nil {
		return nil, fmt.Errorf("wallet: challenge: %w", err)
	}
	proof, pub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v.Element(), GrantSecret: k, Tag: tag, Challenge: chEl})
	if err != nil {
		return nil, err
	}
	var sess struct {
		Token string `json:"token"`
	}
	if err := w.postJSON(ctx, prov, "/auth/entitlement", map[string]string{
		"tag": zkhash.Hex(pub.Tag), "grant": zkhash.Hex(pub.Grant), "challenge": zkhash.Hex(pub.Challenge), "proof": proof.String(),
	}, &sess); err != nil {
		return nil, err
	}
	return readAll(ctx, "/fhir/Patient/$everything?_count=500", prov, func(target string, out any) error {
		req, err := http.NewRequest("GET", strings.TrimRight(prov.GatewayURL, "/")+target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+sess.Token)
		_, err = w.do(ctx, prov, req, out)
		return err
	})
}

// SharedWithMe lists the relationships that grant this wallet's address
// (its wallet account, m/44'/60'/0'/0/0) access, from the chain.
func (w *Wallet) SharedWithMe(ctx context.Context) ([]chainview.Grant, error) {
	if err := w.view.Sync(ctx); err != nil {
		return nil, err
	}
	acct, err := w.keys.Wallet()
	if err != nil {
		return nil, err
	}
	return w.view.GrantsTo(chainview.GranteeAddress, contracts.AddressGrantee(acct.Address)), nil
}

// ReadAsGrantee reads the relationship tag at provider p as an address
// grantee, signing with this wallet's account.
func (w *Wallet) ReadAsGrantee(ctx context.Context, p uint32, tag *big.Int) ([]Record, error) {
	prov, ok := w.view.Provider(p)
	if !ok {
		return nil, fmt.Errorf("wallet: provider %d is not registered", p)
	}
	acct, err := w.keys.Wallet()
	if err != nil {
		return nil, err
	}
	return readAll(ctx, "/fhir/Patient/$everything?_count=500", prov, func(target string, out any) error {
		_, err := signedGet(ctx, w, prov, acct, tag, target, out)
		return err
	})
}
