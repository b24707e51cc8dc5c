package fhirsearch

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

func us(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMicro()
}

func TestParseDate(t *testing.T) {
	for _, c := range []struct {
		in     string
		lo, hi string // RFC 3339; hi is the last microsecond
		year   int
		prec   Precision
	}{
		{"2020", "2020-01-01T00:00:00Z", "2020-12-31T23:59:59.999999Z", 2020, Year},
		{"2020-02", "2020-02-01T00:00:00Z", "2020-02-29T23:59:59.999999Z", 2020, Month},
		{"2021-02", "2021-02-01T00:00:00Z", "2021-02-28T23:59:59.999999Z", 2021, Month},
		{"2020-12-31", "2020-12-31T00:00:00Z", "2020-12-31T23:59:59.999999Z", 2020, Day},
		{"2020-03-14T10:00", "2020-03-14T10:00:00Z", "2020-03-14T10:00:59.999999Z", 2020, Minute},
		{"2020-03-14T10:00:05Z", "2020-03-14T10:00:05Z", "2020-03-14T10:00:05.999999Z", 2020, Second},
		{"2020-03-14T10:00:05.5Z", "2020-03-14T10:00:05.5Z", "2020-03-14T10:00:05.599999Z", 2020, Fraction},
		{"2020-03-14T10:00:05.123456789Z", "2020-03-14T10:00:05.123456Z", "2020-03-14T10:00:05.123456Z", 2020, Fraction},
		{"2021-01-01T00:30:00+01:00", "2020-12-31T23:30:00Z", "2020-12-31T23:30:00.999999Z", 2021, Second},
		{"2020-03-14T23:30:00-05:00", "2020-03-15T04:30:00Z", "2020-03-15T04:30:00.999999Z", 2020, Second},
		{"0001", "0001-01-01T00:00:00Z", "0001-12-31T23:59:59.999999Z", 1, Year},
		{"9999-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999Z", 9999, Second},
	} {
		d, err := ParseDate(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if d.Lo != us(c.lo) || d.Hi != us(c.hi) || d.Year != c.year || d.Precision != c.prec {
			t.Errorf("%s: %+v, want [%s, %s] %d %d", c.in, d, c.lo, c.hi, c.year, c.prec)
		}
	}
	for _, bad := range []string{
		"", "20", "0000", "2020-00", "2020-13", "2020-02-30", "2021-02-29", "2020-1-1", "2020-01-01T", "2020-01-01T24:00",
		"2020-01-01T10:60", "2020-01-01T10:00:60Z", "2020-01-01T10:00:00+15:00", "2020-01-01T10:00:00+14:30", "2020-01-01T10:00:00+0100",
		"2020-01-01 10:00:00Z", "2020-01-01T10:00:00.Z", "2020-01-01T10:00:00.1234567890Z", " 2020", "2020 ", "+2020", "２０２０",
		"2020-01-01T10Z", "2020-01-01Z",
	} {
		if d, err := ParseDate(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, d)
		}
	}
}

