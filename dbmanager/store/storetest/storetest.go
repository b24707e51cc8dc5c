// Package storetest is the one test suite every store.Store implementation
// must pass. An implementation's tests call Run with a function that opens a
// fresh, empty store for each test.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/tagcode"
)

// Opener returns a fresh, empty store; it closes it when the test ends.
type Opener func(t *testing.T) store.Store

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"Patients", testPatients},
		{"Tags", testTags},
		{"UnmapTag", testUnmapTag},
		{"PatientResources", testPatientResources},
		{"Writes", testWrites},
		{"BatchIsAtomic", testBatchIsAtomic},
		{"RawIsKeptByteForByte", testRaw},
		{"Search", testSearch},
		{"Everything", testEverything},
		{"SearchCriteria", testSearchCriteria},
		{"SearchDates", testSearchDates},
		{"SearchSortAndPages", testSearchSortAndPages},
		{"SearchIndexFollowsWrites", testSearchIndexFollowsWrites},
		{"Includes", testIncludes},
		{"Versions", testVersions},
		{"EverythingFilters", testEverythingFilters},
		{"Changes", testChanges},
		{"State", testState},
		{"AccessLog", testAccessLog},
		{"History", testHistory},
		{"Anchors", testAnchors},
		{"LogCommitment", testLogCommitment},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Nonces", testNonces},
		{"ConcurrentNonces", testConcurrentNonces},
		{"NonceWithLog", testNonceWithLog},
		{"ConcurrentNonceWithLog", testConcurrentNonceWithLog},
		{"ClaimCodes", testClaimCodes},
		{"Staff", testStaff},
		{"ConcurrentClaimCodeConsume", testConcurrentConsume},
		{"Locators", testLocators},
		{"ExportJobs", testExportJobs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// Tag returns a small canonical tag for tests.
func Tag(n byte) store.Tag { var t store.Tag; t[31] = n; return t }

// DeskCode returns the desk code of Tag(n).
func DeskCode(n byte) tagcode.Code {
	t := Tag(n)
	c, err := tagcode.Of(new(big.Int).SetBytes(t[:]))
	if err != nil {
		panic(err)
	}
	return c
}

func obs(id, status string) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,"status":%q,"code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`, id, status)
}

// ok(f())(t) returns f's value, failing the test if f failed.
func ok[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil && err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if want != nil && !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

func testPatients(t *testing.T, s store.Store) {
	ctx := context.Background()
	p := ok(s.CreatePatient(ctx, "p1"))(t)
	if p.ID != "p1" || p.Tag != nil || p.Seq != 0 || p.Created.IsZero() {
		t.Fatalf("created %+v", p)
	}
	for _, c := range []struct {
		name string
		id   string
		want error
	}{
		{"duplicate", "p1", store.ErrConflict},
		{"empty id", "", store.ErrInvalid},
		{"slash", "a/b", store.ErrInvalid},
		{"too long", string(make([]byte, 65)), store.ErrInvalid},
		{"second", "p2", nil},
	} {
		_, err := s.CreatePatient(ctx, c.id)
		wantErr(t, c.name, err, c.want)
	}
	got := ok(s.Patient(ctx, "p1"))(t)
	if got.ID != "p1" || !got.Created.Equal(p.Created) {
		t.Fatalf("read %+v, created %+v", got, p)
	}
	_, err := s.Patient(ctx, "nobody")
	wantErr(t, "missing patient", err, store.ErrNotFound)
}

func testTags(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	ok(s.CreatePatient(ctx, "p2"))(t)
	var big store.Tag
	for i := range big {
		big[i] = 0xff
	}
	for _, c := range []struct {
		name    string
		patient string
		tag     store.Tag
		want    error
	}{
		{"map", "p1", Tag(1), nil},
		{"same again is a no-op", "p1", Tag(1), nil},
		{"another tag for the patient", "p1", Tag(2), store.ErrConflict},
		{"the tag of another patient", "p2", Tag(1), store.ErrConflict},
		{"non-canonical tag", "p2", big, store.ErrInvalid},
		{"unknown patient", "p9", Tag(9), store.ErrNotFound},
		{"second patient", "p2", Tag(2), nil},
	} {
		wantErr(t, c.name, s.MapTag(ctx, c.patient, c.tag), c.want)
	}
	p := ok(s.PatientByTag(ctx, Tag(2)))(t)
	if p.ID != "p2" || p.Tag == nil || *p.Tag != Tag(2) {
		t.Fatalf("by tag: %+v", p)
	}
	if p := ok(s.Patient(ctx, "p1"))(t); p.Tag == nil || *p.Tag != Tag(1) {
		t.Fatalf("p1 tag: %+v", p)
	}
	_, err := s.PatientByTag(ctx, Tag(3))
	wantErr(t, "unmapped tag", err, store.ErrNotFound)
}

// testUnmapTag: staff undo a wrong mapping; the entry saying who and why is
// in the log, in the same transaction; the patient and the tag are free
// again, and the patient's records state is anchored afresh.
func testUnmapTag(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	ok(s.CreatePatient(ctx, "p2"))(t)
	wantErr(t, "map", s.MapTag(ctx, "p1", Tag(1)), nil)
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{{Type: "Observation", ID: "o1", Raw: obs("o1", "final"), Mode: store.Upsert}}}))(t)
	dirty := ok(s.Dirty(ctx, ok(s.LogHead(ctx))(t).Next))(t)
	st := ok(s.State(ctx, "p1"))(t)
	a := ok(s.AddAnchor(ctx, store.Anchor{StateRoot: [32]byte{1}, States: dirty}))(t)
	if len(a.States) != 1 || ok(s.State(ctx, "p1"))(t).Dirty {
		t.Fatalf("anchored %+v; state %+v", a.States, st)
	}
	entry := func(reason string) store.LogEntry {
		return store.LogEntry{ActorKind: store.ActorStaff, ActorID: "clerk", Action: "unmap", PatientID: "p1", Outcome: store.Allowed, Detail: reason}
	}
	before := ok(s.LogHead(ctx))(t)

	wantErr(t, "unknown patient", s.UnmapTag(ctx, "nobody", Tag(1), entry("x")), store.ErrNotFound)
	wantErr(t, "patient without a tag", s.UnmapTag(ctx, "p2", Tag(1), entry("x")), store.ErrConflict)
	wantErr(t, "another tag", s.UnmapTag(ctx, "p1", Tag(2), entry("x")), store.ErrConflict)
	wantErr(t, "malformed log entry", s.UnmapTag(ctx, "p1", Tag(1), store.LogEntry{ActorKind: store.ActorStaff, Outcome: store.Allowed}), store.ErrInvalid)
	if h := ok(s.LogHead(ctx))(t); h != before {
		t.Fatalf("refused unmappings wrote to the log: %+v → %+v", before, h)
	}
	if p := ok(s.Patient(ctx, "p1"))(t); p.Tag == nil || *p.Tag != Tag(1) {
		t.Fatalf("refused unmappings changed the tag: %+v", p)
	}

	wantErr(t, "unmap", s.UnmapTag(ctx, "p1", Tag(1), entry("claimed with a code seen over the counter")), nil)
	// The anchored tree keeps the tag's last leaf until another replaces it.
	if l := ok(s.LatestStates(ctx))(t); len(l) != 1 || l[0].Tag != Tag(1) || l[0].PatientID != "p1" {
		t.Fatalf("latest leaves after unmapping: %+v", l)
	}
	if p := ok(s.Patient(ctx, "p1"))(t); p.Tag != nil {
		t.Fatalf("tag still mapped: %+v", p)
	}
	_, err := s.PatientByTag(ctx, Tag(1))
	wantErr(t, "unmapped tag", err, store.ErrNotFound)
	log := ok(s.PatientLog(ctx, "p1", before.Next, 10))(t)
	if len(log) != 1 || log[0].Action != "unmap" || log[0].ActorID != "clerk" || log[0].Detail != "claimed with a code seen over the counter" {
		t.Fatalf("log after unmapping: %+v", log)
	}
	if _, err := store.VerifyLog(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Dirty again: the next anchor covers the patient under its next tag.
	if st := ok(s.State(ctx, "p1"))(t); !st.Dirty {
		t.Fatalf("state after unmapping: %+v", st)
	}
	wantErr(t, "unmap twice", s.UnmapTag(ctx, "p1", Tag(1), entry("again")), store.ErrConflict)
	// Both are free: the tag for another patient, the patient for another tag.
	wantErr(t, "the tag to p2", s.MapTag(ctx, "p2", Tag(1)), nil)
	wantErr(t, "p1 to a new tag", s.MapTag(ctx, "p1", Tag(3)), nil)
	// Both are anchored next: p1 under its new tag, and the old tag now
	// for p2, whose records state replaces p1's under it.
	dirty = ok(s.Dirty(ctx, ok(s.LogHead(ctx))(t).Next))(t)
	if len(dirty) != 2 || dirty[0].PatientID != "p2" || dirty[0].Tag != Tag(1) || dirty[1].PatientID != "p1" || dirty[1].Tag != Tag(3) {
		t.Fatalf("dirty after the new mappings: %+v", dirty)
	}
}

