package fhirval

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
)

// strictReference is the slow, obviously correct strict check (a walk over
// encoding/json's tokens) that the fast one must agree with.
func strictReference(raw []byte) error {
	if !utf8.Valid(raw) {
		return ErrMalformed
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return ErrMalformed
	}
	if err := refObject(dec, 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrMalformed
	}
	return nil
}

func refObject(dec *json.Decoder, depth int) error {
	if depth > MaxDepth || !dec.More() {
		return ErrMalformed
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ErrMalformed
		}
		key := tok.(string)
		if seen[key] || !fhirKey(key) {
			return ErrMalformed
		}
		seen[key] = true
		if err := refValue(dec, depth, false); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return ErrMalformed
	}
	return nil
}

func refValue(dec *json.Decoder, depth int, inArray bool) error {
	tok, err := dec.Token()
	if err != nil {
		return ErrMalformed
	}
	switch tok {
	case nil:
		if !inArray {
			return ErrMalformed
		}
	case json.Delim('{'):
		return refObject(dec, depth+1)
	case json.Delim('['):
		if depth+1 > MaxDepth || !dec.More() {
			return ErrMalformed
		}
		for dec.More() {
			if err := refValue(dec, depth+1, true); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return ErrMalformed
		}
	}
	return nil
}

// strictSeedList are the seeds of FuzzStrict and FuzzValidate.
var strictSeedList = []string{
	goodObs, `{}`, `{"a":[]}`, `{"a":{}}`, `{"a":null}`, `{"a":[null,1]}`, `{"a":1,"a":2}`, `{"a":1,"\u0061":2}`,
	`{"A":1}`, `{"_a":{"b":"x\"y"}}`, `{"a":"\\"}`, `{"a":1} x`, `{"a":1}{}`, `[1]`, ` {"a":true} `, `{"a":-1.5e3,"b":false}`,
	`{"a":{"b":{"c":[[[{"d":1}]]]}}}`, `{"a_b":1}`, `{"a b":1}`, `{"a":"\u00e9"}`, "{\"a\":\"\xff\"}",
}

func strictSeeds(f *testing.F) {
	for _, s := range strictSeedList {
		f.Add([]byte(s))
	}
}

// FuzzStrict: the fast strict check accepts exactly what the reference accepts.
func FuzzStrict(f *testing.F) {
	strictSeeds(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, fast := strict(raw)
		ref := strictReference(raw)
		if (fast == nil) != (ref == nil) {
			t.Fatalf("%q: fast %v, reference %v", raw, fast, ref)
		}
		if fast != nil && !errors.Is(fast, ErrMalformed) {
			t.Fatalf("%q: %v is not ErrMalformed", raw, fast)
		}
	})
}

// TestStrictAgreesOnSynthea runs the differential check over every Synthea resource.
func TestStrictAgreesOnSynthea(t *testing.T) {
	patients, directory := syntheatest.Bundles(t)
	for _, p := range append(patients, directory...) {
		for _, e := range entries(t, p) {
			_, fast := strict(e.Resource)
			if ref := strictReference(e.Resource); fast != nil || ref != nil {
				t.Fatalf("fast %v, reference %v", fast, ref)
			}
		}
	}
}
