package verifiers

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/prover"
)

// contractsDir is the repository's contracts directory. Without Node.js or
// its node_modules the compiling tests skip, except in CI (and `make test`
// installs both).
func contractsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..")
	if err := Check(dir); err != nil {
		if os.Getenv("MEDREC_REQUIRE_SOLC") == "1" || os.Getenv("CI") != "" {
			t.Fatalf("CI has no Solidity toolchain: %v", err)
		}
		t.Skipf("%v (make test installs it)", err)
	}
	return dir
}

// TestDevKeysGiveTheBindingsCode: compiling the dev keys' verifiers here
// gives byte for byte the bytecode `make generate` put in the bindings, so
// the verifiers of a network's own keys are built exactly as the committed ones.
func TestDevKeysGiveTheBindingsCode(t *testing.T) {
	dir := contractsDir(t)
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Compile(t.Context(), dir, ks)
	if err != nil {
		t.Fatal(err)
	}
	want := contracts.DevVerifiers()
	if !bytes.Equal(got.Ownership, want.Ownership) {
		t.Errorf("OwnershipVerifier: %d bytes, the bindings hold %d other bytes", len(got.Ownership), len(want.Ownership))
	}
	if !bytes.Equal(got.Entitlement, want.Entitlement) {
		t.Errorf("EntitlementVerifier: %d bytes, the bindings hold %d other bytes", len(got.Entitlement), len(want.Entitlement))
	}
}

func TestMissingToolchain(t *testing.T) {
	empty := t.TempDir()
	if err := Check(empty); !errors.Is(err, ErrToolchain) || !strings.Contains(err.Error(), "compile.js") {
		t.Fatalf("a directory without compile.js: %v", err)
	}
	if err := os.WriteFile(filepath.Join(empty, "compile.js"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Check(empty); !errors.Is(err, ErrToolchain) || !strings.Contains(err.Error(), "npm ci") {
		t.Fatalf("a directory without solc-js: %v", err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Compile(t.Context(), "..", ks); !errors.Is(err, ErrToolchain) || !strings.Contains(err.Error(), "make run") || !strings.Contains(err.Error(), "nodejs") {
		t.Fatalf("no node: %v", err)
	}
}