func testWrites(t *testing.T, s store.Store) {
	ctx := context.Background()
	org := []byte(`{"resourceType":"Organization","id":"o1","name":"A"}`)
	org2 := []byte(`{"resourceType":"Organization","id":"o1","name":"B"}`)
	type step struct {
		name    string
		batch   store.Batch
		effects []store.Effect
		version int64 // of the last write
		want    error
	}
	w := func(mode store.Mode, typ, id string, raw []byte) store.Write {
		return store.Write{Type: typ, ID: id, Raw: raw, Mode: mode}
	}
	p1 := func(ws ...store.Write) store.Batch { return store.Batch{PatientID: "p1", Writes: ws} }
	steps := []step{
		{name: "unknown patient", batch: p1(w(store.Create, "Observation", "a", obs("a", "final"))), want: store.ErrNotFound},
		{name: "create the patient with the batch", batch: store.Batch{PatientID: "p1", CreatePatient: true, Writes: []store.Write{w(store.Create, "Observation", "a", obs("a", "final"))}},
			effects: []store.Effect{store.EffectCreated}, version: 1},
		{name: "create again", batch: p1(w(store.Create, "Observation", "a", obs("a", "final"))), want: store.ErrConflict},
		{name: "upsert identical bytes", batch: p1(w(store.Upsert, "Observation", "a", obs("a", "final"))),
			effects: []store.Effect{store.EffectUnchanged}, version: 1},
		{name: "upsert new content", batch: p1(w(store.Upsert, "Observation", "a", obs("a", "amended"))),
			effects: []store.Effect{store.EffectUpdated}, version: 2},
		{name: "update with the right if-version", batch: p1(store.Write{Type: "Observation", ID: "a", Raw: obs("a", "corrected"), Mode: store.Update, IfVersion: 2}),
			effects: []store.Effect{store.EffectUpdated}, version: 3},
		{name: "update with a stale if-version", batch: p1(store.Write{Type: "Observation", ID: "a", Raw: obs("a", "final"), Mode: store.Update, IfVersion: 2}),
			want: store.ErrConflict},
		{name: "update of an absent resource", batch: p1(w(store.Update, "Observation", "zz", obs("zz", "final"))), want: store.ErrNotFound},
		{name: "upsert creates", batch: p1(w(store.Upsert, "Observation", "b", obs("b", "final"))),
			effects: []store.Effect{store.EffectCreated}, version: 1},
		{name: "same id, other type is another resource", batch: p1(w(store.Create, "Condition", "a", []byte(`{"resourceType":"Condition","id":"a"}`))),
			effects: []store.Effect{store.EffectCreated}, version: 1},
		{name: "another patient's resource", batch: store.Batch{PatientID: "p2", CreatePatient: true, Writes: []store.Write{w(store.Upsert, "Observation", "a", obs("a", "final"))}},
			want: store.ErrConflict},
		{name: "shared resource in a patient batch", batch: store.Batch{PatientID: "p1", Writes: []store.Write{{Type: "Organization", ID: "o1", Raw: org, Shared: true, Mode: store.CreateIfAbsent}}},
			effects: []store.Effect{store.EffectCreated}, version: 1},
		{name: "create-if-absent keeps what exists", batch: store.Batch{Writes: []store.Write{{Type: "Organization", ID: "o1", Raw: org2, Shared: true, Mode: store.CreateIfAbsent}}},
			effects: []store.Effect{store.EffectUnchanged}, version: 1},
		{name: "shared upsert without a patient", batch: store.Batch{Writes: []store.Write{{Type: "Organization", ID: "o1", Raw: org2, Shared: true, Mode: store.Upsert}}},
			effects: []store.Effect{store.EffectUpdated}, version: 2},
		{name: "a shared resource cannot become a patient's", batch: p1(w(store.Upsert, "Organization", "o1", org)), want: store.ErrConflict},
		{name: "a patient's resource cannot become shared", batch: store.Batch{Writes: []store.Write{{Type: "Observation", ID: "a", Raw: obs("a", "x"), Shared: true, Mode: store.Upsert}}},
			want: store.ErrConflict},
		{name: "patient resource without a patient", batch: store.Batch{Writes: []store.Write{w(store.Create, "Observation", "c", obs("c", "final"))}}, want: store.ErrInvalid},
		{name: "unknown type", batch: p1(w(store.Create, "Bundle", "c", []byte(`{}`))), want: store.ErrInvalid},
		{name: "bad id", batch: p1(w(store.Create, "Observation", "a b", obs("a b", "final"))), want: store.ErrInvalid},
		{name: "not JSON", batch: p1(w(store.Create, "Observation", "c", []byte(`{"resourceType":`))), want: store.ErrInvalid},
		{name: "empty body", batch: p1(w(store.Create, "Observation", "c", nil)), want: store.ErrInvalid},
		{name: "no mode", batch: p1(w(0, "Observation", "c", obs("c", "final"))), want: store.ErrInvalid},
		{name: "bad log entry", batch: store.Batch{PatientID: "p1", Writes: []store.Write{w(store.Create, "Observation", "c", obs("c", "final"))}, Log: []store.LogEntry{{Action: "import"}}},
			want: store.ErrInvalid},
	}
	for _, st := range steps {
		res, err := s.Apply(ctx, st.batch)
		wantErr(t, st.name, err, st.want)
		if st.want != nil {
			continue
		}
		if len(res) != len(st.effects) {
			t.Fatalf("%s: %d results", st.name, len(res))
		}
		for i, r := range res {
			if r.Effect != st.effects[i] {
				t.Fatalf("%s: write %d: %s, want %s", st.name, i, r.Effect, st.effects[i])
			}
		}
		last := res[len(res)-1]
		if last.Version != st.version {
			t.Fatalf("%s: version %d, want %d", st.name, last.Version, st.version)
		}
		got := ok(s.Get(ctx, last.Type, last.ID))(t)
		if got.Version != last.Version || got.SHA256 != last.SHA256 || got.PatientID != last.PatientID || got.Seq != last.Seq || !got.LastUpdated.Equal(last.LastUpdated) {
			t.Fatalf("%s: stored %+v, result %+v", st.name, got.Meta, last.Meta)
		}
	}
	// Every accepted version is kept.
	for v, status := range map[int64]string{1: "final", 2: "amended", 3: "corrected"} {
		r := ok(s.GetVersion(ctx, "Observation", "a", v))(t)
		if string(r.Raw) != string(obs("a", status)) || r.Version != v {
			t.Fatalf("version %d: %s", v, r.Raw)
		}
	}
	_, err := s.GetVersion(ctx, "Observation", "a", 4)
	wantErr(t, "future version", err, store.ErrNotFound)
	_, err = s.Get(ctx, "Observation", "nope")
	wantErr(t, "missing resource", err, store.ErrNotFound)
	if r := ok(s.Get(ctx, "Organization", "o1"))(t); r.PatientID != "" || r.Seq != 0 || string(r.Raw) != string(org2) {
		t.Fatalf("shared resource %+v", r.Meta)
	}
	if _, err := s.Patient(ctx, "p2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed batch created its patient: %v", err)
	}
}

func testBatchIsAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", CreatePatient: true,
		Writes: []store.Write{{Type: "Observation", ID: "x", Raw: obs("x", "final"), Mode: store.Create}}}))(t)
	before := ok(s.State(ctx, "p1"))(t)
	head := ok(s.LogHead(ctx))(t)
	_, err := s.Apply(ctx, store.Batch{PatientID: "p1",
		Writes: []store.Write{
			{Type: "Observation", ID: "new1", Raw: obs("new1", "final"), Mode: store.Create},
			{Type: "Observation", ID: "x", Raw: obs("x", "amended"), Mode: store.Update},
			{Type: "Observation", ID: "x", Raw: obs("x", "final"), Mode: store.Create}, // conflict: the whole batch fails
		},
		Log: []store.LogEntry{{ActorKind: store.ActorStaff, ActorID: "nurse", Action: "create", PatientID: "p1", Outcome: store.Allowed}},
	})
	wantErr(t, "conflicting batch", err, store.ErrConflict)
	if _, err := s.Get(ctx, "Observation", "new1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("half a batch was stored: %v", err)
	}
	if r := ok(s.Get(ctx, "Observation", "x"))(t); r.Version != 1 {
		t.Fatalf("half a batch was stored: version %d", r.Version)
	}
	if after := ok(s.State(ctx, "p1"))(t); after != before {
		t.Fatalf("state moved: %+v → %+v", before, after)
	}
	if h := ok(s.LogHead(ctx))(t); h != head {
		t.Fatalf("log moved: %+v → %+v", head, h)
	}
	if ch := ok(s.Changes(ctx, "p1", 0, 0))(t); len(ch) != 1 {
		t.Fatalf("changes %+v", ch)
	}
	// The same batch without the conflict stores the writes and the log entry together.
	ok(s.Apply(ctx, store.Batch{PatientID: "p1",
		Writes: []store.Write{{Type: "Observation", ID: "new1", Raw: obs("new1", "final"), Mode: store.Create}},
		Log:    []store.LogEntry{{ActorKind: store.ActorStaff, ActorID: "nurse", Action: "create", PatientID: "p1", Resources: []string{"Observation/new1"}, Outcome: store.Allowed}},
	}))(t)
	if h := ok(s.LogHead(ctx))(t); h.Next != head.Next+1 {
		t.Fatalf("log head %d", h.Next)
	}
}

func testRaw(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Whitespace, key order, escapes and number spelling are kept as sent.
	raw := []byte("{\n  \"status\" : \"final\",\t\"resourceType\":\"Observation\",\"id\":\"r1\",\n  \"valueQuantity\":{\"value\":1.50E+1},\"note\":[{\"text\":\"caf\\u00e9 \\/ ünïcode\"}] }\n")
	res := ok(s.Apply(ctx, store.Batch{PatientID: "p1", CreatePatient: true, Writes: []store.Write{{Type: "Observation", ID: "r1", Raw: raw, Mode: store.Create}}}))(t)
	got := ok(s.Get(ctx, "Observation", "r1"))(t)
	if string(got.Raw) != string(raw) {
		t.Fatalf("raw changed:\n%q\n%q", raw, got.Raw)
	}
	if sha256.Sum256(raw) != got.SHA256 || res[0].SHA256 != got.SHA256 {
		t.Fatal("sha256 is not of the raw bytes")
	}
	if got.LastUpdated.Location() != time.UTC || got.LastUpdated.Nanosecond()%1000 != 0 {
		t.Fatalf("lastUpdated %v is not UTC microseconds", got.LastUpdated)
	}
}

