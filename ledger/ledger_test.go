package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != string(b) {
		t.Fatalf("%s differs from what the code computes now:\n%s", path, b)
	}
}

type stateVector struct {
	Name    string     `json:"name"`
	Entries []stateRow `json:"entries"`
	Hash    string     `json:"hash"`
}

type stateRow struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Version int64  `json:"version"`
	Raw     string `json:"raw"`
	SHA256  string `json:"sha256"`
}

// TestStateHashGolden pins the records-state hash: a client computes it from
// the resources it fetched and compares it with the anchored leaf.
func TestStateHashGolden(t *testing.T) {
	cases := []struct {
		name string
		rows []stateRow
	}{
		{"empty", nil},
		{"one patient", []stateRow{{Type: "Patient", ID: "p1", Version: 1, Raw: `{"resourceType":"Patient","id":"p1"}`}}},
		{"unsorted input", []stateRow{
			{Type: "Observation", ID: "o2", Version: 3, Raw: `{"resourceType":"Observation","id":"o2","status":"final"}`},
			{Type: "Condition", ID: "c1", Version: 1, Raw: `{"resourceType":"Condition","id":"c1"}`},
			{Type: "Observation", ID: "o10", Version: 1, Raw: `{"resourceType":"Observation","id":"o10"}`},
			{Type: "Patient", ID: "p1", Version: 2, Raw: `{"resourceType":"Patient","id":"p1","active":true}`},
		}},
	}
	var vectors []stateVector
	for _, c := range cases {
		var entries []StateEntry
		for i, r := range c.rows {
			sum := sha256.Sum256([]byte(r.Raw))
			c.rows[i].SHA256 = hex.EncodeToString(sum[:])
			entries = append(entries, StateEntry{Type: r.Type, ID: r.ID, Version: r.Version, SHA256: sum})
		}
		h := StateHash(entries)
		// The order of the input must not matter.
		rev := make([]StateEntry, len(entries))
		for i := range entries {
			rev[len(entries)-1-i] = entries[i]
		}
		if StateHash(rev) != h {
			t.Fatalf("%s: hash depends on input order", c.name)
		}
		vectors = append(vectors, stateVector{Name: c.name, Entries: c.rows, Hash: "0x" + hex.EncodeToString(h[:])})
	}
	golden(t, "records-state-v1.json", vectors)
}

func sampleLog() []LogEntry {
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 123456000, time.UTC)
	return []LogEntry{
		{Time: t0, ActorKind: ActorSystem, ActorID: "import", Action: "import", PatientID: "p1",
			Resources: []string{"Patient/p1", "Observation/o1"}, Outcome: Allowed},
		{Time: t0.Add(time.Second), ActorKind: ActorPatient, ActorID: "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266",
			Action: "everything", PatientID: "p1", Outcome: Allowed},
		{Time: t0.Add(2 * time.Second), ActorKind: ActorGrantee, ActorID: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
			Purpose: access.Treatment, Action: "read", PatientID: "p1", Resources: []string{"Observation/o1/_history/1"}, Outcome: Allowed},
		{Time: t0.Add(3 * time.Second), ActorKind: ActorAnonymous, ActorID: "0x0badc0de", Purpose: access.Research,
			Action: "search", PatientID: "p1", Outcome: Denied, Detail: "grant expired"},
	}
}

type logVector struct {
	Seq      uint64   `json:"seq"`
	Time     string   `json:"time"`
	Kind     uint8    `json:"actorKind"`
	Actor    string   `json:"actorId"`
	Purpose  uint8    `json:"purpose"`
	Action   string   `json:"action"`
	Patient  string   `json:"patientId"`
	Res      []string `json:"resources"`
	Outcome  uint8    `json:"outcome"`
	Detail   string   `json:"detail"`
	Encoding string   `json:"encoding"`
	Prev     string   `json:"prev"`
	Hash     string   `json:"hash"`
}

