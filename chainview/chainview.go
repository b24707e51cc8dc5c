// Package chainview follows the MedRec-ZK contracts' events into a view of
// the public chain state: the providers, the patient tree, relationships,
// grants and anchors, in memory — except the tree, which a gateway keeps in
// its records database (NewWithNodes) and the patient's app does not keep
// at all (NewWithoutTree: it fetches its path by bucket, package
// bucketpath, and never asks for its leaf, which would reveal its
// commitment).
//
// A View is advanced by Sync, which reads logs block range by block range and
// follows reorgs: every applied block keeps an undo list, and when a block the
// view applied is no longer canonical its changes are undone before the new
// branch is applied. A gateway that syncs before each decision (or once per
// block) therefore enforces a revocation within one block.
//
// # Revocation finality
//
// Clique's finality is probabilistic: a block, and the revocation in it,
// can be replaced by a reorg (a partition healing, two signers sealing the
// same height). A revocation this view has applied is honoured until the
// chain includes it again or the owner grants again (a grant signed with a
// nonce not below the revocation's): if a reorg takes it away, the grant
// stays revoked in this view, marked RevokeReorged, even though the chain
// now says it is in force. The revoked reader is never let back in by a
// reorg alone; the owner's wallet re-submits the revocation so the chain
// agrees again. The memory of lost revocations is this view's: a gateway
// restarted before the re-submission is mined reads the chain afresh (see
// docs/chain.md). Grants and opens have no such memory: one a reorg
// removes is simply gone from the view, which refuses what it allowed —
// the safe side.
package chainview

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// Source is what a View reads: logs and headers. An ethclient.Client and the
// simulated backend's client satisfy it.
type Source interface {
	ethereum.LogFilterer
	HeaderByNumber(ctx context.Context, number *big.Int) (*types.Header, error)
}

// Provider is a provider as the registry records it.
type Provider struct {
	ID         uint32
	Authority  common.Address
	Gateway    common.Address
	Name       string
	GatewayURL string
	Active     bool
}

// Relationship is an open relationship.
type Relationship struct {
	Tag      *big.Int
	Provider uint32
	Owner    common.Address
	Rotation uint32
	Nonce    uint32 // the owner's next signature nonce (one per grant or revocation)
}

// Grant is a grant as last recorded on chain.
type Grant struct {
	Tag     *big.Int
	Kind    access.GranteeKind
	Grantee [32]byte
	Scope   access.Scope
	Purpose access.Purpose
	Expiry  uint64
	Revoked bool
	// Epoch is the relationship's rotation counter when the grant was made.
	Epoch uint32
	// Ended: the relationship was rotated since (Epoch is below its
	// rotation), which ends every grant of the replaced owner for good. The
	// view fills it in when it answers a query, from the relationship as it
	// is then, so no caller can forget it and a reorg that undoes the
	// rotation brings the grant back.
	Ended bool
	// RevokeReorged: this view applied a revocation of the grant that a
	// reorg then took off the chain, and the chain has neither included it
	// again nor seen the owner grant again since. Revoked is true for such
	// a grant: a revocation once seen is honoured (see Revocation finality
	// in the package comment). The owner's wallet re-submits it.
	RevokeReorged bool
}

// Active reports whether the grant allows access at unix time now: not
// revoked (on chain, or by a revocation a reorg removed), not ended by a
// rotation, not expired.
func (g Grant) Active(now uint64) bool { return !g.Revoked && !g.Ended && now < g.Expiry }

// Anchor is one anchored batch of a provider.
type Anchor struct {
	Provider  uint32
	Batch     uint64
	LogRoot   [32]byte
	FromSeq   uint64
	Count     uint64
	StateRoot [32]byte
	Block     uint64
}

type grantKey struct {
	tag     string // decimal tag
	kind    access.GranteeKind
	grantee [32]byte
}

// granteeKey names a grantee across relationships.
type granteeKey struct {
	kind    access.GranteeKind
	grantee [32]byte
}

