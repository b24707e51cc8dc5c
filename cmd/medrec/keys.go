package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/zkhash"
)

var keysCommand = &cli.Command{
	Name:  "keys",
	Usage: "create, restore and inspect the keys derived from your 12 words",
	Subcommands: []*cli.Command{
		{
			Name:  "new",
			Usage: "create 12 new words, print them once and store them encrypted",
			Flags: []cli.Flag{keystoreFlag, passwordFileFlag, passphraseFileFlag, testKDFFlag},
			Action: func(ctx *cli.Context) error {
				return keysNew(ctx, newSecretReader(os.Stdin), ctx.App.Writer)
			},
		},
		{
			Name:  "restore",
			Usage: "store existing 12 words in a new encrypted keystore",
			Flags: []cli.Flag{keystoreFlag, passwordFileFlag, mnemonicFileFlag, passphraseFileFlag, testKDFFlag},
			Action: func(ctx *cli.Context) error {
				return keysRestore(ctx, newSecretReader(os.Stdin), ctx.App.Writer)
			},
		},
		{
			Name:  "inspect",
			Usage: "show the public values derived from the words: wallet address, commitment, per-provider delegates and tags",
			Flags: []cli.Flag{
				mnemonicFileFlag, passphraseFileFlag,
				&cli.StringFlag{Name: "keystore", Usage: "read the words from this keystore instead of --mnemonic-file"},
				passwordFileFlag,
				&cli.Uint64SliceFlag{Name: "provider", Usage: "provider `ID` to derive a delegate and tag for (repeatable)"},
				&cli.UintFlag{Name: "rotation", Usage: "delegate rotation counter"},
				jsonFlag, testKDFFlag,
			},
			Action: func(ctx *cli.Context) error {
				return keysInspect(ctx, newSecretReader(os.Stdin), ctx.App.Writer)
			},
		},
	},
}

func writeKeystore(ctx *cli.Context, path string, ks delegate.Keystore, sr *secretReader) error {
	pw, err := sr.password(ctx, true)
	if err != nil {
		return err
	}
	n, p := delegate.StandardScryptN, delegate.StandardScryptP
	if ctx.Bool(testKDFFlag.Name) {
		n, p = delegate.LightScryptN, delegate.LightScryptP
	}
	if err := delegate.WriteKeystore(path, ks, pw, n, p); err != nil {
		return err
	}
	return nil
}

func keysNew(ctx *cli.Context, sr *secretReader, out io.Writer) error {
	path := ctx.String(keystoreFlag.Name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s: %w (use `medrec keys inspect --keystore %s` to see it)", path, delegate.ErrKeystoreExists, path)
	}
	words, err := delegate.NewMnemonic()
	if err != nil {
		return err
	}
	pp, err := sr.passphrase(ctx)
	if err != nil {
		return err
	}
	if err := writeKeystore(ctx, path, delegate.Keystore{Mnemonic: words, Passphrase: pp}, sr); err != nil {
		return err
	}
	keys, err := delegate.FromMnemonic(words, pp)
	if err != nil {
		return err
	}
	wallet, err := keys.Wallet()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Your 12 words (shown once; write them on paper, in order, and keep them offline):\n\n")
	for i, w := range strings.Fields(words) {
		fmt.Fprintf(out, "  %2d. %s\n", i+1, w)
	}
	fmt.Fprintf(out, "\nThey restore every key on a new device. Anyone who has them can read your records.\n")
	fmt.Fprintf(out, "Keystore: %s (wallet %s)\n", path, wallet.Address.Hex())
	return nil
}

func keysRestore(ctx *cli.Context, sr *secretReader, out io.Writer) error {
	path := ctx.String(keystoreFlag.Name)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s: %w", path, delegate.ErrKeystoreExists)
	}
	words, err := readMnemonic(ctx, sr)
	if err != nil {
		return err
	}
	pp, err := sr.passphrase(ctx)
	if err != nil {
		return err
	}
	if err := writeKeystore(ctx, path, delegate.Keystore{Mnemonic: words, Passphrase: pp}, sr); err != nil {
		return err
	}
	keys, err := delegate.FromMnemonic(words, pp)
	if err != nil {
		return err
	}
	wallet, _ := keys.Wallet()
	fmt.Fprintf(out, "Restored into %s (wallet %s)\n", path, wallet.Address.Hex())
	return nil
}

