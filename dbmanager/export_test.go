package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// TestBulkExport: a patient-level $export as the Bulk Data IG has it —
// kick-off (202, status URL), status (202, then the manifest), NDJSON files,
// DELETE — for the owner (every resource, byte for byte but compacted),
// for a grantee (its scope only) and a research grantee (de-identified);
// logged once, naming every version, before any file is listed; another
// reader cannot see the job, a revoked one cannot download; bad requests
// are 400s.
func TestBulkExport(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	w.open()
	doctor, researcher := simchain.Key("doctor"), simchain.Key("researcher")
	obs, _ := access.NewScope("Observation")
	for _, g := range []struct {
		key     *ecdsa.PrivateKey
		scope   access.Scope
		purpose access.Purpose
	}{{doctor, obs, access.Treatment}, {researcher, access.AllTypes, access.Research}} {
		if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(g.key)), g.scope, g.purpose); r.status != 200 {
			t.Fatalf("grant: %d %s", r.status, r.body)
		}
	}

	// req signs a request of key, with the async preference.
	req := func(key *ecdsa.PrivateKey, method, target string) resp {
		t.Helper()
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		if u.Host != "" {
			target = u.RequestURI()
		}
		r, _ := http.NewRequest(method, "http://example.com"+target, nil)
		u = r.URL
		if err := gatewayauth.Sign(r.Header, gatewayauth.Request{Method: method, Path: u.EscapedPath(), Query: u.RawQuery, BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1}, key, w.domain(), time.Now()); err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Prefer", "respond-async")
		res, err := w.gw.App().Test(r, -1)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(res.Body)
		if res.StatusCode == 202 && res.Header.Get("Content-Location") != "" {
			b.Reset()
			b.WriteString(res.Header.Get("Content-Location"))
		}
		return resp{status: res.StatusCode, body: b.Bytes()}
	}
	type manifest struct {
		Request             string
		RequiresAccessToken bool
		Output              []struct {
			Type, URL string
			Count     int
		}
	}
	// export kicks off and waits for the manifest.
	export := func(key *ecdsa.PrivateKey, target string) (string, manifest) {
		t.Helper()
		r := req(key, "GET", target)
		if r.status != 202 || !strings.Contains(string(r.body), "/fhir/_export/") {
			t.Fatalf("kick-off %s: %d %s", target, r.status, r.body)
		}
		status := string(r.body)
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			r := req(key, "GET", status)
			if r.status == 200 {
				var m manifest
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
	files := func(key *ecdsa.PrivateKey, m manifest) map[string][]string {
		t.Helper()
		out := map[string][]string{}
		for _, o := range m.Output {
			r := req(key, "GET", o.URL)
			lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
			if r.status != 200 || len(lines) != o.Count {
				t.Fatalf("%s: %d, %d lines for %d: %s", o.URL, r.status, len(lines), o.Count, r.body)
			}
			out[o.Type] = lines
		}
		return out
	}

	// The owner: everything, each line the stored resource, compacted.
	head, _ := w.cfg.Store.LogHead(ctx)
	status, m := export(w.owner, "/fhir/Patient/$export")
	got := files(w.owner, m)
	page, err := w.cfg.Store.Everything(ctx, "p1", store.EverythingQuery{PageRequest: store.PageRequest{Count: store.MaxCount}})
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	n := 0
	for _, res := range page.Resources {
		var want bytes.Buffer
		json.Compact(&want, res.Raw)
		if !slices.Contains(got[res.Type], want.String()) {
			t.Errorf("%s/%s is not exported as stored", res.Type, res.ID)
		}
		refs = append(refs, versionRef(res.Meta))
		n++
	}
	if total := len(got["Patient"]) + len(got["Observation"]) + len(got["Condition"]); n != total || n < 3 {
		t.Errorf("%d resources stored, %d exported: %v", n, total, got)
	}
	entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10)
	if len(entries) != 1 || entries[0].Action != "export" || entries[0].Outcome != store.Allowed || !slices.Equal(entries[0].Resources, refs) {
		t.Errorf("the export's log entry: %+v, want %v", entries, refs)
	}

	// Kept in the records database: after a restart, the same manifest and
	// the same files.
	w.restart()
	if r := req(w.owner, "GET", status); r.status != 200 {
		t.Fatalf("status after a restart: %d %s", r.status, r.body)
	}
	if again := files(w.owner, m); !maps.EqualFunc(again, got, slices.Equal) {
		t.Errorf("the files after a restart differ")
	}
	jobs, err := w.cfg.Store.ExportJobs(ctx)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("stored jobs: %+v %v", jobs, err)
	}
	ownerJobs := jobs[0].Owner

	// Another reader does not see the job; DELETE forgets it.
	for _, key := range []*ecdsa.PrivateKey{doctor, simchain.Key("stranger")} {
		if r := req(key, "GET", status); r.status != 404 && r.status != 403 {
			t.Errorf("another reader's status: %d %s", r.status, r.body)
		}
	}
	if r := req(w.owner, "DELETE", status); r.status != 202 {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
	if r := req(w.owner, "GET", status); r.status != 404 {
		t.Errorf("status after DELETE: %d %s", r.status, r.body)
	}
	if jobs, _ := w.cfg.Store.ExportJobs(ctx); len(jobs) != 0 {
		t.Errorf("a deleted job is kept: %+v", jobs)
	}

	// A job another process runs (beaten a moment ago): in progress, and
	// the reader's next kick-off waits for it. One whose process went away
	// (no beat for longer than exportGone): the status says it stopped, and
	// the reader kicks off again.
	elsewhere := store.ExportJob{ID: "e1", Owner: ownerJobs, Request: "x", Started: time.Now()}
	if err := w.cfg.Store.AddExportJob(ctx, elsewhere); err != nil {
		t.Fatal(err)
	}
	if r := req(w.owner, "GET", "/fhir/_export/e1"); r.status != 202 {
		t.Errorf("a job running elsewhere: %d %s", r.status, r.body)
	}
	if r := req(w.owner, "GET", "/fhir/Patient/$export"); r.status != 429 {
		t.Errorf("a kick-off while one runs elsewhere: %d %s", r.status, r.body)
	}
	gone := store.ExportJob{ID: "e2", Owner: ownerJobs, Request: "x", Started: time.Now().Add(-exportGone - time.Second)}
	if err := w.cfg.Store.DeleteExportJob(ctx, "e1"); err != nil {
		t.Fatal(err)
	}
	if err := w.cfg.Store.AddExportJob(ctx, gone); err != nil {
		t.Fatal(err)
	}
	for range 2 { // said once, and kept so
		if r := req(w.owner, "GET", "/fhir/_export/e2"); r.status != 500 || !strings.Contains(string(r.body), "stopped unfinished") {
			t.Errorf("a job whose process went away: %d %s", r.status, r.body)
		}
	}
	status, m = export(w.owner, "/fhir/Patient/$export")
	if len(m.Output) == 0 {
		t.Errorf("the export after one that stopped: %+v", m)
	}
	if r := req(w.owner, "DELETE", status); r.status != 202 {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
	// Housekeeping deletes what finished more than exportTTL ago (the
	// stopped job's row), by the gateway's clock.
	later := time.Now().Add(exportTTL + time.Minute)
	w.restart(func(c *Config) { c.Now = func() time.Time { return later } })
	w.gw.Maintain(ctx)
	if jobs, _ := w.cfg.Store.ExportJobs(ctx); len(jobs) != 0 {
		t.Errorf("expired exports kept: %+v", jobs)
	}
	w.restart(func(c *Config) { c.Now = time.Now })

	// A grantee: its scope only; _type narrows further.
	_, m = export(doctor, "/fhir/Patient/$export")
	if got := files(doctor, m); len(got) != 1 || len(got["Observation"]) == 0 {
		t.Errorf("the doctor's export: %v", got)
	}
	_, m = export(w.owner, "/fhir/Patient/$export?_type=Condition")
	if got := files(w.owner, m); len(got) != 1 || len(got["Condition"]) == 0 {
		t.Errorf("the owner's export of Conditions: %v", got)
	}

	// A research grantee: de-identified, as its reads are.
	_, m = export(researcher, "/fhir/Patient/$export")
	for typ, lines := range files(researcher, m) {
		for _, l := range lines {
			for _, s := range []string{"Hoeger", "Buster", `"p1"`, `"o1"`, `"c1"`, "1961-04-02"} {
				if strings.Contains(l, s) {
					t.Errorf("a research export's %s carries %q: %s", typ, s, l)
				}
			}
		}
	}

	// Revoked: the files are refused from then on.
	status, m = export(doctor, "/fhir/Patient/$export")
	if r := w.revoke(1, contracts.AddressGrantee(simchain.Addr(doctor))); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := req(doctor, "GET", m.Output[0].URL); r.status != 403 {
		t.Errorf("a revoked doctor downloads: %d %s", r.status, r.body)
	}

	// Bad requests.
	for _, target := range []string{"/fhir/Patient/$export?_type=Spaceship", "/fhir/Patient/$export?_outputFormat=text/csv",
		"/fhir/Patient/$export?_since=yesterday", "/fhir/Patient/$export?patient=p1"} {
		if r := req(w.owner, "GET", target); r.status != 400 {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
	r := w.get(w.owner, "/fhir/Patient/$export") // no Prefer: respond-async
	if r.status != 400 || !bytes.Contains(r.body, []byte("respond-async")) {
		t.Errorf("kick-off without respond-async: %d %s", r.status, r.body)
	}
	if r := req(researcher, "GET", "/fhir/Patient/$export?_since=2020-01-01T00:00:00Z"); r.status != 403 && r.status != 400 {
		t.Errorf("a research export with _since: %d %s", r.status, r.body)
	}
	if r := req(w.owner, "GET", "/fhir/_export/"+strings.Repeat("0", 32)); r.status != 404 {
		t.Errorf("an unknown export: %d %s", r.status, r.body)
	}
}
