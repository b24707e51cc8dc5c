package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/zkhash"
)

// Store is the whole records database of one provider.
type Store interface {
	Patients
	Records
	AccessLog
	Anchors
	Nonces
	ClaimCodes
	Close() error
}

// Patients is the provider's patient list and the tag ↔ patient map.
type Patients interface {
	// CreatePatient adds a patient; ErrConflict if the id exists.
	CreatePatient(ctx context.Context, id string) (Patient, error)
	// Patient returns one patient; ErrNotFound if absent.
	Patient(ctx context.Context, id string) (Patient, error)
	// MapTag binds the patient's per-provider tag, once and for ever. Mapping
	// the same tag again is a no-op; a different tag for the patient, or the
	// tag of another patient, is ErrConflict.
	MapTag(ctx context.Context, patientID string, tag Tag) error
	// PatientByTag returns the patient a tag is mapped to; ErrNotFound if none.
	PatientByTag(ctx context.Context, tag Tag) (Patient, error)
}

// Records holds FHIR resources as received, with their versions.
type Records interface {
	// Apply performs every write and log entry of the batch in one
	// transaction: all of it is stored, or none of it.
	Apply(ctx context.Context, b Batch) ([]Result, error)
	// Get returns the current version of a resource.
	Get(ctx context.Context, typ, id string) (Resource, error)
	// GetVersion returns one version of a resource (FHIR vread).
	GetVersion(ctx context.Context, typ, id string, version int64) (Resource, error)
	// Search returns a page of the current resources of one type belonging to
	// the patient, ordered by id. patientID "" searches shared resources.
	Search(ctx context.Context, patientID, typ string, p PageRequest) (Page, error)
	// Everything returns a page of all the patient's current resources,
	// ordered by type, then id (FHIR Patient/$everything, without the shared
	// resources they refer to).
	Everything(ctx context.Context, patientID string, p PageRequest) (Page, error)
	// Changes returns up to limit changes of the patient's records with a
	// sequence number greater than since, in order.
	Changes(ctx context.Context, patientID string, since uint64, limit int) ([]Change, error)
	// State returns the patient's records-state hash and anchoring status.
	State(ctx context.Context, patientID string) (State, error)
}

// AccessLog is the append-only, hash-chained log of access attempts.
type AccessLog interface {
	// AppendLog appends entries in one transaction and returns them with
	// Seq (0 for the first entry ever), Time (if it was zero), Prev and Hash
	// filled in.
	AppendLog(ctx context.Context, entries ...LogEntry) ([]LogEntry, error)
	// LogRange returns up to limit entries with seq ≥ from, in order.
	LogRange(ctx context.Context, from uint64, limit int) ([]LogEntry, error)
	// PatientLog returns up to limit entries about one patient with seq ≥ from.
	PatientLog(ctx context.Context, patientID string, from uint64, limit int) ([]LogEntry, error)
	// LogHead returns the number of entries and the last entry's hash.
	LogHead(ctx context.Context) (LogHead, error)
}

// Anchors records what was committed on chain.
type Anchors interface {
	// Dirty returns the records state of every tagged patient whose records
	// changed since the state its last anchor covered (or that was never
	// anchored), ordered by tag.
	Dirty(ctx context.Context) ([]PatientState, error)
	// AddAnchor stores the next batch and the states it covers, and marks
	// those patients clean up to the covered sequence numbers. Like the
	// Anchors contract, it numbers batches 0, 1, … and requires the log range
	// to start where the previous batch's ended (0 at first) and to lie within
	// the log (ErrConflict otherwise); a batch without log entries must have a
	// zero log root and a non-zero state root (ErrInvalid otherwise).
	AddAnchor(ctx context.Context, a Anchor) (Anchor, error)
	// Anchor returns a batch with its states; ErrNotFound if absent.
	Anchor(ctx context.Context, batch uint64) (Anchor, error)
	// LatestAnchor returns the newest batch (without states); ErrNotFound if none.
	LatestAnchor(ctx context.Context) (Anchor, error)
	// SetAnchorTx records the chain transaction that published a batch.
	SetAnchorTx(ctx context.Context, batch uint64, tx string) error
}

