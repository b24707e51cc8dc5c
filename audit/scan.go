package audit

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	neturl "net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/prover"
)

// Defaults of Config.
const (
	DefaultMinAnonymity = 2
	DefaultWindow       = 10 * time.Minute
	DefaultMaxRange     = 5_000_000
	DefaultLogBatch     = 2_000
	DefaultConcurrency  = 8
	DefaultMaxFindings  = 1_000
	maxLogBatch         = 100_000
)

// Config tunes an audit; zero values take the defaults.
type Config struct {
	// From is the first block audited (default: the deployment record's
	// block). The registry's and the patient tree's events are read from the
	// deployment block regardless, so gateways and anonymity sets stay exact.
	From *uint64
	// MinAnonymity: an open whose anonymity set is smaller fails (default 2).
	MinAnonymity uint32
	// Window: opens, and grants, at different providers closer than this
	// warn (default 10m).
	Window time.Duration
	// MaxRange caps the audited block range (default 5,000,000).
	MaxRange uint64
	// LogBatch is the first block span of a log query; it grows while answers
	// are small and halves when the node refuses (default 2,000).
	LogBatch uint64
	// Concurrency bounds the RPC requests in flight (default 8).
	Concurrency int
	// LogsOnly skips the block-by-block transaction scan: delegates are then
	// judged by their state at head only, open senders are fetched one by one,
	// and calls to Relationships that emitted nothing are not seen.
	LogsOnly bool
	// MaxFindings caps the findings listed per check (default 1,000); the rest
	// are counted.
	MaxFindings int
	// Keys are key sets the auditor knows (e.g. the ceremony's); with them a
	// verifier mismatch names the verifier. The dev keys are always known.
	Keys []*prover.KeySet
	// Progress, if set, is called as the audit advances.
	Progress func(stage string, done, total uint64)
}

func (c Config) withDefaults() Config {
	if c.MinAnonymity == 0 {
		c.MinAnonymity = DefaultMinAnonymity
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.MaxRange == 0 {
		c.MaxRange = DefaultMaxRange
	}
	if c.LogBatch == 0 {
		c.LogBatch = DefaultLogBatch
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxFindings <= 0 {
		c.MaxFindings = DefaultMaxFindings
	}
	if c.Progress == nil {
		c.Progress = func(string, uint64, uint64) {}
	}
	return c
}

// Dial connects to a JSON-RPC endpoint (http, https, ws, wss or an IPC
// path), sending headers with every HTTP request — the place for an API key,
// which must not be in the URL. The returned Source also offers raw calls
// (RawCaller), which the signer check uses. Errors never repeat the URL.
func Dial(ctx context.Context, url string, headers http.Header) (Source, error) {
	opts := []rpc.ClientOption{rpc.WithHTTPClient(&http.Client{Timeout: 2 * time.Minute})}
	if len(headers) > 0 {
		opts = append(opts, rpc.WithHeaders(headers))
	}
	c, err := rpc.DialOptions(ctx, url, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrRPC, Redact(err.Error(), url))
	}
	return rpcSource{ethclient.NewClient(c)}, nil
}

type rpcSource struct{ *ethclient.Client }

func (s rpcSource) CallContext(ctx context.Context, result any, method string, args ...any) error {
	return s.Client.Client().CallContext(ctx, result, method, args...)
}

// Redact removes an RPC URL, and any credentials or query it carries, from
// a message.
func Redact(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	secrets := []string{rawURL}
	if u, err := neturl.Parse(rawURL); err == nil {
		secrets = append(secrets, u.Redacted(), u.String())
		if _, ok := u.User.Password(); ok { // net/http prints the password as ***
			secrets = append(secrets, strings.Replace(u.Redacted(), ":xxxxx@", ":***@", 1))
		}
		if p, ok := u.User.Password(); ok && len(p) >= 4 {
			secrets = append(secrets, p)
		}
		if u.RawQuery != "" {
			secrets = append(secrets, u.RawQuery)
			for _, vs := range u.Query() {
				for _, v := range vs {
					if len(v) >= 4 { // shorter values are not keys, and would mangle the text
						secrets = append(secrets, v, neturl.QueryEscape(v))
					}
				}
			}
		}
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) }) // longest first
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "<rpc>")
	}
	return msg
}

