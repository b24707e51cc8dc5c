package dbmanager

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// Enrolments go on chain in batches. The registry inserts many commitments
// in one transaction for a fraction of the gas of as many single
// insertions (about 21 k gas a commitment in a batch of 64 against 613 k
// alone), so the desks' enrolments queue here and one transaction at a time
// takes everyone waiting, up to contracts.MaxEnrolBatch. At a quiet desk an
// enrolment is a batch of one, sent at once; at a busy one the enrolments
// that arrive while a batch is being mined form the next. Config.EnrolLinger
// makes the queue wait that long before each batch, for bigger ones at the
// cost of every enrolment waiting up to that long.
//
// Where the registry takes proven batches (a deployment with an insertion
// verifier), each batch — up to contracts.MaxProvenBatch — goes with a
// proof that the registry's new root is its tree's after the batch
// (circuits.Insertion, ≈ 1.8 s for a full batch on 2 cores), built from the
// gateway's own tree. The proof speaks of the registry's size and root when
// it was made: if another gateway's batch lands first, the registry refuses
// it, and the queue brings its view up to date and proves again.
//
// The registry keeps no record per commitment, so the gateway refuses a
// commitment already in the tree (its chain view) or already queued; two
// gateways enrolling the same commitment at the same moment would both get
// it in, which weakens no proof and which the audit reports.

// enrolQueue is the gateway's queue of enrolments not yet on chain.
type enrolQueue struct {
	mu      sync.Mutex
	waiting []*enrolment
	pending map[fr.Element]bool // waiting or in a batch being mined
	busy    bool                // a sender runs (sendEnrolments)
}

// enrolment is one commitment waiting for its batch's receipt.
type enrolment struct {
	c    fr.Element
	done chan enrolled
}

// enrolled is what became of a batch.
type enrolled struct {
	receipt *types.Receipt
	batch   int // the commitments in the batch
	err     error
}

// enrolCommitment queues c and waits until its batch is mined (or ctx
// ends: the batch still goes on).
func (g *Gateway) enrolCommitment(ctx context.Context, c fr.Element) (enrolled, error) {
	if err := g.syncChain(ctx); err != nil {
		return enrolled{}, err
	}
	switch _, err := g.cfg.View.MerkleProof(c); {
	case err == nil:
		return enrolled{}, errf(fiber.StatusConflict, "business-rule", "this commitment is already enrolled: the patient can connect at any provider")
	case !errors.Is(err, chainview.ErrNotEnrolled):
		// Unsure (the tree catching up, its database failing): enrol nothing.
		return enrolled{}, treeUnavailable(err)
	}
	q := &g.enrols
	q.mu.Lock()
	if q.pending[c] {
		q.mu.Unlock()
		return enrolled{}, errf(fiber.StatusConflict, "business-rule", "this commitment is being enrolled already (its batch is on its way to the chain)")
	}
	if q.pending == nil {
		q.pending = map[fr.Element]bool{}
	}
	e := &enrolment{c: c, done: make(chan enrolled, 1)}
	q.waiting = append(q.waiting, e)
	q.pending[c] = true
	start := !q.busy
	q.busy = true
	q.mu.Unlock()
	if start {
		go g.sendEnrolments()
	}
	select {
	case r := <-e.done:
		return r, r.err
	case <-ctx.Done():
		return enrolled{}, errf(fiber.StatusServiceUnavailable, "transient", "the enrolment's batch was not mined in time; it may still be: look the patient up again before enrolling again")
	}
}

