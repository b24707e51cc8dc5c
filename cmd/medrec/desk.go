package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	qrcode "github.com/skip2/go-qrcode"
	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/desk"
	"github.com/medrec-zk/medrec/internal/atomicfile"
	"github.com/medrec-zk/medrec/tagcode"
)

// medrec desk: a provider's desk from the command line, over the gateway's
// staff API. Its credential is a staff token: a session from `desk login`
// (kept in a file of mode 0600, like ssh keeps its keys), or an API token
// in --token-file. Never on the command line.

var (
	gatewayFlag   = &cli.StringFlag{Name: "gateway", Usage: "the provider's gateway `URL` (make run prints it)", EnvVars: []string{"MEDREC_GATEWAY"}}
	tokenFileFlag = &cli.StringFlag{Name: "token-file", Usage: "read the staff token from `FILE` (- for standard input; default: the session `desk login` saved)"}
)

func deskSessionPath(gateway string) string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	u, _ := url.Parse(gateway)
	host := "gateway"
	if u != nil && u.Host != "" {
		host = strings.NewReplacer(":", "_", "/", "_").Replace(u.Host)
	}
	return filepath.Join(home, ".medrec", "desk-"+host+".session")
}

var deskCommand = &cli.Command{
	Name:  "desk",
	Usage: "a provider's desk: patients, enrolment, claim codes, staff — over the gateway's staff API",
	Flags: []cli.Flag{gatewayFlag, tokenFileFlag, jsonFlag},
	Before: func(ctx *cli.Context) error {
		if ctx.String(gatewayFlag.Name) == "" {
			return exitError{2, errors.New("missing --gateway URL (or MEDREC_GATEWAY)")}
		}
		return nil
	},
	Subcommands: []*cli.Command{
		{
			Name:  "serve",
			Usage: "serve the desk's web page on 127.0.0.1 for the staff at this computer (they sign in with their staff id and password)",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7610", Usage: "loopback `ADDRESS` to serve on"},
				&cli.StringFlag{Name: "name", Usage: "the provider's name, shown on the pages"},
				&cli.Int64Flag{Name: "bulk-limit-mib", Value: desk.DefaultBulkLimit >> 20, Usage: "the most `MiB` of NDJSON one bulk import upload on the page may carry (streamed to the gateway, never held)"},
			},
			Action: deskServe,
		},
		{
			Name:  "login",
			Usage: "open a desk session with your staff id and password (asked, or --password-file), saved for the next commands",
			Flags: []cli.Flag{&cli.StringFlag{Name: "staff", Usage: "your staff `ID`", Required: true}, passwordFileFlag},
			Action: func(ctx *cli.Context) error {
				return deskLogin(ctx, newSecretReader(os.Stdin))
			},
		},
		{Name: "logout", Usage: "end the saved desk session", Action: deskLogout},
		{Name: "whoami", Usage: "who the token belongs to, and their role", Action: deskGet("/admin/me", printMap)},
		{Name: "status", Usage: "the gateway's access log and anchoring status", Action: deskGet("/admin/status", printMap)},
		{
			Name:   "find",
			Usage:  "find patients by a part of a name, a birth date (YYYY[-MM[-DD]]) and a record number; all given must match",
			Flags:  []cli.Flag{&cli.StringFlag{Name: "name"}, &cli.StringFlag{Name: "birthdate"}, &cli.StringFlag{Name: "identifier", Usage: "a record number"}},
			Action: deskFind,
		},
		{
			Name:  "patient",
			Usage: "create or show a patient",
			Subcommands: []*cli.Command{
				{Name: "create", Usage: "add a patient with the provider's id for them", ArgsUsage: "ID", Action: deskPatientCreate},
				{Name: "show", Usage: "a patient's relationship and records state (never a record)", ArgsUsage: "ID", Action: deskPatientShow},
			},
		},
		{
			Name:      "enrol",
			Usage:     "enrol a patient's enrolment code (their identity commitment, shown by their app once, at the first provider)",
			ArgsUsage: "PATIENT COMMITMENT",
			Action:    deskEnrol,
		},
		{
			Name:      "claim-code",
			Usage:     "issue a one-time claim code bound to the desk code the patient's app shows for this provider; prints it with a QR code",
			ArgsUsage: "PATIENT DESK-CODE",
			Action:    deskClaimCode,
		},
		{
			Name:      "unmap",
			Usage:     "undo a wrong mapping (admin): the relationship no longer reads the patient's records; the reason goes to the patient's access log",
			ArgsUsage: "--reason TEXT PATIENT",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "reason", Usage: "why (one line; the patient reads it)", Required: true}, &cli.StringFlag{Name: "tag", Usage: "the tag to unmap (default: the patient's)"}},
			Action:    deskUnmap,
		},
		{
			Name:      "import",
			Usage:     "import a patient's FHIR Bundle (admin), all or nothing",
			ArgsUsage: "BUNDLE.json",
			Action:    deskImport,
		},
		{
			Name: "import-ndjson",
			Usage: "import a bulk NDJSON export (admin): one resource per line, one file per type (Synthea's bulk output, an EHR's bulk export); " +
				"each patient all or nothing, refused patients listed with file, line and reason; run it again to resume an interrupted import",
			ArgsUsage: "DIR | FILE.ndjson…",
			Action:    deskImportNDJSON,
		},
		{
			Name:  "staff",
			Usage: "staff accounts (admin)",
			Subcommands: []*cli.Command{
				{Name: "list", Usage: "every account and its role", Action: deskGet("/admin/staff", printStaff)},
				{
					Name:  "add",
					Usage: "add an account with a password (--password-file, or asked) for the desk page and/or an API token (printed once)",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "id", Usage: "login `ID`", Required: true},
						&cli.StringFlag{Name: "name", Usage: "the person's name", Required: true},
						&cli.StringFlag{Name: "role", Usage: "clerk or admin", Required: true},
						passwordFileFlag,
						&cli.BoolFlag{Name: "token", Usage: "issue an API token (printed once)"},
						&cli.BoolFlag{Name: "no-password", Usage: "a token only, no password"},
					},
					Action: func(ctx *cli.Context) error { return deskStaffAdd(ctx, newSecretReader(os.Stdin)) },
				},
				{
					Name:      "set",
					Usage:     "change an account: --role, --disable / --enable, --new-token (printed once), --password-file",
					ArgsUsage: "ID",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "role", Usage: "clerk or admin"},
						&cli.BoolFlag{Name: "disable"}, &cli.BoolFlag{Name: "enable"},
						&cli.BoolFlag{Name: "new-token", Usage: "replace the API token (printed once)"},
						passwordFileFlag,
					},
					Action: func(ctx *cli.Context) error { return deskStaffSet(ctx, newSecretReader(os.Stdin)) },
				},
			},
		},
	},
}

