// Package ceremony runs and checks the multi-party Groth16 trusted setup of
// MedRec-ZK with gnark's mpcsetup (the MPC of eprint 2017/1050).
//
// A ceremony lives in one directory that every participant can read:
//
//	ceremony.json                    the state: who contributed what, in order, and the beacons
//	phase1/NNNN.bin                  powers-of-tau contributions (circuit independent)
//	srs.bin                          phase 1 sealed with the first beacon
//	phase2/<circuit>/0000.bin        the circuit-specific starting point (recomputable)
//	phase2/<circuit>/NNNN.bin        circuit-specific contributions
//
// Steps: Init; each contributor runs Contribute (phase 1); the coordinator
// runs Seal with a public random beacon chosen after the last contribution;
// each contributor runs Contribute again (phase 2, every circuit at once); the
// coordinator runs Finalize with a second beacon, which writes the key
// directory. Anyone can run Verify on the directory: it replays every
// contribution's proof of knowledge and update check from the files alone and
// compares the result with the keys. The keys are sound if at least one
// contributor was honest and destroyed its randomness (Contribute keeps it only
// in memory and never writes it).
//
// Phase 1 is sized for the largest circuit; smaller circuits use its prefix
// (the first 2n−1 powers of τ in G1 and n in G2 are a valid SRS of domain n),
// so each circuit proves with its own, smaller FFT domain.
package ceremony

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"

	"github.com/consensys/gnark/backend/groth16"
	"github.com/consensys/gnark/backend/groth16/bn254/mpcsetup"
	cs "github.com/consensys/gnark/constraint/bn254"

	"github.com/medrec-zk/medrec/internal/atomicfile"
	"github.com/medrec-zk/medrec/prover"
)

// Errors returned by this package.
var (
	ErrState        = errors.New("ceremony is not in the right phase for this step")
	ErrTranscript   = errors.New("ceremony transcript does not verify")
	ErrExists       = errors.New("a ceremony already exists in this directory")
	ErrName         = errors.New("contributor names are 1-64 letters, digits, '.', '_' or '-'")
	ErrBeacon       = errors.New("the beacon must be at least 16 bytes of public randomness, in hex")
	ErrKeysMismatch = errors.New("keys differ from what the transcript produces")
)

const (
	stateFile    = "ceremony.json"
	srsFile      = "srs.bin"
	stateVersion = 1
)

// Phase of a ceremony.
type Phase string

// Phases, in order.
const (
	Phase1 Phase = "phase1"
	Phase2 Phase = "phase2"
	Done   Phase = "done"
)

// Contribution records one file of the transcript.
type Contribution struct {
	Index       int    `json:"index"`
	Contributor string `json:"contributor"`
	File        string `json:"file"`
	SHA256      string `json:"sha256"`
}

// CircuitInfo pins the constraint system a ceremony is for.
type CircuitInfo struct {
	Circuit prover.Circuit `json:"circuit"`
	R1CS    string         `json:"r1csSha256"`
	Domain  uint64         `json:"domain"`
}

// State is ceremony.json.
type State struct {
	Version  int                               `json:"version"`
	Phase    Phase                             `json:"phase"`
	Size     uint64                            `json:"phase1Size"`
	Circuits []CircuitInfo                     `json:"circuits"`
	Phase1   []Contribution                    `json:"phase1"`
	Beacon1  string                            `json:"beacon1,omitempty"`
	SRS      string                            `json:"srsSha256,omitempty"`
	Phase2   map[prover.Circuit][]Contribution `json:"phase2,omitempty"`
	Beacon2  string                            `json:"beacon2,omitempty"`
}

// Ceremony is a ceremony directory.
type Ceremony struct {
	dir   string
	state State
}

// Dir returns the ceremony directory.
func (c *Ceremony) Dir() string { return c.dir }

// State returns a copy of the ceremony's state.
func (c *Ceremony) State() State { return c.state }