// TestLogChainGolden pins the canonical entry encoding and the chain.
func TestLogChainGolden(t *testing.T) {
	entries := sampleLog()
	head := Chain(LogHead{}, entries)
	if head.Next != 4 || head.Hash != entries[3].Hash {
		t.Fatalf("head %+v", head)
	}
	var vectors []logVector
	for _, e := range entries {
		vectors = append(vectors, logVector{
			Seq: e.Seq, Time: e.Time.Format(time.RFC3339Nano), Kind: uint8(e.ActorKind), Actor: e.ActorID,
			Purpose: uint8(e.Purpose), Action: e.Action, Patient: e.PatientID, Res: e.Resources,
			Outcome: uint8(e.Outcome), Detail: e.Detail, Encoding: hex.EncodeToString(EncodeEntry(e)),
			Prev: hex.EncodeToString(e.Prev[:]), Hash: hex.EncodeToString(e.Hash[:]),
		})
	}
	golden(t, "access-log-v1.json", vectors)
}

// TestVerifyChainDetectsTampering edits one field of one entry at a time.
func TestVerifyChainDetectsTampering(t *testing.T) {
	good := sampleLog()
	Chain(LogHead{}, good)
	if _, err := VerifyChain(LogHead{}, good); err != nil {
		t.Fatal(err)
	}
	tamper := map[string]func(l []LogEntry) []LogEntry{
		"time":      func(l []LogEntry) []LogEntry { l[1].Time = l[1].Time.Add(time.Microsecond); return l },
		"actor":     func(l []LogEntry) []LogEntry { l[1].ActorID = "0xattacker"; return l },
		"kind":      func(l []LogEntry) []LogEntry { l[2].ActorKind = ActorStaff; return l },
		"purpose":   func(l []LogEntry) []LogEntry { l[2].Purpose = access.Emergency; return l },
		"action":    func(l []LogEntry) []LogEntry { l[0].Action = "read"; return l },
		"patient":   func(l []LogEntry) []LogEntry { l[3].PatientID = "p2"; return l },
		"resources": func(l []LogEntry) []LogEntry { l[0].Resources = l[0].Resources[:1]; return l },
		"outcome":   func(l []LogEntry) []LogEntry { l[3].Outcome = Allowed; return l },
		"detail":    func(l []LogEntry) []LogEntry { l[3].Detail = ""; return l },
		"deleted":   func(l []LogEntry) []LogEntry { return append(l[:1], l[2:]...) },
		"swapped":   func(l []LogEntry) []LogEntry { l[1], l[2] = l[2], l[1]; return l },
		"rehashed":  func(l []LogEntry) []LogEntry { l[1].Detail = "x"; l[1].Hash = EntryHash(l[1].Prev, l[1]); return l },
		// Moving a string boundary must change the encoding.
		"boundary": func(l []LogEntry) []LogEntry { l[0].Resources = []string{"Patient/p1Observation/o1"}; return l },
	}
	for name, f := range tamper {
		t.Run(name, func(t *testing.T) {
			l := f(append([]LogEntry(nil), sampleLogChained()...))
			if _, err := VerifyChain(LogHead{}, l); !errors.Is(err, ErrTampered) {
				t.Fatalf("not detected: %v", err)
			}
		})
	}
}

func sampleLogChained() []LogEntry {
	l := sampleLog()
	Chain(LogHead{}, l)
	return l
}

type historyVector struct {
	Seq     uint64 `json:"seq"`
	Type    string `json:"type"`
	ID      string `json:"id"`
	Version int64  `json:"version"`
	Raw     string `json:"raw"`
	SHA256  string `json:"sha256"`
	Leaf    string `json:"leafHash"`
}

type stateV2Vector struct {
	History     []historyVector `json:"history"`
	HistorySize uint64          `json:"historySize"`
	HistoryRoot string          `json:"historyRoot"`
	Log         []logLink       `json:"log"`
	LogThrough  uint64          `json:"logThrough"`
	LogCount    uint64          `json:"logCount"`
	LogHead     string          `json:"logHead"`
	State       string          `json:"state"`
}

