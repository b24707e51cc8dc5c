package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/sha3"
)

// Domain strings of the two hash constructions. A new encoding gets a new
// domain; old ones are never changed.
const (
	StateDomain = "medrec-records-state-v1"
	LogDomain   = "medrec-access-log-v1"
)

// StateEntry is what the records-state hash covers of one resource.
type StateEntry struct {
	Type    string
	ID      string
	Version int64
	SHA256  [32]byte
}

// StateHash returns the records-state hash of a set of current resource
// versions (see the package doc). It sorts a copy of entries by type, then
// id; the order of the argument does not matter.
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

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

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
