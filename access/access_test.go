package access

import (
	"errors"
	"testing"
)

// TestBitsAreFrozen: the on-chain meaning of existing bits must never change.
func TestBitsAreFrozen(t *testing.T) {
	frozen := map[string]uint{"AllergyIntolerance": 0, "Condition": 4, "Observation": 21, "Patient": 23, "ImmunizationRecommendation": 48}
	for typ, bit := range frozen {
		if bitOf[typ] != bit {
			t.Errorf("%s moved from bit %d to %d", typ, bit, bitOf[typ])
		}
	}
	if len(resourceTypes) > 64 {
		t.Fatal("more types than bits")
	}
}

func TestScope(t *testing.T) {
	s, err := ParseScope("Observation, Condition")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Allows("Observation") || !s.Allows("Condition") || s.Allows("Patient") || s.Allows("Nonsense") {
		t.Fatalf("scope %s allows the wrong types", s)
	}
	if s.String() != "Condition,Observation" || !s.Valid() {
		t.Fatalf("String = %q", s)
	}
	all, _ := ParseScope("*")
	if all != AllTypes || !all.Allows("Patient") || all.String() != "*" {
		t.Fatal("* is not every type")
	}
	if _, err := ParseScope("Observation,Spaceship"); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := ParseScope(" , "); !errors.Is(err, ErrEmptyScope) {
		t.Fatalf("empty scope: %v", err)
	}
	if Scope(1<<63).Valid() || Scope(0).Valid() {
		t.Fatal("invalid masks reported valid")
	}
}

func TestPurpose(t *testing.T) {
	for _, name := range []string{"treatment", "FAMILY", "research", "ETREAT"} {
		p, err := ParsePurpose(name)
		if err != nil || !p.Valid() {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if p, _ := ParsePurpose("research"); p != Research || p.HL7() != "HRESCH" {
		t.Fatal("research purpose")
	}
	if _, err := ParsePurpose("marketing"); !errors.Is(err, ErrUnknownPurpose) {
		t.Fatalf("marketing: %v", err)
	}
	if Purpose(0).Valid() || Purpose(5).Valid() || GranteeKind(3).Valid() {
		t.Fatal("invalid values reported valid")
	}
}