type appliedBlock struct {
	number uint64
	hash   common.Hash
	undo   []func()
}

// ErrReorgTooDeep is returned when a reorg reaches below the blocks the view
// remembers; the view must then be rebuilt from the deployment block.
var ErrReorgTooDeep = errors.New("chainview: reorg deeper than the remembered blocks")

// View is the followed state. It is safe for concurrent use.
type View struct {
	src       Source
	d         *contracts.Deployment
	keep      int    // how many applied blocks to remember for reorgs
	batchSize uint64 // blocks per log query

	mu        sync.RWMutex
	next      uint64      // first block not yet applied
	tip       common.Hash // hash of block next-1 (zero before the first sync)
	applied   []appliedBlock
	trimmed   bool // older applied blocks were forgotten
	providers map[uint32]*Provider
	tree      *merkle.Tree // may hold more leaves than enrolled while it catches up (NewWithNodes)
	enrolled  int          // leaves the applied Enrolled events put in the tree
	rels      map[string]*Relationship
	owners    map[common.Address]map[string]struct{} // owner → its relationships' tags
	grants    map[grantKey]*Grant
	// The grants' keys by relationship and by grantee, so that GrantsOf
	// and GrantsTo cost what they return, not every grant on the chain.
	grantsOf map[string]map[grantKey]struct{}
	grantsTo map[granteeKey]map[grantKey]struct{}
	anchors  map[uint32][]Anchor
	// lost holds the revocations a reorg removed, by grant, with the
	// signature nonce each used; kept outside the undo lists, so that a
	// reorg does not forget them (revokeApplied, grantApplied).
	lost map[grantKey]uint32

	handlers map[common.Address]map[common.Hash]func(*View, *types.Log, *appliedBlock) error
	// noTree: the view reads no registry events and holds no tree
	// (NewWithoutTree).
	noTree bool
}

// ErrNoTree says a view made by NewWithoutTree holds no registry tree.
var ErrNoTree = errors.New("chainview: this view holds no registry tree (NewWithoutTree)")

// New returns an empty view of the deployment d, to be advanced with Sync.
func New(src Source, d *contracts.Deployment) (*View, error) {
	tree, err := merkle.New(nil)
	if err != nil {
		return nil, err
	}
	v := &View{
		src: src, d: d, keep: 256, batchSize: 2000,
		next:      d.Block,
		providers: map[uint32]*Provider{},
		tree:      tree,
		rels:      map[string]*Relationship{},
		owners:    map[common.Address]map[string]struct{}{},
		grants:    map[grantKey]*Grant{},
		grantsOf:  map[string]map[grantKey]struct{}{},
		grantsTo:  map[granteeKey]map[grantKey]struct{}{},
		anchors:   map[uint32][]Anchor{},
		lost:      map[grantKey]uint32{},
	}
	v.handlers, err = handlers(d)
	if err != nil {
		return nil, err
	}
	return v, nil
}

// NewWithNodes returns an empty view like New whose registry tree is kept
// in nodes — a gateway's records database (sqlstore.DB.RegistryNodes) —
// instead of memory. A tree already there from an earlier run is kept
// where the chain's enrolments match it, checked leaf by leaf as the view
// replays them, so a restart rewrites nothing; whatever the chain does not
// have (another deployment, a reorg while the gateway was down) is dropped.
// Until the view has caught up, MerkleProof, Tops and Bucket say so.
func NewWithNodes(src Source, d *contracts.Deployment, nodes merkle.Nodes) (*View, error) {
	v, err := New(src, d)
	if err != nil {
		return nil, err
	}
	if v.tree, err = merkle.Open(nodes); err != nil {
		return nil, fmt.Errorf("chainview: %w", err)
	}
	return v, nil
}

// ErrCatchingUp says the view's stored tree holds enrolments the view has
// not yet read from the chain (NewWithNodes, before the first full Sync).
var ErrCatchingUp = errors.New("chainview: the registry tree is catching up with the chain")

