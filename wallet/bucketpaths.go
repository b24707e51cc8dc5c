package wallet

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/bucketpath"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts/bindings"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// A wallet can do without a copy of the registry's tree: with
// UseBucketPaths (and a view from chainview.NewWithoutTree) it finds its
// leaf once in the registry's Enrolled events — read from a block it is
// given, onwards, and only until found — and from then on fetches its
// membership path by bucket from the network's gateways (package
// bucketpath: every bucket's root and its own bucket of 4,096, ≈ 0.9 MB at
// 10^8 patients), trying them in random order, and proves against a root
// only once the chain says it knows it. A gateway learns which bucket,
// never which leaf; a lying one is refused and the next one tried.

// RegistryReader is what the wallet asks the chain for in bucket mode: the
// registry's events and its isKnownRoot.
type RegistryReader interface {
	chainview.Source
	ethereum.ContractCaller
}

// bucketPaths is the wallet's bucket mode.
type bucketPaths struct {
	src    RegistryReader
	mu     sync.Mutex
	from   uint64 // the next block to scan for the wallet's enrolment
	leaf   int    // the wallet's leaf, -1 until found
	looked bool   // the gateways were asked for the locator note (locator.go)
	filed  bool   // a gateway took the locator note of leaf
}

// UseBucketPaths switches the wallet to fetching its membership path by
// bucket: src reads the registry; the wallet's enrolment is looked for
// from block from on (the deployment's block when the wallet cannot know
// better, e.g. restored from its words; the block it first showed its
// enrolment code otherwise).
func (w *Wallet) UseBucketPaths(src RegistryReader, from uint64) {
	w.buckets = &bucketPaths{src: src, from: max(from, w.d.Block), leaf: -1}
}

// findLeaf returns the wallet's leaf, scanning the registry's Enrolled
// events it has not scanned yet; -1 if it is not enrolled as of the head.
func (b *bucketPaths) findLeaf(ctx context.Context, w *Wallet, c fr.Element) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.leaf >= 0 {
		return b.leaf, nil
	}
	m := w.recallRegistry()
	if m.Leaf >= 0 {
		b.leaf = m.Leaf // checked at each use: the path's leaf must be ours
		b.filed = b.filed || m.Filed
		return b.leaf, nil
	}
	// A device that knows nothing of its enrolment (restored from the
	// words) asks the gateways for its locator note first, once a session;
	// a leaf from a note is checked at use like a remembered one.
	if !b.looked && m.From == 0 && b.from <= w.d.Block {
		b.looked = true
		i, err := w.findLocator(ctx)
		if err != nil {
			return -1, err
		}
		if i >= 0 {
			b.leaf, b.filed = i, true
			if err := w.putRegistry(registryMemory{Leaf: i, Filed: true}); err != nil {
				return -1, err
			}
			return i, nil
		}
	}
	// Blocks this device looked through before (or from before this seed
	// was made) are not looked through again.
	b.from = max(b.from, m.From)
	// Blocks near the head may since have been replaced by a reorg that
	// brought the enrolment: look at the last few again.
	b.from = max(w.d.Block, b.from-min(b.from, reorgMargin))
	head, err := b.src.HeaderByNumber(ctx, nil)
	if err != nil {
		return -1, fmt.Errorf("wallet: the chain's head: %w", err)
	}
	to := head.Number.Uint64()
	if to < b.from {
		return -1, nil
	}
	reg := bindings.NewPatientRegistry()
	abi, err := bindings.PatientRegistryMetaData.ParseABI()
	if err != nil {
		return -1, err
	}
	want := zkhash.Big(c)
	// In spans, stopping at the enrolment: a first look after a restore
	// reads the registry's history, but never all of it at once.
	for b.from <= to {
		end := min(b.from+scanSpan-1, to)
		logs, err := b.src.FilterLogs(ctx, ethereum.FilterQuery{
			FromBlock: new(big.Int).SetUint64(b.from), ToBlock: new(big.Int).SetUint64(end),
			Addresses: []common.Address{w.d.PatientRegistry},
			Topics:    [][]common.Hash{{abi.Events[bindings.PatientRegistryEnrolledEventName].ID}},
		})
		if err != nil {
			return -1, fmt.Errorf("wallet: the registry's enrolments in blocks %d–%d: %w", b.from, end, err)
		}
		for i := range logs {
			ev, err := reg.UnpackEnrolledEvent(&logs[i])
			if err != nil {
				return -1, fmt.Errorf("wallet: an enrolment in block %d: %w", logs[i].BlockNumber, err)
			}
			for j, cm := range ev.Commitments {
				if cm.Cmp(want) == 0 {
					b.leaf, b.filed = int(ev.Start)+j, false
					if err := w.rememberLeaf(b.leaf); err != nil {
						return -1, err
					}
					return b.leaf, nil
				}
			}
		}
		b.from = end + 1
		if err := w.putRegistry(registryMemory{Leaf: -1, From: b.from}); err != nil {
			return -1, err
		}
	}
	return -1, nil
}

