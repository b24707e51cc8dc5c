package dbmanager

// FHIR R4 reads and searches through the gateway, checked against what
// the imported bundle says (an oracle that reads the JSON its own way).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// openPatient enrols patient pid (whose records are already imported) and
// claims the relationship for the world's keys, as open does for p1.
func (w *world) openPatient(pid string) {
	w.t.Helper()
	cm, _ := w.keys.Commitment()
	if r := w.staff("POST", "/admin/patients/"+pid+"/enrol", map[string]string{"commitment": zkhash.Hex(cm)}); r.status != 200 {
		w.t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	if r := w.staff("POST", "/admin/patients/"+pid+"/claim", w.claimFor(1, simchain.Addr(w.owner))); r.status != 200 {
		w.t.Fatalf("claim: %d %s", r.status, r.body)
	}
	tag, _ := w.keys.Tag(1)
	w.tag = zkhash.Big(tag)
}

// synthea imports the Synthea patient bundle i into the world, opens the
// relationship for it and returns the patient's id and resources by type
// (as maps, for the oracle) and by reference (their raw bytes).
type syntheaPatient struct {
	id     string
	byType map[string][]map[string]any
	raw    map[string][]byte // "Type/id" → the bundle's bytes of the resource
}

func (w *world) synthea(i int) syntheaPatient {
	w.t.Helper()
	patients, _ := syntheatest.Bundles(w.t)
	raw := syntheatest.Read(w.t, patients[i])
	req := httptest.NewRequest("POST", "/admin/import", bytes.NewReader(raw))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		w.t.Fatalf("import: %d %s", r.status, r.body)
	}
	var b struct {
		Entry []struct{ Resource json.RawMessage }
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		w.t.Fatal(err)
	}
	p := syntheaPatient{byType: map[string][]map[string]any{}, raw: map[string][]byte{}}
	for _, e := range b.Entry {
		var m map[string]any
		if err := json.Unmarshal(e.Resource, &m); err != nil {
			w.t.Fatal(err)
		}
		typ, id := m["resourceType"].(string), m["id"].(string)
		p.byType[typ] = append(p.byType[typ], m)
		p.raw[typ+"/"+id] = e.Resource
		if typ == "Patient" {
			p.id = id
		}
	}
	w.openPatient(p.id)
	return p
}

// entry is one entry of a searchset Bundle as a client reads it.
type entry struct {
	FullURL  string `json:"fullUrl"`
	Link     []struct{ Relation, URL string }
	Search   struct{ Mode string }
	Resource json.RawMessage
	Response *json.RawMessage
	Request  *json.RawMessage
}

func (e entry) ref() string {
	i := strings.Index(e.FullURL, "/fhir/")
	return e.FullURL[i+len("/fhir/"):]
}

type bundleRead struct {
	ResourceType string
	Type         string
	Total        *int
	Link         []struct{ Relation, URL string }
	Entry        []entry
}

func (b bundleRead) link(rel string) string {
	for _, l := range b.Link {
		if l.Relation == rel {
			return l.URL
		}
	}
	return ""
}

// matches returns the references of the entries of a mode.
func (b bundleRead) refs(mode string) []string {
	var out []string
	for _, e := range b.Entry {
		if e.Search.Mode == mode {
			out = append(out, e.ref())
		}
	}
	sort.Strings(out)
	return out
}

// searchAs reads a searchset as key's reader, checking what every
// searchset must be: a Bundle with a total, absolute fullUrls under the
// gateway's base, the version in each entry's latest-version link, the
// resource byte for byte as stored, no entry.request or response.
func (w *world) searchAs(t *testing.T, get func(string) resp, target string) bundleRead {
	t.Helper()
	r := get(target)
	if r.status != 200 {
		t.Fatalf("%s: %d %s", target, r.status, r.body)
	}
	var b bundleRead
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	if b.ResourceType != "Bundle" || b.Type != "searchset" || b.Total == nil {
		t.Fatalf("%s: not a searchset with a total: %s", target, r.body)
	}
	for _, e := range b.Entry {
		if !strings.HasPrefix(e.FullURL, "http://example.com/fhir/") || e.Response != nil || e.Request != nil || (e.Search.Mode != "match" && e.Search.Mode != "include") {
			t.Fatalf("%s: entry %s", target, e.FullURL)
		}
		if len(e.Link) != 1 || e.Link[0].Relation != "latest-version" || !strings.HasPrefix(e.Link[0].URL, e.FullURL+"/_history/") {
			t.Fatalf("%s: entry %s links %+v", target, e.FullURL, e.Link)
		}
	}
	return b
}

