package fhirsearch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// FuzzParseDate: a date is accepted only in FHIR's shape (the regular
// expression's, with a real month, day, time and zone), and then covers a
// non-empty range that starts where Go's own parser puts it, ends where its
// precision says, and carries the year as written.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2020", "2020-02", "2020-02-29", "2021-02-29", "2020-03-14T10:00", "2020-03-14T10:00:05Z",
		"2020-03-14T10:00:05.123+05:30", "2020-03-14T10:00:05.1234567-14:00", "0000", "9999-12-31T23:59:59.999999+14:00", "2020-13", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDate(s)
		if err != nil {
			return
		}
		if !dateRE.MatchString(s) || d.Lo > d.Hi || strconv.Itoa(d.Year) != strings.TrimLeft(s[:4], "0") {
			t.Fatalf("%q: %+v", s, d)
		}
		layout := map[Precision]string{Year: "2006", Month: "2006-01", Day: "2006-01-02", Minute: "2006-01-02T15:04", Second: "2006-01-02T15:04:05", Fraction: "2006-01-02T15:04:05.999999999"}[d.Precision]
		body, zone := s, ""
		if d.Precision >= Minute {
			if i := strings.LastIndexAny(s, "Z+-"); i > 10 {
				body, zone = s[:i], s[i:]
			}
		}
		want, err := time.Parse(layout, body)
		if err != nil {
			t.Fatalf("%q accepted, but Go reads %q as %v", s, body, err)
		}
		if zone != "" && zone != "Z" {
			z, err := time.Parse("-07:00", zone)
			if err != nil {
				t.Fatalf("%q: zone %q: %v", s, zone, err)
			}
			_, off := z.Zone()
			want = want.Add(-time.Duration(off) * time.Second)
		}
		if d.Lo != want.Truncate(time.Microsecond).UnixMicro() {
			t.Fatalf("%q starts at %d, Go says %v", s, d.Lo, want)
		}
		next := map[Precision]func(time.Time) time.Time{
			Year: func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }, Month: func(t time.Time) time.Time { return t.AddDate(0, 1, 0) },
			Day: func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }, Minute: func(t time.Time) time.Time { return t.Add(time.Minute) },
			Second: func(t time.Time) time.Time { return t.Add(time.Second) },
		}
		if n, ok := next[d.Precision]; ok && d.Hi != n(time.UnixMicro(d.Lo).UTC()).UnixMicro()-1 {
			t.Fatalf("%q ends at %d", s, d.Hi)
		}
	})
}

// FuzzParse: any query string, under either handling: an error wraps
// exactly one of ErrInvalid and ErrUnsupported, lenient handling never
// fails with ErrUnsupported, every parameter is either applied or ignored,
// and the parameters applied, parsed again strictly, give the same request.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"code=http://loinc.org|8302-2&date=ge2020&_sort=-date&_count=5", "subject:Patient=p1&_include=Observation:encounter",
		"_revinclude=DiagnosticReport:result&_elements=status", "code=a\\,b|c", "name=x&status=final", "_summary=count&_summary=count",
		"date=ap2020", "_id=a,b,c", "encounter=https://gw/fhir/Encounter/e1", "_lastUpdated=lt2024-01-01T00:00:00Z", "_cursor=x&_cursor=y",
	} {
		for _, i := range []Interaction{Search, Everything, History, Read} {
			f.Add(uint8(i), s, false)
			f.Add(uint8(i), s, true)
		}
	}
	f.Fuzz(func(t *testing.T, i uint8, raw string, lenient bool) {
		in := Interaction(i%4 + 1)
		var args []Arg
		for _, kv := range strings.Split(raw, "&") {
			k, v, _ := strings.Cut(kv, "=")
			k, _ = url.QueryUnescape(k)
			v, _ = url.QueryUnescape(v)
			args = append(args, Arg{k, v})
		}
		typ := ""
		if in == Search {
			typ = "Observation"
		}
		r, err := Parse(in, typ, args, "https://gw/fhir", lenient)
		if err != nil {
			if errors.Is(err, ErrInvalid) == errors.Is(err, ErrUnsupported) || lenient && errors.Is(err, ErrUnsupported) {
				t.Fatalf("%q: %v", raw, err)
			}
			return
		}
		if len(r.Applied)+len(r.Ignored) != len(args) || !lenient && r.Ignored != nil || r.Count > store.MaxCount {
			t.Fatalf("%q: %+v", raw, r)
		}
		again, err := Parse(in, typ, r.Applied, "https://gw/fhir", false)
		if err != nil {
			t.Fatalf("%q: the applied %v fail strictly: %v", raw, r.Applied, err)
		}
		again.Ignored = r.Ignored
		if !reflect.DeepEqual(again, r) {
			t.Fatalf("%q: %+v, then %+v", raw, r, again)
		}
		for _, c := range r.Criteria {
			if len(c.Values) == 0 || len(c.Values) > store.MaxMatches {
				t.Fatalf("%q: criterion %s with %d values", raw, c.Param.Name, len(c.Values))
			}
		}
	})
}

// FuzzExtract: whatever the JSON, extraction does not fail, and every value
// is of a parameter of the type, of the parameter's kind: a reference to a
// type it may name, a non-empty code, a date range that is not empty.
func FuzzExtract(f *testing.F) {
	for _, s := range []string{
		`{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"s","code":"c"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2020"}`,
		`{"effectivePeriod":{"start":"2020","end":"2019"}}`, `{"subject":[{"reference":"urn:uuid:x"}]}`, `{"category":[[{"code":"x"}]]}`,
		`{"encounter":{"reference":"Patient/p1"}}`, `{"performer":{"reference":"Practitioner/a/_history/1"}}`, `{"code":""}`,
	} {
		f.Add("Observation", []byte(s))
	}
	f.Add("Encounter", []byte(`{"participant":[{"individual":{"reference":"urn:uuid:pr"}}],"period":{"start":"2020-01-01T00:00:00Z"}}`))
	f.Fuzz(func(t *testing.T, typ string, raw []byte) {
		// The members Extract reads are the members encoding/json reads.
		var std map[string]json.RawMessage
		if json.Unmarshal(raw, &std) == nil && std != nil {
			want := map[string]bool{}
			for k := range std {
				want[k] = true
			}
			got, ok := topMembers(raw, want)
			if !ok || len(got) != len(std) {
				t.Fatalf("%q: members %q, %v", raw, got, ok)
			}
			for k, v := range std {
				var a, b bytes.Buffer
				if json.Compact(&a, v) != nil || json.Compact(&b, got[k]) != nil || a.String() != b.String() {
					t.Fatalf("%q: member %q is %q, not %q", raw, k, got[k], v)
				}
			}
		}
		for _, v := range Extract(typ, raw) {
			p, ok := Lookup(typ, v.Param)
			bad := !ok
			switch {
			case bad:
			case p.Kind == store.Token:
				bad = v.Value == ""
			case p.Kind == store.Reference:
				bad = store.ValidID(v.Value) != nil || v.System != "" && !typeName(v.System)
			case p.Kind == store.Date:
				// A period may run backwards; a value may not.
				bad = v.YearLo > v.YearHi && v.Lo <= v.Hi
				// FHIR years are four digits: the year 220 is written 0220.
				if _, err := ParseDate(fmt.Sprintf("%04d", v.YearLo)); err != nil && v.YearLo != store.YearOpenLo {
					bad = true
				}
			}
			if bad {
				t.Fatalf("%s %q: %+v", typ, raw, v)
			}
		}
	})
}
