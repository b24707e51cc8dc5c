package fhirval

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
)

var (
	validatorOnce sync.Once
	validator     *Validator
)

func newValidator(tb testing.TB) *Validator {
	validatorOnce.Do(func() {
		var err error
		if validator, err = New(); err != nil {
			tb.Fatal(err)
		}
	})
	return validator
}

const goodObs = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"pulse"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":72,"unit":"/min"}}`

func TestValidate(t *testing.T) {
	v := newValidator(t)
	obs := func(replace ...string) string { return strings.NewReplacer(replace...).Replace(goodObs) }
	cases := []struct {
		name string
		raw  string
		want string // expected type; "" any
		err  error
	}{
		{"good observation", goodObs, "Observation", nil},
		{"any type", goodObs, "", nil},
		{"shared resource", `{"resourceType":"Organization","id":"org1","name":"Clinic"}`, "Organization", nil},
		{"primitive extension", `{"resourceType":"Patient","id":"p1","birthDate":"1970-01-01","_birthDate":{"extension":[{"url":"http://x","valueString":"y"}]}}`, "Patient", nil},
		// FHIR aligns primitive arrays with null; google/fhir/go does not support it.
		{"null alignment in a primitive array", `{"resourceType":"Patient","id":"p1","name":[{"given":["A",null],"_given":[null,{"extension":[{"url":"http://x","valueString":"y"}]}]}]}`, "Patient", ErrSchema},

		{"not JSON", `{"resourceType":`, "", ErrMalformed},
		{"not an object", `["resourceType"]`, "", ErrMalformed},
		{"trailing data", goodObs + ` {}`, "", ErrMalformed},
		{"trailing garbage", goodObs + `x`, "", ErrMalformed},
		{"duplicate key", obs(`"status":"final"`, `"status":"final","status":"amended"`), "", ErrMalformed},
		{"duplicate nested key", obs(`"unit":"/min"`, `"unit":"/min","unit":"bpm"`), "", ErrMalformed},
		{"upper-case key", obs(`"status"`, `"Status"`), "", ErrMalformed},
		{"empty object", obs(`"valueQuantity":{"value":72,"unit":"/min"}`, `"valueQuantity":{}`), "", ErrMalformed},
		{"empty array", obs(`"status"`, `"note":[],"status"`), "", ErrMalformed},
		{"null member", obs(`"status"`, `"issued":null,"status"`), "", ErrMalformed},
		{"invalid UTF-8", obs(`pulse`, "pu\xffse"), "", ErrMalformed},
		{"too deep", `{"resourceType":"Observation","extension":` + strings.Repeat(`[`, 70) + strings.Repeat(`]`, 70) + `}`, "", ErrMalformed},

		{"no resourceType", `{"id":"x"}`, "", ErrUnknownType},
		{"unknown resourceType", `{"resourceType":"Spaceship"}`, "", ErrUnknownType},
		{"R4 type that is not grantable", `{"resourceType":"Bundle","type":"collection"}`, "", ErrUnknownType},
		{"resourceType not a string", `{"resourceType":7}`, "", ErrUnknownType},
		{"wrong type for the endpoint", goodObs, "Condition", ErrWrongType},

		{"observation without status", obs(`"status":"final",`, ``), "", ErrSchema},
		{"observation without code", obs(`"code":{"text":"pulse"},`, ``), "", ErrSchema},
		{"unknown element", obs(`"status"`, `"colour":"blue","status"`), "", ErrSchema},
		{"bad code", obs(`"final"`, `"finished"`), "", ErrSchema},
		{"impossible date", obs(`"status"`, `"effectiveDateTime":"2020-02-30","status"`), "", ErrSchema},
		{"bad id", obs(`"o1"`, `"o 1"`), "", ErrSchema},
		{"id not a string", obs(`"o1"`, `1`), "", ErrSchema},
		{"number out of range", obs(`72`, `1e400`), "", ErrSchema},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := v.Validate([]byte(c.raw), c.want)
			if c.err == nil {
				if err != nil {
					t.Fatal(err)
				}
				if string(r.Raw) != c.raw {
					t.Fatal("raw changed")
				}
				return
			}
			if !errors.Is(err, c.err) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want %v", err, c.err)
			}
		})
	}
}