// sendEnrolments sends batches while enrolments wait, one at a time.
func (g *Gateway) sendEnrolments() {
	q := &g.enrols
	for {
		if g.cfg.EnrolLinger > 0 {
			q.mu.Lock()
			full := len(q.waiting) >= g.maxEnrolBatch()
			q.mu.Unlock()
			if !full {
				time.Sleep(g.cfg.EnrolLinger)
			}
		}
		q.mu.Lock()
		n := min(len(q.waiting), g.maxEnrolBatch())
		if n == 0 {
			q.busy = false
			q.mu.Unlock()
			return
		}
		batch := q.waiting[:n:n]
		q.waiting = append([]*enrolment(nil), q.waiting[n:]...)
		q.mu.Unlock()

		leaves := make([]fr.Element, n)
		for i, e := range batch {
			leaves[i] = e.c
		}
		ctx, cancel := context.WithTimeout(context.Background(), chainTimeout)
		var r *types.Receipt
		var err error
		if g.proven() {
			r, err = g.enrolProven(ctx, leaves)
		} else {
			r, err = g.transact(ctx, func(ctx context.Context) (*types.Transaction, error) {
				return g.cfg.Chain.Enrol(ctx, g.cfg.Relayer, bigs(leaves)...)
			})
		}
		cancel()
		if err != nil {
			g.log.Error("an enrolment batch failed", "commitments", n, "err", err)
		}
		q.mu.Lock()
		for _, e := range batch {
			delete(q.pending, e.c)
			e.done <- enrolled{receipt: r, batch: n, err: err}
		}
		q.mu.Unlock()
	}
}

// proven says whether the registry takes proven batches.
func (g *Gateway) proven() bool {
	return g.cfg.Chain.Deployment().InsertionVerifier != (common.Address{})
}

// maxEnrolBatch is the most commitments one batch may hold.
func (g *Gateway) maxEnrolBatch() int {
	if g.proven() {
		return contracts.MaxProvenBatch
	}
	return contracts.MaxEnrolBatch
}

// canProveInsertion says whether p holds the insertion proving key.
func canProveInsertion(p *prover.Prover) bool {
	if p == nil {
		return false
	}
	k, err := p.KeySet().Keys(prover.Insertion)
	return err == nil && k.PK != nil
}

// staleProofTries bounds how often one batch is proved again because other
// gateways' batches kept landing first.
const staleProofTries = 4

// enrolProven proves the batch leaves against the registry as this
// gateway's view last saw it and sends it. A refusal or failure after
// which the view shows the registry moved (another batch landed first) is
// a stale proof: the batch is proved again on the fresh view.
func (g *Gateway) enrolProven(ctx context.Context, leaves []fr.Element) (*types.Receipt, error) {
	for try := 1; ; try++ {
		if err := g.syncFresh(ctx); err != nil {
			return nil, err
		}
		var a *circuits.Insertion
		var pub circuits.InsertionPublic
		err := g.cfg.View.ReadTree(func(t *merkle.Tree) (err error) {
			a, pub, err = circuits.InsertionWitnessTree(t, leaves)
			return err
		})
		if err != nil {
			return nil, treeUnavailable(err)
		}
		proof, err := g.cfg.Inserter.ProveInsertion(a)
		if err != nil {
			return nil, fmt.Errorf("dbmanager: proving an enrolment batch: %w", err)
		}
		if testHookProvenSend != nil {
			testHookProvenSend()
		}
		r, err := g.transact(ctx, func(ctx context.Context) (*types.Transaction, error) {
			return g.cfg.Chain.EnrolProven(ctx, g.cfg.Relayer, bigs(leaves), zkhash.Big(pub.NewRoot), proof[:])
		})
		if err == nil {
			return r, nil
		}
		if serr := g.syncFresh(ctx); serr != nil || try == staleProofTries {
			return nil, err
		}
		if g.cfg.View.Leaves() == int(pub.Start.Uint64()) {
			return nil, err // the registry did not move: not a stale proof
		}
		g.log.Info("an enrolment batch's proof went stale (another batch landed first); proving again", "commitments", len(leaves), "try", try)
	}
}

// testHookProvenSend, when set (tests), runs after a batch is proved and
// before it is sent: another gateway's batch can land there.
var testHookProvenSend func()

// syncFresh brings the view up to the node's head now, whatever its age.
func (g *Gateway) syncFresh(ctx context.Context) error {
	g.syncMu.Lock()
	g.lastSync = time.Time{}
	g.syncMu.Unlock()
	return g.syncChain(ctx)
}

func bigs(es []fr.Element) []*big.Int {
	out := make([]*big.Int, len(es))
	for i, e := range es {
		out[i] = zkhash.Big(e)
	}
	return out
}