func seed(t *testing.T, s store.Store, patient string, obsIDs, condIDs []string) {
	t.Helper()
	var ws []store.Write
	for _, id := range obsIDs {
		ws = append(ws, store.Write{Type: "Observation", ID: id, Raw: obs(id, "final"), Mode: store.Create})
	}
	for _, id := range condIDs {
		ws = append(ws, store.Write{Type: "Condition", ID: id, Raw: fmt.Appendf(nil, `{"resourceType":"Condition","id":%q}`, id), Mode: store.Create})
	}
	ok(s.Apply(context.Background(), store.Batch{PatientID: patient, CreatePatient: true, Writes: ws}))(t)
}

func ids(rs []store.Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Type+"/"+r.ID)
	}
	return out
}

func testSearch(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s, "p1", []string{"o5", "o1", "o3", "o7", "o2", "o6", "o4"}, []string{"c1", "c2"})
	seed(t, s, "p2", []string{"x1"}, nil)
	ok(s.Apply(ctx, store.Batch{Writes: []store.Write{{Type: "Organization", ID: "org", Raw: []byte(`{"resourceType":"Organization"}`), Shared: true, Mode: store.Create}}}))(t)
	for _, c := range []struct {
		name    string
		patient string
		typ     string
		count   int
		pages   [][]string
	}{
		{"pages of three", "p1", "Observation", 3, [][]string{
			{"Observation/o1", "Observation/o2", "Observation/o3"},
			{"Observation/o4", "Observation/o5", "Observation/o6"},
			{"Observation/o7"}}},
		{"exact fit", "p1", "Condition", 2, [][]string{{"Condition/c1", "Condition/c2"}}},
		{"default count", "p1", "Condition", 0, [][]string{{"Condition/c1", "Condition/c2"}}},
		{"other patient", "p2", "Observation", 10, [][]string{{"Observation/x1"}}},
		{"none of the type", "p2", "Condition", 10, [][]string{nil}},
		{"shared resources", "", "Organization", 10, [][]string{{"Organization/org"}}},
	} {
		cursor := ""
		for i, want := range c.pages {
			page := ok(s.Search(ctx, c.patient, store.Query{Type: c.typ, PageRequest: store.PageRequest{Count: c.count, Cursor: cursor}}))(t)
			if !slices.Equal(ids(page.Resources), want) {
				t.Fatalf("%s: page %d: %v, want %v", c.name, i, ids(page.Resources), want)
			}
			if last := i == len(c.pages)-1; last != (page.Next == "") {
				t.Fatalf("%s: page %d: next %q", c.name, i, page.Next)
			}
			cursor = page.Next
		}
	}
	_, err := s.Search(ctx, "p1", store.Query{Type: "Observation", PageRequest: store.PageRequest{Cursor: "!!"}})
	wantErr(t, "bad cursor", err, store.ErrInvalid)
	page := ok(s.Search(ctx, "p1", store.Query{Type: "Condition", PageRequest: store.PageRequest{Count: 1}}))(t)
	_, err = s.Search(ctx, "p1", store.Query{Type: "Observation", PageRequest: store.PageRequest{Cursor: page.Next}})
	wantErr(t, "cursor of another search", err, store.ErrInvalid)
	_, err = s.Search(ctx, "p1", store.Query{Type: "Spaceship"})
	wantErr(t, "unknown type", err, store.ErrInvalid)
	_, err = s.Search(ctx, "nobody", store.Query{Type: "Observation"})
	wantErr(t, "unknown patient", err, store.ErrNotFound)
}

func testEverything(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s, "p1", []string{"o3", "o1", "o2"}, []string{"c2", "c1"})
	seed(t, s, "p2", []string{"x1"}, nil)
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{
		{Type: "Patient", ID: "p1", Raw: []byte(`{"resourceType":"Patient","id":"p1"}`), Mode: store.Create},
		{Type: "Organization", ID: "org", Raw: []byte(`{"resourceType":"Organization"}`), Shared: true, Mode: store.Create},
	}}))(t)
	want := []string{"Condition/c1", "Condition/c2", "Observation/o1", "Observation/o2", "Observation/o3", "Patient/p1"}
	for _, count := range []int{1, 2, 4, 6, 7, 0} {
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			page := ok(s.Everything(ctx, "p1", store.EverythingQuery{PageRequest: store.PageRequest{Count: count, Cursor: cursor}}))(t)
			if page.Total != len(want) {
				t.Fatalf("count %d: total %d", count, page.Total)
			}
			got = append(got, ids(page.Resources)...)
			if cursor = page.Next; cursor == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("count %d: %v", count, got)
		}
	}
	_, err := s.Everything(ctx, "nobody", store.EverythingQuery{})
	wantErr(t, "unknown patient", err, store.ErrNotFound)
	ok(s.CreatePatient(ctx, "empty"))(t)
	if page := ok(s.Everything(ctx, "empty", store.EverythingQuery{}))(t); len(page.Resources) != 0 || page.Next != "" || page.Total != 0 {
		t.Fatalf("empty patient: %+v", page)
	}
}

func testChanges(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s, "p1", []string{"o1", "o2"}, nil)                         // seq 1, 2
	seed(t, s, "p2", []string{"x1"}, nil)                               // p2's own sequence
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{ // seq 3; the unchanged write takes none
		{Type: "Observation", ID: "o1", Raw: obs("o1", "amended"), Mode: store.Update},
		{Type: "Observation", ID: "o2", Raw: obs("o2", "final"), Mode: store.Upsert},
	}}))(t)
	all := ok(s.Changes(ctx, "p1", 0, 0))(t)
	var got []string
	for i, c := range all {
		if c.Seq != uint64(i+1) || c.Time.IsZero() {
			t.Fatalf("change %d: %+v", i, c)
		}
		got = append(got, fmt.Sprintf("%d %s/%s v%d", c.Seq, c.Type, c.ID, c.Version))
	}
	want := []string{"1 Observation/o1 v1", "2 Observation/o2 v1", "3 Observation/o1 v2"}
	if !slices.Equal(got, want) {
		t.Fatalf("changes %v", got)
	}
	if since := ok(s.Changes(ctx, "p1", 2, 0))(t); len(since) != 1 || since[0].Seq != 3 {
		t.Fatalf("since 2: %+v", since)
	}
	if lim := ok(s.Changes(ctx, "p1", 0, 2))(t); len(lim) != 2 {
		t.Fatalf("limit 2: %+v", lim)
	}
	if none := ok(s.Changes(ctx, "p1", 3, 0))(t); len(none) != 0 {
		t.Fatalf("since 3: %+v", none)
	}
	if p := ok(s.Patient(ctx, "p1"))(t); p.Seq != 3 {
		t.Fatalf("patient seq %d", p.Seq)
	}
	if r := ok(s.Get(ctx, "Observation", "o1"))(t); r.Seq != 3 {
		t.Fatalf("resource seq %d", r.Seq)
	}
	if p2 := ok(s.Changes(ctx, "p2", 0, 0))(t); len(p2) != 1 || p2[0].Seq != 1 {
		t.Fatalf("p2: %+v", p2)
	}
	_, err := s.Changes(ctx, "nobody", 0, 0)
	wantErr(t, "unknown patient", err, store.ErrNotFound)
}

// stateOf recomputes a patient's state hash from what Everything serves, the
// way a client does.
func stateOf(t *testing.T, s store.Store, patient string) [32]byte {
	t.Helper()
	var entries []store.StateEntry
	cursor := ""
	for {
		page := ok(s.Everything(context.Background(), patient, store.EverythingQuery{PageRequest: store.PageRequest{Count: 2, Cursor: cursor}}))(t)
		for _, r := range page.Resources {
			entries = append(entries, store.StateEntry{Type: r.Type, ID: r.ID, Version: r.Version, SHA256: sha256.Sum256(r.Raw)})
		}
		if cursor = page.Next; cursor == "" {
			return store.StateHash(entries)
		}
	}
}

func testState(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	empty := ok(s.State(ctx, "p1"))(t)
	if empty.Hash != store.StateHash(nil) || empty.Count != 0 || empty.Seq != 0 || !empty.Dirty {
		t.Fatalf("empty state %+v", empty)
	}
	seed(t, s, "p1", []string{"o1", "o2"}, []string{"c1"})
	st := ok(s.State(ctx, "p1"))(t)
	if st.Hash != stateOf(t, s, "p1") || st.Count != 3 || st.Seq != 3 {
		t.Fatalf("state %+v", st)
	}
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{{Type: "Observation", ID: "o1", Raw: obs("o1", "final"), Mode: store.Upsert}}}))(t)
	if again := ok(s.State(ctx, "p1"))(t); again != st {
		t.Fatalf("an unchanged write moved the state: %+v", again)
	}
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{{Type: "Observation", ID: "o1", Raw: obs("o1", "amended"), Mode: store.Upsert}}}))(t)
	moved := ok(s.State(ctx, "p1"))(t)
	if moved.Hash == st.Hash || moved.Hash != stateOf(t, s, "p1") || moved.Seq != 4 {
		t.Fatalf("state after update %+v", moved)
	}
	// Other patients and shared resources do not count.
	seed(t, s, "p2", []string{"x1"}, nil)
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{{Type: "Organization", ID: "org", Raw: []byte(`{"resourceType":"Organization"}`), Shared: true, Mode: store.CreateIfAbsent}}}))(t)
	if again := ok(s.State(ctx, "p1"))(t); again.Hash != moved.Hash {
		t.Fatal("another patient's or a shared resource changed the state")
	}
	_, err := s.State(ctx, "nobody")
	wantErr(t, "unknown patient", err, store.ErrNotFound)
}

