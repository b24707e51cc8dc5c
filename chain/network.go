package chain

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/p2p/enode"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// Options configure a new network.
type Options struct {
	Providers int    // number of providers, each one authority node (≥ 1)
	Period    uint64 // seconds between blocks; 0 means DefaultPeriod
	ChainID   uint64 // 0 means DefaultChainID
	// BasePort fixes the ports: provider p uses BasePort+3(p-1) for P2P,
	// +1 for HTTP JSON-RPC and +2 for geth's engine API. 0 picks free ports.
	BasePort int
}

// nodeKeyFile holds a node's P2P key (its enode id), in hex; not "nodekey",
// a name geth 1.13 warns about as a legacy file.
const nodeKeyFile = "enode.key"

// Timeouts of the supervisor.
const (
	StopGrace  = 20 * time.Second // SIGINT → SIGKILL
	rpcTimeout = 30 * time.Second // a started geth must answer within this
	pollEvery  = 100 * time.Millisecond
)

// Network supervises the geth nodes of one network directory. Its methods
// are safe for concurrent use; changes are serialised across processes by a
// lock file.
type Network struct {
	dir  string
	geth *Geth
	log  *slog.Logger

	mu sync.Mutex
	st State
}

// Open loads the network in dir. geth may be nil for commands that do not
// start nodes (status, down); log may be nil.
func Open(dir string, geth *Geth, log *slog.Logger) (*Network, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(abs)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Network{dir: abs, geth: geth, log: log, st: st}, nil
}

// Dir is the network directory (absolute).
func (n *Network) Dir() string { return n.dir }

// State returns a copy of the network's state.
func (n *Network) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.st
	st.Nodes = append([]NodeState(nil), n.st.Nodes...)
	return st
}

// Path resolves a path of the state (relative to the directory).
func (n *Network) Path(rel string) string { return filepath.Join(n.dir, rel) }

