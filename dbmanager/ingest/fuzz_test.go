package ingest

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
)

// countingStore counts the batches a store applied.
type countingStore struct {
	*sqlstore.DB
	applied int
}

func (s *countingStore) Apply(ctx context.Context, b store.Batch) ([]store.Result, error) {
	res, err := s.DB.Apply(ctx, b)
	if err == nil {
		s.applied++
	}
	return res, err
}

const (
	fuzzPatient = `{"resourceType":"Patient","id":"p1","name":[{"family":"Hoeger","given":["Buster"]}],"birthDate":"1961-04-02","gender":"male"}`
	fuzzObs     = `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p1"},"valueQuantity":{"value":72,"unit":"/min"}}`
	fuzzOrg     = `{"resourceType":"Organization","id":"org1","name":"Clinic"}`
)

func fuzzBundle(typ string, entries ...string) string {
	return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`
}

func fuzzEntry(fullURL, resource, method, url string) string {
	e := `{`
	if fullURL != "" {
		e += `"fullUrl":"` + fullURL + `",`
	}
	e += `"resource":` + resource
	if method != "" {
		e += `,"request":{"method":"` + method + `","url":"` + url + `"}`
	}
	return e + `}`
}

// FuzzImportBundle: the admin API's import (POST /admin/import) hands the
// request body to ImportBundle. It never panics. A refused bundle is
// store.ErrInvalid or store.ErrConflict (which the gateway answers with 400
// and 409; any other error would be a 500) and writes nothing: no batch is
// applied and the access log and the records of patient p1 are as before.
// An accepted bundle is stored as sent, and importing it again changes
// nothing.
func FuzzImportBundle(f *testing.F) {
	ctx := context.Background()
	db, err := sqlstore.OpenSQLite(ctx, filepath.Join(f.TempDir(), "records.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	s := &countingStore{DB: db}
	in := New(s, validator(f))
	p1 := fuzzBundle("transaction", fuzzEntry("urn:uuid:p1", fuzzPatient, "POST", "Patient"), fuzzEntry("", fuzzObs, "PUT", "Observation/o1"), fuzzEntry("", fuzzOrg, "", ""))
	if _, err := in.ImportBundle(ctx, []byte(p1), importer); err != nil {
		f.Fatal(err)
	}
	p2 := strings.ReplaceAll(fuzzPatient, "p1", "p2")
	obs2 := strings.ReplaceAll(strings.ReplaceAll(fuzzObs, "p1", "p2"), "o1", "o2")
	for _, b := range []string{
		p1,
		fuzzBundle("batch", fuzzEntry("", p2, "", ""), fuzzEntry("", obs2, "", "")),
		fuzzBundle("collection", fuzzEntry("", p2, "", ""), fuzzEntry("", strings.ReplaceAll(fuzzObs, "p1", "p2"), "", "")), // o1 is p1's
		fuzzBundle("collection", fuzzEntry("", fuzzOrg, "", "")),
		fuzzBundle("collection", fuzzEntry("https://example.org/fhir/Organization/org1", fuzzOrg, "", "")),
		fuzzBundle("collection", fuzzEntry("urn:uuid:org2", fuzzOrg, "", "")),
		fuzzBundle("collection", fuzzEntry("", fuzzObs, "", "")),
		fuzzBundle("transaction", fuzzEntry("", p2, "DELETE", "Patient/p2")),
		fuzzBundle("transaction", fuzzEntry("", p2, "PUT", "Patient/p3")),
		fuzzBundle("transaction", fuzzEntry("", p2, "", ""), fuzzEntry("", p2, "", "")),
		fuzzBundle("transaction", fuzzEntry("", p2, "", ""), fuzzEntry("", fuzzPatient, "", "")),
		fuzzBundle("transaction", fuzzEntry("urn:uuid:"+strings.Repeat("a", 70), strings.Replace(p2, `"id":"p2",`, "", 1), "", "")),
		fuzzBundle("transaction", fuzzEntry("urn:uuid:P-2", strings.Replace(p2, `"id":"p2",`, "", 1), "", "")),
		fuzzBundle("searchset", fuzzEntry("", p2, "", "")),
		fuzzBundle("transaction"),
		`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":null}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":` + p2 + `,"search":{"mode":"match"}}]}`,
		`{"resourceType":"Bundle","type":"transaction","entry":null}`,
		`{"resourceType":"Bundle","resourceType":"Bundle","type":"transaction","entry":[{"resource":` + p2 + `}]}`,
		`{"resourcetype":"Bundle","TYPE":"transaction","entry":[{"Resource":` + p2 + `}]}`,
		p1 + ` `, p1 + `{}`, p1 + "\x00", "\ufeff" + p1, `null`, `[]`, ``, `{}`, strings.Repeat(`[`, 100000),
		`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Repeat(`{"resource":{"resourceType":"Organization"}},`, 50) + `{}]}`,
	} {
		f.Add([]byte(b))
	}
	snapshot := func(t *testing.T) (store.LogHead, store.State) {
		head, err := s.LogHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := s.State(ctx, "p1")
		if err != nil {
			t.Fatal(err)
		}
		return head, st
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		head, st := snapshot(t)
		applied := s.applied
		rep, err := in.ImportBundle(ctx, raw, importer)
		if err != nil {
			if !errors.Is(err, store.ErrInvalid) && !errors.Is(err, store.ErrConflict) {
				t.Fatalf("refused with %v: neither ErrInvalid nor ErrConflict", err)
			}
			if h2, st2 := snapshot(t); s.applied != applied || h2 != head || st2 != st {
				t.Fatalf("refused (%v), yet wrote: %d batches, log %+v → %+v, p1 %+v → %+v", err, s.applied-applied, head, h2, st, st2)
			}
			return
		}
		b, err := parseBundle(raw)
		if err != nil {
			t.Fatalf("imported a bundle that does not parse: %v", err)
		}
		if rep.Entries != len(b.Entry) || len(rep.Results) != len(b.Entry) || rep.Created+rep.Updated+rep.Unchanged != rep.Entries {
			t.Fatalf("report %+v for %d entries", rep, len(b.Entry))
		}
		for i, res := range rep.Results {
			got, err := s.Get(ctx, res.Type, res.ID)
			if err != nil {
				t.Fatalf("entry %d, %s/%s: %v", i, res.Type, res.ID, err)
			}
			if fhirval.InPatientCompartment(res.Type) && (!bytes.Equal(got.Raw, b.Entry[i].Resource) || got.PatientID != rep.PatientID) {
				t.Fatalf("entry %d is not stored as sent", i)
			}
		}
		again, err := in.ImportBundle(ctx, raw, importer)
		if err != nil || !again.NoChange() {
			t.Fatalf("importing again: %+v, %v", again, err)
		}
	})
}
