package chain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ethereum/go-ethereum/rpc"
)

// A network's life: starting nodes one by one and letting them seal once
// peered, stopping, crashing and restarting them.

// gethArgs is a node's command line. No secret is on it: --password names
// a file.
func (n *Network) gethArgs(ns *NodeState) []string {
	dd := n.datadir(ns)
	auth := ns.Authority.Hex()
	args := []string{
		"--datadir", dd,
		"--config", filepath.Join(dd, "config.toml"),
		"--networkid", strconv.FormatUint(n.st.ChainID, 10),
		"--syncmode", "full",
		// Archive: every block's state is on disk as it is imported, so a
		// node killed -9 restarts at the head it had.
		"--gcmode", "archive", "--state.scheme", "hash",
		"--nat", "none", "--nodiscover", "--netrestrict", n.st.netRestrict(),
		"--nodekey", filepath.Join(dd, nodeKeyFile),
		"--ipcpath", ns.IPC,
		"--http", "--http.addr", ns.listenIP(), "--http.port", strconv.Itoa(ns.HTTPPort),
		"--http.api", "eth,net,web3,clique",
		// WebSocket on the HTTP port (geth serves both on one listener), so
		// gateways follow new heads by subscription (NodeState.WS). Only
		// eth, net and web3; and an origin no browser page can have, so no
		// web page — not even one on localhost, geth's default — reaches
		// the unlocked authority through it. Go clients send no Origin.
		"--ws", "--ws.addr", ns.listenIP(), "--ws.port", strconv.Itoa(ns.HTTPPort),
		"--ws.api", "eth,net,web3", "--ws.origins", wsOrigin,
		"--authrpc.addr", "127.0.0.1", "--authrpc.port", strconv.Itoa(ns.AuthRPCPort),
		// Mining from the start (so the node accepts blocks from its peers at
		// once) but with the authority key locked: it cannot seal until
		// startSealing unlocks it over IPC, once the node is peered.
		"--mine", "--miner.etherbase", auth,
	}
	if r := recommit(n.st.Period); r > 0 {
		args = append(args, "--miner.recommit", r.String())
	}
	return append(args,
		// personal_unlockAccount, on IPC only: --http.api does not list it.
		"--rpc.enabledeprecatedpersonal",
		// geth refuses any unlock while HTTP is on without this; HTTP is
		// loopback-only (see docs/chain.md for what that costs).
		"--allow-insecure-unlock",
		"--cache", "64",
		"--verbosity", "3",
	)
}

// recommit is the --miner.recommit for a network of period seconds, or 0
// for geth's default (2 s).
//
// geth 1.13's miner builds the next block when a head arrives and, while it
// waits for the block's time, rebuilds it with newly arrived transactions
// only when its recommit timer fires (reset at every head). At the default
// 2 s and 2 s blocks a transaction sent after a head waits for the block
// after next (a share clicked at a random moment: p50 3.1 s). The timer
// must also not fire as the block of the current height is being sealed
// and written: the rebuilt block would be sealed too, a second block at
// that height, and a peer that switches to it reorganises (a grant
// reported in force vanished for a block with 1 s at 1 s blocks). So the
// rebuild goes half a second before the block's time: at period 2 s the
// timer fires 1.5 s after a head, and next at 3 s, a second after the
// following head should have reset it. At 1 s blocks geth's minimum
// recommit (1 s) would coincide with sealing: the default stays.
func recommit(period uint64) time.Duration {
	if period < 2 {
		return 0
	}
	return time.Duration(period)*time.Second - 500*time.Millisecond
}

// Up starts every stopped node and returns once all answer on RPC, are
// peered and have imported a new block. Before starting anything it checks
// that every stopped node's data dir holds this network's genesis and that
// its ports are free; a network restarted this way keeps its chain.
func (n *Network) Up(ctx context.Context) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	if err := n.start(ctx, n.providers()...); err != nil {
		return err
	}
	return n.waitBlocks(ctx, n.providers())
}