func TestCheckPatient(t *testing.T) {
	v := newValidator(t)
	cases := []struct {
		name    string
		raw     string
		aliases []string
		err     error
	}{
		{"subject", goodObs, []string{"Patient/p1"}, nil},
		{"versioned reference", strings.Replace(goodObs, `Patient/p1"`, `Patient/p1/_history/2"`, 1), []string{"Patient/p1"}, nil},
		{"bundle alias", strings.Replace(goodObs, `Patient/p1`, `urn:uuid:5f1c`, 1), []string{"Patient/p1", "urn:uuid:5f1c"}, nil},
		{"another patient", goodObs, []string{"Patient/p2"}, ErrCompartment},
		{"another patient, absolute", strings.Replace(goodObs, `Patient/p1`, `https://other.example/fhir/Patient/p9`, 1), []string{"Patient/p1"}, ErrCompartment},
		{"no patient at all", strings.Replace(goodObs, `"subject":{"reference":"Patient/p1"},`, ``, 1), []string{"Patient/p1"}, ErrCompartment},
		{"patient named outside the compartment paths", strings.Replace(goodObs, `"subject":{"reference":"Patient/p1"}`, `"focus":[{"reference":"Patient/p1"}]`, 1), []string{"Patient/p1"}, ErrCompartment},
		{"performer is the patient", strings.Replace(goodObs, `"subject":{"reference":"Patient/p1"}`, `"performer":[{"reference":"Practitioner/d"},{"reference":"Patient/p1"}]`, 1), []string{"Patient/p1"}, nil},
		{"nested path", `{"resourceType":"Claim","status":"active","type":{"text":"x"},"use":"claim","patient":{"reference":"Patient/p1"},"created":"2020-01-01","provider":{"reference":"Organization/o"},"priority":{"text":"normal"},"insurance":[{"sequence":1,"focal":true,"coverage":{"display":"x"}}]}`, []string{"Patient/p1"}, nil},
		{"patient resource, own id", `{"resourceType":"Patient","id":"p1"}`, []string{"Patient/p1"}, nil},
		{"patient resource, other id", `{"resourceType":"Patient","id":"p2"}`, []string{"Patient/p1"}, ErrCompartment},
		{"patient resource, no id", `{"resourceType":"Patient","active":true}`, []string{"Patient/p1"}, ErrCompartment},
		{"shared resource", `{"resourceType":"Practitioner","id":"d"}`, []string{"Patient/p1"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := v.Validate([]byte(c.raw), "")
			if err != nil {
				t.Fatal(err)
			}
			if err := r.CheckPatient(c.aliases...); !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.err)
			}
		})
	}
}

// entry is the part of a Synthea bundle entry the tests need.
type entry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
}

func entries(tb testing.TB, path string) []entry {
	var b struct{ Entry []entry }
	if err := json.Unmarshal(syntheatest.Read(tb, path), &b); err != nil {
		tb.Fatal(err)
	}
	return b.Entry
}

// TestSynthea: every resource of every Synthea bundle validates, and every
// patient-compartment resource belongs to its bundle's patient.
func TestSynthea(t *testing.T) {
	v := newValidator(t)
	patients, directory := syntheatest.Bundles(t)
	total := 0
	for _, path := range append(patients, directory...) {
		es := entries(t, path)
		var aliases []string
		for _, e := range es {
			var head struct{ ResourceType, ID string }
			if err := json.Unmarshal(e.Resource, &head); err != nil {
				t.Fatal(err)
			}
			if head.ResourceType == "Patient" {
				aliases = []string{"Patient/" + head.ID, e.FullURL}
			}
		}
		for i, e := range es {
			r, err := v.Validate(e.Resource, "")
			if err != nil {
				t.Fatalf("%s entry %d: %v", path, i, err)
			}
			if err := r.CheckPatient(aliases...); err != nil {
				t.Fatalf("%s entry %d: %v", path, i, err)
			}
			total++
		}
	}
	t.Logf("%d resources valid", total)
}

// BenchmarkValidateSynthea validates every resource of one patient bundle per iteration.
func BenchmarkValidateSynthea(b *testing.B) {
	v := newValidator(b)
	patients, _ := syntheatest.Bundles(b)
	var all []entry
	for _, p := range patients {
		all = append(all, entries(b, p)...)
	}
	var bytes int64
	for _, e := range all {
		bytes += int64(len(e.Resource))
	}
	b.SetBytes(bytes / int64(len(all)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := v.Validate(all[i%len(all)].Resource, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/resource")
}

// BenchmarkValidateObservation: one small Observation, strict pass included.
func BenchmarkValidateObservation(b *testing.B) {
	v := newValidator(b)
	raw := []byte(goodObs)
	for b.Loop() {
		if _, err := v.Validate(raw, "Observation"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStrict measures the strict-JSON pass alone.
func BenchmarkStrict(b *testing.B) {
	patients, _ := syntheatest.Bundles(b)
	es := entries(b, patients[0])
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := strict(es[i%len(es)].Resource); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPatientReferences reads the compartment references of a resource
// without validating it, at the type's compartment paths only.
func TestPatientReferences(t *testing.T) {
	for _, c := range []struct {
		typ, raw string
		want     []string
	}{
		{"Observation", `{"resourceType":"Observation","subject":{"reference":"Patient/a"},"focus":[{"reference":"Patient/b"}],"performer":[{"reference":"Practitioner/x"},{"reference":"Patient/c"}]}`, []string{"Patient/a", "Practitioner/x", "Patient/c"}},
		{"Procedure", `{"performer":[{"actor":{"reference":"Patient/p"}}],"subject":{"reference":"urn:uuid:u"}}`, []string{"urn:uuid:u", "Patient/p"}},
		{"Observation", `{"subject":{"reference":"Patient/a"},}`, nil},
		{"Organization", `{"partOf":{"reference":"Organization/o"}}`, nil},
	} {
		if got := PatientReferences([]byte(c.raw), c.typ); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("%s %s: %q, want %q", c.typ, c.raw, got, c.want)
		}
	}
}