// Init starts a ceremony in dir for every circuit of prover.Circuits(),
// and the optional circuits of extra (prover.OptionalCircuits: the gateways'
// batch-insertion circuit, whose 2^17 domain sizes phase 1 sixteen times
// larger than the patients' circuits alone).
func Init(dir string, extra ...prover.Circuit) (*Ceremony, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return nil, fmt.Errorf("%s: %w", dir, ErrExists)
	}
	for _, c := range extra {
		if !slices.Contains(prover.OptionalCircuits(), c) {
			return nil, fmt.Errorf("ceremony: %q is not an optional circuit: %w", string(c), prover.ErrUnknownCircuit)
		}
	}
	st := State{Version: stateVersion, Phase: Phase1, Phase2: map[prover.Circuit][]Contribution{}}
	for _, circuit := range append(prover.Circuits(), extra...) {
		comp, err := prover.Compile(circuit)
		if err != nil {
			return nil, err
		}
		st.Circuits = append(st.Circuits, CircuitInfo{Circuit: circuit, R1CS: comp.Digest, Domain: comp.Domain()})
		st.Size = max(st.Size, comp.Domain())
	}
	c := &Ceremony{dir: dir, state: st}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ceremony: %w", err)
	}
	return c, c.save()
}

// Open reads the ceremony in dir and checks it is for the circuits this binary compiles.
func Open(dir string) (*Ceremony, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("ceremony: %w", err)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTranscript, stateFile, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%w: state version %d", ErrTranscript, st.Version)
	}
	for _, ci := range st.Circuits {
		comp, err := prover.Compile(ci.Circuit)
		if err != nil {
			return nil, err
		}
		if comp.Digest != ci.R1CS {
			return nil, fmt.Errorf("%w: %s: ceremony is for constraint system %.12s…, this binary compiles %.12s…",
				prover.ErrKeyMismatch, ci.Circuit, ci.R1CS, comp.Digest)
		}
	}
	if st.Phase2 == nil {
		st.Phase2 = map[prover.Circuit][]Contribution{}
	}
	return &Ceremony{dir: dir, state: st}, nil
}

