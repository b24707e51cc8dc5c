package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Governance: adding a provider, the wanted signer set, the mirrors that
// vote it into Clique, and the supervisor loop that heals stalls.

// AddProvider creates keys and a node for a new provider and starts it as
// a non-signer peer of the running nodes; it returns once the node has
// caught up with the chain. It becomes a signer only by a vote (Vote, or a
// Mirror following the registry).
func (n *Network) AddProvider(ctx context.Context) (_ NodeState, err error) {
	if n.geth == nil {
		return NodeState{}, fmt.Errorf("%w: adding a provider needs geth", ErrGethMissing)
	}
	unlock, err := n.reload()
	if err != nil {
		return NodeState{}, err
	}
	defer unlock()
	if n.st.Net != "" {
		return NodeState{}, errors.New("adding a provider to a network whose nodes have hosts (a fault test's) is not supported")
	}
	n.mu.Lock()
	p := 1
	for _, ns := range n.st.Nodes {
		p = max(p, ns.Provider+1)
	}
	base := n.st.BasePort
	n.mu.Unlock()
	ports, err := allocPorts(base, p, 1)
	if err != nil {
		return NodeState{}, err
	}
	pw, err := os.ReadFile(n.Path(n.st.PasswordFile))
	if err != nil {
		return NodeState{}, err
	}
	ns, err := newNodeFiles(n.dir, p, ports[0], string(pw), nil)
	if err != nil {
		os.RemoveAll(filepath.Join(n.dir, "node"+strconv.Itoa(p)))
		return NodeState{}, err
	}
	if err := n.gethInit(ctx, &ns); err != nil {
		os.RemoveAll(n.datadir(&ns))
		return NodeState{}, err
	}
	n.mu.Lock()
	n.st.Nodes = append(n.st.Nodes, ns)
	st := n.st
	n.mu.Unlock()
	if err := writeNodeConfigs(n.dir, st); err != nil {
		return NodeState{}, err
	}
	if err := n.save(); err != nil {
		return NodeState{}, err
	}
	n.log.Info("Added provider", "provider", p, "authority", ns.Authority, "gateway", ns.Gateway)
	// Its config lists every node as a static peer, so it dials them; the
	// running ones must trust it to let it past their peer limit (their
	// configs say so from their next start).
	for _, o := range st.Nodes {
		if o.Provider != p && alive(o.PID, n.datadir(&o)) {
			if err := adminCall(ctx, o.IPC, nil, "admin_addTrustedPeer", ns.Enode); err != nil {
				return ns, fmt.Errorf("provider %d: %w", o.Provider, err)
			}
		}
	}
	if err := n.start(ctx, p); err != nil {
		return ns, err
	}
	if err := n.waitSynced(ctx, p); err != nil {
		return ns, err
	}
	st = n.State()
	nsp, _ := st.node(p)
	return *nsp, nil
}

// waitSynced waits until provider's node has peers and reached the height
// the highest other running node had when we began.
func (n *Network) waitSynced(ctx context.Context, provider int) error {
	st := n.State()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+10*time.Duration(st.Period)*time.Second)
	defer cancel()
	var target uint64
	others := 0
	for _, ns := range st.Nodes {
		if ns.Provider == provider || !alive(ns.PID, n.datadir(&ns)) {
			continue
		}
		others++
		if c, err := Dial(ctx, ns.RPC); err == nil {
			if h, err := c.Height(ctx); err == nil {
				target = max(target, h)
			}
			c.Close()
		}
	}
	c, err := n.Client(ctx, provider)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		h, err := c.Height(ctx)
		if err != nil {
			return err
		}
		peers, err := c.Peers(ctx)
		if err != nil {
			return err
		}
		if h >= target && (peers > 0 || others == 0) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provider %d did not sync: height %d of %d, %d peers", provider, h, target, peers)
		case <-time.After(pollEvery):
		}
	}
}

// SetSigner records that governance wants provider's authority sealing
// (or not). The chain follows once the authorities' mirrors have voted:
// see Converge.
func (n *Network) SetSigner(provider int, signer bool) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	n.mu.Lock()
	ns, err := n.st.node(provider)
	if err == nil {
		ns.Signer = signer
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	return n.save()
}

// stateSource is the signer set network.json wants, read afresh each time.
type stateSource struct{ dir string }

func (s stateSource) ActiveSigners(context.Context) ([]common.Address, error) {
	st, err := LoadState(s.dir)
	if err != nil {
		return nil, err
	}
	return st.Signers(), nil
}

// Mirrors returns a Mirror for every running node, following src (nil:
// the signer set network.json wants, re-read at every step). Close the
// nodes with CloseMirrors.
func (n *Network) Mirrors(ctx context.Context, src SignerSource) ([]*Mirror, error) {
	st := n.State()
	if src == nil {
		src = stateSource{n.dir}
	}
	var ms []*Mirror
	for _, ns := range st.Nodes {
		if !alive(ns.PID, n.datadir(&ns)) {
			continue
		}
		c, err := Dial(ctx, ns.RPC)
		if err != nil {
			CloseMirrors(ms)
			return nil, err
		}
		ms = append(ms, NewMirror(src, c, n.log.With("provider", ns.Provider)))
	}
	return ms, nil
}

// Watch is the supervisor's loop until ctx ends: every interval it steps
// a Mirror (following src; nil: network.json's wanted set) for every node
// that was running when it began, and it heals a stalled fork (Heal) when
// no new block came for a while.
func (n *Network) Watch(ctx context.Context, src SignerSource, interval time.Duration) error {
	ms, err := n.Mirrors(ctx, src)
	if err != nil {
		return err
	}
	defer CloseMirrors(ms)
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { m.Run(ctx, interval) })
	}
	wg.Go(func() { n.healLoop(ctx, interval) })
	wg.Wait()
	return ctx.Err()
}

func (n *Network) healLoop(ctx context.Context, interval time.Duration) {
	var (
		top      uint64
		progress = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		st := n.State()
		for _, ns := range st.Nodes {
			if c, err := Dial(ctx, ns.RPC); err == nil {
				if h, err := c.Height(ctx); err == nil && h > top {
					top, progress = h, time.Now()
				}
				c.Close()
			}
		}
		if time.Since(progress) > stallAfter(st) {
			if healed, err := n.Heal(ctx); err != nil {
				n.log.Warn("Heal failed", "err", err)
			} else if len(healed) > 0 {
				progress = time.Now()
			}
		}
	}
}

// CloseMirrors closes the mirrors' node connections.
func CloseMirrors(ms []*Mirror) {
	for _, m := range ms {
		m.node.Close()
	}
}

// Converge runs every running node's mirror, following src (nil:
// network.json's signer set; a deployed network's is the AgentRegistry's),
// until all report no drift, then steps once more so the settled votes are
// discarded. ErrNotConverged after timeout.
func (n *Network) Converge(ctx context.Context, src SignerSource, timeout time.Duration) error {
	ms, err := n.Mirrors(ctx, src)
	if err != nil {
		return err
	}
	defer CloseMirrors(ms)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	every := time.Duration(n.State().Period) * time.Second / 2
	var last Drift
	for {
		settled := true
		for _, m := range ms {
			d, err := m.Step(ctx)
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return err
			}
			if !d.None() {
				settled, last = false, d
			}
		}
		if settled && ctx.Err() == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w within %s: %s", ErrNotConverged, timeout, last)
		case <-time.After(every):
		}
	}
}
