package devnet

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/go-jose/go-jose/v4"

	"github.com/medrec-zk/medrec/access"
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
	// SMARTAppsFile lists the SMART apps the provider registers (ReadSMARTApps); none without it.
	SMARTAppsFile string
	// BackendClientsFile lists the provider's systems that write records
	// (ReadBackendClients); none without it.
	BackendClientsFile string
	PatientApp         string // where the gateway sends patients to approve apps (default: dbmanager's)
	// EnrolLinger is how long enrolments wait to be batched (dbmanager.Config.EnrolLinger).
	EnrolLinger time.Duration
	Log         *slog.Logger
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

// OpenGateway assembles the gateway of the network's node p: the registry's
// provider whose gateway account is that node's.
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
	// A registry that takes proven batches needs the insertion proving key;
	// otherwise the gateway only verifies.
	proven := d.InsertionVerifier != (common.Address{})
	ks, err := Keys(n.Dir(), proven)
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
	// The registry's tree lives in the records database, not in memory.
	if g.View, err = chainview.NewWithNodes(ec, d, db.RegistryNodes()); err != nil {
		return nil, err
	}
	if err := g.View.Sync(ctx); err != nil {
		return nil, fmt.Errorf("devnet: follow the chain: %w", err)
	}
	// Node p's registry entry is the active one with its gateway account:
	// node numbers and registry ids part once governance admits providers
	// in another order than the nodes were added.
	gw := crypto.PubkeyToAddress(key.PublicKey)
	var prov chainview.Provider
	for _, rp := range g.View.Providers() {
		if rp.Active && rp.Gateway == gw {
			prov = rp
		}
	}
	if prov.ID == 0 {
		return nil, fmt.Errorf("devnet: node %d's gateway account %s is no active provider's of the registry (voted in yet? `medrec governance list`)", p, gw)
	}
	u, err := url.Parse(prov.GatewayURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("devnet: provider %d's gateway URL %q is not usable", prov.ID, prov.GatewayURL)
	}
	g.Addr = u.Host
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
	var apps []dbmanager.SMARTApp
	if opt.SMARTAppsFile != "" {
		if apps, err = ReadSMARTApps(opt.SMARTAppsFile); err != nil {
			return nil, err
		}
	}
	var backends []dbmanager.BackendClient
	if opt.BackendClientsFile != "" {
		if backends, err = ReadBackendClients(opt.BackendClientsFile); err != nil {
			return nil, err
		}
	}
	// New heads are pushed over the node's WebSocket (the same node the
	// view reads); a node that does not serve it leaves the gateway polling.
	var heads chainview.HeadSource
	if ws, err := dialWS(ctx, n, p); err != nil {
		opt.Log.Warn("No WebSocket to follow new heads; the gateway polls the chain", "provider", p, "err", err)
	} else {
		g.close = append(g.close, ws.Close)
		heads = ws
	}
	var inserter *prover.Prover
	if proven {
		inserter = prover.New(ks)
	}
	g.Gateway, err = dbmanager.New(dbmanager.Config{
		Provider: prov.ID, Store: db, View: g.View, Chain: contracts.NewClient(ec, d), Heads: heads,
		Relayer: bind.NewKeyedTransactor(key, d.ChainID), Prover: prover.New(ks), Inserter: inserter,
		StaffTokens: tokens, Log: opt.Log, SMARTApps: apps, PatientApp: opt.PatientApp, BackendClients: backends, EnrolLinger: opt.EnrolLinger,
		PublicURL: strings.TrimSuffix(prov.GatewayURL, "/"),
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

// smartAppFile is one app of a SMART apps file.
type smartAppFile struct {
	ClientID     string   `json:"clientId"`
	Name         string   `json:"name"`
	RedirectURIs []string `json:"redirectUris"`
	// Scope is the types it may ask for: "Observation,Condition", or "*" (the default).
	Scope string `json:"scope"`
}

// ReadSMARTApps reads the SMART apps a provider registers: a JSON array of
// {"clientId", "name", "redirectUris", "scope"} (docs/fhir.md). Unknown
// fields are errors; the gateway checks the rest when it starts.
func ReadSMARTApps(path string) ([]dbmanager.SMARTApp, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devnet: SMART apps: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var in []smartAppFile
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("devnet: SMART apps %s: %w", path, err)
	}
	out := make([]dbmanager.SMARTApp, 0, len(in))
	for _, a := range in {
		app := dbmanager.SMARTApp{ClientID: a.ClientID, Name: a.Name, RedirectURIs: a.RedirectURIs}
		if a.Scope != "" && a.Scope != "*" {
			if app.Scope, err = access.ParseScope(a.Scope); err != nil {
				return nil, fmt.Errorf("devnet: SMART app %q: %w", a.ClientID, err)
			}
		}
		out = append(out, app)
	}
	return out, nil
}

// backendClientFile is one client of a backend clients file.
type backendClientFile struct {
	ClientID string             `json:"clientId"`
	Name     string             `json:"name"`
	JWKS     jose.JSONWebKeySet `json:"jwks"` // its public keys
	// Scope is the types it may write: "Observation,Patient", or "*" (the default).
	Scope string `json:"scope"`
}

// ReadBackendClients reads the systems a provider lets write records
// (SMART Backend Services): a JSON array of {"clientId", "name", "jwks",
// "scope"}, jwks holding the public keys (RS384 or ES384) the client signs
// with (docs/fhir.md). Unknown fields are errors; the gateway checks the
// keys when it starts.
func ReadBackendClients(path string) ([]dbmanager.BackendClient, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devnet: backend clients: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var in []backendClientFile
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("devnet: backend clients %s: %w", path, err)
	}
	out := make([]dbmanager.BackendClient, 0, len(in))
	for _, c := range in {
		client := dbmanager.BackendClient{ClientID: c.ClientID, Name: c.Name, Keys: c.JWKS}
		if c.Scope != "" && c.Scope != "*" {
			if client.Scope, err = access.ParseScope(c.Scope); err != nil {
				return nil, fmt.Errorf("devnet: backend client %q: %w", c.ClientID, err)
			}
		}
		out = append(out, client)
	}
	return out, nil
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
