package audit

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
)

// A script is a small synthetic chain: per block, transactions with the logs
// they emit. Addresses are named like go-ethereum's clique tests name signers.

type scriptTx struct {
	from  common.Address
	to    *common.Address
	value *big.Int
	data  []byte
	logs  []types.Log
}

type script map[uint64][]scriptTx

func (s script) gen(b uint64) ([]*types.Transaction, []types.Log) {
	var txs []*types.Transaction
	var logs []types.Log
	for i, t := range s[b] {
		data := t.data
		if data == nil && len(t.logs) > 0 && len(t.logs[0].Topics) > 0 {
			data = callFor[t.logs[0].Topics[0]]
		}
		txs = append(txs, synthTx(b<<16|uint64(i), t.from, t.to, t.value, data))
		for _, l := range t.logs {
			l.TxIndex = uint(i)
			logs = append(logs, l)
		}
	}
	return txs, logs
}

// callFor maps an event to the calldata prefix of the call that emits it.
var callFor = func() map[common.Hash][]byte {
	m := map[common.Hash][]byte{}
	for _, x := range []struct {
		md            *bind.MetaData
		event, method string
	}{
		{&bindings.RelationshipsMetaData, "Opened", "open"}, {&bindings.RelationshipsMetaData, "Rotated", "rotate"},
		{&bindings.RelationshipsMetaData, "Granted", "grant"}, {&bindings.RelationshipsMetaData, "Revoked", "revoke"},
		{&bindings.PatientRegistryMetaData, "Enrolled", "enrol"}, {&bindings.AnchorsMetaData, "Anchored", "anchor"},
		{&bindings.AgentRegistryMetaData, "GatewayChanged", "setGateway"},
	} {
		a := mustABI(x.md)
		m[a.Events[x.event].ID] = append([]byte(nil), a.Methods[x.method].ID...)
	}
	return m
}()

func addr(name string) common.Address {
	return common.BytesToAddress(crypto.Keccak256([]byte("audit test/" + name))[12:])
}

func tag(name string) *big.Int {
	return new(big.Int).SetBytes(crypto.Keccak256([]byte("tag/" + name))[:31])
}

// world builds scripts against a synthetic deployment.
type world struct {
	d *contracts.Deployment
	s script
}

func newWorld() *world {
	w := &world{d: synthDeployment(), s: script{}}
	for id := uint32(1); id <= 2; id++ {
		w.at(1, w.gateway(0), nil, eventLog(&bindings.AgentRegistryMetaData, w.d.AgentRegistry, 0, "ProviderAdded",
			id, addr(fmtID("authority", id)), w.gateway(id), fmtID("Provider", id), "http://gw"))
	}
	return w
}

func fmtID(s string, id uint32) string { return s + "-" + string(rune('0'+id)) }

func (w *world) gateway(id uint32) common.Address { return addr(fmtID("gateway", id)) }

func (w *world) at(b uint64, from common.Address, to *common.Address, logs ...types.Log) {
	if to == nil && len(logs) > 0 {
		a := logs[0].Address
		to = &a
	}
	w.s[b] = append(w.s[b], scriptTx{from: from, to: to, logs: logs})
}

func (w *world) enrol(b uint64, provider uint32, index uint32) {
	w.at(b, w.gateway(provider), nil, eventLog(&bindings.PatientRegistryMetaData, w.d.PatientRegistry, 0, "Enrolled",
		provider, index, rootOf(index), []*big.Int{tag("commitment" + string(rune(index)))}))
}

func rootOf(index uint32) *big.Int { return tag("root" + string(rune(index))) }

func (w *world) open(b uint64, sender common.Address, provider uint32, t, owner string, root *big.Int) {
	w.at(b, sender, nil, eventLog(&bindings.RelationshipsMetaData, w.d.Relationships, 0, "Opened", tag(t), provider, addr(owner), root))
}

func (w *world) grant(b uint64, t string, grantee common.Address) {
	w.at(b, addr("relayer"), nil, eventLog(&bindings.RelationshipsMetaData, w.d.Relationships, 0, "Granted",
		tag(t), uint8(1), [32]byte(common.LeftPadBytes(grantee[:], 32)), uint64(5), uint8(1), uint64(2_000_000_000), uint32(0)))
}

