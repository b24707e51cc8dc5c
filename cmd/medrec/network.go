package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/devnet"
	"github.com/medrec-zk/medrec/prover"
)

var (
	networkDirFlag = &cli.StringFlag{Name: "dir", Usage: "network `DIR`ectory (network.json, keys, node data)"}
	gethFlag       = &cli.StringFlag{Name: "geth", Usage: "geth v" + chain.GethVersion + " binary (default $" + chain.GethEnv + ", then geth on $PATH)"}
	timeoutFlag    = &cli.DurationFlag{Name: "timeout", Value: 3 * time.Minute, Usage: "give up after this long"}
	contractsFlag  = &cli.StringFlag{Name: "contracts", Value: "contracts", Usage: "the repository's contracts `DIR`ectory (compile.js, node_modules): compiles the verifiers of keys other than the dev keys"}
)

var networkCommand = &cli.Command{
	Name:  "network",
	Usage: "run the providers' proof-of-authority (Clique) network on this machine",
	Subcommands: []*cli.Command{
		{
			Name:  "up",
			Usage: "create a network (or restart a stopped one, keeping its chain) and return once blocks advance",
			Flags: []cli.Flag{
				networkDirFlag,
				&cli.IntFlag{Name: "providers", Usage: "number of providers, one authority node each (new network only)"},
				&cli.Uint64Flag{Name: "period", Value: chain.DefaultPeriod, Usage: "seconds between blocks"},
				&cli.Uint64Flag{Name: "chain-id", Value: chain.DefaultChainID, Usage: "chain id"},
				&cli.IntFlag{Name: "base-port", Usage: "fixed ports: provider p uses BASE+3(p-1) (P2P), +1 (RPC), +2 (engine API); 0 picks free ports"},
				&cli.StringFlag{Name: "keys", Usage: "deploy with the keys in this `DIR`ectory (a ceremony's output; copied into the network's keys/, verifiers compiled from them) instead of the dev keys"},
				gethFlag, timeoutFlag, contractsFlag,
			},
			Before: required("dir"),
			Action: networkUp,
		},
		{
			Name:   "down",
			Usage:  "stop every node (SIGINT, then SIGKILL after 20 s); the chain stays on disk",
			Flags:  []cli.Flag{networkDirFlag, timeoutFlag},
			Before: required("dir"),
			Action: func(ctx *cli.Context) error {
				n, err := chain.Open(ctx.String("dir"), nil, stderrLog(ctx))
				if err != nil {
					return err
				}
				c, cancel := runContext(ctx)
				defer cancel()
				if err := n.Down(c); err != nil {
					return err
				}
				fmt.Fprintf(ctx.App.Writer, "Network in %s is down (%d nodes stopped; the chain is kept).\n", n.Dir(), len(n.State().Nodes))
				return nil
			},
		},
		{
			Name:   "status",
			Usage:  "show every node's process, height and peers, the signers, and drift from the registry's signer set",
			Flags:  []cli.Flag{networkDirFlag, jsonFlag},
			Before: required("dir"),
			Action: func(ctx *cli.Context) error {
				n, err := chain.Open(ctx.String("dir"), nil, nil)
				if err != nil {
					return err
				}
				c, cancel := runContext(ctx)
				defer cancel()
				s, err := n.Status(c)
				if err != nil {
					return err
				}
				// Drift from the registry once deployed (network.json's
				// wanted set may lag a vote made with --rpc).
				if src, err := wantedSigners(n); err == nil && src != nil && len(s.Signers) > 0 {
					if want, err := src.ActiveSigners(c); err == nil {
						s.Drift = chain.Compare(want, s.Signers)
					}
				}
				return printStatus(ctx.App.Writer, s, ctx.Bool(jsonFlag.Name))
			},
		},
		{
			Name:  "watch",
			Usage: "run the supervisor until interrupted: every running authority votes Clique's signer set to the registry's (network.json's before the contracts are deployed), and forked stalls are healed",
			Flags: []cli.Flag{
				networkDirFlag,
				&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "how often to compare and vote"},
			},
			Before: required("dir"),
			Action: func(ctx *cli.Context) error {
				n, err := chain.Open(ctx.String("dir"), nil, stderrLog(ctx))
				if err != nil {
					return err
				}
				c, stop := signal.NotifyContext(ctx.Context, os.Interrupt, syscall.SIGTERM)
				defer stop()
				src, err := wantedSigners(n)
				if err != nil {
					return err
				}
				fmt.Fprintf(ctx.App.Writer, "Watching %s (Ctrl-C to stop).\n", n.Dir())
				if err := n.Watch(c, src, ctx.Duration("interval")); err != nil && c.Err() == nil {
					return err
				}
				return nil
			},
		},
		{
			Name:  "add-provider",
			Usage: "create keys and a node for a new provider and start it as a non-signing peer",
			Flags: []cli.Flag{
				networkDirFlag,
				&cli.BoolFlag{Name: "vote", Usage: "have the running authorities admit it through the registry (propose, vote) and their mirrors vote it into Clique"},
				gethFlag, timeoutFlag,
			},
			Before: required("dir"),
			Action: networkAddProvider,
		},
	},
}

