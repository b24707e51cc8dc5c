// Package verifiers owns turning a key set into the creation bytecode of the
// Groth16 verifier contracts a network deploys (two, three with the
// batch-insertion circuit's keys): gnark's Solidity verifier
// of each circuit (prover.KeySet.ExportSolidity), compiled by the project's
// pinned solc-js through contracts/compile.js with exactly the settings `make
// generate` uses (EVM london, optimizer, no metadata). A network deployed
// with its own ceremony's keys gets its verifiers here; for the dev keys the
// result is byte for byte the bindings' code (contracts.DevVerifiers).
//
// It needs Node.js and contracts/node_modules (`make run` and `make test`
// install both); Check says what is missing before anything slow starts.
package verifiers

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/prover"
)

// ErrToolchain says Node.js, compile.js or solc-js is missing.
var ErrToolchain = errors.New("verifiers: the Solidity toolchain is missing")

// toolchain is what compiling needs, found.
type toolchain struct {
	node, compileJS string
}

func find(contractsDir string) (toolchain, error) {
	dir, err := filepath.Abs(contractsDir)
	if err != nil {
		return toolchain{}, fmt.Errorf("verifiers: contracts directory: %w", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return toolchain{}, fmt.Errorf("%w: node (Node.js) is not on $PATH; it compiles the verifiers of a network's own keys with solc-js (`make run` installs it, or: apt-get install nodejs npm)", ErrToolchain)
	}
	js := filepath.Join(dir, "compile.js")
	if _, err := os.Stat(js); err != nil {
		return toolchain{}, fmt.Errorf("%w: %s has no compile.js (--contracts names the repository's contracts directory)", ErrToolchain, dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "solc", "package.json")); err != nil {
		return toolchain{}, fmt.Errorf("%w: solc-js is not installed in %s (`make run` installs it, or: cd %s && npm ci)", ErrToolchain, filepath.Join(dir, "node_modules"), dir)
	}
	return toolchain{node: node, compileJS: js}, nil
}

// Check confirms that Compile can run with contractsDir (the repository's
// contracts directory: compile.js and node_modules), without compiling.
func Check(contractsDir string) error {
	_, err := find(contractsDir)
	return err
}

// Compile exports ks' verifier of every circuit into a scratch directory,
// compiles them with solc-js through contractsDir/compile.js and returns
// their creation bytecode. It takes a few seconds.
func Compile(ctx context.Context, contractsDir string, ks *prover.KeySet) (contracts.Verifiers, error) {
	tc, err := find(contractsDir)
	if err != nil {
		return contracts.Verifiers{}, err
	}
	tmp, err := os.MkdirTemp("", "medrec-verifiers-")
	if err != nil {
		return contracts.Verifiers{}, fmt.Errorf("verifiers: scratch directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		return contracts.Verifiers{}, fmt.Errorf("verifiers: %w", err)
	}
	cs := prover.Circuits()
	for _, c := range prover.OptionalCircuits() {
		if ks.Has(c) {
			cs = append(cs, c)
		}
	}
	for _, c := range cs {
		var buf bytes.Buffer
		if err := ks.ExportSolidity(c, &buf); err != nil {
			return contracts.Verifiers{}, fmt.Errorf("verifiers: %w", err)
		}
		if err := os.WriteFile(filepath.Join(src, prover.SolidityContractName(c)+".sol"), buf.Bytes(), 0o644); err != nil {
			return contracts.Verifiers{}, fmt.Errorf("verifiers: %w", err)
		}
	}
	out := filepath.Join(tmp, "combined.json")
	cmd := exec.CommandContext(ctx, tc.node, tc.compileJS, "--src", src, "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return contracts.Verifiers{}, fmt.Errorf("verifiers: compile: %w", ctx.Err())
		}
		return contracts.Verifiers{}, fmt.Errorf("verifiers: solc-js (%s) failed: %v: %s", tc.compileJS, err, lastLines(stderr.String(), 20))
	}
	bins, err := readCombined(out)
	if err != nil {
		return contracts.Verifiers{}, err
	}
	var v contracts.Verifiers
	for _, c := range cs {
		name := prover.SolidityContractName(c)
		bin, ok := bins["src/"+name+".sol:"+name]
		if !ok || len(bin) == 0 {
			return contracts.Verifiers{}, fmt.Errorf("verifiers: solc-js output has no bytecode for %s", name)
		}
		switch c {
		case prover.Ownership:
			v.Ownership = bin
		case prover.Entitlement:
			v.Entitlement = bin
		case prover.Insertion:
			v.Insertion = bin
			k, err := ks.Keys(c)
			if err != nil {
				return contracts.Verifiers{}, err
			}
			v.InsertionKeyHash = prover.VerifyingKeyHash(k.VK)
		default:
			return contracts.Verifiers{}, fmt.Errorf("verifiers: no deployment slot for the %s verifier", c)
		}
	}
	return v, nil
}

// readCombined reads compile.js's combined.json: contract "file:name" → creation bytecode.
func readCombined(path string) (map[string][]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("verifiers: solc-js output: %w", err)
	}
	var combined struct {
		Contracts map[string]struct {
			Bin string `json:"bin"`
		} `json:"contracts"`
	}
	if err := json.Unmarshal(raw, &combined); err != nil {
		return nil, fmt.Errorf("verifiers: solc-js output %s: %w", path, err)
	}
	out := make(map[string][]byte, len(combined.Contracts))
	for name, c := range combined.Contracts {
		bin, err := hex.DecodeString(strings.TrimPrefix(c.Bin, "0x"))
		if err != nil {
			return nil, fmt.Errorf("verifiers: solc-js output: bytecode of %s: %w", name, err)
		}
		out[name] = bin
	}
	return out, nil
}

// lastLines keeps the end of a long compiler message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"…"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