// checkStored checks that every entry is the stored version byte for byte.
func (w *world) checkStored(t *testing.T, b bundleRead) {
	t.Helper()
	for _, e := range b.Entry {
		typ, id, _ := strings.Cut(e.ref(), "/")
		res, err := w.cfg.Store.Get(context.Background(), typ, id)
		if err != nil {
			t.Fatal(err)
		}
		if sha256.Sum256(e.Resource) != res.SHA256 || e.Link[0].URL != fmt.Sprintf("%s/_history/%d", e.FullURL, res.Version) {
			t.Fatalf("%s is not version %d as stored", e.FullURL, res.Version)
		}
	}
}

// codings returns the system|code of every coding (or code) of an element.
func codings(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		out = append(out, "|"+x)
	case []any:
		for _, e := range x {
			out = append(out, codings(e)...)
		}
	case map[string]any:
		if cs, ok := x["coding"].([]any); ok {
			for _, c := range cs {
				m := c.(map[string]any)
				sys, _ := m["system"].(string)
				out = append(out, sys+"|"+m["code"].(string))
			}
		}
	}
	return out
}

func hasCoding(v any, want ...string) bool {
	for _, c := range codings(v) {
		for _, w := range want {
			if c == w || !strings.Contains(w, "|") && strings.HasSuffix(c, "|"+w) {
				return true
			}
		}
	}
	return false
}

// where returns "Type/id" of the resources of a type that satisfy keep.
func (p syntheaPatient) where(typ string, keep func(map[string]any) bool) []string {
	var out []string
	for _, m := range p.byType[typ] {
		if keep(m) {
			out = append(out, typ+"/"+m["id"].(string))
		}
	}
	sort.Strings(out)
	return out
}

// day is the YYYY-MM-DD of a Synthea dateTime (all are +00:00).
func day(v any) string { s, _ := v.(string); return s[:min(len(s), 10)] }

func refID(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["reference"].(string)
	return s[strings.LastIndexAny(s, ":/")+1:]
}

func TestFHIRSearch(t *testing.T) { onBackends(t, testFHIRSearch) }