type logLink struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"entryHash"`
	Head string `json:"head"`
}

// TestStateV2Golden pins the history leaves and root, the patient log
// commitment and the anchored state hash v2: a client recomputes all three
// from what the gateway serves and compares them with the anchored leaf.
func TestStateV2Golden(t *testing.T) {
	rows := []stateRow{
		{Type: "Patient", ID: "p1", Version: 1, Raw: `{"resourceType":"Patient","id":"p1"}`},
		{Type: "Observation", ID: "o1", Version: 1, Raw: `{"resourceType":"Observation","id":"o1","status":"preliminary"}`},
		{Type: "Observation", ID: "o1", Version: 2, Raw: `{"resourceType":"Observation","id":"o1","status":"final"}`},
		{Type: "Condition", ID: "c1", Version: 1, Raw: `{"resourceType":"Condition","id":"c1"}`},
		{Type: "Patient", ID: "p1", Version: 2, Raw: `{"resourceType":"Patient","id":"p1","active":true}`},
	}
	var v stateV2Vector
	var entries []HistoryEntry
	for i, r := range rows {
		e := HistoryEntry{Seq: uint64(i + 1), Type: r.Type, ID: r.ID, Version: r.Version, SHA256: sha256.Sum256([]byte(r.Raw))}
		entries = append(entries, e)
		leaf := HistoryLeaf(e)
		v.History = append(v.History, historyVector{Seq: e.Seq, Type: e.Type, ID: e.ID, Version: e.Version, Raw: r.Raw,
			SHA256: hex.EncodeToString(e.SHA256[:]), Leaf: leaf.Hex()})
	}
	h, err := HistoryRoot(entries)
	if err != nil || h.Size != 5 {
		t.Fatalf("history %+v %v", h, err)
	}
	v.HistorySize, v.HistoryRoot = h.Size, hex.EncodeToString(h.Root[:])
	c := LogCommitment{}
	for _, e := range sampleLogChained() {
		c = c.Extend(e.Seq, e.Hash)
		v.Log = append(v.Log, logLink{Seq: e.Seq, Hash: hex.EncodeToString(e.Hash[:]), Head: hex.EncodeToString(c.Head[:])})
	}
	c.Through = 4
	v.LogThrough, v.LogCount, v.LogHead = c.Through, c.Count, hex.EncodeToString(c.Head[:])
	st := StateHashV2(h, c)
	v.State = "0x" + hex.EncodeToString(st[:])
	// Every part of the leaf matters.
	for name, other := range map[string][32]byte{
		"history size": StateHashV2(History{Size: 4, Root: h.Root}, c),
		"history root": StateHashV2(History{Size: 5}, c),
		"log through":  StateHashV2(h, LogCommitment{Through: 5, Count: c.Count, Head: c.Head}),
		"log count":    StateHashV2(h, LogCommitment{Through: 4, Count: 3, Head: c.Head}),
		"log head":     StateHashV2(h, LogCommitment{Through: 4, Count: 4}),
	} {
		if other == st {
			t.Errorf("the state ignores the %s", name)
		}
	}
	golden(t, "records-state-v2.json", v)
}

// TestHistoryRootRefusesGaps: the history is changes 1, 2, … without a gap,
// a repeat or a reordering.
func TestHistoryRootRefusesGaps(t *testing.T) {
	e := func(seq uint64) HistoryEntry {
		return HistoryEntry{Seq: seq, Type: "Observation", ID: "o", Version: int64(seq)}
	}
	if h, err := HistoryRoot(nil); err != nil || h.Size != 0 {
		t.Fatalf("empty history: %+v %v", h, err)
	}
	for name, seqs := range map[string][]uint64{
		"starts at 2": {2, 3},
		"gap":         {1, 2, 4},
		"repeat":      {1, 1, 2},
		"reordered":   {2, 1},
	} {
		var es []HistoryEntry
		for _, s := range seqs {
			es = append(es, e(s))
		}
		if _, err := HistoryRoot(es); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
