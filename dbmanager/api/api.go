// Package api holds the wire types a gateway's clients decode: access-log
// entries with their anchor inclusion proofs, and the records-state answer.
// Entries carry every field of the canonical encoding, so a client can
// recompute each entry's hash (store.EntryHash) and check it against the
// anchored root on chain.
package api

import (
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

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

// FromStore converts a stored entry.
func FromStore(e store.LogEntry, p *LogProof) LogEntry {
	return LogEntry{
		Seq: e.Seq, TimeMicro: e.Time.UnixMicro(), ActorKind: uint8(e.ActorKind), Actor: e.ActorID,
		Purpose: uint8(e.Purpose), Action: e.Action, Patient: e.PatientID, Resources: e.Resources,
		Outcome: uint8(e.Outcome), Detail: e.Detail, Prev: e.Prev, Hash: e.Hash, Anchor: p,
		Kind: e.ActorKind.String(), Decision: e.Outcome.String(),
	}
}

// Store converts back, for hashing.
func (e LogEntry) Store() store.LogEntry {
	return store.LogEntry{
		Seq: e.Seq, Time: time.UnixMicro(e.TimeMicro).UTC(), ActorKind: store.ActorKind(e.ActorKind), ActorID: e.Actor,
		Purpose: access.Purpose(e.Purpose), Action: e.Action, PatientID: e.Patient, Resources: e.Resources,
		Outcome: store.Decision(e.Outcome), Detail: e.Detail, Prev: e.Prev, Hash: e.Hash,
	}
}

// LogPage is the answer of GET /patient/log.
type LogPage struct {
	Entries []LogEntry `json:"entries"`
}

// StateAnchor places the patient's records-state leaf in the latest
// published records-state tree.
type StateAnchor struct {
	Batch     uint64        `json:"batch"`
	StateRoot common.Hash   `json:"stateRoot"`
	State     common.Hash   `json:"state"`
	Index     int           `json:"index"`
	Count     int           `json:"count"`
	Proof     []common.Hash `json:"proof"`
}

// State is the answer of GET /patient/state.
type State struct {
	Hash   common.Hash  `json:"hash"` // store.StateHash of the current record set
	Seq    uint64       `json:"seq"`
	Count  int          `json:"count"`
	Dirty  bool         `json:"dirty"` // changed since the latest anchor
	Anchor *StateAnchor `json:"anchor"`
}
