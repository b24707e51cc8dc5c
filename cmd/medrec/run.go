package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/client"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/devnet"
	"github.com/medrec-zk/medrec/prover"
)

var runCommand = &cli.Command{
	Name:  "run",
	Usage: "the whole system on this machine: provider authorities, their own local ceremony's keys, their gateways, demo data and the web app (Ctrl-C stops; running again resumes)",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Value: ".medrec", Usage: "state `DIR`ectory (network, databases, demo keystores)"},
		&cli.IntFlag{Name: "providers", Value: 3, Usage: "providers of a new network"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7600", Usage: "the patient's web app"},
		&cli.StringFlag{Name: "viewer-listen", Value: "127.0.0.1:7601", Usage: "the demo viewer's web app"},
		&cli.Uint64Flag{Name: "period", Value: chain.DefaultPeriod, Usage: "seconds between blocks (new network only)"},
		gethFlag, contractsFlag,
	},
	Action: runAll,
}

var clientCommand = &cli.Command{
	Name:  "client",
	Usage: "the patient's and viewer's web app",
	Subcommands: []*cli.Command{{
		Name:  "serve",
		Usage: "serve the web app on 127.0.0.1 for a keystore, against the network in DIR",
		Flags: []cli.Flag{
			networkDirFlag,
			&cli.StringFlag{Name: "keystore", Usage: "keystore `FILE` (created by the app's onboarding when absent)"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7600", Usage: "loopback address to serve on"},
			&cli.IntFlag{Name: "node", Value: 1, Usage: "read the chain through this provider's node"},
		},
		Before: required("dir", "keystore"),
		Action: func(ctx *cli.Context) error {
			c, stop := signal.NotifyContext(ctx.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			app, err := newClientApp(c, ctx.String("dir"), ctx.String("keystore"), ctx.Int("node"))
			if err != nil {
				return err
			}
			fmt.Fprintf(ctx.App.Writer, "Open http://%s (Ctrl-C stops)\n", ctx.String("listen"))
			return app.Listen(c, ctx.String("listen"))
		},
	}},
}

// newClientApp assembles the web app for a keystore against the network in
// dir, with the network's keys, refused if the chain's registry records others.
func newClientApp(ctx context.Context, dir, keystorePath string, node int) (*client.App, error) {
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
		return nil, exitError{2, fmt.Errorf("--node %d: no such provider node", node)}
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
	return client.New(client.Config{Keystore: keystorePath, RPC: rpc, Deployment: d, Prover: prover.New(ks)})
}

func runAll(ctx *cli.Context) error {
	dir, err := filepath.Abs(ctx.String("dir"))
	if err != nil {
		return err
	}
	if ctx.Int("providers") < 2 {
		return exitError{2, errors.New("--providers: the demo needs at least 2")}
	}
	if ctx.Uint64("period") < 1 {
		return exitError{2, errors.New("--period must be at least 1 second")}
	}
	c, stop := signal.NotifyContext(ctx.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = runSystem(ctx, c, dir)
	if err != nil && c.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintln(ctx.App.Writer, "==> interrupted")
		return nil
	}
	return err
}

// runSystem is runAll once the flags are checked; c ends at Ctrl-C.
func runSystem(ctx *cli.Context, c context.Context, dir string) error {
	out := ctx.App.Writer
	log := stderrLog(ctx)
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	contractsDir := ctx.String(contractsFlag.Name)

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
	geth, err := findGeth(ctx)
	if err != nil {
		return err
	}
	var n *chain.Network
	if _, err := chain.LoadState(dir); err == nil {
		step("resuming the network in %s", dir)
		if n, err = chain.Open(dir, geth, log); err != nil {
			return err
		}
	} else if errors.Is(err, chain.ErrNoNetwork) {
		step("creating a network of %d providers in %s", ctx.Int("providers"), dir)
		if n, err = chain.Create(c, dir, geth, chain.Options{Providers: ctx.Int("providers"), Period: ctx.Uint64("period")}, log); err != nil {
			return err
		}
	} else {
		return err
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
		step("ceremony: this network's own trusted setup, %d providers contributing (about a minute; all of them run here, so the keys are NOT for production)", providers)
		done := make(chan struct{})
		go func() {
			select {
			case <-c.Done():
				step("interrupted: the ceremony stops after its current step")
			case <-done:
			}
		}()
		ks, err = devnet.RunCeremony(c, dir, providers, func(s string) { step("ceremony: %s", s) })
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
			fmt.Fprintln(ctx.App.ErrWriter, "network down:", err)
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
	}{{patientKS, ctx.String("listen"), "patient", devnet.DemoPatientPassword}, {viewerKS, ctx.String("viewer-listen"), "viewer", devnet.DemoViewerPassword}} {
		a, err := newClientApp(c, dir, app.keystore, 1)
		if err != nil {
			return err
		}
		go func() { errc <- a.Listen(c, app.listen) }()
		if err := waitHTTP(c, "http://"+app.listen+"/"); err != nil {
			return err
		}
		step("demo %s: open http://%s and unlock with the password %q", app.who, app.listen, app.password)
	}
	fmt.Fprintln(out, "Everything is up. Ctrl-C stops it; `make run` again resumes the same state.")
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
