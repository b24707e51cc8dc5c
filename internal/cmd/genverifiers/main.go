// Command genverifiers writes the Solidity Groth16 verifiers of every circuit
// from a key directory (default: the embedded dev keys) into contracts/src,
// and the insertion verifier of its template key (prover.InsertionTemplateVK).
// `make generate` runs it; the output is byte-for-byte reproducible.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/consensys/gnark/logger"
	"github.com/rs/zerolog"

	"github.com/medrec-zk/medrec/internal/atomicfile"
	"github.com/medrec-zk/medrec/prover"
)

func main() {
	keys := flag.String("keys", "", "key directory (default: the embedded dev keys)")
	out := flag.String("out", "contracts/src", "output directory")
	flag.Parse()
	logger.Set(zerolog.Nop())
	if err := run(*keys, *out); err != nil {
		fmt.Fprintln(os.Stderr, "genverifiers:", err)
		os.Exit(1)
	}
}

func run(keyDir, out string) error {
	var ks *prover.KeySet
	var err error
	if keyDir == "" {
		ks, err = prover.DevKeys()
	} else {
		ks, err = prover.LoadKeyDir(keyDir, false)
	}
	if err != nil {
		return err
	}
	for _, c := range prover.Circuits() {
		var buf bytes.Buffer
		if err := ks.ExportSolidity(c, &buf); err != nil {
			return err
		}
		path := filepath.Join(out, prover.SolidityContractName(c)+".sol")
		if err := atomicfile.Write(path, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	// The insertion verifier from its template key: never deployed, the
	// audit's reference for reading deployed insertion verifiers.
	vk, err := prover.InsertionTemplateVK()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := prover.ExportSolidityVK(prover.Insertion, vk, prover.InsertionTemplateOrigin, &buf); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(out, prover.SolidityContractName(prover.Insertion)+".sol"), buf.Bytes(), 0o644)
}
