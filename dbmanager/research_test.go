package dbmanager

// Research reads through the gateway: what the answer's headers and links
// say besides the de-identified resources.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// researchWorld is a world whose patient p1 has two Observations (o1, o2)
// and an address grantee, the researcher, with a research grant over
// Observations and the Patient.
func researchWorld(t *testing.T) (*world, *ecdsa.PrivateKey) {
	t.Helper()
	w := newWorld(t)
	w.open()
	o2 := strings.Replace(strings.Replace(observationJS, `"id":"o1"`, `"id":"o2"`, 1), "2020-05-01T10:00:00Z", "2021-07-08T09:10:11Z", 1)
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+o2+`}]}`))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("add o2: %d %s", r.status, r.body)
	}
	researcher := simchain.Key("researcher")
	scope, _ := access.NewScope("Observation", "Patient")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(researcher)), scope, access.Research); r.status != 200 {
		t.Fatalf("research grant: %d %s", r.status, r.body)
	}
	return w, researcher
}

// getWithHeaders is w.get with the answer's headers.
func (w *world) getWithHeaders(key *ecdsa.PrivateKey, target string) (resp, http.Header) {
	w.t.Helper()
	res, err := w.gw.App().Test(w.signed(key, target, w.tag, 1), -1)
	if err != nil {
		w.t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, b}, res.Header
}

// TestResearchReadHeaders: a research reader's answer carries no exact
// time: no Last-Modified (the ETag's version is all it gets) and no date
// finer than a year anywhere. The owner's read keeps Last-Modified and the
// stored bytes.
func TestResearchReadHeaders(t *testing.T) {
	w, researcher := researchWorld(t)
	// present's contract: everyone but research readers gets the stored
	// bytes unchanged, and Last-Modified.
	r, h := w.getWithHeaders(w.owner, "/fhir/Observation/o1")
	if r.status != 200 || string(r.body) != observationJS || h.Get("Last-Modified") == "" || h.Get("ETag") != `W/"1"` {
		t.Fatalf("owner's read: %d %v %s", r.status, h, r.body)
	}
	_, pseudonym := g2pseudonyms(w, researcher)
	for _, target := range []string{"/fhir/Observation/" + pseudonym("o1"), "/fhir/Patient/" + pseudonym("p1"), "/fhir/Observation", "/fhir/Patient/$everything",
		"/fhir/Observation/" + pseudonym("o1") + "/_history", "/fhir/Observation/" + pseudonym("o1") + "/_history/1"} {
		r, h := w.getWithHeaders(researcher, target)
		if r.status != 200 {
			t.Fatalf("research %s: %d %s", target, r.status, r.body)
		}
		if lm := h.Get("Last-Modified"); lm != "" {
			t.Errorf("research %s: Last-Modified %q", target, lm)
		}
		for k, v := range h {
			if fullDate.MatchString(strings.Join(v, " ")) {
				t.Errorf("research %s: header %s %q", target, k, v)
			}
		}
		if d := fullDate.Find(r.body); d != nil {
			t.Errorf("research %s: %q in %s", target, d, r.body)
		}
	}
	if _, h := w.getWithHeaders(researcher, "/fhir/Observation/"+pseudonym("o1")); h.Get("ETag") != `W/"1"` {
		t.Errorf("research read: ETag %q, want the version", h.Get("ETag"))
	}
}

