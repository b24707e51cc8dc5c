package audit

import (
	"encoding/hex"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
)

// The analyzer is the audit's state machine: it consumes logs in chain order
// (log), then the range's transactions in any order (tx), then the delegates'
// state at the audited head (delegateState), and turns what it saw into the
// checks that need no further chain access (finish). Memory grows with
// providers, enrolments, relationships, delegates, grants and findings — not
// with other events or blocks.

type providerState struct {
	authority, gateway common.Address
	active             bool
	name               string
}

type relation struct {
	tag      [32]byte
	provider uint32 // 0: opened before the audited range and not resolved
	owner    common.Address
}

// grantRec is one Granted event, for the grant-times check.
type grantRec struct {
	provider uint32
	rel      int32
	block    uint64
}

// expiryAt is an expiry at one provider; expiryRels says which
// relationships there hold a grant ending then.
type expiryAt struct {
	expiry   uint64
	provider uint32
}

type expiryRels struct {
	rel  int32 // the first
	many bool  // another relationship too
}

type openRec struct {
	rel         int32
	provider    uint32
	block       uint64
	logIndex    uint
	tx          common.Hash
	blockHash   common.Hash
	txIndex     uint
	gateway     common.Address // the provider's gateway at the open's log position
	active      bool           // the provider was registered and active then
	setSize     uint32         // leaves under the proof's root
	rootKnown   bool
	enrolled    uint32 // leaves at the open's log position
	sender      common.Address
	senderKnown bool
}

// findings collects one check's findings up to a cap.
type findings struct {
	list    []Finding
	omitted int
	max     int
	fails   int
	warns   int
}

func (f *findings) add(x Finding) {
	switch x.Severity {
	case SeverityFail:
		f.fails++
	case SeverityWarn:
		f.warns++
	}
	if len(f.list) >= f.max {
		f.omitted++
		return
	}
	f.list = append(f.list, x)
}

func (f *findings) status() Status {
	switch {
	case f.fails > 0:
		return StatusFail
	case f.warns > 0:
		return StatusWarn
	}
	return StatusPass
}

func (f *findings) check(name, summary string) Check {
	list := f.list
	if list == nil {
		list = []Finding{}
	}
	return Check{Name: name, Title: checkTitles[name], Status: f.status(), Summary: summary, Findings: list, Omitted: f.omitted}
}

type analyzer struct {
	cfg  Config
	d    *contracts.Deployment
	abi  *abis
	regs *bindings.AgentRegistry

	providers map[uint32]*providerState
	leaves    uint32
	// commitments: a commitment's last 16 bytes → its first leaf. Half
	// the memory of whole commitments (10^7 enrolments: ≈ 0.5 GB less);
	// two different commitments share 128 bits with a chance of about
	// 2^-75 among 10^8, and would then be reported as one enrolled twice.
	commitments map[[16]byte]uint32
	duplicates  uint32              // leaves whose commitment an earlier leaf holds
	rootSize    map[[32]byte]uint32 // root → distinct commitments under it
	enrolBlocks []uint64

	rels     []relation
	relByTag map[[32]byte]int32
	owners   map[common.Address][]int32
	grantees map[common.Address][]int32 // address grantees (kind 1)
	opens    []openRec
	openByTx map[common.Hash][]int32
	times    map[uint64]uint64 // block → timestamp, for blocks with opens, enrolments or grants
	grants   []grantRec        // grants on relationships whose provider is known
	expiries map[expiryAt]expiryRels

	stats                           Stats
	perPatient, delegateEth, relays findings
	unknownTopics, badCalls         int
	badDelegates                    map[common.Address]bool
}

func newAnalyzer(d *contracts.Deployment, cfg Config) (*analyzer, error) {
	a, err := contractABIs()
	if err != nil {
		return nil, err
	}
	fl := func() findings { return findings{max: cfg.MaxFindings} }
	return &analyzer{
		cfg: cfg, d: d, abi: a, regs: bindings.NewAgentRegistry(),
		providers: map[uint32]*providerState{}, rootSize: map[[32]byte]uint32{}, commitments: map[[16]byte]uint32{},
		relByTag: map[[32]byte]int32{}, owners: map[common.Address][]int32{}, grantees: map[common.Address][]int32{},
		openByTx: map[common.Hash][]int32{}, times: map[uint64]uint64{}, expiries: map[expiryAt]expiryRels{},
		perPatient: fl(), delegateEth: fl(), relays: fl(), badDelegates: map[common.Address]bool{},
	}, nil
}

