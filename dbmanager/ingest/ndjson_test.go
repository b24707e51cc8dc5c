package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
)

// bulkFiles is a bulk export: file name → lines.
type bulkFiles map[string][]string

// synthBulk writes a Synthea-shaped bulk export: a practitioner and an
// organization (referred to conditionally, by identifier, as Synthea does),
// and n patients p0…, each with enc encounters of obs observations.
func synthBulk(n, enc, obs int) bulkFiles {
	f := bulkFiles{
		"Practitioner.ndjson": {`{"resourceType":"Practitioner","id":"pr1","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"9999990001"}],"name":[{"family":"Dibbert","given":["Noe"]}]}`},
		"Organization.ndjson": {`{"resourceType":"Organization","id":"org1","identifier":[{"system":"https://github.com/synthetichealth/synthea","value":"org1"}],"name":"Clinic"}`},
	}
	for p := range n {
		pid := fmt.Sprintf("p%d", p)
		f["Patient.ndjson"] = append(f["Patient.ndjson"], fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"Hoeger%d","given":["Buster"]}],"gender":"male","birthDate":"1961-04-02"}`, pid, p))
		for e := range enc {
			eid := fmt.Sprintf("e-%s-%d", pid, e)
			f["Encounter.ndjson"] = append(f["Encounter.ndjson"], fmt.Sprintf(`{"resourceType":"Encounter","id":"%s","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/%s"},"participant":[{"individual":{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999990001","display":"Dr. Noe Dibbert"}}],"period":{"start":"2019-05-01T10:00:00Z","end":"2019-05-01T10:30:00Z"},"serviceProvider":{"reference":"Organization?identifier=https://github.com/synthetichealth/synthea|org1"}}`, eid, pid))
			for o := range obs {
				f["Observation.ndjson"] = append(f["Observation.ndjson"], fmt.Sprintf(`{"resourceType":"Observation","id":"o-%s-%d-%d","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},"subject":{"reference":"Patient/%s"},"encounter":{"reference":"Encounter/%s"},"effectiveDateTime":"2019-05-01T10:0%d:00Z","valueQuantity":{"value":%d,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`, pid, e, o, pid, eid, o%10, 60+o%40))
			}
		}
	}
	return f
}

