// Package store owns the provider gateway's records database as seen by the
// rest of dbmanager: the provider's patients (provider-internal ids), the map
// from each patient's per-provider tag to that patient (kept only here, never
// on chain), the FHIR R4 resources exactly as they were received with their
// versions, the per-patient change sequence that drives notifications, the
// records-state hash that anchors cover, the hash-chained access log, and the
// anchors that commit both to the chain; and what the gateway must not
// forget on a restart besides: the nonces of accepted signed requests, until
// they expire, and the claim codes staff issued (their hashes only).
//
// The package defines the interfaces (Patients, Records, AccessLog, Anchors,
// Nonces, ClaimCodes, and Store, which is all six), the value types that
// cross them, the sentinel errors, and the two hash constructions every
// implementation and every client must compute identically: StateHash and the access-log chain
// (EntryHash, VerifyChain). Implementations live in sub-packages
// (store/sqlstore: SQLite and PostgreSQL); store/storetest is the one test
// suite every implementation must pass. The package knows nothing about FHIR
// beyond resource types and ids: validation is dbmanager/fhirval's job.
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
// unchanged (version in the ETag, or in Bundle entry.response) so a client
// can hash exactly what it received and check it against an anchor.
//
// # Records state
//
// The state of a patient's records is StateHash over the current version of
// each of the patient's resources:
//
//	keccak256( "medrec-records-state-v1" ‖ u64(n) ‖ entry_1 ‖ … ‖ entry_n )
//	entry = str(type) ‖ str(id) ‖ u64(version) ‖ sha256(raw JSON)
//	str(s) = u32(len(s)) ‖ s        u32/u64: big-endian
//
// with entries sorted by type, then id, comparing bytes. A patient is dirty
// when a change happened after the state its last anchor covered; anchoring
// records the sequence number it covered, so a write racing with an anchor
// leaves the patient dirty rather than being forgotten.
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
