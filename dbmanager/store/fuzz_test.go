package store

import (
	"errors"
	"math/big"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/zkhash"
)

// FuzzParseTag: ParseTag accepts exactly "0x" and 1 to 64 hex digits (either
// case) whose value is a canonical field element, and returns that value;
// anything else is ErrInvalid. The tag prints back to its input, in lower
// case, zero-padded to 64 digits.
func FuzzParseTag(f *testing.F) {
	for _, s := range []string{
		"0x" + strings.Repeat("0", 64),
		"0x" + strings.Repeat("0", 63) + "1",
		"0x" + strings.Repeat("F", 64),
		"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000", // r
		"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001", // r+1
		"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593effffffF", // r-1
		"0X" + strings.Repeat("0", 64), "0x" + strings.Repeat("0", 65), "0x1", "", "0x", "0x0", "0x2a", "0x-1", "0x+1",
		"0x" + strings.Repeat("g", 64), "0x+" + strings.Repeat("0", 63), " 0x" + strings.Repeat("0", 63),
		"0x" + strings.Repeat("é", 32),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tag, err := ParseTag(s)
		want := len(s) > 2 && len(s) <= 66 && s[:2] == "0x" && strings.Trim(s[2:], "0123456789abcdefABCDEF") == ""
		var v *big.Int
		if want {
			v, _ = new(big.Int).SetString(s[2:], 16)
			want = v.Cmp(zkhash.Modulus()) < 0
		}
		if !want {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseTag(%q) = %v, %v; want ErrInvalid", s, tag, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("ParseTag(%q): %v", s, err)
		}
		if new(big.Int).SetBytes(tag[:]).Cmp(v) != 0 || tag.String() != "0x"+strings.Repeat("0", 66-len(s))+strings.ToLower(s[2:]) {
			t.Fatalf("ParseTag(%q) = %v", s, tag)
		}
		if back, err := ParseTag(tag.String()); err != nil || back != tag {
			t.Fatalf("ParseTag(%q) = %v, %v", tag.String(), back, err)
		}
	})
}
