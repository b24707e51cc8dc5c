package ingest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var (
	valOnce sync.Once
	val     *fhirval.Validator
)

func validator(tb testing.TB) *fhirval.Validator {
	valOnce.Do(func() {
		var err error
		if val, err = fhirval.New(); err != nil {
			tb.Fatal(err)
		}
	})
	return val
}

var importer = Actor{Kind: store.ActorSystem, ID: "test-import"}

func importFile(t testing.TB, in *Ingester, path string) Report {
	t.Helper()
	rep, err := in.ImportBundle(context.Background(), syntheatest.Read(t, path), importer)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(path), err)
	}
	return rep
}

// sharedResources lists every shared resource of a store as type/id → sha256.
func sharedResources(t *testing.T, s store.Store) map[string][32]byte {
	out := map[string][32]byte{}
	for _, typ := range []string{"Organization", "Practitioner", "PractitionerRole", "Location", "Medication"} {
		cursor := ""
		for {
			page, err := s.Search(context.Background(), "", store.Query{Type: typ, PageRequest: store.PageRequest{Count: store.MaxCount, Cursor: cursor}})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Resources {
				out[r.Type+"/"+r.ID] = r.SHA256
			}
			if cursor = page.Next; cursor == "" {
				break
			}
		}
	}
	return out
}

// TestImportSynthea imports every Synthea bundle, checks each resource comes
// back byte for byte, re-imports everything as a no-op, and pins each
// patient's records-state hash.
func TestImportSynthea(t *testing.T) {
	patients, directory := syntheatest.Bundles(t)
	ctx := context.Background()
	for _, be := range sqltest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			s := be.Open(t)
			in := New(s, validator(t))
			states := map[string]string{}
			for _, path := range patients {
				rep := importFile(t, in, path)
				b, err := parseBundle(syntheatest.Read(t, path))
				if err != nil {
					t.Fatal(err)
				}
				if rep.PatientID == "" || rep.Entries != len(b.Entry) || rep.Updated != 0 || rep.Created+rep.Unchanged != rep.Entries {
					t.Fatalf("%s: %+v", filepath.Base(path), rep)
				}
				compartment := 0
				for i, e := range b.Entry {
					res := rep.Results[i]
					got, err := s.Get(ctx, res.Type, res.ID)
					if err != nil {
						t.Fatal(err)
					}
					shared := !fhirval.InPatientCompartment(res.Type)
					if !shared {
						compartment++
						if string(got.Raw) != string(e.Resource) || got.PatientID != rep.PatientID {
							t.Fatalf("%s/%s is not stored as imported", res.Type, res.ID)
						}
					}
					if "urn:uuid:"+res.ID != e.FullURL {
						t.Fatalf("entry %d stored as %s/%s, fullUrl %s", i, res.Type, res.ID, e.FullURL)
					}
				}
				all, err := s.Everything(ctx, rep.PatientID, store.EverythingQuery{PageRequest: store.PageRequest{Count: store.MaxCount}})
				if err != nil || len(all.Resources) != compartment {
					t.Fatalf("everything: %d resources, want %d (%v)", len(all.Resources), compartment, err)
				}
				st, err := s.State(ctx, rep.PatientID)
				if err != nil || st.Count != compartment {
					t.Fatalf("state %+v %v", st, err)
				}
				states[rep.PatientID] = hex.EncodeToString(st.Hash[:])
			}
			for _, path := range directory {
				rep := importFile(t, in, path)
				if rep.PatientID != "" || rep.Created+rep.Updated+rep.Unchanged != rep.Entries {
					t.Fatalf("%s: %+v", filepath.Base(path), rep)
				}
			}
			afterFirst := sharedResources(t, s)
			head, _ := s.LogHead(ctx)

			// Everything again: nothing changes but the log.
			for _, path := range append(append([]string(nil), patients...), directory...) {
				if rep := importFile(t, in, path); !rep.NoChange() {
					t.Fatalf("re-import of %s changed %d, %d", filepath.Base(path), rep.Created, rep.Updated)
				}
			}
			for id, want := range states {
				st, _ := s.State(ctx, id)
				if hex.EncodeToString(st.Hash[:]) != want {
					t.Fatalf("re-import moved the state of %s", id)
				}
				if ch, _ := s.Changes(ctx, id, st.Seq, 0); len(ch) != 0 {
					t.Fatalf("re-import added changes to %s", id)
				}
			}
			if h, _ := s.LogHead(ctx); h.Next != head.Next+uint64(len(patients)+len(directory)) {
				t.Fatalf("log head %d after %d", h.Next, head.Next)
			}
			if _, err := store.VerifyLog(ctx, s); err != nil {
				t.Fatal(err)
			}

			// The directory ends the same whichever order the bundles come in.
			s2 := be.Open(t)
			in2 := New(s2, validator(t))
			for _, path := range append(append([]string(nil), directory...), patients...) {
				importFile(t, in2, path)
			}
			afterSecond := sharedResources(t, s2)
			if len(afterFirst) != len(afterSecond) {
				t.Fatalf("%d shared resources, then %d", len(afterFirst), len(afterSecond))
			}
			for k, v := range afterFirst {
				if afterSecond[k] != v {
					t.Fatalf("%s depends on import order", k)
				}
			}
			golden(t, "synthea-records-state.json", states)
		})
	}
}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	b, _ := json.MarshalIndent(v, "", "  ")
	b = append(b, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if string(want) != string(b) {
		t.Fatalf("%s differs:\n%s", path, b)
	}
}