func testFHIRSearch(t *testing.T, dsn string) {
	w := newWorldOn(t, dsn, func(c *Config) { c.BodyLimit = 64 << 20 })
	p := w.synthea(2)
	get := func(target string) resp { return w.get(w.owner, target) }
	all := func(typ string) []string { return p.where(typ, func(map[string]any) bool { return true }) }
	obs := p.byType["Observation"]
	code1 := codings(obs[0]["code"])[0] // system|code
	code2 := codings(obs[len(obs)-1]["code"])[0]
	_, bare1, _ := strings.Cut(code1, "|")
	_, bare2, _ := strings.Cut(code2, "|")
	// An encounter with observations.
	firstEnc := refID(obs[0]["encounter"])
	var enc map[string]any
	for _, m := range p.byType["Encounter"] {
		if m["id"] == firstEnc {
			enc = m
		}
	}
	encYear := day(enc["period"].(map[string]any)["start"])[:4]
	for _, c := range []struct {
		target string
		want   []string
	}{
		{"/fhir/Observation?code=" + url.QueryEscape(code1), p.where("Observation", func(m map[string]any) bool { return hasCoding(m["code"], code1) })},
		{"/fhir/Observation?code=" + bare1 + "," + bare2 + "&status=final", p.where("Observation", func(m map[string]any) bool {
			return hasCoding(m["code"], bare1, bare2) && m["status"] == "final"
		})},
		{"/fhir/Observation?category=vital-signs", p.where("Observation", func(m map[string]any) bool { return hasCoding(m["category"], "vital-signs") })},
		{"/fhir/Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory", p.where("Observation", func(m map[string]any) bool {
			return hasCoding(m["category"], "http://terminology.hl7.org/CodeSystem/observation-category|laboratory")
		})},
		{"/fhir/Observation?date=ge2015-01-01&date=lt2017-06-01", p.where("Observation", func(m map[string]any) bool {
			return day(m["effectiveDateTime"]) >= "2015-01-01" && day(m["effectiveDateTime"]) < "2017-06-01"
		})},
		{"/fhir/Observation?date=gt2016-12", p.where("Observation", func(m map[string]any) bool { return day(m["effectiveDateTime"]) >= "2017-01-01" })},
		{"/fhir/Encounter?date=" + encYear, p.where("Encounter", func(m map[string]any) bool {
			per := m["period"].(map[string]any)
			return day(per["start"])[:4] == encYear && day(per["end"])[:4] == encYear
		})},
		{"/fhir/Condition?clinical-status=resolved", p.where("Condition", func(m map[string]any) bool { return hasCoding(m["clinicalStatus"], "resolved") })},
		{"/fhir/Condition?onset-date=le2000", p.where("Condition", func(m map[string]any) bool { return day(m["onsetDateTime"]) < "2001" })},
		{"/fhir/MedicationRequest?status=active&authoredon=ge1990", p.where("MedicationRequest", func(m map[string]any) bool { return m["status"] == "active" })},
		{"/fhir/Immunization?vaccine-code=140", p.where("Immunization", func(m map[string]any) bool { return hasCoding(m["vaccineCode"], "140") })},
		{"/fhir/Observation?encounter=Encounter/" + firstEnc, p.where("Observation", func(m map[string]any) bool { return refID(m["encounter"]) == firstEnc })},
		{"/fhir/Observation?patient=" + p.id, all("Observation")},
		{"/fhir/Observation?subject=Patient/" + p.id, all("Observation")},
		{"/fhir/Observation?subject=http://example.com/fhir/Patient/" + p.id, all("Observation")},
		{"/fhir/Observation?patient=someone-else", nil},
		{"/fhir/Observation?patient=" + p.id + ",someone-else", all("Observation")},
		{"/fhir/Observation?_id=" + obs[0]["id"].(string) + "," + obs[1]["id"].(string) + ",nothing", []string{"Observation/" + obs[0]["id"].(string), "Observation/" + obs[1]["id"].(string)}},
		{"/fhir/Observation?_lastUpdated=ge2000-01-01", all("Observation")},
		{"/fhir/Observation?_lastUpdated=lt2000-01-01", nil},
		{"/fhir/Patient", []string{"Patient/" + p.id}},
		{"/fhir/Patient?_id=" + p.id, []string{"Patient/" + p.id}},
	} {
		t.Run(c.target, func(t *testing.T) {
			sep := "?"
			if strings.Contains(c.target, "?") {
				sep = "&"
			}
			b := w.searchAs(t, get, c.target+sep+"_count=1000")
			slices.Sort(c.want)
			if got := b.refs("match"); !slices.Equal(got, c.want) || *b.Total != len(c.want) {
				t.Fatalf("total %d, matches %v\nwant %v", *b.Total, got, c.want)
			}
			w.checkStored(t, b)
		})
	}

	t.Run("paging both ways, sorted, links keep the query", func(t *testing.T) {
		var pages []bundleRead
		for target := "/fhir/Observation?_sort=-date&status=final&_count=7"; target != ""; {
			b := w.searchAs(t, get, target)
			if self := b.link("self"); !strings.Contains(self, "_sort=-date") || !strings.Contains(self, "status=final") || !strings.Contains(self, "_count=7") {
				t.Fatalf("self link %s", self)
			}
			pages = append(pages, b)
			target = b.link("next")
			if len(pages) > 20 {
				t.Fatal("paging does not end")
			}
		}
		var dates, ids []string
		for _, b := range pages {
			for _, e := range b.Entry {
				var m map[string]any
				json.Unmarshal(e.Resource, &m)
				dates, ids = append(dates, m["effectiveDateTime"].(string)), append(ids, e.ref())
			}
		}
		want := p.where("Observation", func(m map[string]any) bool { return m["status"] == "final" })
		if !slices.IsSortedFunc(dates, func(a, b string) int { return strings.Compare(b, a) }) || len(ids) != len(want) || len(pages) != (len(want)+6)/7 {
			t.Fatalf("%d pages, %d resources (want %d), dates %v", len(pages), len(ids), len(want), dates)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, want) {
			t.Fatalf("pages hold %v", ids)
		}
		if pages[0].link("previous") != "" {
			t.Fatal("the first page has a previous link")
		}
		for i := len(pages) - 1; i > 0; i-- {
			back := w.searchAs(t, get, pages[i].link("previous"))
			if fmt.Sprint(back.refs("match")) != fmt.Sprint(pages[i-1].refs("match")) {
				t.Fatalf("previous of page %d: %v, want %v", i, back.refs("match"), pages[i-1].refs("match"))
			}
		}
	})

	t.Run("_include and _revinclude", func(t *testing.T) {
		b := w.searchAs(t, get, "/fhir/Observation?code="+url.QueryEscape(code1)+"&_include=Observation:encounter")
		var encs []string
		for _, m := range p.byType["Observation"] {
			if hasCoding(m["code"], code1) && !slices.Contains(encs, "Encounter/"+refID(m["encounter"])) {
				encs = append(encs, "Encounter/"+refID(m["encounter"]))
			}
		}
		slices.Sort(encs)
		if got := b.refs("include"); !slices.Equal(got, encs) || len(encs) == 0 {
			t.Fatalf("included %v, want %v", got, encs)
		}
		w.checkStored(t, b)
		b = w.searchAs(t, get, "/fhir/Encounter?_id="+firstEnc+"&_include=Encounter:participant&_include=Encounter:service-provider&_revinclude=Observation:encounter")
		want := []string{"Organization/" + refID(enc["serviceProvider"]), "Practitioner/" + refID(enc["participant"].([]any)[0].(map[string]any)["individual"])}
		want = append(want, p.where("Observation", func(m map[string]any) bool { return refID(m["encounter"]) == firstEnc })...)
		slices.Sort(want)
		if got := b.refs("include"); !slices.Equal(got, want) {
			t.Fatalf("included %v, want %v", got, want)
		}
		// The log names every resource served, includes too, with versions.
		log, err := w.cfg.Store.PatientLog(context.Background(), p.id, 0, store.MaxCount)
		if err != nil {
			t.Fatal(err)
		}
		last := log[len(log)-1]
		var served []string
		for _, e := range b.Entry {
			served = append(served, e.ref()+"/_history/1")
		}
		if last.Action != "search" || last.Outcome != store.Allowed || !slices.Equal(last.Resources, served) {
			t.Fatalf("logged %+v, served %v", last, served)
		}
	})

	t.Run("_summary=count and _count=0", func(t *testing.T) {
		for _, q := range []string{"_summary=count", "_count=0"} {
			b := w.searchAs(t, get, "/fhir/Observation?status=final&"+q)
			if *b.Total != len(p.where("Observation", func(m map[string]any) bool { return m["status"] == "final" })) || b.Entry != nil || b.link("next") != "" {
				t.Fatalf("%s: total %d, %d entries", q, *b.Total, len(b.Entry))
			}
		}
	})

	t.Run("_elements", func(t *testing.T) {
		b := w.searchAs(t, get, "/fhir/Observation?_elements=status,code&_count=3")
		for _, e := range b.Entry {
			var m map[string]json.RawMessage
			json.Unmarshal(e.Resource, &m)
			var keys []string
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			if !slices.Equal(keys, []string{"code", "id", "meta", "resourceType", "status"}) || !bytes.Contains(m["meta"], []byte(`"SUBSETTED"`)) ||
				!bytes.Contains(m["meta"], []byte("synthea-5-2019")) {
				t.Fatalf("_elements: %s", e.Resource)
			}
		}
	})

	t.Run("$everything", func(t *testing.T) {
		for _, path := range []string{"/fhir/Patient/$everything", "/fhir/Patient/" + p.id + "/$everything"} {
			var got []string
			total := 0
			for target := path + "?_count=40"; target != ""; {
				b := w.searchAs(t, get, target)
				got, total = append(got, b.refs("match")...), *b.Total
				target = b.link("next")
			}
			slices.Sort(got)
			var want []string
			for typ := range p.byType {
				if typ != "Organization" && typ != "Practitioner" {
					want = append(want, all(typ)...)
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) || total != len(want) {
				t.Fatalf("%s: %d of %d (total %d)", path, len(got), len(want), total)
			}
		}
		b := w.searchAs(t, get, "/fhir/Patient/$everything?_type=Condition,Immunization&_count=500")
		if got := b.refs("match"); !slices.Equal(got, slices.Sorted(slices.Values(append(all("Condition"), all("Immunization")...)))) {
			t.Fatalf("_type: %v", got)
		}
		if b := w.searchAs(t, get, "/fhir/Patient/$everything?_since=2999-01-01T00:00:00Z"); *b.Total != 0 {
			t.Fatalf("_since in the future: %d", *b.Total)
		}
		if r := get("/fhir/Patient/someone-else/$everything"); r.status != 404 {
			t.Fatalf("another patient's $everything: %d %s", r.status, r.body)
		}
	})
}

// TestFHIRReads: read, vread and instance history of a resource with three
// versions; If-None-Match answers 304 and is logged as a read; another
// patient's resource is not found by any of them.
func TestFHIRReads(t *testing.T) {
	w := newWorld(t)
	w.open()
	for _, status := range []string{"amended", "corrected"} {
		body := strings.Replace(observationJS, `"status":"final"`, `"status":"`+status+`"`, 1)
		req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		if r := w.do(req); r.status != 201 {
			t.Fatalf("update: %d %s", r.status, r.body)
		}
	}
	ctx := context.Background()
	versions, err := w.cfg.Store.Versions(ctx, "Observation", "o1", 0, 0)
	if err != nil || len(versions) != 3 {
		t.Fatalf("versions: %d %v", len(versions), err)
	}
	for _, v := range versions {
		r, h := w.getWithHeaders(w.owner, fmt.Sprintf("/fhir/Observation/o1/_history/%d", v.Version))
		if r.status != 200 || !bytes.Equal(r.body, v.Raw) || h.Get("ETag") != fmt.Sprintf(`W/"%d"`, v.Version) || h.Get("Last-Modified") == "" {
			t.Fatalf("vread %d: %d %v %s", v.Version, r.status, h, r.body)
		}
	}
	for _, target := range []string{"/fhir/Observation/o1/_history/4", "/fhir/Observation/o1/_history/0", "/fhir/Observation/o1/_history/x", "/fhir/Observation/o9/_history/1"} {
		if r := w.get(w.owner, target); r.status != 404 && r.status != 400 || r.json(t)["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
	// If-None-Match: the current version is 304, logged; an older one 200.
	for _, c := range []struct {
		inm    string
		status int
	}{{`W/"3"`, 304}, {`"3"`, 304}, {`W/"1", W/"3"`, 304}, {`*`, 304}, {`W/"2"`, 200}, {`W/"33"`, 200}} {
		req := w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1)
		req.Header.Set("If-None-Match", c.inm)
		res, err := w.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != c.status || res.Header.Get("ETag") != `W/"3"` {
			t.Fatalf("If-None-Match %s: %d, ETag %q", c.inm, res.StatusCode, res.Header.Get("ETag"))
		}
		log, _ := w.cfg.Store.PatientLog(ctx, "p1", 0, store.MaxCount)
		last := log[len(log)-1]
		if last.Action != "read" || !slices.Equal(last.Resources, []string{"Observation/o1/_history/3"}) || (c.status == 304) != (last.Detail == "not modified") {
			t.Fatalf("If-None-Match %s logged %+v", c.inm, last)
		}
	}
	// Instance history: newest first, in pages that link onwards.
	var got []string
	target := "/fhir/Observation/o1/_history?_count=2"
	for pages := 0; target != ""; pages++ {
		r := w.get(w.owner, target)
		var b struct {
			Type  string
			Total int
			Link  []struct{ Relation, URL string }
			Entry []struct {
				FullURL  string
				Resource json.RawMessage
				Request  struct{ Method, URL string }
				Response struct{ Status, Etag, LastModified string }
			}
		}
		if err := json.Unmarshal(r.body, &b); r.status != 200 || err != nil || b.Type != "history" || b.Total != 3 {
			t.Fatalf("history: %d %s", r.status, r.body)
		}
		target = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				target = l.URL
			}
		}
		for _, e := range b.Entry {
			if e.FullURL != "http://example.com/fhir/Observation/o1" || e.Request.URL != "Observation/o1" || e.Response.LastModified == "" {
				t.Fatalf("history entry: %+v", e)
			}
			got = append(got, e.Response.Etag+" "+e.Request.Method+" "+e.Response.Status)
			var v int64
			fmt.Sscanf(e.Response.Etag, `W/"%d"`, &v)
			if !bytes.Equal(e.Resource, versions[3-v].Raw) {
				t.Fatalf("history version %d: %s", v, e.Resource)
			}
		}
		if pages > 3 {
			t.Fatal("history pages do not end")
		}
	}
	if want := []string{`W/"3" PUT 200 OK`, `W/"2" PUT 200 OK`, `W/"1" POST 201 Created`}; !slices.Equal(got, want) {
		t.Fatalf("history %v", got)
	}
	// Another patient's resource is not found, whichever way it is read.
	w.staff("POST", "/admin/patients", map[string]string{"id": "p2"})
	req := httptest.NewRequest("POST", "/admin/patients/p2/resources", strings.NewReader(`{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}`))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("p2: %d %s", r.status, r.body)
	}
	for _, target := range []string{"/fhir/Observation/o2", "/fhir/Observation/o2/_history/1", "/fhir/Observation/o2/_history", "/fhir/Observation?_id=o2"} {
		r := w.get(w.owner, target)
		if r.status != 404 && !(r.status == 200 && bytes.Contains(r.body, []byte(`"total":0`))) || bytes.Contains(r.body, []byte("p2")) {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
}

// TestSearchParameterErrors: a parameter the gateway does not support is a
// 400 OperationOutcome that says so — or, under Prefer: handling=lenient,
// left out of the search and of its self link; a malformed one is a 400
// either way; a directory type is not searched.
func TestSearchParameterErrors(t *testing.T) {
	w := newWorld(t)
	w.open()
	do := func(target string, lenient bool) (resp, string) {
		req := w.signed(w.owner, target, w.tag, 1)
		if lenient {
			req.Header.Set("Prefer", "handling=lenient")
		}
		res, err := w.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		return resp{res.StatusCode, b.Bytes()}, res.Header.Get("Preference-Applied")
	}
	for _, c := range []struct {
		target string
		code   string // the issue's code; "" if lenient handling serves it
		self   string // the self link's query under lenient handling
	}{
		{"/fhir/Observation?name=x&status=final", "", "?status=final"},
		{"/fhir/Observation?status=final&code:text=heart", "", "?status=final"},
		{"/fhir/Observation?date=ap2020", "", ""},
		{"/fhir/Observation?_sort=code", "", ""},
		{"/fhir/Observation?_include=Observation:focus&_count=5", "", "?_count=5"},
		{"/fhir/Observation?subject.name=x", "", ""},
		{"/fhir/Observation?status=", "invalid", ""},
		{"/fhir/Observation?date=2020-13", "invalid", ""},
		{"/fhir/Observation?code=a|b|c", "invalid", ""},
		{"/fhir/Observation?_count=-1", "invalid", ""},
		{"/fhir/Observation?_cursor=bogus", "invalid", ""},
		{"/fhir/Observation?subject=https://elsewhere/fhir/Patient/p1", "invalid", ""},
		{"/fhir/Observation?_include=Encounter:participant", "invalid", ""},
	} {
		r, _ := do(c.target, false)
		if r.status != 400 || r.json(t)["resourceType"] != "OperationOutcome" {
			t.Errorf("%s: %d %s", c.target, r.status, r.body)
			continue
		}
		issue := r.json(t)["issue"].([]any)[0].(map[string]any)
		if want := map[bool]string{true: "not-supported", false: c.code}[c.code == ""]; issue["code"] != want {
			t.Errorf("%s: issue %v, want %s", c.target, issue, want)
		}
		r, applied := do(c.target, true)
		switch {
		case c.code != "":
			if r.status != 400 {
				t.Errorf("%s, lenient: %d %s", c.target, r.status, r.body)
			}
		case r.status != 200 || applied != "handling=lenient":
			t.Errorf("%s, lenient: %d %q %s", c.target, r.status, applied, r.body)
		default:
			var b bundleRead
			json.Unmarshal(r.body, &b)
			if self := b.link("self"); self != "http://example.com/fhir/Observation"+c.self {
				t.Errorf("%s, lenient: self link %s", c.target, self)
			}
		}
	}
	if r, _ := do("/fhir/Practitioner", false); r.status != 400 || !bytes.Contains(r.body, []byte("directory")) {
		t.Errorf("search of a directory type: %d %s", r.status, r.body)
	}
	if r, _ := do("/fhir/Observation/o1?_elements=status", false); r.status != 400 {
		t.Errorf("a read with a parameter: %d %s", r.status, r.body)
	}
}

// TestSearchScope: a grantee searches within its grant: $everything holds
// only the types it covers, _include never adds another type, and an
// _include or _revinclude that can only lead outside the grant is refused.
func TestSearchScope(t *testing.T) {
	w := newWorldOn(t, filepath.Join(t.TempDir(), "records.db"), func(c *Config) { c.BodyLimit = 64 << 20 })
	p := w.synthea(0)
	doctor := simchain.Key("doctor")
	scope, _ := access.NewScope("Observation", "Encounter")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), scope, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	get := func(target string) resp { return w.get(doctor, target) }
	b := w.searchAs(t, get, "/fhir/Patient/$everything?_count=1000")
	for _, e := range b.Entry {
		if typ, _, _ := strings.Cut(e.ref(), "/"); typ != "Observation" && typ != "Encounter" {
			t.Fatalf("$everything served %s", e.ref())
		}
	}
	if *b.Total != len(p.byType["Observation"])+len(p.byType["Encounter"]) {
		t.Fatalf("$everything total %d", *b.Total)
	}
	b = w.searchAs(t, get, "/fhir/Observation?_include=Observation:encounter&_count=3")
	if len(b.refs("include")) == 0 {
		t.Fatal("no encounter included")
	}
	for _, target := range []string{"/fhir/Encounter?_include=Encounter:participant", "/fhir/Encounter?_revinclude=DiagnosticReport:encounter", "/fhir/Condition"} {
		if r := get(target); r.status != 403 {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
	log, _ := w.cfg.Store.PatientLog(context.Background(), p.id, 0, store.MaxCount)
	if last := log[len(log)-1]; last.Outcome != store.Denied || last.ActorID != simchain.Addr(doctor).Hex() {
		t.Errorf("refusal logged as %+v", last)
	}
}

// TestCapabilityStatement: /fhir/metadata lists exactly what is served:
// every parameter, _include and _revinclude it lists for a type is
// accepted by a search of the type, and a parameter it does not list is
// refused; a type it lists without search-type is not searched.
func TestCapabilityStatement(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.ReaderRateLimit, c.RateLimit = 1<<20, 1<<20 })
	w.open()
	r := w.do(httptest.NewRequest("GET", "/fhir/metadata", nil))
	var cs struct {
		ResourceType string
		Rest         []struct {
			Resource []struct {
				Type             string
				Interaction      []struct{ Code string }
				SearchParam      []struct{ Name, Type string }
				SearchInclude    []string
				SearchRevInclude []string
				Operation        []struct{ Name string }
			}
			Security struct {
				Service []struct {
					Coding []struct{ System, Code string }
				}
			}
		}
	}
	// rest.security names SMART App Launch (TestSMARTLaunch follows its endpoints).
	if err := json.Unmarshal(r.body, &cs); r.status != 200 || err != nil || cs.ResourceType != "CapabilityStatement" || len(cs.Rest) != 1 ||
		len(cs.Rest[0].Security.Service) != 1 || cs.Rest[0].Security.Service[0].Coding[0].Code != "SMART-on-FHIR" {
		t.Fatalf("metadata: %d %v %s", r.status, err, r.body)
	}
	if len(cs.Rest[0].Resource) != len(access.ResourceTypes())+2 {
		t.Fatalf("%d resource types listed", len(cs.Rest[0].Resource))
	}
	value := map[string]string{"token": "x", "date": "2020", "reference": "x"}
	searched := 0
	for _, res := range cs.Rest[0].Resource {
		var interactions []string
		for _, i := range res.Interaction {
			interactions = append(interactions, i.Code)
		}
		if res.Type == "AuditEvent" {
			// The owner's view of their own log (TestFHIRLogAndConsent).
			if !slices.Equal(interactions, []string{"read", "search-type"}) || res.SearchParam != nil {
				t.Errorf("%s: interactions %v, parameters %v", res.Type, interactions, res.SearchParam)
			}
			if r := w.get(w.owner, "/fhir/"+res.Type); r.status != 200 {
				t.Errorf("%s search: %d %s", res.Type, r.status, r.body)
			}
			if r := w.get(w.owner, "/fhir/"+res.Type+"?date=2020"); r.status != 400 {
				t.Errorf("%s?date=2020, not listed: %d %s", res.Type, r.status, r.body)
			}
			continue
		}
		if res.Type == "Group" {
			// A research grantee's group (TestGroupExport).
			if !slices.Equal(interactions, []string{"read"}) || len(res.Operation) != 1 || res.Operation[0].Name != "export" {
				t.Errorf("%s: interactions %v, operations %v", res.Type, interactions, res.Operation)
			}
			if r := w.groupDo(groupCall{key: w.owner, method: "GET", target: "/fhir/Group/research"}); r.status != 200 {
				t.Errorf("Group/research: %d %s", r.status, r.body)
			}
			continue
		}
		search := slices.Contains(interactions, "search-type")
		if !slices.Equal(interactions[:3], []string{"read", "vread", "history-instance"}) || search != fhirval.InPatientCompartment(res.Type) {
			t.Errorf("%s: interactions %v", res.Type, interactions)
		}
		if !search {
			if r := w.get(w.owner, "/fhir/"+res.Type); r.status != 400 {
				t.Errorf("%s is not searched, yet: %d %s", res.Type, r.status, r.body)
			}
			continue
		}
		var names []string
		for _, p := range res.SearchParam {
			names = append(names, p.Name)
			target := "/fhir/" + res.Type + "?" + url.QueryEscape(p.Name) + "=" + value[p.Type]
			if r := w.get(w.owner, target); r.status != 200 {
				t.Errorf("%s, listed: %d %s", target, r.status, r.body)
			}
			searched++
		}
		want := []string{store.IDParam, store.UpdatedParam}
		for _, p := range fhirsearch.Params(res.Type) {
			want = append(want, p.Name)
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s lists %v, serves %v", res.Type, names, want)
		}
		for _, inc := range res.SearchInclude {
			if r := w.get(w.owner, "/fhir/"+res.Type+"?_include="+inc); r.status != 200 {
				t.Errorf("%s _include=%s, listed: %d %s", res.Type, inc, r.status, r.body)
			}
		}
		for _, inc := range res.SearchRevInclude {
			if r := w.get(w.owner, "/fhir/"+res.Type+"?_revinclude="+inc); r.status != 200 {
				t.Errorf("%s _revinclude=%s, listed: %d %s", res.Type, inc, r.status, r.body)
			}
		}
		for _, name := range []string{"name", "identifier", "text", "_text", "_content", "_has", "_tag"} {
			if !slices.Contains(names, name) {
				if r := w.get(w.owner, "/fhir/"+res.Type+"?"+name+"=x"); r.status != 400 {
					t.Errorf("%s?%s=x, not listed: %d", res.Type, name, r.status)
				}
			}
		}
		if (res.Type == "Patient") != (len(res.Operation) == 4 && res.Operation[0].Name == "everything" && res.Operation[1].Name == "export" && res.Operation[2].Name == "disclosures" && res.Operation[3].Name == "grants") {
			t.Errorf("%s operations %v", res.Type, res.Operation)
		}
	}
	if searched < 100 {
		t.Errorf("only %d parameters tried", searched)
	}
}
