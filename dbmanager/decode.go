package dbmanager

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"strings"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

// Decoders of request values shared by the handlers: strict JSON bodies,
// field elements, proofs, 32-byte values, random tokens.

// parseFields parses values given as "0x" and 1 to 64 hex digits (leading
// zeros allowed). Ranges are checked by the circuits package's parsers.
func parseFields(ss ...string) ([]*big.Int, error) {
	out := make([]*big.Int, len(ss))
	for i, s := range ss {
		digits, ok := strings.CutPrefix(s, "0x")
		v, okNum := new(big.Int).SetString(digits, 16)
		if !ok || !okNum || len(digits) > 64 || strings.HasPrefix(digits, "-") || strings.HasPrefix(digits, "+") {
			return nil, badRequest("%q is not a 0x-hex number of at most 32 bytes", s)
		}
		out[i] = v
	}
	return out, nil
}

// errProofRefused says a well-formed proof does not verify; the caller
// says for what.
var errProofRefused = errors.New("the proof does not verify")

// verifyOwnership parses an Ownership proof's public inputs and proof from a
// request (root, tag and proof in 0x hex; scope and signal the gateway's
// own) and verifies it: errProofRefused when it does not verify, a 400 for
// anything malformed.
func (g *Gateway) verifyOwnership(root string, scope uint64, tag string, signal fr.Element, proofHex string) (circuits.OwnershipPublic, prover.Proof, error) {
	ins, err := parseFields(root, hexutil.EncodeUint64(scope), tag)
	if err != nil {
		return circuits.OwnershipPublic{}, prover.Proof{}, err
	}
	pub, err := circuits.ParseOwnershipPublic(append(ins, zkhash.Big(signal)))
	if err != nil {
		return circuits.OwnershipPublic{}, prover.Proof{}, badRequest("%v", err)
	}
	proof, err := parseProof(proofHex)
	if err != nil {
		return circuits.OwnershipPublic{}, prover.Proof{}, err
	}
	if err := g.cfg.Prover.VerifyOwnership(proof, pub); err != nil {
		return circuits.OwnershipPublic{}, prover.Proof{}, errProofRefused
	}
	return pub, proof, nil
}

func parseProof(s string) (prover.Proof, error) {
	b, err := hexutil.Decode(s)
	if err != nil {
		return prover.Proof{}, badRequest("proof: %v", err)
	}
	p, err := prover.ParseProof(b)
	if err != nil {
		return prover.Proof{}, badRequest("proof: %v", err)
	}
	return p, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func parseBytes32(s string) ([32]byte, error) {
	var out [32]byte
	b, err := hexutil.Decode(s)
	if err != nil || len(b) != 32 {
		return out, badRequest("%q is not 32 bytes of 0x hex", s)
	}
	copy(out[:], b)
	return out, nil
}

// decodeStrict decodes a JSON body: unknown fields and trailing data are errors.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("trailing data after the JSON body")
	}
	return nil
}