func tagHex(t [32]byte) string { return "0x" + hex.EncodeToString(t[:]) }

// shortTag abbreviates a tag for messages; findings carry it in full.
func shortTag(t [32]byte) string { return "0x" + hex.EncodeToString(t[:4]) + "…" }

func txp(h common.Hash) *common.Hash { return &h }

func (a *analyzer) contractName(addr common.Address) string {
	switch addr {
	case a.d.AgentRegistry:
		return "AgentRegistry"
	case a.d.PatientRegistry:
		return "PatientRegistry"
	case a.d.Relationships:
		return "Relationships"
	case a.d.Anchors:
		return "Anchors"
	case a.d.OwnershipVerifier:
		return "OwnershipVerifier"
	case a.d.EntitlementVerifier:
		return "EntitlementVerifier"
	}
	return addr.Hex()
}

// unexpected records a log the MedRec-ZK contracts as compiled never emit.
func (a *analyzer) unexpected(l *types.Log, why string) {
	a.unknownTopics++
	a.perPatient.add(Finding{
		Severity: SeverityFail, Block: l.BlockNumber, Tx: txp(l.TxHash),
		Message: fmt.Sprintf("%s emitted %s in block %d (tx %s)", a.contractName(l.Address), why, l.BlockNumber, l.TxHash.Hex()),
	})
}

func (a *analyzer) noteTime(l *types.Log) {
	if l.BlockTimestamp != 0 {
		a.times[l.BlockNumber] = l.BlockTimestamp
	} else if _, ok := a.times[l.BlockNumber]; !ok {
		a.times[l.BlockNumber] = 0 // to be resolved from the block header
	}
}

func (a *analyzer) relation(tag [32]byte) int32 {
	if i, ok := a.relByTag[tag]; ok {
		return i
	}
	i := int32(len(a.rels))
	a.rels = append(a.rels, relation{tag: tag})
	a.relByTag[tag] = i
	return i
}

func appendRel(m map[common.Address][]int32, k common.Address, rel int32) {
	list := m[k]
	if slices.Contains(list, rel) {
		return
	}
	m[k] = append(list, rel)
}

// log consumes one log of a MedRec-ZK contract; logs must come in chain order.
func (a *analyzer) log(l *types.Log) {
	if l.Removed {
		return
	}
	a.stats.Logs++
	if len(l.Topics) == 0 {
		a.unexpected(l, "an anonymous log")
		return
	}
	t, x := l.Topics[0], a.abi
	var err error
	switch {
	case l.Address == a.d.AgentRegistry && t == x.providerAdded:
		var e *bindings.AgentRegistryProviderAdded
		if e, err = a.regs.UnpackProviderAddedEvent(l); err == nil {
			a.providers[e.Id] = &providerState{authority: e.Authority, gateway: e.Gateway, active: true, name: e.Name}
		}
	case l.Address == a.d.AgentRegistry && t == x.providerRemoved:
		var e *bindings.AgentRegistryProviderRemoved
		if e, err = a.regs.UnpackProviderRemovedEvent(l); err == nil {
			if p, ok := a.providers[e.Id]; ok {
				p.active = false
			} else {
				err = fmt.Errorf("removal of unknown provider %d", e.Id)
			}
		}
	case l.Address == a.d.AgentRegistry && t == x.gatewayChanged:
		var e *bindings.AgentRegistryGatewayChanged
		if e, err = a.regs.UnpackGatewayChangedEvent(l); err == nil {
			if p, ok := a.providers[e.Id]; ok {
				p.gateway = e.Gateway
			} else {
				err = fmt.Errorf("gateway change of unknown provider %d", e.Id)
			}
		}
	case l.Address == a.d.AgentRegistry && (t == x.proposed || t == x.voted || t == x.executed):
		// governance: nothing per patient
	case l.Address == a.d.PatientRegistry && t == x.enrolled:
		err = a.enrol(l)
	case l.Address == a.d.Relationships && t == x.opened:
		err = a.open(l)
	case l.Address == a.d.Relationships && t == x.rotated:
		var e rotatedEvent
		if e, err = decodeRotated(l); err == nil {
			i := a.relation(e.tag)
			a.rels[i].owner = e.owner
			appendRel(a.owners, e.owner, i)
			a.stats.Rotations++
		}
	case l.Address == a.d.Relationships && (t == x.granted || t == x.revoked):
		var e grantedEvent
		if e, err = decodeGranted(l, t == x.revoked); err == nil {
			err = a.grant(l, e, t == x.revoked)
		}
	case l.Address == a.d.Anchors && t == x.anchored:
		if len(l.Topics) != 3 || len(l.Data) != 4*32 {
			err = fmt.Errorf("%w: Anchored layout", ErrChainData)
		}
		a.stats.Anchors++
	default:
		a.unexpected(l, fmt.Sprintf("a log with unknown topic %s", t.Hex()))
		return
	}
	if err != nil {
		a.unexpected(l, fmt.Sprintf("a malformed log of a known event (%v)", err))
	}
}

