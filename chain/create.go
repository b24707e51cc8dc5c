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

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// Creating a network: keys, genesis, node directories, ports, geth init.

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
	if len(opt.Hosts) > 0 && (len(opt.Hosts) != opt.Providers || opt.Net == "") {
		return nil, fmt.Errorf("hosts: one per provider (%d for %d), and their network", len(opt.Hosts), opt.Providers)
	}
	st := State{ChainID: opt.ChainID, Period: opt.Period, BasePort: opt.BasePort, PasswordFile: PasswordFile, Net: opt.Net}
	deployer, err := keystore.StoreKey(filepath.Join(abs, "deployer"), pw, keystore.LightScryptN, keystore.LightScryptP)
	if err != nil {
		return nil, fmt.Errorf("deployer key: %w", err)
	}
	st.Deployer = deployer.Address
	st.DeployerKey, _ = filepath.Rel(abs, deployer.URL.Path)

	for p := 1; p <= opt.Providers; p++ {
		var host *Host
		if len(opt.Hosts) > 0 {
			host = &opt.Hosts[p-1]
		}
		ns, err := newNodeFiles(abs, p, ports[p-1], pw, host)
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
func newNodeFiles(dir string, provider int, ports nodePorts, pw string, host *Host) (NodeState, error) {
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
	if host != nil {
		if err := applyHost(&ns, *host); err != nil {
			return NodeState{}, err
		}
		ip, port := net.ParseIP(host.IP), ports.p2p
		if host.Advertise != "" {
			h, p, err := net.SplitHostPort(host.Advertise)
			if err != nil || net.ParseIP(h) == nil {
				return NodeState{}, fmt.Errorf("provider %d: advertised address %q is not ip:port", provider, host.Advertise)
			}
			ip = net.ParseIP(h)
			if port, err = strconv.Atoi(p); err != nil {
				return NodeState{}, fmt.Errorf("provider %d: advertised address %q: %w", provider, host.Advertise, err)
			}
		}
		ns.Enode = enode.NewV4(&nk.PublicKey, ip, port, 0).URLv4()
	}
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
		toml := fmt.Sprintf("# Written by medrec; rewritten when providers join.\n[Node.P2P]\nListenAddr = \"%s\"\nMaxPeers = %d\nDialRatio = 1\nStaticNodes = [%s]\nTrustedNodes = [%s]\n",
			net.JoinHostPort(ns.listenIP(), strconv.Itoa(ns.P2PPort)), max(len(peers), 1), list, list)
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
