// Package localrun starts the whole system on one machine, as `medrec run`
// does: a network of provider authorities (real geth Clique nodes) with
// its own local ceremony's keys and verifiers on the first run, their
// gateways with anchoring and mirroring, the demo data, the demo patient's
// and viewer's web apps and each provider's desk page — and stops it all
// when its context ends. A second run resumes the same state.
//
// It is the wiring above devnet (the network's keys, deployment, gateways
// and demo data), client and desk; cmd/medrec only reads the flags.
package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/client"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/desk"
	"github.com/medrec-zk/medrec/devnet"
	"github.com/medrec-zk/medrec/prover"
)

// Options are what a run needs; cmd/medrec fills them from its flags.
type Options struct {
	Dir       string // the state directory (absolute): network, databases, demo keystores, logs
	Geth      string // the geth that runs the authorities (chain.FindGeth: a path, or "" for $MEDREC_GETH or PATH)
	Contracts string // contracts/, whose solc-js compiles a new network's verifiers
	Providers int    // providers of a new network (at least 2)
	Period    uint64 // seconds between blocks of a new network

	Listen       string // the demo patient's web app
	ViewerListen string // the demo viewer's web app
	DeskPort     int    // provider 1's desk page on 127.0.0.1:DeskPort, provider 2's on +1, …; 0: free ports

	Out io.Writer // the human lines (the structured log goes to LogFile)
}

// ErrNoNode: the network has no provider node of that number.
var ErrNoNode = errors.New("no such provider node")

// LogFile is where a run writes its structured logs (JSON lines: every
// process it runs, at info level and above); Out gets the human lines.
func LogFile(dir string) string { return filepath.Join(dir, "medrec.log") }

// heartbeat is how often a long step says it is still at work.
const heartbeat = 15 * time.Second

