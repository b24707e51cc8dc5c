package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Feeds: the writes an EHR's integration engine sends in standard FHIR —
// create, update, conditional create and update, batch and transaction
// Bundles. Each write is validated as any resource entering the records
// database is, belongs to one patient the provider holds (or is a shared
// directory resource), and refers only to resources that exist; the JSON
// is stored as received.

// FeedEntry is one write of a feed: a FHIR create (POST) or update (PUT),
// alone or an entry of a batch or transaction Bundle.
type FeedEntry struct {
	Method string // "POST" (create) or "PUT" (update)
	Type   string // the type the request's URL names
	ID     string // PUT: the id the URL names; "" for a conditional update
	// Identifier is the search of a conditional create (If-None-Exist) or
	// update (PUT Type?identifier=…): "identifier=[system|]value".
	Identifier string
	FullURL    string // in a Bundle: the entry's fullUrl
	Raw        []byte
}

// FeedResult is what one entry did.
type FeedResult struct {
	store.Result
	// Matched: a conditional create found the resource (one match) and
	// wrote nothing; Result is the stored resource.
	Matched bool
}

// Feed validates entries and stores them as one FHIR transaction: every
// write and the access-log entry log (its Resources filled in) in one
// commit, or nothing. Writes of patient-compartment types must all belong
// to one patient, named by "Patient/<id>" or by the fullUrl of the
// transaction's own Patient entry: a patient the provider holds, or the
// one that entry creates. Every literal reference must name a resource of
// the transaction or a stored one that is shared or the patient's; a
// "urn:uuid:" reference must name an entry's fullUrl; conditional
// references are refused (nothing in the stored JSON is rewritten).
//
// A POST creates (its body's id, its fullUrl's urn:uuid or a new UUID; an
// id that exists is store.ErrConflict); with an Identifier it matches
// first: one stored resource with that identifier is returned as Matched
// and not written, several are ErrAmbiguous. A PUT creates or updates
// (identical bytes change nothing); a conditional PUT (ID "") updates the
// one match, creates when none matches, and is ErrAmbiguous on several.
// A reference to the fullUrl of a conditional create that matched is
// refused (stored as sent, it would name nothing): refer to the match.
//
// It returns one result per entry and the patient written ("" when all
// were shared). Bad input wraps store.ErrInvalid and names the entry.
func (in *Ingester) Feed(ctx context.Context, entries []FeedEntry, by Actor, log store.LogEntry) ([]FeedResult, string, error) {
	f := &feed{in: in, entries: entries, rs: make([]*fhirval.Resource, len(entries)), ids: make([]string, len(entries)),
		matched: make([]*store.Resource, len(entries)), fullURLs: map[string]int{}, keys: map[string]int{}}
	if err := f.prepare(ctx); err != nil {
		return nil, f.patient, err
	}
	batch := store.Batch{PatientID: f.patient, CreatePatient: f.patientEntry >= 0}
	var resources []string
	wrote := make([]int, 0, len(entries)) // entry of each write
	for i, r := range f.rs {
		if f.matched[i] != nil {
			continue
		}
		w := store.Write{Type: r.Type, ID: f.ids[i], Raw: r.Raw, Shared: r.Shared(), Mode: store.Upsert}
		if entries[i].Method == "POST" {
			w.Mode = store.Create
		}
		batch.Writes = append(batch.Writes, w)
		wrote = append(wrote, i)
		if len(resources) < store.MaxLogResources {
			resources = append(resources, r.Type+"/"+f.ids[i])
		}
	}
	out := make([]FeedResult, len(entries))
	for i, m := range f.matched {
		if m != nil {
			out[i] = FeedResult{Result: store.Result{Meta: m.Meta, Effect: store.EffectUnchanged}, Matched: true}
		}
	}
	if len(batch.Writes) == 0 {
		return out, f.patient, nil // every entry matched: the caller logs it
	}
	log.ActorKind, log.ActorID, log.PatientID, log.Resources = by.Kind, by.ID, f.patient, resources
	batch.Log = []store.LogEntry{log}
	results, err := in.store.Apply(ctx, batch)
	if err != nil {
		return nil, f.patient, fmt.Errorf("feed: %w", err)
	}
	for j, i := range wrote {
		out[i] = FeedResult{Result: results[j]}
	}
	return out, f.patient, nil
}

// feed is one Feed call's work.
type feed struct {
	in           *Ingester
	entries      []FeedEntry
	rs           []*fhirval.Resource
	ids          []string
	matched      []*store.Resource // a conditional create's match
	fullURLs     map[string]int    // fullUrl → entry
	keys         map[string]int    // Type/id → entry
	patient      string
	patientEntry int // the Patient entry, -1 if none
}

