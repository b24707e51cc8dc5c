package tagcode

import (
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
)

// testdata/vectors.json: desk codes of fixed tags, so that every
// implementation (the gateway, the patient's app, another client) agrees.
type vector struct {
	Tag  string `json:"tag"`
	Code string `json:"code"`
}

func TestVectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 3 {
		t.Fatalf("%d vectors", len(vs))
	}
	for _, v := range vs {
		tag, ok := new(big.Int).SetString(strings.TrimPrefix(v.Tag, "0x"), 16)
		if !ok {
			t.Fatalf("bad tag %q", v.Tag)
		}
		got, err := Of(tag)
		if err != nil || string(got) != v.Code {
			t.Errorf("Of(%s) = %q, %v; want %q", v.Tag, got, err, v.Code)
		}
		if !Code(v.Code).Matches(tag) || Code(v.Code).Matches(new(big.Int).Add(tag, big.NewInt(1))) {
			t.Errorf("Matches(%s) is wrong", v.Tag)
		}
	}
}

func TestParse(t *testing.T) {
	c, err := Of(big.NewInt(42))
	if err != nil {
		t.Fatal(err)
	}
	s := string(c)
	lower := strings.ToLower(strings.ReplaceAll(s, "-", " "))
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"canonical", s, true},
		{"lower case, spaces", lower, true},
		{"no separators", strings.ReplaceAll(s, "-", ""), true},
		{"too short", s[:len(s)-1], false},
		{"too long", s + "0", false},
		{"empty", "", false},
		{"U is not a digit", "U" + s[1:], false},
		{"a full 0x tag", "0x2a", false},
	} {
		got, err := Parse(tc.in)
		if tc.ok && (err != nil || got != c) {
			t.Errorf("%s: Parse(%q) = %q, %v; want %q", tc.name, tc.in, got, err, c)
		}
		if !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse(%q) = %q, %v; want ErrInvalid", tc.name, tc.in, got, err)
		}
	}
}

// Read-alikes: O, I and L are what people type for 0, 1 and 1.
func TestParseReadAlikes(t *testing.T) {
	for n := int64(0); n < 2000; n++ {
		c, _ := Of(big.NewInt(n))
		s := string(c)
		if !strings.ContainsAny(s, "01") {
			continue
		}
		typed := strings.NewReplacer("0", "o", "1", "l").Replace(s)
		if got, err := Parse(typed); err != nil || got != c {
			t.Fatalf("Parse(%q) = %q, %v; want %q", typed, got, err, c)
		}
		return
	}
	t.Fatal("no code with a 0 or 1 among 2000")
}

// Every single mistyped character is caught, but 0↔Z, and every swap of
// two different neighbours, but 0Z↔Z0.
func TestCheckCatchesTypos(t *testing.T) {
	for n := int64(1); n <= 200; n++ {
		c, _ := Of(big.NewInt(n * 7919))
		digits := []byte(strings.ReplaceAll(string(c), "-", ""))
		for i := range digits {
			for _, r := range []byte(alphabet) {
				if r == digits[i] {
					continue
				}
				typo := append([]byte(nil), digits...)
				typo[i] = r
				pair := string([]byte{digits[i], r})
				if _, err := Parse(string(typo)); err == nil && pair != "0Z" && pair != "Z0" {
					t.Fatalf("%s with character %d typed as %c parses", c, i, r)
				}
			}
			if i+1 < len(digits) && digits[i] != digits[i+1] {
				swap := append([]byte(nil), digits...)
				swap[i], swap[i+1] = swap[i+1], swap[i]
				pair := string(digits[i : i+2])
				if _, err := Parse(string(swap)); err == nil && pair != "0Z" && pair != "Z0" {
					t.Fatalf("%s with characters %d and %d swapped parses", c, i, i+1)
				}
			}
		}
	}
}

func TestOfRefuses(t *testing.T) {
	for _, tag := range []*big.Int{nil, big.NewInt(-1), new(big.Int).Lsh(big.NewInt(1), 256)} {
		if c, err := Of(tag); err == nil {
			t.Errorf("Of(%v) = %q", tag, c)
		}
	}
}