func (f bulkFiles) names() []string {
	var ns []string
	for n := range f {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// next returns the files in name order, as ImportNDJSON reads them.
func (f bulkFiles) next() func() (NDJSONFile, error) {
	ns := f.names()
	return func() (NDJSONFile, error) {
		if len(ns) == 0 {
			return NDJSONFile{}, io.EOF
		}
		n := ns[0]
		ns = ns[1:]
		return NDJSONFile{Name: n, R: strings.NewReader(strings.Join(f[n], "\n") + "\n")}, nil
	}
}

// with returns a copy of f with line i (from 1) of file replaced (or
// appended, for i beyond the end).
func (f bulkFiles) with(file string, i int, l string) bulkFiles {
	g := bulkFiles{}
	for n, ls := range f {
		g[n] = append([]string(nil), ls...)
	}
	if i > len(g[file]) {
		g[file] = append(g[file], l)
	} else {
		g[file][i-1] = l
	}
	return g
}

// contents lists every current resource of the store: type/id → version
// and sha256, and the patients' resource counts.
func contents(t *testing.T, s store.Store, patients ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for k, sum := range sharedResources(t, s) {
		out[k] = fmt.Sprintf("shared %x", sum[:4])
	}
	for _, p := range patients {
		cursor := ""
		for {
			page, err := s.Everything(ctx, p, store.EverythingQuery{PageRequest: store.PageRequest{Count: store.MaxCount, Cursor: cursor}})
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Resources {
				out[r.Type+"/"+r.ID] = fmt.Sprintf("%s v%d %x", r.PatientID, r.Version, r.SHA256[:4])
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
	}
	return out
}

var ndjsonImporter = Actor{Kind: store.ActorStaff, ID: "admin"}

// TestImportNDJSON imports a Synthea-shaped bulk export: every patient in
// one transaction with its own access-log entry, the conditional references
// stored as the literal ones they resolve to, nothing else changed; a second
// run changes nothing.
func TestImportNDJSON(t *testing.T) {
	ctx := context.Background()
	files := synthBulk(3, 2, 5)
	for _, be := range sqltest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			s := be.Open(t)
			in := New(s, validator(t))
			rep, err := in.ImportNDJSON(ctx, files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			want := NDJSONReport{Files: 5, Lines: 2 + 3*(1+2+2*5), Patients: 3, Shared: 2, Resources: 2 + 3*(1+2+2*5), Created: 2 + 3*(1+2+2*5)}
			if fmt.Sprint(rep) != fmt.Sprint(want) {
				t.Fatalf("report %+v, want %+v", rep, want)
			}
			enc, err := s.Get(ctx, "Encounter", "e-p1-0")
			if err != nil {
				t.Fatal(err)
			}
			line := files["Encounter.ndjson"][2]
			line = strings.Replace(line, `Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999990001`, `Practitioner/pr1`, 1)
			line = strings.Replace(line, `Organization?identifier=https://github.com/synthetichealth/synthea|org1`, `Organization/org1`, 1)
			if string(enc.Raw) != line {
				t.Fatalf("stored\n%s\nwant\n%s", enc.Raw, line)
			}
			obs, err := s.Get(ctx, "Observation", "o-p2-1-3")
			if err != nil || string(obs.Raw) != files["Observation.ndjson"][2*10+1*5+3] || obs.PatientID != "p2" {
				t.Fatalf("observation %s (%v) of %q", obs.Raw, err, obs.PatientID)
			}
			// One log entry per patient, one for the directory.
			log, err := s.LogRange(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range log {
				got = append(got, fmt.Sprintf("%s %s %s %d", e.ActorID, e.Action, e.PatientID, len(e.Resources)))
			}
			if w := "admin import  2|admin import p0 13|admin import p1 13|admin import p2 13"; strings.Join(got, "|") != w {
				t.Fatalf("log %q, want %q", strings.Join(got, "|"), w)
			}
			before := contents(t, s, "p0", "p1", "p2")
			rep, err = in.ImportNDJSON(ctx, files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
			if err != nil || rep.Unchanged != want.Resources || rep.Created+rep.Updated != 0 {
				t.Fatalf("re-import: %+v, %v", rep, err)
			}
			if after := contents(t, s, "p0", "p1", "p2"); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("re-import changed the records:\n%v\n%v", before, after)
			}
		})
	}
}

// TestImportNDJSONRefusesPatient: a bad line refuses its patient whole,
// naming file and line; the other patients go in.
func TestImportNDJSONRefusesPatient(t *testing.T) {
	ctx := context.Background()
	base := synthBulk(3, 1, 2)
	obs := func(id, subject, extra string) string {
		return `{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"` + subject + `"}` + extra + `}`
	}
	cases := []struct {
		name    string
		files   bulkFiles
		patient string
		file    string
		line    int
		reason  string
	}{
		{"malformed JSON", base.with("Observation.ndjson", 3, `{"resourceType":"Observation","id":"x","subject":{"reference":"Patient/p1"},"status":"final",}`), "p1", "Observation.ndjson", 3, "not strict JSON"},
		{"not FHIR", base.with("Observation.ndjson", 4, obs("x", "Patient/p1", `,"valueFoo":1`)), "p1", "Observation.ndjson", 4, "FHIR R4"},
		{"no id", base.with("Observation.ndjson", 7, `{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}`), "p2", "Observation.ndjson", 7, "has no id"},
		{"another patient too", base.with("Observation.ndjson", 9, obs("x", "Patient/p1", `,"performer":[{"reference":"Patient/p2"}]`)), "p1", "Observation.ndjson", 7, "another patient"},
		{"unknown patient", base.with("Observation.ndjson", 9, obs("x", "Patient/p9", "")), "p9", "Observation.ndjson", 7, "no Patient resource"},
		{"unresolved conditional", base.with("Encounter.ndjson", 2, strings.Replace(base["Encounter.ndjson"][1], "9999990001", "12345", 1)), "p1", "Encounter.ndjson", 2, "resolves to no Practitioner"},
		{"unresolved literal", base.with("Observation.ndjson", 3, obs("x", "Patient/p1", `,"encounter":{"reference":"Encounter/nope"}`)), "p1", "Observation.ndjson", 3, `"Encounter/nope" resolves to nothing`},
		{"duplicate id", base.with("Observation.ndjson", 4, strings.Replace(base["Observation.ndjson"][3], "o-p1-0-1", "o-p1-0-0", 1)), "p1", "Observation.ndjson", 4, "also at line 3"},
		{"wrong type of reference", base.with("Observation.ndjson", 3, obs("x", "Patient/p1", `,"encounter":{"reference":"Encounter/o-p0-0-0"}`)), "p1", "Observation.ndjson", 3, "resolves to nothing"},
	}
	for _, be := range sqltest.Backends(t) {
		for _, c := range cases {
			t.Run(be.Name+"/"+c.name, func(t *testing.T) {
				s := be.Open(t)
				in := New(s, validator(t))
				rep, err := in.ImportNDJSON(ctx, c.files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				if len(rep.Refused) != 1 {
					t.Fatalf("refused %v", rep.Refused)
				}
				r := rep.Refused[0]
				if r.PatientID != c.patient || r.File != c.file || r.Line != c.line || !strings.Contains(r.Reason, c.reason) {
					t.Fatalf("refused %s, want %s line %d of %s: …%s…", r, c.file, c.line, c.patient, c.reason)
				}
				// Nothing of the refused patient, all of the others.
				for _, p := range []string{"p0", "p1", "p2"} {
					_, err := s.Patient(ctx, p)
					if (p == c.patient) != errors.Is(err, store.ErrNotFound) {
						t.Errorf("patient %s: %v", p, err)
					}
				}
			})
		}
	}
}

// TestImportNDJSONRefusesAll: input no patient can be charged with refuses
// the whole import, naming file and line, and writes nothing.
func TestImportNDJSONRefusesAll(t *testing.T) {
	ctx := context.Background()
	base := synthBulk(2, 1, 1)
	cases := []struct {
		name  string
		files bulkFiles
		want  string
	}{
		{"not JSON", base.with("Observation.ndjson", 2, `<html>oops</html>`), "Observation.ndjson line 2 is not a JSON resource"},
		{"a JSON Bundle", bulkFiles{"bundle.json": {`{"resourceType":"Bundle",`, `"type":"collection"}`}}, "bundle.json line 1 is not a JSON resource"},
		{"unknown type", base.with("Patient.ndjson", 3, `{"resourceType":"Spaceship","id":"s1"}`), "Patient.ndjson line 3: a Spaceship that cannot be charged"},
		{"no patient reference", base.with("Observation.ndjson", 2, `{"resourceType":"Observation","id":"x","status":"final","code":{"text":"x"}}`), "Observation.ndjson line 2: a Observation that cannot be charged"},
		{"no files", bulkFiles{}, "no NDJSON files"},
		{"line too long", bulkFiles{"big.ndjson": {strings.Repeat("x", MaxLine+1)}}, "big.ndjson line 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := sqltest.Backends(t)[0].Open(t)
			in := New(s, validator(t))
			rep, err := in.ImportNDJSON(ctx, c.files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
			if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrInvalid …%s…", err, c.want)
			}
			if rep.Resources != 0 {
				t.Fatalf("wrote %d resources", rep.Resources)
			}
			if head, err := s.LogHead(ctx); err != nil || head.Next != 0 {
				t.Fatalf("log %d entries (%v)", head.Next, err)
			}
		})
	}
}

// TestImportNDJSONResume interrupts an import (its context ends after the
// first patient went in) and runs it again: the records are exactly those
// of an import never interrupted, every resource at version 1.
func TestImportNDJSONResume(t *testing.T) {
	files := synthBulk(4, 2, 3)
	patients := []string{"p0", "p1", "p2", "p3"}
	for _, be := range sqltest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			whole := be.Open(t)
			if _, err := New(whole, validator(t)).ImportNDJSON(context.Background(), files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			s := be.Open(t)
			in := New(s, validator(t))
			ctx, cancel := context.WithCancel(context.Background())
			_, err := in.ImportNDJSON(ctx, files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir(), Progress: func(p NDJSONProgress) {
				if p.Phase == "write" && p.Patients == 1 {
					cancel()
				}
			}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted import: %v", err)
			}
			half := contents(t, s, patients...)
			if _, ok := half["Patient/p0"]; !ok || len(half) >= len(contents(t, whole, patients...)) {
				t.Fatalf("after the interruption: %d resources", len(half))
			}
			rep, err := in.ImportNDJSON(context.Background(), files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Unchanged != len(half) || rep.Created != rep.Resources-len(half) || rep.Updated != 0 {
				t.Fatalf("resumed: %+v after %d resources", rep, len(half))
			}
			got, want := contents(t, s, patients...), contents(t, whole, patients...)
			if len(got) != len(want) {
				t.Fatalf("%d resources, want %d", len(got), len(want))
			}
			for k, w := range want {
				// Same patient, version 1, same bytes.
				if got[k] != w {
					t.Errorf("%s: %s, want %s", k, got[k], w)
				}
			}
		})
	}
}

// TestImportNDJSONStoredDirectory: conditional references resolve against
// the records database too, and to one resource only.
func TestImportNDJSONStoredDirectory(t *testing.T) {
	ctx := context.Background()
	full := synthBulk(1, 1, 1)
	s := sqltest.Backends(t)[0].Open(t)
	in := New(s, validator(t))
	dir := bulkFiles{"Practitioner.ndjson": full["Practitioner.ndjson"], "Organization.ndjson": full["Organization.ndjson"]}
	if _, err := in.ImportNDJSON(ctx, dir.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	delete(full, "Practitioner.ndjson")
	delete(full, "Organization.ndjson")
	rep, err := in.ImportNDJSON(ctx, full.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
	if err != nil || rep.Patients != 1 || len(rep.Refused) != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	// A second practitioner with the same NPI makes the reference ambiguous.
	twin := bulkFiles{"Practitioner.ndjson": {strings.Replace(dir["Practitioner.ndjson"][0], `"pr1"`, `"pr2"`, 1)}}
	if _, err := in.ImportNDJSON(ctx, twin.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	rep, err = in.ImportNDJSON(ctx, full.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
	if err != nil || len(rep.Refused) != 1 || !strings.Contains(rep.Refused[0].Reason, "ambiguous: 2 resources match (pr1, pr2)") {
		t.Fatalf("%+v %v", rep, err)
	}
}

// TestImportNDJSONSpoolRemoved: the spool is gone after an import, however
// it ended, and so is one a killed import left behind a day ago.
func TestImportNDJSONSpoolRemoved(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, "medrec-ndjson-1234.spool")
	if err := os.WriteFile(left, []byte("health data"), 0o600); err != nil {
		t.Fatal(err)
	}
	day := time.Now().Add(-25 * time.Hour)
	os.Chtimes(left, day, day)
	s := sqltest.Backends(t)[0].Open(t)
	in := New(s, validator(t))
	in.ImportNDJSON(context.Background(), synthBulk(1, 1, 1).next(), ndjsonImporter, NDJSONOptions{SpoolDir: dir})
	in.ImportNDJSON(context.Background(), bulkFiles{"x": {"nope"}}.next(), ndjsonImporter, NDJSONOptions{SpoolDir: dir})
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestImportNDJSONSynthea writes the Synthea sample bundles out as a bulk
// export (one file per type, references as the bundles have them:
// urn:uuid, contained; each shared resource once, from the directory
// bundles) and imports it: every resource goes in, and each patient's
// resources say what the bundle import stored.
func TestImportNDJSONSynthea(t *testing.T) {
	ctx := context.Background()
	patients, directory := syntheatest.Bundles(t)
	files := bulkFiles{}
	byBundle := New(sqltest.Backends(t)[0].Open(t), validator(t))
	var ids []string
	total := 0
	for _, p := range append(directory, patients...) {
		raw := syntheatest.Read(t, p)
		rep := importFile(t, byBundle, p)
		if rep.PatientID != "" {
			ids = append(ids, rep.PatientID)
		}
		rs, err := BundleResources(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			var head struct {
				ResourceType string `json:"resourceType"`
			}
			if err := json.Unmarshal(r, &head); err != nil {
				t.Fatal(err)
			}
			if rep.PatientID != "" && !fhirval.InPatientCompartment(head.ResourceType) {
				// A bulk export has each shared resource once, in its file;
				// the patient bundles repeat (other versions of) some.
				continue
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, r); err != nil {
				t.Fatal(err)
			}
			files[head.ResourceType+".ndjson"] = append(files[head.ResourceType+".ndjson"], compact.String())
			total++
		}
	}
	s := sqltest.Backends(t)[0].Open(t)
	rep, err := New(s, validator(t)).ImportNDJSON(ctx, files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
	if err != nil || len(rep.Refused) != 0 || rep.Resources != total || rep.Patients != len(patients) {
		t.Fatalf("%d resources: %+v %v", total, rep, err)
	}
	// The bundle import stores the bundles' (indented) bytes: compare what
	// each resource says, not its layout.
	for _, p := range ids {
		page, err := s.Everything(ctx, p, store.EverythingQuery{PageRequest: store.PageRequest{Count: store.MaxCount}})
		if err != nil || len(page.Resources) == 0 {
			t.Fatalf("patient %s: %v", p, err)
		}
		for _, r := range page.Resources {
			want, err := byBundle.store.Get(ctx, r.Type, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			var a, b bytes.Buffer
			json.Compact(&a, r.Raw)
			json.Compact(&b, want.Raw)
			if a.String() != b.String() || want.PatientID != r.PatientID {
				t.Fatalf("%s/%s differs from the bundle import's", r.Type, r.ID)
			}
		}
	}
}

// TestImportNDJSONSharedTwice: a shared resource given twice alike is
// stored once; given twice differently, the later line is refused and the
// patients that refer to it still resolve to the first.
func TestImportNDJSONSharedTwice(t *testing.T) {
	ctx := context.Background()
	files := synthBulk(1, 1, 1)
	pr := files["Practitioner.ndjson"][0]
	files["Practitioner.ndjson"] = append(files["Practitioner.ndjson"], pr, strings.Replace(pr, "Noe", "Noah", 1))
	s := sqltest.Backends(t)[0].Open(t)
	rep, err := New(s, validator(t)).ImportNDJSON(ctx, files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: t.TempDir()})
	if err != nil || rep.Patients != 1 || rep.Shared != 2 || len(rep.Refused) != 1 ||
		rep.Refused[0].String() != "Practitioner.ndjson line 3: shared resource refused: Practitioner/pr1 is also at line 1 of Practitioner.ndjson, different" {
		t.Fatalf("%+v %v", rep, err)
	}
	if r, err := s.Get(ctx, "Practitioner", "pr1"); err != nil || string(r.Raw) != pr {
		t.Fatalf("stored %s %v", r.Raw, err)
	}
}