// at names entry i in an error (nothing for a lone write).
func (f *feed) at(i int) string {
	if len(f.entries) == 1 {
		return ""
	}
	return fmt.Sprintf("entry %d: ", i)
}

func (f *feed) prepare(ctx context.Context) error {
	f.patientEntry = -1
	if len(f.entries) == 0 {
		return fmt.Errorf("feed: no entries: %w", store.ErrInvalid)
	}
	if len(f.entries) > MaxEntries {
		return fmt.Errorf("feed: %d entries, more than %d: %w", len(f.entries), MaxEntries, store.ErrInvalid)
	}
	// Each resource, its id where the request decides it, and the patient.
	for i, e := range f.entries {
		if e.Method != "POST" && e.Method != "PUT" {
			return fmt.Errorf("%smethod %q: a feed creates (POST) and updates (PUT): %w", f.at(i), e.Method, store.ErrInvalid)
		}
		r, err := f.in.val.Validate(e.Raw, e.Type)
		if err != nil {
			return fmt.Errorf("%s%s: %w", f.at(i), e.Type, invalid(err))
		}
		f.rs[i] = r
		if e.FullURL != "" {
			if _, dup := f.fullURLs[e.FullURL]; dup {
				return fmt.Errorf("%sfullUrl %q is another entry's too: %w", f.at(i), e.FullURL, store.ErrInvalid)
			}
			f.fullURLs[e.FullURL] = i
		}
		switch {
		case e.Method == "PUT" && e.ID != "":
			if r.ID != e.ID {
				return fmt.Errorf("%supdate %s/%s: the body's id is %q: %w", f.at(i), e.Type, e.ID, r.ID, store.ErrInvalid)
			}
			f.ids[i] = e.ID
		case e.Method == "PUT" && e.Identifier == "":
			return fmt.Errorf("%san update names the resource: PUT %s/<id> or %s?identifier=…: %w", f.at(i), e.Type, e.Type, store.ErrInvalid)
		case r.ID != "":
			f.ids[i] = r.ID
		case e.Method == "POST" && strings.HasPrefix(e.FullURL, "urn:uuid:"):
			f.ids[i] = strings.ToLower(strings.TrimPrefix(e.FullURL, "urn:uuid:"))
		}
		if f.ids[i] != "" {
			if err := store.ValidID(f.ids[i]); err != nil {
				return fmt.Errorf("%s%w", f.at(i), err)
			}
		}
		if r.Type == "Patient" {
			if f.patientEntry >= 0 {
				return fmt.Errorf("%sentries %d and %d are both Patients: %w", f.at(i), f.patientEntry, i, store.ErrInvalid)
			}
			f.patientEntry = i
		}
	}
	if err := f.findPatient(ctx); err != nil {
		return err
	}
	// Conditional creates and updates, now that whose records to search is known.
	for i, e := range f.entries {
		if e.Identifier == "" || (e.Method == "PUT" && e.ID != "") {
			continue
		}
		m, err := f.match(ctx, f.rs[i].Type, e.Identifier)
		if err != nil {
			return fmt.Errorf("%s%w", f.at(i), err)
		}
		switch {
		case m == nil && f.ids[i] == "":
			f.ids[i] = NewID()
		case m == nil:
		case e.Method == "POST":
			f.matched[i], f.ids[i] = m, m.ID
		case f.rs[i].ID != "" && f.rs[i].ID != m.ID:
			return fmt.Errorf("%sthe body's id %q is not the id %q the identifier matches: %w", f.at(i), f.rs[i].ID, m.ID, store.ErrInvalid)
		default:
			f.ids[i] = m.ID
		}
	}
	for i := range f.entries {
		if f.ids[i] == "" {
			f.ids[i] = NewID()
		}
		key := f.rs[i].Type + "/" + f.ids[i]
		if j, dup := f.keys[key]; dup {
			return fmt.Errorf("entries %d and %d are both %s: %w", j, i, key, store.ErrInvalid)
		}
		f.keys[key] = i
	}
	// Every resource is the patient's, and refers to what exists.
	aliases := []string{"Patient/" + f.patient}
	if f.patientEntry >= 0 && f.entries[f.patientEntry].FullURL != "" && f.matched[f.patientEntry] == nil {
		aliases = append(aliases, f.entries[f.patientEntry].FullURL)
	}
	for i, r := range f.rs {
		if !r.Shared() {
			if r.Type == "Patient" {
				r.ID = f.ids[i]
			}
			if err := r.CheckPatient(aliases...); err != nil {
				return fmt.Errorf("%s%s/%s: %w", f.at(i), r.Type, f.ids[i], invalid(err))
			}
		}
		if err := f.references(ctx, i); err != nil {
			return fmt.Errorf("%s%s/%s: %w", f.at(i), r.Type, f.ids[i], err)
		}
	}
	return nil
}

