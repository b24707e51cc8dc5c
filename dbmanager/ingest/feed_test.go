package ingest

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
)

// TestFeed: a feed's patients by identifier — a conditional create of a
// Patient matches among all the provider's patients — and a transaction
// naming its new patient by fullUrl; every step in order, each refusal
// the error the gateway maps to its status.
func TestFeed(t *testing.T) {
	ctx := context.Background()
	db, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "records.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	in := New(db, validator(t))
	by := Actor{Kind: store.ActorStaff, ID: "backend:engine"}
	const (
		mrn  = `"identifier":[{"system":"urn:mrn","value":"42"}]`
		pat  = `{"resourceType":"Patient",` + mrn + `,"name":[{"family":"Feed"}]}`
		uuid = "urn:uuid:6c1f4a2e-8d3b-4f5a-9e7c-0b1d2e3f4a5b"
	)
	obsOf := func(id, subject string) []byte {
		return []byte(`{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"x"},"subject":{"reference":"` + subject + `"}}`)
	}
	for _, step := range []struct {
		name    string
		entries []FeedEntry
		err     error
		effects []store.Effect
		matched []bool
	}{
		{"a new patient and its observation by fullUrl", []FeedEntry{
			{Method: "POST", Type: "Patient", FullURL: uuid, Identifier: "identifier=urn:mrn|42", Raw: []byte(pat)},
			{Method: "PUT", Type: "Observation", ID: "o1", Raw: obsOf("o1", uuid)},
		}, nil, []store.Effect{store.EffectCreated, store.EffectCreated}, []bool{false, false}},
		{"the patient again, by its MRN: matched; an observation by Patient/id", []FeedEntry{
			{Method: "POST", Type: "Patient", FullURL: "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100", Identifier: "identifier=urn:mrn|42", Raw: []byte(pat)},
			{Method: "PUT", Type: "Observation", ID: "o2", Raw: obsOf("o2", "Patient/6c1f4a2e-8d3b-4f5a-9e7c-0b1d2e3f4a5b")},
		}, nil, []store.Effect{store.EffectUnchanged, store.EffectCreated}, []bool{true, false}},
		{"an update by identifier of no match, and a bad one: nothing", []FeedEntry{
			{Method: "PUT", Type: "Observation", Identifier: "identifier=urn:lab|9", Raw: obsOf("o3", "Patient/6c1f4a2e-8d3b-4f5a-9e7c-0b1d2e3f4a5b")},
			{Method: "PUT", Type: "Observation", ID: "o4", Raw: obsOf("o4", "Patient/somebody-else")},
		}, store.ErrInvalid, nil, nil},
		{"a reference to the fullUrl of a conditional create that matched", []FeedEntry{
			{Method: "POST", Type: "Patient", FullURL: "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100", Identifier: "identifier=urn:mrn|42", Raw: []byte(pat)},
			{Method: "PUT", Type: "Observation", ID: "o5", Raw: obsOf("o5", "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100")},
		}, store.ErrInvalid, nil, nil},
		{"a directory write", []FeedEntry{
			{Method: "PUT", Type: "Organization", ID: "org1", Raw: []byte(`{"resourceType":"Organization","id":"org1","name":"Clinic"}`)},
		}, nil, []store.Effect{store.EffectCreated}, []bool{false}},
		{"a second patient with the same MRN makes the condition ambiguous", []FeedEntry{
			{Method: "PUT", Type: "Patient", ID: "p2", Raw: []byte(`{"resourceType":"Patient","id":"p2",` + mrn + `}`)},
		}, nil, []store.Effect{store.EffectCreated}, []bool{false}},
		{"ambiguous", []FeedEntry{
			{Method: "POST", Type: "Patient", Identifier: "identifier=urn:mrn|42", Raw: []byte(pat)},
		}, ErrAmbiguous, nil, nil},
	} {
		t.Run(step.name, func(t *testing.T) {
			res, _, err := in.Feed(ctx, step.entries, by, store.LogEntry{Action: "feed", Outcome: store.Allowed})
			if !errors.Is(err, step.err) || (err == nil) != (step.err == nil) {
				t.Fatalf("error %v, want %v", err, step.err)
			}
			for i, r := range res {
				if r.Effect != step.effects[i] || r.Matched != step.matched[i] {
					t.Fatalf("entry %d: %+v", i, r)
				}
			}
		})
	}
	if _, err := db.Get(ctx, "Observation", "o3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("o3 of the refused transaction: %v", err)
	}
}
