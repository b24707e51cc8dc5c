package access

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseScope: a scope given as text (a grant form, the CLI) either parses
// to a valid scope that covers exactly the types it names and prints back to
// itself, or is refused with one of the package's errors.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{
		"*", " * ", "Observation", "Observation,Condition", " Observation , Condition ,", ",,,", "", " ",
		"observation", "Observation,Spaceship", "Observation,Observation", "*,Observation", "Patient\x00",
		"Obs\xffervation", strings.Repeat("Observation,", 200), strings.Join(ResourceTypes(), ","),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrEmptyScope) {
				t.Fatalf("ParseScope(%q): unexpected error %v", s, err)
			}
			if sc != 0 {
				t.Fatalf("ParseScope(%q): scope %v with error %v", s, sc, err)
			}
			return
		}
		if !sc.Valid() {
			t.Fatalf("ParseScope(%q) = %#x, not a valid scope", s, uint64(sc))
		}
		if strings.TrimSpace(s) != "*" {
			var want Scope
			for _, typ := range strings.Split(s, ",") {
				if typ = strings.TrimSpace(typ); typ != "" {
					if !sc.Allows(typ) {
						t.Fatalf("ParseScope(%q) does not allow %q", s, typ)
					}
					want |= 1 << bitOf[typ]
				}
			}
			if sc != want {
				t.Fatalf("ParseScope(%q) = %v, want %v", s, sc, want)
			}
		}
		back, err := ParseScope(sc.String())
		if err != nil || back != sc {
			t.Fatalf("ParseScope(%q) = %v, which prints as %q and parses back to %v, %v", s, sc, sc.String(), back, err)
		}
	})
}

// FuzzScopeMask: a scope read from the chain is any 64-bit mask; printing it
// never panics, and it is valid exactly when it is non-empty and names only
// known types, in which case its types make it again.
func FuzzScopeMask(f *testing.F) {
	for _, m := range []uint64{0, 1, uint64(AllTypes), uint64(AllTypes) + 1, 1 << 63, ^uint64(0)} {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, m uint64) {
		sc := Scope(m)
		types := sc.Types()
		_ = sc.String()
		if sc.Valid() != (m != 0 && m&^uint64(AllTypes) == 0) {
			t.Fatalf("%#x: Valid() = %v", m, sc.Valid())
		}
		for _, typ := range types {
			if !sc.Allows(typ) {
				t.Fatalf("%#x lists %s but does not allow it", m, typ)
			}
		}
		if !sc.Valid() {
			return
		}
		back, err := NewScope(types...)
		if err != nil || back != sc {
			t.Fatalf("%#x: NewScope(%v) = %v, %v", m, types, back, err)
		}
	})
}

// FuzzParsePurpose: a purpose parses to a known purpose that parses back from
// its name and its HL7 code, or is refused with ErrUnknownPurpose.
func FuzzParsePurpose(f *testing.F) {
	for _, s := range []string{"treatment", "TREAT", "Research", "hresch", "family", "FAMRQT", "emergency", "ETREAT", "", "purpose(3)", "treatment ", "tre\xffatment", "reſearch"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePurpose(s)
		if err != nil {
			if !errors.Is(err, ErrUnknownPurpose) || p != 0 {
				t.Fatalf("ParsePurpose(%q) = %v, %v", s, p, err)
			}
			return
		}
		if !p.Valid() {
			t.Fatalf("ParsePurpose(%q) = %v, not a valid purpose", s, p)
		}
		if !strings.EqualFold(s, p.String()) && !strings.EqualFold(s, p.HL7()) {
			t.Fatalf("ParsePurpose(%q) = %v (%s), which it does not name", s, p, p.HL7())
		}
		for _, name := range []string{p.String(), p.HL7()} {
			if back, err := ParsePurpose(name); err != nil || back != p {
				t.Fatalf("ParsePurpose(%q) = %v, %v; want %v", name, back, err, p)
			}
		}
	})
}