// NewWithoutTree returns a view that neither reads the patient registry's
// events nor holds its tree: what a client that fetches its membership path
// by bucket needs (package bucketpath), without a copy of every
// commitment. MerkleProof, Tops and Bucket fail with ErrNoTree; Leaves is 0.
func NewWithoutTree(src Source, d *contracts.Deployment) (*View, error) {
	v, err := New(src, d)
	if err != nil {
		return nil, err
	}
	v.noTree = true
	delete(v.handlers, d.PatientRegistry)
	return v, nil
}

// Head returns the last block the view applied.
func (v *View) Head() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.next == 0 {
		return 0
	}
	return v.next - 1
}

// Sync advances the view to the chain's current head, undoing any applied
// blocks a reorg replaced.
func (v *View) Sync(ctx context.Context) error {
	head, err := v.src.HeaderByNumber(ctx, nil)
	if err != nil {
		return fmt.Errorf("chainview: head: %w", err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.unwindLocked(ctx); err != nil {
		return err
	}
	target := head.Number.Uint64()
	for v.next <= target {
		to := min(v.next+v.batchSize-1, target)
		if err := v.applyRangeLocked(ctx, v.next, to); err != nil {
			return err
		}
	}
	// Caught up: stored leaves no enrolment put there are not the chain's.
	if !v.noTree && v.tree.Len() > v.enrolled {
		if err := v.tree.Truncate(v.enrolled); err != nil {
			return fmt.Errorf("chainview: drop stored leaves the chain does not have: %w", err)
		}
	}
	return nil
}

// unwindLocked undoes applied blocks that are no longer canonical.
func (v *View) unwindLocked(ctx context.Context) error {
	if v.next == 0 || v.tip == (common.Hash{}) {
		return nil
	}
	h, err := v.src.HeaderByNumber(ctx, new(big.Int).SetUint64(v.next-1))
	if err != nil && !errors.Is(err, ethereum.NotFound) {
		return fmt.Errorf("chainview: header %d: %w", v.next-1, err)
	}
	if err == nil && h.Hash() == v.tip {
		return nil // our tip is still canonical
	}
	// Walk back over the applied blocks until one is still canonical.
	for len(v.applied) > 0 {
		b := v.applied[len(v.applied)-1]
		h, err := v.src.HeaderByNumber(ctx, new(big.Int).SetUint64(b.number))
		if err != nil && !errors.Is(err, ethereum.NotFound) {
			return fmt.Errorf("chainview: header %d: %w", b.number, err)
		}
		if err == nil && h.Hash() == b.hash {
			v.next, v.tip = b.number+1, b.hash
			return nil
		}
		for i := len(b.undo) - 1; i >= 0; i-- {
			b.undo[i]()
		}
		v.applied = v.applied[:len(v.applied)-1]
		v.next = b.number
	}
	if v.trimmed {
		return ErrReorgTooDeep
	}
	// Everything the view applied is undone: read again from the deployment.
	v.next, v.tip = v.d.Block, common.Hash{}
	return nil
}

func (v *View) applyRangeLocked(ctx context.Context, from, to uint64) error {
	toHeader, err := v.src.HeaderByNumber(ctx, new(big.Int).SetUint64(to))
	if err != nil {
		return fmt.Errorf("chainview: header %d: %w", to, err)
	}
	logs, err := v.src.FilterLogs(ctx, ethereum.FilterQuery{
		FromBlock: new(big.Int).SetUint64(from),
		ToBlock:   new(big.Int).SetUint64(to),
		Addresses: v.addresses(),
	})
	if err != nil {
		return fmt.Errorf("chainview: logs %d..%d: %w", from, to, err)
	}
	// Logs of a block that was replaced while we read are caught by their hash:
	// every log must belong to the canonical block we will record.
	for i := range logs {
		l := &logs[i]
		if l.Removed {
			continue
		}
		if len(v.applied) == 0 || v.applied[len(v.applied)-1].number != l.BlockNumber {
			if len(v.applied) > 0 && v.applied[len(v.applied)-1].number > l.BlockNumber {
				return fmt.Errorf("chainview: logs out of order at block %d", l.BlockNumber)
			}
			v.applied = append(v.applied, appliedBlock{number: l.BlockNumber, hash: l.BlockHash})
		}
		b := &v.applied[len(v.applied)-1]
		if b.hash != l.BlockHash {
			return fmt.Errorf("chainview: block %d changed while reading; retry", l.BlockNumber)
		}
		if byTopic, ok := v.handlers[l.Address]; ok && len(l.Topics) > 0 {
			if h, ok := byTopic[l.Topics[0]]; ok {
				if err := h(v, l, b); err != nil {
					return fmt.Errorf("chainview: block %d tx %s log %d: %w", l.BlockNumber, l.TxHash, l.Index, err)
				}
			}
		}
	}
	if n := len(v.applied); n > v.keep {
		v.applied = slices.Clone(v.applied[n-v.keep:])
		v.trimmed = true
	}
	v.next, v.tip = to+1, toHeader.Hash()
	return nil
}

// addresses are the contracts whose logs the view reads.
func (v *View) addresses() []common.Address {
	if v.noTree {
		return []common.Address{v.d.AgentRegistry, v.d.Relationships, v.d.Anchors}
	}
	return []common.Address{v.d.AgentRegistry, v.d.PatientRegistry, v.d.Relationships, v.d.Anchors}
}

// --- event handlers ---------------------------------------------------------------

func handlers(d *contracts.Deployment) (map[common.Address]map[common.Hash]func(*View, *types.Log, *appliedBlock) error, error) {
	type h = func(*View, *types.Log, *appliedBlock) error
	agents, patients, rels, anchors := bindings.NewAgentRegistry(), bindings.NewPatientRegistry(), bindings.NewRelationships(), bindings.NewAnchors()
	id := func(md *bind.MetaData, name string) (common.Hash, error) {
		parsed, err := md.ParseABI()
		if err != nil {
			return common.Hash{}, err
		}
		ev, ok := parsed.Events[name]
		if !ok {
			return common.Hash{}, fmt.Errorf("no event %s", name)
		}
		return ev.ID, nil
	}
	table := []struct {
		addr common.Address
		md   *bind.MetaData
		name string
		fn   h
	}{
		{d.AgentRegistry, &bindings.AgentRegistryMetaData, "ProviderAdded", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := agents.UnpackProviderAddedEvent(l)
			if err != nil {
				return err
			}
			v.setProvider(b, &Provider{ID: e.Id, Authority: e.Authority, Gateway: e.Gateway, Name: e.Name, GatewayURL: e.GatewayURL, Active: true})
			return nil
		}},
		{d.AgentRegistry, &bindings.AgentRegistryMetaData, "ProviderRemoved", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := agents.UnpackProviderRemovedEvent(l)
			if err != nil {
				return err
			}
			p, ok := v.providers[e.Id]
			if !ok {
				return fmt.Errorf("removal of unknown provider %d", e.Id)
			}
			np := *p
			np.Active = false
			v.setProvider(b, &np)
			return nil
		}},
		{d.AgentRegistry, &bindings.AgentRegistryMetaData, "GatewayChanged", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := agents.UnpackGatewayChangedEvent(l)
			if err != nil {
				return err
			}
			p, ok := v.providers[e.Id]
			if !ok {
				return fmt.Errorf("gateway change of unknown provider %d", e.Id)
			}
			np := *p
			np.Gateway, np.GatewayURL = e.Gateway, e.GatewayURL
			v.setProvider(b, &np)
			return nil
		}},
		{d.PatientRegistry, &bindings.PatientRegistryMetaData, "Enrolled", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := patients.UnpackEnrolledEvent(l)
			if err != nil {
				return err
			}
			return v.enrol(b, int(e.Start), e.Commitments, e.Root)
		}},
		{d.Relationships, &bindings.RelationshipsMetaData, "Opened", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := rels.UnpackOpenedEvent(l)
			if err != nil {
				return err
			}
			v.setRelationship(b, e.Tag, &Relationship{Tag: e.Tag, Provider: e.Provider, Owner: e.Owner})
			return nil
		}},
		{d.Relationships, &bindings.RelationshipsMetaData, "Rotated", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := rels.UnpackRotatedEvent(l)
			if err != nil {
				return err
			}
			r, ok := v.rels[e.Tag.String()]
			if !ok {
				return fmt.Errorf("rotation of unknown relationship %#x", e.Tag)
			}
			nr := *r
			nr.Owner, nr.Rotation = e.Owner, e.Rotation
			v.setRelationship(b, e.Tag, &nr)
			return nil
		}},
		{d.Relationships, &bindings.RelationshipsMetaData, "Granted", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := rels.UnpackGrantedEvent(l)
			if err != nil {
				return err
			}
			g := &Grant{Tag: e.Tag, Kind: access.GranteeKind(e.GranteeKind), Grantee: e.Grantee, Scope: access.Scope(e.Scope), Purpose: access.Purpose(e.Purpose), Expiry: e.Expiry, Epoch: e.Epoch}
			v.setGrant(b, g)
			v.grantApplied(b, grantKey{e.Tag.String(), g.Kind, g.Grantee}, e.Tag)
			return v.bumpNonce(b, e.Tag)
		}},
		{d.Relationships, &bindings.RelationshipsMetaData, "Revoked", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := rels.UnpackRevokedEvent(l)
			if err != nil {
				return err
			}
			k := grantKey{e.Tag.String(), access.GranteeKind(e.GranteeKind), e.Grantee}
			g, ok := v.grants[k]
			if !ok {
				return fmt.Errorf("revocation of unknown grant")
			}
			ng := *g
			ng.Revoked = true
			v.setGrant(b, &ng)
			v.revokeApplied(b, k, e.Tag)
			return v.bumpNonce(b, e.Tag)
		}},
		{d.Anchors, &bindings.AnchorsMetaData, "Anchored", func(v *View, l *types.Log, b *appliedBlock) error {
			e, err := anchors.UnpackAnchoredEvent(l)
			if err != nil {
				return err
			}
			a := Anchor{Provider: e.Provider, Batch: e.Batch, LogRoot: e.LogRoot, FromSeq: e.FromSeq, Count: e.Count, StateRoot: e.StateRoot, Block: l.BlockNumber}
			v.anchors[e.Provider] = append(v.anchors[e.Provider], a)
			b.undo = append(b.undo, func() {
				list := v.anchors[e.Provider]
				v.anchors[e.Provider] = list[:len(list)-1]
			})
			return nil
		}},
	}
	out := map[common.Address]map[common.Hash]func(*View, *types.Log, *appliedBlock) error{}
	for _, row := range table {
		topic, err := id(row.md, row.name)
		if err != nil {
			return nil, fmt.Errorf("chainview: %w", err)
		}
		if out[row.addr] == nil {
			out[row.addr] = map[common.Hash]func(*View, *types.Log, *appliedBlock) error{}
		}
		out[row.addr][topic] = row.fn
	}
	return out, nil
}

