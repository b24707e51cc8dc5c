package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/ceremony"
)

var (
	ceremonyDirFlag = &cli.StringFlag{Name: "dir", Usage: "ceremony `DIR`ectory"}
	beaconFlag      = &cli.StringFlag{Name: "beacon", Usage: "public random beacon, hex (at least 16 bytes), announced before and unknown until after the last contribution"}
	keyOutFlag      = &cli.StringFlag{Name: "out", Usage: "key `DIR`ectory to write"}
)

// Dev ceremony constants: public on purpose. The dev keys are not for production.
const (
	devOrigin  = "MedRec-ZK local dev ceremony (3 dev providers, public beacons): NOT FOR PRODUCTION"
	devBeacon1 = "medrec-zk dev ceremony beacon 1"
	devBeacon2 = "medrec-zk dev ceremony beacon 2"
)

var ceremonyCommand = &cli.Command{
	Name:  "ceremony",
	Usage: "run or check the multi-party trusted setup of the proving keys",
	Subcommands: []*cli.Command{
		{
			Name:   "init",
			Before: required("dir"),
			Usage:  "start a ceremony for this binary's circuits",
			Flags: []cli.Flag{ceremonyDirFlag, &cli.BoolFlag{Name: "insertion",
				Usage: "make the gateways' batch-insertion keys too (proven enrolment batches, ADR 0002): phase 1 of size 2^17, far longer to run"}},
			Action: func(ctx *cli.Context) error {
				var extra []prover.Circuit
				if ctx.Bool("insertion") {
					extra = append(extra, prover.Insertion)
				}
				c, err := ceremony.Init(ctx.String("dir"), extra...)
				if err != nil {
					return err
				}
				st := c.State()
				fmt.Fprintf(ctx.App.Writer, "Ceremony started in %s (phase 1 size %d)\n", c.Dir(), st.Size)
				for _, ci := range st.Circuits {
					fmt.Fprintf(ctx.App.Writer, "  %-12s domain %5d  r1cs %s\n", ci.Circuit, ci.Domain, ci.R1CS)
				}
				return nil
			},
		},
		{
			Name:   "contribute",
			Before: required("dir", "name"),
			Usage:  "add your randomness to the current phase (it never leaves memory)",
			Flags:  []cli.Flag{ceremonyDirFlag, &cli.StringFlag{Name: "name", Usage: "your public name"}},
			Action: func(ctx *cli.Context) error {
				c, err := ceremony.Open(ctx.String("dir"))
				if err != nil {
					return err
				}
				r, err := c.Contribute(ctx.String("name"))
				if err != nil {
					return err
				}
				fmt.Fprintf(ctx.App.Writer, "Contributed to %s. Publish this digest so others can check it is in the transcript:\n  %s\n", r.Phase, r.Digest)
				return nil
			},
		},
		{
			Name:   "seal",
			Before: required("dir", "beacon"),
			Usage:  "close phase 1 with the public beacon and prepare phase 2 (coordinator)",
			Flags:  []cli.Flag{ceremonyDirFlag, beaconFlag},
			Action: func(ctx *cli.Context) error {
				c, err := ceremony.Open(ctx.String("dir"))
				if err != nil {
					return err
				}
				if err := c.Seal(ctx.String("beacon")); err != nil {
					return err
				}
				fmt.Fprintln(ctx.App.Writer, "Phase 1 verified and sealed; phase 2 is open for contributions.")
				return nil
			},
		},
		{
			Name:   "finalize",
			Before: required("dir", "beacon", "out", "origin"),
			Usage:  "close phase 2 with the second beacon, verify it and write the keys (coordinator)",
			Flags:  []cli.Flag{ceremonyDirFlag, beaconFlag, keyOutFlag, &cli.StringFlag{Name: "origin", Usage: "what the keys are, recorded in their manifest"}},
			Action: func(ctx *cli.Context) error {
				c, err := ceremony.Open(ctx.String("dir"))
				if err != nil {
					return err
				}
				m, err := c.Finalize(ctx.String("beacon"), ctx.String("out"), ctx.String("origin"))
				if err != nil {
					return err
				}
				fmt.Fprintf(ctx.App.Writer, "Keys written to %s (transcript %s)\n", ctx.String("out"), m.Transcript)
				return nil
			},
		},
		{
			Name:   "verify",
			Before: required("dir"),
			Usage:  "re-check a finished ceremony from its files alone, and that the keys come from it",
			Flags:  []cli.Flag{ceremonyDirFlag, &cli.StringFlag{Name: "keys", Usage: "key `DIR`ectory to compare with the transcript"}, jsonFlag},
			Action: func(ctx *cli.Context) error {
				r, err := ceremony.Verify(ctx.String("dir"), ctx.String("keys"))
				if err != nil {
					return err
				}
				return printReport(ctx.App.Writer, r, ctx.Bool("json"), ctx.String("keys"))
			},
		},
		{
			Name:   "dev",
			Before: required("dir", "out"),
			Usage:  "run the documented local dev ceremony (three dev providers, public beacons): keys NOT for production",
			Flags:  []cli.Flag{ceremonyDirFlag, keyOutFlag},
			Action: func(ctx *cli.Context) error {
				return devCeremony(ctx.Context, ctx.App.Writer, ctx.String("dir"), ctx.String("out"))
			},
		},
	},
}

func printReport(w io.Writer, r ceremony.Report, asJSON bool, keys string) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"ok": true, "transcript": r.Transcript, "phase1": r.Phase1Contributors, "phase2": r.Phase2Contributors, "keys": keys,
		})
	}
	fmt.Fprintf(w, "Transcript %s verifies.\n  phase 1 contributors: %v\n", r.Transcript, r.Phase1Contributors)
	for _, c := range prover.Circuits() {
		fmt.Fprintf(w, "  phase 2 (%s): %v\n", c, r.Phase2Contributors[c])
	}
	if keys != "" {
		fmt.Fprintf(w, "The keys in %s are exactly the ones this transcript produces.\n", keys)
	}
	return nil
}

// devCeremony runs the whole ceremony locally with three dev contributors
// and the public dev beacons. Every step is the real one; only the secrecy
// is missing, since one machine ran all contributors.
func devCeremony(ctx context.Context, w io.Writer, dir, out string) error {
	m, err := ceremony.RunLocal(ctx, dir, out, ceremony.Local{
		Contributors: []string{"dev-provider-1", "dev-provider-2", "dev-provider-3"},
		Beacon1:      hex.EncodeToString([]byte(devBeacon1)),
		Beacon2:      hex.EncodeToString([]byte(devBeacon2)),
		Origin:       devOrigin,
		Progress:     func(step string) { fmt.Fprintln(w, step) },
	})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(out)
	fmt.Fprintf(w, "Dev keys in %s (transcript %s). NOT FOR PRODUCTION.\n", abs, m.Transcript)
	return nil
}
