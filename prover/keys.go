package prover

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/consensys/gnark-crypto/ecc"
	"github.com/consensys/gnark/backend/groth16"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

const manifestVersion = 1

// ManifestFile is the name of a key directory's manifest.
const ManifestFile = "manifest.json"

// Manifest describes a key directory: for each circuit, the constraint system
// the keys were made for and the digests of the key files. A key directory is
// loaded only if every digest matches.
type Manifest struct {
	Version int `json:"version"`
	// Origin says where the keys come from; the dev keys say they are not for production.
	Origin string `json:"origin"`
	// Transcript is the digest of the ceremony transcript the keys were finalised from.
	Transcript string                `json:"transcript,omitempty"`
	Circuits   map[Circuit]*KeyEntry `json:"circuits"`
}

// KeyEntry describes one circuit's key files.
type KeyEntry struct {
	R1CS         string `json:"r1csSha256"`
	Constraints  int    `json:"constraints"`
	ProvingKey   string `json:"provingKeySha256"`
	VerifyingKey string `json:"verifyingKeySha256"`
	// VKHash is VerifyingKeyHash of the verifying key, as recorded on chain.
	VKHash string `json:"verifyingKeyHash"`
}

func pkFile(c Circuit) string { return string(c) + ".pk" }
func vkFile(c Circuit) string { return string(c) + ".vk" }

// Keys holds one circuit's compiled constraint system and keys.
type Keys struct {
	Compiled *Compiled
	PK       groth16.ProvingKey // nil for verifier-only keys
	VK       groth16.VerifyingKey
}

// KeySet is a loaded key directory.
type KeySet struct {
	Manifest Manifest
	keys     map[Circuit]*Keys
}

// Keys returns the keys of circuit c.
func (ks *KeySet) Keys(c Circuit) (*Keys, error) {
	k, ok := ks.keys[c]
	if !ok {
		return nil, fmt.Errorf("%q: %w", string(c), ErrUnknownCircuit)
	}
	return k, nil
}

// RegistryHash is the verifying-key hash the agent registry records:
// keccak256 of the circuits' VerifyingKeyHash values in Circuits() order.
func (ks *KeySet) RegistryHash() [32]byte {
	var buf []byte
	for _, c := range Circuits() {
		h := VerifyingKeyHash(ks.keys[c].VK)
		buf = append(buf, h[:]...)
	}
	return [32]byte(crypto.Keccak256(buf))
}

// VerifyingKeyHash returns keccak256 of the verifying key's points in the
// order α, β, γ, δ, K₀…Kₙ, each in its uncompressed 64- or 128-byte form
// (G2 coordinates imaginary part first, as the EVM precompiles take them):
// the words of VerifyingKeyWords.
func VerifyingKeyHash(vk groth16.VerifyingKey) [32]byte {
	var buf []byte
	for _, w := range VerifyingKeyWords(vk) {
		buf = append(buf, w[:]...)
	}
	return [32]byte(crypto.Keccak256(buf))
}

// VerifyingKeyWords returns the verifying key's coordinates as 32-byte
// big-endian words, in VerifyingKeyHash's order.
func VerifyingKeyWords(vk groth16.VerifyingKey) [][32]byte {
	v := vk.(*groth16bn254.VerifyingKey)
	var raw []byte
	a, b, g, d := v.G1.Alpha.RawBytes(), v.G2.Beta.RawBytes(), v.G2.Gamma.RawBytes(), v.G2.Delta.RawBytes()
	raw = append(append(append(append(raw, a[:]...), b[:]...), g[:]...), d[:]...)
	for _, k := range v.G1.K {
		kb := k.RawBytes()
		raw = append(raw, kb[:]...)
	}
	out := make([][32]byte, len(raw)/32)
	for i := range out {
		out[i] = [32]byte(raw[32*i:])
	}
	return out
}

//go:embed devkeys
var devKeys embed.FS

var devKeySet = sync.OnceValues(func() (*KeySet, error) {
	sub, err := fs.Sub(devKeys, "devkeys")
	if err != nil {
		return nil, err
	}
	return LoadKeys(sub, true)
})