func (v *View) setProvider(b *appliedBlock, p *Provider) {
	old, had := v.providers[p.ID]
	v.providers[p.ID] = p
	b.undo = append(b.undo, func() {
		if had {
			v.providers[p.ID] = old
		} else {
			delete(v.providers, p.ID)
		}
	})
}

func (v *View) setRelationship(b *appliedBlock, tag *big.Int, r *Relationship) {
	k := tag.String()
	old, had := v.rels[k]
	v.rels[k] = r
	if had {
		v.unindexOwner(old.Owner, k)
	}
	v.indexOwner(r.Owner, k)
	b.undo = append(b.undo, func() {
		v.unindexOwner(r.Owner, k)
		if had {
			v.rels[k] = old
			v.indexOwner(old.Owner, k)
		} else {
			delete(v.rels, k)
		}
	})
}

func (v *View) indexOwner(owner common.Address, tag string) {
	if v.owners[owner] == nil {
		v.owners[owner] = map[string]struct{}{}
	}
	v.owners[owner][tag] = struct{}{}
}

func (v *View) unindexOwner(owner common.Address, tag string) {
	delete(v.owners[owner], tag)
	if len(v.owners[owner]) == 0 {
		delete(v.owners, owner)
	}
}

// bumpNonce counts a used signature nonce of the relationship.
func (v *View) bumpNonce(b *appliedBlock, tag *big.Int) error {
	r, ok := v.rels[tag.String()]
	if !ok {
		return fmt.Errorf("grant change on unknown relationship %#x", tag)
	}
	nr := *r
	nr.Nonce++
	v.setRelationship(b, tag, &nr)
	return nil
}

