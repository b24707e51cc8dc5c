package wallet

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/zkhash"
)

// GrantExpiry is the expiry a share asked to last until t gets: t rounded up
// to the end of its UTC day (the next 00:00 UTC; t itself when it is one).
// An expiry of now + N days to the second would be the same second in every
// grant a patient makes in one sitting at several providers, linking them on
// chain; rounded, it is shared by every grant of that day and length.
func GrantExpiry(t time.Time) time.Time {
	day := t.UTC().Truncate(24 * time.Hour)
	if day.Equal(t) {
		return day
	}
	return day.Add(24 * time.Hour)
}

// grant signs and relays a new grant of the relationship at p, its expiry
// rounded by GrantExpiry.
func (w *Wallet) grant(ctx context.Context, p uint32, kind access.GranteeKind, grantee [32]byte, scope access.Scope, purpose access.Purpose, expiry time.Time) (Relationship, error) {
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
	return r, w.issue(ctx, r, kind, grantee, scope, purpose, uint64(GrantExpiry(expiry).Unix()))
}

// issue signs a grant with the relationship's delegate and relays it. Every
// grant and revocation uses the relationship's next signature nonce, so the
// wallet issues them one at a time and waits until its chain view shows the
// nonce used before the next: two shares made at once both go through
// instead of colliding on one nonce.
func (w *Wallet) issue(ctx context.Context, r Relationship, kind access.GranteeKind, grantee [32]byte, scope access.Scope, purpose access.Purpose, expiry uint64) error {
	w.signMu.Lock()
	defer w.signMu.Unlock()
	if err := w.view.Sync(ctx); err != nil {
		return err
	}
	// The contract speaks its ABI's types; access's are the same numbers.
	g := contracts.GrantRequest{Tag: r.Tag, GranteeKind: uint8(kind), Grantee: grantee, Scope: uint64(scope), Purpose: uint8(purpose),
		Expiry: expiry, Nonce: w.view.Nonce(r.Tag), Deadline: uint64(w.now().Add(10 * time.Minute).Unix())}
	sig, err := contracts.Sign(r.Delegate.PrivateKey(), contracts.GrantDigest(contracts.DomainSeparator(w.d.ChainID, w.d.Relationships), g))
	if err != nil {
		return err
	}
	body := map[string]any{
		"tag": hexutil.EncodeBig(r.Tag), "granteeKind": g.GranteeKind, "grantee": hexutil.Encode(grantee[:]), "scope": g.Scope,
		"purpose": g.Purpose, "expiry": g.Expiry, "nonce": g.Nonce, "deadline": g.Deadline,
	}
	return w.write(ctx, r, "/relay/grant", body, sig, g.Nonce, kind, grantee, func(got chainview.Grant, ok bool) bool {
		return ok && !got.Revoked && !got.Ended && got.Scope == scope && got.Purpose == purpose && got.Expiry == expiry
	})
}

// Stage is how far a chain write (a grant, a revocation) has come.
type Stage int

// Stages of a chain write, in order.
const (
	// StageSent: signed on this device and handed to the provider's
	// gateway, which sends it to the chain.
	StageSent Stage = iota + 1
	// StageInBlock: the transaction is in a block (the number comes with it).
	StageInBlock
	// StageInForce: this device's own view of the chain shows the change:
	// from here on every gateway applies it.
	StageInForce
)

// ProgressFunc hears how a chain write goes: each stage once, in order;
// block is the block number with StageInBlock (0 when unknown).
type ProgressFunc func(stage Stage, block uint64)

type progressKey struct{}

// WithProgress returns a context under which the wallet's chain writes
// (shares, revocations) report their progress to fn.
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

func report(ctx context.Context, s Stage, block uint64) {
	if fn, ok := ctx.Value(progressKey{}).(ProgressFunc); ok && fn != nil {
		fn(s, block)
	}
}

// writePoll is how often a chain write looks at the chain while it waits:
// the change is in force as soon as this device's view shows it, which is
// often before the gateway's own receipt polling answers.
const writePoll = 100 * time.Millisecond

// refusalWait bounds how long a write whose relay failed without a clear
// refusal (the gateway unreachable, a timeout, a 5xx) watches the chain for
// the transaction anyway: the gateway may have sent it before failing.
var refusalWait = 12 * time.Second

