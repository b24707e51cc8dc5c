package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/medrec-zk/medrec/audit"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/atomicfile"
	"github.com/medrec-zk/medrec/prover"
)

// Exit codes of `medrec audit`: 0 every check passed (warnings allowed),
// 1 a check failed, 2 usage (bad flags, a range over the cap), 3 the audit
// could not run (RPC unreachable, wrong chain, contracts missing, bad files).
const exitCannotAudit = 3

var auditCommand = &cli.Command{
	Name:  "audit",
	Usage: "check the anonymity promises from the public chain alone (read-only)",
	Description: `Reads the MedRec-ZK contracts' logs, every transaction of the range and the
state at head over plain JSON-RPC, and runs the named checks of docs/audit.md.
Exit code: 0 all checks pass (warnings allowed), 1 a check failed, 2 usage
error, 3 the audit could not run.

Keep credentials out of --rpc: put an API key in a header file
(--rpc-header-file, lines "Name: value"), which is never printed.`,
	Before: required("rpc", "deployment"),
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "rpc", Usage: "JSON-RPC endpoint `URL` (http, ws or IPC path)"},
		&cli.StringFlag{Name: "rpc-header-file", Usage: "send the HTTP headers in `FILE` (\"Name: value\" lines) with every request"},
		&cli.StringFlag{Name: "deployment", Usage: "the network's deployment record `FILE` (deployment.json)"},
		jsonFlag,
		&cli.Uint64Flag{Name: "from", Usage: "first `BLOCK` to audit (default: the deployment's block)"},
		&cli.DurationFlag{Name: "window", Value: audit.DefaultWindow, Usage: "opens, and grants, at different providers closer than `DURATION` are reported"},
		&cli.StringFlag{Name: "chart", Usage: "write the anonymity set over time to `FILE` (.svg, or .html for a page)"},
		&cli.UintFlag{Name: "min-anonymity", Value: audit.DefaultMinAnonymity, Usage: "an open with a smaller anonymity set fails"},
		&cli.Uint64Flag{Name: "max-range", Value: audit.DefaultMaxRange, Usage: "refuse to audit more than `N` blocks"},
		&cli.BoolFlag{Name: "logs-only", Usage: "skip the block-by-block transaction scan (faster; delegates judged by head state only)"},
		&cli.StringFlag{Name: "keys", Usage: "the ceremony's key `DIR`, to name a verifier whose key differs"},
		&cli.IntFlag{Name: "max-findings", Value: audit.DefaultMaxFindings, Usage: "findings listed per check"},
		&cli.IntFlag{Name: "concurrency", Value: audit.DefaultConcurrency, Usage: "RPC requests in flight"},
	},
	Action: runAudit,
}

func usage(format string, args ...any) error {
	return exitError{code: 2, err: fmt.Errorf(format, args...)}
}

func cannotAudit(err error) error { return exitError{code: exitCannotAudit, err: err} }

func runAudit(ctx *cli.Context) error {
	cfg := audit.Config{
		Window:       ctx.Duration("window"),
		MaxRange:     ctx.Uint64("max-range"),
		LogsOnly:     ctx.Bool("logs-only"),
		MaxFindings:  ctx.Int("max-findings"),
		Concurrency:  ctx.Int("concurrency"),
		MinAnonymity: uint32(ctx.Uint("min-anonymity")),
	}
	switch {
	case cfg.Window <= 0:
		return usage("--window must be positive")
	case cfg.MaxRange == 0:
		return usage("--max-range must be positive")
	case ctx.Uint("min-anonymity") == 0 || ctx.Uint("min-anonymity") > 1<<31:
		return usage("--min-anonymity must be between 1 and 2^31")
	case cfg.MaxFindings <= 0 || cfg.Concurrency <= 0 || cfg.Concurrency > 256:
		return usage("--max-findings must be positive and --concurrency between 1 and 256")
	}
	if ctx.IsSet("from") {
		from := ctx.Uint64("from")
		cfg.From = &from
	}
	chart := ctx.String("chart")
	if chart != "" {
		if ext := strings.ToLower(filepath.Ext(chart)); ext != ".svg" && ext != ".html" && ext != ".htm" {
			return usage("--chart must name an .svg or .html file")
		}
	}
	d, err := contracts.LoadDeployment(ctx.String("deployment"))
	if err != nil {
		return cannotAudit(err)
	}
	if dir := ctx.String("keys"); dir != "" {
		ks, err := prover.LoadKeyDir(dir, false)
		if err != nil {
			return cannotAudit(err)
		}
		cfg.Keys = append(cfg.Keys, ks)
	}
	var headers http.Header
	if f := ctx.String("rpc-header-file"); f != "" {
		if headers, err = readHeaders(f); err != nil {
			return cannotAudit(err)
		}
	}
	url := ctx.String("rpc")
	if isTerminal(os.Stderr) {
		cfg.Progress = progress(ctx.App.ErrWriter)
	}
	dialCtx, cancel := context.WithTimeout(ctx.Context, 30*time.Second)
	defer cancel()
	src, err := audit.Dial(dialCtx, url, headers)
	if err != nil {
		return cannotAudit(err)
	}
	report, err := audit.Run(ctx.Context, src, d, cfg)
	if cfg.Progress != nil {
		fmt.Fprint(ctx.App.ErrWriter, "\r\033[K")
	}
	if err != nil {
		msg := audit.Redact(err.Error(), url)
		if errors.Is(err, audit.ErrRangeTooLarge) || errors.Is(err, audit.ErrRange) {
			return usage("%s", msg)
		}
		return cannotAudit(errors.New(msg))
	}
	if chart != "" {
		var buf strings.Builder
		if err := report.WriteChart(&buf, strings.HasPrefix(strings.ToLower(filepath.Ext(chart)), ".htm")); err != nil {
			return cannotAudit(err)
		}
		if err := atomicfile.Write(chart, []byte(buf.String()), 0o644); err != nil {
			return cannotAudit(err)
		}
	}
	out := ctx.App.Writer
	if ctx.Bool(jsonFlag.Name) {
		err = report.WriteJSON(out)
	} else {
		err = report.WriteText(out, 10)
	}
	if err != nil {
		return err
	}
	if report.Failed() {
		return exitError{code: 1, err: errors.New("audit failed: see the checks above")}
	}
	return nil
}

// readHeaders reads "Name: value" lines (blank lines and # comments
// skipped). Errors name the line number only: values are secrets.
func readHeaders(path string) (http.Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("rpc header file: %w", err)
	}
	defer f.Close()
	h := http.Header{}
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("rpc header file %s: line %d is not \"Name: value\"", path, n)
		}
		h.Add(textproto.CanonicalMIMEHeaderKey(name), strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("rpc header file %s: %w", path, err)
	}
	return h, nil
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// progress prints the audit's stage on one terminal line, at most twice a second.
func progress(w io.Writer) func(stage string, done, total uint64) {
	var last time.Time
	return func(stage string, done, total uint64) {
		if now := time.Now(); now.Sub(last) > 500*time.Millisecond || done == total {
			last = now
			fmt.Fprintf(w, "\r\033[K%s: %d/%d blocks", stage, done, total)
		}
	}
}