func (a *analyzer) enrol(l *types.Log) error {
	e, err := decodeEnrolled(l)
	if err != nil {
		return err
	}
	switch {
	case e.start < a.leaves:
		return fmt.Errorf("enrolment at index %d, %d leaves seen", e.start, a.leaves)
	case e.start > a.leaves:
		// Leaves enrolled before the deployment record's first block: the
		// record is wrong, but the set sizes stay right.
		a.perPatient.add(Finding{Severity: SeverityNote, Block: l.BlockNumber,
			Message: fmt.Sprintf("enrolment index %d in block %d, but only %d enrolments seen before (deployment record's block too late?)", e.start, l.BlockNumber, a.leaves)})
		for range e.start - a.leaves {
			a.enrolBlocks = append(a.enrolBlocks, l.BlockNumber)
		}
	}
	// The registry keeps no record per commitment (it would cost more than
	// the insertion): a commitment enrolled twice is found here, and counted
	// once in the anonymity set.
	for i, c := range e.commitments {
		leaf := e.start + uint32(i)
		if first, dup := a.commitments[[16]byte(c[16:])]; dup {
			a.duplicates++
			a.perPatient.add(Finding{Severity: SeverityWarn, Block: l.BlockNumber, Tx: txp(l.TxHash),
				Message: fmt.Sprintf("commitment %s enrolled again at leaf %d by provider %d (first at leaf %d): the anonymity set counts it once", shortTag(c), leaf, e.provider, first)})
		} else {
			a.commitments[[16]byte(c[16:])] = leaf
		}
		a.enrolBlocks = append(a.enrolBlocks, l.BlockNumber)
	}
	a.leaves = e.start + uint32(len(e.commitments))
	a.rootSize[e.root] = a.members()
	a.noteTime(l)
	return nil
}

// members is the anonymity set's size now: the distinct commitments
// enrolled.
func (a *analyzer) members() uint32 { return a.leaves - a.duplicates }

func (a *analyzer) open(l *types.Log) error {
	e, err := decodeOpened(l)
	if err != nil {
		return err
	}
	i := a.relation(e.tag)
	a.rels[i].provider, a.rels[i].owner = e.provider, e.owner
	appendRel(a.owners, e.owner, i)
	o := openRec{
		rel: i, provider: e.provider, block: l.BlockNumber, logIndex: l.Index,
		tx: l.TxHash, blockHash: l.BlockHash, txIndex: l.TxIndex, enrolled: a.members(),
	}
	if p, ok := a.providers[e.provider]; ok {
		o.gateway, o.active = p.gateway, p.active
	}
	o.setSize, o.rootKnown = a.rootSize[e.root]
	if !o.rootKnown {
		o.setSize = a.members()
	}
	a.openByTx[l.TxHash] = append(a.openByTx[l.TxHash], int32(len(a.opens)))
	a.opens = append(a.opens, o)
	a.noteTime(l)
	return nil
}

