package devnet

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/provertest"
)

const otherOrigin = "devnet test keys (single-party groth16.Setup): NOT FOR PRODUCTION"

// TestNetworkKeys: which keys a network directory has, installing keys,
// the registry check, and which verifiers deploy with them.
func TestNetworkKeys(t *testing.T) {
	ctx := t.Context()
	dev, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// No keys of its own (an older network, or one deployed without --keys): the dev keys.
	if has, err := HasKeys(dir); err != nil || has {
		t.Fatalf("HasKeys of an empty directory: %v %v", has, err)
	}
	if ks, err := Keys(dir, true); err != nil || ks.RegistryHash() != dev.RegistryHash() {
		t.Fatalf("keys of a directory without keys/: %v", err)
	}
	// An unfinished keys/ (no manifest) is not keys either.
	os.MkdirAll(KeysDir(dir), 0o755)
	os.WriteFile(filepath.Join(KeysDir(dir), "ownership.vk"), []byte("half"), 0o644)
	if ks, err := Keys(dir, false); err != nil || !IsDev(ks) {
		t.Fatalf("keys of an unfinished keys/: %v", err)
	}

	src := provertest.SetupKeys(t, otherOrigin)
	want, err := prover.LoadKeyDir(src, false)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := InstallKeys(dir, src)
	if err != nil {
		t.Fatal(err)
	}
	if ks.RegistryHash() != want.RegistryHash() || IsDev(ks) {
		t.Fatal("installed keys differ from the source")
	}
	if ks, err := Keys(dir, true); err != nil || ks.RegistryHash() != want.RegistryHash() || ks.Manifest.Origin != otherOrigin {
		t.Fatalf("the network's keys after install: %v", err)
	}
	if _, err := InstallKeys(dir, src); err != nil {
		t.Fatalf("installing the same keys again: %v", err)
	}
	if _, err := InstallKeys(dir, "../prover/devkeys"); !errors.Is(err, ErrKeysConflict) {
		t.Fatalf("installing other keys over them: %v", err)
	}
	if _, err := RunCeremony(ctx, dir, 3, nil); !errors.Is(err, ErrKeysConflict) {
		t.Fatalf("a ceremony over finished keys: %v", err)
	}
	if _, err := InstallKeys(t.TempDir(), t.TempDir()); !errors.Is(err, prover.ErrKeyFiles) {
		t.Fatalf("installing a directory without keys: %v", err)
	}

	// The registry of a chain deployed with the dev keys accepts those only.
	c := simchain.New(t, 1, nil)
	if err := CheckKeys(ctx, c.Backend, c.D, dev); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeys(ctx, c.Backend, c.D, ks); !errors.Is(err, ErrWrongKeys) || !strings.Contains(err.Error(), otherOrigin) {
		t.Fatalf("other keys against the dev registry: %v", err)
	}

	// The dev keys deploy the bindings' verifiers, no compiler needed; other
	// keys need one, and compile to other code.
	if v, err := Verifiers(ctx, dev, t.TempDir()); err != nil || !bytes.Equal(v.Ownership, contracts.DevVerifiers().Ownership) {
		t.Fatalf("dev verifiers: %v", err)
	}
	if _, err := Verifiers(ctx, ks, t.TempDir()); !errors.Is(err, verifiers.ErrToolchain) {
		t.Fatalf("other keys without a compiler: %v", err)
	}
	if err := verifiers.Check("../contracts"); err != nil && os.Getenv("CI") == "" {
		t.Skipf("%v (make test installs it)", err)
	}
	v, err := Verifiers(ctx, ks, "../contracts")
	if err != nil {
		t.Fatal(err)
	}
	if d := contracts.DevVerifiers(); bytes.Equal(v.Ownership, d.Ownership) || bytes.Equal(v.Entitlement, d.Entitlement) || len(v.Ownership) == 0 {
		t.Fatal("other keys compiled to the dev verifiers")
	}
}