// nextLink returns a searchset's next link, "" if none.
func nextLink(t *testing.T, body []byte) string {
	t.Helper()
	var b struct {
		Link []struct{ Relation, URL string }
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatalf("not a bundle: %s", body)
	}
	for _, l := range b.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

// TestResearchCursor: the store's search cursors name the last resource's
// id; a research reader's next links carry them sealed, so its pages name
// no provider id, the pages still add up to the whole search, and a
// cursor made for someone else does not open.
func TestResearchCursor(t *testing.T) {
	w, researcher := researchWorld(t)
	owner := w.get(w.owner, "/fhir/Observation?_count=1")
	ownerNext := nextLink(t, owner.body)
	if ownerNext == "" {
		t.Fatalf("owner's first page has no next link: %s", owner.body)
	}
	first := w.get(researcher, "/fhir/Observation?_count=1")
	next := nextLink(t, first.body)
	if first.status != 200 || next == "" {
		t.Fatalf("research first page: %d %s", first.status, first.body)
	}
	u, err := url.Parse(next)
	if err != nil {
		t.Fatal(err)
	}
	cursor := u.Query().Get("_cursor")
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.StdEncoding} {
		// The store's cursors are type, zero byte, id; three such bytes
		// come by chance in a random cursor once in millions.
		if b, err := enc.DecodeString(cursor); err == nil && (bytes.Contains(b, []byte("Observation")) || bytes.Contains(b, []byte("\x00o1")) || bytes.Contains(b, []byte("\x00o2"))) {
			t.Fatalf("research cursor %q names a resource id: %q", cursor, b)
		}
	}
	if n := base64.RawURLEncoding.EncodedLen(12 + cursorPad + 16); len(cursor) != n {
		t.Errorf("research cursor of %d characters, want %d whatever the id's length", len(cursor), n)
	}
	second := w.get(researcher, next)
	if second.status != 200 {
		t.Fatalf("research second page: %d %s", second.status, second.body)
	}
	_, pseudonym := g2pseudonyms(w, researcher)
	pages := string(first.body) + string(second.body)
	for _, id := range []string{"o1", "o2"} {
		if !strings.Contains(pages, `/fhir/Observation/`+pseudonym(id)+`"`) {
			t.Errorf("%s missing from the research pages: %s", id, pages)
		}
	}
	// The owner's cursor, and the research cursor at the owner, do not open.
	if r := w.get(researcher, ownerNext); r.status != 400 {
		t.Errorf("owner's cursor read by the researcher: %d %s", r.status, r.body)
	}
	if r := w.get(w.owner, next); r.status != 400 {
		t.Errorf("research cursor read by the owner: %d %s", r.status, r.body)
	}
}

// g2pseudonyms returns the gateway's research reader for key and its pseudonyms.
func g2pseudonyms(w *world, key *ecdsa.PrivateKey) (*reader, func(string) string) {
	r := &reader{id: simchain.Addr(key).Hex(), purpose: access.Research}
	return r, w.gw.pseudonyms(r)
}

// TestResearchSearch: a research reader searches by what its copies show —
// dates by year as written, statuses and codes, its pseudonyms — and
// everything finer is refused (400, logged), so no search bisects a date,
// orders within a year, or confirms a provider's id.
func TestResearchSearch(t *testing.T) {
	w, researcher := researchWorld(t)
	// o3: just after midnight on New Year's Day in Paris, still 2020 in UTC.
	o3 := strings.NewReplacer(`"id":"o1"`, `"id":"o3"`, "2020-05-01T10:00:00Z", "2021-01-01T00:30:00+01:00").Replace(observationJS)
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(o3))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("add o3: %d %s", r.status, r.body)
	}
	_, pseudonym := g2pseudonyms(w, researcher)
	get := func(target string) resp { return w.get(researcher, target) }
	stranger := "0b7a7c7e-2f1d-8a6b-9c3d-4e5f60718293" // a pseudonym's shape, nobody's
	for _, c := range []struct {
		target string
		want   []string // provider ids, seen as pseudonyms
	}{
		{"/fhir/Observation?date=2020", []string{"o1"}},
		{"/fhir/Observation?date=2021", []string{"o2", "o3"}}, // o3 reads 2021, as its copy shows
		{"/fhir/Observation?date=ge2021", []string{"o2", "o3"}},
		{"/fhir/Observation?date=lt2021,gt2020", []string{"o1", "o2", "o3"}},
		{"/fhir/Observation?status=final", []string{"o1", "o2", "o3"}},
		{"/fhir/Observation?patient=" + pseudonym("p1"), []string{"o1", "o2", "o3"}},
		{"/fhir/Observation?subject=Patient/" + pseudonym("p1") + "&date=2020", []string{"o1"}},
		{"/fhir/Observation?patient=" + stranger, nil},
		{"/fhir/Observation?_id=" + pseudonym("o2") + "," + stranger, []string{"o2"}},
		{"/fhir/Patient?_id=" + pseudonym("p1"), []string{"p1"}},
	} {
		b := w.searchAs(t, get, c.target)
		var want []string
		for _, id := range c.want {
			typ := "Observation"
			if id == "p1" {
				typ = "Patient"
			}
			want = append(want, typ+"/"+pseudonym(id))
		}
		slices.Sort(want)
		if got := b.refs("match"); !slices.Equal(got, want) || *b.Total != len(want) {
			t.Errorf("%s: %v, want %v", c.target, got, want)
		}
	}
	// The owner compares instants: o3 is in 2020, in UTC.
	if b := w.searchAs(t, func(target string) resp { return w.get(w.owner, target) }, "/fhir/Observation?date=2020"); !slices.Equal(b.refs("match"), []string{"Observation/o1", "Observation/o3"}) {
		t.Errorf("the owner's date=2020: %v", b.refs("match"))
	}
	ctx := context.Background()
	for _, target := range []string{
		"/fhir/Observation?date=2020-05-01", "/fhir/Observation?date=ge2020-05", "/fhir/Observation?date=lt2021-01-01T00:00:00Z",
		"/fhir/Observation?date=2020,2021-03", "/fhir/Observation?_lastUpdated=ge2000", "/fhir/Observation?_sort=date",
		"/fhir/Observation?_sort=-_lastUpdated", "/fhir/Observation?_id=o1", "/fhir/Observation?patient=p1",
		"/fhir/Observation?patient=Patient/p1", "/fhir/Observation?subject=Patient/p1", "/fhir/Observation?encounter=Encounter/" + pseudonym("e1"),
		"/fhir/Patient/$everything?_since=2020-01-01T00:00:00Z",
	} {
		before, _ := w.cfg.Store.LogHead(ctx)
		r := get(target)
		if r.status != 400 || !bytes.Contains(r.body, []byte("research reader")) {
			t.Errorf("%s: %d %s", target, r.status, r.body)
			continue
		}
		entries, _ := w.cfg.Store.LogRange(ctx, before.Next, 10)
		if len(entries) != 1 || entries[0].Outcome != store.Denied || entries[0].PatientID != "p1" {
			t.Errorf("%s: logged %+v", target, entries)
		}
	}
	// Reads take pseudonyms; the provider's ids name nothing.
	for target, status := range map[string]int{
		"/fhir/Observation/o1": 404, "/fhir/Observation/o1/_history": 404, "/fhir/Observation/" + stranger: 404,
		"/fhir/Patient/p1/$everything": 404, "/fhir/Patient/" + pseudonym("p1") + "/$everything": 200,
		"/fhir/Observation/" + pseudonym("o1") + "/_history": 200,
	} {
		if r := get(target); r.status != status || status == 200 && bytes.Contains(r.body, []byte("lastModified")) {
			t.Errorf("%s: %d, want %d: %s", target, r.status, status, r.body)
		}
	}
}

