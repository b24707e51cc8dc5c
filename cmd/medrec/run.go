package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/client"
	"github.com/medrec-zk/medrec/localrun"
)

var runCommand = &cli.Command{
	Name:  "run",
	Usage: "the whole system on this machine: provider authorities, their own local ceremony's keys, their gateways, demo data and the web app (Ctrl-C stops; running again resumes)",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Value: ".medrec", Usage: "state `DIR`ectory (network, databases, demo keystores)"},
		&cli.IntFlag{Name: "providers", Value: 3, Usage: "providers of a new network"},
		&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7600", Usage: "the patient's web app"},
		&cli.StringFlag{Name: "viewer-listen", Value: "127.0.0.1:7601", Usage: "the demo viewer's web app"},
		&cli.IntFlag{Name: "desk-port", Value: 7610, Usage: "provider 1's desk page listens on 127.0.0.1:PORT, provider 2's on PORT+1, … (0: free ports)"},
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
			app, err := newClientApp(c, ctx.String("dir"), ctx.String("keystore"), ctx.Int("node"), false)
			if err != nil {
				return err
			}
			fmt.Fprintf(ctx.App.Writer, "Open http://%s (Ctrl-C stops)\n", ctx.String("listen"))
			return app.Listen(c, ctx.String("listen"))
		},
	}},
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
	err = localrun.Run(c, localrun.Options{
		Dir: dir, Geth: ctx.String(gethFlag.Name), Contracts: ctx.String(contractsFlag.Name), Providers: ctx.Int("providers"), Period: ctx.Uint64("period"),
		Listen: ctx.String("listen"), ViewerListen: ctx.String("viewer-listen"), DeskPort: ctx.Int("desk-port"), Out: ctx.App.Writer,
	})
	if err != nil && c.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintln(ctx.App.Writer, "==> interrupted")
		return nil
	}
	return err
}

// newClientApp is localrun.NewClientApp with a bad --node a usage error.
func newClientApp(ctx context.Context, dir, keystorePath string, node int, demo bool) (*client.App, error) {
	app, err := localrun.NewClientApp(ctx, dir, keystorePath, node, demo)
	if errors.Is(err, localrun.ErrNoNode) {
		return nil, exitError{2, fmt.Errorf("--node %d: no such provider node", node)}
	}
	return app, err
}
