// Package gatewayapi holds the wire types a gateway's clients decode: access-log
// entries with their anchor inclusion proofs, the records-state answer
// (the patient's anchored leaf and what it commits to) and the records
// history.
// Entries carry every field of the canonical encoding, so a client can
// recompute each entry's hash (ledger.EntryHash) and check it against the
// anchored root on chain.
package gatewayapi

import (
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/ledger"
)

// MaxPage is the most entries (log entries, history entries, changes) one
// page of the owner's answers holds.
const MaxPage = 999

// LogProof places an entry in an anchored batch.
type LogProof struct {
	Batch uint64        `json:"batch"` // the chain's batch number for this provider
	Index int           `json:"index"` // position in the batch
	Count uint64        `json:"count"` // entries in the batch
	Proof []common.Hash `json:"proof"`
}

// LogEntry is one access-log entry as served to the patient.
type LogEntry struct {
	Seq       uint64      `json:"seq"`
	TimeMicro int64       `json:"timeMicro"` // Unix microseconds (what the hash covers)
	ActorKind uint8       `json:"actorKind"`
	Actor     string      `json:"actor"`
	Purpose   uint8       `json:"purpose"`
	Action    string      `json:"action"`
	Patient   string      `json:"patient"`
	Resources []string    `json:"resources"`
	Outcome   uint8       `json:"outcome"`
	Detail    string      `json:"detail"`
	Prev      common.Hash `json:"prev"`
	Hash      common.Hash `json:"hash"`
	Anchor    *LogProof   `json:"anchor"` // nil until the entry's batch is published
	Kind      string      `json:"actorKindName"`
	Decision  string      `json:"outcomeName"`
}

// FromLedger converts a log entry (as the gateway stores it).
func FromLedger(e ledger.LogEntry, p *LogProof) LogEntry {
	return LogEntry{
		Seq: e.Seq, TimeMicro: e.Time.UnixMicro(), ActorKind: uint8(e.ActorKind), Actor: e.ActorID,
		Purpose: uint8(e.Purpose), Action: e.Action, Patient: e.PatientID, Resources: e.Resources,
		Outcome: uint8(e.Outcome), Detail: e.Detail, Prev: e.Prev, Hash: e.Hash, Anchor: p,
		Kind: e.ActorKind.String(), Decision: e.Outcome.String(),
	}
}

// Ledger converts back, for hashing.
func (e LogEntry) Ledger() ledger.LogEntry {
	return ledger.LogEntry{
		Seq: e.Seq, Time: time.UnixMicro(e.TimeMicro).UTC(), ActorKind: ledger.ActorKind(e.ActorKind), ActorID: e.Actor,
		Purpose: access.Purpose(e.Purpose), Action: e.Action, PatientID: e.Patient, Resources: e.Resources,
		Outcome: ledger.Decision(e.Outcome), Detail: e.Detail, Prev: e.Prev, Hash: e.Hash,
	}
}

// LogPage is the answer of GET /patient/log: entries with seq ≥ from, in
// order; More says another page follows, from Next.
type LogPage struct {
	Entries []LogEntry `json:"entries"`
	More    bool       `json:"more"`
	Next    uint64     `json:"next"`
}

// History is a patient's records history as a tree (ledger.History).
type History struct {
	Size uint64      `json:"size"`
	Root common.Hash `json:"root"`
}

// LogCommitment commits to the patient's access-log entries with a seq
// below Through (ledger.LogCommitment).
type LogCommitment struct {
	Through uint64      `json:"through"`
	Count   uint64      `json:"count"`
	Head    common.Hash `json:"head"`
}

// StateAnchor places the patient's records-state leaf in the latest
// published records-state tree. State = ledger.StateHashV2(History, Log);
// History and Log are nil for a leaf anchored before state v2.
type StateAnchor struct {
	Batch     uint64         `json:"batch"`
	StateRoot common.Hash    `json:"stateRoot"`
	State     common.Hash    `json:"state"`
	Index     int            `json:"index"`
	Count     int            `json:"count"`
	Proof     []common.Hash  `json:"proof"`
	History   *History       `json:"history"`
	Log       *LogCommitment `json:"log"`
	// Consistency proves that the history of From changes (the size the
	// client asked from) is a prefix of History; empty when From is 0, at
	// least History.Size, or not asked for.
	From        uint64        `json:"from"`
	Consistency []common.Hash `json:"consistency"`
}