// TestResearchIndexShowsNoMore: for every Synthea resource and every
// parameter a research reader may use, the values the index holds say no
// more than the research copy: extracted from the copy, they are the
// originals' with dates as their years and ids as pseudonyms. (A parameter
// on an element that de-identification drops or rewrites otherwise would
// let a search recover it.)
func TestResearchIndexShowsNoMore(t *testing.T) {
	patients, directory := syntheatest.Bundles(t)
	present, pseudonym := researchPresenter(deidNow)
	checked := map[string]int{}
	for _, path := range append(patients, directory...) {
		var bundle struct {
			Entry []struct{ Resource json.RawMessage }
		}
		if err := json.Unmarshal(syntheatest.Read(t, path), &bundle); err != nil {
			t.Fatal(err)
		}
		for _, e := range bundle.Entry {
			var head struct{ ResourceType string }
			json.Unmarshal(e.Resource, &head)
			copy, err := present(e.Resource)
			if err != nil {
				t.Fatal(err)
			}
			view := func(vs []store.IndexValue, pseudonymise bool) map[string]bool {
				out := map[string]bool{}
				for _, v := range vs {
					p, _ := fhirsearch.Lookup(head.ResourceType, v.Param)
					if !p.Research {
						continue
					}
					switch p.Kind {
					case store.Date:
						out[fmt.Sprintf("%s %d %d", v.Param, v.YearLo, v.YearHi)] = true
					case store.Reference:
						if pseudonymise {
							v.Value = pseudonym(v.Value)
						}
						out[v.Param+" "+v.System+"/"+v.Value] = true
					default:
						out[v.Param+" "+v.System+"|"+v.Value] = true
					}
					checked[head.ResourceType+"."+v.Param]++
				}
				return out
			}
			if want, got := view(fhirsearch.Extract(head.ResourceType, e.Resource), true), view(fhirsearch.Extract(head.ResourceType, copy), false); !maps.Equal(want, got) {
				t.Errorf("%s: the index holds %v, the research copy shows %v", head.ResourceType, want, got)
			}
		}
	}
	for _, p := range []string{"Observation.code", "Observation.date", "Observation.subject", "Immunization.patient", "Observation.encounter", "Encounter.participant", "Encounter.date", "Condition.clinical-status", "MedicationRequest.authoredon", "Immunization.vaccine-code"} {
		if checked[p] == 0 {
			t.Errorf("no Synthea value of %s was checked", p)
		}
	}
}
