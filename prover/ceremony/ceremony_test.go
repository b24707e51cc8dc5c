package ceremony

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/logger"
	"github.com/ethereum/go-ethereum/common"
	"github.com/rs/zerolog"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/zkhash"
)

func TestMain(m *testing.M) {
	logger.Set(zerolog.Nop())
	os.Exit(m.Run())
}

const (
	beacon1 = "6d65647265632d7a6b207465737420626561636f6e2031" // "medrec-zk test beacon 1"
	beacon2 = "6d65647265632d7a6b207465737420626561636f6e2032"
)

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestThreeContributorsFourthVerifies runs a whole ceremony with three
// contributors, then checks it as an outside party would, proves with the keys,
// and shows that tampering with any part of the transcript is caught.
func TestThreeContributorsFourthVerifies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a full ceremony")
	}
	dir := filepath.Join(t.TempDir(), "ceremony")
	keyDir := filepath.Join(t.TempDir(), "keys")

	c, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(dir); !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v", err)
	}
	if _, err := c.Finalize(beacon2, keyDir, "test"); !errors.Is(err, ErrState) {
		t.Fatalf("Finalize during phase 1: %v", err)
	}
	if err := c.Seal(beacon1); !errors.Is(err, ErrState) {
		t.Fatalf("Seal with no contribution: %v", err)
	}
	contributors := []string{"alice", "bob", "carol"}
	for _, name := range contributors {
		// Each contributor opens the directory afresh, as a separate party would.
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Contribute(name); err != nil {
			t.Fatalf("%s phase 1: %v", name, err)
		}
	}
	if _, err := c.Contribute("bad name!"); !errors.Is(err, ErrName) {
		t.Fatalf("bad name: %v", err)
	}
	c, _ = Open(dir)
	if err := c.Seal("00"); !errors.Is(err, ErrBeacon) {
		t.Fatalf("short beacon: %v", err)
	}
	if err := c.Seal(beacon1); err != nil {
		t.Fatal(err)
	}
	for _, name := range contributors {
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Contribute(name)
		if err != nil {
			t.Fatalf("%s phase 2: %v", name, err)
		}
		if len(r.Files) != len(prover.Circuits()) {
			t.Fatalf("phase 2 receipt has %d files", len(r.Files))
		}
	}
	c, _ = Open(dir)
	if _, err := c.Finalize(beacon2, keyDir, "test ceremony"); err != nil {
		t.Fatal(err)
	}

	// The fourth party: only the directory and the keys.
	report, err := Verify(dir, keyDir)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(report.Phase1Contributors) != 3 || len(report.Phase2Contributors[prover.Ownership]) != 3 {
		t.Fatalf("report: %+v", report)
	}

	// The keys prove and verify.
	ks, err := prover.LoadKeyDir(keyDir, true)
	if err != nil {
		t.Fatal(err)
	}
	p := prover.New(ks)
	s := zkhash.FromUint64(99)
	tree, _ := merkle.New([]fr.Element{zkhash.Commitment(zkhash.FromUint64(1)), zkhash.Commitment(s)})
	path, _ := tree.Proof(1)
	w := circuits.OwnershipWitness{Secret: s, Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, common.Address{1}, 0, big.NewInt(1337), common.Address{2})}
	proof, pub, err := p.ProveOwnership(w)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.VerifyOwnership(proof, pub); err != nil {
		t.Fatal(err)
	}

	t.Run("tampered phase 1 file", func(t *testing.T) {
		d := copyDir(t, dir)
		corrupt(t, filepath.Join(d, "phase1", "0002.bin"))
		if _, err := Verify(d, ""); !errors.Is(err, ErrTranscript) {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("tampered phase 2 file", func(t *testing.T) {
		d := copyDir(t, dir)
		corrupt(t, filepath.Join(d, "phase2", "ownership", "0003.bin"))
		if _, err := Verify(d, ""); !errors.Is(err, ErrTranscript) {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("contribution dropped", func(t *testing.T) {
		d := copyDir(t, dir)
		c, _ := Open(d)
		c.state.Phase1 = append(c.state.Phase1[:1], c.state.Phase1[2:]...) // bob's link removed
		c.save()
		if _, err := Verify(d, ""); !errors.Is(err, ErrTranscript) {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("different beacon", func(t *testing.T) {
		d := copyDir(t, dir)
		c, _ := Open(d)
		c.state.Beacon2 = beacon1
		c.save()
		if _, err := Verify(d, keyDir); !errors.Is(err, ErrKeysMismatch) {
			t.Fatalf("Verify: %v", err)
		}
	})
	t.Run("keys from elsewhere", func(t *testing.T) {
		if _, err := Verify(dir, filepath.Join("..", "devkeys")); !errors.Is(err, ErrKeysMismatch) {
			t.Fatalf("Verify against the dev keys: %v", err)
		}
	})
}

// corrupt rewrites a transcript file with one byte changed, keeping the
// recorded digest in step, as a cheating coordinator would.
func corrupt(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	for filepath.Base(dir) == "ownership" || filepath.Base(dir) == "entitlement" || filepath.Base(dir) == "phase1" || filepath.Base(dir) == "phase2" {
		dir = filepath.Dir(dir)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(dir, path)
	// Change a point of the parameters (well past the proofs at the start) to
	// another valid encoding is hard; flipping a byte makes it invalid or different.
	b[len(b)/2] ^= 0x01
	e, err := c.writeContribution(rel, 0, "tampered", rawWriter(b))
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.state.Phase1 {
		if c.state.Phase1[i].File == rel {
			c.state.Phase1[i].SHA256 = e.SHA256
		}
	}
	for k, chain := range c.state.Phase2 {
		for i := range chain {
			if chain[i].File == rel {
				c.state.Phase2[k][i].SHA256 = e.SHA256
			}
		}
	}
	if err := c.save(); err != nil {
		t.Fatal(err)
	}
}

type rawWriter []byte

func (r rawWriter) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r)
	return int64(n), err
}

// TestDevTranscriptProducesDevKeys replays the committed dev ceremony and
// checks the embedded dev keys are exactly its output: nobody swapped in keys
// made another way.
func TestDevTranscriptProducesDevKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("replays a ceremony")
	}
	r, err := Verify(filepath.Join("..", "devceremony"), filepath.Join("..", "devkeys"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Phase1Contributors) != 3 {
		t.Fatalf("dev ceremony has %d phase 1 contributors, want 3", len(r.Phase1Contributors))
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	if ks.Manifest.Transcript != r.Transcript {
		t.Fatal("embedded dev keys name another transcript")
	}
}

// TestRunLocalStopsBetweenSteps: a local ceremony cancelled during a step
// finishes that step, stops before the next and writes no key; its
// unfinished transcript stays for the caller to discard.
func TestRunLocalStopsBetweenSteps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ceremony")
	keyDir := filepath.Join(t.TempDir(), "keys")
	for name, l := range map[string]Local{
		"no contributor": {Origin: "test"},
		"bad name":       {Contributors: []string{"provider 1"}, Origin: "test"},
		"no origin":      {Contributors: []string{"a"}},
	} {
		if _, err := RunLocal(t.Context(), dir, keyDir, l); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("refused input left %s: %v", dir, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var steps []string
	_, err := RunLocal(ctx, dir, keyDir, Local{Contributors: []string{"a", "b"}, Origin: "test", Progress: func(s string) {
		steps = append(steps, s)
		if s == "phase 1, a contributes" {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "before phase 1, b contributes") {
		t.Fatalf("cancelled ceremony: %v", err)
	}
	if want := []string{"starting in " + dir, "phase 1, a contributes"}; !slices.Equal(steps, want) {
		t.Fatalf("steps %q, want %q", steps, want)
	}
	if _, err := os.Stat(filepath.Join(keyDir, prover.ManifestFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a cancelled ceremony wrote keys: %v", err)
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.State(); st.Phase != Phase1 || len(st.Phase1) != 1 || st.Phase1[0].Contributor != "a" {
		t.Fatalf("transcript after cancel: %+v", st)
	}
	if _, err := RunLocal(t.Context(), dir, keyDir, Local{Contributors: []string{"a"}, Origin: "test"}); !errors.Is(err, ErrExists) {
		t.Fatalf("a second local ceremony in the same directory: %v", err)
	}
}