// file files the locator note of the leaf path is of, once: a path fetched
// and checked against the chain. A failure only means that a device
// restored later looks through the events instead; the next session tries
// again.
func (b *bucketPaths) file(ctx context.Context, w *Wallet, path merkle.Proof) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.filed || b.leaf != int(path.Index) {
		return nil
	}
	ok, err := w.fileLocator(ctx, path)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("wallet: no gateway took the locator note")
	}
	b.filed = true
	return w.putRegistry(registryMemory{Leaf: b.leaf, Filed: true})
}

// SeedMadeNow tells the wallet its seed was just made: no enrolment before
// its view's head can be its own, so the first look for its leaf starts
// there, on this device, instead of at the registry's deployment. For a
// seed just created, never for one restored from words.
func (w *Wallet) SeedMadeNow() error {
	block := w.view.Head()
	m := w.recallRegistry()
	if m.Leaf >= 0 || m.From >= block {
		return nil
	}
	if w.buckets != nil {
		w.buckets.mu.Lock()
		w.buckets.from = max(w.buckets.from, block)
		w.buckets.mu.Unlock()
	}
	return w.putRegistry(registryMemory{Leaf: -1, From: block})
}

// scanSpan is how many blocks one query for enrolments covers.
const scanSpan = 5000

// reorgMargin is how many blocks before where it stopped a new look for
// the wallet's enrolment starts: deeper than a Clique reorg after a
// partition (a few blocks), cheap to read again.
const reorgMargin = 128

// forget drops a leaf the gateways' trees do not confirm (a reorg moved the
// enrolment): the next look scans again from the deployment.
func (b *bucketPaths) forget(w *Wallet) error {
	b.mu.Lock()
	b.leaf, b.from, b.filed = -1, w.d.Block, false
	b.mu.Unlock()
	return w.putRegistry(registryMemory{Leaf: -1})
}

// registryMemory is what this device remembers of the registry: the
// wallet's leaf, so later sessions need not look for it again, and whether
// its locator note is filed; or else how far it has looked.
type registryMemory struct {
	Leaf  int    `json:"leaf"`            // -1: not known
	From  uint64 `json:"from,omitempty"`  // with no leaf: the next block to look at
	Filed bool   `json:"filed,omitempty"` // with a leaf: a gateway keeps its locator note
}

// leafMemoryName is the device store's section of the registry's memory,
// per network (chain, registry contract).
func (w *Wallet) leafMemoryName() string {
	return fmt.Sprintf("registry/%s/%s", w.d.ChainID, w.d.PatientRegistry.Hex())
}

// recallRegistry returns what this device remembers of the registry
// (nothing known: Leaf -1, From 0).
func (w *Wallet) recallRegistry() registryMemory {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	m := registryMemory{Leaf: -1}
	if w.mem.store == nil {
		return m
	}
	if ok, err := w.mem.store.Get(w.leafMemoryName(), &m); !ok || err != nil {
		return registryMemory{Leaf: -1}
	}
	return m
}