// write relays a signed grant or revocation (nonce: the one it signed) and
// returns once this device's chain view shows the nonce used with the
// grant of (kind, grantee) as asked (inForce), or once the relay failed and
// the chain does not show it: a failure is reported only after checking
// the chain.
func (w *Wallet) write(ctx context.Context, r Relationship, path string, req any, sig []byte, nonce uint32, kind access.GranteeKind, grantee [32]byte, inForce func(chainview.Grant, bool) bool) error {
	report(ctx, StageSent, 0)
	var out struct {
		Block uint64 `json:"block"`
	}
	// The relay goes on even if this write returns first (the view showed
	// the change): the gateway's answer is then only a confirmation.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	relayed := make(chan error, 1)
	go func() {
		defer cancel()
		relayed <- w.postJSON(rctx, r.Provider, path, map[string]any{"request": req, "signature": hexutil.Encode(sig)}, &out)
	}()
	inBlock := false
	// shown reports whether the chain view shows the nonce used, and if
	// so whether as asked.
	shown := func() (bool, error) {
		if err := w.view.Sync(ctx); err != nil || w.view.Nonce(r.Tag) <= nonce {
			return false, nil
		}
		g, ok := w.view.Grant(r.Tag, kind, grantee)
		if !inForce(g, ok) {
			return true, fmt.Errorf("wallet: another change to your relationship at %s went through in its place (from another device?), so this one was not made: try again", r.Provider.Name)
		}
		if !inBlock {
			inBlock = true
			report(ctx, StageInBlock, w.view.Head())
		}
		report(ctx, StageInForce, 0)
		return true, nil
	}
	tick := time.NewTicker(writePoll)
	defer tick.Stop()
	var relayErr error
	var deadline <-chan time.Time
	for {
		select {
		case err := <-relayed:
			relayed = nil
			if err == nil {
				if !inBlock {
					inBlock = true
					report(ctx, StageInBlock, out.Block)
				}
				// Mined: this device's node shows it within a block or two.
				deadline = time.After(chainWait)
				continue
			}
			relayErr = err
			var ge *GatewayError
			if errors.As(err, &ge) && ge.Status >= 400 && ge.Status < 500 && ge.Status != http.StatusTooManyRequests {
				// A clear refusal: the gateway sent nothing. The chain has the
				// last word all the same (a double submit's twin may have put
				// the same change in force).
				if done, err := shown(); done {
					return err
				}
				return relayErr
			}
			deadline = time.After(refusalWait)
		case <-tick.C:
			if done, err := shown(); done {
				return err
			}
		case <-deadline:
			if done, err := shown(); done {
				return err
			}
			// Mined per the gateway but not yet on this device's node: the
			// next write may be refused for its nonce, which then says so.
			return relayErr
		case <-ctx.Done():
			if relayErr != nil {
				return relayErr
			}
			return ctx.Err()
		}
	}
}

// chainWait bounds how long the wallet waits for its chain view to show a
// transaction a gateway reported mined.
const chainWait = 30 * time.Second

