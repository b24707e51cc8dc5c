package devnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/internal/atomicfile"
	"github.com/medrec-zk/medrec/prover"
)

// GatewayOptions override a provider gateway's defaults.
type GatewayOptions struct {
	DSN            string // records database; default DIR/provider<P>/records.db (SQLite)
	StaffTokenFile string // "<staff id> <token>" per line; default DIR/provider<P>/staff-tokens, created with one token
	Log            *slog.Logger
}

// Gateway is a provider's assembled gateway with what it runs on.
type Gateway struct {
	*dbmanager.Gateway
	Addr   string          // host:port from the registry's gateway URL
	View   *chainview.View // the chain, followed
	Mirror *chain.Mirror   // this provider's authority follows the registry
	close  []func()
}

// Close releases the database and connections.
func (g *Gateway) Close() {
	for i := len(g.close) - 1; i >= 0; i-- {
		g.close[i]()
	}
}

// syncedView is the registry's signer set after a sync: the Mirror's source.
type syncedView struct{ v *chainview.View }

func (s syncedView) ActiveSigners(ctx context.Context) ([]common.Address, error) {
	if err := s.v.Sync(ctx); err != nil {
		return nil, err
	}
	return s.v.ActiveSigners(ctx)
}

// OpenGateway assembles provider p's gateway on the network in n.
func OpenGateway(ctx context.Context, n *chain.Network, p int, opt GatewayOptions) (_ *Gateway, err error) {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()
	d, err := LoadDeployment(n.Dir())
	if err != nil {
		return nil, fmt.Errorf("devnet: %w (is the network up? `medrec network up` deploys the contracts)", err)
	}
	ec, err := Dial(ctx, n, p)
	if err != nil {
		return nil, err
	}
	g.close = append(g.close, ec.Close)
	if err := d.Check(ctx, ec); err != nil {
		return nil, err
	}
	ks, err := Keys(n.Dir(), false)
	if err != nil {
		return nil, err
	}
	if err := CheckKeys(ctx, ec, d, ks); err != nil {
		return nil, err
	}
	key, err := GatewayKey(n, p)
	if err != nil {
		return nil, err
	}
	if g.View, err = chainview.New(ec, d); err != nil {
		return nil, err
	}
	if err := g.View.Sync(ctx); err != nil {
		return nil, fmt.Errorf("devnet: follow the chain: %w", err)
	}
	prov, ok := g.View.Provider(uint32(p))
	if !ok || !prov.Active {
		return nil, fmt.Errorf("devnet: provider %d is not an active provider of the registry", p)
	}
	u, err := url.Parse(prov.GatewayURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("devnet: provider %d's gateway URL %q is not usable", p, prov.GatewayURL)
	}
	g.Addr = u.Host
	dir := filepath.Join(n.Dir(), fmt.Sprintf("provider%d", p))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if opt.DSN == "" {
		opt.DSN = filepath.Join(dir, "records.db")
	}
	db, err := sqlstore.Open(ctx, opt.DSN)
	if err != nil {
		return nil, err
	}
	g.close = append(g.close, func() { db.Close() })
	if opt.StaffTokenFile == "" {
		opt.StaffTokenFile = filepath.Join(dir, "staff-tokens")
		if err := ensureStaffToken(opt.StaffTokenFile); err != nil {
			return nil, err
		}
	}
	tokens, err := ReadStaffTokens(opt.StaffTokenFile)
	if err != nil {
		return nil, err
	}
	g.Gateway, err = dbmanager.New(dbmanager.Config{
		Provider: uint32(p), Store: db, View: g.View, Chain: contracts.NewClient(ec, d),
		Relayer: bind.NewKeyedTransactor(key, d.ChainID), Prover: prover.New(ks),
		StaffTokens: tokens, Log: opt.Log,
		// Stable across restarts, secret like the key it comes from.
		PseudonymKey: crypto.Keccak256([]byte("medrec-zk research pseudonyms"), crypto.FromECDSA(key)),
	})
	if err != nil {
		return nil, err
	}
	node, err := n.Client(ctx, p)
	if err != nil {
		return nil, err
	}
	g.close = append(g.close, node.Close)
	g.Mirror = chain.NewMirror(syncedView{g.View}, node, opt.Log)
	return g, nil
}

// ReadStaffTokens reads "<staff id> <token>" lines (# comments allowed) and
// returns the token hashes the gateway keeps.
func ReadStaffTokens(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("devnet: staff tokens: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fields := strings.Fields(t)
		if len(fields) != 2 || len(fields[1]) < 16 {
			return nil, fmt.Errorf("devnet: %s line %d: want \"<staff id> <token of at least 16 characters>\"", path, line)
		}
		out[dbmanager.TokenHash(fields[1])] = fields[0]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("devnet: %s holds no staff token", path)
	}
	return out, sc.Err()
}

func ensureStaffToken(path string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tok, err := dbmanager.NewToken()
	if err != nil {
		return err
	}
	return atomicfile.Write(path, []byte("# staff bearer tokens of this provider's gateway: <staff id> <token>\ndesk "+tok+"\n"), 0o600)
}
