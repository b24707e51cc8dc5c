// Package provertest makes key directories for tests that need keys other
// than the dev keys: gnark's single-party Groth16 setup, fine for a test and
// never for a network (whoever ran it can forge proofs).
package provertest

import (
	"testing"

	"github.com/consensys/gnark/backend/groth16"

	"github.com/medrec-zk/medrec/prover"
)

// SetupKeys writes a fresh key directory for every circuit of
// prover.Circuits(), and of extra (optional circuits), under a test temp
// directory and returns its path; origin goes into the manifest. The
// insertion circuit's setup takes tens of seconds.
func SetupKeys(t testing.TB, origin string, extra ...prover.Circuit) string {
	t.Helper()
	keys := map[prover.Circuit]*prover.Keys{}
	for _, c := range append(prover.Circuits(), extra...) {
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