// scan drives the analyzer over a chain.
type scan struct {
	src      Source
	d        *contracts.Deployment
	cfg      Config
	a        *analyzer
	from, to uint64
	at       *big.Int // the audited head, for every state read
}

// Run audits deployment d on the chain behind src.
func Run(ctx context.Context, src Source, d *contracts.Deployment, cfg Config) (*Report, error) {
	start := time.Now()
	cfg = cfg.withDefaults()
	id, err := src.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRPC, err)
	}
	if id.Cmp(d.ChainID) != 0 {
		return nil, fmt.Errorf("%w: the endpoint serves chain %v, the deployment record is for chain %v", ErrWrongChain, id, d.ChainID)
	}
	head, err := src.HeaderByNumber(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: head: %v", ErrRPC, err)
	}
	s := &scan{src: src, d: d, cfg: cfg, from: d.Block, to: head.Number.Uint64()}
	s.at = new(big.Int).SetUint64(s.to)
	if cfg.From != nil {
		s.from = *cfg.From
	}
	if s.from > s.to {
		return nil, fmt.Errorf("%w: first block %d is after the head %d", ErrRange, s.from, s.to)
	}
	if n := s.to - s.from + 1; n > cfg.MaxRange {
		return nil, fmt.Errorf("%w: %d blocks (%d–%d) exceed the cap of %d; audit from a later block or raise the cap", ErrRangeTooLarge, n, s.from, s.to, cfg.MaxRange)
	}
	for _, c := range deployed(d) {
		code, err := src.CodeAt(ctx, c.addr, s.at)
		if err != nil {
			return nil, fmt.Errorf("%w: code of %s: %v", ErrRPC, c.name, err)
		}
		if len(code) == 0 {
			return nil, fmt.Errorf("%w: no %s code at %s (block %d)", contracts.ErrNotDeployed, c.name, c.addr, s.to)
		}
	}
	if s.a, err = newAnalyzer(d, cfg); err != nil {
		return nil, err
	}

	if s.from > d.Block {
		if err := s.logs(ctx, "registry logs", d.Block, s.from-1, []common.Address{d.AgentRegistry, d.PatientRegistry}); err != nil {
			return nil, err
		}
	}
	var all []common.Address
	for _, c := range deployed(d) {
		all = append(all, c.addr)
	}
	if err := s.logs(ctx, "logs", s.from, s.to, all); err != nil {
		return nil, err
	}
	if cfg.LogsOnly {
		err = s.openSenders(ctx)
	} else {
		err = s.transactions(ctx)
	}
	if err != nil {
		return nil, err
	}
	if err := s.resolveProviders(ctx); err != nil {
		return nil, err
	}
	if err := s.resolveTimes(ctx); err != nil {
		return nil, err
	}
	if err := s.delegates(ctx); err != nil {
		return nil, err
	}
	checks, clusters, stats, tl := s.a.finish()
	checks = append(checks, s.checkVerifiers(ctx), s.checkSigners(ctx), s.a.checkGrantTimes())
	stats.Blocks = s.to - s.from + 1
	r := &Report{
		ChainID: id.String(), FromBlock: s.from, ToBlock: s.to, HeadTime: time.Unix(int64(head.Time), 0).UTC(),
		LogsOnly: cfg.LogsOnly, Stats: stats, Checks: checks, Clusters: clusters, timeline: tl,
		Contracts: map[string]string{},
		Settings: map[string]string{
			"minAnonymity": fmt.Sprint(cfg.MinAnonymity), "window": cfg.Window.String(), "maxRange": fmt.Sprint(cfg.MaxRange),
		},
	}
	for _, c := range deployed(d) {
		r.Contracts[c.name] = c.addr.Hex()
	}
	r.Passed = !r.Failed()
	r.Elapsed = time.Since(start).Round(time.Millisecond).String()
	return r, nil
}

type namedAddr struct {
	name string
	addr common.Address
}

func deployed(d *contracts.Deployment) []namedAddr {
	return []namedAddr{
		{"AgentRegistry", d.AgentRegistry}, {"PatientRegistry", d.PatientRegistry}, {"Relationships", d.Relationships},
		{"Anchors", d.Anchors}, {"OwnershipVerifier", d.OwnershipVerifier}, {"EntitlementVerifier", d.EntitlementVerifier},
	}
}