// awaitChain syncs the view until cond holds, for at most limit.
func (w *Wallet) awaitChain(ctx context.Context, limit time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if err := w.view.Sync(ctx); err == nil && cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ShareWithAddress grants an address (a clinician's account) access to the
// relationship at provider p until GrantExpiry(expiry).
func (w *Wallet) ShareWithAddress(ctx context.Context, p uint32, grantee common.Address, scope access.Scope, purpose access.Purpose, expiry time.Time) error {
	if grantee == (common.Address{}) {
		return errors.New("wallet: the grantee address is empty")
	}
	_, err := w.grant(ctx, p, access.AddressGrantee, contracts.AddressGrantee(grantee), scope, purpose, expiry)
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
		if g, ok := w.view.Grant(r.Tag, access.AddressGrantee, contracts.AddressGrantee(grantee)); ok && !g.Revoked {
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

// Share-bundle errors, in words for the person who pasted it.
var (
	ErrNotBundle     = errors.New("this is not a share text: it starts with " + bundlePrefix + ", as the patient's app gives it")
	ErrBundleDamaged = errors.New("this share text is cut short or damaged: copy it again, whole, from what the patient sent")
)

// ParseShareBundles reads one or more share bundles, one per line or
// separated by spaces (a patient sharing at several providers at once
// hands over one per provider).
func ParseShareBundles(s string) ([]ShareBundle, error) {
	var out []ShareBundle
	for _, f := range strings.Fields(s) {
		b, err := ParseShareBundle(f)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, errors.New("paste the share text the patient gave you")
	}
	return out, nil
}

// ParseShareBundle decodes the text form.
func ParseShareBundle(s string) (ShareBundle, error) {
	var b ShareBundle
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), bundlePrefix)
	if !ok {
		return b, ErrNotBundle
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return b, ErrBundleDamaged
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.Provider == 0 || b.Tag == "" || b.K == "" {
		return b, ErrBundleDamaged
	}
	return b, nil
}

// ParseViewerCommitment reads a viewer commitment Cv (0x hex).
func ParseViewerCommitment(s string) (fr.Element, error) {
	return zkhash.ParseHex(strings.TrimSpace(s))
}

// ShareAnonymous grants the relationship at p to the viewer whose commitment
// is cv, until GrantExpiry(expiry), under the grant id g = H(D_grant; Cv,
// tag, k), and returns the bundle to hand to the viewer. k is derived from
// the relationship's grant-secret root and Cv (delegate.Keys.GrantSecret):
// never the same for two viewers, the same again for one viewer, so sharing
// again with a viewer updates its grant and its bundle stays valid.
func (w *Wallet) ShareAnonymous(ctx context.Context, p uint32, cv fr.Element, scope access.Scope, purpose access.Purpose, expiry time.Time) (ShareBundle, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return ShareBundle{}, err
	}
	k, err := w.keys.GrantSecret(p, cv)
	if err != nil {
		return ShareBundle{}, err
	}
	tagEl, err := zkhash.FromBig(r.Tag)
	if err != nil {
		return ShareBundle{}, err
	}
	g := zkhash.Grant(cv, tagEl, k.Element())
	if _, err := w.grant(ctx, p, access.AnonymousGrantee, zkhash.Bytes32(g), scope, purpose, expiry); err != nil {
		return ShareBundle{}, err
	}
	return ShareBundle{ChainID: w.d.ChainID.Uint64(), Provider: p, Gateway: r.Provider.GatewayURL, Tag: zkhash.Hex(tagEl), K: zkhash.Hex(k.Element())}, nil
}

// Revoke signs and relays the revocation of a grant. A revocation the chain
// already holds is not sent again (nil: the grant is revoked); one a reorg
// took off the chain (the view marks it RevokeReorged and keeps honouring
// it) is re-submitted with the relationship's current nonce, so the chain
// agrees again with what the patient decided.
func (w *Wallet) Revoke(ctx context.Context, p uint32, kind access.GranteeKind, grantee [32]byte) error {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return err
	}
	w.signMu.Lock()
	defer w.signMu.Unlock()
	if err := w.view.Sync(ctx); err != nil {
		return err
	}
	if g, ok := w.view.Grant(r.Tag, kind, grantee); ok {
		switch {
		case g.Ended:
			return errors.New("wallet: that grant already ended when the delegate that made it was replaced; there is nothing to revoke")
		case g.Revoked && !g.RevokeReorged:
			return nil
		}
	}
	rv := contracts.RevokeRequest{Tag: r.Tag, GranteeKind: uint8(kind), Grantee: grantee, Nonce: w.view.Nonce(r.Tag), Deadline: uint64(w.now().Add(10 * time.Minute).Unix())}
	sig, err := contracts.Sign(r.Delegate.PrivateKey(), contracts.RevokeDigest(contracts.DomainSeparator(w.d.ChainID, w.d.Relationships), rv))
	if err != nil {
		return err
	}
	return w.write(ctx, r, "/relay/revoke", map[string]any{
		"tag": hexutil.EncodeBig(r.Tag), "granteeKind": rv.GranteeKind, "grantee": hexutil.Encode(grantee[:]), "nonce": rv.Nonce, "deadline": rv.Deadline,
	}, sig, rv.Nonce, kind, grantee, func(g chainview.Grant, ok bool) bool { return ok && g.Revoked })
}

// ResubmitRevocations re-submits every revocation of this patient's that a
// reorg took off the chain (see Revoke) and returns how many it sent. A
// device runs it whenever it refreshes its relationships: until it is done,
// gateways that saw the revocation keep refusing the reader, but one that
// never saw it, or restarted since, follows the chain.
func (w *Wallet) ResubmitRevocations(ctx context.Context) (int, error) {
	rels, err := w.Relationships(ctx)
	if err != nil {
		return 0, err
	}
	sent := 0
	for _, r := range rels {
		if !r.OwnedHere {
			continue
		}
		for _, g := range r.Grants {
			if !g.RevokeReorged {
				continue
			}
			if err := w.Revoke(ctx, r.Provider.ID, g.Kind, g.Grantee); err != nil {
				return sent, fmt.Errorf("wallet: re-submitting a revocation at %s: %w", r.Provider.Name, err)
			}
			sent++
		}
	}
	return sent, nil
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
	return w.view.GrantsTo(access.AddressGrantee, contracts.AddressGrantee(acct.Address)), nil
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

// GrantID returns the anonymous grant id g = H(D_grant; Cv, tag, k) that
// bundle b opens for the viewer whose commitment is cv: the patient names
// the grant by it, the viewer finds the grant's state on chain by it.
func (b ShareBundle) GrantID(cv fr.Element) ([32]byte, error) {
	tag, err := zkhash.ParseHex(b.Tag)
	if err != nil {
		return [32]byte{}, ErrBundleDamaged
	}
	k, err := zkhash.ParseHex(b.K)
	if err != nil {
		return [32]byte{}, ErrBundleDamaged
	}
	return zkhash.Bytes32(zkhash.Grant(cv, tag, k)), nil
}

// Received is a share this wallet's person received: a grant to its
// address (from the chain) or a share bundle it saved (on this device).
type Received struct {
	ID       string // stable id for the pages: "a-<provider>-<tag>" or "b-<hash of the bundle>"
	Provider chainview.Provider
	Tag      *big.Int
	Grant    chainview.Grant
	OnChain  bool         // the grant is on chain (false: a saved bundle whose grant is not there)
	Bundle   *ShareBundle // the saved bundle, for anonymous shares
	Saved    time.Time
}

// savedBundle is a share bundle as the device store keeps it.
type savedBundle struct {
	Text  string    `json:"text"`
	Saved time.Time `json:"saved"`
}

// bundleID names a bundle without revealing it (its k stays secret).
func bundleID(text string) string {
	h := sha256.Sum256([]byte(text))
	return "b-" + hex.EncodeToString(h[:8])
}

// SaveBundles keeps share bundles in the device store, so the viewer
// never pastes them again; it returns their ids. Saving one again changes
// nothing.
func (w *Wallet) SaveBundles(bs []ShareBundle) ([]string, error) {
	w.namesMu.Lock()
	defer w.namesMu.Unlock()
	var saved []savedBundle
	if err := w.getSection(w.section("received"), &saved); err != nil {
		return nil, fmt.Errorf("wallet: the shares saved on this device: %w", err)
	}
	have := map[string]bool{}
	for _, s := range saved {
		have[s.Text] = true
	}
	var ids []string
	changed := false
	for _, b := range bs {
		text := b.Encode()
		ids = append(ids, bundleID(text))
		if !have[text] {
			have[text], changed = true, true
			saved = append(saved, savedBundle{Text: text, Saved: w.now().UTC()})
		}
	}
	if changed {
		if err := w.putSection(w.section("received"), saved); err != nil {
			return nil, fmt.Errorf("wallet: saving the shares on this device: %w", err)
		}
	}
	return ids, nil
}

// Received lists every share this wallet received: grants to its address
// from the chain and the bundles saved on this device, each with its grant
// as the chain has it now.
func (w *Wallet) Received(ctx context.Context) ([]Received, error) {
	grants, err := w.SharedWithMe(ctx)
	if err != nil {
		return nil, err
	}
	var out []Received
	for _, g := range grants {
		rel, _ := w.view.Relationship(g.Tag)
		prov, _ := w.view.Provider(rel.Provider)
		out = append(out, Received{ID: fmt.Sprintf("a-%d-%x", rel.Provider, g.Tag), Provider: prov, Tag: g.Tag, Grant: g, OnChain: true})
	}
	var saved []savedBundle
	if err := w.getSection(w.section("received"), &saved); err != nil {
		return nil, fmt.Errorf("wallet: the shares saved on this device: %w", err)
	}
	cv, err := w.keys.ViewerCommitment(0)
	if err != nil {
		return nil, err
	}
	for _, s := range saved {
		b, err := ParseShareBundle(s.Text)
		if err != nil {
			continue // a section this version cannot read
		}
		rec := Received{ID: bundleID(s.Text), Bundle: &b, Saved: s.Saved}
		rec.Provider, _ = w.view.Provider(b.Provider)
		if rec.Provider.Name == "" {
			rec.Provider = chainview.Provider{ID: b.Provider, Name: fmt.Sprintf("provider %d", b.Provider)}
		}
		if tag, err := zkhash.ParseHex(b.Tag); err == nil {
			rec.Tag = zkhash.Big(tag)
			if g, err := b.GrantID(cv); err == nil {
				rec.Grant, rec.OnChain = w.view.Grant(rec.Tag, access.AnonymousGrantee, g)
			}
		}
		out = append(out, rec)
	}
	return out, nil
}
