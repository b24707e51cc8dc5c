package store

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/big"
	"regexp"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/tagcode"
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
	Staff
	Locators
	ExportJobs
	Close() error
}

// Patients is the provider's patient list and the tag ↔ patient map.
type Patients interface {
	// CreatePatient adds a patient, with log entries (who added it) in the
	// same transaction; ErrConflict if the id exists.
	CreatePatient(ctx context.Context, id string, log ...LogEntry) (Patient, error)
	// Patient returns one patient; ErrNotFound if absent.
	Patient(ctx context.Context, id string) (Patient, error)
	// MapTag binds the patient's per-provider tag, once and for ever. Mapping
	// the same tag again is a no-op; a different tag for the patient, or the
	// tag of another patient, is ErrConflict.
	MapTag(ctx context.Context, patientID string, tag Tag) error
	// PatientByTag returns the patient a tag is mapped to; ErrNotFound if none.
	PatientByTag(ctx context.Context, tag Tag) (Patient, error)
	// PatientResources returns a page of the current Patient resources of
	// all patients, ordered by id: what the desk looks through to find a
	// patient by name, birth date or record number.
	PatientResources(ctx context.Context, p PageRequest) (Page, error)
	// UnmapTag undoes a wrong mapping (a relationship opened by someone who
	// is not this patient): the patient's tag, which must be tag, is
	// removed, and entry — who undid it and why — is appended to the access
	// log in the same transaction. ErrNotFound if the patient does not
	// exist, ErrConflict if tag is not the patient's tag. The patient can
	// then be mapped to another tag, and tag to another patient. The
	// patient's records state counts as never anchored again, so the next
	// anchor covers it under its next tag.
	UnmapTag(ctx context.Context, patientID string, tag Tag, entry LogEntry) error
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
	// Versions returns up to limit versions of a resource older than
	// version before (0: from the newest), newest first (FHIR instance
	// history). ErrNotFound if the resource does not exist.
	Versions(ctx context.Context, typ, id string, before int64, limit int) ([]Resource, error)
	// Search returns a page of the current resources of q.Type belonging to
	// the patient that meet every criterion, in q.Sort's order, and the
	// number of them all (Page.Total). patientID "" searches shared
	// resources. A cursor is only good for the query that made it
	// (ErrInvalid otherwise).
	Search(ctx context.Context, patientID string, q Query) (Page, error)
	// Everything returns a page of the patient's current resources, of
	// q.Types if given, changed at or after q.Since, ordered by type, then
	// id (FHIR Patient/$everything, without the shared resources they
	// refer to), and the number of them all.
	Everything(ctx context.Context, patientID string, q EverythingQuery) (Page, error)
	// IDs returns the ids of the patient's current resources of one type.
	IDs(ctx context.Context, patientID, typ string) ([]string, error)
	// Included returns the current resources that the resources of
	// inc.Source with the given ids refer to at inc.Param and that are of
	// inc.Target's types — shared ones, or the patient's — at most
	// MaxIncluded of them (FHIR _include).
	Included(ctx context.Context, patientID string, inc Include, ids []string) ([]Resource, error)
	// RevIncluded returns the patient's current resources of inc.Source
	// that refer to any of targets at inc.Param, ordered by id, at most
	// MaxIncluded of them (FHIR _revinclude).
	RevIncluded(ctx context.Context, patientID string, inc Include, targets []Ref) ([]Resource, error)
	// Changes returns up to limit changes of the patient's records with a
	// sequence number greater than since, in order.
	Changes(ctx context.Context, patientID string, since uint64, limit int) ([]Change, error)
	// State returns the hash of the patient's current record set and
	// whether its records changed since their last anchor.
	State(ctx context.Context, patientID string) (State, error)
	// History returns up to limit entries of the patient's records history
	// with a change sequence number greater than after, in order: the
	// version each change wrote, with its SHA-256. after is the number of
	// entries the caller has already (leaf i of the history tree is change
	// i+1). ErrNotFound if the patient does not exist; ErrTampered if the
	// stored changes are not numbered 1, 2, … or lack their version.
	History(ctx context.Context, patientID string, after uint64, limit int) ([]HistoryEntry, error)
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
	// Dirty returns the state, as the next batch would anchor it, of every
	// tagged patient whose records changed since the state its last anchor
	// covered (or that was never anchored), or who has access-log entries
	// in the next batch: those after the previous batch, before logEnd.
	// Each state's history covers the patient's changes so far, its log
	// commitment the patient's entries before logEnd. Ordered by tag.
	Dirty(ctx context.Context, logEnd uint64) ([]PatientState, error)
	// AddAnchor stores the next batch and the states it covers, and marks
	// those patients clean up to the covered sequence numbers and log
	// entries. Like the Anchors contract, it numbers batches 0, 1, … and
	// requires the log range to start where the previous batch's ended (0
	// at first) and to lie within the log (ErrConflict otherwise); a batch
	// without log entries must have a zero log root and a non-zero state
	// root (ErrInvalid otherwise). Every state is recomputed from the stored
	// rows — its history at its change number, its log commitment through
	// the batch's end, extending the patient's previous one — and refused
	// (ErrConflict) unless it is exactly that.
	AddAnchor(ctx context.Context, a Anchor) (Anchor, error)
	// Anchor returns a batch with its states; ErrNotFound if absent.
	Anchor(ctx context.Context, batch uint64) (Anchor, error)
	// LatestAnchor returns the newest batch (without states); ErrNotFound if none.
	LatestAnchor(ctx context.Context) (Anchor, error)
	// Batches returns up to limit batches (without states) from batch from
	// on, in order.
	Batches(ctx context.Context, from uint64, limit int) ([]Anchor, error)
	// LatestStates returns the newest anchored leaf of every tag ever
	// anchored — the leaves of the latest records-state tree — ordered by
	// tag.
	LatestStates(ctx context.Context) ([]PatientState, error)
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

// Locators keeps patients' sealed locator notes: where a patient's leaf is
// in the registry's tree, sealed under a key only the patient's words
// derive, filed under a tag of theirs no provider can link to anything
// else (package dbmanager's locator.go). The gateway cannot read a note;
// it keeps the latest one per tag.
type Locators interface {
	// PutLocator files note under tag, replacing the note filed there
	// before. ErrInvalid for a zero tag or a note of another size than
	// LocatorNoteSize.
	PutLocator(ctx context.Context, tag [32]byte, note []byte) error
	// Locator returns the note filed under tag; ErrNotFound if none is.
	Locator(ctx context.Context, tag [32]byte) ([]byte, error)
}

// ExportJobs keeps bulk exports ($export) from kick-off to deletion, so an
// export accepted is never lost: its state, and once finished its files, are
// in the records database, readable by any gateway process on it and after
// a restart. A running job is beaten (BeatExportJob) by the process running
// it; one whose beats stopped ran in a process that is gone.
type ExportJobs interface {
	// AddExportJob stores a new running job (Finished zero, Beat = Started).
	// ErrConflict if the id is taken, ErrInvalid without an id, an owner or
	// a start.
	AddExportJob(ctx context.Context, j ExportJob) error
	// BeatExportJob records that the job's process still runs it.
	// ErrNotFound if it was deleted.
	BeatExportJob(ctx context.Context, id string, at time.Time) error
	// FinishExportJob records the job's end: its parts, or its failure
	// (parts nil), in one transaction. ErrNotFound if it was deleted
	// meanwhile (nothing is stored), ErrConflict if it had finished.
	FinishExportJob(ctx context.Context, id string, at time.Time, parts []ExportPart, failure string) error
	// ExportJob returns a job with its parts' counts (no NDJSON);
	// ErrNotFound if there is none.
	ExportJob(ctx context.Context, id string) (ExportJob, error)
	// ExportJobs returns every job, without parts, oldest first.
	ExportJobs(ctx context.Context) ([]ExportJob, error)
	// ExportFile returns the job's parts of one type, with their NDJSON, by
	// member.
	ExportFile(ctx context.Context, id, typ string) ([]ExportPart, error)
	// DeleteExportJob forgets a job and its files; ErrNotFound if none.
	DeleteExportJob(ctx context.Context, id string) error
	// PruneExportJobs forgets the jobs finished before before, and returns
	// how many.
	PruneExportJobs(ctx context.Context, before time.Time) (int64, error)
}

// ExportJob is one bulk export.
type ExportJob struct {
	ID       string
	Owner    string // who may read it: the gateway's name for the reader
	Request  string // the kick-off's URL
	Started  time.Time
	Beat     time.Time // the last sign of its process; Started at first
	Finished time.Time // zero while it runs
	Failure  string    // why it failed; "" if it did not (or runs)
	Parts    []ExportPart
}

// ExportPart is one type's lines of an export, of one member of a group
// export (Member zero for a patient's export).
type ExportPart struct {
	Member Tag
	Type   string
	Count  int
	NDJSON []byte
}

// LocatorNoteSize is the size of every locator note (the wire's).
const LocatorNoteSize = gatewayapi.LocatorNoteSize

// ClaimCodes holds the one-time codes staff give patients to claim their
// relationship from home. Only a hash of each code is stored, never the code.
type ClaimCodes interface {
	// PutClaimCode stores a new code. ErrNotFound if the patient does not
	// exist, ErrConflict if the hash is stored already, ErrInvalid without
	// a hash, an expiry or a desk code in canonical form. The log entries
	// (who issued the code) are appended in the same transaction.
	PutClaimCode(ctx context.Context, c ClaimCode, log ...LogEntry) error
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

// Staff holds the provider's desk accounts and their login sessions. The
// store keeps what it is given: password hashes are made by the gateway,
// tokens are stored as their SHA-256 only.
type Staff interface {
	// AddStaff stores a new account, with log entries (who added it) in the
	// same transaction. ErrConflict if the id or the token hash is taken,
	// ErrInvalid for a bad id, name or role.
	AddStaff(ctx context.Context, a StaffAccount, log ...LogEntry) error
	// StaffAccount returns one account; ErrNotFound if absent.
	StaffAccount(ctx context.Context, id string) (StaffAccount, error)
	// StaffByToken returns the account whose API token hashes to hash, or
	// whose login session does and is valid at now; ErrNotFound otherwise
	// (also for a disabled account).
	StaffByToken(ctx context.Context, hash [32]byte, now time.Time) (StaffAccount, error)
	// ListStaff returns every account, by id.
	ListStaff(ctx context.Context) ([]StaffAccount, error)
	// UpdateStaff applies change to the account, with log entries in the
	// same transaction; ErrNotFound if absent, ErrConflict if a new token
	// hash is taken. Disabling an account ends its sessions.
	UpdateStaff(ctx context.Context, id string, change StaffChange, log ...LogEntry) error
	// PutStaffSession records a login session until expires.
	PutStaffSession(ctx context.Context, hash [32]byte, staffID string, expires time.Time) error
	// DeleteStaffSession ends a session (logout); ErrNotFound if unknown.
	DeleteStaffSession(ctx context.Context, hash [32]byte) error
	// PruneStaffSessions deletes the sessions that expired at or before
	// before and returns how many.
	PruneStaffSessions(ctx context.Context, before time.Time) (int64, error)
}

// StaffRole says what a staff member may do at the desk.
type StaffRole string

// Staff roles.
const (
	// RoleClerk: the desk's daily work for one patient at a time — find,
	// create, enrol, claim codes, claims at the desk, relationships.
	RoleClerk StaffRole = "clerk"
	// RoleAdmin: all of it, and writing records, imports, undoing a tag
	// mapping, staff accounts.
	RoleAdmin StaffRole = "admin"
)

// Valid reports whether r is a known role.
func (r StaffRole) Valid() bool { return r == RoleClerk || r == RoleAdmin }

// Allows reports whether r may do what needs at least role need.
func (r StaffRole) Allows(need StaffRole) bool { return r == RoleAdmin || r == need }

// StaffAccount is one staff member's account.
type StaffAccount struct {
	ID           string // a login name, as ValidID
	Name         string // the person's name, for people
	Role         StaffRole
	PasswordHash string   // encoded by the gateway; "" for no password
	TokenHash    [32]byte // SHA-256 of the API token; zero for none
	Created      time.Time
	Disabled     bool
}

// StaffChange is what UpdateStaff changes; nil fields stay.
type StaffChange struct {
	Role         *StaffRole
	PasswordHash *string
	TokenHash    *[32]byte // zero: no token
	Disabled     *bool
}

// ClaimCode is a stored claim code.
type ClaimCode struct {
	Hash      [32]byte  // SHA-256 of the code
	PatientID string    // the patient the code lets claim
	Expires   time.Time // valid before this instant (stored to the microsecond)
	// TagCode is the desk code of the one tag that may claim with this
	// code, as the patient's app showed it to staff. Codes stored before
	// claim codes were bound have none ("") and claim nothing.
	TagCode tagcode.Code
}

// Tag is a patient's per-provider tag: a canonical BN254 scalar-field
// element, 32 bytes big-endian.
type Tag [32]byte

// ParseTag decodes "0x" and 1 to 64 hex digits (zkhash.ParseHex): the
// zero-padded form the CLI and the audit print, or the minimal form of a
// JSON-RPC quantity.
func ParseTag(s string) (Tag, error) {
	e, err := zkhash.ParseHex(s)
	if err != nil {
		return Tag{}, fmt.Errorf("tag %q: %w: %w", s, ErrInvalid, err)
	}
	return e.Bytes(), nil
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

// Big returns the tag as a number (as the chain keys relationships).
func (t Tag) Big() *big.Int { return new(big.Int).SetBytes(t[:]) }

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

// Page is one page of results. Next is the cursor of the next page, ""
// after the last; Prev the cursor of the page before, "" on the first
// (and on a page that follows an empty one). Total counts every result of
// the query, on every page.
type Page struct {
	Resources []Resource
	Next      string
	Prev      string
	Total     int
}

// Change is one new version in a patient's records.
type Change struct {
	Seq     uint64
	Type    string
	ID      string
	Version int64
	Time    time.Time
}

// State is a patient's current record set.
type State struct {
	PatientID string
	Tag       *Tag
	Seq       uint64   // the latest change covered by Hash
	Count     int      // number of resources
	Hash      [32]byte // StateHash (v1) of the current versions
	// Dirty: records changed since the state the last anchor covered, or
	// were never anchored.
	Dirty bool
}

// PatientState is one leaf of a records-state anchor: the patient's
// history and log commitment, and Hash = StateHashV2 of the two.
type PatientState struct {
	Tag       Tag
	PatientID string
	Seq       uint64 // the latest change covered (History.Size)
	History   History
	Log       LogCommitment
	Hash      [32]byte
	// Legacy: a leaf anchored before state v2 (migration 00005), whose Hash
	// is the v1 hash of the record set; History and Log are unknown.
	Legacy bool
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
