package prover

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark-crypto/ecc/bn254/fp"
	"github.com/consensys/gnark/backend/groth16"
)

// The Insertion verifier's template key (ADR 0002). The audit reads a
// deployed verifier as gnark's verifier template with some key in it, and
// finds where the key sits in the code from a verifier compiled with a key
// it knows. The patients' circuits have the dev keys for that; the
// Insertion circuit's keys are made at install, not kept in git, so this
// verifying key — from a single-party setup whose proving key was thrown
// away — is kept for that purpose alone. Whoever made it could forge proofs
// under it: no network may deploy it, and the audit fails one that does.
//
//go:embed templatekeys/insertion.vk
var insertionTemplate []byte

// InsertionTemplateFile is the template key's path in the repository.
const InsertionTemplateFile = "prover/templatekeys/insertion.vk"

// InsertionTemplateOrigin is the origin the template key's verifier names.
const InsertionTemplateOrigin = "the audit's template key for reading insertion verifiers (single-party setup, proving key discarded): NEVER DEPLOY"

// InsertionTemplateVK returns the Insertion verifier's template key.
func InsertionTemplateVK() (groth16.VerifyingKey, error) {
	vk := groth16.NewVerifyingKey(ecc.BN254)
	if _, err := vk.ReadFrom(bytes.NewReader(insertionTemplate)); err != nil {
		return nil, fmt.Errorf("prover: the insertion template key: %w", err)
	}
	return vk, nil
}

// WriteInsertionTemplate makes a fresh template key (gnark's single-party
// setup, the proving key dropped) and writes it to w. It draws keys until
// every coordinate, and its negation, fills 32 bytes: solc pushes a
// narrower constant otherwise, and the audit finds a template key's places
// by its 32-byte constants.
func WriteInsertionTemplate(w io.Writer) error {
	comp, err := Compile(Insertion)
	if err != nil {
		return err
	}
	for range 50 {
		_, vk, err := groth16.Setup(comp.CS)
		if err != nil {
			return fmt.Errorf("prover: insertion template setup: %w", err)
		}
		if wide(vk) {
			_, err = vk.WriteTo(w)
			return err
		}
	}
	return errors.New("prover: no insertion template key with wide coordinates in 50 draws")
}

// wide says whether every 32-byte word VerifyingKeyHash hashes, and its
// negation mod p, has a non-zero first byte.
func wide(vk groth16.VerifyingKey) bool {
	p := fp.Modulus()
	for _, w := range VerifyingKeyWords(vk) {
		x := new(big.Int).SetBytes(w[:])
		if x.BitLen() <= 248 || new(big.Int).Sub(p, x).BitLen() <= 248 {
			return false
		}
	}
	return true
}