// Nonces remembers the nonces of the signed requests the gateway accepted,
// each until its request expires, so a request cannot be replayed, not even
// after the gateway restarts.
type Nonces interface {
	// UseNonce records nonce as used until expires. If the nonce is recorded
	// already with this expiry — whether or not it has expired since, until
	// PruneNonces forgets it — it returns ErrConflict and changes nothing. Of
	// concurrent calls with one nonce and expiry, from any number of
	// processes, exactly one succeeds. (A request's expiry is signed with
	// its nonce, so a replay always carries both; keying by the pair lets a
	// store keep nonces in expiry order, where new ones are appended.)
	UseNonce(ctx context.Context, nonce [32]byte, expires time.Time) error
	// UseNonceWithLog records nonce as used until expires and appends
	// entries (as AppendLog) in one transaction, so a signed request costs
	// one durable commit, not two. If the nonce is recorded already it
	// returns ErrConflict and writes nothing; of concurrent calls with one
	// nonce exactly one succeeds.
	UseNonceWithLog(ctx context.Context, nonce [32]byte, expires time.Time, entries ...LogEntry) ([]LogEntry, error)
	// PruneNonces forgets the nonces that expired at or before before and
	// returns how many. The caller passes the clock it checks expiries
	// with: a request that expired by then is refused before its nonce is
	// looked up.
	PruneNonces(ctx context.Context, before time.Time) (int64, error)
}

// ClaimCodes holds the one-time codes staff give patients to claim their
// relationship from home. Only a hash of each code is stored, never the code.
type ClaimCodes interface {
	// PutClaimCode stores a new code. ErrNotFound if the patient does not
	// exist, ErrConflict if the hash is stored already, ErrInvalid without
	// a hash or an expiry.
	PutClaimCode(ctx context.Context, c ClaimCode) error
	// ClaimCode returns the code with this hash if it is still valid at now
	// (now before Expires); ErrNotFound if it is unknown, consumed or expired.
	ClaimCode(ctx context.Context, hash [32]byte, now time.Time) (ClaimCode, error)
	// ConsumeClaimCode deletes the code, once the claim it allowed succeeded;
	// ErrNotFound if it is not stored (consumed already). Of concurrent calls
	// exactly one succeeds.
	ConsumeClaimCode(ctx context.Context, hash [32]byte) error
	// PruneClaimCodes deletes the codes that expired at or before before
	// and returns how many.
	PruneClaimCodes(ctx context.Context, before time.Time) (int64, error)
}

// ClaimCode is a stored claim code.
type ClaimCode struct {
	Hash      [32]byte  // SHA-256 of the code
	PatientID string    // the patient the code lets claim
	Expires   time.Time // valid before this instant (stored to the microsecond)
}

// Tag is a patient's per-provider tag: a canonical BN254 scalar-field
// element, 32 bytes big-endian.
type Tag [32]byte

// ParseTag decodes "0x" and 64 hex digits.
func ParseTag(s string) (Tag, error) {
	var t Tag
	if !strings.HasPrefix(s, "0x") || len(s) != 66 {
		return t, fmt.Errorf("tag %q: want 0x and 64 hex digits: %w", s, ErrInvalid)
	}
	if _, err := hex.Decode(t[:], []byte(s[2:])); err != nil {
		return t, fmt.Errorf("tag %q: %w", s, ErrInvalid)
	}
	return t, t.Validate()
}

// Validate reports ErrInvalid unless t is a canonical field element.
func (t Tag) Validate() error {
	if _, err := zkhash.FromBytes32(t); err != nil {
		return fmt.Errorf("tag %s: %w: %w", t, ErrInvalid, err)
	}
	return nil
}