func (c *Ceremony) save() error {
	raw, err := json.MarshalIndent(c.state, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(c.dir, stateFile), append(raw, '\n'), 0o644)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Receipt tells a contributor what to publish: the digest of the file it
// added, which later contributions chain from.
type Receipt struct {
	Phase  Phase
	Files  []Contribution
	Digest string
}

// Contribute adds name's contribution to the current phase. Its randomness is
// drawn from crypto/rand inside gnark and never leaves memory. Before
// contributing it checks the contribution it builds on.
func (c *Ceremony) Contribute(name string) (Receipt, error) {
	if !nameRE.MatchString(name) {
		return Receipt{}, ErrName
	}
	switch c.state.Phase {
	case Phase1:
		return c.contribute1(name)
	case Phase2:
		return c.contribute2(name)
	}
	return Receipt{}, fmt.Errorf("%w: ceremony is %s", ErrState, c.state.Phase)
}

func (c *Ceremony) contribute1(name string) (Receipt, error) {
	prev := mpcsetup.NewPhase1(c.state.Size)
	if n := len(c.state.Phase1); n > 0 {
		last := new(mpcsetup.Phase1)
		if err := c.readContribution(c.state.Phase1[n-1], last); err != nil {
			return Receipt{}, err
		}
		if n > 1 {
			before := new(mpcsetup.Phase1)
			if err := c.readContribution(c.state.Phase1[n-2], before); err != nil {
				return Receipt{}, err
			}
			prev = before
		}
		if err := prev.Verify(last); err != nil {
			return Receipt{}, fmt.Errorf("%w: phase 1 contribution %d (%s): %v", ErrTranscript, n, c.state.Phase1[n-1].Contributor, err)
		}
		prev = last
	}
	prev.Contribute()
	entry, err := c.writeContribution(filepath.Join("phase1", fmt.Sprintf("%04d.bin", len(c.state.Phase1)+1)), len(c.state.Phase1)+1, name, prev)
	if err != nil {
		return Receipt{}, err
	}
	c.state.Phase1 = append(c.state.Phase1, entry)
	if err := c.save(); err != nil {
		return Receipt{}, err
	}
	return Receipt{Phase: Phase1, Files: []Contribution{entry}, Digest: entry.SHA256}, nil
}

func (c *Ceremony) contribute2(name string) (Receipt, error) {
	r := Receipt{Phase: Phase2}
	added := map[prover.Circuit]Contribution{}
	for _, ci := range c.state.Circuits {
		chain := c.state.Phase2[ci.Circuit]
		last := new(mpcsetup.Phase2)
		if err := c.readContribution(chain[len(chain)-1], last); err != nil {
			return Receipt{}, err
		}
		if len(chain) > 1 {
			before := new(mpcsetup.Phase2)
			if err := c.readContribution(chain[len(chain)-2], before); err != nil {
				return Receipt{}, err
			}
			if err := before.Verify(last); err != nil {
				return Receipt{}, fmt.Errorf("%w: %s phase 2 contribution %d (%s): %v", ErrTranscript, ci.Circuit, len(chain)-1, chain[len(chain)-1].Contributor, err)
			}
		}
		last.Contribute()
		entry, err := c.writeContribution(filepath.Join("phase2", string(ci.Circuit), fmt.Sprintf("%04d.bin", len(chain))), len(chain), name, last)
		if err != nil {
			return Receipt{}, err
		}
		added[ci.Circuit] = entry
		r.Files = append(r.Files, entry)
	}
	// Record all circuits at once, so a crash never leaves one circuit a contribution ahead.
	for circuit, e := range added {
		c.state.Phase2[circuit] = append(c.state.Phase2[circuit], e)
	}
	if err := c.save(); err != nil {
		return Receipt{}, err
	}
	r.Digest = digestOf(r.Files)
	return r, nil
}

func digestOf(cs []Contribution) string {
	h := sha256.New()
	for _, c := range cs {
		io.WriteString(h, c.File+":"+c.SHA256+"\n")
	}
	return hex.EncodeToString(h.Sum(nil))
}

func parseBeacon(beacon string) ([]byte, error) {
	b, err := hex.DecodeString(beacon)
	if err != nil || len(b) < 16 {
		return nil, ErrBeacon
	}
	return b, nil
}

// Seal closes phase 1 with a public random beacon (hex, at least 16 bytes,
// announced in advance and only known after the last contribution, e.g. a
// drand round or a future block hash), verifies every phase 1 contribution,
// and prepares phase 2 for every circuit.
func (c *Ceremony) Seal(beacon string) error {
	if c.state.Phase != Phase1 {
		return fmt.Errorf("%w: ceremony is %s", ErrState, c.state.Phase)
	}
	if len(c.state.Phase1) == 0 {
		return fmt.Errorf("%w: phase 1 has no contribution", ErrState)
	}
	b, err := parseBeacon(beacon)
	if err != nil {
		return err
	}
	commons, err := c.verifyPhase1(b)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := commons.WriteTo(&buf); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(c.dir, srsFile), buf.Bytes(), 0o644); err != nil {
		return err
	}
	sum := sha256.Sum256(buf.Bytes())
	c.state.SRS = hex.EncodeToString(sum[:])
	c.state.Beacon1 = beacon
	for _, ci := range c.state.Circuits {
		r1cs, err := r1csOf(ci.Circuit)
		if err != nil {
			return err
		}
		sub := truncate(commons, ci.Domain)
		var p mpcsetup.Phase2
		p.Initialize(r1cs, &sub)
		entry, err := c.writeContribution(filepath.Join("phase2", string(ci.Circuit), "0000.bin"), 0, "initial", &p)
		if err != nil {
			return err
		}
		c.state.Phase2[ci.Circuit] = []Contribution{entry}
	}
	c.state.Phase = Phase2
	return c.save()
}

// Finalize closes phase 2 with a second beacon, verifies every phase 2
// contribution and writes the keys to keyDir with origin recorded in their
// manifest.
func (c *Ceremony) Finalize(beacon, keyDir, origin string) (*prover.Manifest, error) {
	if c.state.Phase != Phase2 {
		return nil, fmt.Errorf("%w: ceremony is %s", ErrState, c.state.Phase)
	}
	for _, ci := range c.state.Circuits {
		if len(c.state.Phase2[ci.Circuit]) < 2 {
			return nil, fmt.Errorf("%w: phase 2 of %s has no contribution", ErrState, ci.Circuit)
		}
	}
	b, err := parseBeacon(beacon)
	if err != nil {
		return nil, err
	}
	commons, err := c.readSRS()
	if err != nil {
		return nil, err
	}
	keys, err := c.verifyPhase2(commons, b)
	if err != nil {
		return nil, err
	}
	c.state.Beacon2 = beacon
	c.state.Phase = Done
	m, err := prover.WriteKeyDir(keyDir, origin, c.TranscriptDigest(), keys)
	if err != nil {
		return nil, err
	}
	return m, c.save()
}