func readMnemonic(ctx *cli.Context, sr *secretReader) (string, error) {
	var words string
	if f := ctx.String(mnemonicFileFlag.Name); f != "" {
		w, err := sr.fromFile(f, "mnemonic")
		if err != nil {
			return "", err
		}
		words = w
	} else {
		w, err := prompt("Your 12 words: ")
		if errors.Is(err, errNoTerminal) {
			return "", errors.New("no words: give --mnemonic-file FILE (- for standard input)")
		}
		if err != nil {
			return "", err
		}
		words = w
	}
	m, err := delegate.NormalizeMnemonic(words)
	if err != nil {
		return "", fmt.Errorf("invalid mnemonic: %w", err)
	}
	return m, nil
}

// InspectOutput is the JSON printed by `medrec keys inspect --json`.
type InspectOutput struct {
	Address          string            `json:"address"`
	Commitment       string            `json:"commitment"`
	ViewerCommitment string            `json:"viewerCommitment"`
	Delegates        []InspectDelegate `json:"delegates"`
}

// InspectDelegate is one provider's delegate and tag.
type InspectDelegate struct {
	Provider uint32 `json:"provider"`
	Rotation uint32 `json:"rotation"`
	Path     string `json:"path"`
	Address  string `json:"address"`
	Tag      string `json:"tag"`
}

func keysInspect(ctx *cli.Context, sr *secretReader, out io.Writer) error {
	var keys *delegate.Keys
	switch {
	case ctx.String(mnemonicFileFlag.Name) != "" && ctx.String("keystore") != "":
		return exitError{2, errors.New("give either --mnemonic-file or --keystore, not both")}
	case ctx.String("keystore") != "":
		pw, err := sr.password(ctx, false)
		if err != nil {
			return err
		}
		read := delegate.ReadKeystore
		if ctx.Bool(testKDFFlag.Name) {
			read = delegate.ReadTestKeystore
		}
		ks, err := read(ctx.String("keystore"), pw)
		if err != nil {
			return err
		}
		if keys, err = ks.Keys(); err != nil {
			return err
		}
	default:
		words, err := readMnemonic(ctx, sr)
		if err != nil {
			return err
		}
		pp, err := sr.passphrase(ctx)
		if err != nil {
			return err
		}
		if keys, err = delegate.FromMnemonic(words, pp); err != nil {
			return err
		}
	}
	rotation := ctx.Uint("rotation")
	if rotation >= 1<<31 {
		return exitError{2, fmt.Errorf("--rotation %d: %w", rotation, delegate.ErrIndexRange)}
	}
	wallet, err := keys.Wallet()
	if err != nil {
		return err
	}
	c, err := keys.Commitment()
	if err != nil {
		return err
	}
	cv, err := keys.ViewerCommitment(0)
	if err != nil {
		return err
	}
	res := InspectOutput{Address: wallet.Address.Hex(), Commitment: zkhash.Hex(c), ViewerCommitment: zkhash.Hex(cv), Delegates: []InspectDelegate{}}
	for _, p := range ctx.Uint64Slice("provider") {
		if p >= 1<<31 {
			return exitError{2, fmt.Errorf("--provider %d: %w", p, delegate.ErrIndexRange)}
		}
		d, err := keys.Delegate(uint32(p), uint32(rotation))
		if err != nil {
			return err
		}
		tag, err := keys.Tag(uint32(p))
		if err != nil {
			return err
		}
		res.Delegates = append(res.Delegates, InspectDelegate{
			Provider: uint32(p), Rotation: uint32(rotation), Path: d.Path.String(), Address: d.Address.Hex(), Tag: zkhash.Hex(tag),
		})
	}
	if ctx.Bool(jsonFlag.Name) {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(out, "Wallet address:      %s\n", res.Address)
	fmt.Fprintf(out, "Identity commitment: %s  (show this at a provider's desk to enrol)\n", res.Commitment)
	fmt.Fprintf(out, "Viewer commitment:   %s  (give this to a patient who shares records with you)\n", res.ViewerCommitment)
	if len(res.Delegates) > 0 {
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nPROVIDER\tROTATION\tDELEGATE\tTAG")
		for _, d := range res.Delegates {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", d.Provider, d.Rotation, d.Address, d.Tag)
		}
		tw.Flush()
	}
	return nil
}