// String returns "0x" and 64 lower-case hex digits.
func (t Tag) String() string { return "0x" + hex.EncodeToString(t[:]) }

// Patient is one patient of this provider.
type Patient struct {
	ID      string    // provider-internal id; also the id of the patient's FHIR Patient resource
	Tag     *Tag      // nil until the patient opened the relationship
	Created time.Time // when the patient was added
	Seq     uint64    // sequence number of the patient's latest change (0: none)
}

// Meta describes one stored version of a resource.
type Meta struct {
	Type        string
	ID          string
	Version     int64     // 1 for the first version
	LastUpdated time.Time // microsecond precision, UTC
	SHA256      [32]byte  // of Raw
	PatientID   string    // "" for shared resources
	Seq         uint64    // the patient change that wrote this version (0 for shared resources)
}

// Resource is one version of a resource with its JSON exactly as received.
type Resource struct {
	Meta
	Raw []byte
}

// Mode says how a write treats an existing resource.
type Mode uint8

// Write modes.
const (
	// Create stores version 1; ErrConflict if the resource exists.
	Create Mode = iota + 1
	// Update stores a new version; ErrNotFound if the resource is absent.
	Update
	// Upsert creates or updates (FHIR PUT).
	Upsert
	// CreateIfAbsent creates the resource unless it exists, whatever its
	// content (FHIR conditional create): for shared resources that a patient
	// bundle carries along.
	CreateIfAbsent
)

// Write is one resource write in a Batch. For Update and Upsert, identical
// bytes to the current version change nothing (EffectUnchanged).
type Write struct {
	Type   string
	ID     string
	Raw    []byte
	Shared bool // outside every patient compartment (Organization, Practitioner …)
	Mode   Mode
	// IfVersion, if non-zero, requires the current version to be exactly this
	// (FHIR If-Match); ErrConflict otherwise.
	IfVersion int64
}

// Batch is everything written in one transaction.
type Batch struct {
	// PatientID owns every non-shared write. It may be "" only if every
	// write is shared.
	PatientID string
	// CreatePatient adds the patient if it does not exist yet.
	CreatePatient bool
	Writes        []Write
	// Log entries are appended in the same transaction (e.g. "import").
	Log []LogEntry
	// Time is lastUpdated for every write; zero means now.
	Time time.Time
}

// Effect says what a write did.
type Effect uint8

// Effects of a write.
const (
	EffectCreated Effect = iota + 1
	EffectUpdated
	EffectUnchanged
)

func (e Effect) String() string {
	switch e {
	case EffectCreated:
		return "created"
	case EffectUpdated:
		return "updated"
	case EffectUnchanged:
		return "unchanged"
	}
	return fmt.Sprintf("effect(%d)", uint8(e))
}

// Result is the outcome of one Write: the resulting current version.
type Result struct {
	Meta
	Effect Effect
}

// PageRequest asks for one page: at most Count items (0 means DefaultCount,
// more than MaxCount is cut to MaxCount) after the opaque Cursor ("" for the
// first page).
type PageRequest struct {
	Count  int
	Cursor string
}

// Page sizes.
const (
	DefaultCount = 50
	MaxCount     = 1000
)

// Limit returns the effective page size.
func (p PageRequest) Limit() int {
	switch {
	case p.Count <= 0:
		return DefaultCount
	case p.Count > MaxCount:
		return MaxCount
	}
	return p.Count
}

// Page is one page of results; Next is the cursor of the next page, "" after
// the last.
type Page struct {
	Resources []Resource
	Next      string
}

// Change is one new version in a patient's records.
type Change struct {
	Seq     uint64
	Type    string
	ID      string
	Version int64
	Time    time.Time
}

// State is a patient's records state.
type State struct {
	PatientID string
	Tag       *Tag
	Seq       uint64   // the latest change covered by Hash
	Count     int      // number of resources
	Hash      [32]byte // StateHash of the current versions
	// Dirty: records changed since the state the last anchor covered, or
	// were never anchored.
	Dirty bool
}