func (w *world) chain(head uint64) *synthChain {
	c := newSynthChain(head, w.s.gen)
	c.relOf = func([32]byte) bindings.RelationshipsRelationship {
		return bindings.RelationshipsRelationship{Provider: 2}
	}
	return c
}

func mustRun(t *testing.T, src Source, d *contracts.Deployment, cfg Config) *Report {
	t.Helper()
	r, err := Run(context.Background(), src, d, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// expect checks a check's status and that some finding mentions each of want.
func expect(t *testing.T, r *Report, name string, status Status, want ...string) *Check {
	t.Helper()
	c, ok := r.Check(name)
	if !ok {
		t.Fatalf("no check %s", name)
	}
	if c.Status != status {
		t.Fatalf("%s: status %s, want %s (%s): %+v", name, c.Status, status, c.Summary, c.Findings)
	}
	for _, s := range want {
		found := false
		for _, f := range c.Findings {
			found = found || strings.Contains(f.Message, s)
		}
		if !found {
			t.Fatalf("%s: no finding mentions %q: %+v", name, s, c.Findings)
		}
	}
	return c
}

// TestNonRelayerOpen: the contract refuses an open from anyone but the
// provider's gateway, so a violation cannot be planted on a real chain; the
// check's logic is tested here. The gateway that counts is the one at the
// open's log position, not today's.
func TestNonRelayerOpen(t *testing.T) {
	w := newWorld()
	for i := range uint32(3) {
		w.enrol(2, 1, i)
	}
	w.open(3, w.gateway(2), 1, "a", "owner-a", rootOf(2)) // another provider's gateway
	w.open(4, w.gateway(1), 1, "b", "owner-b", rootOf(2)) // fine
	w.at(5, addr("authority-1"), nil, eventLog(&bindings.AgentRegistryMetaData, w.d.AgentRegistry, 0, "GatewayChanged", uint32(1), addr("gateway-new"), "http://new"))
	w.open(6, w.gateway(1), 1, "c", "owner-c", rootOf(2))        // the old gateway, after the change
	w.open(7, addr("gateway-new"), 1, "d", "owner-d", rootOf(2)) // fine
	w.open(8, addr("gateway-new"), 9, "e", "owner-e", rootOf(2)) // no such provider
	for _, logsOnly := range []bool{false, true} {
		r := mustRun(t, w.chain(10), w.d, Config{LogsOnly: logsOnly})
		c := expect(t, r, CheckRelayer, StatusFail, "block 3 sent by "+w.gateway(2).Hex(), "block 6 sent by "+w.gateway(1).Hex(), "provider 9")
		if len(c.Findings) != 3 {
			t.Fatalf("logsOnly %v: %d relayer findings, want 3: %+v", logsOnly, len(c.Findings), c.Findings)
		}
	}
}

// TestUnknownActivity: a log with an unknown topic, a malformed log of a
// known event, and a call to Relationships outside open/rotate/grant/revoke
// (a per-tag "records updated") are each reported.
func TestUnknownActivity(t *testing.T) {
	w := newWorld()
	w.enrol(2, 1, 0)
	w.enrol(2, 1, 1)
	w.open(3, w.gateway(1), 1, "a", "owner-a", rootOf(1))
	updated := crypto.Keccak256Hash([]byte("RecordsUpdated(uint256)"))
	w.at(4, w.gateway(1), nil, types.Log{Address: w.d.Relationships, Topics: []common.Hash{updated, common.BigToHash(tag("a"))}})
	bad := eventLog(&bindings.RelationshipsMetaData, w.d.Relationships, 0, "Opened", tag("b"), uint32(1), addr("owner-b"), rootOf(1))
	bad.Data = bad.Data[:40]
	w.at(5, w.gateway(1), nil, bad)
	rels := w.d.Relationships
	w.s[6] = append(w.s[6], scriptTx{from: w.gateway(1), to: &rels, data: append(crypto.Keccak256([]byte("recordsUpdated(uint256)"))[:4], make([]byte, 32)...)})
	w.s[6] = append(w.s[6], scriptTx{from: addr("someone"), to: &rels, value: big.NewInt(1)})
	r := mustRun(t, w.chain(8), w.d, Config{})
	expect(t, r, CheckPerPatient, StatusFail, "unknown topic "+updated.Hex(), "malformed log", "selector 0x", "no calldata")
	// Without the transaction scan, the calls are not seen but the logs are.
	r = mustRun(t, w.chain(8), w.d, Config{LogsOnly: true})
	c := expect(t, r, CheckPerPatient, StatusFail, "unknown topic")
	if len(c.Findings) != 2 {
		t.Fatalf("logs only: %+v", c.Findings)
	}
}

func TestSignerDrift(t *testing.T) {
	w := newWorld()
	a, b, x := addr("authority-1"), addr("authority-2"), addr("intruder")
	tests := []struct {
		name   string
		src    func(c *synthChain) Source
		status Status
		want   []string
	}{
		{"not clique", func(c *synthChain) Source { return c }, StatusSkip, nil},
		{"same set", func(c *synthChain) Source { return cliqueChain{c, []common.Address{b, a}} }, StatusPass, nil},
		{"extra signer", func(c *synthChain) Source { return cliqueChain{c, []common.Address{a, b, x}} }, StatusFail, []string{x.Hex() + " signs blocks"}},
		{"missing signer", func(c *synthChain) Source { return cliqueChain{c, []common.Address{a}} }, StatusFail, []string{b.Hex() + " is an active provider"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := w.chain(3)
			c.signers = []common.Address{a, b}
			r := mustRun(t, tt.src(c), w.d, Config{})
			expect(t, r, CheckSigners, tt.status, tt.want...)
		})
	}
}

func TestRunRefuses(t *testing.T) {
	w := newWorld()
	from := func(b uint64) *uint64 { return &b }
	tests := []struct {
		name  string
		setup func(c *synthChain, d *contracts.Deployment, cfg *Config)
		want  error
	}{
		{"wrong chain", func(c *synthChain, d *contracts.Deployment, _ *Config) { c.chainID = big.NewInt(1) }, ErrWrongChain},
		{"not deployed", func(c *synthChain, d *contracts.Deployment, _ *Config) { delete(c.code, d.Anchors) }, contracts.ErrNotDeployed},
		{"range too large", func(_ *synthChain, _ *contracts.Deployment, cfg *Config) { cfg.MaxRange = 5 }, ErrRangeTooLarge},
		{"from after head", func(_ *synthChain, _ *contracts.Deployment, cfg *Config) { cfg.From = from(11) }, ErrRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := w.chain(10)
			cfg := Config{}
			tt.setup(c, w.d, &cfg)
			_, err := Run(context.Background(), c, w.d, cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	// --from inside the range: registry and enrolments are still read from the
	// deployment block, so the later open's set size and gateway are known.
	w.enrol(2, 1, 0)
	w.enrol(2, 2, 1)
	w.open(4, w.gateway(2), 2, "a", "owner-a", rootOf(1))
	w.grant(4, "old", addr("doctor")) // on a relationship opened before the range
	r := mustRun(t, w.chain(6), w.d, Config{From: from(3)})
	expect(t, r, CheckAnonymitySet, StatusPass)
	expect(t, r, CheckRelayer, StatusPass)
	if r.Stats.Enrolled != 2 || r.Stats.MinAnonymitySet != 2 || r.FromBlock != 3 {
		t.Fatalf("stats %+v", r.Stats)
	}
}

// TestTimesFromHeaders: a node whose logs carry no block timestamps; the
// close-opens check reads them from headers.
func TestTimesFromHeaders(t *testing.T) {
	w := newWorld()
	w.enrol(2, 1, 0)
	w.enrol(2, 1, 1)
	w.open(3, w.gateway(1), 1, "a", "owner-a", rootOf(1))
	w.open(4, w.gateway(2), 2, "b", "owner-b", rootOf(1))   // 5 s later
	w.open(500, w.gateway(2), 2, "c", "owner-c", rootOf(1)) // far later
	for _, logsOnly := range []bool{false, true} {
		c := w.chain(600)
		c.stamp = false
		r := mustRun(t, c, w.d, Config{LogsOnly: logsOnly, Window: time.Minute})
		ch := expect(t, r, CheckCloseOpens, StatusWarn, "opens at providers 1 (block 3) and 2 (block 4) 5s apart")
		if len(ch.Findings) != 1 || r.Failed() {
			t.Fatalf("close opens: %+v; checks %+v", ch.Findings, r.Checks)
		}
	}
}

// TestOlderRoot: a proof against a root from before later enrolments has the
// smaller anonymity set of that root, not the count at the open's block.
func TestOlderRoot(t *testing.T) {
	w := newWorld()
	w.enrol(2, 1, 0)
	w.enrol(2, 1, 1)
	for i := uint32(2); i < 5; i++ {
		w.enrol(3, 2, i)
	}
	w.open(4, w.gateway(1), 1, "a", "owner-a", rootOf(1))
	r := mustRun(t, w.chain(5), w.d, Config{MinAnonymity: 3})
	expect(t, r, CheckAnonymitySet, StatusFail, "anonymity set 2 (below 3); the proof used an older root (5 enrolled by then)")
	if r.Stats.MinAnonymitySet != 2 {
		t.Fatalf("stats %+v", r.Stats)
	}
}

// narrowNode refuses log queries over more than maxSpan blocks, as public
// endpoints do.
type narrowNode struct {
	*synthChain
	maxSpan uint64
	queries int
}

func (n *narrowNode) FilterLogs(ctx context.Context, q ethereum.FilterQuery) ([]types.Log, error) {
	n.queries++
	if q.ToBlock.Uint64()-q.FromBlock.Uint64()+1 > n.maxSpan {
		return nil, errors.New("query exceeds max block range")
	}
	return n.synthChain.FilterLogs(ctx, q)
}

// TestLogSpansAdapt: spans halve until the node accepts them, and the result
// is the same as over a permissive node.
func TestLogSpansAdapt(t *testing.T) {
	c := benchChain(300)
	want := mustRun(t, c, c.d, Config{})
	n := &narrowNode{synthChain: benchChain(300), maxSpan: 37}
	got := mustRun(t, n, n.d, Config{LogBatch: 1000})
	if got.Stats != want.Stats {
		t.Fatalf("stats over a narrow node %+v, want %+v", got.Stats, want.Stats)
	}
	if n.queries > 40 {
		t.Fatalf("%d log queries for 301 blocks", n.queries)
	}
}

// TestDuplicateEnrolment: the registry keeps no record per commitment, so
// the same commitment can be a second leaf (two gateways enrolling it at
// once). The audit reports it and counts it once in the anonymity set; a
// batch's leaves are each counted.
func TestDuplicateEnrolment(t *testing.T) {
	w := newWorld()
	batch := func(b uint64, provider, start uint32, root *big.Int, commitments ...string) {
		cs := make([]*big.Int, len(commitments))
		for i, c := range commitments {
			cs[i] = tag(c)
		}
		w.at(b, w.gateway(provider), nil, eventLog(&bindings.PatientRegistryMetaData, w.d.PatientRegistry, 0, "Enrolled", provider, start, root, cs))
	}
	batch(2, 1, 0, tag("root-a"), "alice", "bob", "carol")
	batch(3, 2, 3, tag("root-b"), "dave", "bob")
	w.open(5, w.gateway(2), 2, "b", "owner-b", tag("root-b"))
	r := mustRun(t, w.chain(6), w.d, Config{MinAnonymity: 2})
	c := expect(t, r, CheckPerPatient, StatusWarn, "enrolled again at leaf 4 by provider 2 (first at leaf 1)")
	if len(c.Findings) != 1 {
		t.Fatalf("findings %+v", c.Findings)
	}
	// The open proves against the root of 5 leaves: 4 patients.
	if r.Stats.Enrolled != 5 || r.Stats.DuplicateEnrolments != 1 || r.Stats.MinAnonymitySet != 4 {
		t.Fatalf("stats %+v", r.Stats)
	}
}
