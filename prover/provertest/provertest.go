// Package provertest makes key directories for tests that need keys other
// than the dev keys: gnark's single-party Groth16 setup, fine for a test and
// never for a network (whoever ran it can forge proofs).
package provertest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/consensys/gnark/backend/groth16"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/prover"
)

// SetupKeys writes a fresh key directory for every circuit under a test
// temp directory and returns its path; origin goes into the manifest.
func SetupKeys(t testing.TB, origin string) string {
	t.Helper()
	keys := map[prover.Circuit]*prover.Keys{}
	for _, c := range prover.Circuits() {
		comp, err := prover.Compile(c)
		if err != nil {
			t.Fatal(err)
		}
		pk, vk, err := groth16.Setup(comp.CS)
		if err != nil {
			t.Fatal(err)
		}
		keys[c] = &prover.Keys{Compiled: comp, PK: pk, VK: vk}
	}
	dir := t.TempDir()
	if _, err := prover.WriteKeyDir(dir, origin, "", keys); err != nil {
		t.Fatal(err)
	}
	return dir
}

// insertion is Insertion's key set and verifiers, made once per test binary.
var insertion struct {
	sync.Mutex
	ks *prover.KeySet
	v  contracts.Verifiers
}

// Insertion returns the dev keys with insertion keys added (gnark's
// single-party setup of the Insertion circuit), and the dev verifiers with
// the insertion verifier compiled from those keys (with the repository's
// solc-js): what a network whose registry takes proven batches deploys, its
// registry hash the dev keys'. Made once per test binary (about half a
// minute). Without Node.js or solc-js it skips, or fails where
// MEDREC_REQUIRE_SOLC=1 (make test).
func Insertion(t testing.TB) (*prover.KeySet, contracts.Verifiers) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "contracts")
	if err := verifiers.Check(dir); err != nil {
		if os.Getenv("MEDREC_REQUIRE_SOLC") == "1" || os.Getenv("CI") != "" {
			t.Fatalf("no Solidity toolchain: %v", err)
		}
		t.Skipf("%v (make test installs it)", err)
	}
	insertion.Lock()
	defer insertion.Unlock()
	if insertion.ks == nil {
		keys := DevWithInsertion(t)
		keyDir := t.TempDir()
		if _, err := prover.WriteKeyDir(keyDir, "the dev keys and a test's single-party Insertion keys: NOT FOR ANY NETWORK", "", keys); err != nil {
			t.Fatal(err)
		}
		ks, err := prover.LoadKeyDir(keyDir, true)
		if err != nil {
			t.Fatal(err)
		}
		compiled, err := verifiers.Compile(context.Background(), dir, ks)
		if err != nil {
			t.Fatal(err)
		}
		if len(compiled.Insertion) == 0 {
			t.Fatal("no insertion verifier compiled from a key set with insertion keys")
		}
		v := contracts.DevVerifiers()
		v.Insertion, v.InsertionKeyHash = compiled.Insertion, compiled.InsertionKeyHash
		insertion.ks, insertion.v = ks, v
	}
	return insertion.ks, insertion.v
}

// DevWithInsertion returns the dev keys' and fresh Insertion keys (gnark's
// single-party setup, ≈ 15 s), to write with prover.WriteKeyDir.
func DevWithInsertion(t testing.TB) map[prover.Circuit]*prover.Keys {
	t.Helper()
	dev, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	keys := KeyMap(t, dev)
	comp, err := prover.Compile(prover.Insertion)
	if err != nil {
		t.Fatal(err)
	}
	pk, vk, err := groth16.Setup(comp.CS)
	if err != nil {
		t.Fatal(err)
	}
	keys[prover.Insertion] = &prover.Keys{Compiled: comp, PK: pk, VK: vk}
	return keys
}

// InsertionDir writes Insertion's key set to a fresh test directory (with
// its manifest) and returns it with the verifiers: what `medrec network up
// --keys` takes for a network whose registry takes proven batches.
func InsertionDir(t testing.TB) (string, contracts.Verifiers) {
	t.Helper()
	ks, v := Insertion(t)
	dir := t.TempDir()
	if _, err := prover.WriteKeyDir(dir, ks.Manifest.Origin, ks.Manifest.Transcript, KeyMap(t, ks)); err != nil {
		t.Fatal(err)
	}
	return dir, v
}

// KeyMap returns every circuit's keys that ks holds, to write with
// prover.WriteKeyDir.
func KeyMap(t testing.TB, ks *prover.KeySet) map[prover.Circuit]*prover.Keys {
	t.Helper()
	keys := map[prover.Circuit]*prover.Keys{}
	for _, c := range append(prover.Circuits(), prover.OptionalCircuits()...) {
		if !ks.Has(c) {
			continue
		}
		k, err := ks.Keys(c)
		if err != nil {
			t.Fatal(err)
		}
		keys[c] = k
	}
	return keys
}
