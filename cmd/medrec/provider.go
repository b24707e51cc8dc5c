package main

import (
	"errors"
	"fmt"
	"net/url"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/devnet"
)

var providerCommand = &cli.Command{
	Name:  "provider",
	Usage: "run a provider's gateway (dbmanager)",
	Subcommands: []*cli.Command{{
		Name:  "serve",
		Usage: "serve provider P's gateway on the address its registry entry names, anchor its log and records state, and mirror governance votes into its authority node",
		Flags: []cli.Flag{
			networkDirFlag,
			&cli.IntFlag{Name: "provider", Usage: "provider id"},
			&cli.StringFlag{Name: "db", Usage: "records database: an SQLite file path or a PostgreSQL DSN (default DIR/providerP/records.db)"},
			&cli.StringFlag{Name: "staff-tokens", Usage: "`FILE` of \"<staff id> <token>\" lines (default DIR/providerP/staff-tokens, created with one token)"},
			&cli.DurationFlag{Name: "anchor-interval", Value: time.Minute, Usage: "how often to anchor the log and records state (only when something changed)"},
			&cli.StringFlag{Name: "smart-apps", Usage: "`FILE`: the SMART apps this provider registers, a JSON array of {\"clientId\", \"name\", \"redirectUris\", \"scope\"} (docs/fhir.md)"},
			&cli.StringFlag{Name: "backend-clients", Usage: "`FILE`: the systems that write records in FHIR (SMART Backend Services), a JSON array of {\"clientId\", \"name\", \"jwks\", \"scope\"} (docs/fhir.md)"},
			&cli.DurationFlag{Name: "enrol-linger", Usage: "how long the desks' enrolments wait to be sent together in one batch (0: at once; enrolments arriving while a batch is mined still form the next)"},
			&cli.StringFlag{Name: "patient-app", Usage: "`URL` where patients approve apps: their own MedRec app (default http://127.0.0.1:7600)"},
		},
		Before: required("dir", "provider"),
		Action: providerServe,
	}},
}

func providerServe(ctx *cli.Context) error {
	p := ctx.Int("provider")
	if p < 1 {
		return exitError{2, errors.New("--provider must be a provider id (1, 2, …)")}
	}
	if ctx.Duration("anchor-interval") < time.Second {
		return exitError{2, errors.New("--anchor-interval must be at least 1s")}
	}
	if l := ctx.Duration("enrol-linger"); l < 0 || l > 10*time.Minute {
		return exitError{2, errors.New("--enrol-linger must be between 0 and 10m")}
	}
	if dsnHasPassword(ctx.String("db")) {
		return exitError{2, errors.New("--db: a password on the command line shows in the process list; leave it out of the DSN and set PGPASSWORD or use ~/.pgpass")}
	}
	n, err := chain.Open(ctx.String("dir"), nil, stderrLog(ctx))
	if err != nil {
		return err
	}
	c, stop := signal.NotifyContext(ctx.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := stderrLog(ctx)
	g, err := devnet.OpenGateway(c, n, p, devnet.GatewayOptions{DSN: ctx.String("db"), StaffTokenFile: ctx.String("staff-tokens"),
		SMARTAppsFile: ctx.String("smart-apps"), BackendClientsFile: ctx.String("backend-clients"), PatientApp: ctx.String("patient-app"),
		EnrolLinger: ctx.Duration("enrol-linger"), Log: log})
	if err != nil {
		return err
	}
	defer g.Close()
	go g.RunAnchors(c, ctx.Duration("anchor-interval"))
	go func() {
		if err := g.Mirror.Run(c, 5*time.Second); err != nil && c.Err() == nil {
			log.Warn("governance mirror stopped", "err", err)
		}
	}()
	fmt.Fprintf(ctx.App.Writer, "Provider %d gateway on http://%s (Ctrl-C stops)\n", p, g.Addr)
	return g.Listen(c, g.Addr)
}

// dsnHasPassword reports whether a PostgreSQL DSN, URL or keyword form,
// carries a password.
func dsnHasPassword(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		_, set := u.User.Password()
		return set || u.Query().Has("password")
	}
	for _, f := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "password" {
			return true
		}
	}
	return false
}
