// Package ledger owns what a provider's gateway and a patient's app must
// compute identically, byte for byte: the access-log entry and its hash
// chain, the records history of a patient and its leaves, the per-patient
// log commitment, and the state hash each anchored leaf holds. The gateway
// writes and anchors these (dbmanager/store keeps them); the app recomputes
// them from what it received and checks them against the chain, so neither
// side may drift, and the app imports nothing of the gateway's.
//
// Every construction starts with its own domain string; a new encoding gets
// a new domain, and old ones are never changed nor reused.
package ledger

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"golang.org/x/crypto/sha3"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/anchor"
)

// ErrTampered: entries or versions no longer agree with their hashes or
// with each other (a log entry that does not match its chain, a gap in a
// patient's changes).
var ErrTampered = errors.New("stored records tampered")

// Domain strings of the hash constructions. A new encoding gets a new
// domain; old ones are never changed nor reused.
const (
	// StateDomain: the hash of a current record set (StateHash). Anchored
	// until state v2; still what /patient/state reports as the current hash.
	StateDomain = "medrec-records-state-v1"
	// StateV2Domain: the anchored state of a patient (StateHashV2).
	StateV2Domain = "medrec-records-state-v2"
	// HistoryDomain: a leaf of a patient's records history (HistoryLeaf).
	HistoryDomain = "medrec-records-history-v1"
	// PatientLogDomain: a link of a patient's log commitment (LogCommitment.Extend).
	PatientLogDomain = "medrec-patient-log-v1"
	// LogDomain: an access-log entry (EncodeEntry).
	LogDomain = "medrec-access-log-v1"
)

// StateEntry is what the records-state hash covers of one resource.
type StateEntry struct {
	Type    string
	ID      string
	Version int64
	SHA256  [32]byte
}

// StateHash returns the (v1) hash of a set of current resource versions
// (the encoding is in dbmanager/store's package doc). It sorts a copy of entries by type, then id; the
// order of the argument does not matter. Anchors commit to StateHashV2
// instead; this hash of the current set is what /patient/state reports.
func StateHash(entries []StateEntry) [32]byte {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b StateEntry) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	h := sha3.NewLegacyKeccak256()
	var buf []byte
	buf = append(buf, StateDomain...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(sorted)))
	h.Write(buf)
	for _, e := range sorted {
		buf = appendStr(buf[:0], e.Type)
		buf = appendStr(buf, e.ID)
		buf = binary.BigEndian.AppendUint64(buf, uint64(e.Version))
		buf = append(buf, e.SHA256[:]...)
		h.Write(buf)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// HistoryLeaf returns the leaf hash of one history entry in the patient's
// history tree (an RFC 6962 tree, package anchor):
//
//	anchor.LeafHash( "medrec-records-history-v1" ‖ str(type) ‖ str(id) ‖
//	                 u64(version) ‖ sha256(raw JSON) )
//
// The entry's change number is its position in the tree.
func HistoryLeaf(e HistoryEntry) common.Hash {
	b := make([]byte, 0, len(HistoryDomain)+8+len(e.Type)+len(e.ID)+8+32)
	b = append(b, HistoryDomain...)
	b = appendStr(b, e.Type)
	b = appendStr(b, e.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Version))
	b = append(b, e.SHA256[:]...)
	return anchor.LeafHash(b)
}

// HistoryRoot returns the history of entries, which must be changes 1, 2, …
// in order (ErrTampered otherwise).
func HistoryRoot(entries []HistoryEntry) (History, error) {
	var f anchor.Frontier
	for _, e := range entries {
		if e.Seq != f.Size()+1 {
			return History{}, fmt.Errorf("history: change %d where %d should be: %w", e.Seq, f.Size()+1, ErrTampered)
		}
		f.Append(HistoryLeaf(e))
	}
	return History{Size: f.Size(), Root: f.Root()}, nil
}

// Extend returns the commitment c extended by entry e, one of the
// patient's entries with seq ≥ c.Through (it does not move Through):
//
//	head' = keccak256( "medrec-patient-log-v1" ‖ head ‖ u64(seq) ‖ entry hash )
//
// The first head is 32 zero bytes.
func (c LogCommitment) Extend(seq uint64, hash [32]byte) LogCommitment {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte(PatientLogDomain))
	h.Write(c.Head[:])
	h.Write(binary.BigEndian.AppendUint64(nil, seq))
	h.Write(hash[:])
	h.Sum(c.Head[:0])
	c.Count++
	return c
}

