// Package store owns the provider gateway's records database as seen by the
// rest of dbmanager: the provider's patients (provider-internal ids), the map
// from each patient's per-provider tag to that patient (kept only here, never
// on chain), the FHIR R4 resources exactly as they were received with their
// versions, the per-patient change sequence that drives notifications, the
// records history and state that anchors cover, the hash-chained access
// log, and the anchors that commit both to the chain; and what the gateway must not
// forget on a restart besides: the nonces of accepted signed requests, until
// they expire, and the claim codes staff issued (their hashes only).
//
// The package defines the interfaces (Patients, Records, AccessLog, Anchors,
// Nonces, ClaimCodes, and Store, which is all six), the value types that
// cross them, and the sentinel errors. The hash constructions every
// implementation and every client must compute identically — the records
// history (HistoryLeaf, HistoryRoot), the patient log commitment
// (LogCommitment.Extend), the anchored state (StateHashV2), the current-set
// hash (StateHash) and the access-log chain (EntryHash, VerifyChain) — are
// package ledger's, which the patient's app imports too; this package keeps
// them under the same names, and documents the encodings below.
// Implementations live in sub-packages
// (store/sqlstore: SQLite and PostgreSQL); store/storetest is the one test
// suite every implementation must pass. The package knows nothing about FHIR
// beyond resource types and ids: validation is dbmanager/fhirval's job, what
// a search parameter reads dbmanager/fhirsearch's.
//
// # Resources
//
// A resource is identified by (type, id), belongs to exactly one patient for
// ever (or to none: Organization, Practitioner, Location, Medication and
// PractitionerRole are "shared" directory resources outside every patient
// compartment), and has versions 1, 2, … Each stored version keeps the raw
// JSON byte for byte, its SHA-256, its lastUpdated time and the patient change
// sequence number that created it. Old versions are kept (nothing accepted is
// ever lost). Writing identical bytes again is a no-op (EffectUnchanged):
// re-imports are idempotent and do not disturb anchors.
//
// The stored JSON is never rewritten: id, meta.versionId and
// meta.lastUpdated live beside it. A gateway must serve the raw bytes
// unchanged (the version in the ETag, or in a Bundle entry's link) so a
// client can hash exactly what it received and check it against an anchor.
//
// # Search
//
// Beside each current version a store keeps its searchable values (tokens,
// date ranges, references: IndexValue), as package fhirsearch extracts
// them, written and replaced in the transaction that makes the version
// current. Search answers a Query (criteria on those values, _id and
// lastUpdated; a sort; a page) over one patient's current resources with
// the total and keyset cursors both ways; Included and RevIncluded follow
// references. The package knows the values' kinds, not what FHIR element
// each comes from.
//
// # Records history and state
//
// A patient's records history is every version of the patient's resources
// in change order — change i writes exactly one version, so the changes are
// numbered 1, 2, … without gaps — as an RFC 6962 tree (package anchor) whose
// leaf i is HistoryLeaf of change i+1:
//
//	anchor.LeafHash( "medrec-records-history-v1" ‖ str(type) ‖ str(id) ‖
//	                 u64(version) ‖ sha256(raw JSON) )
//	str(s) = u32(len(s)) ‖ s        u32/u64: big-endian
//
// The history only grows: a later history must contain an earlier one as a
// prefix, which a consistency proof shows. A patient's access-log
// commitment chains the patient's entries (seq order) below a log seq:
//
//	head_k = keccak256( "medrec-patient-log-v1" ‖ head_k-1 ‖ u64(seq) ‖ entry hash ),  head_0 = 0³²
//
// and what an anchor commits to for a patient — the leaf of the
// records-state tree — is state v2 (StateHashV2):
//
//	keccak256( "medrec-records-state-v2" ‖ u64(history size) ‖ history root ‖
//	           u64(log through) ‖ u64(log count) ‖ log head )
//
// A patient is dirty when a change happened after the history its last
// anchor covered, or when the next batch holds log entries about it.
// Dirty computes each new leaf, in the anchoring pass: the history from the
// stored versions (kept from the last anchor when only log entries are
// new), the log commitment extending the last anchored one; AddAnchor
// recomputes and refuses anything else. Anchoring records the change
// number and log commitment it covered, so a write racing with an anchor
// leaves the patient dirty rather than being forgotten.
//
// StateHash (v1) is the hash of a current record set:
//
//	keccak256( "medrec-records-state-v1" ‖ u64(n) ‖ entry_1 ‖ … ‖ entry_n )
//	entry = str(type) ‖ str(id) ‖ u64(version) ‖ sha256(raw JSON)
//
// with entries sorted by type, then id, comparing bytes. Anchors committed to
// it before state v2 (migration 00005); it is still what State reports.
//
// # Access log
//
// Every access attempt is appended to one provider-wide log. Entry seq
// (0, 1, … as the Anchors contract counts) carries prev = hash of entry
// seq-1 (32 zero bytes for seq 0) and
//
//	hash = keccak256( prev ‖ EncodeEntry(entry) )
//
// where EncodeEntry is the canonical encoding documented on that function.
// VerifyLog walks the whole log and detects any edited, inserted, deleted or
// reordered row; cutting off the tail is detected against the stored head
// and, once anchored, against the chain.
package store