func testAccessLog(t *testing.T, s store.Store) {
	ctx := context.Background()
	if h := ok(s.LogHead(ctx))(t); h != (store.LogHead{}) {
		t.Fatalf("empty head %+v", h)
	}
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 999, time.UTC) // nanoseconds are cut to microseconds
	in := []store.LogEntry{
		{Time: t0, ActorKind: store.ActorPatient, ActorID: "0xaaaa", Action: "everything", PatientID: "p1", Outcome: store.Allowed},
		{ActorKind: store.ActorGrantee, ActorID: "0xbbbb", Purpose: access.Treatment, Action: "read", PatientID: "p2",
			Resources: []string{"Observation/o1", "Condition/c1/_history/2"}, Outcome: store.Allowed},
	}
	out := ok(s.AppendLog(ctx, in...))(t)
	if out[0].Seq != 0 || out[1].Seq != 1 || !out[0].Time.Equal(store.Micro(t0)) || out[1].Time.IsZero() {
		t.Fatalf("appended %+v", out)
	}
	if out[1].Prev != out[0].Hash || out[0].Prev != ([32]byte{}) {
		t.Fatal("not chained")
	}
	more := ok(s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorAnonymous, ActorID: "g", Purpose: access.Research,
		Action: "search", PatientID: "p1", Outcome: store.Denied, Detail: "grant expired"}))(t)
	if more[0].Seq != 2 || more[0].Prev != out[1].Hash {
		t.Fatalf("third entry %+v", more[0])
	}
	head := ok(store.VerifyLog(ctx, s))(t)
	if head.Next != 3 || head.Hash != more[0].Hash {
		t.Fatalf("verified head %+v", head)
	}
	stored := ok(s.LogRange(ctx, 0, 0))(t)
	if len(stored) != 3 || stored[1].Resources[1] != "Condition/c1/_history/2" || stored[2].Detail != "grant expired" || stored[1].Purpose != access.Treatment {
		t.Fatalf("stored %+v", stored)
	}
	if tail := ok(s.LogRange(ctx, 2, 10))(t); len(tail) != 1 || tail[0].Seq != 2 {
		t.Fatalf("range from 2: %+v", tail)
	}
	p1 := ok(s.PatientLog(ctx, "p1", 0, 0))(t)
	if len(p1) != 2 || p1[0].Seq != 0 || p1[1].Seq != 2 {
		t.Fatalf("patient log %+v", p1)
	}
	if far := ok(s.PatientLog(ctx, "p1", 1<<63, 0))(t); len(far) != 0 {
		t.Fatalf("patient log from 2^63: %+v", far)
	}
	for _, c := range []struct {
		name string
		e    store.LogEntry
	}{
		{"no actor kind", store.LogEntry{Action: "read", Outcome: store.Allowed}},
		{"no outcome", store.LogEntry{ActorKind: store.ActorStaff, Action: "read"}},
		{"no action", store.LogEntry{ActorKind: store.ActorStaff, Outcome: store.Allowed}},
		{"bad purpose", store.LogEntry{ActorKind: store.ActorStaff, Action: "read", Outcome: store.Allowed, Purpose: 9}},
		{"huge string", store.LogEntry{ActorKind: store.ActorStaff, Action: "read", Outcome: store.Allowed, Detail: string(make([]byte, store.MaxLogString+1))}},
	} {
		_, err := s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorStaff, Action: "ok", Outcome: store.Allowed}, c.e)
		wantErr(t, c.name, err, store.ErrInvalid)
	}
	if h := ok(s.LogHead(ctx))(t); h.Next != 3 {
		t.Fatalf("a rejected append moved the head to %d", h.Next)
	}
}

func testAnchors(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.LatestAnchor(ctx)
	wantErr(t, "no anchor yet", err, store.ErrNotFound)
	seed(t, s, "p1", []string{"o1"}, nil)
	seed(t, s, "p2", []string{"x1", "x2"}, nil)
	seed(t, s, "untagged", []string{"u1"}, nil)
	wantErr(t, "tag p2", s.MapTag(ctx, "p2", Tag(2)), nil)
	wantErr(t, "tag p1", s.MapTag(ctx, "p1", Tag(1)), nil)
	ok(s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorSystem, Action: "a", Outcome: store.Allowed},
		store.LogEntry{ActorKind: store.ActorSystem, Action: "b", Outcome: store.Allowed}))(t)

	dirty := ok(s.Dirty(ctx, 2))(t)
	if len(dirty) != 2 || dirty[0].Tag != Tag(1) || dirty[0].PatientID != "p1" || dirty[1].PatientID != "p2" {
		t.Fatalf("dirty %+v", dirty)
	}
	for _, d := range dirty {
		checkState(t, s, d, 2)
	}
	_, err = s.Dirty(ctx, 3)
	wantErr(t, "dirty past the log's end", err, store.ErrConflict)
	wrongHash := dirty[0]
	wrongHash.Hash[0] ^= 1
	future := dirty[0]
	future.Seq++
	future.History.Size++
	otherPatient := dirty[0]
	otherPatient.PatientID = "p2"
	unknownTag := dirty[0]
	unknownTag.Tag = Tag(77)
	wrongRoot := dirty[0]
	wrongRoot.History.Root[0] ^= 1
	wrongRoot.Hash = store.StateHashV2(wrongRoot.History, wrongRoot.Log)
	shortHistory := dirty[1]
	shortHistory.Seq, shortHistory.History = 1, ok(store.HistoryRoot(ok(s.History(ctx, "p2", 0, 1))(t)))(t)
	shortHistory.Hash = store.StateHashV2(shortHistory.History, shortHistory.Log)
	sizeNotSeq := dirty[0]
	sizeNotSeq.History.Size++
	wrongThrough := dirty[0]
	wrongThrough.Log.Through = 1
	wrongThrough.Hash = store.StateHashV2(wrongThrough.History, wrongThrough.Log)
	wrongCount := dirty[0]
	wrongCount.Log.Count = 1
	wrongCount.Hash = store.StateHashV2(wrongCount.History, wrongCount.Log)
	legacy := dirty[0]
	legacy.Legacy = true
	root := [32]byte{1}
	for _, c := range []struct {
		name string
		a    store.Anchor
		want error
	}{
		{"log range not at the start", store.Anchor{LogFrom: 1, LogCount: 1, LogRoot: root, StateRoot: root}, store.ErrConflict},
		{"log range past the end", store.Anchor{LogFrom: 0, LogCount: 3, LogRoot: root, StateRoot: root}, store.ErrConflict},
		{"log root without log entries", store.Anchor{LogFrom: 0, LogCount: 0, LogRoot: root, StateRoot: root}, store.ErrInvalid},
		{"empty batch", store.Anchor{LogFrom: 0, LogCount: 0}, store.ErrInvalid},
		{"state hash that was never the state", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{wrongHash}}, store.ErrConflict},
		{"state from the future", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{future}}, store.ErrConflict},
		{"tag of another patient", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{otherPatient}}, store.ErrConflict},
		{"unknown tag", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{unknownTag}}, store.ErrNotFound},
		{"tag twice", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{dirty[0], dirty[0]}}, store.ErrInvalid},
		{"history root that was never the history", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{wrongRoot}}, store.ErrConflict},
		{"history size that is not the change number", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{sizeNotSeq}}, store.ErrInvalid},
		{"log commitment through another seq than the batch's end", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{wrongThrough}}, store.ErrConflict},
		{"log commitment with a wrong count", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{wrongCount}}, store.ErrConflict},
		{"log commitment for another batch end", store.Anchor{LogFrom: 0, LogCount: 1, LogRoot: root, StateRoot: root, States: []store.PatientState{dirty[0]}}, store.ErrConflict},
		{"a v1 state", store.Anchor{LogFrom: 0, LogCount: 2, States: []store.PatientState{legacy}}, store.ErrInvalid},
	} {
		_, err := s.AddAnchor(ctx, c.a)
		wantErr(t, c.name, err, c.want)
	}
	if _, err := s.LatestAnchor(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a rejected anchor was stored: %v", err)
	}

	// p2 changes after its state was read: the anchor covers the older state,
	// which is still provably p2's records at that change, and p2 stays dirty.
	ok(s.Apply(ctx, store.Batch{PatientID: "p2", Writes: []store.Write{{Type: "Observation", ID: "x3", Raw: obs("x3", "final"), Mode: store.Create}}}))(t)
	a1 := ok(s.AddAnchor(ctx, store.Anchor{LogFrom: 0, LogCount: 2, LogRoot: root, StateRoot: root, States: []store.PatientState{dirty[1], dirty[0]}}))(t)
	if a1.Batch != 0 || len(a1.States) != 2 || a1.States[0].Tag != Tag(1) {
		t.Fatalf("anchor %+v", a1)
	}
	// An older history than the one anchored would make it go back.
	_, err = s.AddAnchor(ctx, store.Anchor{LogFrom: 2, LogCount: 0, StateRoot: root, States: []store.PatientState{shortHistory}})
	wantErr(t, "a history shorter than the anchored one", err, store.ErrConflict)
	still := ok(s.Dirty(ctx, 2))(t)
	if len(still) != 1 || still[0].PatientID != "p2" || still[0].Seq != 3 {
		t.Fatalf("dirty after anchor %+v", still)
	}
	checkState(t, s, still[0], 2)
	if st := ok(s.State(ctx, "p1"))(t); st.Dirty {
		t.Fatal("p1 still dirty")
	}
	got := ok(s.Anchor(ctx, 0))(t)
	if got.LogFrom != 0 || got.LogCount != 2 || got.LogRoot != root || got.StateRoot != root || len(got.States) != 2 || got.States[1] != dirty[1] || got.TxHash != "" {
		t.Fatalf("stored anchor %+v", got)
	}
	wantErr(t, "set tx", s.SetAnchorTx(ctx, 0, "0xabc"), nil)
	wantErr(t, "set tx of a missing anchor", s.SetAnchorTx(ctx, 9, "0xabc"), store.ErrNotFound)
	if l := ok(s.LatestAnchor(ctx))(t); l.Batch != 0 || l.TxHash != "0xabc" {
		t.Fatalf("latest %+v", l)
	}
	// A batch without log entries carries the rest of the dirty states.
	_, err = s.AddAnchor(ctx, store.Anchor{LogFrom: 0, LogCount: 0, StateRoot: root})
	wantErr(t, "overlapping batch", err, store.ErrConflict)
	a2 := ok(s.AddAnchor(ctx, store.Anchor{LogFrom: 2, LogCount: 0, StateRoot: root, States: still}))(t)
	if a2.Batch != 1 || len(ok(s.Dirty(ctx, 2))(t)) != 0 {
		t.Fatalf("second anchor %+v", a2)
	}
	if got := ok(s.Anchor(ctx, 1))(t); len(got.States) != 1 || got.States[0] != still[0] {
		t.Fatalf("stored states %+v, want %+v", got.States, still)
	}
	// A batch with entries may start where a batch without entries
	// started, as the contract allows.
	ok(s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorSystem, Action: "c", Outcome: store.Allowed}))(t)
	a3 := ok(s.AddAnchor(ctx, store.Anchor{LogFrom: 2, LogCount: 1, LogRoot: root, StateRoot: root}))(t)
	if a3.Batch != 2 || a3.LogFrom != 2 {
		t.Fatalf("third anchor %+v", a3)
	}
	_, err = s.Anchor(ctx, 3)
	wantErr(t, "missing anchor", err, store.ErrNotFound)
	// The latest leaf of every tagged patient, and the batches in order.
	latest := ok(s.LatestStates(ctx))(t)
	if len(latest) != 2 || latest[0] != got.States[0] || latest[1] != still[0] {
		t.Fatalf("latest states %+v", latest)
	}
	bs := ok(s.Batches(ctx, 1, 5))(t)
	if len(bs) != 2 || bs[0].Batch != 1 || bs[1].Batch != 2 || bs[1].LogCount != 1 || len(bs[0].States) != 0 {
		t.Fatalf("batches from 1: %+v", bs)
	}
	if bs := ok(s.Batches(ctx, 0, 1))(t); len(bs) != 1 || bs[0].Batch != 0 || bs[0].TxHash != "0xabc" {
		t.Fatalf("first batch: %+v", bs)
	}
}