// DevKeys returns the keys of the local dev ceremony, embedded in the binary.
// Not for production: see the package documentation.
func DevKeys() (*KeySet, error) { return devKeySet() }

// LoadKeyDir loads the key directory dir; withProving loads proving keys too
// (a gateway only verifies and can skip them).
func LoadKeyDir(dir string, withProving bool) (*KeySet, error) {
	return LoadKeys(os.DirFS(dir), withProving)
}

// LoadKeys loads keys from fsys. Every file's digest must match the manifest
// and the manifest's constraint-system digest must match the circuit this
// binary compiles, so stale or corrupted keys are refused with ErrKeyFiles or
// ErrKeyMismatch instead of producing proofs that fail later.
func LoadKeys(fsys fs.FS, withProving bool) (*KeySet, error) {
	m, _, err := readManifest(fsys)
	if err != nil {
		return nil, err
	}
	ks := &KeySet{Manifest: m, keys: map[Circuit]*Keys{}}
	for _, c := range m.circuits() {
		k, err := loadCircuitKeys(fsys, c, m.Circuits[c], withProving)
		if err != nil {
			return nil, err
		}
		ks.keys[c] = k
	}
	return ks, nil
}

// Has says whether the key set holds keys of circuit c.
func (ks *KeySet) Has(c Circuit) bool { _, ok := ks.keys[c]; return ok }

// circuits lists the circuits m has keys for: every one of Circuits(), then
// the optional ones it names.
func (m *Manifest) circuits() []Circuit {
	cs := Circuits()
	for _, c := range OptionalCircuits() {
		if m.Circuits[c] != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

// readManifest reads and decodes a key directory's manifest, which must
// name keys for every circuit; raw is the file as read.
func readManifest(fsys fs.FS) (m Manifest, raw []byte, err error) {
	raw, err = fs.ReadFile(fsys, ManifestFile)
	if err != nil {
		return m, nil, fmt.Errorf("%w: %v", ErrKeyFiles, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return m, nil, fmt.Errorf("%w: %s: %v", ErrKeyFiles, ManifestFile, err)
	}
	if m.Version != manifestVersion {
		return m, nil, fmt.Errorf("%w: manifest version %d", ErrKeyFiles, m.Version)
	}
	for _, c := range Circuits() {
		if m.Circuits[c] == nil {
			return m, nil, fmt.Errorf("%w: manifest has no %s keys", ErrKeyFiles, c)
		}
	}
	for c, e := range m.Circuits {
		if e == nil || !slices.Contains(m.circuits(), c) {
			return m, nil, fmt.Errorf("%w: manifest names keys of an unknown circuit %q", ErrKeyFiles, string(c))
		}
	}
	return m, raw, nil
}

// CopyKeyDir copies the key directory src to dst byte for byte: every key
// file is checked against src's manifest on the way, and the manifest is
// written last, so dst is complete once it has one. Files of other names
// (a README) are not copied.
func CopyKeyDir(src, dst string) error {
	fsys := os.DirFS(src)
	m, raw, err := readManifest(fsys)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("prover: %w", err)
	}
	for _, c := range m.circuits() {
		e := m.Circuits[c]
		for name, sum := range map[string]string{pkFile(c): e.ProvingKey, vkFile(c): e.VerifyingKey} {
			data, err := readChecked(fsys, name, sum)
			if err != nil {
				return fmt.Errorf("%s: %w", src, err)
			}
			if err := atomicfile.Write(filepath.Join(dst, name), data, 0o644); err != nil {
				return err
			}
		}
	}
	return atomicfile.Write(filepath.Join(dst, ManifestFile), raw, 0o644)
}

func readChecked(fsys fs.FS, name, wantSHA string) ([]byte, error) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFiles, err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != wantSHA {
		return nil, fmt.Errorf("%w: %s does not match its digest in %s", ErrKeyFiles, name, ManifestFile)
	}
	return data, nil
}

func loadCircuitKeys(fsys fs.FS, c Circuit, e *KeyEntry, withProving bool) (*Keys, error) {
	comp, err := Compile(c)
	if err != nil {
		return nil, err
	}
	if comp.Digest != e.R1CS {
		return nil, fmt.Errorf("%w: %s keys are for constraint system %.12s…, this binary compiles %.12s… (rerun the ceremony)",
			ErrKeyMismatch, c, e.R1CS, comp.Digest)
	}
	k := &Keys{Compiled: comp, VK: groth16.NewVerifyingKey(ecc.BN254)}
	vkRaw, err := readChecked(fsys, vkFile(c), e.VerifyingKey)
	if err != nil {
		return nil, err
	}
	// The digest already pins the bytes; the full read still checks points are on the curve.
	if _, err := k.VK.ReadFrom(bytes.NewReader(vkRaw)); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeyFiles, vkFile(c), err)
	}
	if got := VerifyingKeyHash(k.VK); hex.EncodeToString(got[:]) != e.VKHash {
		return nil, fmt.Errorf("%w: %s verifying-key hash differs from the manifest", ErrKeyFiles, c)
	}
	if k.VK.NbPublicWitness() != comp.CS.GetNbPublicVariables()-1 {
		return nil, fmt.Errorf("%w: %s verifying key has %d public inputs, circuit %d",
			ErrKeyMismatch, c, k.VK.NbPublicWitness(), comp.CS.GetNbPublicVariables()-1)
	}
	if !withProving {
		return k, nil
	}
	pkRaw, err := readChecked(fsys, pkFile(c), e.ProvingKey)
	if err != nil {
		return nil, err
	}
	k.PK = groth16.NewProvingKey(ecc.BN254)
	// The SHA-256 check above pins the exact bytes the ceremony wrote, so the
	// per-point subgroup checks can be skipped: they would only re-prove what
	// the digest already guarantees, at a cost of seconds per start.
	if _, err := k.PK.UnsafeReadFrom(bytes.NewReader(pkRaw)); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrKeyFiles, pkFile(c), err)
	}
	return k, nil
}