// newDeskClient returns a staff API client of --gateway with the staff
// token of --token-file or of the saved session (needToken).
func newDeskClient(ctx *cli.Context, sr *secretReader, needToken bool) (*desk.Client, error) {
	c, err := desk.NewClient(ctx.String(gatewayFlag.Name), "")
	if err != nil {
		return nil, exitError{2, err}
	}
	if !needToken {
		return c, nil
	}
	switch f := ctx.String(tokenFileFlag.Name); f {
	case "":
		b, err := os.ReadFile(deskSessionPath(c.Base))
		if errors.Is(err, os.ErrNotExist) {
			return nil, exitError{2, errors.New("no staff token: run `medrec desk login` first, or give --token-file FILE")}
		}
		if err != nil {
			return nil, err
		}
		c.Token = strings.TrimSpace(string(b))
	default:
		tok, err := sr.fromFile(f, "staff token")
		if err != nil {
			return nil, err
		}
		c.Token = strings.TrimSpace(tok)
	}
	return c, nil
}

// output prints v as JSON with --json, else with human.
func output[T any](ctx *cli.Context, v T, human func(io.Writer, T)) error {
	if ctx.Bool(jsonFlag.Name) {
		enc := json.NewEncoder(ctx.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	human(ctx.App.Writer, v)
	return nil
}

func printMap(w io.Writer, m map[string]any) {
	b, _ := json.MarshalIndent(m, "", "  ")
	fmt.Fprintln(w, string(b))
}

func deskGet(path string, human func(io.Writer, map[string]any)) cli.ActionFunc {
	return func(ctx *cli.Context) error {
		c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
		if err != nil {
			return err
		}
		var out map[string]any
		if err := c.Do(ctx.Context, "GET", path, nil, &out); err != nil {
			return err
		}
		return output(ctx, out, human)
	}
}

func deskLogin(ctx *cli.Context, sr *secretReader) error {
	c, err := newDeskClient(ctx, sr, false)
	if err != nil {
		return err
	}
	var pw string
	if f := ctx.String(passwordFileFlag.Name); f != "" {
		if pw, err = sr.fromFile(f, "password"); err != nil {
			return err
		}
	} else if pw, err = prompt("Desk password: "); errors.Is(err, errNoTerminal) {
		return errors.New("no password: give --password-file FILE (or run on a terminal)")
	} else if err != nil {
		return err
	}
	out, err := c.Login(ctx.Context, ctx.String("staff"), pw)
	if err != nil {
		return err
	}
	path := deskSessionPath(c.Base)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(path, []byte(out.Token+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(ctx.App.Writer, "Logged in as %s (%s) until %s; session saved in %s\n", out.Name, out.Role, out.Expires.Format("15:04 Mon 2 Jan"), path)
	return nil
}

func deskLogout(ctx *cli.Context) error {
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	if err := c.Logout(ctx.Context); err != nil && desk.Status(err) != http.StatusNotFound {
		return err
	}
	if ctx.String(tokenFileFlag.Name) == "" {
		if err := os.Remove(deskSessionPath(c.Base)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	fmt.Fprintln(ctx.App.Writer, "Logged out.")
	return nil
}

// args returns exactly n arguments, or a usage error.
func args(ctx *cli.Context, names ...string) ([]string, error) {
	if ctx.NArg() != len(names) {
		return nil, exitError{2, fmt.Errorf("want %s", strings.Join(names, " "))}
	}
	return ctx.Args().Slice(), nil
}

func deskPatientCreate(ctx *cli.Context) error {
	a, err := args(ctx, "ID")
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	if err := c.CreatePatient(ctx.Context, a[0]); err != nil {
		return err
	}
	return output(ctx, map[string]string{"id": a[0]}, func(w io.Writer, m map[string]string) { fmt.Fprintf(w, "Patient %s created.\n", m["id"]) })
}

func deskPatientShow(ctx *cli.Context) error {
	a, err := args(ctx, "ID")
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	p, err := c.Patient(ctx.Context, a[0])
	if err != nil {
		return err
	}
	return output(ctx, p, func(w io.Writer, p desk.Patient) {
		anchored := "not anchored yet"
		if p.Anchored {
			anchored = "anchored"
		}
		fmt.Fprintf(w, "Patient %s: %d records (%s)\nRelationship: %s\n", p.ID, p.Records, anchored, p.Relationship.State)
		if p.Relationship.DeskCode != "" {
			fmt.Fprintf(w, "  desk code: %s\n", p.Relationship.DeskCode)
		}
		if p.Relationship.Owner != "" {
			fmt.Fprintf(w, "  owner: %s, rotated %d×, %d grants in force\n", p.Relationship.Owner, p.Relationship.Rotations, p.Relationship.GrantsInForce)
		}
	})
}

func deskEnrol(ctx *cli.Context) error {
	a, err := args(ctx, "PATIENT", "COMMITMENT")
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	block, err := c.Enrol(ctx.Context, a[0], a[1])
	if err != nil {
		return err
	}
	return output(ctx, map[string]uint64{"block": block}, func(w io.Writer, m map[string]uint64) {
		fmt.Fprintf(w, "Enrolled in block %d. The patient's app no longer shows the enrolment code; at this and every other provider it shows a desk code.\n", m["block"])
	})
}

func deskClaimCode(ctx *cli.Context) error {
	a, err := args(ctx, "PATIENT", "DESK-CODE")
	if err != nil {
		return err
	}
	// Catch a mistyped desk code here, before anything is sent.
	dc, err := tagcode.Parse(a[1])
	if err != nil {
		return exitError{2, fmt.Errorf("the desk code %q: %w — check it against the patient's app", a[1], err)}
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	cc, err := c.NewClaimCode(ctx.Context, a[0], dc.String())
	if err != nil {
		return err
	}
	return output(ctx, cc, func(w io.Writer, cc desk.ClaimCode) {
		fmt.Fprintf(w, "Claim code for patient %s (bound to desk code %s):\n\n    %s\n\n", a[0], dc, cc.Code)
		if q, err := qrcode.New(cc.Code, qrcode.Medium); err == nil {
			fmt.Fprint(w, q.ToSmallString(false))
		}
		fmt.Fprintf(w, "\nValid until %s, once. Only the app that showed desk code %s can use it.\n", cc.Expires.Format("15:04 Mon 2 Jan"), dc)
	})
}

func deskUnmap(ctx *cli.Context) error {
	a, err := args(ctx, "PATIENT")
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	tag, err := c.Unmap(ctx.Context, a[0], ctx.String("tag"), ctx.String("reason"))
	if err != nil {
		return err
	}
	return output(ctx, map[string]string{"patient": a[0], "tag": tag}, func(w io.Writer, m map[string]string) {
		fmt.Fprintf(w, "Relationship %s no longer reads patient %s's records. Issue the patient a new claim code.\n", m["tag"], m["patient"])
	})
}

func deskImport(ctx *cli.Context) error {
	a, err := args(ctx, "BUNDLE.json")
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(a[0])
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	rep, err := c.Import(ctx.Context, raw)
	if err != nil {
		return err
	}
	return output(ctx, rep, func(w io.Writer, r desk.ImportReport) {
		fmt.Fprintf(w, "Imported patient %s: %d entries (%d created, %d updated, %d unchanged).\n", r.Patient, r.Entries, r.Created, r.Updated, r.Unchanged)
	})
}

// ndjsonFiles expands the arguments of import-ndjson: a directory stands
// for its *.ndjson files.
func ndjsonFiles(args []string) ([]string, error) {
	var files []string
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		in, err := filepath.Glob(filepath.Join(a, "*.ndjson"))
		if err != nil {
			return nil, err
		}
		if len(in) == 0 {
			return nil, fmt.Errorf("%s has no *.ndjson files", a)
		}
		sort.Strings(in)
		files = append(files, in...)
	}
	return files, nil
}

func deskImportNDJSON(ctx *cli.Context) error {
	if ctx.NArg() == 0 {
		return exitError{2, errors.New("want DIR or FILE.ndjson…")}
	}
	files, err := ndjsonFiles(ctx.Args().Slice())
	if err != nil {
		return err
	}
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	bar := newUploadBar(ctx.App.ErrWriter, isTerminal(os.Stderr), time.Now)
	rep, err := c.ImportNDJSON(ctx.Context, files, bar.update)
	bar.finish()
	if err != nil && !errors.Is(err, desk.ErrRefusedPatients) {
		return err
	}
	if oerr := output(ctx, rep, printBulkReport); oerr != nil {
		return oerr
	}
	if err != nil {
		return exitError{1, fmt.Errorf("%d refused: fix their lines and run the same import again (what went in stays, unchanged)", len(rep.Refused))}
	}
	return nil
}

func printBulkReport(w io.Writer, r desk.BulkReport) {
	if r.Summary != "" {
		fmt.Fprintf(w, "Imported: %s.\n", r.Summary)
		for _, x := range r.Refused {
			fmt.Fprintf(w, "  %s\n", x)
		}
		return
	}
	fmt.Fprintf(w, "Imported %d patients from %d files (%d lines): %d resources, %d created, %d updated, %d unchanged (%d shared).\n",
		r.Patients, r.Files, r.Lines, r.Resources, r.Created, r.Updated, r.Unchanged, r.Shared)
}

// uploadBar shows a bulk import's upload on stderr: a bar redrawn in place
// on a terminal, a plain line every 10 % otherwise.
type uploadBar struct {
	w       io.Writer
	tty     bool
	now     func() time.Time
	start   time.Time
	mu      sync.Mutex
	last    time.Time
	lastPct int
	done    bool
}

func newUploadBar(w io.Writer, tty bool, now func() time.Time) *uploadBar {
	return &uploadBar{w: w, tty: tty, now: now, start: now(), lastPct: -1}
}

func (b *uploadBar) update(p desk.BulkProgress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	pct := 100
	if p.Total > 0 {
		pct = int(p.Sent * 100 / p.Total)
	}
	rate := float64(p.Lines) / max(now.Sub(b.start).Seconds(), 0.001)
	switch {
	case p.Done:
		b.done = true
		if b.tty {
			fmt.Fprintf(b.w, "\r\033[K")
		}
		fmt.Fprintf(b.w, "sent %d resources in %s (%.0f resources/s); the gateway is writing the patients…\n", p.Lines, now.Sub(b.start).Round(time.Second), rate)
	case b.tty:
		if now.Sub(b.last) < 100*time.Millisecond && pct == b.lastPct {
			return
		}
		const width = 30
		fill := pct * width / 100
		fmt.Fprintf(b.w, "\r\033[K[%s%s] %3d%%  %d resources  %.0f/s  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), pct, p.Lines, rate, p.File)
	default:
		if pct/10 == b.lastPct/10 {
			return
		}
		fmt.Fprintf(b.w, "import: %d%% sent, %d resources, %.0f resources/s (%s)\n", pct, p.Lines, rate, p.File)
	}
	b.last, b.lastPct = now, pct
}

// finish ends the bar's line if the upload stopped early.
func (b *uploadBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && !b.done && b.lastPct >= 0 {
		fmt.Fprintln(b.w)
	}
}

func printStaff(w io.Writer, m map[string]any) {
	list, _ := m["staff"].([]any)
	for _, x := range list {
		s, _ := x.(map[string]any)
		state := ""
		if s["disabled"] == true {
			state = " (disabled)"
		}
		fmt.Fprintf(w, "%-16v %-6v %v%s\n", s["id"], s["role"], s["name"], state)
	}
}

// newPassword reads a new desk password from --password-file or asks twice.
func newPassword(ctx *cli.Context, sr *secretReader) (string, error) {
	if f := ctx.String(passwordFileFlag.Name); f != "" {
		return sr.fromFile(f, "password")
	}
	pw, err := prompt("New desk password: ")
	if errors.Is(err, errNoTerminal) {
		return "", errors.New("no password: give --password-file FILE (or run on a terminal)")
	}
	if err != nil {
		return "", err
	}
	again, err := prompt("Repeat password: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the passwords differ")
	}
	return pw, nil
}

func printToken(w io.Writer, tok string) {
	if tok != "" {
		fmt.Fprintf(w, "API token (shown once; keep it in a file of mode 0600 and pass it with --token-file):\n%s\n", tok)
	}
}

func deskStaffAdd(ctx *cli.Context, sr *secretReader) error {
	ns := desk.NewStaff{ID: ctx.String("id"), Name: ctx.String("name"), Role: ctx.String("role"), Token: ctx.Bool("token")}
	if !ctx.Bool("no-password") {
		pw, err := newPassword(ctx, sr)
		if err != nil {
			return err
		}
		ns.Password = pw
	}
	c, err := newDeskClient(ctx, sr, true)
	if err != nil {
		return err
	}
	tok, err := c.AddStaff(ctx.Context, ns)
	if err != nil {
		return err
	}
	out := map[string]string{"id": ns.ID, "name": ns.Name, "role": ns.Role}
	if tok != "" {
		out["token"] = tok
	}
	return output(ctx, out, func(w io.Writer, m map[string]string) {
		fmt.Fprintf(w, "Added %s (%s) as %s.\n", m["name"], m["id"], m["role"])
		printToken(w, m["token"])
	})
}

func deskStaffSet(ctx *cli.Context, sr *secretReader) error {
	a, err := args(ctx, "ID")
	if err != nil {
		return err
	}
	var ch desk.StaffChange
	if r := ctx.String("role"); r != "" {
		ch.Role = &r
	}
	yes, no := true, false
	switch {
	case ctx.Bool("disable") && ctx.Bool("enable"):
		return exitError{2, errors.New("--disable or --enable, not both")}
	case ctx.Bool("disable"):
		ch.Disabled = &yes
	case ctx.Bool("enable"):
		ch.Disabled = &no
	}
	ch.NewToken = ctx.Bool("new-token")
	if ctx.String(passwordFileFlag.Name) != "" {
		pw, err := newPassword(ctx, sr)
		if err != nil {
			return err
		}
		ch.Password = &pw
	}
	c, err := newDeskClient(ctx, sr, true)
	if err != nil {
		return err
	}
	changed, tok, err := c.ChangeStaff(ctx.Context, a[0], ch)
	if err != nil {
		return err
	}
	out := map[string]any{"id": a[0], "changed": changed}
	if tok != "" {
		out["token"] = tok
	}
	return output(ctx, out, func(w io.Writer, m map[string]any) {
		fmt.Fprintf(w, "Changed %s: %s.\n", a[0], strings.Join(changed, ", "))
		printToken(w, tok)
	})
}

func deskServe(ctx *cli.Context) error {
	if ctx.Int64("bulk-limit-mib") <= 0 {
		return exitError{2, errors.New("--bulk-limit-mib: want a positive number of MiB")}
	}
	a, err := desk.New(desk.Config{Gateway: ctx.String(gatewayFlag.Name), Provider: ctx.String("name"), Log: stderrLog(ctx), BulkLimit: ctx.Int64("bulk-limit-mib") << 20})
	if err != nil {
		return exitError{2, err}
	}
	c, stop := signal.NotifyContext(ctx.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(ctx.App.Writer, "Desk page on http://%s (Ctrl-C stops)\n", ctx.String("listen"))
	return a.Listen(c, ctx.String("listen"))
}

func deskFind(ctx *cli.Context) error {
	c, err := newDeskClient(ctx, newSecretReader(os.Stdin), true)
	if err != nil {
		return err
	}
	found, more, err := c.Find(ctx.Context, desk.Query{Name: ctx.String("name"), BirthDate: ctx.String("birthdate"), Identifier: ctx.String("identifier")})
	if err != nil {
		return err
	}
	return output(ctx, map[string]any{"patients": found, "more": more}, func(w io.Writer, _ map[string]any) {
		for _, p := range found {
			fmt.Fprintf(w, "%-40s %-30s %s  %s\n", p.ID, strings.Join(p.Names, "; "), p.BirthDate, strings.Join(p.Identifiers, ", "))
		}
		fmt.Fprintf(w, "%d found", len(found))
		if more {
			fmt.Fprint(w, " (the first ones: narrow the search)")
		}
		fmt.Fprintln(w)
	})
}