// PatientState is one leaf of a records-state anchor.
type PatientState struct {
	Tag       Tag
	PatientID string
	Seq       uint64
	Hash      [32]byte
}

// Anchor is one batch committed on chain (the Anchors contract's anchor
// call): a range of the access log and the records-state root.
type Anchor struct {
	Batch     uint64 // the batch number on chain, assigned by AddAnchor: 0, 1, …
	Time      time.Time
	LogFrom   uint64   // first access-log seq in the batch (fromSeq)
	LogCount  uint64   // number of log entries (count; may be 0)
	LogRoot   [32]byte // root over the batch's entry hashes
	StateRoot [32]byte // root over every tagged patient's latest state
	// States are the leaves that changed since the previous anchor.
	States []PatientState
	TxHash string // chain transaction, once published ("" before)
}

// LogHead is the end of the access log.
type LogHead struct {
	Next uint64   // number of entries: the seq the next entry gets
	Hash [32]byte // hash of the last entry (zero while the log is empty)
}

// ActorKind says who acted.
type ActorKind uint8

// Actor kinds.
const (
	ActorSystem    ActorKind = 1 // the gateway itself (import, anchoring)
	ActorStaff     ActorKind = 2 // the provider's own staff or systems
	ActorPatient   ActorKind = 3 // the patient, by the delegate address of this relationship
	ActorGrantee   ActorKind = 4 // an address grantee
	ActorAnonymous ActorKind = 5 // an anonymous viewer, by grant id g
)

// Valid reports whether k is a known kind.
func (k ActorKind) Valid() bool { return k >= ActorSystem && k <= ActorAnonymous }

func (k ActorKind) String() string {
	switch k {
	case ActorSystem:
		return "system"
	case ActorStaff:
		return "staff"
	case ActorPatient:
		return "patient"
	case ActorGrantee:
		return "grantee"
	case ActorAnonymous:
		return "anonymous"
	}
	return fmt.Sprintf("actor(%d)", uint8(k))
}

// Decision is the outcome of an access attempt.
type Decision uint8

// Decisions.
const (
	Allowed Decision = 1
	Denied  Decision = 2
	Failed  Decision = 3 // allowed, but the operation failed
)

// Valid reports whether d is a known decision.
func (d Decision) Valid() bool { return d >= Allowed && d <= Failed }

func (d Decision) String() string {
	switch d {
	case Allowed:
		return "allowed"
	case Denied:
		return "denied"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("decision(%d)", uint8(d))
}

// LogEntry is one access attempt. It never holds resource content.
type LogEntry struct {
	Seq       uint64
	Time      time.Time // microsecond precision, UTC
	ActorKind ActorKind
	ActorID   string         // delegate or grantee address, g, staff id …
	Purpose   access.Purpose // 0 when none applies (the patient, the system)
	Action    string         // "read", "search", "everything", "create", "import" …
	PatientID string         // whose records ("" if none or unknown)
	Resources []string       // "Type/id" or "Type/id/_history/v"
	Outcome   Decision
	Detail    string // short reason (e.g. "grant expired")
	Prev      [32]byte
	Hash      [32]byte
}

// Limits on stored values.
const (
	MaxLogString    = 1024 // bytes in any string of a log entry
	MaxLogResources = 10000
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9\-.]{1,64}$`)

// ValidID reports ErrInvalid unless id is a FHIR logical id.
func ValidID(id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("id %q: %w", id, ErrInvalid)
	}
	return nil
}

// ValidType reports ErrInvalid unless typ is a grantable resource type.
func ValidType(typ string) error {
	if _, err := access.NewScope(typ); err != nil {
		return fmt.Errorf("resource type %q: %w: %w", typ, ErrInvalid, err)
	}
	return nil
}

// Micro truncates t to the microsecond in UTC: the precision every backend stores.
func Micro(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }
