package chain

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// Files in a network directory.
const (
	StateFile    = "network.json" // State, read by every component
	GenesisFile  = "genesis.json" // what `geth init` was given
	PasswordFile = "password"     // the dev password of every key below (0600)
	lockFile     = ".lock"
)

// State is the network directory's network.json: what every component
// (gateways, clients, the deployer) reads to find the chain.
type State struct {
	ChainID     uint64      `json:"chain_id"`
	Period      uint64      `json:"period"`
	GenesisHash common.Hash `json:"genesis_hash"`
	// BasePort is the first port of the fixed layout, 0 when ports were
	// picked free.
	BasePort int `json:"base_port,omitempty"`
	// PasswordFile (relative to the directory) unlocks every key here.
	PasswordFile string         `json:"password_file"`
	Deployer     common.Address `json:"deployer"`
	DeployerKey  string         `json:"deployer_key"` // keystore file, relative
	Nodes        []NodeState    `json:"nodes"`
	// Net is the network the nodes' hosts share (Options.Net); empty on
	// loopback.
	Net string `json:"net,omitempty"`
}

// NodeState is one provider's node. Paths are relative to the network
// directory.
type NodeState struct {
	Provider     int            `json:"provider"`
	Authority    common.Address `json:"authority"`     // Clique signer key, unlocked in geth
	AuthorityKey string         `json:"authority_key"` // its keystore file
	Gateway      common.Address `json:"gateway"`       // the provider gateway's key, for relaying
	GatewayKey   string         `json:"gateway_key"`
	// Signer: governance wants this authority sealing (genesis signers and
	// providers voted in). The chain's actual set may lag; the difference
	// is the drift.
	Signer      bool   `json:"signer"`
	RPC         string `json:"rpc"`
	P2PPort     int    `json:"p2p_port"`
	HTTPPort    int    `json:"http_port"`
	AuthRPCPort int    `json:"authrpc_port"`
	Enode       string `json:"enode"`
	IPC         string `json:"ipc"` // absolute: kept short for the unix socket limit
	PID         int    `json:"pid"` // 0 when stopped
	Dir         string `json:"dir"`
	// NetNS and IP: where the node runs when it has a Host (fault tests).
	NetNS string `json:"netns,omitempty"`
	IP    string `json:"ip,omitempty"`
}

// wsOrigin is the only browser origin geth's WebSocket accepts: a name
// under .invalid, which no page can be served from (RFC 2606).
const wsOrigin = "https://no-browser.invalid"

// WS is the node's WebSocket endpoint: its HTTP RPC address with the ws
// scheme (geth serves both on one port). Nodes started before WebSocket was
// enabled answer it only once restarted; a client that cannot subscribe
// there falls back to polling.
func (ns NodeState) WS() string {
	if rest, ok := strings.CutPrefix(ns.RPC, "http://"); ok {
		return "ws://" + rest
	}
	if rest, ok := strings.CutPrefix(ns.RPC, "https://"); ok {
		return "wss://" + rest
	}
	return ns.RPC
}

// LoadState reads dir/network.json.
func LoadState(dir string) (State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, fmt.Errorf("%w: %s has no %s", ErrNoNetwork, dir, StateFile)
	}
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return State{}, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	return st, nil
}

func saveState(dir string, st State) error {
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, StateFile), append(raw, '\n'), 0o644)
}

// node returns the node of provider id.
func (st *State) node(provider int) (*NodeState, error) {
	for i := range st.Nodes {
		if st.Nodes[i].Provider == provider {
			return &st.Nodes[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownProvider, provider)
}

// Signers is the set governance wants sealing.
func (st *State) Signers() []common.Address {
	var s []common.Address
	for _, n := range st.Nodes {
		if n.Signer {
			s = append(s, n.Authority)
		}
	}
	return sortAddrs(s)
}

// lockDir takes an exclusive lock on dir, so two medrec processes never
// change one network at once.
func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
