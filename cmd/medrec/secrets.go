package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Flags shared by the commands that need secrets; defined once here.
var (
	keystoreFlag = &cli.StringFlag{
		Name:  "keystore",
		Usage: "encrypted keystore holding the 12 words",
		Value: defaultKeystore(),
	}
	passwordFileFlag = &cli.StringFlag{
		Name:  "password-file",
		Usage: "read the keystore password from `FILE` (- for standard input); prompts on the terminal if absent",
	}
	mnemonicFileFlag = &cli.StringFlag{
		Name:  "mnemonic-file",
		Usage: "read the 12 words from `FILE` (- for standard input)",
	}
	passphraseFileFlag = &cli.StringFlag{
		Name:  "bip39-passphrase-file",
		Usage: "read the optional BIP39 passphrase from `FILE` (- for standard input)",
	}
	jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON for machines"}
	// testKDFFlag writes (keys new, restore) or opens (keys inspect) a
	// keystore with the cheap scrypt cost of tests. Hidden: such a keystore
	// must never hold real words, and everything else refuses to open it.
	testKDFFlag = &cli.BoolFlag{
		Name:   "insecure-test-kdf",
		Usage:  "tests only: a cheap scrypt cost (4 MB instead of 256 MB) that every other command refuses",
		Hidden: true,
	}
)

func defaultKeystore() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return "medrec-keystore.json"
	}
	return home + "/.medrec/keystore.json"
}

// secretReader reads secrets from files, standard input (at most once) or the terminal.
type secretReader struct {
	stdin     io.Reader
	stdinUsed bool
	stdinBuf  *bufio.Reader
}

func newSecretReader(stdin io.Reader) *secretReader { return &secretReader{stdin: stdin} }

// fromFile reads a secret from path ("-" is standard input), trimming the final newline.
func (s *secretReader) fromFile(path, what string) (string, error) {
	if path == "-" {
		if s.stdinUsed {
			return "", fmt.Errorf("only one secret can come from standard input (%s)", what)
		}
		s.stdinUsed = true
		if s.stdinBuf == nil {
			s.stdinBuf = bufio.NewReader(s.stdin)
		}
		b, err := io.ReadAll(s.stdinBuf)
		if err != nil {
			return "", fmt.Errorf("read %s from standard input: %w", what, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

var errNoTerminal = errors.New("no terminal to prompt on")

// prompt asks on the controlling terminal without echo.
func prompt(label string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", errNoTerminal
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return "", errNoTerminal
	}
	fmt.Fprint(tty, label)
	b, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// password returns the keystore password from --password-file or a prompt;
// confirm asks twice (for a new keystore).
func (s *secretReader) password(ctx *cli.Context, confirm bool) (string, error) {
	if f := ctx.String(passwordFileFlag.Name); f != "" {
		pw, err := s.fromFile(f, "password")
		if err != nil {
			return "", err
		}
		if confirm && len(pw) < 8 {
			return "", errors.New("the keystore password must have at least 8 characters")
		}
		return pw, nil
	}
	pw, err := prompt("Keystore password: ")
	if errors.Is(err, errNoTerminal) {
		return "", errors.New("no password: give --password-file FILE (or run on a terminal)")
	}
	if err != nil {
		return "", err
	}
	if !confirm {
		return pw, nil
	}
	if len(pw) < 8 {
		return "", errors.New("the keystore password must have at least 8 characters")
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

// passphrase returns the optional BIP39 passphrase.
func (s *secretReader) passphrase(ctx *cli.Context) (string, error) {
	if f := ctx.String(passphraseFileFlag.Name); f != "" {
		return s.fromFile(f, "BIP39 passphrase")
	}
	return "", nil
}