// historyOf reads a patient's whole history a page at a time, the way a
// client does, and returns its tree.
func historyOf(t *testing.T, s store.Store, patient string) (store.History, []store.HistoryEntry) {
	t.Helper()
	var all []store.HistoryEntry
	for {
		page := ok(s.History(context.Background(), patient, uint64(len(all)), 2))(t)
		if len(page) == 0 {
			return ok(store.HistoryRoot(all))(t), all
		}
		all = append(all, page...)
	}
}

// logCommitmentOf computes a patient's log commitment through a log seq
// from the patient's entries, the way a client does.
func logCommitmentOf(t *testing.T, s store.Store, patient string, through uint64) store.LogCommitment {
	t.Helper()
	var c store.LogCommitment
	for _, e := range ok(s.PatientLog(context.Background(), patient, 0, store.MaxCount))(t) {
		if e.Seq < through {
			c = c.Extend(e.Seq, e.Hash)
		}
	}
	c.Through = through
	return c
}

// checkState checks a state from Dirty against the patient's history and
// log as a client computes them, through log seq through.
func checkState(t *testing.T, s store.Store, st store.PatientState, through uint64) {
	t.Helper()
	h, _ := historyOf(t, s, st.PatientID)
	p := ok(s.Patient(context.Background(), st.PatientID))(t)
	if st.Seq != p.Seq || st.History != h || st.Log != logCommitmentOf(t, s, st.PatientID, through) ||
		st.Hash != store.StateHashV2(st.History, st.Log) || st.Legacy {
		t.Fatalf("state %+v; the patient's history %+v at change %d", st, h, p.Seq)
	}
}

// testHistory: the history is every version in change order, with its
// SHA-256, paged from a size; shared resources and other patients' are not
// in it.
func testHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	if h := ok(s.History(ctx, "p1", 0, 0))(t); len(h) != 0 {
		t.Fatalf("empty history %+v", h)
	}
	seed(t, s, "p1", []string{"o1", "o2"}, nil)
	seed(t, s, "p2", []string{"x1"}, nil)
	ok(s.Apply(ctx, store.Batch{PatientID: "p1", Writes: []store.Write{
		{Type: "Observation", ID: "o1", Raw: obs("o1", "amended"), Mode: store.Update},
		{Type: "Organization", ID: "org", Raw: []byte(`{"resourceType":"Organization"}`), Shared: true, Mode: store.CreateIfAbsent},
		{Type: "Observation", ID: "o2", Raw: obs("o2", "final"), Mode: store.Upsert}, // unchanged: no change, no leaf
	}}))(t)
	h, all := historyOf(t, s, "p1")
	var got []string
	for _, e := range all {
		if e.SHA256 != sha256.Sum256(ok(s.GetVersion(ctx, e.Type, e.ID, e.Version))(t).Raw) {
			t.Fatalf("entry %+v: SHA-256 is not its version's", e)
		}
		got = append(got, fmt.Sprintf("%d %s/%s v%d", e.Seq, e.Type, e.ID, e.Version))
	}
	if want := []string{"1 Observation/o1 v1", "2 Observation/o2 v1", "3 Observation/o1 v2"}; !slices.Equal(got, want) || h.Size != 3 {
		t.Fatalf("history %v (%d)", got, h.Size)
	}
	if tail := ok(s.History(ctx, "p1", 2, 10))(t); len(tail) != 1 || tail[0].Seq != 3 {
		t.Fatalf("after 2: %+v", tail)
	}
	if none := ok(s.History(ctx, "p1", 3, 10))(t); len(none) != 0 {
		t.Fatalf("after 3: %+v", none)
	}
	for _, after := range []uint64{1 << 63, 1<<64 - 1, 1<<63 - 1} {
		if far := ok(s.History(ctx, "p1", after, 0))(t); len(far) != 0 {
			t.Fatalf("after %d: %+v", after, far)
		}
	}
	_, err := s.History(ctx, "nobody", 0, 0)
	wantErr(t, "unknown patient", err, store.ErrNotFound)
}

// testLogCommitment: a patient's log commitment grows with the entries
// about the patient, batch after batch, and makes the patient dirty even
// when the records did not change; entries about others do not.
func testLogCommitment(t *testing.T, s store.Store) {
	ctx := context.Background()
	seed(t, s, "p1", []string{"o1"}, nil)
	seed(t, s, "p2", []string{"x1"}, nil)
	seed(t, s, "p3", nil, nil) // untagged until later, entries about it meanwhile
	wantErr(t, "tag p1", s.MapTag(ctx, "p1", Tag(1)), nil)
	wantErr(t, "tag p2", s.MapTag(ctx, "p2", Tag(2)), nil)
	entry := func(p string) store.LogEntry {
		return store.LogEntry{ActorKind: store.ActorPatient, ActorID: "0xaaaa", Action: "read", PatientID: p, Outcome: store.Allowed}
	}
	root := [32]byte{1}
	anchorAll := func(from uint64) []store.PatientState {
		t.Helper()
		end := ok(s.LogHead(ctx))(t).Next
		dirty := ok(s.Dirty(ctx, end))(t)
		for _, d := range dirty {
			checkState(t, s, d, end)
		}
		var logRoot [32]byte
		if end > from {
			logRoot = root
		}
		ok(s.AddAnchor(ctx, store.Anchor{LogFrom: from, LogCount: end - from, LogRoot: logRoot, StateRoot: root, States: dirty}))(t)
		return dirty
	}
	ok(s.AppendLog(ctx, entry("p1"), entry("p3"), entry("p1")))(t)
	if first := anchorAll(0); len(first) != 2 || first[0].Log.Count != 2 || first[1].Log.Count != 0 {
		t.Fatalf("first batch %+v", first)
	}
	if d := ok(s.Dirty(ctx, 3))(t); len(d) != 0 {
		t.Fatalf("dirty with nothing new: %+v", d)
	}
	// An entry about p2 alone makes p2, and only p2, dirty; p3 has no tag.
	ok(s.AppendLog(ctx, entry("p2"), entry("p3"), entry("")))(t)
	second := anchorAll(3)
	if len(second) != 1 || second[0].PatientID != "p2" || second[0].Log.Count != 1 || second[0].Log.Through != 6 || second[0].Seq != 1 {
		t.Fatalf("second batch %+v", second)
	}
	// p3 gets its tag: its first leaf commits to every entry about it so
	// far, anchored before or not.
	wantErr(t, "tag p3", s.MapTag(ctx, "p3", Tag(3)), nil)
	ok(s.AppendLog(ctx, entry("p1")))(t)
	third := anchorAll(6)
	if len(third) != 2 || third[0].PatientID != "p1" || third[0].Log.Count != 3 || third[1].PatientID != "p3" || third[1].Log.Count != 2 {
		t.Fatalf("third batch %+v", third)
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := s.Apply(ctx, store.Batch{PatientID: "p1",
					Writes: []store.Write{
						{Type: "Observation", ID: id, Raw: obs(id, "final"), Mode: store.Create},
						{Type: "Organization", ID: "shared", Raw: []byte(`{"resourceType":"Organization"}`), Shared: true, Mode: store.CreateIfAbsent},
					},
					Log: []store.LogEntry{{ActorKind: store.ActorStaff, ActorID: id, Action: "create", PatientID: "p1", Outcome: store.Allowed}}})
				if err == nil {
					_, err = s.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorPatient, ActorID: id, Action: "read", PatientID: "p1", Outcome: store.Allowed})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	changes := ok(s.Changes(ctx, "p1", 0, store.MaxCount))(t)
	if len(changes) != workers*each {
		t.Fatalf("%d changes", len(changes))
	}
	for i, c := range changes {
		if c.Seq != uint64(i+1) {
			t.Fatalf("change %d has seq %d", i, c.Seq)
		}
	}
	head := ok(store.VerifyLog(ctx, s))(t)
	if head.Next != 2*workers*each {
		t.Fatalf("log has %d entries", head.Next)
	}
	if st := ok(s.State(ctx, "p1"))(t); st.Count != workers*each || st.Hash != stateOf(t, s, "p1") {
		t.Fatalf("state %+v", st)
	}
}