// TranscriptDigest is a digest of the whole transcript: every file in order
// and both beacons. The keys' manifest records it.
func (c *Ceremony) TranscriptDigest() string {
	all := append([]Contribution{}, c.state.Phase1...)
	all = append(all, Contribution{File: "beacon1", SHA256: c.state.Beacon1})
	for _, ci := range c.state.Circuits {
		all = append(all, c.state.Phase2[ci.Circuit]...)
	}
	all = append(all, Contribution{File: "beacon2", SHA256: c.state.Beacon2})
	return digestOf(all)
}

// Report is what Verify checked.
type Report struct {
	Phase1Contributors []string
	Phase2Contributors map[prover.Circuit][]string
	Transcript         string
}

// Verify re-checks a finished ceremony from its files alone, as an outside
// party would: every phase 1 and phase 2 contribution's proofs, the beacons,
// and — when keyDir is not empty — that the keys there are exactly what the
// transcript produces.
func Verify(dir, keyDir string) (Report, error) {
	c, err := Open(dir)
	if err != nil {
		return Report{}, err
	}
	st := c.state
	if st.Phase != Done {
		return Report{}, fmt.Errorf("%w: ceremony is %s", ErrState, st.Phase)
	}
	b1, err := parseBeacon(st.Beacon1)
	if err != nil {
		return Report{}, err
	}
	b2, err := parseBeacon(st.Beacon2)
	if err != nil {
		return Report{}, err
	}
	transcript := c.TranscriptDigest()
	var have *prover.KeySet
	if keyDir != "" {
		// Cheap checks first: keys made from another transcript are refused
		// before the expensive replay.
		if have, err = prover.LoadKeyDir(keyDir, true); err != nil {
			return Report{}, err
		}
		if have.Manifest.Transcript != transcript {
			return Report{}, fmt.Errorf("%w: keys name transcript %.12s…, this one is %.12s…", ErrKeysMismatch, have.Manifest.Transcript, transcript)
		}
		// The key set holds exactly the ceremony's circuits: none missing,
		// and no optional circuit's keys from somewhere else.
		for _, c := range prover.OptionalCircuits() {
			if have.Has(c) && !slices.ContainsFunc(st.Circuits, func(ci CircuitInfo) bool { return ci.Circuit == c }) {
				return Report{}, fmt.Errorf("%w: the keys hold %s keys this ceremony did not make", ErrKeysMismatch, c)
			}
		}
		for _, ci := range st.Circuits {
			if !have.Has(ci.Circuit) {
				return Report{}, fmt.Errorf("%w: the keys lack the ceremony's %s keys", ErrKeysMismatch, ci.Circuit)
			}
		}
	}
	commons, err := c.verifyPhase1(b1)
	if err != nil {
		return Report{}, err
	}
	keys, err := c.verifyPhase2(commons, b2)
	if err != nil {
		return Report{}, err
	}
	r := Report{Phase2Contributors: map[prover.Circuit][]string{}, Transcript: transcript}
	for _, e := range st.Phase1 {
		r.Phase1Contributors = append(r.Phase1Contributors, e.Contributor)
	}
	for _, ci := range st.Circuits {
		for _, e := range st.Phase2[ci.Circuit][1:] {
			r.Phase2Contributors[ci.Circuit] = append(r.Phase2Contributors[ci.Circuit], e.Contributor)
		}
	}
	if have == nil {
		return r, nil
	}
	for _, ci := range st.Circuits {
		hk, _ := have.Keys(ci.Circuit) // present: checked before the replay
		if groth16VKDiffers(hk.VK, keys[ci.Circuit].VK) || hk.PK.IsDifferent(keys[ci.Circuit].PK) {
			return r, fmt.Errorf("%w: %s", ErrKeysMismatch, ci.Circuit)
		}
	}
	return r, nil
}

func groth16VKDiffers(a, b groth16.VerifyingKey) bool {
	return prover.VerifyingKeyHash(a) != prover.VerifyingKeyHash(b)
}

func (c *Ceremony) verifyPhase1(beacon []byte) (mpcsetup.SrsCommons, error) {
	contribs := make([]*mpcsetup.Phase1, len(c.state.Phase1))
	for i, e := range c.state.Phase1 {
		contribs[i] = new(mpcsetup.Phase1)
		if err := c.readContribution(e, contribs[i]); err != nil {
			return mpcsetup.SrsCommons{}, err
		}
	}
	commons, err := mpcsetup.VerifyPhase1(c.state.Size, beacon, contribs...)
	if err != nil {
		return mpcsetup.SrsCommons{}, fmt.Errorf("%w: phase 1: %v", ErrTranscript, err)
	}
	return commons, nil
}