// StateHashV2 returns a patient's anchored state, the value of the
// patient's leaf in the records-state tree:
//
//	keccak256( "medrec-records-state-v2" ‖ u64(history size) ‖ history root ‖
//	           u64(log through) ‖ u64(log count) ‖ log head )
func StateHashV2(h History, l LogCommitment) [32]byte {
	b := make([]byte, 0, len(StateV2Domain)+8+32+8+8+32)
	b = append(b, StateV2Domain...)
	b = binary.BigEndian.AppendUint64(b, h.Size)
	b = append(b, h.Root[:]...)
	b = binary.BigEndian.AppendUint64(b, l.Through)
	b = binary.BigEndian.AppendUint64(b, l.Count)
	b = append(b, l.Head[:]...)
	var out [32]byte
	k := sha3.NewLegacyKeccak256()
	k.Write(b)
	k.Sum(out[:0])
	return out
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// EncodeEntry returns the canonical encoding of a log entry: every field but
// Prev and Hash, in this order, big-endian, strings as u32 length ‖ UTF-8:
//
//	"medrec-access-log-v1"
//	u64 seq ‖ i64 time (Unix microseconds) ‖ u8 actor kind ‖ str actor id ‖
//	u8 purpose ‖ str action ‖ str patient id ‖ u32 n ‖ n × str resource ‖
//	u8 outcome ‖ str detail
func EncodeEntry(e LogEntry) []byte {
	b := make([]byte, 0, 128+16*len(e.Resources))
	b = append(b, LogDomain...)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixMicro()))
	b = append(b, byte(e.ActorKind))
	b = appendStr(b, e.ActorID)
	b = append(b, byte(e.Purpose))
	b = appendStr(b, e.Action)
	b = appendStr(b, e.PatientID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Resources)))
	for _, r := range e.Resources {
		b = appendStr(b, r)
	}
	b = append(b, byte(e.Outcome))
	b = appendStr(b, e.Detail)
	return b
}

// EntryHash returns keccak256(prev ‖ EncodeEntry(e)).
func EntryHash(prev [32]byte, e LogEntry) [32]byte {
	h := sha3.NewLegacyKeccak256()
	h.Write(prev[:])
	h.Write(EncodeEntry(e))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// Chain fills in Seq, Prev and Hash of entries appended after head, in place.
func Chain(head LogHead, entries []LogEntry) LogHead {
	for i := range entries {
		e := &entries[i]
		e.Seq = head.Next
		e.Prev = head.Hash
		e.Hash = EntryHash(e.Prev, *e)
		head = LogHead{Next: e.Seq + 1, Hash: e.Hash}
	}
	return head
}

// VerifyChain checks that entries continue the log after head: consecutive
// seq, each prev the hash before it, each hash recomputed. It returns the new
// head, or ErrTampered naming the first bad entry.
func VerifyChain(head LogHead, entries []LogEntry) (LogHead, error) {
	for _, e := range entries {
		switch {
		case e.Seq != head.Next:
			return head, fmt.Errorf("entry %d where %d should be: %w", e.Seq, head.Next, ErrTampered)
		case e.Prev != head.Hash:
			return head, fmt.Errorf("entry %d: prev is not the hash of the entry before: %w", e.Seq, ErrTampered)
		}
		if h := EntryHash(e.Prev, e); !bytes.Equal(h[:], e.Hash[:]) {
			return head, fmt.Errorf("entry %d: content does not match its hash: %w", e.Seq, ErrTampered)
		}
		head = LogHead{Next: e.Seq + 1, Hash: e.Hash}
	}
	return head, nil
}

// --- types ---------------------------------------------------------------------

// HistoryEntry is one leaf of a patient's records history: the version
// that change Seq wrote.
type HistoryEntry struct {
	Seq     uint64 // the patient change, 1, 2, …: the leaf's index is Seq-1
	Type    string
	ID      string
	Version int64
	SHA256  [32]byte // of the version's raw JSON
}

// History is a patient's records history as a tree: Size leaves (the
// patient's changes 1…Size) under Root (see HistoryLeaf).
type History struct {
	Size uint64
	Root [32]byte
}

// LogCommitment commits to the access-log entries about one patient: the
// Count entries with a seq below Through, chained in seq order into Head
// (see LogCommitment.Extend). The zero value commits to no entries.
type LogCommitment struct {
	Through uint64
	Count   uint64
	Head    [32]byte
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
	ActorApp       ActorKind = 6 // an app the patient approved (SMART App Launch), by its client id
)

// Valid reports whether k is a known kind.
func (k ActorKind) Valid() bool { return k >= ActorSystem && k <= ActorApp }

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
	case ActorApp:
		return "app"
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