// findPatient finds the one patient the entries write: the Patient
// entry's, or the one their compartment references name, which the
// provider must hold.
func (f *feed) findPatient(ctx context.Context) error {
	if f.patientEntry >= 0 {
		i := f.patientEntry
		if f.entries[i].Identifier != "" && (f.entries[i].Method == "POST" || f.entries[i].ID == "") {
			// Conditional: the match is the patient, whatever id the entry had.
			m, err := f.match(ctx, "Patient", f.entries[i].Identifier)
			if err != nil {
				return fmt.Errorf("%s%w", f.at(i), err)
			}
			if m != nil {
				f.ids[i] = m.ID
			}
		}
		if f.ids[i] == "" {
			f.ids[i] = NewID()
		}
		f.patient = f.ids[i]
		return nil
	}
	for i, r := range f.rs {
		for _, ref := range r.PatientRefs {
			id, ok := strings.CutPrefix(ref, "Patient/")
			if !ok {
				continue
			}
			id, _, _ = strings.Cut(id, "/")
			switch {
			case f.patient == "":
				f.patient = id
			case id != f.patient:
				return fmt.Errorf("%s%s refers to Patient/%s, another entry to Patient/%s: a transaction writes one patient's records: %w", f.at(i), r.Type, id, f.patient, store.ErrInvalid)
			}
		}
	}
	if f.patient == "" {
		for i, r := range f.rs {
			if !r.Shared() {
				return fmt.Errorf("%s%s must refer to its patient as Patient/<id>: %w", f.at(i), r.Type, invalid(fhirval.ErrCompartment))
			}
		}
		return nil // a directory write
	}
	if err := store.ValidID(f.patient); err != nil {
		return fmt.Errorf("patient: %w", err)
	}
	if _, err := f.in.store.Patient(ctx, f.patient); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("Patient/%s is not a patient of this provider: %w", f.patient, store.ErrInvalid)
	} else if err != nil {
		return err
	}
	return nil
}

// match finds the stored resource of typ whose identifier the search
// "identifier=[system|]value" names: nil if none, ErrAmbiguous if several.
// Patients are searched among all the provider's patients, shared
// resources in the directory, others in the patient's records.
func (f *feed) match(ctx context.Context, typ, search string) (*store.Resource, error) {
	q, err := url.ParseQuery(search)
	if err != nil || len(q) != 1 || len(q["identifier"]) != 1 {
		return nil, fmt.Errorf("the condition %q: only identifier=[system|]value is supported: %w", search, store.ErrInvalid)
	}
	system, value, hasSystem := strings.Cut(q["identifier"][0], "|")
	if !hasSystem {
		system, value = "", system
	}
	if value == "" {
		return nil, fmt.Errorf("the condition %q has no identifier value: %w", search, store.ErrInvalid)
	}
	var found []store.Resource
	req := store.PageRequest{Count: store.MaxCount}
	for {
		var page store.Page
		switch {
		case typ == "Patient":
			page, err = f.in.store.PatientResources(ctx, req)
		case !fhirval.InPatientCompartment(typ):
			page, err = f.in.store.Search(ctx, "", store.Query{Type: typ, PageRequest: req})
		case f.patient == "":
			return nil, nil
		default:
			page, err = f.in.store.Search(ctx, f.patient, store.Query{Type: typ, PageRequest: req})
		}
		if err != nil {
			return nil, fmt.Errorf("matching %s?%s: %w", typ, search, err)
		}
		for _, r := range page.Resources {
			for _, id := range identifiers(r.Raw) {
				if id.value == value && (!hasSystem || id.system == system) {
					found = append(found, r)
					break
				}
			}
		}
		if page.Next == "" {
			break
		}
		req.Cursor = page.Next
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return &found[0], nil
	}
	return nil, fmt.Errorf("%s?%s: %d match: %w", typ, search, len(found), ErrAmbiguous)
}

