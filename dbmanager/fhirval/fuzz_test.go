package fhirval

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/access"
)

// FuzzValidate: every resource the gateway stores passes Validate, from the
// admin API's bodies and bundle entries. It never panics and never changes
// its input. A refusal wraps ErrInvalid and exactly one of the specific
// errors (the gateway answers 400 with it); an accepted resource is strict
// JSON, of a grantable type, of the type asked for, and its Raw is the input.
// CheckPatient on it keeps to the same errors.
func FuzzValidate(f *testing.F) {
	for _, s := range append(strictSeedList,
		`{"resourceType":"Patient","id":"p1","name":[{"family":"Hoeger","given":["Buster"]}],"birthDate":"1961-04-02","gender":"male"}`,
		`{"resourceType":"Patient","id":"p1","birthDate":"1961-02-30"}`,
		`{"resourceType":"Patient","id":"p1","gender":"robot"}`,
		`{"resourceType":"Patient","id":"p 1"}`,
		`{"resourceType":"Patient","id":7}`,
		`{"resourceType":"Organization","id":"org1","name":"Clinic"}`,
		`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p2"},"code":{"text":"x"}}`,
		`{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1/_history/2"},"code":{"text":"x"}}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"performer":[{"reference":"http://elsewhere/fhir/Patient/p9"}]}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":[{"reference":"Patient/p1"}]}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1e400}}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":123456789012345678901234567890}}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020-13-01T25:61:00Z"}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"contained":[{"resourceType":"Patient","id":"x"}]}`,
		`{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"\ud800"},"subject":{"reference":"Patient/p1"}}`,
		`{"resourceType":"Bundle","type":"collection","entry":[{"resource":`+goodObs+`}]}`,
		`{"resourceType":"Spaceship","id":"s1"}`,
		`{"resourceType":["Patient"],"id":"p1"}`,
		`{"resourceType":"Observation","id":"o1","extension":`+strings.Repeat(`[`, 70)+strings.Repeat(`]`, 70)+`}`,
	) {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(goodObs), "Observation")
	f.Add([]byte(goodObs), "Patient")
	f.Add([]byte(goodObs), "Spaceship")
	v := newValidator(f)
	specific := []error{ErrMalformed, ErrUnknownType, ErrWrongType, ErrSchema, ErrCompartment}
	oneOf := func(t *testing.T, what string, err error) {
		t.Helper()
		n := 0
		for _, e := range specific {
			if errors.Is(err, e) {
				n++
			}
		}
		if !errors.Is(err, ErrInvalid) || n != 1 {
			t.Fatalf("%s: %v wraps %d of the specific errors (ErrInvalid: %v)", what, err, n, errors.Is(err, ErrInvalid))
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, want string) {
		in := bytes.Clone(raw)
		r, err := v.Validate(raw, want)
		if !bytes.Equal(in, raw) {
			t.Fatal("Validate changed its input")
		}
		if err != nil {
			oneOf(t, "Validate", err)
			if r != nil {
				t.Fatal("refused, yet returned a resource")
			}
			return
		}
		if _, serr := strict(raw); serr != nil {
			t.Fatalf("accepted JSON that is not strict: %v", serr)
		}
		if _, err := access.NewScope(r.Type); err != nil || want != "" && r.Type != want {
			t.Fatalf("accepted a %q (want %q)", r.Type, want)
		}
		if !bytes.Equal(r.Raw, raw) {
			t.Fatal("Raw is not the input")
		}
		for _, alias := range [][]string{{"Patient/p1"}, {"Patient/" + r.ID, "urn:uuid:x"}, nil} {
			if err := r.CheckPatient(alias...); err != nil {
				oneOf(t, "CheckPatient", err)
				if !errors.Is(err, ErrCompartment) || r.Shared() {
					t.Fatalf("CheckPatient: %v", err)
				}
			}
		}
	})
}
