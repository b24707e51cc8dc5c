// Package fhirval owns what the gateway accepts as a FHIR R4 resource. A
// resource is accepted only if it is strict JSON (well-formed UTF-8, one
// object, no duplicate keys, no trailing data, FHIR-style lower-camel keys),
// parses and validates as R4 with github.com/google/fhir/go (unknown
// elements, missing required elements, bad codes and dates are errors), is
// of a type the access package can grant, is of the type the caller expects,
// and — for types in the patient compartment — references its patient.
//
// Validation never changes the bytes: the caller stores the raw JSON it
// received. Error messages name the element path and the rule broken, never
// the values, so they can be logged.
package fhirval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"github.com/medrec-zk/medrec/access"
)

// Errors. Every error Validate and CheckPatient return wraps ErrInvalid and
// exactly one of the others.
var (
	ErrInvalid = errors.New("invalid FHIR resource")

	ErrMalformed   = fmt.Errorf("%w: not strict JSON", ErrInvalid)
	ErrUnknownType = fmt.Errorf("%w: not a grantable FHIR R4 resource type", ErrInvalid)
	ErrWrongType   = fmt.Errorf("%w: wrong resource type", ErrInvalid)
	ErrSchema      = fmt.Errorf("%w: does not validate as FHIR R4", ErrInvalid)
	ErrCompartment = fmt.Errorf("%w: does not belong to the patient", ErrInvalid)
)

// Limits.
const (
	MaxDepth = 64 // nesting of JSON objects and arrays
)

// Validator validates resources. It is safe for concurrent use.
type Validator struct {
	um *jsonformat.Unmarshaller
}

// New returns a Validator for FHIR R4 (dates without a zone are read as UTC).
func New() (*Validator, error) {
	um, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		return nil, fmt.Errorf("fhirval: %w", err)
	}
	um.MaxNestingDepth = MaxDepth
	return &Validator{um: um}, nil
}

// Resource is what validation learned about a resource.
type Resource struct {
	Type string
	ID   string // "" if the resource has no id
	Raw  []byte // the input, unchanged
	// PatientRefs are the reference strings found at the type's
	// patient-compartment paths (nil for shared resources).
	PatientRefs []string
}

// Shared reports whether the resource is outside every patient compartment.
func (r *Resource) Shared() bool { return !InPatientCompartment(r.Type) }

// Validate checks raw as a resource of type want ("" accepts any grantable
// type).
func (v *Validator) Validate(raw []byte, want string) (*Resource, error) {
	top, err := strict(raw)
	if err != nil {
		return nil, err
	}
	r := &Resource{Raw: raw}
	if err := unquote(top["resourceType"], &r.Type); err != nil || r.Type == "" {
		return nil, fmt.Errorf("%w: resourceType missing or not a string", ErrUnknownType)
	}
	if _, err := access.NewScope(r.Type); err != nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, r.Type)
	}
	if want != "" && r.Type != want {
		return nil, fmt.Errorf("%w: got %s, want %s", ErrWrongType, r.Type, want)
	}
	if id, ok := top["id"]; ok {
		if err := unquote(id, &r.ID); err != nil {
			return nil, fmt.Errorf("%w: %s.id is not a string", ErrSchema, r.Type)
		}
	}
	if _, err := v.um.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrSchema, describe(err))
	}
	for _, path := range patientPaths[r.Type] {
		r.PatientRefs = append(r.PatientRefs, references(top, strings.Split(path, "."))...)
	}
	return r, nil
}

// describe flattens google/fhir/go's error (a list of path: rule messages;
// their diagnostics, which may quote values, are not part of Error()).
func describe(err error) string {
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500] + "…"
	}
	return msg
}

// CheckPatient checks that a patient-compartment resource belongs to the
// patient known by any of aliases: "Patient/<id>" and, inside a bundle, the
// patient entry's fullUrl ("urn:uuid:…"). At least one compartment reference
// must name the patient, and none may name another patient. For a Patient
// resource, its own id must be the patient's. Shared resources always pass.
func (r *Resource) CheckPatient(aliases ...string) error {
	if r.Shared() {
		return nil
	}
	is := func(ref string) bool {
		for _, a := range aliases {
			if ref == a || strings.HasPrefix(ref, a+"/_history/") {
				return true
			}
		}
		return false
	}
	if r.Type == "Patient" {
		if r.ID == "" || !is("Patient/"+r.ID) {
			return fmt.Errorf("%w: a Patient resource's id must be the patient's", ErrCompartment)
		}
		return nil
	}
	found := false
	for _, ref := range r.PatientRefs {
		switch {
		case is(ref):
			found = true
		case isPatientRef(ref):
			return fmt.Errorf("%w: %s refers to another patient", ErrCompartment, r.Type)
		}
	}
	if !found {
		return fmt.Errorf("%w: %s must refer to its patient in %s", ErrCompartment, r.Type, strings.Join(patientPaths[r.Type], ", "))
	}
	return nil
}

// PatientReferences returns the reference strings at typ's
// patient-compartment paths in raw, a JSON object, without validating it
// (nil if raw is not a JSON object): what a bulk import reads to tell whose
// a resource is before it validates the resource with the patient's others.
func PatientReferences(raw []byte, typ string) []string {
	var top map[string]json.RawMessage
	if json.Unmarshal(raw, &top) != nil {
		return nil
	}
	var out []string
	for _, path := range patientPaths[typ] {
		out = append(out, references(top, strings.Split(path, "."))...)
	}
	return out
}