// usedNonce is the signature nonce the owner's grant or revocation being
// applied used: the relationship's count of them so far (bumpNonce follows).
func (v *View) usedNonce(tag *big.Int) uint32 {
	if r, ok := v.rels[tag.String()]; ok {
		return r.Nonce
	}
	return 0
}

// revokeApplied: the chain has the revocation of k (again), so it is not
// lost; if a reorg undoes this block, it is lost from then on, with the
// nonce it used.
func (v *View) revokeApplied(b *appliedBlock, k grantKey, tag *big.Int) {
	nonce := v.usedNonce(tag)
	delete(v.lost, k)
	b.undo = append(b.undo, func() { v.lost[k] = nonce })
}

// grantApplied: a grant of k signed at or after a lost revocation (a nonce
// not below the revocation's) is the owner granting again, which lifts the
// lost revocation. A grant with an older nonce is the revoked grant itself,
// included again by the new branch: the revocation still holds.
func (v *View) grantApplied(b *appliedBlock, k grantKey, tag *big.Int) {
	lost, ok := v.lost[k]
	if !ok || v.usedNonce(tag) < lost {
		return
	}
	delete(v.lost, k)
	b.undo = append(b.undo, func() { v.lost[k] = lost })
}

func (v *View) setGrant(b *appliedBlock, g *Grant) {
	k := grantKey{g.Tag.String(), g.Kind, g.Grantee}
	old, had := v.grants[k]
	v.grants[k] = g
	if !had {
		v.indexGrant(k, true)
	}
	b.undo = append(b.undo, func() {
		if had {
			v.grants[k] = old
		} else {
			delete(v.grants, k)
			v.indexGrant(k, false)
		}
	})
}