// references checks every reference of entry i: to an entry's fullUrl,
// to a resource of the feed, or to a stored one that is shared or the
// patient's. Contained (#…) and absolute (…://…) references are not the
// gateway's to check.
func (f *feed) references(ctx context.Context, i int) error {
	scan, err := scanLine(f.rs[i].Raw)
	if err != nil {
		return fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	for _, ref := range scan.Refs {
		v := ref.Value
		switch {
		case v == "" || strings.HasPrefix(v, "#") || strings.Contains(v, "://"):
		case strings.HasPrefix(v, "urn:"):
			j, ok := f.fullURLs[v]
			switch {
			case !ok:
				return fmt.Errorf("reference %q names no entry's fullUrl: %w", v, store.ErrInvalid)
			case f.matched[j] != nil:
				// References are stored as sent: this one would name nothing stored.
				return fmt.Errorf("reference %q names entry %d, a conditional create that matched %s/%s: refer to that: %w", v, j, f.matched[j].Type, f.matched[j].ID, store.ErrInvalid)
			}
		case isConditional(v):
			return fmt.Errorf("conditional reference %q: a feed refers by Type/id or an entry's fullUrl: %w", v, store.ErrInvalid)
		default:
			typ, id, ok := literalRef(v)
			if !ok {
				return fmt.Errorf("reference %q is not Type/id: %w", v, store.ErrInvalid)
			}
			if _, ok := f.keys[typ+"/"+id]; ok || (typ == "Patient" && id == f.patient) {
				continue // in this request, or the patient findPatient found
			}
			if store.ValidType(typ) != nil {
				return fmt.Errorf("reference %q resolves to nothing (%s is not a type this gateway holds): %w", v, typ, store.ErrInvalid)
			}
			r, err := f.in.store.Get(ctx, typ, id)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return fmt.Errorf("reference %q resolves to nothing, in this request or in the records database: %w", v, store.ErrInvalid)
			case err != nil:
				return err
			case r.PatientID != "" && r.PatientID != f.patient:
				return fmt.Errorf("reference %q names another patient's resource: %w", v, store.ErrInvalid)
			}
		}
	}
	return nil
}

// ParseFeedBundle reads a feed's batch or transaction Bundle (strict JSON,
// at most MaxEntries entries) into its type and entries. Every entry has a
// resource and a request: POST Type (ifNoneExist for a conditional
// create), PUT Type/id, or PUT Type?identifier=… (a conditional update).
// Errors wrap store.ErrInvalid and name the entry.
func ParseFeedBundle(raw []byte) (string, []FeedEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b bundle
	if err := dec.Decode(&b); err != nil {
		return "", nil, fmt.Errorf("bundle: %w: %v", store.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", nil, fmt.Errorf("bundle: data after the bundle: %w", store.ErrInvalid)
	}
	switch {
	case b.ResourceType != "Bundle":
		return "", nil, fmt.Errorf("not a Bundle: %w", store.ErrInvalid)
	case b.Type != "transaction" && b.Type != "batch":
		return "", nil, fmt.Errorf("bundle type %q: a feed sends a transaction or a batch: %w", b.Type, store.ErrInvalid)
	case len(b.Entry) == 0:
		return "", nil, fmt.Errorf("bundle has no entries: %w", store.ErrInvalid)
	case len(b.Entry) > MaxEntries:
		return "", nil, fmt.Errorf("bundle has %d entries, more than %d: %w", len(b.Entry), MaxEntries, store.ErrInvalid)
	}
	out := make([]FeedEntry, len(b.Entry))
	for i, e := range b.Entry {
		if len(e.Resource) == 0 || e.Request == nil {
			return "", nil, fmt.Errorf("entry %d: a resource and a request are required: %w", i, store.ErrInvalid)
		}
		fe, err := FeedRequest(e.Request.Method, e.Request.URL, e.Request.IfNoneExist)
		if err != nil {
			return "", nil, fmt.Errorf("entry %d: %w", i, err)
		}
		fe.FullURL, fe.Raw = e.FullURL, e.Resource
		out[i] = fe
	}
	return b.Type, out, nil
}

// FeedRequest reads one write's request (a relative URL: Type, Type/id or
// Type?identifier=…) into an entry without its resource.
func FeedRequest(method, rawURL, ifNoneExist string) (FeedEntry, error) {
	path, query, hasQuery := strings.Cut(rawURL, "?")
	typ, id, hasID := strings.Cut(path, "/")
	e := FeedEntry{Method: method, Type: typ, ID: id}
	if err := store.ValidType(typ); err != nil {
		return FeedEntry{}, fmt.Errorf("request url %q: %w", rawURL, err)
	}
	switch {
	case method == "POST" && !hasID && !hasQuery:
		e.Identifier = ifNoneExist
	case method == "PUT" && hasID && !hasQuery && ifNoneExist == "":
		if err := store.ValidID(id); err != nil {
			return FeedEntry{}, fmt.Errorf("request url %q: %w", rawURL, err)
		}
	case method == "PUT" && !hasID && hasQuery && ifNoneExist == "":
		if query == "" {
			return FeedEntry{}, fmt.Errorf("request url %q: an empty condition: %w", rawURL, store.ErrInvalid)
		}
		e.Identifier = query
	default:
		return FeedEntry{}, fmt.Errorf("request %s %q: a feed sends POST Type, PUT Type/id or PUT Type?identifier=…: %w", method, rawURL, store.ErrInvalid)
	}
	return e, nil
}