// runContext is the command's context: --timeout (if the command has it)
// and interrupted by Ctrl-C.
func runContext(ctx *cli.Context) (context.Context, context.CancelFunc) {
	c, stop := signal.NotifyContext(ctx.Context, os.Interrupt)
	if d := ctx.Duration(timeoutFlag.Name); d > 0 {
		c, cancel := context.WithTimeout(c, d)
		return c, func() { cancel(); stop() }
	}
	return c, stop
}

// stderrLog is the supervisor's progress log.
func stderrLog(ctx *cli.Context) *slog.Logger {
	return slog.New(slog.NewTextHandler(ctx.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func findGeth(ctx *cli.Context) (*chain.Geth, error) {
	return chain.FindGeth(ctx.Context, ctx.String(gethFlag.Name))
}

func networkUp(ctx *cli.Context) error {
	dir := ctx.String("dir")
	if ctx.IsSet("providers") && (ctx.Int("providers") < 1 || ctx.Int("providers") > 64) {
		return exitError{2, fmt.Errorf("--providers %d: between 1 and 64", ctx.Int("providers"))}
	}
	if ctx.Uint64("period") < 1 {
		return exitError{2, errors.New("--period must be at least 1 second")}
	}
	if ctx.Uint64("chain-id") < 1 {
		return exitError{2, errors.New("--chain-id must be positive")}
	}
	if p := ctx.Int("base-port"); p != 0 && (p < 1024 || p > 65535-3*64) {
		return exitError{2, fmt.Errorf("--base-port %d: between 1024 and %d", p, 65535-3*64)}
	}
	_, err := chain.LoadState(dir)
	exists := err == nil
	if err != nil && !errors.Is(err, chain.ErrNoNetwork) {
		return err
	}
	if !exists && !ctx.IsSet("providers") {
		return exitError{2, fmt.Errorf("missing --providers: %s holds no network yet", dir)}
	}
	_, err = devnet.LoadDeployment(dir)
	deployed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// --keys is checked before anything is written: keys that load, that the
	// directory does not contradict, and a compiler for their verifiers.
	if src := ctx.String("keys"); src != "" {
		ks, err := prover.LoadKeyDir(src, false)
		if err != nil {
			return fmt.Errorf("--keys %s: %w", src, err)
		}
		has, err := devnet.HasKeys(dir)
		if err != nil {
			return err
		}
		if deployed || has {
			cur, err := devnet.Keys(dir, false)
			if err != nil {
				return err
			}
			if cur.RegistryHash() != ks.RegistryHash() {
				return fmt.Errorf("%w: --keys %s, but the network in %s already has the keys %q", devnet.ErrKeysConflict, src, dir, cur.Manifest.Origin)
			}
		}
		if !deployed && !devnet.IsDev(ks) {
			if err := verifiers.Check(ctx.String(contractsFlag.Name)); err != nil {
				return err
			}
		}
	}
	geth, err := findGeth(ctx)
	if err != nil {
		return err
	}
	c, cancel := runContext(ctx)
	defer cancel()
	start := time.Now()
	var n *chain.Network
	verb := "created"
	if exists {
		if n, err = chain.Open(dir, geth, stderrLog(ctx)); err != nil {
			return err
		}
		if err := checkSameNetwork(ctx, n.State()); err != nil {
			return err
		}
		verb = "already up"
		for _, ns := range n.State().Nodes {
			if !n.Running(ns.Provider) {
				verb = "restarted"
			}
		}
	} else {
		opt := chain.Options{
			Providers: ctx.Int("providers"),
			Period:    ctx.Uint64("period"),
			ChainID:   ctx.Uint64("chain-id"),
			BasePort:  ctx.Int("base-port"),
		}
		if n, err = chain.Create(c, dir, geth, opt, stderrLog(ctx)); err != nil {
			return err
		}
	}
	if err := n.Up(c); err != nil {
		return err
	}
	// The contracts, deployed once with the network's keys: those of --keys,
	// else those it already has, else the dev ceremony's.
	if src := ctx.String("keys"); src != "" {
		if _, err := devnet.InstallKeys(n.Dir(), src); err != nil {
			return err
		}
	}
	ks, err := devnet.Keys(n.Dir(), false)
	if err != nil {
		return err
	}
	var v contracts.Verifiers
	if !deployed {
		if v, err = devnet.Verifiers(c, ks, ctx.String(contractsFlag.Name)); err != nil {
			return err
		}
	}
	d, err := devnet.Deploy(c, n, ks, v)
	if err != nil {
		return err
	}
	s, err := n.Status(c)
	if err != nil {
		return err
	}
	fmt.Fprintf(ctx.App.Writer, "Network %s in %.1f s: %s\n", verb, time.Since(start).Seconds(), n.Dir())
	fmt.Fprintf(ctx.App.Writer, "Contracts: AgentRegistry %s, Relationships %s (%s)\n", d.AgentRegistry, d.Relationships, devnet.DeploymentPath(n.Dir()))
	fmt.Fprintf(ctx.App.Writer, "Keys: %s\n", ks.Manifest.Origin)
	return printStatus(ctx.App.Writer, s, false)
}

// checkSameNetwork refuses flags that disagree with the network on disk.
func checkSameNetwork(ctx *cli.Context, st chain.State) error {
	conflict := func(flag string, want, have any, hint string) error {
		return fmt.Errorf("%w: --%s %v, but %s holds a network with %v%s", chain.ErrConflict, flag, want, ctx.String("dir"), have, hint)
	}
	if ctx.IsSet("providers") && ctx.Int("providers") != len(st.Nodes) {
		return conflict("providers", ctx.Int("providers"), len(st.Nodes), " (add more with `medrec network add-provider`)")
	}
	if ctx.IsSet("period") && ctx.Uint64("period") != st.Period {
		return conflict("period", ctx.Uint64("period"), st.Period, "")
	}
	if ctx.IsSet("chain-id") && ctx.Uint64("chain-id") != st.ChainID {
		return conflict("chain-id", ctx.Uint64("chain-id"), st.ChainID, "")
	}
	if ctx.IsSet("base-port") && ctx.Int("base-port") != st.BasePort {
		return conflict("base-port", ctx.Int("base-port"), st.BasePort, "")
	}
	return nil
}

func networkAddProvider(ctx *cli.Context) error {
	geth, err := findGeth(ctx)
	if err != nil {
		return err
	}
	n, err := chain.Open(ctx.String("dir"), geth, stderrLog(ctx))
	if err != nil {
		return err
	}
	c, cancel := runContext(ctx)
	defer cancel()
	ns, err := n.AddProvider(c)
	if err != nil {
		return err
	}
	// Its accounts send transactions (votes, relays): the deployer funds them.
	if err := devnet.FundProvider(c, n, ns.Provider); err != nil {
		return err
	}
	w := ctx.App.Writer
	fmt.Fprintf(w, "Provider %d added: authority %s, gateway %s, RPC %s (a peer, not yet a signer; funded by the deployer).\n",
		ns.Provider, ns.Authority.Hex(), ns.Gateway.Hex(), ns.RPC)
	if !ctx.Bool("vote") {
		return nil
	}
	// Through the registry: the running authorities propose and vote it in
	// there, then their mirrors vote Clique to follow.
	start := time.Now()
	d, err := devnet.LoadDeployment(n.Dir())
	if err != nil {
		return fmt.Errorf("--vote goes through the registry: %w (`medrec network up` deploys it)", err)
	}
	proposal, err := devnet.Admit(c, n, ns.Provider)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Provider %d admitted by the registry (proposal %d, a majority of its members voted).\n", ns.Provider, proposal)
	src := devnet.RegistrySigners(n, d)
	signers, err := src.ActiveSigners(c)
	if err != nil {
		return err
	}
	if err := devnet.SyncSignerFlags(n, signers); err != nil {
		return err
	}
	if err := n.Converge(c, src, ctx.Duration(timeoutFlag.Name)); err != nil {
		return err
	}
	fmt.Fprintf(w, "Provider %d voted in by the running authorities' mirrors: a Clique signer after %.1f s.\n", ns.Provider, time.Since(start).Seconds())
	return nil
}

// wantedSigners is the signer source of the network in n: its registry's
// once the contracts are deployed, else network.json's wanted set (nil).
func wantedSigners(n *chain.Network) (chain.SignerSource, error) {
	d, err := devnet.LoadDeployment(n.Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return devnet.RegistrySigners(n, d), nil
}

func printStatus(w io.Writer, s chain.Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Fprintf(w, "chain id %d, genesis %s, height %d, %d signers, drift: %s\n",
		s.ChainID, s.GenesisHash.Hex(), s.Height, len(s.Signers), s.Drift)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tSTATE\tSIGNER\tHEIGHT\tPEERS\tPID\tRPC\tAUTHORITY")
	for _, ns := range s.Nodes {
		state, pid := "down", "-"
		if ns.PID != 0 {
			pid = fmt.Sprint(ns.PID)
			state = "no RPC"
		}
		if ns.Up {
			state = "up"
		}
		signer := "no"
		if ns.Signer {
			signer = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", ns.Provider, state, signer, ns.Height, ns.Peers, pid, ns.RPC, ns.Authority.Hex())
	}
	return tw.Flush()
}