func (a *analyzer) grant(l *types.Log, e grantedEvent, revoke bool) error {
	i := a.relation(e.tag)
	if p := a.rels[i].provider; p != 0 && !revoke {
		// Opened in range (an open precedes its grants), so its provider is final.
		a.grants = append(a.grants, grantRec{provider: p, rel: i, block: l.BlockNumber})
		a.noteTime(l)
		k := expiryAt{e.expiry, p}
		if x, ok := a.expiries[k]; !ok {
			a.expiries[k] = expiryRels{rel: i}
		} else if x.rel != i && !x.many {
			x.many = true
			a.expiries[k] = x
		}
	}
	switch e.kind {
	case 1:
		if !zeroPrefix(e.grantee[:], 12) {
			return fmt.Errorf("address grantee %x is not an address", e.grantee)
		}
		if revoke {
			a.stats.Revocations++
			return nil
		}
		appendRel(a.grantees, common.BytesToAddress(e.grantee[12:]), i)
		a.stats.AddressGrants++
	case 2:
		if revoke {
			a.stats.Revocations++
		} else {
			a.stats.AnonymousGrants++
		}
	default:
		return fmt.Errorf("grantee kind %d", e.kind)
	}
	return nil
}

// txInfo is what the transaction checks need of one mined transaction.
type txInfo struct {
	block    uint64
	hash     common.Hash
	from     common.Address
	to       *common.Address
	value    *big.Int
	selector []byte // up to 4 bytes of calldata
}

func newTxInfo(block uint64, tx *types.Transaction, from common.Address) txInfo {
	data := tx.Data()
	return txInfo{block: block, hash: tx.Hash(), from: from, to: tx.To(), value: tx.Value(), selector: data[:min(4, len(data))]}
}

func ether(wei *big.Int) string {
	if wei.Sign() == 0 {
		return "no ether"
	}
	f, _ := new(big.Rat).SetFrac(wei, big.NewInt(params.Ether)).Float64()
	return fmt.Sprintf("%g ether (%s wei)", f, wei)
}

// tx consumes one transaction of the audited range (after every log).
func (a *analyzer) tx(t txInfo) {
	a.stats.Transactions++
	if _, ok := a.owners[t.from]; ok {
		a.badDelegates[t.from] = true
		to := "a contract creation"
		if t.to != nil {
			to = t.to.Hex()
		}
		a.delegateEth.add(Finding{Severity: SeverityFail, Block: t.block, Tx: txp(t.hash), Addresses: []common.Address{t.from},
			Message: fmt.Sprintf("delegate %s sent transaction %s to %s in block %d", t.from.Hex(), t.hash.Hex(), to, t.block)})
	}
	if t.to == nil {
		return
	}
	if _, ok := a.owners[*t.to]; ok {
		a.badDelegates[*t.to] = true
		a.delegateEth.add(Finding{Severity: SeverityFail, Block: t.block, Tx: txp(t.hash), Addresses: []common.Address{*t.to, t.from},
			Message: fmt.Sprintf("delegate %s received %s from %s in transaction %s, block %d", t.to.Hex(), ether(t.value), t.from.Hex(), t.hash.Hex(), t.block)})
	}
	if *t.to == a.d.Relationships {
		if len(t.selector) < 4 || a.abi.relMethods[[4]byte(t.selector)] == "" {
			a.badCalls++
			sel := "no calldata"
			if len(t.selector) > 0 {
				sel = "selector 0x" + hex.EncodeToString(t.selector)
			}
			a.perPatient.add(Finding{Severity: SeverityFail, Block: t.block, Tx: txp(t.hash), Addresses: []common.Address{t.from},
				Message: fmt.Sprintf("transaction %s (block %d, from %s) calls Relationships with %s: not open, rotate, grant or revoke", t.hash.Hex(), t.block, t.from.Hex(), sel)})
		}
		for _, oi := range a.openByTx[t.hash] {
			a.opens[oi].sender, a.opens[oi].senderKnown = t.from, true
		}
	}
}