// State is the answer of GET /patient/state.
type State struct {
	Hash   common.Hash  `json:"hash"` // ledger.StateHash (v1) of the current record set
	Seq    uint64       `json:"seq"`  // the patient's latest change
	Count  int          `json:"count"`
	Dirty  bool         `json:"dirty"` // records changed since the latest anchor
	Anchor *StateAnchor `json:"anchor"`
}

// HistoryEntry is one change in the patient's records history.
type HistoryEntry struct {
	Seq     uint64      `json:"seq"`
	Type    string      `json:"type"`
	ID      string      `json:"id"`
	Version int64       `json:"version"`
	SHA256  common.Hash `json:"sha256"`
}

// Ledger converts back, for hashing.
func (e HistoryEntry) Ledger() ledger.HistoryEntry {
	return ledger.HistoryEntry{Seq: e.Seq, Type: e.Type, ID: e.ID, Version: e.Version, SHA256: e.SHA256}
}

// HistoryPage is the answer of GET /patient/history: the changes after the
// history size from, in order; More says another page follows, from Next.
type HistoryPage struct {
	Entries []HistoryEntry `json:"entries"`
	More    bool           `json:"more"`
	Next    uint64         `json:"next"`
}

// A bulk NDJSON import that took some patients and refused others answers an
// OperationOutcome: an information issue saying what went in, with the
// counts in extension BulkImportCountsURL (sub-extensions patients,
// resources, created, updated, unchanged, shared, lines, files; each a
// valueInteger), and an error issue per refusal, with extension
// BulkImportRefusalURL (file and reason valueString, line valueInteger,
// patient valueString, absent for a shared resource). A client reads these,
// never the diagnostics' words.
const (
	BulkImportCountsURL  = "https://github.com/medrec-zk/medrec/fhir/StructureDefinition/bulk-import-counts"
	BulkImportRefusalURL = "https://github.com/medrec-zk/medrec/fhir/StructureDefinition/bulk-import-refusal"
)

// Extension is a FHIR extension: a URL and a value, or sub-extensions.
type Extension struct {
	URL          string      `json:"url"`
	ValueInteger *int        `json:"valueInteger,omitempty"`
	ValueString  *string     `json:"valueString,omitempty"`
	Extension    []Extension `json:"extension,omitempty"`
}

// FindExtension returns the extension of list with url, if any.
func FindExtension(list []Extension, url string) (Extension, bool) {
	for _, x := range list {
		if x.URL == url {
			return x, true
		}
	}
	return Extension{}, false
}

// Sub returns sub-extension url of e, if any.
func (e Extension) Sub(url string) (Extension, bool) { return FindExtension(e.Extension, url) }

// IntExt and StringExt are sub-extensions with a value.
func IntExt(url string, v int) Extension       { return Extension{URL: url, ValueInteger: &v} }
func StringExt(url string, v string) Extension { return Extension{URL: url, ValueString: &v} }

// BackendActorPrefix prefixes, in the access log, the id of a provider's
// backend client (a system with its own key, e.g. a laboratory feed): the
// entry's actor kind is ledger.ActorStaff ("the provider's own staff or
// systems") and its id "backend:" + the client id.
const BackendActorPrefix = "backend:"

// LocatorNoteSize is the size of a sealed locator note: a 12-byte nonce,
// the 8-byte leaf index, a 16-byte AES-GCM tag.
const LocatorNoteSize = 12 + 8 + 16

// LocatorFiling files a patient's sealed locator note at a gateway
// (POST /registry/locator): an Ownership proof at scope
// circuits.LocatorScope whose signal is circuits.LocatorSignal of the note,
// against a root the registry knows. All values 0x hex.
type LocatorFiling struct {
	Tag   string `json:"tag"`   // the locator tag H(D_tag; s, 0)
	Note  string `json:"note"`  // LocatorNoteSize bytes
	Root  string `json:"root"`  // the proof's registry root
	Proof string `json:"proof"` // the Ownership proof
}

// LocatorQuery asks a gateway for the note filed under a locator tag
// (POST /registry/locator/find, so the tag is in no URL).
type LocatorQuery struct {
	Tag string `json:"tag"`
}

// LocatorNote is a gateway's answer to a LocatorQuery.
type LocatorNote struct {
	Note string `json:"note"` // 0x hex, LocatorNoteSize bytes
}
