package zkhash

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
)

// Errors returned when decoding field elements.
var (
	ErrNotCanonical = errors.New("value is not a canonical field element (must be < r)")
	ErrBadEncoding  = errors.New("field element must be 0x followed by 64 hex digits")
)

// Modulus returns r, the order of the BN254 scalar field.
func Modulus() *big.Int { return fr.Modulus() }

// FromUint64 returns x as a field element.
func FromUint64(x uint64) fr.Element {
	var e fr.Element
	e.SetUint64(x)
	return e
}

// FromBig returns x as a field element, refusing negative values and values
// ≥ r rather than reducing them: a non-canonical encoding of a public input is
// an attempt to make two different inputs verify as one.
func FromBig(x *big.Int) (fr.Element, error) {
	var e fr.Element
	if x == nil || x.Sign() < 0 || x.Cmp(fr.Modulus()) >= 0 {
		return e, ErrNotCanonical
	}
	e.SetBigInt(x)
	return e, nil
}

// FromBytes32 decodes a 32-byte big-endian canonical field element.
func FromBytes32(b [32]byte) (fr.Element, error) {
	return FromBig(new(big.Int).SetBytes(b[:]))
}

// Big returns e as a new big.Int.
func Big(e fr.Element) *big.Int {
	var b big.Int
	e.BigInt(&b)
	return &b
}

// Bytes32 returns the 32-byte big-endian encoding of e.
func Bytes32(e fr.Element) [32]byte { return e.Bytes() }

// Hex returns e as "0x" and 64 lower-case hex digits: the form used in JSON,
// vector files and the CLI.
func Hex(e fr.Element) string {
	b := e.Bytes()
	return "0x" + hex.EncodeToString(b[:])
}

// ParseHex decodes a field element written as "0x" and 1 to 64 hex digits,
// upper- or lower-case: the zero-padded form Hex produces (what the CLI, the
// audit and vector files print) and the minimal form of JSON-RPC quantities
// (hexutil.EncodeBig). It refuses signs, separators and values ≥ r.
func ParseHex(s string) (fr.Element, error) {
	var e fr.Element
	digits, ok := strings.CutPrefix(s, "0x")
	if !ok || len(digits) == 0 || len(digits) > 64 || strings.Trim(digits, "0123456789abcdefABCDEF") != "" {
		return e, fmt.Errorf("%q: %w", s, ErrBadEncoding)
	}
	raw, err := hex.DecodeString(strings.Repeat("0", 64-len(digits)) + digits)
	if err != nil {
		return e, fmt.Errorf("%q: %w", s, ErrBadEncoding)
	}
	e, err = FromBig(new(big.Int).SetBytes(raw))
	if err != nil {
		return e, fmt.Errorf("%s: %w", s, err)
	}
	return e, nil
}