// WriteKeyDir writes keys made for the given compiled circuits to dir with
// their manifest: every one of Circuits(), and those of OptionalCircuits()
// keys holds. origin and transcript are recorded in the manifest.
func WriteKeyDir(dir, origin, transcript string, keys map[Circuit]*Keys) (*Manifest, error) {
	m := &Manifest{Version: manifestVersion, Origin: origin, Transcript: transcript, Circuits: map[Circuit]*KeyEntry{}}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("prover: %w", err)
	}
	for _, c := range append(Circuits(), OptionalCircuits()...) {
		k, ok := keys[c]
		if !ok && slices.Contains(OptionalCircuits(), c) {
			continue
		}
		if !ok || k.PK == nil {
			return nil, fmt.Errorf("prover: no %s keys to write", c)
		}
		var pk, vk bytes.Buffer
		if _, err := k.PK.WriteRawTo(&pk); err != nil {
			return nil, fmt.Errorf("prover: encode %s proving key: %w", c, err)
		}
		if _, err := k.VK.WriteTo(&vk); err != nil {
			return nil, fmt.Errorf("prover: encode %s verifying key: %w", c, err)
		}
		pkSum, vkSum, vkHash := sha256.Sum256(pk.Bytes()), sha256.Sum256(vk.Bytes()), VerifyingKeyHash(k.VK)
		m.Circuits[c] = &KeyEntry{
			R1CS:         k.Compiled.Digest,
			Constraints:  k.Compiled.CS.GetNbConstraints(),
			ProvingKey:   hex.EncodeToString(pkSum[:]),
			VerifyingKey: hex.EncodeToString(vkSum[:]),
			VKHash:       hex.EncodeToString(vkHash[:]),
		}
		if err := atomicfile.Write(filepath.Join(dir, pkFile(c)), pk.Bytes(), 0o644); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(filepath.Join(dir, vkFile(c)), vk.Bytes(), 0o644); err != nil {
			return nil, err
		}
	}
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	// The manifest goes last: a directory with a manifest is complete.
	if err := atomicfile.Write(filepath.Join(dir, ManifestFile), append(raw, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}
