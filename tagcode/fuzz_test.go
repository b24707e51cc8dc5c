package tagcode

import (
	"errors"
	"math/big"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; what it refuses it refuses with
// ErrInvalid; what it accepts is canonical (four groups of five of the
// alphabet, the check character right), parses back to itself, and is what
// the input spells once case, separators and read-alikes are normalised.
func FuzzParse(f *testing.F) {
	for n := int64(0); n < 5; n++ {
		c, _ := Of(big.NewInt(n))
		f.Add(string(c))
		f.Add(strings.ToLower(strings.ReplaceAll(string(c), "-", " ")))
	}
	for _, s := range []string{"", "-", "U", "0x2a", "ooooo-iiiii-lllll-00000", "ÄBCDE-FGHJK-MNPQR-STVWX", strings.Repeat("Z", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q): %v", s, err)
			}
			return
		}
		if len(c) != 23 || c[5] != '-' || c[11] != '-' || c[17] != '-' {
			t.Fatalf("Parse(%q) = %q: not canonical", s, c)
		}
		if again, err := Parse(string(c)); err != nil || again != c {
			t.Fatalf("Parse(%q) = %q, %v", c, again, err)
		}
		norm := strings.NewReplacer("-", "", " ", "", "\t", "", "O", "0", "I", "1", "L", "1").Replace(strings.ToUpper(s))
		if norm != strings.ReplaceAll(string(c), "-", "") {
			t.Fatalf("Parse(%q) = %q", s, c)
		}
	})
}