// recallLeaf returns the leaf this device remembers, if any.
func (w *Wallet) recallLeaf() (int, bool) {
	m := w.recallRegistry()
	return m.Leaf, m.Leaf >= 0
}

// rememberLeaf saves the wallet's leaf on the device (-1 forgets it).
func (w *Wallet) rememberLeaf(i int) error {
	return w.putRegistry(registryMemory{Leaf: i})
}

// putRegistry saves m on the device, if the wallet has a device store.
func (w *Wallet) putRegistry(m registryMemory) error {
	w.mem.mu.Lock()
	defer w.mem.mu.Unlock()
	if w.mem.store == nil {
		return nil
	}
	if err := w.mem.store.Put(w.leafMemoryName(), m); err != nil {
		return fmt.Errorf("wallet: remembering the registry: %w", err)
	}
	return nil
}

// errNoPath says no gateway served a path to a root the chain knows.
var errNoPath = errors.New("no gateway served a membership path to a root the chain knows")

// bucketPath returns c's path fetched by bucket, waiting up to enrolWait
// for the enrolment to appear, as enrolledPath does with the view's tree.
func (w *Wallet) bucketPath(ctx context.Context, c fr.Element) (merkle.Proof, error) {
	deadline := time.Now().Add(w.enrolWait)
	for {
		i, err := w.buckets.findLeaf(ctx, w, c)
		if err != nil {
			return merkle.Proof{}, err
		}
		if i >= 0 {
			p, err := w.fetchPath(ctx, c, i)
			if err == nil {
				// Best effort: without it, a device restored later looks
				// through the events; the next session tries again.
				_ = w.buckets.file(ctx, w, p)
				return p, nil
			}
			if !errors.Is(err, errNoPath) {
				return p, err
			}
			if !time.Now().Before(deadline) {
				return merkle.Proof{}, err
			}
		} else if !time.Now().Before(deadline) {
			return merkle.Proof{}, fmt.Errorf("%w (after waiting %s): if a desk enrolled you a moment ago, try again in a minute; otherwise show your enrolment code at a provider's desk first", ErrNotEnrolled, w.enrolWait.Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return merkle.Proof{}, fmt.Errorf("%w: %w", ErrNotEnrolled, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// fetchPath fetches leaf i's path from the active providers' gateways in
// random order, until one serves a path of c to a root the chain knows.
func (w *Wallet) fetchPath(ctx context.Context, c fr.Element, i int) (merkle.Proof, error) {
	if err := w.view.Sync(ctx); err != nil {
		return merkle.Proof{}, err
	}
	provs := w.view.Providers()
	rand.Shuffle(len(provs), func(a, b int) { provs[a], provs[b] = provs[b], provs[a] })
	reg := bindings.NewPatientRegistry()
	var errs []error
	for _, p := range provs {
		if !p.Active || p.GatewayURL == "" {
			continue
		}
		path, root, err := bucketpath.Fetch(ctx, w.http, p.GatewayURL, i)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
			continue
		}
		if path.Leaf != c {
			// Not ours at that leaf in this gateway's tree: a reorg moved the
			// enrolment, or the gateway lies. Look for the leaf again.
			errs = append(errs, fmt.Errorf("%s: leaf %d is not this wallet's commitment", p.Name, i))
			if err := w.buckets.forget(w); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		out, err := w.buckets.src.CallContract(ctx, ethereum.CallMsg{To: &w.d.PatientRegistry, Data: reg.PackIsKnownRoot(zkhash.Big(root))}, nil)
		if err != nil {
			return merkle.Proof{}, fmt.Errorf("wallet: isKnownRoot: %w", err)
		}
		known, err := reg.UnpackIsKnownRoot(out)
		if err != nil {
			return merkle.Proof{}, fmt.Errorf("wallet: isKnownRoot: %w", err)
		}
		if !known {
			errs = append(errs, fmt.Errorf("%s: its tree's root is not one the chain knows", p.Name))
			continue
		}
		return path, nil
	}
	return merkle.Proof{}, fmt.Errorf("wallet: %w: %w", errNoPath, errors.Join(errs...))
}
