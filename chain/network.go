package chain

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"
)

// Options configure a new network.
type Options struct {
	Providers int    // number of providers, each one authority node (≥ 1)
	Period    uint64 // seconds between blocks; 0 means DefaultPeriod
	ChainID   uint64 // 0 means DefaultChainID
	// BasePort fixes the ports: provider p uses BasePort+3(p-1) for P2P,
	// +1 for HTTP JSON-RPC and +2 for geth's engine API. 0 picks free ports.
	BasePort int
	// Hosts, when set, places provider p's node on Hosts[p-1] (its own
	// network namespace and address), and Net is the network peers may
	// come from (a CIDR, for --netrestrict). Fault tests only: see Host.
	Hosts []Host
	Net   string
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

func (n *Network) datadir(ns *NodeState) string { return filepath.Join(n.dir, ns.Dir) }

func (n *Network) logPath(ns *NodeState) string { return filepath.Join(n.dir, ns.Dir, "geth.log") }

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

func (n *Network) providers() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ps []int
	for _, ns := range n.st.Nodes {
		ps = append(ps, ns.Provider)
	}
	return ps
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
