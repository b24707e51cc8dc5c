// Package ingest owns how FHIR resources enter a provider's records
// database: single resources (the gateway's create and update), whole
// Bundles (the import of a patient's record, e.g. from Synthea), bulk
// NDJSON exports (ndjson.go: a patient at a time, each whole) and an EHR
// feed's writes (feed.go: creates, updates, conditional ones, batch and
// transaction Bundles). Every
// resource is validated by fhirval, attributed to its patient, and stored by
// store exactly as received, together with its access-log entry, in one
// transaction.
//
// # Ids and references
//
// A resource's id is the id in its JSON. A created resource without an id
// gets a random UUID; the JSON is not rewritten, the id lives beside it
// (store keeps id, version and lastUpdated out of band). An update's body
// must carry the id of the URL.
//
// In a Bundle, an entry whose fullUrl is "urn:uuid:U" has id U: the
// resource's own id must be U or absent. References are never rewritten:
// the stored JSON of every resource is byte for byte the bundle's, so a
// re-import is recognised as unchanged and a client can check each resource
// against the records-state anchor. A reference "urn:uuid:U" therefore keeps
// meaning "the resource with id U" — unambiguous, because U is a UUID — and
// a reader resolves it among the resources it fetched ($everything returns
// them all). The patient of a bundle is its one Patient entry; its id becomes
// the provider-internal patient id.
//
// # Shared resources
//
// Organization, Practitioner, PractitionerRole, Location and Medication are
// outside every patient compartment. A bundle with a Patient stores the ones
// it carries only if they are absent (FHIR conditional create): a patient's
// bundle never overwrites the provider's directory. A bundle without a
// Patient (Synthea's hospitalInformation and practitionerInformation files)
// is a directory import and creates or updates them. Importing in either
// order ends with the same directory.
package ingest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Ingester validates and stores resources.
type Ingester struct {
	store Records
	val   *fhirval.Validator
}

// Records is the part of the records database an Ingester writes and
// reads: the records, and of the patient list what a feed checks (that
// the patient it writes is the provider's) and searches (the Patient
// resources, for a conditional create of a Patient).
type Records interface {
	store.Records
	Patient(ctx context.Context, id string) (store.Patient, error)
	PatientResources(ctx context.Context, p store.PageRequest) (store.Page, error)
}

// New returns an Ingester writing to s.
func New(s Records, v *fhirval.Validator) *Ingester {
	return &Ingester{store: s, val: v}
}

// invalid makes a validation error match both store.ErrInvalid (for the
// HTTP layer's one error mapping) and the specific fhirval error.
func invalid(err error) error {
	if errors.Is(err, fhirval.ErrInvalid) && !errors.Is(err, store.ErrInvalid) {
		return fmt.Errorf("%w: %w", store.ErrInvalid, err)
	}
	return err
}

// Create validates raw as a new resource of type typ and stores it as the
// patient's (or as a shared resource, for types outside the patient
// compartment, whatever patientID says). The id is raw's own, or a new UUID;
// an existing id is ErrConflict. log is appended in the same transaction.
func (in *Ingester) Create(ctx context.Context, patientID, typ string, raw []byte, log ...store.LogEntry) (store.Result, error) {
	r, err := in.val.Validate(raw, typ)
	if err != nil {
		return store.Result{}, fmt.Errorf("create %s: %w", typ, invalid(err))
	}
	id := r.ID
	switch {
	case id != "":
	case r.Type == "Patient":
		// The patient's own resource takes the patient's id.
		id, r.ID = patientID, patientID
	default:
		id = NewID()
	}
	return in.put(ctx, patientID, r, id, store.Write{Mode: store.Create}, log)
}

// Update validates raw as the next version of typ/id and stores it;
// ifVersion, if non-zero, must be the current version (If-Match). The
// resource is created if absent (FHIR update-as-create). Identical bytes
// change nothing.
func (in *Ingester) Update(ctx context.Context, patientID, typ, id string, raw []byte, ifVersion int64, log ...store.LogEntry) (store.Result, error) {
	r, err := in.val.Validate(raw, typ)
	if err != nil {
		return store.Result{}, fmt.Errorf("update %s/%s: %w", typ, id, invalid(err))
	}
	if r.ID != id {
		return store.Result{}, fmt.Errorf("update %s/%s: the body's id is %q: %w", typ, id, r.ID, store.ErrInvalid)
	}
	return in.put(ctx, patientID, r, id, store.Write{Mode: store.Upsert, IfVersion: ifVersion}, log)
}

func (in *Ingester) put(ctx context.Context, patientID string, r *fhirval.Resource, id string, w store.Write, log []store.LogEntry) (store.Result, error) {
	w.Type, w.ID, w.Raw, w.Shared = r.Type, id, r.Raw, r.Shared()
	b := store.Batch{Writes: []store.Write{w}, Log: log}
	if !r.Shared() {
		if patientID == "" {
			return store.Result{}, fmt.Errorf("%s/%s: a %s belongs to a patient: %w", r.Type, id, r.Type, store.ErrInvalid)
		}
		if err := r.CheckPatient("Patient/" + patientID); err != nil {
			return store.Result{}, fmt.Errorf("%s/%s: %w", r.Type, id, invalid(err))
		}
		b.PatientID = patientID
		// A patient's own Patient resource may be what creates the patient.
		b.CreatePatient = r.Type == "Patient"
	}
	res, err := in.store.Apply(ctx, b)
	if err != nil {
		return store.Result{}, err
	}
	return res[0], nil
}

// NewID returns a random (version 4) UUID, a valid FHIR id.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