// delegateState records a delegate's nonce and balance at the audited head.
func (a *analyzer) delegateState(addr common.Address, nonce uint64, balance *big.Int) {
	if nonce > 0 || balance.Sign() > 0 {
		a.badDelegates[addr] = true
	}
	if nonce > 0 {
		a.delegateEth.add(Finding{Severity: SeverityFail, Addresses: []common.Address{addr},
			Message: fmt.Sprintf("delegate %s has sent %d transaction(s) (nonce at head)", addr.Hex(), nonce)})
	}
	if balance.Sign() > 0 {
		a.delegateEth.add(Finding{Severity: SeverityFail, Addresses: []common.Address{addr},
			Message: fmt.Sprintf("delegate %s holds %s at head", addr.Hex(), ether(balance))})
	}
}

func (a *analyzer) delegates() []common.Address {
	out := make([]common.Address, 0, len(a.owners))
	for k := range a.owners {
		out = append(out, k)
	}
	slices.SortFunc(out, func(x, y common.Address) int { return x.Cmp(y) })
	return out
}

func (a *analyzer) providerList(rels []int32) []uint32 {
	var ps []uint32
	for _, r := range rels {
		if p := a.rels[r].provider; p != 0 && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

func (a *analyzer) tagList(rels []int32) []string {
	out := make([]string, len(rels))
	for i, r := range rels {
		out[i] = tagHex(a.rels[r].tag)
	}
	return out
}

// finish computes checks 1–7 and the report's statistics.
func (a *analyzer) finish() ([]Check, []Cluster, Stats, *timeline) {
	a.stats.Providers = len(a.providers)
	a.stats.Enrolled, a.stats.DuplicateEnrolments = a.leaves, a.duplicates
	a.stats.Relationships = len(a.rels)
	a.stats.Opens = len(a.opens)
	a.stats.Delegates = len(a.owners)
	checks := []Check{a.checkAnonymity(), a.checkSharedOwner(), a.checkDelegates(), a.checkRelayer()}
	links, clusters := a.checkLinks()
	checks = append(checks, links, a.checkCloseOpens(), a.checkPerPatient())
	return checks, clusters, a.stats, a.timeline()
}

func (a *analyzer) checkAnonymity() Check {
	f := findings{max: a.cfg.MaxFindings}
	if len(a.opens) == 0 {
		return f.check(CheckAnonymitySet, "no opens in range")
	}
	sizes := make([]uint32, len(a.opens))
	below := 0
	for i, o := range a.opens {
		sizes[i] = o.setSize
		if o.setSize < a.cfg.MinAnonymity {
			below++
			msg := fmt.Sprintf("open of %s at provider %d in block %d: anonymity set %d (below %d)", shortTag(a.rels[o.rel].tag), o.provider, o.block, o.setSize, a.cfg.MinAnonymity)
			if o.enrolled != o.setSize {
				msg += fmt.Sprintf("; the proof used an older root (%d enrolled by then)", o.enrolled)
			}
			f.add(Finding{Severity: SeverityFail, Block: o.block, Tx: txp(o.tx), Providers: []uint32{o.provider}, Tags: []string{tagHex(a.rels[o.rel].tag)}, Message: msg})
		}
		if !o.rootKnown {
			f.add(Finding{Severity: SeverityNote, Block: o.block, Tx: txp(o.tx),
				Message: fmt.Sprintf("open in block %d proves against a root no enrolment produced; set size taken as the %d enrolled then", o.block, o.enrolled)})
		}
	}
	slices.Sort(sizes)
	a.stats.MinAnonymitySet = sizes[0]
	return f.check(CheckAnonymitySet, fmt.Sprintf("%d opens: smallest set %d, median %d; %d below %d",
		len(a.opens), sizes[0], sizes[len(sizes)/2], below, a.cfg.MinAnonymity))
}

func (a *analyzer) checkSharedOwner() Check {
	f := findings{max: a.cfg.MaxFindings}
	shared, reused := 0, 0
	for _, addr := range a.delegates() {
		rels := a.owners[addr]
		if len(rels) < 2 {
			continue
		}
		ps := a.providerList(rels)
		if len(ps) > 1 {
			shared++
			f.add(Finding{Severity: SeverityFail, Addresses: []common.Address{addr}, Providers: ps, Tags: a.tagList(rels),
				Message: fmt.Sprintf("address %s owns (or owned) relationships at providers %v", addr.Hex(), ps)})
		} else {
			reused++
			f.add(Finding{Severity: SeverityWarn, Addresses: []common.Address{addr}, Providers: ps, Tags: a.tagList(rels),
				Message: fmt.Sprintf("address %s owns %d relationships at provider %v: one delegate for several tags", addr.Hex(), len(rels), ps)})
		}
	}
	return f.check(CheckSharedOwner, fmt.Sprintf("%d owner addresses; %d at several providers, %d reused at one", len(a.owners), shared, reused))
}

func (a *analyzer) checkDelegates() Check {
	f := &a.delegateEth
	s := fmt.Sprintf("%d delegates; none sent a transaction or received ether", len(a.owners))
	if len(a.badDelegates) > 0 {
		s = fmt.Sprintf("%d delegates; %d sent a transaction or received ether", len(a.owners), len(a.badDelegates))
	}
	if a.cfg.LogsOnly {
		s += " (head state only: transactions not scanned)"
	}
	return f.check(CheckDelegateEth, s)
}

func (a *analyzer) checkRelayer() Check {
	f := &a.relays
	bad := 0
	for _, o := range a.opens {
		tag := a.rels[o.rel].tag
		base := Finding{Block: o.block, Tx: txp(o.tx), Providers: []uint32{o.provider}, Tags: []string{tagHex(tag)}}
		switch {
		case o.gateway == (common.Address{}):
			base.Severity, base.Message = SeverityFail, fmt.Sprintf("open of %s in block %d names provider %d, which was not registered then", shortTag(tag), o.block, o.provider)
		case !o.active:
			base.Severity, base.Message = SeverityFail, fmt.Sprintf("open of %s in block %d at provider %d, which was removed before", shortTag(tag), o.block, o.provider)
		case !o.senderKnown:
			base.Severity, base.Message = SeverityWarn, fmt.Sprintf("open of %s in block %d: sender of transaction %s unknown", shortTag(tag), o.block, o.tx.Hex())
		case o.sender != o.gateway:
			base.Severity, base.Message = SeverityFail, fmt.Sprintf("open of %s at provider %d in block %d sent by %s; the provider's gateway then was %s", shortTag(tag), o.provider, o.block, o.sender.Hex(), o.gateway.Hex())
			base.Addresses = []common.Address{o.sender, o.gateway}
		default:
			continue
		}
		if base.Severity == SeverityFail {
			bad++
		}
		f.add(base)
	}
	return f.check(CheckRelayer, fmt.Sprintf("%d opens; %d not relayed by the provider's gateway", len(a.opens), bad))
}

// checkLinks reports address grantees at several providers and the clusters
// of relationships that shared owners and grantees link (union–find).
func (a *analyzer) checkLinks() (Check, []Cluster) {
	f := findings{max: a.cfg.MaxFindings}
	parent := make([]int32, len(a.rels))
	for i := range parent {
		parent[i] = int32(i)
	}
	var find func(int32) int32
	find = func(x int32) int32 {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	union := func(rels []int32) {
		for _, r := range rels[1:] {
			x, y := find(rels[0]), find(r)
			if x != y {
				parent[y] = x
			}
		}
	}
	grantees := make([]common.Address, 0, len(a.grantees))
	for g := range a.grantees {
		grantees = append(grantees, g)
	}
	slices.SortFunc(grantees, func(x, y common.Address) int { return x.Cmp(y) })
	linking := 0
	for _, g := range grantees {
		rels := a.grantees[g]
		union(rels)
		if ps := a.providerList(rels); len(ps) > 1 {
			linking++
			f.add(Finding{Severity: SeverityFail, Addresses: []common.Address{g}, Providers: ps, Tags: a.tagList(rels),
				Message: fmt.Sprintf("address grantee %s holds grants on %d relationships at providers %v: they may be one patient's", g.Hex(), len(rels), ps)})
		}
	}
	for _, rels := range a.owners {
		union(rels)
	}
	// Group relationships by root; keep groups spanning providers.
	size := make([]int32, len(a.rels))
	for i := range a.rels {
		size[find(int32(i))]++
	}
	groups := map[int32][]int32{}
	for i := range a.rels {
		if r := find(int32(i)); size[r] > 1 {
			groups[r] = append(groups[r], int32(i))
		}
	}
	byRoot := map[int32]*Cluster{}
	for root, rels := range groups {
		if ps := a.providerList(rels); len(ps) > 1 {
			byRoot[root] = &Cluster{Providers: ps, Tags: a.tagList(rels)}
		}
	}
	for _, g := range grantees {
		if rels := a.grantees[g]; len(rels) > 1 {
			if c, ok := byRoot[find(rels[0])]; ok {
				c.Grantees = append(c.Grantees, g)
			}
		}
	}
	for _, o := range a.delegates() {
		if rels := a.owners[o]; len(rels) > 1 {
			if c, ok := byRoot[find(rels[0])]; ok {
				c.Owners = append(c.Owners, o)
			}
		}
	}
	clusters := make([]Cluster, 0, len(byRoot))
	for _, c := range byRoot {
		clusters = append(clusters, *c)
	}
	sort.Slice(clusters, func(i, j int) bool {
		if len(clusters[i].Tags) != len(clusters[j].Tags) {
			return len(clusters[i].Tags) > len(clusters[j].Tags)
		}
		return clusters[i].Tags[0] < clusters[j].Tags[0]
	})
	s := fmt.Sprintf("%d address grantees; %d at several providers; %d linked clusters", len(a.grantees), linking, len(clusters))
	if len(clusters) > 0 {
		s += fmt.Sprintf(" (largest: %d relationships at %d providers)", len(clusters[0].Tags), len(clusters[0].Providers))
	}
	if len(clusters) > a.cfg.MaxFindings {
		clusters = clusters[:a.cfg.MaxFindings]
	}
	return f.check(CheckGranteeLinks, s), clusters
}

// closePairs counts pairs of events at different providers less than the
// window apart, with a sliding window over the events sorted by block time
// (O(n log n)), and adds a warning for each event's nearest earlier event at
// another provider while f has room. event(i) is event i's provider and
// block; finding(i, j, dt) describes event i close to earlier event j.
func (a *analyzer) closePairs(n int, event func(int32) (uint32, uint64), f *findings, finding func(i, j int32, dt time.Duration) Finding) int {
	order := make([]int32, n)
	for i := range order {
		order[i] = int32(i)
	}
	tm := func(i int32) uint64 { _, b := event(i); return a.times[b] }
	prov := func(i int32) uint32 { p, _ := event(i); return p }
	slices.SortStableFunc(order, func(x, y int32) int {
		if tx, ty := tm(x), tm(y); tx != ty {
			if tx < ty {
				return -1
			}
			return 1
		}
		return 0
	})
	w := uint64(a.cfg.Window / time.Second)
	inWindow := map[uint32]int{}
	lo, pairs := 0, 0
	for hi, i := range order {
		t := tm(i)
		for lo < hi && tm(order[lo])+w < t {
			inWindow[prov(order[lo])]--
			lo++
		}
		p := prov(i)
		k := (hi - lo) - inWindow[p]
		pairs += k
		if k > 0 && len(f.list) < f.max {
			// List the nearest earlier event at another provider.
			for m := hi - 1; m >= lo; m-- {
				if j := order[m]; prov(j) != p {
					f.add(finding(i, j, time.Duration(t-tm(j))*time.Second))
					break
				}
			}
		} else if k > 0 {
			f.warns++
			f.omitted++
		}
		inWindow[p]++
	}
	return pairs
}

// checkCloseOpens counts pairs of opens at different providers within the
// window and lists the first ones.
func (a *analyzer) checkCloseOpens() Check {
	f := findings{max: a.cfg.MaxFindings}
	pairs := a.closePairs(len(a.opens), func(i int32) (uint32, uint64) { return a.opens[i].provider, a.opens[i].block }, &f,
		func(i, j int32, dt time.Duration) Finding {
			o, q := a.opens[i], a.opens[j]
			return Finding{Severity: SeverityWarn, Block: o.block, Providers: []uint32{q.provider, o.provider},
				Tags:    []string{tagHex(a.rels[q.rel].tag), tagHex(a.rels[o.rel].tag)},
				Message: fmt.Sprintf("opens at providers %d (block %d) and %d (block %d) %s apart", q.provider, q.block, o.provider, o.block, dt)}
		})
	return f.check(CheckCloseOpens, fmt.Sprintf("%d pairs of opens at different providers within %s", pairs, a.cfg.Window))
}

// checkGrantTimes warns on grants whose times could tie relationships at
// different providers together: grants made within the window of each other
// (a patient sharing at several providers in one sitting), and grants ending
// at the same moment — to the second (the same "now + N days", or a chosen
// end), or at the same rounded 00:00 UTC where each of two providers holds
// exactly one relationship with that end, so the pairing is unambiguous.
// Warnings only: unrelated patients coincide too, more so on a busy network.
func (a *analyzer) checkGrantTimes() Check {
	f := findings{max: a.cfg.MaxFindings}
	pairs := a.closePairs(len(a.grants), func(i int32) (uint32, uint64) { return a.grants[i].provider, a.grants[i].block }, &f,
		func(i, j int32, dt time.Duration) Finding {
			g, q := a.grants[i], a.grants[j]
			return Finding{Severity: SeverityWarn, Block: g.block, Providers: []uint32{q.provider, g.provider},
				Tags:    []string{tagHex(a.rels[q.rel].tag), tagHex(a.rels[g.rel].tag)},
				Message: fmt.Sprintf("grants at providers %d (block %d) and %d (block %d) %s apart", q.provider, q.block, g.provider, g.block, dt)}
		})
	// Group the expiries by value, in order, for stable findings.
	byExpiry := map[uint64][]uint32{}
	for k := range a.expiries {
		byExpiry[k.expiry] = append(byExpiry[k.expiry], k.provider)
	}
	values := make([]uint64, 0, len(byExpiry))
	for e, ps := range byExpiry {
		if len(ps) > 1 {
			values = append(values, e)
		}
	}
	slices.Sort(values)
	const day = 24 * 60 * 60
	shared, toSecond, unambiguous := len(values), 0, 0
	for _, e := range values {
		ps := byExpiry[e]
		slices.Sort(ps)
		rounded := e%day == 0
		var single []uint32 // providers with exactly one relationship ending then
		var tags []string
		for _, p := range ps {
			x := a.expiries[expiryAt{e, p}]
			if !x.many {
				single = append(single, p)
				tags = append(tags, tagHex(a.rels[x.rel].tag))
			}
		}
		end := time.Unix(int64(e), 0).UTC().Format(time.RFC3339)
		switch {
		case !rounded:
			toSecond++
			f.add(Finding{Severity: SeverityWarn, Providers: ps, Tags: tags,
				Message: fmt.Sprintf("grants at providers %v end in the same second, %s", ps, end)})
		case len(single) > 1:
			unambiguous++
			f.add(Finding{Severity: SeverityWarn, Providers: single, Tags: tags,
				Message: fmt.Sprintf("the only grants ending at %s at providers %v: one relationship each", end, single)})
		}
	}
	return f.check(CheckGrantTimes, fmt.Sprintf("%d pairs of grants at different providers within %s; %d expiries shared across providers (%d to the second, %d unambiguous at 00:00 UTC)",
		pairs, a.cfg.Window, shared, toSecond, unambiguous))
}

func (a *analyzer) checkPerPatient() Check {
	s := fmt.Sprintf("%d unexpected logs, %d other calls to Relationships", a.unknownTopics, a.badCalls)
	if a.cfg.LogsOnly {
		s += " (calls not scanned: --logs-only)"
	}
	return a.perPatient.check(CheckPerPatient, s)
}