// isPatientRef reports whether a reference names a Patient explicitly
// (relative "Patient/x" or absolute ".../Patient/x").
func isPatientRef(ref string) bool {
	return strings.HasPrefix(ref, "Patient/") || strings.Contains(ref, "/Patient/")
}

// references collects the "reference" strings of the Reference elements at
// path under obj, descending into arrays.
func references(obj map[string]json.RawMessage, path []string) []string {
	raw, ok := obj[path[0]]
	if !ok {
		return nil
	}
	var elems []json.RawMessage
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		if json.Unmarshal(raw, &elems) != nil {
			return nil
		}
	} else {
		elems = []json.RawMessage{raw}
	}
	var out []string
	for _, e := range elems {
		var m map[string]json.RawMessage
		if json.Unmarshal(e, &m) != nil {
			continue
		}
		if len(path) > 1 {
			out = append(out, references(m, path[1:])...)
			continue
		}
		var ref string
		if unquote(m["reference"], &ref) == nil && ref != "" {
			out = append(out, ref)
		}
	}
	return out
}

func unquote(raw json.RawMessage, s *string) error {
	if raw == nil {
		return errors.New("absent")
	}
	return json.Unmarshal(raw, s)
}

// strict checks that raw is one JSON object in valid UTF-8 with no
// duplicate keys, no keys FHIR would not write, no empty objects or arrays,
// no null member values, no nesting deeper than MaxDepth and nothing after
// it, and returns its top-level members.
func strict(raw []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(raw) {
		return nil, fmt.Errorf("%w: not UTF-8", ErrMalformed)
	}
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	// Syntax, and trailing data, as encoding/json sees them.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) && strings.Contains(syn.Error(), "after top-level value") {
			return nil, fmt.Errorf("%w: data after the resource", ErrMalformed)
		}
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := scan(raw); err != nil {
		return nil, err
	}
	return top, nil
}

// frame is one open object or array during scan.
type frame struct {
	object    bool
	expectKey bool
	key       string              // the member being read (objects)
	keys      []string            // keys seen, while few
	keySet    map[string]struct{} // keys seen, once many
}

func (f *frame) seen(k string) bool {
	if f.keySet != nil {
		_, dup := f.keySet[k]
		f.keySet[k] = struct{}{}
		return dup
	}
	for _, s := range f.keys {
		if s == k {
			return true
		}
	}
	if f.keys = append(f.keys, k); len(f.keys) > 16 {
		f.keySet = make(map[string]struct{}, 32)
		for _, s := range f.keys {
			f.keySet[s] = struct{}{}
		}
		f.keys = nil
	}
	return false
}

// scan checks the structural rules of strict on syntactically valid JSON,
// in one pass over the bytes.
func scan(raw []byte) error {
	var stack []frame
	where := func() string {
		var b strings.Builder
		for _, f := range stack {
			if f.object {
				b.WriteString("." + f.key)
			} else {
				b.WriteString("[]")
			}
		}
		return b.String()
	}
	// nextIs reports whether the next non-space byte after i is c.
	nextIs := func(i int, c byte) bool {
		for i++; i < len(raw); i++ {
			switch raw[i] {
			case ' ', '\t', '\r', '\n':
				continue
			}
			return raw[i] == c
		}
		return false
	}
	for i := 0; i < len(raw); {
		switch c := raw[i]; c {
		case ' ', '\t', '\r', '\n', ':':
			i++
		case ',':
			if top := len(stack) - 1; top >= 0 && stack[top].object {
				stack[top].expectKey = true
			}
			i++
		case '{', '[':
			if len(stack) >= MaxDepth {
				return fmt.Errorf("%w: nested deeper than %d at %s", ErrMalformed, MaxDepth, where())
			}
			if nextIs(i, c+2) { // '}' is '{'+2, ']' is '['+2
				return fmt.Errorf("%w: empty %s at %s (FHIR has no empty elements)", ErrMalformed, map[byte]string{'{': "object", '[': "array"}[c], where())
			}
			stack = append(stack, frame{object: c == '{', expectKey: c == '{'})
			i++
		case '}', ']':
			stack = stack[:len(stack)-1]
			i++
		case '"':
			j := i + 1
			for raw[j] != '"' {
				if raw[j] == '\\' {
					j++
				}
				j++
			}
			if top := len(stack) - 1; top >= 0 && stack[top].object && stack[top].expectKey {
				key := string(raw[i+1 : j])
				if bytes.IndexByte(raw[i+1:j], '\\') >= 0 {
					json.Unmarshal(raw[i:j+1], &key) // valid JSON: cannot fail
				}
				f := &stack[top]
				f.expectKey, f.key = false, key
				if f.seen(key) {
					return fmt.Errorf("%w: duplicate key at %s", ErrMalformed, where())
				}
				if !fhirKey(key) {
					return fmt.Errorf("%w: %q is not a FHIR element name (at %s)", ErrMalformed, key, where())
				}
			}
			i = j + 1
		case 'n':
			if top := len(stack) - 1; top >= 0 && stack[top].object {
				return fmt.Errorf("%w: null at %s", ErrMalformed, where())
			}
			i += 4
		default: // number, true, false
			for i < len(raw) && !endOfLiteral(raw[i]) {
				i++
			}
		}
	}
	return nil
}

func endOfLiteral(c byte) bool {
	switch c {
	case ',', ']', '}', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// fhirKey: FHIR JSON names are lower camel case, "_" + name for a
// primitive's extensions.
func fhirKey(k string) bool {
	k = strings.TrimPrefix(k, "_")
	if k == "" || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