func testNonces(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{31: 3}
	aExp, bExp, cExp := now.Add(time.Minute), now.Add(5*time.Minute), now.Add(time.Minute+time.Microsecond)
	wantErr(t, "first use", s.UseNonce(ctx, a, aExp), nil)
	wantErr(t, "replay", s.UseNonce(ctx, a, aExp), store.ErrConflict)
	// The pair is what is recorded: a request's expiry is signed with its
	// nonce, so the same nonce with another expiry is another request.
	wantErr(t, "the nonce with another expiry", s.UseNonce(ctx, a, bExp), nil)
	wantErr(t, "another nonce", s.UseNonce(ctx, b, bExp), nil)
	wantErr(t, "a third nonce", s.UseNonce(ctx, c, cExp), nil)
	// Nothing has expired yet: nothing is pruned.
	if n := ok(s.PruneNonces(ctx, now))(t); n != 0 {
		t.Fatalf("pruned %d before any expiry", n)
	}
	// An expired nonce is still refused until it is pruned …
	if n := ok(s.PruneNonces(ctx, now.Add(time.Minute-time.Microsecond)))(t); n != 0 {
		t.Fatalf("pruned %d before any expiry", n)
	}
	wantErr(t, "expired, not pruned", s.UseNonce(ctx, a, aExp), store.ErrConflict)
	// … and pruning forgets exactly the nonces expired at or before the instant.
	if n := ok(s.PruneNonces(ctx, aExp))(t); n != 1 {
		t.Fatalf("pruned %d nonces at a's expiry, want 1", n)
	}
	wantErr(t, "unexpired after prune", s.UseNonce(ctx, b, bExp), store.ErrConflict)
	wantErr(t, "unexpired after prune", s.UseNonce(ctx, c, cExp), store.ErrConflict)
	wantErr(t, "unexpired after prune", s.UseNonce(ctx, a, bExp), store.ErrConflict)
	wantErr(t, "pruned nonce", s.UseNonce(ctx, a, aExp), nil)
	if n := ok(s.PruneNonces(ctx, now.Add(time.Hour)))(t); n != 4 {
		t.Fatalf("pruned %d nonces at the end, want 4", n)
	}
}

// testNonceWithLog: a nonce and its request's log entry are recorded
// together or not at all.
func testNonceWithLog(t *testing.T, s store.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	a, b := [32]byte{7}, [32]byte{8}
	entry := store.LogEntry{ActorKind: store.ActorPatient, ActorID: "0xabc", Action: "read", PatientID: "p1", Resources: []string{"Observation/o1"}, Outcome: store.Allowed}
	got := ok(s.UseNonceWithLog(ctx, a, exp, entry))(t)
	if len(got) != 1 || got[0].Seq != 0 || got[0].Hash == ([32]byte{}) {
		t.Fatalf("appended %+v", got)
	}
	_, err := s.UseNonceWithLog(ctx, a, exp, entry)
	wantErr(t, "replay", err, store.ErrConflict)
	wantErr(t, "replay through UseNonce", s.UseNonce(ctx, a, exp), store.ErrConflict)
	bad := entry
	bad.Action = ""
	_, err = s.UseNonceWithLog(ctx, b, exp, bad)
	wantErr(t, "invalid entry", err, store.ErrInvalid)
	if head := ok(store.VerifyLog(ctx, s))(t); head.Next != 1 {
		t.Fatalf("the log has %d entries, want 1 (a replay or a refused entry was written)", head.Next)
	}
	wantErr(t, "UseNonce of an unused nonce", s.UseNonce(ctx, b, exp), nil)
	_, err = s.UseNonceWithLog(ctx, b, exp, entry)
	wantErr(t, "nonce recorded alone, then with a log entry", err, store.ErrConflict)
}

// testConcurrentNonceWithLog: of concurrent requests with one nonce exactly
// one gets its entry logged, also when they share a group commit.
func testConcurrentNonceWithLog(t *testing.T, s store.Store) {
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	const nonces = 16
	race(t, 8, nonces, func(_, i int) error {
		e := store.LogEntry{ActorKind: store.ActorPatient, ActorID: "0xabc", Action: "read", PatientID: "p1", Outcome: store.Allowed, Detail: fmt.Sprint(i)}
		_, err := s.UseNonceWithLog(ctx, [32]byte{0: 0xbb, 31: byte(i)}, exp, e)
		return err
	})
	if head := ok(store.VerifyLog(ctx, s))(t); head.Next != nonces {
		t.Fatalf("the log has %d entries, want one per nonce (%d)", head.Next, nonces)
	}
}

// testConcurrentNonces: of concurrent uses of one nonce exactly one wins.
func testConcurrentNonces(t *testing.T, s store.Store) {
	RaceNonces(t, []store.Nonces{s}, 8, 16, 0xaa)
}

// RaceNonces has workers use the same nonces at once, worker w through
// stores[w % len(stores)], and fails unless each nonce has exactly one
// winner and every loser got store.ErrConflict. prefix keeps the nonces of
// one call apart from another's.
func RaceNonces(t testing.TB, stores []store.Nonces, workers, nonces int, prefix byte) {
	t.Helper()
	ctx := context.Background()
	exp := time.Now().Add(time.Minute)
	race(t, workers, nonces, func(w, i int) error {
		return stores[w%len(stores)].UseNonce(ctx, [32]byte{0: prefix, 30: byte(i >> 8), 31: byte(i)}, exp)
	})
}

