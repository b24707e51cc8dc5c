package storetest

// Search: the searchable values a store keeps beside each current version
// (fhirsearch.Extract: here Observation's code, status, category, date,
// subject and encounter, Encounter's participant and service-provider) and
// the queries over them.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// observation is an Observation of patient p with the given JSON members.
func observation(id, members string) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,%s}`, id, members)
}

func write(t *testing.T, s store.Store, patient string, at time.Time, ws ...store.Write) {
	t.Helper()
	for i := range ws {
		if ws[i].Mode == 0 {
			ws[i].Mode = store.Upsert
		}
	}
	ok(s.Apply(context.Background(), store.Batch{PatientID: patient, CreatePatient: patient != "", Writes: ws, Time: at}))(t)
}

func obsWrite(id, members string) store.Write {
	return store.Write{Type: "Observation", ID: id, Raw: observation(id, members)}
}

// search returns the ids a query finds on its first page, checking Total.
func search(t *testing.T, s store.Store, patient string, q store.Query) []string {
	t.Helper()
	if q.Count == 0 {
		q.Count = store.MaxCount
	}
	page := ok(s.Search(context.Background(), patient, q))(t)
	var out []string
	for _, r := range page.Resources {
		out = append(out, r.ID)
	}
	if page.Total != len(out) || page.Next != "" {
		t.Fatalf("%+v: total %d, next %q for %v", q.Criteria, page.Total, page.Next, out)
	}
	return out
}

func tok(system, value string) store.Match { return store.Match{System: system, Value: value} }

func testSearchCriteria(t *testing.T, s store.Store) {
	const loinc = "http://loinc.org"
	vital := `"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}]`
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	write(t, s, "p1", t0,
		obsWrite("o1", `"status":"final",`+vital+`,"code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1"},"encounter":{"reference":"urn:uuid:e1"}`),
		obsWrite("o2", `"status":"preliminary",`+vital+`,"code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}]},"subject":{"reference":"urn:uuid:p1"},"encounter":{"reference":"Encounter/e2"}`),
		obsWrite("o3", `"status":"final","category":[{"coding":[{"code":"laboratory"}]}],"code":{"coding":[{"system":"urn:other","code":"8302-2"}]},"subject":{"reference":"Patient/p1"}`))
	write(t, s, "p1", t0.Add(time.Hour),
		obsWrite("o4", `"status":"final","code":{"coding":[{"code":"free"},{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p1/_history/2"}`))
	write(t, s, "p2", t0, obsWrite("x1", `"status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8302-2"}]},"subject":{"reference":"Patient/p2"}`))

	code := func(ms ...store.Match) store.Criterion {
		return store.Criterion{Param: "code", Kind: store.Token, Any: ms}
	}
	status := func(v string) store.Criterion {
		return store.Criterion{Param: "status", Kind: store.Token, Any: []store.Match{{Value: v, AnySystem: true}}}
	}
	ref := func(param string, ms ...store.Match) store.Criterion {
		return store.Criterion{Param: param, Kind: store.Reference, Any: ms}
	}
	instant := t0.Add(time.Hour).UnixMicro()
	for _, c := range []struct {
		name     string
		patient  string
		criteria []store.Criterion
		want     []string
	}{
		{"code in any system", "p1", []store.Criterion{code(store.Match{Value: "8302-2", AnySystem: true})}, []string{"o1", "o3", "o4"}},
		{"system|code", "p1", []store.Criterion{code(tok(loinc, "8302-2"))}, []string{"o1", "o4"}},
		{"|code: no system", "p1", []store.Criterion{code(tok("", "free"))}, []string{"o4"}},
		{"|code never matches a code with a system", "p1", []store.Criterion{code(tok("", "8302-2"))}, nil},
		{"system|", "p1", []store.Criterion{code(store.Match{System: loinc, AnyValue: true})}, []string{"o1", "o2", "o4"}},
		{"values are ORed", "p1", []store.Criterion{code(tok(loinc, "29463-7"), tok("urn:other", "8302-2"))}, []string{"o2", "o3"}},
		{"criteria are ANDed", "p1", []store.Criterion{status("final"), code(tok(loinc, "8302-2"))}, []string{"o1", "o4"}},
		{"a code element", "p1", []store.Criterion{status("preliminary")}, []string{"o2"}},
		{"category", "p1", []store.Criterion{{Param: "category", Kind: store.Token, Any: []store.Match{{Value: "vital-signs", AnySystem: true}}}}, []string{"o1", "o2"}},
		{"a reference by type and id, however it is written", "p1", []store.Criterion{ref("subject", tok("Patient", "p1"))}, []string{"o1", "o2", "o3", "o4"}},
		{"a reference by id", "p1", []store.Criterion{ref("subject", tok("", "p1"))}, []string{"o1", "o2", "o3", "o4"}},
		{"urn:uuid matches a typed search", "p1", []store.Criterion{ref("encounter", tok("Encounter", "e1"))}, []string{"o1"}},
		{"a typed reference does not match another type", "p1", []store.Criterion{ref("encounter", tok("EpisodeOfCare", "e2"))}, nil},
		{"another patient's reference matches nothing", "p1", []store.Criterion{ref("subject", tok("Patient", "p2"))}, nil},
		{"_id", "p1", []store.Criterion{{Param: store.IDParam, Kind: store.Token, Any: []store.Match{{Value: "o3"}, {Value: "o1"}, {Value: "x1"}}}}, []string{"o1", "o3"}},
		{"_lastUpdated ge", "p1", []store.Criterion{{Param: store.UpdatedParam, Kind: store.Date, Any: []store.Match{{Prefix: store.Ge, Lo: instant, Hi: instant}}}}, []string{"o4"}},
		{"_lastUpdated lt", "p1", []store.Criterion{{Param: store.UpdatedParam, Kind: store.Date, Any: []store.Match{{Prefix: store.Lt, Lo: instant, Hi: instant}}}}, []string{"o1", "o2", "o3"}},
		{"a parameter the type does not have matches nothing", "p1", []store.Criterion{{Param: "vaccine-code", Kind: store.Token, Any: []store.Match{{Value: "free", AnySystem: true}}}}, nil},
		{"only the patient's own", "p2", []store.Criterion{code(tok(loinc, "8302-2"))}, []string{"x1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := search(t, s, c.patient, store.Query{Type: "Observation", Criteria: c.criteria}); !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	_, err := s.Search(context.Background(), "p1", store.Query{Type: "Observation", Criteria: []store.Criterion{{Param: "code", Kind: store.Token}}})
	wantErr(t, "a criterion without values", err, store.ErrInvalid)
	page := ok(s.Search(context.Background(), "p1", store.Query{Type: "Observation", CountOnly: true}))(t)
	if page.Total != 4 || len(page.Resources) != 0 {
		t.Fatalf("count only: %+v", page)
	}
}

// day returns midnight UTC of a date, in microseconds.
func day(y int, m time.Month, d int) int64 {
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC).UnixMicro()
}

func testSearchDates(t *testing.T, s store.Store) {
	// Stored values of each precision, zones and periods.
	stored := map[string]string{
		"d1": `"effectiveDateTime":"2020"`,
		"d2": `"effectiveDateTime":"2020-03"`,
		"d3": `"effectiveDateTime":"2020-03-14"`,
		"d4": `"effectiveDateTime":"2020-03-14T10:00:00Z"`,
		"d5": `"effectiveDateTime":"2020-03-14T23:30:00-05:00"`, // 2020-03-15T04:30Z
		"d6": `"effectivePeriod":{"start":"2020-03-10","end":"2020-03-20"}`,
		"d7": `"effectivePeriod":{"start":"2020-03-15"}`,
		"d8": `"effectiveDateTime":"2021-01-01T00:30:00+01:00"`, // 2020-12-31T23:30Z, written 2021
		"d9": `"status":"final"`,                                // no date
	}
	var ws []store.Write
	for id, m := range stored {
		ws = append(ws, obsWrite(id, m))
	}
	write(t, s, "p1", time.Time{}, ws...)
	// 2020-03-14, the whole day.
	dLo, dHi := day(2020, 3, 14), day(2020, 3, 15)-1
	yLo, yHi := day(2020, 1, 1), day(2021, 1, 1)-1
	sec := time.Date(2020, 3, 14, 10, 0, 0, 0, time.UTC).UnixMicro()
	all := []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"}
	for _, c := range []struct {
		name string
		m    store.Match
		want []string
	}{
		{"eq day: within it", store.Match{Prefix: store.Eq, Lo: dLo, Hi: dHi}, []string{"d3", "d4"}},
		{"gt day: reaching after it", store.Match{Prefix: store.Gt, Lo: dLo, Hi: dHi}, []string{"d1", "d2", "d5", "d6", "d7", "d8"}},
		{"lt day: reaching before it", store.Match{Prefix: store.Lt, Lo: dLo, Hi: dHi}, []string{"d1", "d2", "d6"}},
		{"ge day", store.Match{Prefix: store.Ge, Lo: dLo, Hi: dHi}, all},
		{"le day", store.Match{Prefix: store.Le, Lo: dLo, Hi: dHi}, []string{"d1", "d2", "d3", "d4", "d6"}},
		{"eq second", store.Match{Prefix: store.Eq, Lo: sec, Hi: sec + 999_999}, []string{"d4"}},
		{"eq year, in UTC", store.Match{Prefix: store.Eq, Lo: yLo, Hi: yHi}, []string{"d1", "d2", "d3", "d4", "d5", "d6", "d8"}},
		{"eq year as written", store.Match{Prefix: store.Eq, ByYear: true, Year: 2020}, []string{"d1", "d2", "d3", "d4", "d5", "d6"}},
		{"gt year as written", store.Match{Prefix: store.Gt, ByYear: true, Year: 2020}, []string{"d7", "d8"}},
		{"lt year as written", store.Match{Prefix: store.Lt, ByYear: true, Year: 2020}, nil},
		{"ge year as written", store.Match{Prefix: store.Ge, ByYear: true, Year: 2020}, all},
		{"le year as written", store.Match{Prefix: store.Le, ByYear: true, Year: 2020}, []string{"d1", "d2", "d3", "d4", "d5", "d6"}},
		{"lt year as written 2021", store.Match{Prefix: store.Lt, ByYear: true, Year: 2021}, []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := search(t, s, "p1", store.Query{Type: "Observation", Criteria: []store.Criterion{{Param: "date", Kind: store.Date, Any: []store.Match{c.m}}}})
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

// pages walks a query forwards, then back from the last page, checking
// that both ways give the same pages and Total on each.
func pages(t *testing.T, s store.Store, patient string, q store.Query) [][]string {
	t.Helper()
	ctx := context.Background()
	var (
		out   [][]string
		prevs []string
	)
	total := -1
	for cursor := ""; ; {
		q.Cursor = cursor
		page := ok(s.Search(ctx, patient, q))(t)
		if total >= 0 && page.Total != total {
			t.Fatalf("total %d, then %d", total, page.Total)
		}
		total = page.Total
		if (cursor == "") != (page.Prev == "") {
			t.Fatalf("page %d: prev %q", len(out), page.Prev)
		}
		var ids []string
		for _, r := range page.Resources {
			ids = append(ids, r.ID)
		}
		out, prevs = append(out, ids), append(prevs, page.Prev)
		if cursor = page.Next; cursor == "" {
			break
		}
		if len(out) > 20 {
			t.Fatal("paging does not end")
		}
	}
	// Back from the last page: each previous page is the one before.
	for i := len(out) - 1; i > 0; i-- {
		q.Cursor = prevs[i]
		page := ok(s.Search(ctx, patient, q))(t)
		var ids []string
		for _, r := range page.Resources {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, out[i-1]) || page.Next == "" || (i == 1) != (page.Prev == "") {
			t.Fatalf("back from page %d: %v (prev %q), want %v", i, ids, page.Prev, out[i-1])
		}
	}
	return out
}

func testSearchSortAndPages(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	// Written one at a time: lastUpdated e < d < c < b < a.
	for i, o := range []struct{ id, date string }{
		{"e", `"effectiveDateTime":"2020-01-01"`},
		{"d", `"status":"final"`},
		{"c", `"effectivePeriod":{"start":"2018-05-01"}`},
		{"b", `"effectiveDateTime":"2019-06-01T12:00:00Z"`},
		{"a", `"effectiveDateTime":"2020-01-01"`},
	} {
		write(t, s, "p1", t0.Add(time.Duration(i)*time.Minute), obsWrite(o.id, o.date))
	}
	for _, c := range []struct {
		name string
		sort store.Sort
		want [][]string
	}{
		{"by id", store.Sort{}, [][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
		{"date: earliest first, ties by id, undated last", store.Sort{Key: store.SortDate, Param: "date"}, [][]string{{"c", "b"}, {"a", "e"}, {"d"}}},
		{"-date: latest first, ongoing first, undated last", store.Sort{Key: store.SortDate, Param: "date", Desc: true}, [][]string{{"c", "a"}, {"e", "b"}, {"d"}}},
		{"_lastUpdated", store.Sort{Key: store.SortUpdated}, [][]string{{"e", "d"}, {"c", "b"}, {"a"}}},
		{"-_lastUpdated", store.Sort{Key: store.SortUpdated, Desc: true}, [][]string{{"a", "b"}, {"c", "d"}, {"e"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := pages(t, s, "p1", store.Query{Type: "Observation", Sort: c.sort, PageRequest: store.PageRequest{Count: 2}})
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("pages %v, want %v", got, c.want)
			}
		})
	}
	// A cursor belongs to its order.
	byDate := store.Query{Type: "Observation", Sort: store.Sort{Key: store.SortDate, Param: "date"}, PageRequest: store.PageRequest{Count: 2}}
	page := ok(s.Search(ctx, "p1", byDate))(t)
	byDate.Sort.Desc, byDate.Cursor = true, page.Next
	_, err := s.Search(ctx, "p1", byDate)
	wantErr(t, "a cursor of another order", err, store.ErrInvalid)
	_, err = s.Search(ctx, "p1", store.Query{Type: "Observation", PageRequest: store.PageRequest{Cursor: page.Next}})
	wantErr(t, "a sorted search's cursor unsorted", err, store.ErrInvalid)
	// A page is the same after a write that sorts before it: keyset pages.
	q := store.Query{Type: "Observation", PageRequest: store.PageRequest{Count: 2}}
	first := ok(s.Search(ctx, "p1", q))(t)
	write(t, s, "p1", time.Time{}, obsWrite("0", `"status":"final"`))
	q.Cursor = first.Next
	if second := ok(s.Search(ctx, "p1", q))(t); len(second.Resources) != 2 || second.Resources[0].ID != "c" || second.Total != 6 {
		t.Fatalf("second page after a write before it: %v, total %d", ids(second.Resources), second.Total)
	}
}

func testSearchIndexFollowsWrites(t *testing.T, s store.Store) {
	ctx := context.Background()
	byStatus := func(v string) []string {
		t.Helper()
		return search(t, s, "p1", store.Query{Type: "Observation", Criteria: []store.Criterion{{Param: "status", Kind: store.Token, Any: []store.Match{{Value: v, AnySystem: true}}}}})
	}
	write(t, s, "p1", time.Time{}, obsWrite("o1", `"status":"preliminary"`))
	if got := byStatus("preliminary"); !slices.Equal(got, []string{"o1"}) {
		t.Fatalf("after create: %v", got)
	}
	// A new version replaces the values: the old one matches no more.
	write(t, s, "p1", time.Time{}, obsWrite("o1", `"status":"final"`))
	if got, old := byStatus("final"), byStatus("preliminary"); !slices.Equal(got, []string{"o1"}) || old != nil {
		t.Fatalf("after update: final %v, preliminary %v", got, old)
	}
	// Writing the same bytes again, or a conditional create, changes nothing.
	write(t, s, "p1", time.Time{}, obsWrite("o1", `"status":"final"`))
	w := obsWrite("o1", `"status":"amended"`)
	w.Mode = store.CreateIfAbsent
	write(t, s, "p1", time.Time{}, w)
	if got := byStatus("final"); !slices.Equal(got, []string{"o1"}) || byStatus("amended") != nil {
		t.Fatalf("after unchanged writes: %v", got)
	}
	// A batch that fails leaves no value behind.
	_, err := s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{
		{Type: "Observation", ID: "o2", Raw: observation("o2", `"status":"cancelled"`), Mode: store.Create},
		{Type: "Observation", ID: "o1", Raw: observation("o1", `"status":"cancelled"`), Mode: store.Create},
	}})
	wantErr(t, "second write conflicts", err, store.ErrConflict)
	if got := byStatus("cancelled"); got != nil {
		t.Fatalf("a failed batch left values: %v", got)
	}
	// Many versions in one batch: the last one's values.
	write(t, s, "p1", time.Time{}, obsWrite("o3", `"status":"registered"`), obsWrite("o3", `"status":"corrected"`))
	if got := byStatus("corrected"); !slices.Equal(got, []string{"o3"}) || byStatus("registered") != nil {
		t.Fatalf("two versions in one batch: %v", got)
	}
}

func testIncludes(t *testing.T, s store.Store) {
	ctx := context.Background()
	write(t, s, "", time.Time{},
		store.Write{Type: "Practitioner", ID: "pr1", Raw: []byte(`{"resourceType":"Practitioner","id":"pr1"}`), Shared: true},
		store.Write{Type: "Organization", ID: "org1", Raw: []byte(`{"resourceType":"Organization","id":"org1"}`), Shared: true})
	write(t, s, "p2", time.Time{}, store.Write{Type: "Encounter", ID: "e9", Raw: []byte(`{"resourceType":"Encounter","id":"e9"}`)})
	write(t, s, "p1", time.Time{},
		store.Write{Type: "Encounter", ID: "e1", Raw: []byte(`{"resourceType":"Encounter","id":"e1","participant":[{"individual":{"reference":"urn:uuid:pr1"}},{"individual":{"reference":"Practitioner/missing"}}],"serviceProvider":{"reference":"Organization/org1"}}`)},
		obsWrite("o1", `"encounter":{"reference":"urn:uuid:e1"}`),
		obsWrite("o2", `"encounter":{"reference":"Encounter/e1"}`),
		obsWrite("o3", `"encounter":{"reference":"Encounter/e9"}`))
	participant := store.Include{Source: "Encounter", Param: "participant", Target: []string{"Practitioner", "PractitionerRole"}}
	for _, c := range []struct {
		name string
		inc  store.Include
		from []string
		want []string
	}{
		{"a shared resource by urn:uuid", participant, []string{"e1"}, []string{"Practitioner/pr1"}},
		{"by type and id", store.Include{Source: "Encounter", Param: "service-provider", Target: []string{"Organization"}}, []string{"e1"}, []string{"Organization/org1"}},
		{"only the target types asked", store.Include{Source: "Encounter", Param: "participant", Target: []string{"PractitionerRole"}}, []string{"e1"}, nil},
		{"never another patient's", store.Include{Source: "Observation", Param: "encounter", Target: []string{"Encounter"}}, []string{"o1", "o2", "o3"}, []string{"Encounter/e1"}},
		{"from nothing", participant, nil, nil},
	} {
		got := ids(ok(s.Included(ctx, "p1", c.inc, c.from))(t))
		if !slices.Equal(got, c.want) {
			t.Errorf("include %s: %v, want %v", c.name, got, c.want)
		}
	}
	rev := store.Include{Source: "Observation", Param: "encounter", Target: []string{"Encounter"}}
	if got := ids(ok(s.RevIncluded(ctx, "p1", rev, []store.Ref{{Type: "Encounter", ID: "e1"}}))(t)); !slices.Equal(got, []string{"Observation/o1", "Observation/o2"}) {
		t.Errorf("revinclude: %v", got)
	}
	if got := ok(s.RevIncluded(ctx, "p2", rev, []store.Ref{{Type: "Encounter", ID: "e1"}, {Type: "Encounter", ID: "e9"}}))(t); len(got) != 0 {
		t.Errorf("revinclude crosses patients: %v", ids(got))
	}
	// A typed reference leads to its type only; urn:uuid:e1 names the
	// resource with id e1 whatever its type (imported ids are UUIDs).
	if got := ids(ok(s.RevIncluded(ctx, "p1", rev, []store.Ref{{Type: "EpisodeOfCare", ID: "e1"}}))(t)); !slices.Equal(got, []string{"Observation/o1"}) {
		t.Errorf("revinclude of another type with the same id: %v", got)
	}
}

func testVersions(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, st := range []string{"registered", "preliminary", "final"} {
		write(t, s, "p1", time.Time{}, obsWrite("o1", `"status":"`+st+`"`))
	}
	vs := func(before int64, limit int) []int64 {
		t.Helper()
		var out []int64
		for _, r := range ok(s.Versions(ctx, "Observation", "o1", before, limit))(t) {
			if r.PatientID != "p1" || r.Type != "Observation" || r.ID != "o1" {
				t.Fatalf("version %+v", r.Meta)
			}
			out = append(out, r.Version)
		}
		return out
	}
	for _, c := range []struct {
		before int64
		limit  int
		want   []int64
	}{{0, 0, []int64{3, 2, 1}}, {0, 2, []int64{3, 2}}, {2, 5, []int64{1}}, {1, 5, nil}, {math.MaxInt64, 1, []int64{3}}} {
		if got := vs(c.before, c.limit); !slices.Equal(got, c.want) {
			t.Errorf("before %d, limit %d: %v, want %v", c.before, c.limit, got, c.want)
		}
	}
	_, err := s.Versions(ctx, "Observation", "missing", 0, 0)
	wantErr(t, "versions of a missing resource", err, store.ErrNotFound)
	write(t, s, "p1", time.Time{}, obsWrite("o0", `"status":"final"`))
	write(t, s, "p2", time.Time{}, obsWrite("x1", `"status":"final"`))
	if got := ok(s.IDs(ctx, "p1", "Observation"))(t); !slices.Equal(got, []string{"o0", "o1"}) {
		t.Errorf("ids: %v", got)
	}
}

func testEverythingFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	write(t, s, "p1", t0, obsWrite("o1", `"status":"final"`), store.Write{Type: "Condition", ID: "c1", Raw: []byte(`{"resourceType":"Condition","id":"c1"}`)})
	write(t, s, "p1", t0.Add(time.Hour), obsWrite("o2", `"status":"final"`), store.Write{Type: "Patient", ID: "p1", Raw: []byte(`{"resourceType":"Patient","id":"p1"}`)})
	for _, c := range []struct {
		name string
		q    store.EverythingQuery
		want []string
	}{
		{"all", store.EverythingQuery{}, []string{"Condition/c1", "Observation/o1", "Observation/o2", "Patient/p1"}},
		{"types", store.EverythingQuery{Types: []string{"Patient", "Observation"}}, []string{"Observation/o1", "Observation/o2", "Patient/p1"}},
		{"no type", store.EverythingQuery{Types: []string{}}, nil},
		{"since", store.EverythingQuery{Since: t0.Add(time.Hour)}, []string{"Observation/o2", "Patient/p1"}},
		{"types and since", store.EverythingQuery{Types: []string{"Observation"}, Since: t0.Add(30 * time.Minute)}, []string{"Observation/o2"}},
	} {
		var got []string
		c.q.Count = 1
		for cursor := ""; ; {
			c.q.Cursor = cursor
			page := ok(s.Everything(ctx, "p1", c.q))(t)
			if page.Total != len(c.want) {
				t.Fatalf("%s: total %d", c.name, page.Total)
			}
			got = append(got, ids(page.Resources)...)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	_, err := s.Everything(ctx, "p1", store.EverythingQuery{Types: []string{"Spaceship"}})
	wantErr(t, "unknown type", err, store.ErrInvalid)
}