// logs feeds the logs of addrs in [from, to] to the analyzer, in chain order,
// in block spans that adapt to what the node accepts.
func (s *scan) logs(ctx context.Context, stage string, from, to uint64, addrs []common.Address) error {
	batch, ceiling := s.cfg.LogBatch, uint64(maxLogBatch)
	for lo := from; lo <= to; {
		hi := to
		if to-lo >= batch {
			hi = lo + batch - 1
		}
		logs, err := s.src.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(lo), ToBlock: new(big.Int).SetUint64(hi), Addresses: addrs,
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if hi > lo { // too many results or too wide a span: halve and retry
				batch = max(1, (hi-lo+1)/2)
				ceiling = batch
				continue
			}
			return fmt.Errorf("%w: logs of block %d: %v", ErrRPC, lo, err)
		}
		if !slices.IsSortedFunc(logs, logOrder) {
			slices.SortFunc(logs, logOrder)
		}
		for i := range logs {
			if logs[i].BlockNumber < lo || logs[i].BlockNumber > hi {
				return fmt.Errorf("%w: the node returned a log of block %d for blocks %d–%d", ErrChainData, logs[i].BlockNumber, lo, hi)
			}
			s.a.log(&logs[i])
		}
		s.cfg.Progress(stage, hi-from+1, to-from+1)
		if hi == to {
			break
		}
		lo = hi + 1
		if len(logs) < 5_000 && batch < ceiling {
			batch = min(batch*2, ceiling)
		}
	}
	return nil
}

func logOrder(x, y types.Log) int {
	if x.BlockNumber != y.BlockNumber {
		if x.BlockNumber < y.BlockNumber {
			return -1
		}
		return 1
	}
	return int(x.Index) - int(y.Index)
}