// race has workers call use(worker, i) for every i < n at once, and fails
// unless each i has exactly one winner (nil) and every loser got
// store.ErrConflict.
func race(t testing.TB, workers, n int, use func(w, i int) error) {
	t.Helper()
	wins := make([]atomic.Int32, n)
	var wg sync.WaitGroup
	errs := make(chan error, workers*n)
	for w := range workers {
		wg.Go(func() {
			for i := range n {
				switch err := use(w, i); {
				case err == nil:
					wins[i].Add(1)
				case !errors.Is(err, store.ErrConflict):
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range wins {
		if got := wins[i].Load(); got != 1 {
			t.Fatalf("%d: %d winners", i, got)
		}
	}
}

func testClaimCodes(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 123_456_789)
	h1, h2, h3 := sha256.Sum256([]byte("code-1")), sha256.Sum256([]byte("code-2")), sha256.Sum256([]byte("code-3"))
	tc1, tc2 := DeskCode(1), DeskCode(2)
	wantErr(t, "unknown patient", s.PutClaimCode(ctx, store.ClaimCode{Hash: h1, PatientID: "p1", Expires: now.Add(time.Hour), TagCode: tc1}), store.ErrNotFound)
	ok(s.CreatePatient(ctx, "p1"))(t)
	ok(s.CreatePatient(ctx, "p2"))(t)
	wantErr(t, "no hash", s.PutClaimCode(ctx, store.ClaimCode{PatientID: "p1", Expires: now.Add(time.Hour), TagCode: tc1}), store.ErrInvalid)
	wantErr(t, "no expiry", s.PutClaimCode(ctx, store.ClaimCode{Hash: h1, PatientID: "p1", TagCode: tc1}), store.ErrInvalid)
	wantErr(t, "no desk code", s.PutClaimCode(ctx, store.ClaimCode{Hash: h1, PatientID: "p1", Expires: now.Add(time.Hour)}), store.ErrInvalid)
	wantErr(t, "desk code not canonical", s.PutClaimCode(ctx, store.ClaimCode{Hash: h1, PatientID: "p1", Expires: now.Add(time.Hour), TagCode: tagcode.Code(strings.ToLower(string(tc1)))}), store.ErrInvalid)
	c1 := store.ClaimCode{Hash: h1, PatientID: "p1", Expires: now.Add(24 * time.Hour), TagCode: tc1}
	issued := store.LogEntry{ActorKind: store.ActorStaff, ActorID: "clerk", Action: "claim-code", PatientID: "p1", Outcome: store.Allowed}
	head := ok(s.LogHead(ctx))(t)
	wantErr(t, "malformed log entry", s.PutClaimCode(ctx, c1, store.LogEntry{}), store.ErrInvalid)
	wantErr(t, "put", s.PutClaimCode(ctx, c1, issued), nil)
	if l := ok(s.PatientLog(ctx, "p1", head.Next, 10))(t); len(l) != 1 || l[0].Action != "claim-code" || l[0].ActorID != "clerk" {
		t.Fatalf("log after issuing a code: %+v", l)
	}
	wantErr(t, "same hash again", s.PutClaimCode(ctx, store.ClaimCode{Hash: h1, PatientID: "p2", Expires: now.Add(time.Hour), TagCode: tc2}), store.ErrConflict)
	wantErr(t, "put another", s.PutClaimCode(ctx, store.ClaimCode{Hash: h2, PatientID: "p2", Expires: now.Add(time.Hour), TagCode: tc2}), nil)
	wantErr(t, "second code of a patient", s.PutClaimCode(ctx, store.ClaimCode{Hash: h3, PatientID: "p1", Expires: now.Add(time.Minute), TagCode: tc1}), nil)

	got := ok(s.ClaimCode(ctx, h1, now))(t)
	if got.Hash != h1 || got.PatientID != "p1" || !got.Expires.Equal(store.Micro(c1.Expires)) || got.TagCode != tc1 {
		t.Fatalf("looked up %+v, want %+v", got, c1)
	}
	if got := ok(s.ClaimCode(ctx, h2, now))(t); got.PatientID != "p2" || got.TagCode != tc2 {
		t.Fatalf("second code %+v", got)
	}
	_, err := s.ClaimCode(ctx, sha256.Sum256([]byte("unknown")), now)
	wantErr(t, "unknown code", err, store.ErrNotFound)
	wantErr(t, "consume unknown", s.ConsumeClaimCode(ctx, sha256.Sum256([]byte("unknown"))), store.ErrNotFound)
	// Valid strictly before its expiry.
	ok(s.ClaimCode(ctx, h3, now.Add(time.Minute-time.Microsecond)))(t)
	_, err = s.ClaimCode(ctx, h3, now.Add(time.Minute))
	wantErr(t, "expired code", err, store.ErrNotFound)
	_, err = s.ClaimCode(ctx, h1, now.Add(25*time.Hour))
	wantErr(t, "expired code", err, store.ErrNotFound)
	// Consumed once.
	wantErr(t, "consume", s.ConsumeClaimCode(ctx, h1), nil)
	_, err = s.ClaimCode(ctx, h1, now)
	wantErr(t, "consumed code", err, store.ErrNotFound)
	wantErr(t, "consume again", s.ConsumeClaimCode(ctx, h1), store.ErrNotFound)
	ok(s.ClaimCode(ctx, h2, now))(t) // the others are untouched
	// Pruning removes the expired codes only.
	if n := ok(s.PruneClaimCodes(ctx, now))(t); n != 0 {
		t.Fatalf("pruned %d before any expiry", n)
	}
	if n := ok(s.PruneClaimCodes(ctx, now.Add(time.Minute)))(t); n != 1 {
		t.Fatalf("pruned %d at h3's expiry, want 1", n)
	}
	wantErr(t, "consume pruned", s.ConsumeClaimCode(ctx, h3), store.ErrNotFound)
	ok(s.ClaimCode(ctx, h2, now))(t)
}

// testConcurrentConsume: of concurrent consumers of one code exactly one wins.
func testConcurrentConsume(t *testing.T, s store.Store) {
	ctx := context.Background()
	ok(s.CreatePatient(ctx, "p1"))(t)
	h := sha256.Sum256([]byte("code"))
	wantErr(t, "put", s.PutClaimCode(ctx, store.ClaimCode{Hash: h, PatientID: "p1", Expires: time.Now().Add(time.Hour), TagCode: DeskCode(1)}), nil)
	var wins atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			err := s.ConsumeClaimCode(ctx, h)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, store.ErrNotFound):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
}

// testStaff: accounts, their tokens and login sessions, roles, disabling.
func testStaff(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	tok1, tok2, sess := sha256.Sum256([]byte("token-1")), sha256.Sum256([]byte("token-2")), sha256.Sum256([]byte("session"))
	added := store.LogEntry{ActorKind: store.ActorStaff, ActorID: "boss", Action: "staff-add", Outcome: store.Allowed, Detail: "ann"}
	head := ok(s.LogHead(ctx))(t)
	ann := store.StaffAccount{ID: "ann", Name: "Ann Lee", Role: store.RoleClerk, PasswordHash: "$argon2id$x", TokenHash: tok1, Created: now}
	for _, bad := range []struct {
		name string
		a    store.StaffAccount
	}{
		{"bad id", store.StaffAccount{ID: "a b", Name: "x", Role: store.RoleClerk}},
		{"no name", store.StaffAccount{ID: "x", Role: store.RoleClerk}},
		{"two lines", store.StaffAccount{ID: "x", Name: "a\nb", Role: store.RoleClerk}},
		{"bad role", store.StaffAccount{ID: "x", Name: "x", Role: "root"}},
	} {
		wantErr(t, bad.name, s.AddStaff(ctx, bad.a), store.ErrInvalid)
	}
	wantErr(t, "add", s.AddStaff(ctx, ann, added), nil)
	if l := ok(s.LogRange(ctx, head.Next, 10))(t); len(l) != 1 || l[0].Action != "staff-add" {
		t.Fatalf("log after adding: %+v", l)
	}
	wantErr(t, "same id", s.AddStaff(ctx, store.StaffAccount{ID: "ann", Name: "Other", Role: store.RoleAdmin}), store.ErrConflict)
	wantErr(t, "same token", s.AddStaff(ctx, store.StaffAccount{ID: "bob", Name: "Bob", Role: store.RoleAdmin, TokenHash: tok1}), store.ErrConflict)
	wantErr(t, "no token", s.AddStaff(ctx, store.StaffAccount{ID: "bob", Name: "Bob", Role: store.RoleAdmin, Created: now}), nil)
	wantErr(t, "another without a token", s.AddStaff(ctx, store.StaffAccount{ID: "cy", Name: "Cy", Role: store.RoleClerk, Created: now}), nil)

	got := ok(s.StaffAccount(ctx, "ann"))(t)
	if got.Name != "Ann Lee" || got.Role != store.RoleClerk || got.PasswordHash != "$argon2id$x" || got.TokenHash != tok1 || !got.Created.Equal(now) || got.Disabled {
		t.Fatalf("read %+v", got)
	}
	_, err := s.StaffAccount(ctx, "nobody")
	wantErr(t, "unknown", err, store.ErrNotFound)
	if got := ok(s.StaffByToken(ctx, tok1, now))(t); got.ID != "ann" {
		t.Fatalf("by token: %+v", got)
	}
	_, err = s.StaffByToken(ctx, tok2, now)
	wantErr(t, "unknown token", err, store.ErrNotFound)
	if l := ok(s.ListStaff(ctx))(t); len(l) != 3 || l[0].ID != "ann" || l[1].ID != "bob" || l[2].ID != "cy" {
		t.Fatalf("list: %+v", l)
	}

	// Sessions: valid strictly before their expiry; deleted once.
	wantErr(t, "session", s.PutStaffSession(ctx, sess, "bob", now.Add(time.Hour)), nil)
	if got := ok(s.StaffByToken(ctx, sess, now))(t); got.ID != "bob" {
		t.Fatalf("by session: %+v", got)
	}
	_, err = s.StaffByToken(ctx, sess, now.Add(time.Hour))
	wantErr(t, "expired session", err, store.ErrNotFound)
	if n := ok(s.PruneStaffSessions(ctx, now))(t); n != 0 {
		t.Fatalf("pruned %d live sessions", n)
	}
	wantErr(t, "logout", s.DeleteStaffSession(ctx, sess), nil)
	wantErr(t, "logout again", s.DeleteStaffSession(ctx, sess), store.ErrNotFound)
	_, err = s.StaffByToken(ctx, sess, now)
	wantErr(t, "ended session", err, store.ErrNotFound)

	// Changes: role, password, token; a taken token; disabling ends sessions.
	admin, pw := store.RoleAdmin, "$argon2id$y"
	wantErr(t, "promote", s.UpdateStaff(ctx, "ann", store.StaffChange{Role: &admin, PasswordHash: &pw, TokenHash: &tok2}), nil)
	if got := ok(s.StaffAccount(ctx, "ann"))(t); got.Role != store.RoleAdmin || got.PasswordHash != pw || got.TokenHash != tok2 {
		t.Fatalf("after the change: %+v", got)
	}
	_, err = s.StaffByToken(ctx, tok1, now)
	wantErr(t, "old token", err, store.ErrNotFound)
	wantErr(t, "taken token", s.UpdateStaff(ctx, "bob", store.StaffChange{TokenHash: &tok2}), store.ErrConflict)
	bad := store.StaffRole("root")
	wantErr(t, "bad role", s.UpdateStaff(ctx, "bob", store.StaffChange{Role: &bad}), store.ErrInvalid)
	wantErr(t, "unknown account", s.UpdateStaff(ctx, "nobody", store.StaffChange{Role: &admin}), store.ErrNotFound)
	wantErr(t, "session", s.PutStaffSession(ctx, sess, "ann", now.Add(time.Hour)), nil)
	yes := true
	wantErr(t, "disable", s.UpdateStaff(ctx, "ann", store.StaffChange{Disabled: &yes}), nil)
	for _, h := range [][32]byte{tok2, sess} {
		_, err = s.StaffByToken(ctx, h, now)
		wantErr(t, "a disabled account's token or session", err, store.ErrNotFound)
	}
	no := false
	wantErr(t, "enable", s.UpdateStaff(ctx, "ann", store.StaffChange{Disabled: &no}), nil)
	if got := ok(s.StaffByToken(ctx, tok2, now))(t); got.ID != "ann" {
		t.Fatalf("enabled again: %+v", got)
	}
	_, err = s.StaffByToken(ctx, sess, now)
	wantErr(t, "a session ended by disabling", err, store.ErrNotFound)
}

// testPatientResources: every patient's current Patient resource, by id,
// in pages; other types and patients without one are not listed.
func testPatientResources(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := range 5 {
		id := fmt.Sprintf("p%d", i)
		ok(s.CreatePatient(ctx, id))(t)
		if i == 3 {
			continue // no Patient resource
		}
		pat := fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"name":[{"family":"F%d"}]}`, id, i)
		ok(s.Apply(ctx, store.Batch{PatientID: id, Writes: []store.Write{{Type: "Patient", ID: id, Raw: pat, Mode: store.Upsert},
			{Type: "Observation", ID: "o" + id, Raw: obs("o"+id, "final"), Mode: store.Upsert}}}))(t)
	}
	var ids []string
	req := store.PageRequest{Count: 2}
	for {
		page := ok(s.PatientResources(ctx, req))(t)
		for _, r := range page.Resources {
			if r.Type != "Patient" {
				t.Fatalf("listed %s/%s", r.Type, r.ID)
			}
			ids = append(ids, r.ID)
		}
		if page.Next == "" {
			break
		}
		req.Cursor = page.Next
	}
	if strings.Join(ids, ",") != "p0,p1,p2,p4" {
		t.Fatalf("patients listed: %v", ids)
	}
	_, err := s.PatientResources(ctx, store.PageRequest{Cursor: "not a cursor"})
	wantErr(t, "bad cursor", err, store.ErrInvalid)
}

func testLocators(t *testing.T, s store.Store) {
	ctx := context.Background()
	note := func(b byte) []byte { return bytes.Repeat([]byte{b}, store.LocatorNoteSize) }
	a, b := [32]byte{31: 1}, [32]byte{0: 0xff, 31: 2}
	if _, err := s.Locator(ctx, a); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a locator never filed: %v", err)
	}
	wantErr(t, "file one", s.PutLocator(ctx, a, note(1)), nil)
	wantErr(t, "file another tag's", s.PutLocator(ctx, b, note(2)), nil)
	for _, bad := range []struct {
		what string
		tag  [32]byte
		note []byte
	}{
		{"a zero tag", [32]byte{}, note(3)},
		{"a short note", a, note(3)[:store.LocatorNoteSize-1]},
		{"a long note", a, append(note(3), 3)},
		{"no note", a, nil},
	} {
		wantErr(t, bad.what, s.PutLocator(ctx, bad.tag, bad.note), store.ErrInvalid)
	}
	if got, err := s.Locator(ctx, a); err != nil || !bytes.Equal(got, note(1)) {
		t.Fatalf("after refused writes: %x %v", got, err)
	}
	wantErr(t, "replace it", s.PutLocator(ctx, a, note(4)), nil)
	for tag, want := range map[[32]byte][]byte{a: note(4), b: note(2)} {
		if got, err := s.Locator(ctx, tag); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("locator %x: %x %v, want %x", tag, got, err, want)
		}
	}
}

func testExportJobs(t *testing.T, s store.Store) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	a := store.ExportJob{ID: "a", Owner: "reader-1", Request: "https://gw/fhir/Patient/$export", Started: t0}
	b := store.ExportJob{ID: "b", Owner: "group-1", Request: "https://gw/fhir/Group/g/$export", Started: t0.Add(time.Second)}
	wantErr(t, "add a", s.AddExportJob(ctx, a), nil)
	wantErr(t, "add b", s.AddExportJob(ctx, b), nil)
	wantErr(t, "add a again", s.AddExportJob(ctx, a), store.ErrConflict)
	wantErr(t, "add without an owner", s.AddExportJob(ctx, store.ExportJob{ID: "c", Started: t0}), store.ErrInvalid)
	got, err := s.ExportJob(ctx, "a")
	if err != nil || got.Owner != a.Owner || got.Request != a.Request || !got.Started.Equal(t0) || !got.Beat.Equal(t0) || !got.Finished.IsZero() || got.Failure != "" || len(got.Parts) != 0 {
		t.Fatalf("a running job: %+v %v", got, err)
	}
	wantErr(t, "beat", s.BeatExportJob(ctx, "a", t0.Add(10*time.Second)), nil)
	wantErr(t, "beat an unknown job", s.BeatExportJob(ctx, "z", t0), store.ErrNotFound)
	if got, _ := s.ExportJob(ctx, "a"); !got.Beat.Equal(t0.Add(10 * time.Second)) {
		t.Fatalf("beat at %v", got.Beat)
	}

	m1, m2 := Tag(1), Tag(2)
	parts := []store.ExportPart{
		{Type: "Observation", Count: 2, NDJSON: []byte("{\"a\":1}\n{\"a\":2}\n")},
		{Type: "Condition", Count: 1, NDJSON: []byte("{\"c\":1}\n")},
	}
	done := t0.Add(20 * time.Second)
	wantErr(t, "finish a", s.FinishExportJob(ctx, "a", done, parts, ""), nil)
	wantErr(t, "finish a twice", s.FinishExportJob(ctx, "a", done, nil, "again"), store.ErrConflict)
	wantErr(t, "finish an unknown job", s.FinishExportJob(ctx, "z", done, parts, ""), store.ErrNotFound)
	got, err = s.ExportJob(ctx, "a")
	if err != nil || !got.Finished.Equal(done) || got.Failure != "" || len(got.Parts) != 2 || got.Parts[0].Type != "Condition" || got.Parts[1].Count != 2 || got.Parts[1].NDJSON != nil {
		t.Fatalf("a finished job: %+v %v", got, err)
	}
	file, err := s.ExportFile(ctx, "a", "Observation")
	if err != nil || len(file) != 1 || string(file[0].NDJSON) != string(parts[0].NDJSON) || file[0].Member != (store.Tag{}) {
		t.Fatalf("a's Observation file: %+v %v", file, err)
	}
	if file, err := s.ExportFile(ctx, "a", "Patient"); err != nil || len(file) != 0 {
		t.Fatalf("a type not exported: %+v %v", file, err)
	}

	// A group's export: parts by member; an empty file is kept.
	wantErr(t, "finish b", s.FinishExportJob(ctx, "b", done, []store.ExportPart{
		{Member: m2, Type: "Observation", Count: 1, NDJSON: []byte("m2\n")},
		{Member: m1, Type: "Observation", Count: 1, NDJSON: []byte("m1\n")},
		{Member: m1, Type: "Condition", Count: 0},
	}, ""), nil)
	file, err = s.ExportFile(ctx, "b", "Observation")
	if err != nil || len(file) != 2 || file[0].Member != m1 || string(file[1].NDJSON) != "m2\n" {
		t.Fatalf("b's Observation file: %+v %v", file, err)
	}
	if file, err := s.ExportFile(ctx, "b", "Condition"); err != nil || len(file) != 1 || file[0].Count != 0 || len(file[0].NDJSON) != 0 {
		t.Fatalf("b's empty Condition file: %+v %v", file, err)
	}

	// A failure; the list; deletion takes the files; pruning the finished.
	c := store.ExportJob{ID: "c", Owner: "reader-2", Started: t0.Add(time.Minute)}
	wantErr(t, "add c", s.AddExportJob(ctx, c), nil)
	wantErr(t, "fail c", s.FinishExportJob(ctx, "c", t0.Add(2*time.Minute), nil, "the records database failed"), nil)
	if got, _ := s.ExportJob(ctx, "c"); got.Failure != "the records database failed" || got.Finished.IsZero() {
		t.Fatalf("a failed job: %+v", got)
	}
	d := store.ExportJob{ID: "d", Owner: "reader-3", Started: t0.Add(time.Hour)}
	wantErr(t, "add d", s.AddExportJob(ctx, d), nil)
	all, err := s.ExportJobs(ctx)
	if err != nil || len(all) != 4 || all[0].ID != "a" || all[3].ID != "d" || len(all[1].Parts) != 0 {
		t.Fatalf("the jobs: %+v %v", all, err)
	}
	wantErr(t, "delete a", s.DeleteExportJob(ctx, "a"), nil)
	wantErr(t, "delete a again", s.DeleteExportJob(ctx, "a"), store.ErrNotFound)
	if file, err := s.ExportFile(ctx, "a", "Observation"); err != nil || len(file) != 0 {
		t.Fatalf("a deleted job's file: %+v %v", file, err)
	}
	if _, err := s.ExportJob(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a deleted job: %v", err)
	}
	wantErr(t, "finish a deleted job", s.FinishExportJob(ctx, "a", done, parts, ""), store.ErrNotFound)
	if n, err := s.PruneExportJobs(ctx, t0.Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("pruned %d (%v), want b and c", n, err)
	}
	if all, _ := s.ExportJobs(ctx); len(all) != 1 || all[0].ID != "d" {
		t.Fatalf("after pruning: %+v (the running one stays)", all)
	}
}