// indexGrant adds key k to (or removes it from) the grants' indexes.
func (v *View) indexGrant(k grantKey, add bool) {
	to := granteeKey{k.kind, k.grantee}
	if add {
		if v.grantsOf[k.tag] == nil {
			v.grantsOf[k.tag] = map[grantKey]struct{}{}
		}
		if v.grantsTo[to] == nil {
			v.grantsTo[to] = map[grantKey]struct{}{}
		}
		v.grantsOf[k.tag][k], v.grantsTo[to][k] = struct{}{}, struct{}{}
		return
	}
	delete(v.grantsOf[k.tag], k)
	if len(v.grantsOf[k.tag]) == 0 {
		delete(v.grantsOf, k.tag)
	}
	delete(v.grantsTo[to], k)
	if len(v.grantsTo[to]) == 0 {
		delete(v.grantsTo, to)
	}
}

// --- queries ---------------------------------------------------------------------

// Providers returns every provider ever registered, by id.
func (v *View) Providers() []Provider {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]Provider, 0, len(v.providers))
	for _, p := range v.providers {
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b Provider) int { return int(a.ID) - int(b.ID) })
	return out
}

// Provider returns provider id.
func (v *View) Provider(id uint32) (Provider, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	p, ok := v.providers[id]
	if !ok {
		return Provider{}, false
	}
	return *p, true
}

