package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// groupPatient is one patient of a group world: its keys, owner delegate
// and tag at provider 1.
type groupPatient struct {
	keys  *delegate.Keys
	owner *ecdsa.PrivateKey
	tag   *big.Int
}

// switchTo makes p the world's patient: w.grant and w.revoke sign as p.
func (w *world) switchTo(p groupPatient) { w.keys, w.owner, w.tag = p.keys, p.owner, p.tag }

// addPatient creates patient id with its records (a bundle's entries),
// enrols and claims it for a patient of its own (keys from words).
func (w *world) addPatient(id, words string, resources ...string) groupPatient {
	w.t.Helper()
	keys := mustKeys(w.t, words)
	w.createEnrolled(id, keys)
	bundle := `{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + strings.Join(resources, `},{"resource":`) + `}]}`
	req := httptest.NewRequest("POST", "/admin/patients/"+id+"/resources", strings.NewReader(bundle))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		w.t.Fatalf("add %s's resources: %d %s", id, r.status, r.body)
	}
	d, err := keys.Delegate(1, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	if r := w.staff("POST", "/admin/patients/"+id+"/claim", w.claimWith(keys, 1, simchain.Addr(d.PrivateKey()))); r.status != 200 {
		w.t.Fatalf("claim %s: %d %s", id, r.status, r.body)
	}
	tag, _ := keys.Tag(1)
	return groupPatient{keys: keys, owner: d.PrivateKey(), tag: zkhash.Big(tag)}
}

// groupCall is one signed request of a group test: key signs method and
// target, with tag (nil: a tag-less request); prefer adds Prefer:
// respond-async.
type groupCall struct {
	key    *ecdsa.PrivateKey
	method string
	target string
	tag    *big.Int
	prefer bool
}

// request builds c's signed request.
func (w *world) groupRequest(c groupCall) *http.Request {
	w.t.Helper()
	target := c.target
	if u, err := url.Parse(target); err == nil && u.Host != "" {
		target = u.RequestURI()
	}
	r := httptest.NewRequest(c.method, target, nil)
	if err := gatewayauth.Sign(r.Header, gatewayauth.Request{Method: c.method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
		BodyHash: gatewayauth.BodyHash(nil), Tag: c.tag, Audience: 1}, c.key, w.domain(), time.Now()); err != nil {
		w.t.Fatal(err)
	}
	if c.prefer {
		r.Header.Set("Prefer", "respond-async")
	}
	return r
}

// groupDo sends c; a 202 with a Content-Location answers that location as
// its body.
func (w *world) groupDo(c groupCall) resp {
	w.t.Helper()
	res, err := w.gw.App().Test(w.groupRequest(c), -1)
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(res.Body)
	if loc := res.Header.Get("Content-Location"); res.StatusCode == 202 && loc != "" {
		return resp{status: 202, body: []byte(loc)}
	}
	return resp{status: res.StatusCode, body: b.Bytes()}
}

type groupManifest struct {
	Request             string
	RequiresAccessToken bool
	Output              []struct {
		Type, URL string
		Count     int
	}
}

// groupExport kicks off target as key (tag-less) and waits for the
// manifest; it returns the status URL and the manifest.
func (w *world) groupExport(t *testing.T, key *ecdsa.PrivateKey, target string) (string, groupManifest) {
	t.Helper()
	r := w.groupDo(groupCall{key: key, method: "GET", target: target, prefer: true})
	if r.status != 202 || !strings.Contains(string(r.body), "/fhir/Group/research/_export/") {
		t.Fatalf("kick-off %s: %d %s", target, r.status, r.body)
	}
	status := string(r.body)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := w.groupDo(groupCall{key: key, method: "GET", target: status})
		if r.status == 200 {
			var m groupManifest
			if err := json.Unmarshal(r.body, &m); err != nil || !m.RequiresAccessToken || !strings.HasSuffix(m.Request, target) {
				t.Fatalf("manifest: %v %s", err, r.body)
			}
			return status, m
		}
		if r.status != 202 || time.Now().After(deadline) {
			t.Fatalf("status: %d %s", r.status, r.body)
		}
	}
}

// groupFiles downloads every file of m as key: type → lines.
func (w *world) groupFiles(t *testing.T, key *ecdsa.PrivateKey, m groupManifest) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, o := range m.Output {
		r := w.groupDo(groupCall{key: key, method: "GET", target: o.URL})
		lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
		if r.status != 200 || len(lines) != o.Count {
			t.Fatalf("%s: %d, %d lines for %d: %s", o.URL, r.status, len(lines), o.Count, r.body)
		}
		out[o.Type] = lines
	}
	return out
}

const (
	p2JSON   = `{"resourceType":"Patient","id":"p2","name":[{"family":"Okafor","given":["Ngozi"]}],"birthDate":"1975-08-09","gender":"female"}`
	ob2JSON  = `{"resourceType":"Observation","id":"ob2","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p2"},"effectiveDateTime":"2019-03-04T08:00:00Z","valueQuantity":{"value":64,"unit":"/min"}}`
	cd2JSON  = `{"resourceType":"Condition","id":"cd2","subject":{"reference":"Patient/p2"},"code":{"text":"Asthma"},"onsetDateTime":"2018-02-03"}`
	p3JSON   = `{"resourceType":"Patient","id":"p3","name":[{"family":"Lindqvist","given":["Astrid"]}],"birthDate":"1988-12-24","gender":"female"}`
	ob3JSON  = `{"resourceType":"Observation","id":"ob3","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p3"},"effectiveDateTime":"2022-06-07T09:00:00Z","valueQuantity":{"value":80,"unit":"/min"}}`
	p2Words  = "legal winner thank year wave sausage worth useful legal winner thank yellow"
	p3Words  = "letter advice cage absurd amount doctor acoustic avoid letter advice cage above"
	groupURL = "/fhir/Group/research"
)

// groupWorld: three patients at provider 1. p1 (the world's open patient:
// Patient, Observation o1, Condition c1) grants the researcher research
// over Observation and Patient; p2 (Patient, Observation ob2, Condition
// cd2) research over Condition only; p3 (Patient, Observation ob3) grants
// the researcher treatment, not research. Patients by name: p1, p2, p3.
func groupWorld(t *testing.T) (*world, *ecdsa.PrivateKey, map[string]groupPatient) {
	t.Helper()
	w := newWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	w.open()
	ps := map[string]groupPatient{"p1": {keys: w.keys, owner: w.owner, tag: w.tag}}
	ps["p2"] = w.addPatient("p2", p2Words, p2JSON, ob2JSON, cd2JSON)
	ps["p3"] = w.addPatient("p3", p3Words, p3JSON, ob3JSON)
	researcher := simchain.Key("researcher")
	obsPatient, _ := access.NewScope("Observation", "Patient")
	cond, _ := access.NewScope("Condition")
	for _, g := range []struct {
		patient string
		scope   access.Scope
		purpose access.Purpose
	}{{"p1", obsPatient, access.Research}, {"p2", cond, access.Research}, {"p3", access.AllTypes, access.Treatment}} {
		w.switchTo(ps[g.patient])
		if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(researcher)), g.scope, g.purpose); r.status != 200 {
			t.Fatalf("%s's grant: %d %s", g.patient, r.status, r.body)
		}
	}
	w.switchTo(ps["p1"])
	return w, researcher, ps
}

// TestGroupExport: a research grantee's Group/research is the two patients
// that granted it research (not the one that granted it treatment); its
// export holds exactly their resources of the types each granted,
// de-identified as research reads are (its pseudonyms, the same as in its
// per-patient reads; no names, provider ids or full dates); each member's
// log has one export entry naming what it exported, written before the
// manifest; a revocation after kick-off takes that patient's lines out of
// the manifest and the files.
func TestGroupExport(t *testing.T) {
	ctx := context.Background()
	w, researcher, ps := groupWorld(t)
	_, pseudonym := g2pseudonyms(w, researcher)
	secrets := []string{"Hoeger", "Buster", "Okafor", "Ngozi", "Lindqvist", "Astrid", `"p1"`, `"o1"`, `"c1"`, `"p2"`, `"ob2"`, `"cd2"`, `"p3"`, `"ob3"`,
		"Patient/p1", "Patient/p2", "Patient/p3", pseudonym("p3"), pseudonym("ob3"), pseudonym("c1"), pseudonym("ob2")}

	// The group as a Group resource: its members by pseudonym.
	head, _ := w.cfg.Store.LogHead(ctx)
	r := w.groupDo(groupCall{key: researcher, method: "GET", target: groupURL})
	var group struct {
		ResourceType, ID, Type string
		Actual                 bool
		Quantity               int
		Member                 []struct{ Entity struct{ Reference string } }
	}
	if r.status != 200 || json.Unmarshal(r.body, &group) != nil {
		t.Fatalf("Group: %d %s", r.status, r.body)
	}
	var members []string
	for _, m := range group.Member {
		members = append(members, m.Entity.Reference)
	}
	slices.Sort(members)
	want := []string{"Patient/" + pseudonym("p1"), "Patient/" + pseudonym("p2")}
	slices.Sort(want)
	if group.ResourceType != "Group" || group.ID != "research" || group.Type != "person" || !group.Actual || group.Quantity != 2 || !slices.Equal(members, want) {
		t.Errorf("Group: %s, want members %v", r.body, want)
	}
	for _, s := range secrets {
		if strings.Contains(string(r.body), s) {
			t.Errorf("Group carries %q: %s", s, r.body)
		}
	}
	entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10)
	var readers []string
	for _, e := range entries {
		if e.Action == "read" && e.Outcome == store.Allowed && e.Purpose == access.Research && e.ActorID == simchain.Addr(researcher).Hex() {
			readers = append(readers, e.PatientID)
		}
	}
	if slices.Sort(readers); !slices.Equal(readers, []string{"p1", "p2"}) || len(entries) != 2 {
		t.Errorf("the Group read's entries: %+v", entries)
	}

	for _, c := range []struct {
		name   string
		target string
		want   map[string][]string // type → provider ids, seen as pseudonyms
		logged map[string][]string // patient → the versions its export entry names
	}{
		{"every type", groupURL + "/$export", map[string][]string{"Patient": {"p1"}, "Observation": {"o1"}, "Condition": {"cd2"}},
			map[string][]string{"p1": {"Observation/o1/_history/1", "Patient/p1/_history/1"}, "p2": {"Condition/cd2/_history/1"}}},
		{"_type", groupURL + "/$export?_type=Observation,Condition", map[string][]string{"Observation": {"o1"}, "Condition": {"cd2"}},
			map[string][]string{"p1": {"Observation/o1/_history/1"}, "p2": {"Condition/cd2/_history/1"}}},
		{"_type of one member's scope", groupURL + "/$export?_type=Patient&_outputFormat=application/fhir%2Bndjson", map[string][]string{"Patient": {"p1"}},
			map[string][]string{"p1": {"Patient/p1/_history/1"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			head, _ := w.cfg.Store.LogHead(ctx)
			_, m := w.groupExport(t, researcher, c.target)
			// Logged before the manifest was shown: one entry per member.
			entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 20)
			logged := map[string][]string{}
			for _, e := range entries {
				if e.Action != "export" || e.Outcome != store.Allowed || e.Purpose != access.Research || e.ActorKind != store.ActorGrantee || e.ActorID != simchain.Addr(researcher).Hex() {
					t.Errorf("an entry of the export: %+v", e)
				}
				if _, twice := logged[e.PatientID]; twice {
					t.Errorf("%s logged twice", e.PatientID)
				}
				logged[e.PatientID] = slices.Sorted(slices.Values(e.Resources))
			}
			if fmt.Sprint(logged) != fmt.Sprint(c.logged) {
				t.Errorf("logged %v, want %v", logged, c.logged)
			}
			files := w.groupFiles(t, researcher, m)
			if len(files) != len(c.want) {
				t.Errorf("files %v, want %v", files, c.want)
			}
			for typ, ids := range c.want {
				var got, want []string
				for _, l := range files[typ] {
					var res struct{ ResourceType, ID string }
					if err := json.Unmarshal([]byte(l), &res); err != nil || res.ResourceType != typ {
						t.Errorf("%s line: %v %s", typ, err, l)
					}
					got = append(got, res.ID)
					for _, s := range secrets {
						if strings.Contains(l, s) {
							t.Errorf("%s line carries %q: %s", typ, s, l)
						}
					}
					if d := fullDate.FindString(l); d != "" {
						t.Errorf("%s line carries the date %q: %s", typ, d, l)
					}
				}
				for _, id := range ids {
					want = append(want, pseudonym(id))
				}
				if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
					t.Errorf("%s: ids %v, want the pseudonyms of %v", typ, got, ids)
				}
			}
		})
	}

	// The same pseudonyms and the same copy as the researcher's own read of
	// p1's Observation (signed with p1's tag).
	_, m := w.groupExport(t, researcher, groupURL+"/$export?_type=Observation")
	files := w.groupFiles(t, researcher, m)
	read := w.do(w.signed(researcher, "/fhir/Observation/"+pseudonym("o1"), ps["p1"].tag, 1))
	var compact bytes.Buffer
	if read.status != 200 || json.Compact(&compact, read.body) != nil || len(files["Observation"]) != 1 || files["Observation"][0] != compact.String() {
		t.Errorf("the export's Observation %q is not the research read's %d %s", files["Observation"], read.status, read.body)
	}

	// Revoked after kick-off: p2's lines leave the manifest and the files;
	// p1's stay.
	status, m := w.groupExport(t, researcher, groupURL+"/$export")
	var condURL string
	for _, o := range m.Output {
		if o.Type == "Condition" {
			condURL = o.URL
		}
	}
	w.switchTo(ps["p2"])
	if r := w.revoke(1, contracts.AddressGrantee(simchain.Addr(researcher))); r.status != 200 {
		t.Fatalf("p2 revokes: %d %s", r.status, r.body)
	}
	w.switchTo(ps["p1"])
	if r := w.groupDo(groupCall{key: researcher, method: "GET", target: condURL}); condURL == "" || r.status != 404 {
		t.Errorf("a revoked member's file (%s): %d %s", condURL, r.status, r.body)
	}
	r = w.groupDo(groupCall{key: researcher, method: "GET", target: status})
	var after groupManifest
	if r.status != 200 || json.Unmarshal(r.body, &after) != nil {
		t.Fatalf("status after the revocation: %d %s", r.status, r.body)
	}
	var types []string
	for _, o := range after.Output {
		types = append(types, o.Type)
	}
	if !slices.Equal(types, []string{"Observation", "Patient"}) {
		t.Errorf("after p2 revoked, the manifest lists %v", types)
	}
	if got := w.groupFiles(t, researcher, after); len(got["Observation"]) != 1 || len(got["Patient"]) != 1 {
		t.Errorf("p1's files after p2 revoked: %v", got)
	}
	// A kick-off now: p1 only.
	head, _ = w.cfg.Store.LogHead(ctx)
	_, m = w.groupExport(t, researcher, groupURL+"/$export")
	if entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10); len(entries) != 1 || entries[0].PatientID != "p1" || len(m.Output) != 2 {
		t.Errorf("after p2 revoked: %+v, %+v", entries, m)
	}
	// DELETE forgets the job.
	if r := w.groupDo(groupCall{key: researcher, method: "DELETE", target: status}); r.status != 202 {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
	if r := w.groupDo(groupCall{key: researcher, method: "GET", target: status}); r.status != 404 {
		t.Errorf("status after DELETE: %d %s", r.status, r.body)
	}
}

// TestGroupExportEmpty: an address no patient granted research has an
// empty group: the Group has quantity 0, and its export (as the Bulk Data
// IG has an empty group's) a manifest without output; nothing is logged
// under any patient.
func TestGroupExportEmpty(t *testing.T) {
	ctx := context.Background()
	w, _, _ := groupWorld(t)
	stranger := simchain.Key("stranger")
	head, _ := w.cfg.Store.LogHead(ctx)
	if r := w.groupDo(groupCall{key: stranger, method: "GET", target: groupURL}); r.status != 200 || !bytes.Contains(r.body, []byte(`"quantity":0`)) || bytes.Contains(r.body, []byte("member")) {
		t.Errorf("an empty Group: %d %s", r.status, r.body)
	}
	if _, m := w.groupExport(t, stranger, groupURL+"/$export"); len(m.Output) != 0 {
		t.Errorf("an empty group's manifest: %+v", m)
	}
	if entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10); len(entries) != 0 {
		t.Errorf("an empty group logged %+v", entries)
	}
}

// TestGroupExportRefusals: what the group routes refuse — a tagged
// signature there, a tag-less one anywhere else, unsupported parameters,
// _since (research readers see years only), another group id, another
// method, a replay, no signature, a bearer token, another signer's job —
// each a 4xx OperationOutcome, logged, nothing served.
func TestGroupExportRefusals(t *testing.T) {
	ctx := context.Background()
	w, researcher, _ := groupWorld(t)
	status, _ := w.groupExport(t, researcher, groupURL+"/$export")
	unsigned := func(method, target string, header ...string) func() *http.Request {
		return func() *http.Request {
			r := httptest.NewRequest(method, target, nil)
			for i := 0; i+1 < len(header); i += 2 {
				r.Header.Set(header[i], header[i+1])
			}
			return r
		}
	}
	signed := func(c groupCall) func() *http.Request { return func() *http.Request { return w.groupRequest(c) } }
	replayed := w.groupRequest(groupCall{key: researcher, method: "GET", target: groupURL + "/$export?_type=Spaceship", prefer: true})
	for _, c := range []struct {
		name   string
		req    func() *http.Request
		status int
		logged bool
	}{
		{"a tagged signature on the group", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/$export", tag: w.tag, prefer: true}), 400, true},
		{"a tagged signature on a group status", signed(groupCall{key: researcher, method: "GET", target: status, tag: w.tag}), 400, true},
		{"a tag-less signature on a read", signed(groupCall{key: researcher, method: "GET", target: "/fhir/Observation"}), 400, true},
		{"a tag-less signature on a patient export", signed(groupCall{key: researcher, method: "GET", target: "/fhir/Patient/$export", prefer: true}), 400, true},
		{"no respond-async", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/$export"}), 400, true},
		{"_since", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/$export?_since=2020-01-01T00:00:00Z", prefer: true}), 400, true},
		{"an unknown type", func() *http.Request { return replayed }, 400, true},
		{"an unknown parameter", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/$export?patient=p1", prefer: true}), 400, true},
		{"another output format", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/$export?_outputFormat=text/csv", prefer: true}), 400, true},
		{"a parameter on the Group read", signed(groupCall{key: researcher, method: "GET", target: groupURL + "?_count=1"}), 400, true},
		{"another group", signed(groupCall{key: researcher, method: "GET", target: "/fhir/Group/0xabc/$export", prefer: true}), 404, true},
		{"another group's read", signed(groupCall{key: researcher, method: "GET", target: "/fhir/Group/all"}), 404, true},
		{"POST", signed(groupCall{key: researcher, method: "POST", target: groupURL + "/$export", prefer: true}), 405, true},
		{"PUT the Group", signed(groupCall{key: researcher, method: "PUT", target: groupURL}), 405, true},
		{"another route under the Group", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/_history"}), 404, true},
		{"a replay", func() *http.Request { return replayed }, 401, true},
		{"unsigned", unsigned("GET", groupURL+"/$export", "Prefer", "respond-async"), 401, true},
		{"a bearer token", unsigned("GET", groupURL+"/$export", "Prefer", "respond-async", "Authorization", "Bearer abc"), 401, true},
		{"another signer's job", signed(groupCall{key: simchain.Key("stranger"), method: "GET", target: status}), 404, true},
		{"an unknown job", signed(groupCall{key: researcher, method: "GET", target: groupURL + "/_export/" + strings.Repeat("0", 32)}), 404, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			head, _ := w.cfg.Store.LogHead(ctx)
			res, err := w.gw.App().Test(c.req(), -1)
			if err != nil {
				t.Fatal(err)
			}
			var out struct {
				ResourceType string
				Issue        []struct{ Diagnostics string }
			}
			var b bytes.Buffer
			b.ReadFrom(res.Body)
			if res.StatusCode != c.status || json.Unmarshal(b.Bytes(), &out) != nil || out.ResourceType != "OperationOutcome" {
				t.Fatalf("%d %s, want %d and an OperationOutcome", res.StatusCode, b.Bytes(), c.status)
			}
			entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10)
			if c.logged && (len(entries) != 1 || entries[0].Outcome != store.Denied) {
				t.Errorf("logged %+v", entries)
			}
			for _, e := range entries {
				if e.Action == "export" && e.Outcome == store.Allowed {
					t.Errorf("served: %+v", e)
				}
			}
		})
	}
}

// exportLogFailingStore is the gateway's store with the access log's writes
// failing, as a database that went away would, for any batch that holds an
// export entry of patient failFor.
type exportLogFailingStore struct {
	store.Store
	failFor string
}

func (s *exportLogFailingStore) AppendLog(ctx context.Context, e ...store.LogEntry) ([]store.LogEntry, error) {
	for _, x := range e {
		if x.Action == "export" && x.PatientID == s.failFor {
			return nil, fmt.Errorf("append log: %w", store.ErrUnavailable)
		}
	}
	return s.Store.AppendLog(ctx, e...)
}

// TestGroupExportLogFailure: when one member's export entry cannot be
// written, no member's is (one commit), the job fails with the database's
// error and nothing is served; kicked off again once the log can be
// written, the export serves both members.
func TestGroupExportLogFailure(t *testing.T) {
	ctx := context.Background()
	w, researcher, _ := groupWorld(t)
	fs := &exportLogFailingStore{failFor: "p2"}
	w.restart(func(c *Config) { fs.Store, c.Store = c.Store, fs })
	head, _ := w.cfg.Store.LogHead(ctx)
	r := w.groupDo(groupCall{key: researcher, method: "GET", target: groupURL + "/$export", prefer: true})
	if r.status != 202 {
		t.Fatalf("kick-off: %d %s", r.status, r.body)
	}
	status := string(r.body)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r = w.groupDo(groupCall{key: researcher, method: "GET", target: status})
		if r.status != 202 || time.Now().After(deadline) {
			break
		}
	}
	if r.status != 503 || !bytes.Contains(r.body, []byte("OperationOutcome")) {
		t.Errorf("the status of a job whose log could not be written: %d %s", r.status, r.body)
	}
	for _, typ := range []string{"Observation", "Patient", "Condition"} {
		if r := w.groupDo(groupCall{key: researcher, method: "GET", target: status + "/" + typ + ".ndjson"}); r.status != 404 {
			t.Errorf("%s of a failed job: %d %s", typ, r.status, r.body)
		}
	}
	entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 50)
	for _, e := range entries {
		if e.Action == "export" {
			t.Errorf("a failed job logged %+v", e)
		}
	}
	fs.failFor = ""
	if _, m := w.groupExport(t, researcher, groupURL+"/$export"); len(m.Output) != 3 {
		t.Errorf("once the log can be written: %+v", m)
	}
}