// Start starts the given providers' nodes if stopped and waits until they
// answer on RPC (not for blocks).
func (n *Network) Start(ctx context.Context, providers ...int) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	return n.start(ctx, providers...)
}

func (n *Network) start(ctx context.Context, providers ...int) error {
	if n.geth == nil {
		return fmt.Errorf("%w: starting nodes needs geth", ErrGethMissing)
	}
	var stopped []*NodeState
	for _, p := range providers {
		ns, err := n.st.node(p)
		if err != nil {
			return err
		}
		if !alive(ns.PID, n.datadir(ns)) {
			stopped = append(stopped, ns)
		}
	}
	// Check everything before touching anything.
	for _, ns := range stopped {
		if ns.NetNS != "" {
			continue // its own namespace: our loopback says nothing of its ports
		}
		ports := nodePorts{ns.P2PPort, ns.HTTPPort, ns.AuthRPCPort}
		for deadline := time.Now().Add(portGrace); ; {
			err := checkPorts(ns.Provider, ports)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			time.Sleep(pollEvery)
		}
	}
	checks := make([]error, len(stopped))
	var cw sync.WaitGroup
	for i, ns := range stopped {
		cw.Go(func() { checks[i] = n.checkDatadir(ctx, ns) })
	}
	cw.Wait()
	if err := errors.Join(checks...); err != nil {
		return err
	}
	// One after the other, each once the previous answers: nodes started
	// together dial each other before either listens, and geth redials a
	// failed static peer only after 35 s.
	for _, ns := range stopped {
		if !hasChain(n.datadir(ns)) {
			if err := n.gethInit(ctx, ns); err != nil {
				return err
			}
		}
		pid, err := spawn(n.geth.Path, n.gethArgs(ns), n.logPath(ns), ns.NetNS)
		if err != nil {
			return err
		}
		n.mu.Lock()
		ns.PID = pid
		n.mu.Unlock()
		os.WriteFile(filepath.Join(n.datadir(ns), "geth.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o644)
		n.log.Info("Started geth", "provider", ns.Provider, "pid", pid, "rpc", ns.RPC)
		if err := n.save(); err != nil {
			return err
		}
		if err := n.waitRPC(ctx, ns); err != nil {
			return err
		}
	}
	errs := make([]error, len(stopped))
	var wg sync.WaitGroup
	for i, ns := range stopped {
		wg.Go(func() { errs[i] = n.startSealing(ctx, ns) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// blockVanity is the extra data our nodes put in the blocks they seal.
const blockVanity = "medrec"

// peerWait bounds how long a started node waits for its peers before it
// seals anyway.
const peerWait = 15 * time.Second

// startSealing waits until a started node is connected to every other
// running node (at most peerWait), then unlocks its authority key over IPC
// and kicks its miner. A node sealing before its peers are connected never
// announces that block again: two such nodes fork the chain, each has then
// "signed recently" on its own fork, and the chain can stall (see Heal).
// The password travels from the 0600 file to geth over the 0600 IPC
// socket: never on a command line, never logged.
func (n *Network) startSealing(ctx context.Context, ns *NodeState) error {
	st := n.State()
	others := 0
	for _, o := range st.Nodes {
		if o.Provider != ns.Provider && alive(o.PID, n.datadir(&o)) {
			others++
		}
	}
	c, err := Dial(ctx, ns.RPC)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(peerWait)
	for {
		peers, err := c.Peers(ctx)
		if err != nil {
			return err
		}
		if peers >= others {
			break
		}
		if time.Now().After(deadline) {
			n.log.Warn("Sealing before every peer connected", "provider", ns.Provider, "peers", peers, "running", others)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
	pw, err := os.ReadFile(n.Path(st.PasswordFile))
	if err != nil {
		return err
	}
	var ok bool
	if err := adminCall(ctx, ns.IPC, &ok, "personal_unlockAccount", ns.Authority, string(pw), 0); err != nil || !ok {
		return fmt.Errorf("provider %d: unlock the authority key: %v", ns.Provider, err)
	}
	// The miner, which failed to seal, waits for a new head: restart it.
	// geth drops a sealing task identical to the previous one, and the
	// retry may well be (same parent, same second), so first change the
	// header's vanity (extra data) from geth's default to ours.
	if err := adminCall(ctx, ns.IPC, nil, "miner_setExtra", blockVanity); err != nil {
		return fmt.Errorf("provider %d: %w", ns.Provider, err)
	}
	if err := setMining(ctx, ns.IPC, false); err != nil {
		return fmt.Errorf("provider %d: %w", ns.Provider, err)
	}
	if err := setMining(ctx, ns.IPC, true); err != nil {
		return fmt.Errorf("provider %d: %w", ns.Provider, err)
	}
	return nil
}

// SetSealing stops (on false) or resumes a provider's sealing: its miner,
// over IPC. Its key stays unlocked. For fault tests and drills that need
// to say which authority seals a block (the signer set is unchanged; the
// others go on without it).
func (n *Network) SetSealing(ctx context.Context, provider int, on bool) error {
	st := n.State()
	ns, err := st.node(provider)
	if err != nil {
		return err
	}
	if err := setMining(ctx, ns.IPC, on); err != nil {
		return fmt.Errorf("provider %d: %w", provider, err)
	}
	return nil
}

// setMining starts or stops a node's miner and waits until it has (geth
// applies miner_start/miner_stop asynchronously, and miner_start is a no-op
// on a running miner).
func setMining(ctx context.Context, ipc string, on bool) error {
	method := map[bool]string{true: "miner_start", false: "miner_stop"}[on]
	if err := adminCall(ctx, ipc, nil, method); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		var mining bool
		if err := adminCall(ctx, ipc, &mining, "eth_mining"); err == nil && mining == on {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not take effect", method)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// adminCall calls a method of a namespace served only on a node's IPC
// endpoint (admin, miner, debug), decoding the answer into result (may be
// nil).
func adminCall(ctx context.Context, ipc string, result any, method string, args ...any) error {
	c, err := rpc.DialIPC(ctx, ipc)
	if err != nil {
		return fmt.Errorf("admin endpoint %s: %w", ipc, err)
	}
	defer c.Close()
	if err := c.CallContext(ctx, result, method, args...); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	return nil
}

// waitRPC waits until a just-started node answers and serves our genesis.
func (n *Network) waitRPC(ctx context.Context, ns *NodeState) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	for {
		if !alive(ns.PID, n.datadir(ns)) {
			return fmt.Errorf("%w: provider %d (pid %d): %s (see %s)",
				ErrNodeExited, ns.Provider, ns.PID, logReason(n.logPath(ns)), n.logPath(ns))
		}
		node, err := Dial(ctx, ns.RPC)
		if err == nil {
			zero := uint64(0)
			h, err := node.Header(ctx, &zero)
			node.Close()
			if err != nil {
				return err
			}
			if h.Hash() != n.st.GenesisHash {
				return fmt.Errorf("%w: provider %d serves genesis %s, network.json says %s",
					ErrGenesisMismatch, ns.Provider, h.Hash(), n.st.GenesisHash)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provider %d: %w (geth pid %d is running; see %s)", ns.Provider, err, ns.PID, n.logPath(ns))
		case <-time.After(pollEvery):
		}
	}
}

// waitBlocks waits until every given node is peered (when there are
// others) and at least one block above the highest head seen at the start.
func (n *Network) waitBlocks(ctx context.Context, providers []int) error {
	st := n.State()
	wait := 30*time.Second + 10*time.Duration(st.Period)*time.Second
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	nodes := map[int]*Node{}
	defer func() {
		for _, c := range nodes {
			c.Close()
		}
	}()
	for _, p := range providers {
		ns, _ := st.node(p)
		c, err := Dial(ctx, ns.RPC)
		if err != nil {
			return err
		}
		nodes[p] = c
	}
	var target uint64
	for _, c := range nodes {
		h, err := c.Height(ctx)
		if err != nil {
			return err
		}
		target = max(target, h+1)
	}
	var (
		report   []string
		top      uint64
		progress = time.Now()
	)
	for {
		report = report[:0]
		ok := true
		for _, p := range providers {
			h, err := nodes[p].Height(ctx)
			if err != nil {
				return err
			}
			if h > top {
				top, progress = h, time.Now()
			}
			peers, err := nodes[p].Peers(ctx)
			if err != nil {
				return err
			}
			if h < target || (len(st.Nodes) > 1 && peers == 0) {
				ok = false
			}
			report = append(report, fmt.Sprintf("provider %d: height %d, %d peers", p, h, peers))
		}
		if ok {
			return nil
		}
		if time.Since(progress) > stallAfter(st) {
			if _, err := n.Heal(ctx); err != nil {
				n.log.Warn("Heal failed", "err", err)
			}
			progress = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("blocks did not advance to %d within %s: %s", target, wait, strings.Join(report, "; "))
		case <-time.After(pollEvery):
		}
	}
}

// Stop stops the given providers' nodes: SIGINT, SIGKILL after StopGrace.
func (n *Network) Stop(ctx context.Context, providers ...int) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	return n.stop(ctx, providers...)
}

// Kill crashes the given providers' nodes: SIGKILL at once, as a power cut
// or an OOM kill would, and returns when they are gone. For fault tests and
// drills; Stop is the clean way down.
func (n *Network) Kill(ctx context.Context, providers ...int) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, p := range providers {
		ns, err := n.st.node(p)
		if err != nil {
			return err
		}
		if ns.PID == 0 || !alive(ns.PID, n.datadir(ns)) {
			continue
		}
		if err := syscall.Kill(ns.PID, syscall.SIGKILL); err != nil && alive(ns.PID, n.datadir(ns)) {
			errs = append(errs, fmt.Errorf("provider %d: kill geth %d: %w", p, ns.PID, err))
			continue
		}
		if !waitDead(ctx, ns.PID, n.datadir(ns), 10*time.Second) {
			errs = append(errs, fmt.Errorf("provider %d: geth %d survived SIGKILL", p, ns.PID))
			continue
		}
		n.log.Info("Killed geth", "provider", p, "pid", ns.PID)
		n.mu.Lock()
		ns.PID = 0
		n.mu.Unlock()
	}
	return errors.Join(append(errs, n.save())...)
}

// Restart stops and starts the given providers' nodes, waiting for RPC.
func (n *Network) Restart(ctx context.Context, providers ...int) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	if err := n.stop(ctx, providers...); err != nil {
		return err
	}
	return n.start(ctx, providers...)
}

// Down stops every node.
func (n *Network) Down(ctx context.Context) error {
	unlock, err := n.reload()
	if err != nil {
		return err
	}
	defer unlock()
	return n.stop(ctx, n.providers()...)
}

func (n *Network) stop(ctx context.Context, providers ...int) error {
	errs := make([]error, len(providers))
	var wg sync.WaitGroup
	for i, p := range providers {
		ns, err := n.st.node(p)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if ns.PID == 0 {
				return
			}
			if err := terminate(ctx, ns.PID, n.datadir(ns), StopGrace); err != nil {
				errs[i] = fmt.Errorf("provider %d: %w", p, err)
				return
			}
			n.log.Info("Stopped geth", "provider", p, "pid", ns.PID)
			n.mu.Lock()
			ns.PID = 0
			n.mu.Unlock()
			os.Remove(filepath.Join(n.datadir(ns), "geth.pid"))
		})
	}
	wg.Wait()
	return errors.Join(append(errs, n.save())...)
}