// ActiveSigners returns the active providers' authorities: the signer set the
// Clique consensus must follow.
func (v *View) ActiveSigners(context.Context) ([]common.Address, error) {
	var out []common.Address
	for _, p := range v.Providers() {
		if p.Active {
			out = append(out, p.Authority)
		}
	}
	return out, nil
}

// Relationship returns the relationship of tag.
func (v *View) Relationship(tag *big.Int) (Relationship, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	r, ok := v.rels[tag.String()]
	if !ok {
		return Relationship{}, false
	}
	return *r, true
}

// OwnedBy returns the relationships whose current owner is addr, by tag. A
// delegate belongs to one relationship: one address owning two links them.
func (v *View) OwnedBy(addr common.Address) []Relationship {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Relationship
	for k := range v.owners[addr] {
		out = append(out, *v.rels[k])
	}
	slices.SortFunc(out, func(a, b Relationship) int { return a.Tag.Cmp(b.Tag) })
	return out
}

// grantLocked returns a copy of g with Ended filled in from its
// relationship, and a revocation a reorg removed applied.
func (v *View) grantLocked(g *Grant) Grant {
	out := *g
	if r, ok := v.rels[g.Tag.String()]; ok && g.Epoch < r.Rotation {
		out.Ended = true
	}
	if _, ok := v.lost[grantKey{g.Tag.String(), g.Kind, g.Grantee}]; ok && !g.Revoked {
		out.Revoked, out.RevokeReorged = true, true
	}
	return out
}

// Grant returns the grant of tag to grantee.
func (v *View) Grant(tag *big.Int, kind access.GranteeKind, grantee [32]byte) (Grant, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	g, ok := v.grants[grantKey{tag.String(), kind, grantee}]
	if !ok {
		return Grant{}, false
	}
	return v.grantLocked(g), true
}

// Nonce returns the next signature nonce of the relationship tag.
func (v *View) Nonce(tag *big.Int) uint32 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if r, ok := v.rels[tag.String()]; ok {
		return r.Nonce
	}
	return 0
}

// GrantsOf returns every grant recorded for tag.
func (v *View) GrantsOf(tag *big.Int) []Grant {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Grant
	for k := range v.grantsOf[tag.String()] {
		out = append(out, v.grantLocked(v.grants[k]))
	}
	slices.SortFunc(out, func(a, b Grant) int {
		if a.Kind != b.Kind {
			return int(a.Kind) - int(b.Kind)
		}
		return slices.Compare(a.Grantee[:], b.Grantee[:])
	})
	return out
}

// GrantsTo returns every grant to grantee, across relationships.
func (v *View) GrantsTo(kind access.GranteeKind, grantee [32]byte) []Grant {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []Grant
	for k := range v.grantsTo[granteeKey{kind, grantee}] {
		out = append(out, v.grantLocked(v.grants[k]))
	}
	slices.SortFunc(out, func(a, b Grant) int { return a.Tag.Cmp(b.Tag) })
	return out
}

