package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// MaxEntries is the largest bundle ImportBundle accepts.
const MaxEntries = 10000

// Report says what an import did.
type Report struct {
	PatientID string // "" for a directory bundle
	Entries   int
	Created   int
	Updated   int
	Unchanged int
	Results   []store.Result // one per entry, in bundle order
}

// NoChange reports whether the import changed nothing (a re-import).
func (r Report) NoChange() bool { return r.Created == 0 && r.Updated == 0 }

// Actor is who imports, for the access log.
type Actor struct {
	Kind store.ActorKind
	ID   string
}

// bundle is the part of a FHIR Bundle an import reads. Decoding rejects
// anything else, so nothing in a bundle is silently ignored.
type bundle struct {
	ResourceType string            `json:"resourceType"`
	ID           string            `json:"id"`
	Meta         json.RawMessage   `json:"meta"`
	Identifier   json.RawMessage   `json:"identifier"`
	Type         string            `json:"type"`
	Timestamp    string            `json:"timestamp"`
	Link         []json.RawMessage `json:"link"`
	Entry        []bundleEntry     `json:"entry"`
}

type bundleEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  *struct {
		Method      string `json:"method"`
		URL         string `json:"url"`
		IfNoneExist string `json:"ifNoneExist"`
	} `json:"request"`
}

// ImportBundle validates a transaction, batch or collection Bundle and stores
// every entry in one transaction (see the package doc for ids, references and
// shared resources). Importing the same bundle again changes nothing
// (Report.NoChange); a bundle whose resources changed stores new versions.
// Any invalid entry rejects the whole bundle with store.ErrInvalid; a
// resource id that belongs to another patient is store.ErrConflict.
func (in *Ingester) ImportBundle(ctx context.Context, raw []byte, by Actor) (Report, error) {
	batch, err := in.prepare(raw, by)
	if err != nil {
		return Report{}, fmt.Errorf("import: %w", err)
	}
	results, err := in.store.Apply(ctx, batch)
	if err != nil {
		return Report{}, fmt.Errorf("import: %w", err)
	}
	rep := Report{PatientID: batch.PatientID, Entries: len(results), Results: results}
	for _, r := range results {
		switch r.Effect {
		case store.EffectCreated:
			rep.Created++
		case store.EffectUpdated:
			rep.Updated++
		default:
			rep.Unchanged++
		}
	}
	return rep, nil
}

// prepare parses and validates a bundle into the batch that stores it.
func (in *Ingester) prepare(raw []byte, by Actor) (store.Batch, error) {
	b, err := parseBundle(raw)
	if err != nil {
		return store.Batch{}, err
	}
	rs, err := in.validateAll(b.Entry)
	if err != nil {
		return store.Batch{}, err
	}
	// Ids, and the bundle's patient.
	ids := make([]string, len(rs))
	seen := map[string]int{}
	patient, aliases := -1, []string(nil)
	for i, r := range rs {
		if ids[i], err = entryID(b.Entry[i], r); err != nil {
			return store.Batch{}, fmt.Errorf("entry %d: %w", i, err)
		}
		key := r.Type + "/" + ids[i]
		if j, dup := seen[key]; dup {
			return store.Batch{}, fmt.Errorf("entries %d and %d are both %s: %w", j, i, key, store.ErrInvalid)
		}
		seen[key] = i
		if r.Type == "Patient" {
			if patient >= 0 {
				return store.Batch{}, fmt.Errorf("entries %d and %d are both Patients: %w", patient, i, store.ErrInvalid)
			}
			patient = i
			aliases = []string{"Patient/" + ids[i]}
			if b.Entry[i].FullURL != "" {
				aliases = append(aliases, b.Entry[i].FullURL)
			}
		}
	}
	batch := store.Batch{}
	if patient >= 0 {
		batch.PatientID, batch.CreatePatient = ids[patient], true
	}
	resources := make([]string, 0, len(rs))
	for i, r := range rs {
		w := store.Write{Type: r.Type, ID: ids[i], Raw: r.Raw, Shared: r.Shared(), Mode: store.Upsert}
		switch {
		case w.Shared && patient >= 0:
			w.Mode = store.CreateIfAbsent
		case !w.Shared && patient < 0:
			return store.Batch{}, fmt.Errorf("entry %d: a %s in a bundle without a Patient: %w", i, r.Type, store.ErrInvalid)
		case !w.Shared:
			if r.Type == "Patient" {
				r.ID = ids[i] // may have come from the fullUrl
			}
			if err := r.CheckPatient(aliases...); err != nil {
				return store.Batch{}, fmt.Errorf("entry %d (%s/%s): %w", i, r.Type, ids[i], invalid(err))
			}
		}
		batch.Writes = append(batch.Writes, w)
		if len(resources) < store.MaxLogResources {
			resources = append(resources, r.Type+"/"+ids[i])
		}
	}
	sum := sha256.Sum256(raw)
	batch.Log = []store.LogEntry{{ActorKind: by.Kind, ActorID: by.ID, Action: "import", PatientID: batch.PatientID,
		Resources: resources, Outcome: store.Allowed, Detail: "bundle sha256 " + hex.EncodeToString(sum[:])}}
	return batch, nil
}

