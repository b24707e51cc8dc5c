package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/sha3"

	"github.com/medrec-zk/medrec/ledger"
)

// The log entry, its hash chain, the records history and the state hash
// are package ledger's: the gateway and the patient's app compute them
// alike. The store keeps them under the same names.
type (
	LogEntry      = ledger.LogEntry
	LogHead       = ledger.LogHead
	ActorKind     = ledger.ActorKind
	Decision      = ledger.Decision
	StateEntry    = ledger.StateEntry
	HistoryEntry  = ledger.HistoryEntry
	History       = ledger.History
	LogCommitment = ledger.LogCommitment
)

// Actor kinds and decisions (ledger's).
const (
	ActorSystem    = ledger.ActorSystem
	ActorStaff     = ledger.ActorStaff
	ActorPatient   = ledger.ActorPatient
	ActorGrantee   = ledger.ActorGrantee
	ActorAnonymous = ledger.ActorAnonymous
	ActorApp       = ledger.ActorApp
	Allowed        = ledger.Allowed
	Denied         = ledger.Denied
	Failed         = ledger.Failed
)

// The hash constructions (ledger's).
var (
	StateHash   = ledger.StateHash
	StateHashV2 = ledger.StateHashV2
	HistoryLeaf = ledger.HistoryLeaf
	HistoryRoot = ledger.HistoryRoot
	EncodeEntry = ledger.EncodeEntry
	EntryHash   = ledger.EntryHash
	Chain       = ledger.Chain
	VerifyChain = ledger.VerifyChain
)

// ChainHash returns what the Anchors contract stores for the batch:
// keccak256(abi.encode(logRoot, fromSeq, count, stateRoot)), every field
// a 32-byte word (the integers big-endian, left-padded).
func (a Anchor) ChainHash() [32]byte {
	var buf [128]byte
	copy(buf[0:32], a.LogRoot[:])
	binary.BigEndian.PutUint64(buf[56:64], a.LogFrom)
	binary.BigEndian.PutUint64(buf[88:96], a.LogCount)
	copy(buf[96:128], a.StateRoot[:])
	h := sha3.NewLegacyKeccak256()
	h.Write(buf[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// ValidateEntry reports ErrInvalid if an entry to append is malformed. It
// does not look at Seq, Prev or Hash, which the store assigns.
func ValidateEntry(e LogEntry) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("log entry: "+format+": %w", append(args, ErrInvalid)...)
	}
	if !e.ActorKind.Valid() {
		return fail("actor kind %d", e.ActorKind)
	}
	if !e.Outcome.Valid() {
		return fail("outcome %d", e.Outcome)
	}
	if e.Purpose != 0 && !e.Purpose.Valid() {
		return fail("purpose %d", e.Purpose)
	}
	if e.Action == "" {
		return fail("empty action")
	}
	if len(e.Resources) > MaxLogResources {
		return fail("%d resources", len(e.Resources))
	}
	for _, s := range append([]string{e.ActorID, e.Action, e.PatientID, e.Detail}, e.Resources...) {
		if len(s) > MaxLogString || !utf8.ValidString(s) {
			return fail("string too long or not UTF-8")
		}
	}
	return nil
}

// VerifyLog reads the whole access log and verifies its chain, then checks
// it ends at the stored head. It returns the verified head.
func VerifyLog(ctx context.Context, l AccessLog) (LogHead, error) {
	const page = 1000
	var head LogHead
	for {
		entries, err := l.LogRange(ctx, head.Next, page)
		if err != nil {
			return head, fmt.Errorf("verify log: %w", err)
		}
		if head, err = VerifyChain(head, entries); err != nil {
			return head, fmt.Errorf("verify log: %w", err)
		}
		if len(entries) < page {
			break
		}
	}
	stored, err := l.LogHead(ctx)
	if err != nil {
		return head, fmt.Errorf("verify log: %w", err)
	}
	if stored != head {
		return head, fmt.Errorf("verify log: the log has %d entries but the head says %d: %w", head.Next, stored.Next, ErrTampered)
	}
	return head, nil
}