// enrol applies one Enrolled event: commitments from index start, the
// chain's root after them. A tree stored ahead (NewWithNodes, after a
// restart) is checked against the commitments instead of written again.
func (v *View) enrol(b *appliedBlock, start int, commitments []*big.Int, root *big.Int) error {
	if start != v.enrolled {
		return fmt.Errorf("enrolment at index %d, the view has %d leaves", start, v.enrolled)
	}
	cs := make([]fr.Element, len(commitments))
	for i, cm := range commitments {
		c, err := zkhash.FromBig(cm)
		if err != nil {
			return fmt.Errorf("commitment %d: %w", start+i, err)
		}
		cs[i] = c
	}
	undo := func() {
		v.enrolled = start
		if v.tree.Len() > start {
			// An error here leaves stored leaves the next Sync drops or
			// checks; the view's count is what decides.
			_ = v.tree.Truncate(start)
		}
	}
	// Stored ahead: keep the leaves that match, drop from the first that
	// does not.
	matched := 0
	if stored := v.tree.Len() - start; stored > 0 {
		have, err := v.tree.Leaves(start, min(stored, len(cs)))
		if err != nil {
			return err
		}
		for matched < len(have) && have[matched] == cs[matched] {
			matched++
		}
		if matched < len(have) {
			if err := v.tree.Truncate(start + matched); err != nil {
				return err
			}
		}
	}
	if matched < len(cs) {
		if _, err := v.tree.Append(cs[matched:]); err != nil {
			undo()
			return err
		}
	}
	v.enrolled = start + len(cs)
	// The chain's tree stands only at a batch's end: one root per batch. A
	// tree stored further ahead is checked at the last batch it holds.
	if v.tree.Len() == v.enrolled {
		if got := zkhash.Big(v.tree.Root()); got.Cmp(root) != 0 {
			undo()
			return fmt.Errorf("root after leaves %d–%d: view %#x, chain %#x", start, v.enrolled-1, got, root)
		}
	}
	b.undo = append(b.undo, undo)
	return nil
}

// Leaves returns the number of enrolled commitments.
func (v *View) Leaves() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.enrolled
}

// treeLocked returns the tree if it stands where the chain does.
func (v *View) treeLocked() (*merkle.Tree, error) {
	switch {
	case v.noTree:
		return nil, ErrNoTree
	case v.tree.Len() != v.enrolled:
		return nil, ErrCatchingUp
	}
	return v.tree, nil
}

// ReadTree calls f with the registry's tree as the view stands, holding the
// view still until f returns; f must not change the tree or keep it.
func (v *View) ReadTree(f func(t *merkle.Tree) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	tree, err := v.treeLocked()
	if err != nil {
		return err
	}
	return f(tree)
}

// MerkleProof returns the membership path of commitment c under the current
// root, built from chain events only.
func (v *View) MerkleProof(c fr.Element) (merkle.Proof, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	tree, err := v.treeLocked()
	if err != nil {
		return merkle.Proof{}, err
	}
	i, err := tree.IndexOf(c)
	if err != nil {
		return merkle.Proof{}, fmt.Errorf("chainview: %w", err)
	}
	if i < 0 {
		return merkle.Proof{}, fmt.Errorf("chainview: commitment %s: %w", zkhash.Hex(c), ErrNotEnrolled)
	}
	return tree.Proof(i)
}

// ErrNotEnrolled says a commitment is not in the registry's tree.
var ErrNotEnrolled = errors.New("not enrolled")

// Tops returns the roots of the tree's buckets (merkle.Tree.Tops), the
// number of leaves and the root, read together.
func (v *View) Tops() (tops []fr.Element, leaves int, root fr.Element, err error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	tree, err := v.treeLocked()
	if err != nil {
		return nil, 0, fr.Element{}, err
	}
	if tops, err = tree.Tops(); err != nil {
		return nil, 0, fr.Element{}, fmt.Errorf("chainview: %w", err)
	}
	return tops, tree.Len(), tree.Root(), nil
}

// Bucket returns the leaves of bucket b (merkle.Tree.Bucket) and whether
// it is full (full buckets never change).
func (v *View) Bucket(b int) ([]fr.Element, bool, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	tree, err := v.treeLocked()
	if err != nil {
		return nil, false, err
	}
	leaves, err := tree.Bucket(b)
	return leaves, len(leaves) == merkle.BucketSize, err
}

// Root returns the current tree root.
func (v *View) Root() fr.Element {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.tree.Root()
}

// Anchors returns provider's anchored batches in order.
func (v *View) Anchors(provider uint32) []Anchor {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Clone(v.anchors[provider])
}