func parseBundle(raw []byte) (*bundle, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("bundle: %w: %v", store.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("bundle: data after the bundle: %w", store.ErrInvalid)
	}
	switch {
	case b.ResourceType != "Bundle":
		return nil, fmt.Errorf("not a Bundle: %w", store.ErrInvalid)
	case b.Type != "transaction" && b.Type != "batch" && b.Type != "collection":
		return nil, fmt.Errorf("bundle type %q: want transaction, batch or collection: %w", b.Type, store.ErrInvalid)
	case len(b.Entry) == 0:
		return nil, fmt.Errorf("bundle has no entries: %w", store.ErrInvalid)
	case len(b.Entry) > MaxEntries:
		return nil, fmt.Errorf("bundle has %d entries, more than %d: %w", len(b.Entry), MaxEntries, store.ErrInvalid)
	}
	for i, e := range b.Entry {
		if len(e.Resource) == 0 {
			return nil, fmt.Errorf("entry %d has no resource: %w", i, store.ErrInvalid)
		}
		if e.Request != nil && e.Request.Method != "POST" && e.Request.Method != "PUT" {
			return nil, fmt.Errorf("entry %d: method %q: only POST and PUT are imported: %w", i, e.Request.Method, store.ErrInvalid)
		}
	}
	return &b, nil
}

// BundleResources reads a transaction, batch or collection Bundle as an
// import does — strict JSON, only POST and PUT requests, at most MaxEntries
// entries — and returns its entries' resources, unvalidated. Errors wrap
// store.ErrInvalid.
func BundleResources(raw []byte) ([]json.RawMessage, error) {
	b, err := parseBundle(raw)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, len(b.Entry))
	for i, e := range b.Entry {
		out[i] = e.Resource
	}
	return out, nil
}

// validateAll validates every entry's resource, on all cores (validation
// is most of an import's time).
func (in *Ingester) validateAll(entries []bundleEntry) ([]*fhirval.Resource, error) {
	rs := make([]*fhirval.Resource, len(entries))
	errs := make([]error, len(entries))
	var (
		wg   sync.WaitGroup
		next = make(chan int)
	)
	for range min(runtime.GOMAXPROCS(0), len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				want := ""
				if r := entries[i].Request; r != nil {
					want, _, _ = strings.Cut(r.URL, "/")
					want, _, _ = strings.Cut(want, "?")
				}
				rs[i], errs[i] = in.val.Validate(entries[i].Resource, want)
			}
		}()
	}
	for i := range entries {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, invalid(err))
		}
	}
	return rs, nil
}

// entryID returns the id an entry's resource is stored under.
func entryID(e bundleEntry, r *fhirval.Resource) (string, error) {
	var fromURL string
	switch u := e.FullURL; {
	case strings.HasPrefix(u, "urn:uuid:"):
		fromURL = strings.ToLower(strings.TrimPrefix(u, "urn:uuid:"))
	case u != "":
		// An absolute URL must end in Type/id (with no version).
		parts := strings.Split(strings.TrimSuffix(u, "/"), "/")
		if len(parts) < 2 || parts[len(parts)-2] != r.Type {
			return "", fmt.Errorf("fullUrl %q is not a %s URL: %w", u, r.Type, store.ErrInvalid)
		}
		fromURL = parts[len(parts)-1]
	}
	if e.Request != nil && e.Request.Method == "PUT" {
		typ, id, _ := strings.Cut(e.Request.URL, "/")
		if typ != r.Type || id == "" || (r.ID != "" && id != r.ID) {
			return "", fmt.Errorf("PUT %q does not name this %s: %w", e.Request.URL, r.Type, store.ErrInvalid)
		}
		if fromURL == "" {
			fromURL = id
		}
	}
	switch {
	case r.ID != "" && fromURL != "" && r.ID != fromURL:
		return "", fmt.Errorf("%s id %q differs from its fullUrl: %w", r.Type, r.ID, store.ErrInvalid)
	case r.ID != "":
		return r.ID, nil
	case fromURL != "":
		if err := store.ValidID(fromURL); err != nil {
			return "", err
		}
		return fromURL, nil
	}
	return "", errors.Join(fmt.Errorf("%s has neither an id nor a fullUrl", r.Type), store.ErrInvalid)
}