func (c *Ceremony) verifyPhase2(commons mpcsetup.SrsCommons, beacon []byte) (map[prover.Circuit]*prover.Keys, error) {
	keys := map[prover.Circuit]*prover.Keys{}
	for _, ci := range c.state.Circuits {
		comp, err := prover.Compile(ci.Circuit)
		if err != nil {
			return nil, err
		}
		chain := c.state.Phase2[ci.Circuit]
		contribs := make([]*mpcsetup.Phase2, 0, len(chain)-1)
		for _, e := range chain[1:] { // chain[0] is recomputed by VerifyPhase2, not trusted
			p := new(mpcsetup.Phase2)
			if err := c.readContribution(e, p); err != nil {
				return nil, err
			}
			contribs = append(contribs, p)
		}
		// Links between contributions first: cheap, and they catch most tampering
		// before the expensive recomputation of the starting point below.
		for i := 1; i < len(contribs); i++ {
			if err := contribs[i-1].Verify(contribs[i]); err != nil {
				return nil, fmt.Errorf("%w: %s phase 2 contribution %d (%s): %v", ErrTranscript, ci.Circuit, i+1, chain[i+1].Contributor, err)
			}
		}
		sub := truncate(commons, ci.Domain)
		pk, vk, err := mpcsetup.VerifyPhase2(comp.CS.(*cs.R1CS), &sub, beacon, contribs...)
		if err != nil {
			return nil, fmt.Errorf("%w: %s phase 2: %v", ErrTranscript, ci.Circuit, err)
		}
		keys[ci.Circuit] = &prover.Keys{Compiled: comp, PK: pk, VK: vk}
	}
	return keys, nil
}

func (c *Ceremony) readSRS() (mpcsetup.SrsCommons, error) {
	var commons mpcsetup.SrsCommons
	raw, err := os.ReadFile(filepath.Join(c.dir, srsFile))
	if err != nil {
		return commons, fmt.Errorf("%w: %v", ErrTranscript, err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != c.state.SRS {
		return commons, fmt.Errorf("%w: %s does not match its digest", ErrTranscript, srsFile)
	}
	if _, err := commons.ReadFrom(bytes.NewReader(raw)); err != nil {
		return commons, fmt.Errorf("%w: %s: %v", ErrTranscript, srsFile, err)
	}
	return commons, nil
}

func r1csOf(circuit prover.Circuit) (*cs.R1CS, error) {
	comp, err := prover.Compile(circuit)
	if err != nil {
		return nil, err
	}
	return comp.CS.(*cs.R1CS), nil
}

// truncate returns the SRS of domain n contained in an SRS of a larger domain.
func truncate(c mpcsetup.SrsCommons, n uint64) mpcsetup.SrsCommons {
	var t mpcsetup.SrsCommons
	t.G1.Tau = c.G1.Tau[:2*n-1]
	t.G1.AlphaTau = c.G1.AlphaTau[:n]
	t.G1.BetaTau = c.G1.BetaTau[:n]
	t.G2.Tau = c.G2.Tau[:n]
	t.G2.Beta = c.G2.Beta
	return t
}

func (c *Ceremony) writeContribution(rel string, index int, name string, w io.WriterTo) (Contribution, error) {
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		return Contribution{}, fmt.Errorf("ceremony: encode %s: %w", rel, err)
	}
	if err := atomicfile.Write(filepath.Join(c.dir, rel), buf.Bytes(), 0o644); err != nil {
		return Contribution{}, err
	}
	sum := sha256.Sum256(buf.Bytes())
	return Contribution{Index: index, Contributor: name, File: rel, SHA256: hex.EncodeToString(sum[:])}, nil
}

func (c *Ceremony) readContribution(e Contribution, r io.ReaderFrom) error {
	raw, err := os.ReadFile(filepath.Join(c.dir, e.File))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTranscript, err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != e.SHA256 {
		return fmt.Errorf("%w: %s (contribution %d by %s) does not match the digest recorded in %s",
			ErrTranscript, e.File, e.Index, e.Contributor, stateFile)
	}
	if _, err := r.ReadFrom(bytes.NewReader(raw)); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrTranscript, e.File, err)
	}
	return nil
}
