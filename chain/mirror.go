package chain

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// SignerSource says which authorities should be Clique signers. The
// production source reads the AgentRegistry contract's signers() view;
// SignerSet is an in-memory one.
type SignerSource interface {
	ActiveSigners(ctx context.Context) ([]common.Address, error)
}

// SignerSet is a fixed, in-memory SignerSource.
type SignerSet struct {
	mu  sync.Mutex
	set map[common.Address]bool
}

// NewSignerSet returns a set holding addrs.
func NewSignerSet(addrs ...common.Address) *SignerSet {
	s := &SignerSet{set: map[common.Address]bool{}}
	for _, a := range addrs {
		s.set[a] = true
	}
	return s
}

// Add puts addr in the set.
func (s *SignerSet) Add(addr common.Address) { s.mu.Lock(); s.set[addr] = true; s.mu.Unlock() }

// Remove takes addr out of the set.
func (s *SignerSet) Remove(addr common.Address) { s.mu.Lock(); delete(s.set, addr); s.mu.Unlock() }

// ActiveSigners implements SignerSource.
func (s *SignerSet) ActiveSigners(context.Context) ([]common.Address, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]common.Address, 0, len(s.set))
	for a := range s.set {
		out = append(out, a)
	}
	return sortAddrs(out), nil
}

// Drift is how a node's Clique signer set differs from the wanted one.
type Drift struct {
	Missing []common.Address `json:"missing"` // wanted, not yet signers
	Extra   []common.Address `json:"extra"`   // signers no longer wanted
}

// None reports whether there is no drift.
func (d Drift) None() bool { return len(d.Missing) == 0 && len(d.Extra) == 0 }

func (d Drift) String() string {
	if d.None() {
		return "none"
	}
	return fmt.Sprintf("missing %v, extra %v", d.Missing, d.Extra)
}

// Compare returns the drift of have (the chain's signers) from want.
func Compare(want, have []common.Address) Drift {
	d := Drift{Missing: []common.Address{}, Extra: []common.Address{}}
	for _, a := range want {
		if !slices.Contains(have, a) && !slices.Contains(d.Missing, a) {
			d.Missing = append(d.Missing, a)
		}
	}
	for _, a := range have {
		if !slices.Contains(want, a) && !slices.Contains(d.Extra, a) {
			d.Extra = append(d.Extra, a)
		}
	}
	sortAddrs(d.Missing)
	sortAddrs(d.Extra)
	return d
}

func sortAddrs(a []common.Address) []common.Address {
	slices.SortFunc(a, func(x, y common.Address) int { return bytes.Compare(x[:], y[:]) })
	return a
}

// Mirror makes one authority node follow a SignerSource: for every address
// the source wants and the chain lacks it votes clique_propose(addr, true),
// for every signer the source no longer wants clique_propose(addr, false).
// Clique counts one vote per authority per block it seals and applies a
// change once more than half the signers voted, so every authority runs its
// own Mirror. Votes the chain has carried out, or the source has dropped,
// are discarded.
type Mirror struct {
	src  SignerSource
	node *Node
	log  *slog.Logger

	mu   sync.Mutex
	last Drift
}

// NewMirror returns a mirror voting through node. log may be nil.
func NewMirror(src SignerSource, node *Node, log *slog.Logger) *Mirror {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Mirror{src: src, node: node, log: log.With("node", node.URL)}
}

// Drift is the drift seen by the last Step.
func (m *Mirror) Drift() Drift {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Step compares once, casts or withdraws votes, and returns the drift it saw
// (before its votes take effect: they need blocks).
func (m *Mirror) Step(ctx context.Context) (Drift, error) {
	want, err := m.src.ActiveSigners(ctx)
	if err != nil {
		return Drift{}, fmt.Errorf("mirror: signer source: %w", err)
	}
	if len(want) == 0 {
		return Drift{}, fmt.Errorf("mirror: %w", ErrNoSigners)
	}
	have, err := m.node.Signers(ctx)
	if err != nil {
		return Drift{}, fmt.Errorf("mirror: %w", err)
	}
	proposals, err := m.node.Proposals(ctx)
	if err != nil {
		return Drift{}, fmt.Errorf("mirror: %w", err)
	}
	d := Compare(want, have)
	// Withdraw votes that are done or that the source no longer backs.
	for addr, auth := range proposals {
		wanted := slices.Contains(want, addr)
		done := slices.Contains(have, addr) == wanted
		if auth != wanted || done {
			if err := m.node.Discard(ctx, addr); err != nil {
				return d, fmt.Errorf("mirror: %w", err)
			}
			delete(proposals, addr)
			m.log.Info("Discarded signer vote", "addr", addr, "authorize", auth)
		}
	}
	for _, a := range d.Missing {
		if auth, ok := proposals[a]; !ok || !auth {
			if err := m.node.Propose(ctx, a, true); err != nil {
				return d, fmt.Errorf("mirror: %w", err)
			}
			m.log.Info("Voted to add signer", "addr", a)
		}
	}
	for _, a := range d.Extra {
		if auth, ok := proposals[a]; !ok || auth {
			if err := m.node.Propose(ctx, a, false); err != nil {
				return d, fmt.Errorf("mirror: %w", err)
			}
			m.log.Info("Voted to remove signer", "addr", a)
		}
	}
	m.mu.Lock()
	m.last = d
	m.mu.Unlock()
	return d, nil
}

// Run steps every interval until ctx ends, logging failures (a node being
// restarted, a source briefly unavailable) and carrying on. It returns
// ctx's error.
func (m *Mirror) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if d, err := m.Step(ctx); err != nil {
			if ctx.Err() == nil {
				m.log.Warn("Signer mirror step failed", "err", err)
			}
		} else if !d.None() {
			m.log.Info("Signer drift", "missing", len(d.Missing), "extra", len(d.Extra))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
