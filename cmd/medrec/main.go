// Command medrec is MedRec-ZK's one binary: one subcommand per role (keys,
// ceremony, network, and — as they land — provider, client, audit).
//
// Secrets (the 12 words, passwords) are never taken from the command line:
// they come from a file, standard input ("-") or a terminal prompt.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/consensys/gnark/logger"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"
)

var commands = []*cli.Command{
	keysCommand,
	ceremonyCommand,
	networkCommand,
	governanceCommand,
	providerCommand,
	clientCommand,
	runCommand,
	auditCommand,
	deskCommand,
}

// exitError carries a non-default exit code.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

// required returns a Before hook failing with a usage error (exit code 2)
// when one of the named flags is not set.
func required(names ...string) cli.BeforeFunc {
	return func(ctx *cli.Context) error {
		for _, n := range names {
			if !ctx.IsSet(n) {
				return exitError{code: 2, err: fmt.Errorf("missing --%s", n)}
			}
		}
		return nil
	}
}

func usageError(_ *cli.Context, err error, _ bool) error { return exitError{code: 2, err: err} }

// setUsageErrors makes every command report usage errors with exit code 2.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = usageError
		setUsageErrors(c.Subcommands)
	}
}

func newApp() *cli.App {
	setUsageErrors(commands)
	return &cli.App{
		Name:     "medrec",
		Usage:    "patient-controlled medical records with zero-knowledge relationships",
		Commands: commands,
		// Errors are printed once, by main.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
	}
}

func main() {
	logger.Set(zerolog.Nop()) // gnark logs to stdout, which carries our JSON
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "medrec: %v\n", err)
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
