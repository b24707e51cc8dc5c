package ceremony

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestLocalWithInsertion: a ceremony asked for the optional insertion
// circuit sizes phase 1 for it and makes its keys with the others'; they
// prove a batch; the transcript verifies against them, and the same keys
// without the insertion circuit's are refused. About an hour on 2 cores
// (phase 1 of 2^17): run by `make ceremony-insertion`, not `make test`.
func TestLocalWithInsertion(t *testing.T) {
	if os.Getenv("MEDREC_CEREMONY_INSERTION") != "1" {
		t.Skip("a ceremony of 2^17 takes about an hour on 2 cores: make ceremony-insertion runs it")
	}
	dir := filepath.Join(t.TempDir(), "ceremony")
	keyDir := filepath.Join(t.TempDir(), "keys")
	began := time.Now()
	m, err := RunLocal(t.Context(), dir, keyDir, Local{Contributors: []string{"a", "b"}, Origin: "test", Extra: []prover.Circuit{prover.Insertion},
		Progress: func(s string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), s) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ceremony with insertion, 2 contributors: %s", time.Since(began).Round(time.Second))
	if m.Circuits[prover.Insertion] == nil {
		t.Fatal("the manifest names no insertion keys")
	}
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.State().Size != 1<<17 {
		t.Fatalf("phase 1 of size %d; want 2^17", c.State().Size)
	}
	ks, err := prover.LoadKeyDir(keyDir, true)
	if err != nil {
		t.Fatal(err)
	}
	leaves := []fr.Element{zkhash.FromUint64(5), zkhash.FromUint64(6), zkhash.FromUint64(7)}
	a, pub, err := circuits.InsertionWitness([]fr.Element{zkhash.FromUint64(4)}, leaves)
	if err != nil {
		t.Fatal(err)
	}
	p := prover.New(ks)
	proof, err := p.ProveInsertion(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.VerifyInsertion(proof, pub); err != nil {
		t.Fatalf("the ceremony's insertion keys: %v", err)
	}
	began = time.Now()
	if _, err := Verify(dir, keyDir); err != nil {
		t.Fatalf("verify: %v", err)
	}
	t.Logf("verified in %s", time.Since(began).Round(time.Second))

	// The same keys without the insertion circuit's: refused.
	lacking := filepath.Join(t.TempDir(), "lacking")
	if err := os.MkdirAll(lacking, 0o755); err != nil {
		t.Fatal(err)
	}
	keys := provertest.KeyMap(t, ks)
	delete(keys, prover.Insertion)
	if _, err := prover.WriteKeyDir(lacking, ks.Manifest.Origin, ks.Manifest.Transcript, keys); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir, lacking); !errors.Is(err, ErrKeysMismatch) {
		t.Fatalf("keys lacking the ceremony's insertion keys: %v", err)
	}
}

// TestForeignInsertionKeys: a mandatory circuit is no optional extra, and
// the dev transcript (made without the insertion circuit) refuses the dev
// keys with insertion keys added — before any replay.
func TestForeignInsertionKeys(t *testing.T) {
	if _, err := Init(filepath.Join(t.TempDir(), "x"), prover.Ownership); !errors.Is(err, prover.ErrUnknownCircuit) {
		t.Fatalf("a mandatory circuit as an extra: %v", err)
	}
	dev, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	keys := provertest.DevWithInsertion(t)
	dir := t.TempDir()
	if _, err := prover.WriteKeyDir(dir, dev.Manifest.Origin, dev.Manifest.Transcript, keys); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(filepath.Join("..", "devceremony"), dir); !errors.Is(err, ErrKeysMismatch) || !strings.Contains(err.Error(), "did not make") {
		t.Fatalf("dev keys with foreign insertion keys: %v", err)
	}
}