// mutate decodes a bundle as generic JSON, lets f change it and re-encodes it.
func mutate(t *testing.T, raw []byte, f func(b map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	f(b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func entryOf(b map[string]any, i int) map[string]any {
	return b["entry"].([]any)[i].(map[string]any)
}

func resourceOf(b map[string]any, i int) map[string]any {
	return entryOf(b, i)["resource"].(map[string]any)
}

// firstOf returns the index of the first entry of a type.
func firstOf(b map[string]any, typ string) int {
	for i := range b["entry"].([]any) {
		if resourceOf(b, i)["resourceType"] == typ {
			return i
		}
	}
	panic(typ)
}

// TestImportRejects: a bad bundle is refused whole, with ErrInvalid, and
// leaves no trace.
func TestImportRejects(t *testing.T) {
	patients, directory := syntheatest.Bundles(t)
	raw := syntheatest.Read(t, patients[0])
	cases := []struct {
		name string
		raw  []byte
		err  error
	}{
		{"not JSON", []byte(`{"resourceType":"Bundle"`), store.ErrInvalid},
		{"trailing data", append(append([]byte(nil), raw...), "{}"...), store.ErrInvalid},
		{"not a bundle", []byte(`{"resourceType":"Patient","id":"x"}`), store.ErrInvalid},
		{"search set", mutate(t, raw, func(b map[string]any) { b["type"] = "searchset" }), store.ErrInvalid},
		{"unknown bundle field", mutate(t, raw, func(b map[string]any) { b["colour"] = "red" }), store.ErrInvalid},
		{"unknown entry field", mutate(t, raw, func(b map[string]any) { entryOf(b, 1)["colour"] = "red" }), store.ErrInvalid},
		{"no entries", mutate(t, raw, func(b map[string]any) { b["entry"] = []any{} }), store.ErrInvalid},
		{"delete", mutate(t, raw, func(b map[string]any) {
			entryOf(b, 1)["request"] = map[string]any{"method": "DELETE", "url": "Organization/x"}
		}), store.ErrInvalid},
		{"observation without status", mutate(t, raw, func(b map[string]any) { delete(resourceOf(b, firstOf(b, "Observation")), "status") }), fhirval.ErrSchema},
		{"resource type differs from the request", mutate(t, raw, func(b map[string]any) {
			entryOf(b, firstOf(b, "Observation"))["request"] = map[string]any{"method": "POST", "url": "Condition"}
		}), fhirval.ErrWrongType},
		{"observation of another patient", mutate(t, raw, func(b map[string]any) {
			resourceOf(b, firstOf(b, "Observation"))["subject"] = map[string]any{"reference": "Patient/someone-else"}
		}), fhirval.ErrCompartment},
		{"observation of nobody in the bundle", mutate(t, raw, func(b map[string]any) {
			resourceOf(b, firstOf(b, "Observation"))["subject"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
		}), fhirval.ErrCompartment},
		{"id differs from the fullUrl", mutate(t, raw, func(b map[string]any) { resourceOf(b, firstOf(b, "Observation"))["id"] = "other" }), store.ErrInvalid},
		{"duplicate entry", mutate(t, raw, func(b map[string]any) {
			i := firstOf(b, "Observation")
			b["entry"] = append(b["entry"].([]any), entryOf(b, i))
		}), store.ErrInvalid},
		{"two patients", mutate(t, raw, func(b map[string]any) {
			var other map[string]any
			json.Unmarshal(syntheatest.Read(t, patients[1]), &other)
			b["entry"] = append(b["entry"].([]any), entryOf(other, firstOf(other, "Patient")))
		}), store.ErrInvalid},
		{"patient resources in a directory bundle", mutate(t, syntheatest.Read(t, directory[0]), func(b map[string]any) {
			b["entry"] = append(b["entry"].([]any), entryOf(mustJSON(t, raw), firstOf(mustJSON(t, raw), "Observation")))
		}), store.ErrInvalid},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := sqltest.Backends(t)[0].Open(t)
			_, err := New(s, validator(t)).ImportBundle(ctx, c.raw, importer)
			if !errors.Is(err, c.err) || !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("got %v, want %v", err, c.err)
			}
			if h, _ := s.LogHead(ctx); h.Next != 0 {
				t.Fatal("a rejected import was logged")
			}
			if shared := sharedResources(t, s); len(shared) != 0 {
				t.Fatal("a rejected import stored resources")
			}
		})
	}
}

func mustJSON(t *testing.T, raw []byte) map[string]any {
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestImportConflict: a bundle that claims another patient's resource id is
// refused whole with ErrConflict.
func TestImportConflict(t *testing.T) {
	patients, _ := syntheatest.Bundles(t)
	ctx := context.Background()
	s := sqltest.Backends(t)[0].Open(t)
	in := New(s, validator(t))
	first := importFile(t, in, patients[0])
	a := mustJSON(t, syntheatest.Read(t, patients[0]))
	stolen := resourceOf(a, firstOf(a, "Observation"))["id"].(string)
	raw := mutate(t, syntheatest.Read(t, patients[1]), func(b map[string]any) {
		i := firstOf(b, "Observation")
		resourceOf(b, i)["id"] = stolen
		entryOf(b, i)["fullUrl"] = "urn:uuid:" + stolen
	})
	_, err := in.ImportBundle(ctx, raw, importer)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("got %v", err)
	}
	b := mustJSON(t, raw)
	if _, err := s.Patient(ctx, resourceOf(b, firstOf(b, "Patient"))["id"].(string)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused bundle's patient exists: %v", err)
	}
	if r, err := s.Get(ctx, "Observation", stolen); err != nil || r.PatientID != first.PatientID || r.Version != 1 {
		t.Fatalf("the stolen resource changed: %+v %v", r.Meta, err)
	}
}

// TestImportNewVersion: a changed resource in a re-imported bundle becomes
// version 2 and moves the patient's state.
func TestImportNewVersion(t *testing.T) {
	patients, _ := syntheatest.Bundles(t)
	ctx := context.Background()
	s := sqltest.Backends(t)[0].Open(t)
	in := New(s, validator(t))
	rep := importFile(t, in, patients[0])
	before, _ := s.State(ctx, rep.PatientID)
	raw := mutate(t, syntheatest.Read(t, patients[0]), func(b map[string]any) {
		resourceOf(b, firstOf(b, "Observation"))["status"] = "amended"
	})
	rep2, err := in.ImportBundle(ctx, raw, importer)
	if err != nil {
		t.Fatal(err)
	}
	// mutate re-encodes every resource compactly, so all of them changed bytes.
	if rep2.Updated == 0 || rep2.Created != 0 {
		t.Fatalf("%+v", rep2)
	}
	after, _ := s.State(ctx, rep.PatientID)
	if after.Hash == before.Hash || after.Seq <= before.Seq {
		t.Fatal("state did not move")
	}
	ch, _ := s.Changes(ctx, rep.PatientID, before.Seq, store.MaxCount)
	if len(ch) != rep2.Updated {
		t.Fatalf("%d changes for %d updates", len(ch), rep2.Updated)
	}
}

func TestCreateUpdate(t *testing.T) {
	ctx := context.Background()
	s := sqltest.Backends(t)[0].Open(t)
	in := New(s, validator(t))
	obs := func(id, status, patient string) []byte {
		idPart := ""
		if id != "" {
			idPart = `"id":"` + id + `",`
		}
		return []byte(`{"resourceType":"Observation",` + idPart + `"status":"` + status + `","code":{"text":"t"},"subject":{"reference":"Patient/` + patient + `"}}`)
	}
	log := store.LogEntry{ActorKind: store.ActorStaff, ActorID: "dr-a", Action: "create", PatientID: "p1", Outcome: store.Allowed}

	// The patient's own Patient resource creates the patient.
	if _, err := in.Create(ctx, "p1", "Observation", obs("o1", "final", "p1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("observation before the patient: %v", err)
	}
	pr, err := in.Create(ctx, "p1", "Patient", []byte(`{"resourceType":"Patient","active":true}`), log)
	if err != nil || pr.ID != "p1" || pr.Effect != store.EffectCreated {
		t.Fatalf("patient: %+v %v", pr, err)
	}
	r, err := in.Create(ctx, "p1", "Observation", obs("o1", "final", "p1"), log)
	if err != nil || r.ID != "o1" || r.Version != 1 {
		t.Fatalf("create: %+v %v", r, err)
	}
	r, err = in.Create(ctx, "p1", "Observation", obs("", "final", "p1"))
	if err != nil || len(r.ID) != 36 || store.ValidID(r.ID) != nil {
		t.Fatalf("server-assigned id: %+v %v", r, err)
	}
	org, err := in.Create(ctx, "p1", "Organization", []byte(`{"resourceType":"Organization","id":"org","name":"X"}`))
	if err != nil || org.PatientID != "" {
		t.Fatalf("shared: %+v %v", org, err)
	}
	for _, c := range []struct {
		name string
		err  error
		fn   func() error
	}{
		{"create an existing id", store.ErrConflict, func() error { _, err := in.Create(ctx, "p1", "Observation", obs("o1", "final", "p1")); return err }},
		{"create for another patient", fhirval.ErrCompartment, func() error {
			_, err := in.Create(ctx, "p1", "Observation", obs("o9", "final", "p2"))
			return err
		}},
		{"wrong type", fhirval.ErrWrongType, func() error { _, err := in.Create(ctx, "p1", "Condition", obs("o9", "final", "p1")); return err }},
		{"patient resource without a patient", store.ErrInvalid, func() error { _, err := in.Create(ctx, "", "Observation", obs("o9", "final", "p1")); return err }},
		{"invalid", fhirval.ErrSchema, func() error { _, err := in.Create(ctx, "p1", "Observation", obs("o9", "done", "p1")); return err }},
		{"update with another id", store.ErrInvalid, func() error {
			_, err := in.Update(ctx, "p1", "Observation", "o2", obs("o1", "amended", "p1"), 0)
			return err
		}},
		{"update with a stale version", store.ErrConflict, func() error {
			_, err := in.Update(ctx, "p1", "Observation", "o1", obs("o1", "amended", "p1"), 7)
			return err
		}},
	} {
		if err := c.fn(); !errors.Is(err, c.err) || !errors.Is(err, store.ErrInvalid) && errors.Is(c.err, fhirval.ErrInvalid) {
			t.Fatalf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
	u, err := in.Update(ctx, "p1", "Observation", "o1", obs("o1", "amended", "p1"), 1)
	if err != nil || u.Version != 2 || u.Effect != store.EffectUpdated {
		t.Fatalf("update: %+v %v", u, err)
	}
	u, err = in.Update(ctx, "p1", "Observation", "o1", obs("o1", "amended", "p1"), 0)
	if err != nil || u.Version != 2 || u.Effect != store.EffectUnchanged {
		t.Fatalf("same again: %+v %v", u, err)
	}
	if h, _ := s.LogHead(ctx); h.Next != 2 {
		t.Fatalf("%d log entries, want 2", h.Next)
	}
	if NewID() == NewID() || !strings.HasPrefix(strings.SplitN(NewID(), "-", 3)[2], "4") {
		t.Fatal("NewID")
	}
}
