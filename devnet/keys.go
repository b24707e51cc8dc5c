package devnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/ceremony"
)

// ErrWrongKeys says a key set is not the one a network's AgentRegistry records.
var ErrWrongKeys = errors.New("devnet: these are not the keys the network's AgentRegistry records")

// ErrKeysConflict says a network directory already holds other keys.
var ErrKeysConflict = errors.New("devnet: the network directory holds other keys")

// KeysDir is where a network directory keeps its own keys: the local
// ceremony's of `medrec run`, or those given to `medrec network up --keys`.
// Its manifest is written last: without one the directory is unfinished.
func KeysDir(dir string) string { return filepath.Join(dir, "keys") }

// CeremonyDir is where `medrec run` keeps the transcript of a network's
// local ceremony (`medrec ceremony verify --dir CEREMONY --keys KEYS` checks it).
func CeremonyDir(dir string) string { return filepath.Join(dir, "ceremony") }

// LocalOriginFormat is the origin recorded in the keys of a network's
// local ceremony, with its number of contributors.
const LocalOriginFormat = "MedRec-ZK local ceremony of `medrec run` (%d providers on one machine, fresh random beacons): NOT FOR PRODUCTION"

// HasKeys reports whether the network directory holds its own, complete keys.
func HasKeys(dir string) (bool, error) {
	_, err := os.Stat(filepath.Join(KeysDir(dir), prover.ManifestFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("devnet: keys: %w", err)
	}
	return true, nil
}

// Keys returns the keys of the network in dir: KeysDir(dir) when it has a
// manifest, else the dev ceremony's keys (a network deployed by `medrec
// network up` without --keys, or made before networks had their own keys).
// withProving loads the proving keys too (a gateway only verifies).
func Keys(dir string, withProving bool) (*prover.KeySet, error) {
	has, err := HasKeys(dir)
	if err != nil {
		return nil, err
	}
	if !has {
		return prover.DevKeys()
	}
	ks, err := prover.LoadKeyDir(KeysDir(dir), withProving)
	if err != nil {
		return nil, fmt.Errorf("devnet: the network's keys in %s: %w", KeysDir(dir), err)
	}
	return ks, nil
}

// IsDev reports whether ks are the dev ceremony's keys.
func IsDev(ks *prover.KeySet) bool {
	dev, err := prover.DevKeys()
	return err == nil && dev.RegistryHash() == ks.RegistryHash()
}

// CheckKeys confirms that the AgentRegistry of d, read through b, records
// ks' registry hash, so proofs made and verified with ks are the ones the
// chain accepts.
func CheckKeys(ctx context.Context, b contracts.Backend, d *contracts.Deployment, ks *prover.KeySet) error {
	onChain, err := contracts.NewClient(b, d).VerifyingKeyHash(ctx)
	if err != nil {
		return fmt.Errorf("devnet: read the registry's verifying-key hash: %w", err)
	}
	if have := ks.RegistryHash(); have != onChain {
		return fmt.Errorf("%w: the AgentRegistry at %s records verifying-key hash 0x%x, the keys loaded (%q) hash to 0x%x (was the network directory's keys/ replaced or removed?)",
			ErrWrongKeys, d.AgentRegistry.Hex(), onChain[:8], ks.Manifest.Origin, have[:8])
	}
	return nil
}

// Verifiers returns the verifier contracts to deploy with ks: the bindings'
// code for the dev keys, otherwise (or with insertion keys added) compiled
// from ks with the pinned solc-js of contractsDir (package contracts/verifiers).
func Verifiers(ctx context.Context, ks *prover.KeySet, contractsDir string) (contracts.Verifiers, error) {
	if IsDev(ks) && !ks.Has(prover.Insertion) {
		return contracts.DevVerifiers(), nil
	}
	v, err := verifiers.Compile(ctx, contractsDir, ks)
	if err != nil {
		return contracts.Verifiers{}, fmt.Errorf("devnet: the verifiers of the keys %q: %w", ks.Manifest.Origin, err)
	}
	return v, nil
}

// RunCeremony runs the network's own local ceremony: providers 1…n
// contribute, as "provider-1"…, to each phase, and each phase is closed
// with a fresh random beacon, recorded in the transcript. The transcript
// goes to CeremonyDir(dir), the keys to KeysDir(dir), which appears only
// once the ceremony has finished. An unfinished ceremony left by an earlier
// run is discarded first. progress is told each step before it starts.
// Every contributor runs in this process: the keys are NOT for production.
func RunCeremony(ctx context.Context, dir string, n int, progress func(step string)) (*prover.KeySet, error) {
	if n < 1 {
		return nil, errors.New("devnet: a ceremony needs at least one provider")
	}
	if has, err := HasKeys(dir); err != nil || has {
		if err == nil {
			err = fmt.Errorf("%w: %s is complete; remove it to run a new ceremony", ErrKeysConflict, KeysDir(dir))
		}
		return nil, err
	}
	partial := KeysDir(dir) + ".partial"
	for _, d := range []string{CeremonyDir(dir), KeysDir(dir), partial} {
		if err := os.RemoveAll(d); err != nil {
			return nil, fmt.Errorf("devnet: discard the unfinished ceremony: %w", err)
		}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("provider-%d", i+1)
	}
	if _, err := ceremony.RunLocal(ctx, CeremonyDir(dir), partial, ceremony.Local{
		Contributors: names,
		Origin:       fmt.Sprintf(LocalOriginFormat, n),
		Progress:     progress,
	}); err != nil {
		return nil, err
	}
	if err := os.Rename(partial, KeysDir(dir)); err != nil {
		return nil, fmt.Errorf("devnet: keys: %w", err)
	}
	return Keys(dir, true)
}

// InstallKeys makes the key directory src the network's keys: copied into
// KeysDir(dir), each file checked against its manifest, and returned
// without their proving keys. Installing the keys
// the directory already holds changes nothing; other keys are refused with
// ErrKeysConflict.
func InstallKeys(dir, src string) (*prover.KeySet, error) {
	ks, err := prover.LoadKeyDir(src, false)
	if err != nil {
		return nil, fmt.Errorf("devnet: keys in %s: %w", src, err)
	}
	has, err := HasKeys(dir)
	if err != nil {
		return nil, err
	}
	if has {
		cur, err := Keys(dir, false)
		if err != nil {
			return nil, err
		}
		if cur.RegistryHash() != ks.RegistryHash() {
			return nil, fmt.Errorf("%w: %s holds the keys %q, not those of %s", ErrKeysConflict, KeysDir(dir), cur.Manifest.Origin, src)
		}
		return cur, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devnet: %w", err)
	}
	if err := prover.CopyKeyDir(src, KeysDir(dir)); err != nil {
		return nil, fmt.Errorf("devnet: install keys: %w", err)
	}
	return Keys(dir, false)
}