// parallel runs f(i) for i in [0, n) on up to workers goroutines and returns
// the first error.
func parallel(ctx context.Context, n, workers int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		next  = make(chan int)
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

type blockTxs struct {
	number, time uint64
	txs          []txInfo
}

// transactions feeds every transaction of the range to the analyzer; blocks
// are fetched concurrently, consumed as they arrive (the checks do not depend
// on transaction order).
func (s *scan) transactions(ctx context.Context) error {
	n := s.to - s.from + 1
	out := make(chan blockTxs, 4*s.cfg.Concurrency)
	errc := make(chan error, 1)
	go func() {
		errc <- parallel(ctx, int(n), s.cfg.Concurrency, func(ctx context.Context, i int) error {
			num := s.from + uint64(i)
			b, err := s.src.BlockByNumber(ctx, new(big.Int).SetUint64(num))
			if err != nil {
				return fmt.Errorf("%w: block %d: %v", ErrRPC, num, err)
			}
			bt := blockTxs{number: num, time: b.Time(), txs: make([]txInfo, 0, len(b.Transactions()))}
			for j, tx := range b.Transactions() {
				from, err := s.src.TransactionSender(ctx, tx, b.Hash(), uint(j))
				if err != nil {
					return fmt.Errorf("%w: sender of %s: %v", ErrRPC, tx.Hash(), err)
				}
				bt.txs = append(bt.txs, newTxInfo(num, tx, from))
			}
			select {
			case out <- bt:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		close(out)
	}()
	var done uint64
	for bt := range out {
		if t, ok := s.a.times[bt.number]; ok && t == 0 {
			s.a.times[bt.number] = bt.time
		}
		for _, t := range bt.txs {
			s.a.tx(t)
		}
		if done++; done%1024 == 0 || done == n {
			s.cfg.Progress("transactions", done, n)
		}
	}
	return <-errc
}

// openSenders fetches the sender of each open's transaction (--logs-only).
func (s *scan) openSenders(ctx context.Context) error {
	opens := s.a.opens
	return parallel(ctx, len(opens), s.cfg.Concurrency, func(ctx context.Context, i int) error {
		o := &opens[i]
		tx, _, err := s.src.TransactionByHash(ctx, o.tx)
		if err != nil {
			return fmt.Errorf("%w: transaction %s: %v", ErrRPC, o.tx, err)
		}
		from, err := s.src.TransactionSender(ctx, tx, o.blockHash, o.txIndex)
		if err != nil {
			return fmt.Errorf("%w: sender of %s: %v", ErrRPC, o.tx, err)
		}
		o.sender, o.senderKnown = from, true
		return nil
	})
}

// resolveProviders asks the chain for the provider of relationships opened
// before the audited range.
func (s *scan) resolveProviders(ctx context.Context) error {
	var idx []int
	for i, r := range s.a.rels {
		if r.provider == 0 {
			idx = append(idx, i)
		}
	}
	rels := bindings.NewRelationships()
	return parallel(ctx, len(idx), s.cfg.Concurrency, func(ctx context.Context, k int) error {
		r := &s.a.rels[idx[k]]
		got, err := call(ctx, s, s.d.Relationships, rels.PackRelationship(new(big.Int).SetBytes(r.tag[:])), rels.UnpackRelationship)
		if err != nil {
			return err
		}
		r.provider = got.Provider
		return nil
	})
}

// resolveTimes reads the headers of blocks with opens or enrolments whose
// time neither the logs nor the transaction scan gave.
func (s *scan) resolveTimes(ctx context.Context) error {
	var blocks []uint64
	for b, t := range s.a.times {
		if t == 0 {
			blocks = append(blocks, b)
		}
	}
	times := make([]uint64, len(blocks))
	err := parallel(ctx, len(blocks), s.cfg.Concurrency, func(ctx context.Context, i int) error {
		h, err := s.src.HeaderByNumber(ctx, new(big.Int).SetUint64(blocks[i]))
		if err != nil {
			return fmt.Errorf("%w: header %d: %v", ErrRPC, blocks[i], err)
		}
		times[i] = h.Time
		return nil
	})
	for i, b := range blocks {
		s.a.times[b] = times[i]
	}
	return err
}

// delegates reads every delegate's nonce and balance at the audited head.
func (s *scan) delegates(ctx context.Context) error {
	ds := s.a.delegates()
	nonces, balances := make([]uint64, len(ds)), make([]*big.Int, len(ds))
	err := parallel(ctx, len(ds), s.cfg.Concurrency, func(ctx context.Context, i int) error {
		var err error
		if nonces[i], err = s.src.NonceAt(ctx, ds[i], s.at); err != nil {
			return fmt.Errorf("%w: nonce of %s: %v", ErrRPC, ds[i], err)
		}
		if balances[i], err = s.src.BalanceAt(ctx, ds[i], s.at); err != nil {
			return fmt.Errorf("%w: balance of %s: %v", ErrRPC, ds[i], err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, d := range ds {
		s.a.delegateState(d, nonces[i], balances[i])
	}
	return nil
}

// call reads a contract at the audited head.
func call[T any](ctx context.Context, s *scan, to common.Address, data []byte, unpack func([]byte) (T, error)) (T, error) {
	var zero T
	out, err := s.src.CallContract(ctx, ethereum.CallMsg{To: &to, Data: data}, s.at)
	if err != nil {
		return zero, fmt.Errorf("%w: call %s: %v", ErrRPC, to, contracts.DecodeRevert(err))
	}
	v, err := unpack(out)
	if err != nil {
		return zero, fmt.Errorf("%w: answer of %s: %v", ErrChainData, to, err)
	}
	return v, nil
}

// checkInsertionVerifier checks the verifier a registry that takes proven
// enrolment batches trusts for its roots (one that accepted anything would
// let a gateway make any root, and prove anyone's membership): it must be
// gnark's verifier carrying the key whose hash the registry records, not
// the audit's template key, and — where the ceremony's keys are given — the
// ceremony's insertion key. A frontier registry has none.
func (s *scan) checkInsertionVerifier(ctx context.Context, f *findings, tpl *verifierTemplate) {
	fail := func(msg string, args ...any) {
		f.add(Finding{Severity: SeverityFail, Message: fmt.Sprintf(msg, args...)})
	}
	patients := bindings.NewPatientRegistry()
	ins, err := call(ctx, s, s.d.PatientRegistry, patients.PackInsertion(), patients.UnpackInsertion)
	if err != nil {
		fail("cannot read PatientRegistry.insertion: %v", err)
		return
	}
	if ins == (common.Address{}) {
		return
	}
	recorded, err := call(ctx, s, s.d.PatientRegistry, patients.PackInsertionKeyHash(), patients.UnpackInsertionKeyHash)
	if err != nil {
		fail("cannot read PatientRegistry.insertionKeyHash: %v", err)
		return
	}
	code, err := s.src.CodeAt(ctx, ins, s.at)
	if err != nil {
		fail("cannot read the insertion verifier's code: %v", err)
		return
	}
	words, err := tpl.extract(code)
	if err != nil {
		fail("the insertion verifier at %s is not gnark's Groth16 verifier of the insertion circuit: %v", ins.Hex(), err)
		return
	}
	carried := hashWords(words)
	if carried != recorded {
		fail("the insertion verifier at %s carries verifying key 0x%x, the patient registry records 0x%x", ins.Hex(), carried[:8], recorded[:8])
		return
	}
	if carried == tpl.devHash {
		fail("the insertion verifier at %s carries the audit's template key (one party made it and could forge any root)", ins.Hex())
		return
	}
	for _, ks := range s.cfg.Keys {
		if k, err := ks.Keys(prover.Insertion); err == nil {
			if want := prover.VerifyingKeyHash(k.VK); want != carried {
				fail("the insertion verifier at %s carries verifying key 0x%x, the ceremony's (%s) is 0x%x", ins.Hex(), carried[:8], ks.Manifest.Origin, want[:8])
			}
			return
		}
	}
	f.add(Finding{Severity: SeverityWarn, Message: fmt.Sprintf("the insertion verifier at %s carries the key the registry records (0x%x); give the ceremony's keys (--keys) to tie it to a ceremony", ins.Hex(), carried[:8])})
}

// checkVerifiers: see verifier.go.
func (s *scan) checkVerifiers(ctx context.Context) Check {
	f := findings{max: s.cfg.MaxFindings}
	fail := func(msg string, args ...any) {
		f.add(Finding{Severity: SeverityFail, Message: fmt.Sprintf(msg, args...)})
	}
	agents, rels := bindings.NewAgentRegistry(), bindings.NewRelationships()
	registryHash, err := call(ctx, s, s.d.AgentRegistry, agents.PackVerifyingKeyHash(), agents.UnpackVerifyingKeyHash)
	if err != nil {
		fail("cannot read the registry's verifying-key hash: %v", err)
		return f.check(CheckVerifiers, "registry unreadable")
	}
	// The verifiers the contracts use must be the recorded ones.
	type link struct {
		what   string
		at     common.Address
		data   []byte
		unpack func([]byte) (common.Address, error)
		want   common.Address
	}
	for _, l := range []link{
		{"AgentRegistry.ownershipVerifier", s.d.AgentRegistry, agents.PackOwnershipVerifier(), agents.UnpackOwnershipVerifier, s.d.OwnershipVerifier},
		{"AgentRegistry.entitlementVerifier", s.d.AgentRegistry, agents.PackEntitlementVerifier(), agents.UnpackEntitlementVerifier, s.d.EntitlementVerifier},
		{"Relationships.verifier", s.d.Relationships, rels.PackVerifier(), rels.UnpackVerifier, s.d.OwnershipVerifier},
	} {
		got, err := call(ctx, s, l.at, l.data, l.unpack)
		switch {
		case err != nil:
			fail("cannot read %s: %v", l.what, err)
		case got != l.want:
			fail("%s is %s, the deployment record says %s", l.what, got.Hex(), l.want.Hex())
		}
	}

	tpls, err := templates()
	if err != nil {
		fail("verifier templates: %v", err)
		return f.check(CheckVerifiers, "templates unavailable")
	}
	s.checkInsertionVerifier(ctx, &f, tpls[prover.Insertion])
	addrs := map[prover.Circuit]common.Address{prover.Ownership: s.d.OwnershipVerifier, prover.Entitlement: s.d.EntitlementVerifier}
	hashes := map[prover.Circuit][32]byte{}
	for _, c := range prover.Circuits() {
		name := prover.SolidityContractName(c)
		code, err := s.src.CodeAt(ctx, addrs[c], s.at)
		if err != nil {
			fail("cannot read %s code: %v", name, err)
			continue
		}
		words, err := tpls[c].extract(code)
		if err != nil {
			fail("%s at %s is not gnark's Groth16 verifier of the %s circuit: %v", name, addrs[c].Hex(), c, err)
			continue
		}
		hashes[c] = hashWords(words)
	}
	if len(hashes) != len(prover.Circuits()) {
		return f.check(CheckVerifiers, "a verifier is not the expected code")
	}
	var buf []byte
	for _, c := range prover.Circuits() {
		h := hashes[c]
		buf = append(buf, h[:]...)
	}
	combined := [32]byte(crypto.Keccak256(buf))
	known := s.cfg.Keys
	if dev, err := prover.DevKeys(); err == nil {
		known = append([]*prover.KeySet{dev}, known...)
	}
	if combined == registryHash {
		if dev, err := prover.DevKeys(); err == nil && dev.RegistryHash() == registryHash {
			f.add(Finding{Severity: SeverityWarn, Message: "the registry records the dev ceremony's keys (prover.DevKeys): anyone who ran that ceremony can forge proofs; not for production"})
		}
		return f.check(CheckVerifiers, fmt.Sprintf("both verifiers carry the keys of registry hash 0x%x", registryHash[:8]))
	}
	attributed := false
	for _, ks := range known {
		if ks.RegistryHash() != registryHash {
			continue
		}
		for _, c := range prover.Circuits() {
			k, err := ks.Keys(c)
			if err != nil {
				continue
			}
			if want, got := prover.VerifyingKeyHash(k.VK), hashes[c]; want != got {
				attributed = true
				fail("%s at %s carries verifying key 0x%x, the ceremony's %s key is 0x%x", prover.SolidityContractName(c), addrs[c].Hex(), got[:8], c, want[:8])
			}
		}
	}
	if !attributed {
		own, ent := hashes[prover.Ownership], hashes[prover.Entitlement]
		fail("the verifiers' keys (ownership 0x%x, entitlement 0x%x) hash to 0x%x, the registry records 0x%x (give the ceremony's keys to name the verifier)",
			own[:8], ent[:8], combined[:8], registryHash[:8])
	}
	return f.check(CheckVerifiers, "a verifier's key differs from the ceremony's")
}

// checkSigners compares the registry's signer set with Clique's.
func (s *scan) checkSigners(ctx context.Context) Check {
	f := findings{max: s.cfg.MaxFindings}
	agents := bindings.NewAgentRegistry()
	registry, err := call(ctx, s, s.d.AgentRegistry, agents.PackSigners(), agents.UnpackSigners)
	if err != nil {
		f.add(Finding{Severity: SeverityFail, Message: fmt.Sprintf("cannot read the registry's signers: %v", err)})
		return f.check(CheckSigners, "registry unreadable")
	}
	rc, ok := s.src.(RawCaller)
	if !ok {
		c := f.check(CheckSigners, "not a Clique chain: skipped (no raw JSON-RPC access)")
		c.Status = StatusSkip
		return c
	}
	var clique []common.Address
	if err := rc.CallContext(ctx, &clique, "clique_getSigners", hexutil.EncodeUint64(s.to)); err != nil {
		var re rpc.Error
		if errors.As(err, &re) && re.ErrorCode() == -32601 || strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "not available") {
			c := f.check(CheckSigners, "not a Clique chain: skipped (clique_getSigners unknown)")
			c.Status = StatusSkip
			return c
		}
		f.add(Finding{Severity: SeverityWarn, Message: fmt.Sprintf("cannot read the Clique signers: %v", err)})
		return f.check(CheckSigners, "consensus signers unreadable")
	}
	inClique := map[common.Address]bool{}
	for _, a := range clique {
		inClique[a] = true
	}
	inRegistry := map[common.Address]bool{}
	for _, a := range registry {
		inRegistry[a] = true
		if !inClique[a] {
			f.add(Finding{Severity: SeverityFail, Addresses: []common.Address{a}, Block: s.to,
				Message: fmt.Sprintf("%s is an active provider's authority in the registry but not a Clique signer", a.Hex())})
		}
	}
	for _, a := range clique {
		if !inRegistry[a] {
			f.add(Finding{Severity: SeverityFail, Addresses: []common.Address{a}, Block: s.to,
				Message: fmt.Sprintf("%s signs blocks but is no active provider's authority in the registry", a.Hex())})
		}
	}
	return f.check(CheckSigners, fmt.Sprintf("%d registry signers, %d Clique signers at block %d", len(registry), len(clique), s.to))
}