func TestExtract(t *testing.T) {
	raw := []byte(`{"resourceType":"Observation","id":"o1","status":"final",
"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],
"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"},{"system":"http://loinc.org","code":"8302-2"},{"code":"local"}],"text":"Body Height"},
"subject":{"reference":"urn:uuid:p1"},"encounter":{"reference":"Encounter/e1/_history/2"},
"performer":[{"reference":"Practitioner/pr1"},{"reference":"https://elsewhere/fhir/Practitioner/pr2"},{"reference":"#contained"},{"display":"no reference"}],
"effectivePeriod":{"start":"2020-03-14","end":"2020-03-15T10:00:00Z"}}`)
	got := Extract("Observation", raw)
	// patient reads subject's element: its values are subject's.
	if p, _ := Lookup("Observation", "patient"); p.Index() != "subject" {
		t.Errorf("Observation's patient is stored as %s", p.Index())
	}
	if p, _ := Lookup("Immunization", "patient"); p.Index() != "patient" {
		t.Errorf("Immunization's patient is stored as %s", p.Index())
	}
	want := []store.IndexValue{
		{Param: "subject", Value: "p1"},
		{Param: "status", Value: "final"},
		{Param: "category", System: "http://terminology.hl7.org/CodeSystem/observation-category", Value: "vital-signs"},
		{Param: "code", System: "http://loinc.org", Value: "8302-2"},
		{Param: "code", Value: "local"},
		{Param: "date", Lo: us("2020-03-14T00:00:00Z"), Hi: us("2020-03-15T10:00:00.999999Z"), YearLo: 2020, YearHi: 2020},
		{Param: "encounter", System: "Encounter", Value: "e1"},
		{Param: "performer", System: "Practitioner", Value: "pr1"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
	open := Extract("Encounter", []byte(`{"resourceType":"Encounter","period":{"end":"2019"}}`))
	if len(open) != 1 || open[0].Lo != math.MinInt64 || open[0].YearLo != store.YearOpenLo || open[0].YearHi != 2019 {
		t.Fatalf("open period: %+v", open)
	}
	for _, raw := range []string{``, `[]`, `{"code":5}`, `{"status":["final"]}`, `{"effectivePeriod":{}}`, `{"effectiveDateTime":"yesterday"}`, `null`} {
		for _, v := range Extract("Observation", []byte(raw)) {
			if v.Param != "status" || v.Value != "final" {
				t.Errorf("%s: %+v", raw, v)
			}
		}
	}
	if v := Extract("Organization", []byte(`{"resourceType":"Organization","name":"x"}`)); v != nil {
		t.Errorf("a type without parameters: %+v", v)
	}
}

func TestTable(t *testing.T) {
	for _, typ := range Types() {
		if _, err := access.NewScope(typ); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
		names := map[string]bool{}
		for _, p := range Params(typ) {
			if names[p.Name] || p.Name == store.IDParam || p.Name == store.UpdatedParam || strings.ContainsAny(p.Name, ":.,") {
				t.Errorf("%s: parameter %q", typ, p.Name)
			}
			names[p.Name] = true
			if (p.Kind == store.Reference) != (len(p.Targets) > 0) || len(p.Paths) == 0 {
				t.Errorf("%s.%s: %+v", typ, p.Name, p)
			}
			for _, target := range p.Targets {
				if _, err := access.NewScope(target); err != nil && target != "Group" && target != "RelatedPerson" {
					t.Errorf("%s.%s: target %s: %v", typ, p.Name, target, err)
				}
			}
		}
		if names["subject"] && !names["patient"] {
			t.Errorf("%s has subject but not patient", typ)
		}
	}
}

func TestParse(t *testing.T) {
	a := func(kv ...string) []Arg {
		var out []Arg
		for i := 0; i < len(kv); i += 2 {
			out = append(out, Arg{kv[i], kv[i+1]})
		}
		return out
	}
	const base = "https://gw.example/fhir"
	t.Run("search", func(t *testing.T) {
		r, err := Parse(Search, "Observation", a(
			"code", `http://loinc.org|8302-2,|free,urn:x|,a\,b`,
			"date", "ge2020-03-14", "date", "lt2021",
			"subject:Patient", "p1", "encounter", base+"/Encounter/e1", "patient", "urn:uuid:p1",
			"_id", "o1,o2", "_sort", "-date", "_count", "5000", "_include", "Observation:encounter",
			"_revinclude", "DiagnosticReport:result", "_elements", "status,code", "_summary", "count",
		), base, false)
		if err != nil {
			t.Fatal(err)
		}
		codes := r.Criteria[0].Values
		if len(codes) != 4 || codes[0].Match != (store.Match{System: "http://loinc.org", Value: "8302-2"}) || codes[1].Match != (store.Match{Value: "free"}) ||
			codes[2].Match != (store.Match{System: "urn:x", AnyValue: true}) || codes[3].Match != (store.Match{Value: "a,b", AnySystem: true}) {
			t.Errorf("codes: %+v", codes)
		}
		if d := r.Criteria[1].Values[0]; d.Match.Prefix != store.Ge || d.Precision != Day || d.Match.Lo != us("2020-03-14T00:00:00Z") {
			t.Errorf("date: %+v", d)
		}
		if d := r.Criteria[2].Values[0]; d.Match.Prefix != store.Lt || d.Precision != Year || d.Match.Year != 2021 {
			t.Errorf("date: %+v", d)
		}
		if c := r.Criteria[3]; c.Target != "Patient" || c.Values[0].Match != (store.Match{System: "Patient", Value: "p1"}) {
			t.Errorf("subject: %+v", c)
		}
		if m := r.Criteria[4].Values[0].Match; m != (store.Match{System: "Encounter", Value: "e1"}) {
			t.Errorf("absolute reference under the base: %+v", m)
		}
		if m := r.Criteria[5].Values[0].Match; m != (store.Match{Value: "p1"}) {
			t.Errorf("urn:uuid: %+v", m)
		}
		if r.Sort != (store.Sort{Key: store.SortDate, Param: "date", Desc: true}) || r.Count != store.MaxCount || !r.Summary ||
			!slices.Equal(r.Elements, []string{"status", "code"}) || len(r.Applied) != 13 {
			t.Errorf("request: %+v", r)
		}
		if len(r.Include) != 1 || r.Include[0].Source != "Observation" || !slices.Equal(r.Include[0].Target, []string{"Encounter"}) ||
			len(r.RevInclude) != 1 || r.RevInclude[0].Source != "DiagnosticReport" || !slices.Equal(r.RevInclude[0].Target, []string{"Observation"}) {
			t.Errorf("includes: %+v %+v", r.Include, r.RevInclude)
		}
	})
	for _, c := range []struct {
		name  string
		i     Interaction
		typ   string
		args  []Arg
		want  error
		lenOK bool // lenient handling ignores it
	}{
		{"unknown parameter", Search, "Observation", a("name", "x"), ErrUnsupported, true},
		{"another type's parameter", Search, "Observation", a("vaccine-code", "x"), ErrUnsupported, true},
		{"chained", Search, "Observation", a("subject.name", "x"), ErrUnsupported, true},
		{"_has", Search, "Observation", a("_has:Observation:patient:code", "x"), ErrUnsupported, true},
		{"token modifier", Search, "Observation", a("code:text", "x"), ErrUnsupported, true},
		{"modifier on _id", Search, "Observation", a("_id:not", "x"), ErrUnsupported, true},
		{"reference to a type it never names", Search, "Observation", a("encounter:Patient", "x"), ErrUnsupported, true},
		{"prefix not supported", Search, "Observation", a("date", "ap2020"), ErrUnsupported, true},
		{"two sort keys", Search, "Observation", a("_sort", "date,_id"), ErrUnsupported, true},
		{"sort by a token", Search, "Observation", a("_sort", "code"), ErrUnsupported, true},
		{"_summary=true", Search, "Observation", a("_summary", "true"), ErrUnsupported, true},
		{"_include of an unknown reference", Search, "Observation", a("_include", "Observation:focus"), ErrUnsupported, true},
		{"_include:iterate", Search, "Observation", a("_include:iterate", "Observation:encounter"), ErrUnsupported, true},
		{"_total", Search, "Observation", a("_total", "accurate"), ErrUnsupported, true},
		{"a read takes no parameter", Read, "", a("_count", "1"), ErrUnsupported, true},
		{"$everything takes no search parameter", Everything, "", a("code", "x"), ErrUnsupported, true},
		{"empty value", Search, "Observation", a("code", ""), ErrInvalid, false},
		{"bad token", Search, "Observation", a("code", "a|b|c"), ErrInvalid, false},
		{"lone bar", Search, "Observation", a("code", "|"), ErrInvalid, false},
		{"bad date", Search, "Observation", a("date", "2020-13"), ErrInvalid, false},
		{"unknown prefix", Search, "Observation", a("date", "xx2020"), ErrInvalid, false},
		{"bad id", Search, "Observation", a("_id", "a b"), ErrInvalid, false},
		{"bad reference", Search, "Observation", a("subject", "Patient/a b"), ErrInvalid, false},
		{"another server's reference", Search, "Observation", a("subject", "https://other/fhir/Patient/p1"), ErrInvalid, false},
		{"reference of a type it never names", Search, "Observation", a("encounter", "Patient/p1"), ErrInvalid, false},
		{"type modifier disagrees", Search, "Observation", a("subject:Patient", "Group/g1"), ErrInvalid, false},
		{"negative count", Search, "Observation", a("_count", "-1"), ErrInvalid, false},
		{"count with a sign", Search, "Observation", a("_count", "+1"), ErrInvalid, false},
		{"count twice", Search, "Observation", a("_count", "1", "_count", "2"), ErrInvalid, false},
		{"_include of another type", Search, "Observation", a("_include", "Encounter:participant"), ErrInvalid, false},
		{"_revinclude that never points here", Search, "Observation", a("_revinclude", "Encounter:participant"), ErrInvalid, false},
		{"_include target not referred to", Search, "Observation", a("_include", "Observation:encounter:Patient"), ErrInvalid, false},
		{"_elements of a path", Search, "Observation", a("_elements", "code.coding"), ErrInvalid, false},
		{"bad _type", Everything, "", a("_type", "Observation,Spaceship"), ErrInvalid, false},
		{"bad _since", Everything, "", a("_since", "yesterday"), ErrInvalid, false},
		{"too long", Search, "Observation", a("code", strings.Repeat("x", MaxValue+1)), ErrInvalid, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.i, c.typ, c.args, base, false)
			if !errors.Is(err, c.want) || errors.Is(err, ErrInvalid) == errors.Is(err, ErrUnsupported) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			r, err := Parse(c.i, c.typ, c.args, base, true)
			if c.lenOK != (err == nil) {
				t.Fatalf("lenient: %+v, %v", r, err)
			}
			if err == nil && (len(r.Ignored) != len(c.args) || len(r.Applied) != 0) {
				t.Fatalf("lenient: ignored %v, applied %v", r.Ignored, r.Applied)
			}
		})
	}
	if _, err := Parse(Search, "Observation", make([]Arg, MaxArgs+1), base, true); !errors.Is(err, ErrInvalid) {
		t.Errorf("too many parameters: %v", err)
	}
	r, err := Parse(Everything, "", a("_since", "2024-01-01T00:00:00Z", "_type", "Observation,Patient,Observation", "_count", "0"), base, false)
	if err != nil || r.Since.Lo != us("2024-01-01T00:00:00Z") || !slices.Equal(r.Types, []string{"Observation", "Patient"}) || r.Count != 0 {
		t.Errorf("everything: %+v %v", r, err)
	}
}

func TestParseReference(t *testing.T) {
	for _, c := range []struct{ in, typ, id string }{
		{"Patient/p1", "Patient", "p1"}, {"Patient/p1/_history/3", "Patient", "p1"}, {"urn:uuid:1f456f0a-acb1-4728-82af-01ca57083c7b", "", "1f456f0a-acb1-4728-82af-01ca57083c7b"},
	} {
		if typ, id, ok := ParseReference(c.in); !ok || typ != c.typ || id != c.id {
			t.Errorf("%s: %s %s %v", c.in, typ, id, ok)
		}
	}
	for _, bad := range []string{"", "p1", "patient/p1", "Patient/", "/p1", "Patient/p1/_history", "Patient/p 1", "urn:uuid:", "urn:oid:1.2", "#c1", "https://x/Patient/p1", "Patient/p1/extra/1"} {
		if typ, id, ok := ParseReference(bad); ok {
			t.Errorf("%q read as %s/%s", bad, typ, id)
		}
	}
}
