package ingest

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// FuzzNDJSONLine: the NDJSON import's line decoding — splitting a body into
// lines, the structural scan that finds a line's type, id and references,
// and the rewriting of conditional references — never panics. Lines come
// back as the input had them (less "\n" and a "\r" before it); on valid JSON
// the scan agrees with encoding/json, every reference span is the JSON
// string of its value, and rewriting the references keeps the JSON valid
// and changes nothing else.
func FuzzNDJSONLine(f *testing.F) {
	f.Add([]byte(`{"resourceType":"Encounter","id":"e1","subject":{"reference":"Patient/p1"},"participant":[{"individual":{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999990001"}}]}`))
	f.Add([]byte(`{"resourceType":"Observation","id":"o\u00e91","note":[{"text":"\"reference\": \"x\""}],"subject":{"reference":"Patient\/p1"}}` + "\r\n{}\n"))
	f.Add([]byte(`{"a":{"reference":["x"]},"reference":1,"id":"i"}`))
	f.Add([]byte("{\"resourceType\":\"Patient\"\n\n  \n{"))
	f.Fuzz(func(t *testing.T, body []byte) {
		lr := newLineReader(bytes.NewReader(body))
		var lines [][]byte
		for {
			l, _, err := lr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			lines = append(lines, append([]byte(nil), l...))
		}
		norm := strings.ReplaceAll(string(body), "\r\n", "\n")
		norm = strings.TrimSuffix(norm, "\n")
		if got := strings.ReplaceAll(string(bytes.Join(lines, []byte("\n"))), "\r\n", "\n"); len(body) > 0 && got != norm && got+"\r" != norm {
			t.Fatalf("lines %q from %q", lines, body)
		}
		for _, l := range lines {
			checkScan(t, l)
		}
	})
}

func checkScan(t *testing.T, line []byte) {
	s, err := scanLine(line)
	var top map[string]any
	if json.Unmarshal(line, &top) != nil {
		return // not JSON: the validator refuses it; the scan only must not panic
	}
	if err != nil {
		t.Fatalf("scan of valid JSON %q: %v", line, err)
	}
	if typ, _ := top["resourceType"].(string); typ != s.Type {
		t.Fatalf("type %q, want %q", s.Type, typ)
	}
	if id, _ := top["id"].(string); id != s.ID {
		t.Fatalf("id %q, want %q", s.ID, id)
	}
	values := make([]string, len(s.Refs))
	for i, r := range s.Refs {
		var v string
		if err := json.Unmarshal(line[r.Start:r.End], &v); err != nil || v != r.Value {
			t.Fatalf("span %q is not %q", line[r.Start:r.End], r.Value)
		}
		values[i] = "Practitioner/x" + strings.Repeat("y", i)
	}
	out := rewriteRefs(line, s.Refs, values)
	if !json.Valid(out) {
		t.Fatalf("rewritten %q is not JSON", out)
	}
	again, err := scanLine(out)
	if err != nil || len(again.Refs) != len(s.Refs) {
		t.Fatalf("rescan of %q: %v, %d refs", out, err, len(again.Refs))
	}
	for i, r := range again.Refs {
		if r.Value != values[i] {
			t.Fatalf("reference %d is %q, want %q", i, r.Value, values[i])
		}
	}
}
