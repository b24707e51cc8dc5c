package dbmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// ndjsonBody is a multipart body with one part per file of
// testdata/ndjson, edited by edit (file name → lines) first.
func ndjsonBody(t *testing.T, edit func(map[string][]string)) (io.Reader, string) {
	t.Helper()
	paths, _ := filepath.Glob("testdata/ndjson/*.ndjson")
	sort.Strings(paths)
	files := map[string][]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	if edit != nil {
		edit(files)
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, n := range names {
		part, err := mw.CreateFormFile("file", n)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(part, strings.Join(files[n], "\n")+"\n")
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (w *world) importNDJSON(token string, body io.Reader, contentType string) resp {
	w.t.Helper()
	req := httptest.NewRequest("POST", "/admin/import/ndjson", body)
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return w.do(req)
}

// TestImportNDJSONEndpoint: an admin streams a bulk export larger than the
// body limit (every other body stays bounded by it); each patient goes in
// whole and is logged as the admin's import; a bad line refuses its patient
// (an OperationOutcome naming file and line: 200 as others went in, 422 when
// nothing did) and nothing else; input that is not NDJSON changes nothing
// (400); clerks and strangers are refused.
func TestImportNDJSONEndpoint(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t) // BodyLimit 64 KiB
	body, ct := ndjsonBody(t, nil)
	if n := body.(*bytes.Buffer).Len(); n <= w.cfg.BodyLimit {
		t.Fatalf("the test body (%d bytes) should be over the body limit", n)
	}
	r := w.importNDJSON(staffToken, body, ct)
	if r.status != 201 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	rep := r.json(t)
	if rep["patients"] != 3.0 || rep["resources"] != 188.0 || rep["created"] != 188.0 || rep["shared"] != 2.0 {
		t.Fatalf("report %s", r.body)
	}
	enc, err := w.cfg.Store.Get(ctx, "Encounter", "nd-e1")
	if err != nil || !bytes.Contains(enc.Raw, []byte(`"reference":"Practitioner/pr1"`)) || !bytes.Contains(enc.Raw, []byte(`"reference":"Organization/org1"`)) {
		t.Fatalf("encounter %s: %v", enc.Raw, err)
	}
	log, err := w.cfg.Store.PatientLog(ctx, "nd-p1", 0, 10)
	if err != nil || len(log) != 1 || log[0].Action != "import" || log[0].ActorKind != store.ActorStaff || log[0].ActorID != "desk-1" || len(log[0].Resources) != 62 {
		t.Fatalf("access log %+v %v", log, err)
	}
	// Other bodies keep the limit.
	big := httptest.NewRequest("POST", "/admin/import", bytes.NewReader(make([]byte, w.cfg.BodyLimit+1)))
	big.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(big); r.status != 413 {
		t.Fatalf("a large bundle: %d %s", r.status, r.body)
	}
	for _, n := range []int{w.cfg.BodyLimit + 1, 3 * w.cfg.BodyLimit} {
		// Without a Content-Length (chunked), and far over the limit.
		big := httptest.NewRequest("POST", "/admin/import", io.MultiReader(bytes.NewReader(make([]byte, n))))
		big.TransferEncoding = []string{"chunked"}
		big.Header.Set("Authorization", "Bearer "+staffToken)
		if r := w.do(big); r.status != 413 || r.json(t)["resourceType"] != "OperationOutcome" {
			t.Fatalf("%d bytes, chunked: %d %s", n, r.status, r.body)
		}
	}

	// A bad line refuses its patient only.
	body, ct = ndjsonBody(t, func(f map[string][]string) {
		f["Observation.ndjson"][70] = strings.Replace(f["Observation.ndjson"][70], `"status":"final"`, `"status":"finished"`, 1)
		f["Patient.ndjson"] = append(f["Patient.ndjson"], `{"resourceType":"Patient","id":"nd-p3","name":[{"family":"Hintz","given":["Ned"]}]}`)
	})
	r = w.importNDJSON(staffToken, body, ct)
	if r.status != 200 || !bytes.Contains(r.body, []byte(`Observation.ndjson line 71: patient nd-p1 refused`)) || !bytes.Contains(r.body, []byte(`3 patients imported (127 resources: 1 created`)) {
		t.Fatalf("a bad line: %d %s", r.status, r.body)
	}
	if m := r.json(t); m["resourceType"] != "OperationOutcome" {
		t.Fatalf("not an OperationOutcome: %s", r.body)
	}
	// The same, for programs: the counts and the refusal as extensions.
	var oo struct {
		Issue []struct {
			Extension []gatewayapi.Extension
			Severity  string
		}
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || len(oo.Issue) != 2 {
		t.Fatalf("issues: %v %s", err, r.body)
	}
	intOf := func(e gatewayapi.Extension, name string) int {
		if x, ok := e.Sub(name); ok && x.ValueInteger != nil {
			return *x.ValueInteger
		}
		return -1
	}
	strOf := func(e gatewayapi.Extension, name string) string {
		if x, ok := e.Sub(name); ok && x.ValueString != nil {
			return *x.ValueString
		}
		return ""
	}
	counts, ok := gatewayapi.FindExtension(oo.Issue[0].Extension, gatewayapi.BulkImportCountsURL)
	if !ok || intOf(counts, "patients") != 3 || intOf(counts, "resources") != 127 || intOf(counts, "created") != 1 {
		t.Fatalf("the counts' extension: %+v", oo.Issue[0])
	}
	refusal, ok := gatewayapi.FindExtension(oo.Issue[1].Extension, gatewayapi.BulkImportRefusalURL)
	if !ok || strOf(refusal, "file") != "Observation.ndjson" || intOf(refusal, "line") != 71 || strOf(refusal, "patient") != "nd-p1" || !strings.Contains(strOf(refusal, "reason"), "status") {
		t.Fatalf("the refusal's extension: %+v", oo.Issue[1])
	}
	if _, err := w.cfg.Store.Patient(ctx, "nd-p3"); err != nil {
		t.Fatalf("the good patient: %v", err)
	}

	head, _ := w.cfg.Store.LogHead(ctx)
	// Every patient refused and nothing stored: an error status.
	only := `{"resourceType":"Observation","id":"x","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/nd-p9"}}` + "\n"
	if r := w.importNDJSON(staffToken, strings.NewReader(only), "application/fhir+ndjson"); r.status != 422 ||
		!bytes.Contains(r.body, []byte(`nothing imported, 1 refused: request body line 1: patient nd-p9 refused: patient nd-p9 has no Patient resource`)) {
		t.Fatalf("nothing stored: %d %s", r.status, r.body)
	}
	for _, c := range []struct {
		name, token, ct string
		body            string
		status          int
		want            string
	}{
		{"not NDJSON", staffToken, "application/fhir+ndjson", `{"resourceType": "Bundle",` + "\n" + `"type": "collection"}`, 400, "request body line 1 is not a JSON resource"},
		{"named", staffToken, "application/fhir+ndjson; charset=utf-8", "\n\n<html>", 400, "request body line 3"},
		{"empty", staffToken, "application/fhir+ndjson", "", 400, "no resources"},
		{"no such content type", staffToken, "text/csv", "a,b\n", 415, "want multipart/form-data"},
		{"a cut-off multipart body", staffToken, "multipart/form-data; boundary=xyz", "--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"Patient.ndjson\"\r\n\r\n{\"resourceType\":\"Patient\",\"id\":\"cut\"}\n", 400, "Patient.ndjson: the input broke off at line 2"},
		{"no token", "", "application/fhir+ndjson", "{}", 401, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := w.importNDJSON(c.token, strings.NewReader(c.body), c.ct)
			if r.status != c.status || !bytes.Contains(r.body, []byte(c.want)) || r.json(t)["resourceType"] != "OperationOutcome" {
				t.Fatalf("%d %s, want %d …%s…", r.status, r.body, c.status, c.want)
			}
		})
	}
	if after, _ := w.cfg.Store.LogHead(ctx); after.Next != head.Next {
		t.Fatalf("refused imports wrote %d log entries", after.Next-head.Next)
	}
	if _, err := w.cfg.Store.Patient(ctx, "cut"); err == nil {
		t.Fatal("a cut-off body imported its patient")
	}

	// A clerk may not import.
	r = w.staff("POST", "/admin/staff", map[string]any{"id": "ann", "name": "Ann Lee", "role": "clerk", "token": true})
	clerk := r.json(t)["token"].(string)
	body, ct = ndjsonBody(t, nil)
	if r := w.importNDJSON(clerk, body, ct); r.status != 403 {
		t.Fatalf("a clerk: %d %s", r.status, r.body)
	}
}