// Create makes a new network in dir (which must not exist or be empty):
// keys, genesis, node directories initialised with `geth init`. It starts
// nothing; call Up. On failure it leaves nothing behind.
func Create(ctx context.Context, dir string, geth *Geth, opt Options, log *slog.Logger) (_ *Network, err error) {
	if geth == nil {
		return nil, fmt.Errorf("%w: create needs geth", ErrGethMissing)
	}
	if opt.Providers < 1 {
		return nil, fmt.Errorf("need at least one provider, got %d", opt.Providers)
	}
	if opt.Period == 0 {
		opt.Period = DefaultPeriod
	}
	if opt.ChainID == 0 {
		opt.ChainID = DefaultChainID
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(abs)
	created := errors.Is(err, fs.ErrNotExist)
	switch {
	case created:
	case err != nil:
		return nil, err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(abs, StateFile)); err == nil {
			return nil, fmt.Errorf("%w: %s already holds a network", ErrConflict, abs)
		}
		return nil, fmt.Errorf("%w: %s (a new network needs an empty or new directory)", ErrNotEmpty, abs)
	}
	// Ports first: a taken port fails before anything is written.
	ports, err := allocPorts(opt.BasePort, 1, opt.Providers)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && created {
			os.RemoveAll(abs)
		} else if err != nil {
			removeContents(abs)
		}
	}()
	unlock, err := lockDir(abs)
	if err != nil {
		return nil, err
	}
	defer unlock()

	pw, err := randomPassword()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteNew(filepath.Join(abs, PasswordFile), []byte(pw), 0o600); err != nil {
		return nil, err
	}
	st := State{ChainID: opt.ChainID, Period: opt.Period, BasePort: opt.BasePort, PasswordFile: PasswordFile}
	deployer, err := keystore.StoreKey(filepath.Join(abs, "deployer"), pw, keystore.LightScryptN, keystore.LightScryptP)
	if err != nil {
		return nil, fmt.Errorf("deployer key: %w", err)
	}
	st.Deployer = deployer.Address
	st.DeployerKey, _ = filepath.Rel(abs, deployer.URL.Path)

	for p := 1; p <= opt.Providers; p++ {
		ns, err := newNodeFiles(abs, p, ports[p-1], pw)
		if err != nil {
			return nil, err
		}
		ns.Signer = true
		st.Nodes = append(st.Nodes, ns)
	}
	spec := GenesisSpec{ChainID: opt.ChainID, Period: opt.Period, Timestamp: uint64(time.Now().Unix())}
	spec.Funded = append(spec.Funded, st.Deployer)
	for _, ns := range st.Nodes {
		spec.Signers = append(spec.Signers, ns.Authority)
		spec.Funded = append(spec.Funded, ns.Authority, ns.Gateway)
	}
	gen, err := spec.JSON()
	if err != nil {
		return nil, err
	}
	if st.GenesisHash, err = GenesisHash(gen); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteNew(filepath.Join(abs, GenesisFile), gen, 0o644); err != nil {
		return nil, err
	}
	if err := writeNodeConfigs(abs, st); err != nil {
		return nil, err
	}
	nw := &Network{dir: abs, geth: geth, log: log, st: st}
	errs := make([]error, len(st.Nodes))
	var wg sync.WaitGroup
	for i := range st.Nodes {
		wg.Go(func() { errs[i] = nw.gethInit(ctx, &st.Nodes[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := saveState(abs, st); err != nil {
		return nil, err
	}
	log.Info("Created network", "dir", abs, "providers", opt.Providers, "chainid", opt.ChainID, "genesis", st.GenesisHash)
	return nw, nil
}

// nodePorts are one node's loopback ports.
type nodePorts struct{ p2p, http, authrpc int }

// allocPorts returns ports for providers first..first+count-1, checked free.
func allocPorts(base, first, count int) ([]nodePorts, error) {
	out := make([]nodePorts, count)
	if base == 0 {
		free, err := freePorts(3 * count)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i] = nodePorts{free[3*i], free[3*i+1], free[3*i+2]}
		}
		return out, nil
	}
	for i := range out {
		b := base + 3*(first+i-1)
		out[i] = nodePorts{b, b + 1, b + 2}
		if b+2 > 65535 || base < 1024 {
			return nil, fmt.Errorf("base port %d: ports must lie in 1024–65535", base)
		}
	}
	for i, p := range out {
		if err := checkPorts(first+i, p); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func checkPorts(provider int, p nodePorts) error {
	for _, c := range []struct {
		port int
		what string
	}{{p.p2p, "P2P"}, {p.http, "HTTP RPC"}, {p.authrpc, "engine API"}} {
		if err := checkPort(c.port, fmt.Sprintf("provider %d %s", provider, c.what)); err != nil {
			return err
		}
	}
	return nil
}

// newNodeFiles creates dir/nodeP: the authority key (in the data dir's
// keystore, where geth looks for --unlock), the gateway key (outside it),
// the P2P node key.
func newNodeFiles(dir string, provider int, ports nodePorts, pw string) (NodeState, error) {
	rel := "node" + strconv.Itoa(provider)
	datadir := filepath.Join(dir, rel)
	if err := os.Mkdir(datadir, 0o700); err != nil {
		return NodeState{}, err
	}
	auth, err := keystore.StoreKey(filepath.Join(datadir, "keystore"), pw, keystore.LightScryptN, keystore.LightScryptP)
	if err != nil {
		return NodeState{}, fmt.Errorf("authority key: %w", err)
	}
	gw, err := keystore.StoreKey(filepath.Join(datadir, "gateway"), pw, keystore.LightScryptN, keystore.LightScryptP)
	if err != nil {
		return NodeState{}, fmt.Errorf("gateway key: %w", err)
	}
	nk, err := crypto.GenerateKey()
	if err != nil {
		return NodeState{}, err
	}
	if err := crypto.SaveECDSA(filepath.Join(datadir, nodeKeyFile), nk); err != nil {
		return NodeState{}, err
	}
	ns := NodeState{
		Provider:    provider,
		Authority:   auth.Address,
		Gateway:     gw.Address,
		RPC:         fmt.Sprintf("http://127.0.0.1:%d", ports.http),
		P2PPort:     ports.p2p,
		HTTPPort:    ports.http,
		AuthRPCPort: ports.authrpc,
		Enode:       enode.NewV4(&nk.PublicKey, net.IPv4(127, 0, 0, 1), ports.p2p, 0).URLv4(),
		IPC:         ipcPath(datadir),
		Dir:         rel,
	}
	ns.AuthorityKey, _ = filepath.Rel(dir, auth.URL.Path)
	ns.GatewayKey, _ = filepath.Rel(dir, gw.URL.Path)
	return ns, nil
}

// ipcPath is datadir/geth.ipc, or a short path in the temp directory when
// that exceeds the unix socket path limit (104 bytes on some systems).
func ipcPath(datadir string) string {
	p := filepath.Join(datadir, "geth.ipc")
	if len(p) < 100 {
		return p
	}
	sum := sha256.Sum256([]byte(datadir))
	return filepath.Join(os.TempDir(), "medrec-"+hex.EncodeToString(sum[:6])+".ipc")
}

// writeNodeConfigs writes every node's config.toml: P2P on loopback, every
// other node a static and trusted peer (discovery is off), and MaxPeers the
// number of other nodes. geth 1.13 starts a sync on a peer's better head
// only with min(5, MaxPeers) peers, otherwise every 10 s: with MaxPeers =
// N-1 a node that restarts, or that sealed a competing block while its
// peers were connecting, catches up as soon as it sees them all.
// DialRatio 1 lets it dial every peer; trusted peers pass the limit, which
// is how a provider added later gets in.
func writeNodeConfigs(dir string, st State) error {
	for _, ns := range st.Nodes {
		var peers []string
		for _, o := range st.Nodes {
			if o.Provider != ns.Provider {
				peers = append(peers, strconv.Quote(o.Enode))
			}
		}
		list := strings.Join(peers, ", ")
		toml := fmt.Sprintf("# Written by medrec; rewritten when providers join.\n[Node.P2P]\nListenAddr = \"127.0.0.1:%d\"\nMaxPeers = %d\nDialRatio = 1\nStaticNodes = [%s]\nTrustedNodes = [%s]\n",
			ns.P2PPort, max(len(peers), 1), list, list)
		if err := atomicfile.Write(filepath.Join(dir, ns.Dir, "config.toml"), []byte(toml), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func randomPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// removeContents empties dir (used to undo a failed Create).
func removeContents(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dir, e.Name()))
	}
}

func (n *Network) datadir(ns *NodeState) string { return filepath.Join(n.dir, ns.Dir) }
func (n *Network) logPath(ns *NodeState) string { return filepath.Join(n.dir, ns.Dir, "geth.log") }

// gethInit writes the genesis into a node's fresh data dir.
func (n *Network) gethInit(ctx context.Context, ns *NodeState) error {
	logf, err := os.OpenFile(n.logPath(ns), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, n.geth.Path, "init", "--datadir", n.datadir(ns), "--state.scheme", "hash",
		filepath.Join(n.dir, GenesisFile))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("geth init for provider %d: %v: %s (see %s)", ns.Provider, err, logReason(n.logPath(ns)), n.logPath(ns))
	}
	return nil
}

func hasChain(datadir string) bool {
	_, err := os.Stat(filepath.Join(datadir, "geth", "chaindata"))
	return err == nil
}

// storedGenesis asks geth (read-only) which genesis a data dir holds.
func (n *Network) storedGenesis(ctx context.Context, ns *NodeState) (common.Hash, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, n.geth.Path, "dumpgenesis", "--datadir", n.datadir(ns))
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return common.Hash{}, fmt.Errorf("read the genesis of %s: %v: %s", n.datadir(ns), err, lastLine(errb.String()))
	}
	return GenesisHash(out.Bytes())
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// checkDatadir makes sure a stopped node's data dir is ours: it holds our
// genesis (ErrGenesisMismatch otherwise) or no chain yet.
func (n *Network) checkDatadir(ctx context.Context, ns *NodeState) error {
	if !hasChain(n.datadir(ns)) {
		return nil
	}
	h, err := n.storedGenesis(ctx, ns)
	if err != nil {
		return err
	}
	if h != n.st.GenesisHash {
		return fmt.Errorf("%w: %s has genesis %s, this network's is %s (nothing was started or changed)",
			ErrGenesisMismatch, n.datadir(ns), h, n.st.GenesisHash)
	}
	return nil
}

// gethArgs is a node's command line. No secret is on it: --password names
// a file.
func (n *Network) gethArgs(ns *NodeState) []string {
	dd := n.datadir(ns)
	auth := ns.Authority.Hex()
	return []string{
		"--datadir", dd,
		"--config", filepath.Join(dd, "config.toml"),
		"--networkid", strconv.FormatUint(n.st.ChainID, 10),
		"--syncmode", "full",
		// Archive: every block's state is on disk as it is imported, so a
		// node killed -9 restarts at the head it had.
		"--gcmode", "archive", "--state.scheme", "hash",
		"--nat", "none", "--nodiscover", "--netrestrict", "127.0.0.0/8",
		"--nodekey", filepath.Join(dd, nodeKeyFile),
		"--ipcpath", ns.IPC,
		"--http", "--http.addr", "127.0.0.1", "--http.port", strconv.Itoa(ns.HTTPPort),
		"--http.api", "eth,net,web3,clique",
		"--authrpc.addr", "127.0.0.1", "--authrpc.port", strconv.Itoa(ns.AuthRPCPort),
		// Mining from the start (so the node accepts blocks from its peers at
		// once) but with the authority key locked: it cannot seal until
		// startSealing unlocks it over IPC, once the node is peered.
		"--mine", "--miner.etherbase", auth,
		// personal_unlockAccount, on IPC only: --http.api does not list it.
		"--rpc.enabledeprecatedpersonal",
		// geth refuses any unlock while HTTP is on without this; HTTP is
		// loopback-only (see docs/chain.md for what that costs).
		"--allow-insecure-unlock",
		"--cache", "64",
		"--verbosity", "3",
	}
}

// Running reports whether provider's geth is alive.
func (n *Network) Running(provider int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	ns, err := n.st.node(provider)
	return err == nil && alive(ns.PID, n.datadir(ns))
}

// reload re-reads network.json (another medrec process may have changed
// it) under the directory lock.
func (n *Network) reload() (func(), error) {
	unlock, err := lockDir(n.dir)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(n.dir)
	if err != nil {
		unlock()
		return nil, err
	}
	n.mu.Lock()
	n.st = st
	n.mu.Unlock()
	return unlock, nil
}

func (n *Network) save() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return saveState(n.dir, n.st)
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

func (n *Network) providers() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ps []int
	for _, ns := range n.st.Nodes {
		ps = append(ps, ns.Provider)
	}
	return ps
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
		pid, err := spawn(n.geth.Path, n.gethArgs(ns), n.logPath(ns))
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

// Client dials provider's node.
func (n *Network) Client(ctx context.Context, provider int) (*Node, error) {
	st := n.State()
	ns, err := st.node(provider)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, ns.RPC)
}

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
	ns, err := newNodeFiles(n.dir, p, ports[0], string(pw))
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

// Converge runs every running node's mirror (following network.json's
// signer set) until all report no drift, then steps once more so the
// settled votes are discarded. ErrNotConverged after timeout.
func (n *Network) Converge(ctx context.Context, timeout time.Duration) error {
	ms, err := n.Mirrors(ctx, nil)
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

// NodeStatus is one node as seen now.
type NodeStatus struct {
	Provider  int            `json:"provider"`
	Authority common.Address `json:"authority"`
	Gateway   common.Address `json:"gateway"`
	PID       int            `json:"pid"`
	RPC       string         `json:"rpc"`
	Up        bool           `json:"up"`     // process alive and RPC answering
	Signer    bool           `json:"signer"` // in the chain's signer set
	Peers     int            `json:"peers"`
	Height    uint64         `json:"height"`
	Error     string         `json:"error,omitempty"`
}

// Status is the network as seen now.
type Status struct {
	Dir         string           `json:"dir"`
	ChainID     uint64           `json:"chain_id"`
	GenesisHash common.Hash      `json:"genesis_hash"`
	Height      uint64           `json:"height"`  // highest head among the nodes
	Signers     []common.Address `json:"signers"` // Clique signers at that head
	Nodes       []NodeStatus     `json:"nodes"`
	// Drift of the chain's signers from network.json's wanted set.
	Drift Drift `json:"drift"`
}

// Status asks every node for its head, peers and signers.
func (n *Network) Status(ctx context.Context) (Status, error) {
	st := n.State()
	if fresh, err := LoadState(n.dir); err == nil {
		st = fresh
	}
	s := Status{Dir: n.dir, ChainID: st.ChainID, GenesisHash: st.GenesisHash, Signers: []common.Address{}}
	var best *Node
	var bestHeight uint64
	for _, ns := range st.Nodes {
		nst := NodeStatus{Provider: ns.Provider, Authority: ns.Authority, Gateway: ns.Gateway, RPC: ns.RPC}
		if alive(ns.PID, n.datadir(&ns)) {
			nst.PID = ns.PID
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := Dial(cctx, ns.RPC)
			if err == nil {
				nst.Height, err = c.Height(cctx)
			}
			if err == nil {
				nst.Peers, err = c.Peers(cctx)
			}
			cancel()
			if err != nil {
				nst.Error = err.Error()
			} else {
				nst.Up = true
			}
			if c != nil {
				if nst.Up && (best == nil || nst.Height > bestHeight) {
					if best != nil {
						best.Close()
					}
					best, bestHeight = c, nst.Height
				} else {
					c.Close()
				}
			}
		}
		s.Nodes = append(s.Nodes, nst)
	}
	if best != nil {
		defer best.Close()
		signers, err := best.Signers(ctx)
		if err != nil {
			return s, err
		}
		s.Height, s.Signers = bestHeight, sortAddrs(signers)
		for i := range s.Nodes {
			for _, a := range signers {
				if a == s.Nodes[i].Authority {
					s.Nodes[i].Signer = true
				}
			}
		}
	}
	s.Drift = Compare(st.Signers(), s.Signers)
	if best == nil { // nothing answers: drift unknown, not "everything missing"
		s.Drift = Compare(nil, nil)
	}
	return s, nil
}