// Run runs the whole system until c ends (Ctrl-C), then stops it; an
// interrupted first ceremony is discarded and run again next time.
func Run(c context.Context, o Options) error {
	if o.Providers < 2 {
		return errors.New("the demo needs at least 2 providers")
	}
	if o.Period < 1 {
		return errors.New("the block period must be at least 1 second")
	}
	dir := o.Dir
	out, contractsDir := o.Out, o.Contracts

	_, err := devnet.LoadDeployment(dir)
	deployed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if !deployed {
		// A network not deployed yet gets its own keys, and verifiers compiled from them.
		if err := verifiers.Check(contractsDir); err != nil {
			return err
		}
	}
	geth, err := chain.FindGeth(c, o.Geth)
	if err != nil {
		return err
	}
	// The log file lives in dir, which a new network wants empty: lines are
	// held until the network exists, then the file takes them all.
	logs := &laterFile{}
	defer logs.Close()
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	log.Info("Run started", "dir", dir)
	step := func(format string, args ...any) {
		fmt.Fprintf(out, "==> "+format+"\n", args...)
		log.Info("Step", "what", fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(out, "==> logs of every process (JSON lines): %s\n", LogFile(dir))
	var n *chain.Network
	if _, err := chain.LoadState(dir); err == nil {
		step("resuming the network in %s", dir)
		if n, err = chain.Open(dir, geth, log); err != nil {
			return err
		}
	} else if errors.Is(err, chain.ErrNoNetwork) {
		step("creating a network of %d providers in %s", o.Providers, dir)
		if n, err = chain.Create(c, dir, geth, chain.Options{Providers: o.Providers, Period: o.Period}, log); err != nil {
			return err
		}
	} else {
		return err
	}
	if err := logs.Open(LogFile(dir)); err != nil {
		return fmt.Errorf("the log file: %w", err)
	}

	var ks *prover.KeySet
	var v contracts.Verifiers
	switch has, err := devnet.HasKeys(dir); {
	case err != nil:
		return err
	case deployed:
		if ks, err = devnet.Keys(dir, true); err != nil {
			return err
		}
	case has:
		if ks, err = devnet.Keys(dir, true); err != nil {
			return err
		}
		step("this network's keys, from its ceremony in an earlier run: %s", devnet.KeysDir(dir))
	default:
		providers := 0
		for _, ns := range n.State().Nodes {
			if ns.Signer {
				providers++
			}
		}
		t0 := time.Now()
		step("ceremony: this network's own trusted setup, %d providers contributing, %d steps (about 1 minute on a quiet machine, 3 or more on 2 busy cores; all of them run here, so the keys are NOT for production)", providers, ceremonySteps(providers))
		done := make(chan struct{})
		var mu sync.Mutex
		current, since, n := "", time.Now(), 0
		go func() {
			tick := time.NewTicker(heartbeat)
			defer tick.Stop()
			for {
				select {
				case <-c.Done():
					step("interrupted: the ceremony stops after its current step")
					return
				case <-done:
					return
				case <-tick.C:
					mu.Lock()
					fmt.Fprintf(out, "    … %s: %.0f s so far (the ceremony: %.0f s)\n", current, time.Since(since).Seconds(), time.Since(t0).Seconds())
					mu.Unlock()
				}
			}
		}()
		ks, err = devnet.RunCeremony(c, dir, providers, func(s string) {
			mu.Lock()
			defer mu.Unlock()
			if current != "" {
				fmt.Fprintf(out, "    done in %.1f s\n", time.Since(since).Seconds())
			}
			n++
			current, since = s, time.Now()
			step("ceremony: %s (step %d of %d)", s, n, ceremonySteps(providers))
		})
		close(done)
		if err != nil {
			if c.Err() != nil {
				step("the unfinished ceremony in %s is discarded and run again at the next start", devnet.CeremonyDir(dir))
				return nil
			}
			return err
		}
		step("ceremony done in %.1f s: keys in %s, transcript in %s", time.Since(t0).Seconds(), devnet.KeysDir(dir), devnet.CeremonyDir(dir))
	}
	if !deployed {
		if err := c.Err(); err != nil {
			return err
		}
		step("compiling this network's verifiers from its keys (solc-js in %s)", contractsDir)
		if v, err = devnet.Verifiers(c, ks, contractsDir); err != nil {
			return err
		}
	}

	start := time.Now()
	if err := n.Up(c); err != nil {
		return err
	}
	defer func() {
		step("stopping the network (the chain stays in %s)", dir)
		down, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := n.Down(down); err != nil {
			log.Error("network down", "err", err)
			fmt.Fprintln(out, "network down:", err)
		}
	}()
	step("network up in %.1f s; keys: %s", time.Since(start).Seconds(), ks.Manifest.Origin)
	d, err := devnet.Deploy(c, n, ks, v)
	if err != nil {
		return err
	}
	step("contracts at AgentRegistry %s (%s)", d.AgentRegistry, devnet.DeploymentPath(dir))

	var gws []*devnet.Gateway
	defer func() {
		for _, g := range gws {
			g.Close()
		}
	}()
	errc := make(chan error, 8)
	for _, ns := range n.State().Nodes {
		g, err := devnet.OpenGateway(c, n, ns.Provider, devnet.GatewayOptions{Log: log})
		if err != nil {
			return err
		}
		gws = append(gws, g)
		go func() { errc <- g.Listen(c, g.Addr) }()
		go g.RunAnchors(c, 15*time.Second)
		go g.Mirror.Run(c, 5*time.Second)
		if err := waitHTTP(c, "http://"+g.Addr+"/fhir/metadata"); err != nil {
			return err
		}
		step("provider %d gateway on http://%s (staff tokens in %s)", ns.Provider, g.Addr, filepath.Join(dir, fmt.Sprintf("provider%d", ns.Provider), "staff-tokens"))
	}
	step("demo data: a patient with records at providers 1 and 2, enrolled and connected; a viewer")
	if err := devnet.SeedDemo(c, n, d, gws[0].View, ks); err != nil {
		return err
	}
	patientKS, viewerKS := devnet.DemoKeystores(dir)
	for _, app := range []struct {
		keystore, listen, who, password string
	}{{patientKS, o.Listen, "patient", devnet.DemoPatientPassword}, {viewerKS, o.ViewerListen, "viewer", devnet.DemoViewerPassword}} {
		a, err := NewClientApp(c, dir, app.keystore, 1, true)
		if err != nil {
			return err
		}
		go func() { errc <- a.Listen(c, app.listen) }()
		if err := waitHTTP(c, "http://"+app.listen+"/"); err != nil {
			return err
		}
		step("demo %s: open http://%s and unlock with the password %q", app.who, app.listen, app.password)
	}
	// Each provider's desk page, with the demo admin account.
	for i, g := range gws {
		p := n.State().Nodes[i].Provider
		if err := devnet.SeedDeskAdmin(c, n, p, "http://"+g.Addr); err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", o.DeskPort+i)
		if o.DeskPort == 0 {
			if addr, err = freeLoopback(); err != nil {
				return err
			}
		}
		a, err := desk.New(desk.Config{Gateway: "http://" + g.Addr, Provider: fmt.Sprintf("Provider %d", p), Log: log})
		if err != nil {
			return err
		}
		go func() { errc <- a.Listen(c, addr) }()
		if err := waitHTTP(c, "http://"+addr+"/login"); err != nil {
			return err
		}
		step("desk of provider %d: open http://%s and sign in as %q with the password %q", p, addr, devnet.DemoDeskStaff, devnet.DemoDeskPassword)
	}
	deskHelp(out)
	fmt.Fprintf(out, "Everything is up. Ctrl-C stops it; `make run` again resumes the same state. Logs: %s\n", LogFile(dir))
	select {
	case <-c.Done():
		fmt.Fprintln(out)
		return nil
	case err := <-errc:
		if c.Err() != nil {
			return nil
		}
		return err
	}
}

// NewClientApp assembles the web app for a keystore against the network in
// dir, with the network's keys, refused if the chain's registry records others.
// demo opens the demo's keystores, made with the cheap test cost (their
// passwords are printed anyway); any other app refuses such keystores.
func NewClientApp(ctx context.Context, dir, keystorePath string, node int, demo bool) (*client.App, error) {
	n, err := chain.Open(dir, nil, nil)
	if err != nil {
		return nil, err
	}
	d, err := devnet.LoadDeployment(dir)
	if err != nil {
		return nil, err
	}
	var rpc string
	for _, ns := range n.State().Nodes {
		if ns.Provider == node {
			rpc = ns.RPC
		}
	}
	if rpc == "" {
		return nil, fmt.Errorf("node %d: %w", node, ErrNoNode)
	}
	ks, err := devnet.Keys(dir, true)
	if err != nil {
		return nil, err
	}
	ec, err := devnet.Dial(ctx, n, node)
	if err != nil {
		return nil, err
	}
	defer ec.Close()
	if err := devnet.CheckKeys(ctx, ec, d, ks); err != nil {
		return nil, err
	}
	return client.New(client.Config{Keystore: keystorePath, RPC: rpc, Deployment: d, Prover: prover.New(ks), TestKeystores: demo})
}

// freeLoopback returns a loopback address whose port was free a moment ago.
func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitHTTP waits until url answers.
func waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s did not come up: %w", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ceremonySteps is how many steps the local ceremony of n providers takes:
// its start, each provider's contribution to each phase, the two beacons.
func ceremonySteps(n int) int { return 1 + 2*n + 2 }

// deskHelp says how a patient connects at a provider's desk: the desk
// code comes from the patient's app (Connect), the claim code from the
// provider's desk page.
func deskHelp(out io.Writer) {
	fmt.Fprintln(out, "==> connecting at a provider's desk (the demo patient is connected at providers 1 and 2; provider 3 is left to try):")
	fmt.Fprintln(out, "    in the patient's app, Connect next to the provider shows its desk code; on that provider's desk page,")
	fmt.Fprintln(out, "    create the patient, type the desk code under \"Claim code\" and print the claim code;")
	fmt.Fprintln(out, "    the patient types it on the same Connect page.")
}

// laterFile is a log destination that holds what is written until Open
// names its file, then appends it there, and everything after.
type laterFile struct {
	mu   sync.Mutex
	held []byte
	f    *os.File
}

func (l *laterFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		l.held = append(l.held, p...)
		return len(p), nil
	}
	return l.f.Write(p)
}

// Open opens (appends to) path and writes what was held.
func (l *laterFile) Open(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.f = f
	_, err = f.Write(l.held)
	l.held = nil
	return err
}

func (l *laterFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}
