package store

import (
	"errors"
	"strings"
	"testing"
)

func TestTagAndIDs(t *testing.T) {
	if _, err := ParseTag("0x" + "30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("tag = r accepted: %v", err)
	}
	tag, err := ParseTag("0x" + "30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000")
	if err != nil || tag.String() != "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000" {
		t.Fatalf("tag = r-1: %v %s", err, tag)
	}
	// Both forms of a tag below 2^252: minimal (JSON-RPC) and zero-padded (CLI, audit).
	short, err1 := ParseTag("0x12")
	padded, err2 := ParseTag("0x" + strings.Repeat("0", 62) + "12")
	if err1 != nil || err2 != nil || short != padded || short[31] != 0x12 {
		t.Fatalf("0x12: %v %v %s %s", err1, err2, short, padded)
	}
	for _, bad := range []string{"", "0x", "0x-12", "12", "0xzz" + "00000000000000000000000000000000000000000000000000000000000000"} {
		if _, err := ParseTag(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTag(%q): %v", bad, err)
		}
	}
	for id, ok := range map[string]bool{"a": true, "e4531916-b162-4f4b-90c2-ce37e132b8d4": true, "A.b-9": true, "": false, "a/b": false, "a b": false, string(make([]byte, 65)): false} {
		if (ValidID(id) == nil) != ok {
			t.Errorf("ValidID(%q) != %v", id, ok)
		}
	}
	if ValidType("Observation") != nil || !errors.Is(ValidType("Bundle"), ErrInvalid) {
		t.Error("ValidType")
	}
}
