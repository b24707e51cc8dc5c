// Package tagcode owns the desk code of a relationship tag: twenty
// characters a patient's app shows ("show this at Clinic B's desk") and
// the provider's staff type or scan when they issue a claim code, so that
// the claim code opens the relationship for that tag only.
//
// A claim code alone says which patient a claim is for; it does not say
// who may claim. Without the binding, anyone enrolled anywhere who learns a
// code (a printout, a shoulder, a clerk) could open the relationship under
// their own tag and read the patient's records. With it, the gateway opens
// the relationship only for a tag whose desk code the staff recorded.
//
// The code is 95 bits of SHA-256 over a domain string and the tag (32
// bytes, big-endian), written as 19 characters of Crockford's base 32, and
// a check character that catches every single mistyped character but 0↔Z
// and every swap of neighbours but 0Z↔Z0. Finding a second tag with a
// given code takes about 2^95 hash evaluations, each of which needs an
// enrolled identity to be of any use: a code cannot be ground.
//
// A desk code is shown to one provider only: it is derived from that
// provider's tag, which the provider learns anyway when the patient claims.
// Another provider's desk code would let the desk recognise the patient's
// relationship there once it is opened on chain, so the app shows each
// code only under its provider's name.
package tagcode

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Code is a desk code in its canonical form: four groups of five
// characters, e.g. "7K2QD-M9XWA-0RT4E-VB6NH".
type Code string

// Domain is hashed before the tag; a new encoding gets a new domain.
const Domain = "medrec-tag-code-v1"

// alphabet is Crockford's base 32: no I, L, O or U.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

const (
	dataChars = 19 // 95 bits
	codeChars = dataChars + 1
)

// ErrInvalid says a string is not a desk code.
var ErrInvalid = errors.New("tagcode: not a desk code")

// Of returns the desk code of tag (a non-negative value below 2^256).
func Of(tag *big.Int) (Code, error) {
	if tag == nil || tag.Sign() < 0 || tag.BitLen() > 256 {
		return "", fmt.Errorf("tagcode: the tag must be a value of at most 32 bytes")
	}
	h := sha256.New()
	h.Write([]byte(Domain))
	h.Write(tag.FillBytes(make([]byte, 32)))
	sum := h.Sum(nil)
	// The first 95 bits, five at a time.
	v := new(big.Int).Rsh(new(big.Int).SetBytes(sum[:12]), 1)
	digits := make([]byte, dataChars)
	mask := big.NewInt(31)
	for i := dataChars - 1; i >= 0; i-- {
		digits[i] = byte(new(big.Int).And(v, mask).Uint64())
		v.Rsh(v, 5)
	}
	return format(append(digits, check(digits))), nil
}

// check is Σ (i+1)·d_i mod 31: the weights 1…19 are distinct and non-zero
// modulo the prime 31, so a single changed digit or a swap of two
// neighbours changes the sum unless the digits differ by 31 (0 and Z).
func check(digits []byte) byte {
	sum := 0
	for i, d := range digits {
		sum += (i + 1) * int(d)
	}
	return byte(sum % 31)
}

func format(digits []byte) Code {
	var b strings.Builder
	for i, d := range digits {
		if i > 0 && i%5 == 0 {
			b.WriteByte('-')
		}
		b.WriteByte(alphabet[d])
	}
	return Code(b.String())
}

// Parse reads a desk code as a person types it: case does not matter,
// spaces and dashes are ignored, and O, I and L are read as 0, 1 and 1.
func Parse(s string) (Code, error) {
	digits := make([]byte, 0, codeChars)
	for _, r := range strings.ToUpper(s) {
		switch r {
		case ' ', '-', '\t':
			continue
		case 'O':
			r = '0'
		case 'I', 'L':
			r = '1'
		}
		i := strings.IndexRune(alphabet, r)
		if i < 0 {
			return "", fmt.Errorf("%w: %q is not one of its characters", ErrInvalid, r)
		}
		digits = append(digits, byte(i))
	}
	if len(digits) != codeChars {
		return "", fmt.Errorf("%w: it has %d characters, a desk code has %d", ErrInvalid, len(digits), codeChars)
	}
	if check(digits[:dataChars]) != digits[dataChars] {
		return "", fmt.Errorf("%w: a character is mistyped (the check character does not match)", ErrInvalid)
	}
	return format(digits), nil
}

// Matches reports whether c is the desk code of tag.
func (c Code) Matches(tag *big.Int) bool {
	want, err := Of(tag)
	return err == nil && c == want
}

// String returns the canonical form.
func (c Code) String() string { return string(c) }
