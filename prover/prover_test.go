package prover

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	groth16bn254 "github.com/consensys/gnark/backend/groth16/bn254"
	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/logger"
	"github.com/ethereum/go-ethereum/common"
	"github.com/rs/zerolog"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

func TestMain(m *testing.M) {
	logger.Set(zerolog.Nop())
	os.Exit(m.Run())
}

func devProver(t testing.TB) *Prover {
	t.Helper()
	ks, err := DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	return New(ks)
}

func ownershipWitness(t testing.TB) circuits.OwnershipWitness {
	t.Helper()
	secrets := []fr.Element{zkhash.FromUint64(11), zkhash.FromUint64(12), zkhash.FromUint64(13)}
	var leaves []fr.Element
	for _, s := range secrets {
		leaves = append(leaves, zkhash.Commitment(s))
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	path, err := tree.Proof(1)
	if err != nil {
		t.Fatal(err)
	}
	return circuits.OwnershipWitness{
		Secret: secrets[1], Path: path, Provider: 2,
		Signal: circuits.OwnershipSignal(circuits.ActionOpen, common.HexToAddress("0x80be4b699095bAD2e717A0854DcF176D611D413B"), 0, big.NewInt(1337), common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")),
	}
}

func entitlementWitness() circuits.EntitlementWitness {
	return circuits.EntitlementWitness{
		ViewerSecret: zkhash.FromUint64(1001), GrantSecret: zkhash.FromUint64(2002),
		Tag: zkhash.Tag(zkhash.FromUint64(12), 2), Challenge: zkhash.FromUint64(424242),
	}
}

// Proofs are expensive; tests share one of each.
var (
	ownOnce, entOnce   sync.Once
	ownProof, entProof Proof
	ownPub             circuits.OwnershipPublic
	entPub             circuits.EntitlementPublic
)

func ownership(t *testing.T) (Proof, circuits.OwnershipPublic) {
	ownOnce.Do(func() {
		var err error
		ownProof, ownPub, err = devProver(t).ProveOwnership(ownershipWitness(t))
		if err != nil {
			t.Fatal(err)
		}
	})
	return ownProof, ownPub
}

func entitlement(t *testing.T) (Proof, circuits.EntitlementPublic) {
	entOnce.Do(func() {
		var err error
		entProof, entPub, err = devProver(t).ProveEntitlement(entitlementWitness())
		if err != nil {
			t.Fatal(err)
		}
	})
	return entProof, entPub
}

func bump(e fr.Element) fr.Element {
	one := zkhash.FromUint64(1)
	e.Add(&e, &one)
	return e
}

func TestOwnershipProof(t *testing.T) {
	p := devProver(t)
	proof, pub := ownership(t)
	if err := p.VerifyOwnership(proof, pub); err != nil {
		t.Fatalf("valid proof refused: %v", err)
	}
	// Every public input changed by one must fail — Signal included: that is
	// what bindSignal's constraint buys (TestSignalIsBound in the design).
	changed := map[string]circuits.OwnershipPublic{
		"root":                 {Root: bump(pub.Root), Scope: pub.Scope, Tag: pub.Tag, Signal: pub.Signal},
		"scope":                {Root: pub.Root, Scope: bump(pub.Scope), Tag: pub.Tag, Signal: pub.Signal},
		"tag":                  {Root: pub.Root, Scope: pub.Scope, Tag: bump(pub.Tag), Signal: pub.Signal},
		"signal":               {Root: pub.Root, Scope: pub.Scope, Tag: pub.Tag, Signal: bump(pub.Signal)},
		"swapped root and tag": {Root: pub.Tag, Scope: pub.Scope, Tag: pub.Root, Signal: pub.Signal},
		"another delegate's signal": {Root: pub.Root, Scope: pub.Scope, Tag: pub.Tag,
			Signal: circuits.OwnershipSignal(circuits.ActionOpen, common.Address{9}, 0, big.NewInt(1337), common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3"))},
	}
	for name, bad := range changed {
		if err := p.VerifyOwnership(proof, bad); !errors.Is(err, ErrInvalidProof) {
			t.Errorf("%s changed: error = %v, want ErrInvalidProof", name, err)
		}
	}
	// An Ownership proof is not an Entitlement proof.
	if err := p.VerifyEntitlement(proof, circuits.EntitlementPublic{Grant: pub.Root, Tag: pub.Tag, Challenge: pub.Signal}); !errors.Is(err, ErrInvalidProof) {
		t.Errorf("ownership proof verified as entitlement: %v", err)
	}
}

func TestEntitlementProof(t *testing.T) {
	p := devProver(t)
	proof, pub := entitlement(t)
	if err := p.VerifyEntitlement(proof, pub); err != nil {
		t.Fatalf("valid proof refused: %v", err)
	}
	changed := map[string]circuits.EntitlementPublic{
		"grant":     {Grant: bump(pub.Grant), Tag: pub.Tag, Challenge: pub.Challenge},
		"tag":       {Grant: pub.Grant, Tag: bump(pub.Tag), Challenge: pub.Challenge},
		"challenge": {Grant: pub.Grant, Tag: pub.Tag, Challenge: bump(pub.Challenge)},
		"swapped":   {Grant: pub.Tag, Tag: pub.Grant, Challenge: pub.Challenge},
	}
	for name, bad := range changed {
		if err := p.VerifyEntitlement(proof, bad); !errors.Is(err, ErrInvalidProof) {
			t.Errorf("%s changed: error = %v, want ErrInvalidProof", name, err)
		}
	}
}

// TestTamperedProof changes each of the proof's eight coordinates: the result
// is either not a valid curve point (refused while decoding) or a different
// proof (refused by the pairing check); never accepted.
func TestTamperedProof(t *testing.T) {
	p := devProver(t)
	proof, pub := ownership(t)
	for i := 0; i < 8; i++ {
		bad := proof
		bad[32*i+31] ^= 1
		err := p.VerifyOwnership(bad, pub)
		if !errors.Is(err, ErrProofEncoding) && !errors.Is(err, ErrInvalidProof) {
			t.Errorf("coordinate %d tampered: error = %v", i, err)
		}
	}
	var zero Proof
	if err := p.VerifyOwnership(zero, pub); !errors.Is(err, ErrProofEncoding) {
		t.Errorf("all-zero proof: %v", err)
	}
	if _, err := ParseProof(proof[:255]); !errors.Is(err, ErrProofEncoding) {
		t.Errorf("short proof: %v", err)
	}
	// A coordinate replaced by itself plus the base-field modulus is the same
	// point in a non-canonical encoding: refused.
	var nc Proof = proof
	x := new(big.Int).SetBytes(nc[0:32])
	x.Add(x, fpModulus())
	if x.BitLen() <= 254 {
		x.FillBytes(nc[0:32])
		if _, err := ParseProof(nc[:]); !errors.Is(err, ErrProofEncoding) {
			t.Errorf("non-canonical A.x accepted: %v", err)
		}
	}
	if got, err := ParseProof(proof[:]); err != nil || got != proof {
		t.Errorf("ParseProof(valid) = %v", err)
	}
}

func fpModulus() *big.Int {
	p, _ := new(big.Int).SetString("21888242871839275222246405745257275088696311157297823662689037894645226208583", 10)
	return p
}

// TestProofEncodingMatchesGnarkSolidity: our encoding is gnark's Solidity one.
func TestProofEncodingMatchesGnarkSolidity(t *testing.T) {
	proof, _ := ownership(t)
	g, err := proof.decode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.MarshalSolidity(), proof[:]) {
		t.Fatal("proof encoding differs from gnark's MarshalSolidity")
	}
	text, _ := proof.MarshalText()
	var back Proof
	if err := back.UnmarshalText(text); err != nil || back != proof {
		t.Fatalf("text round trip: %v", err)
	}
	if err := back.UnmarshalText([]byte("0x12")); !errors.Is(err, ErrProofEncoding) {
		t.Fatalf("short text accepted: %v", err)
	}
	var _ = groth16bn254.Proof{}
}

func TestWitnessErrors(t *testing.T) {
	p := devProver(t)
	w := ownershipWitness(t)
	w.Secret = zkhash.FromUint64(13) // not the path's leaf
	if _, _, err := p.ProveOwnership(w); !errors.Is(err, ErrWitness) {
		t.Fatalf("wrong secret: %v", err)
	}
	// An assignment that skips the twin entirely fails in the solver.
	a := ownershipWitness(t).Assignment()
	a.Tag = 5
	if _, err := p.prove(Ownership, a); !errors.Is(err, ErrWitness) {
		t.Fatalf("unsatisfied assignment: %v", err)
	}
	var bad frontend.Circuit = &circuits.Entitlement{}
	if _, err := p.prove(Entitlement, bad); err == nil {
		t.Fatal("empty assignment proved")
	}
}

func copyDevKeys(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{ManifestFile, "ownership.pk", "ownership.vk", "entitlement.pk", "entitlement.vk"} {
		b, err := devKeys.ReadFile("devkeys/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func editManifest(t *testing.T, dir string, f func(m *Manifest)) {
	t.Helper()
	raw, _ := os.ReadFile(filepath.Join(dir, ManifestFile))
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(&m)
	raw, _ = json.Marshal(m)
	os.WriteFile(filepath.Join(dir, ManifestFile), raw, 0o644)
}

func TestKeyFiles(t *testing.T) {
	t.Run("intact copy loads", func(t *testing.T) {
		if _, err := LoadKeyDir(copyDevKeys(t), true); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name string
		mess func(t *testing.T, dir string)
		want error
	}{
		{"proving key byte flipped", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "ownership.pk"))
			b[len(b)/2] ^= 1
			os.WriteFile(filepath.Join(dir, "ownership.pk"), b, 0o644)
		}, ErrKeyFiles},
		{"verifying key truncated", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "entitlement.vk"))
			os.WriteFile(filepath.Join(dir, "entitlement.vk"), b[:len(b)-1], 0o644)
		}, ErrKeyFiles},
		{"proving key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "entitlement.pk"))
		}, ErrKeyFiles},
		{"manifest missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestFile))
		}, ErrKeyFiles},
		{"manifest not json", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644)
		}, ErrKeyFiles},
		{"keys for another circuit version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m *Manifest) { m.Circuits[Ownership].R1CS = "00" + m.Circuits[Ownership].R1CS[2:] })
		}, ErrKeyMismatch},
		{"keys of the two circuits swapped", func(t *testing.T, dir string) {
			for _, ext := range []string{".pk", ".vk"} {
				a, _ := os.ReadFile(filepath.Join(dir, "ownership"+ext))
				b, _ := os.ReadFile(filepath.Join(dir, "entitlement"+ext))
				os.WriteFile(filepath.Join(dir, "ownership"+ext), b, 0o644)
				os.WriteFile(filepath.Join(dir, "entitlement"+ext), a, 0o644)
			}
			editManifest(t, dir, func(m *Manifest) {
				o, e := m.Circuits[Ownership], m.Circuits[Entitlement]
				o.ProvingKey, e.ProvingKey = e.ProvingKey, o.ProvingKey
				o.VerifyingKey, e.VerifyingKey = e.VerifyingKey, o.VerifyingKey
				o.VKHash, e.VKHash = e.VKHash, o.VKHash
			})
		}, ErrKeyMismatch},
		{"keys of an unknown circuit named", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m *Manifest) { m.Circuits["bogus"] = m.Circuits[Ownership] })
		}, ErrKeyFiles},
		{"optional keys named but missing", func(t *testing.T, dir string) {
			comp, err := Compile(Insertion)
			if err != nil {
				t.Fatal(err)
			}
			editManifest(t, dir, func(m *Manifest) {
				e := *m.Circuits[Ownership]
				e.R1CS = comp.Digest
				m.Circuits[Insertion] = &e
			})
		}, ErrKeyFiles},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDevKeys(t)
			tt.mess(t, dir)
			if _, err := LoadKeyDir(dir, true); !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("the insertion keys are optional", func(t *testing.T) {
		ks, err := LoadKeyDir(copyDevKeys(t), true)
		if err != nil {
			t.Fatal(err)
		}
		if ks.Has(Insertion) || !ks.Has(Ownership) {
			t.Fatal("the dev keys' set says it has insertion keys, or lacks ownership keys")
		}
		if _, err := New(ks).ProveInsertion(&circuits.Insertion{}); !errors.Is(err, ErrUnknownCircuit) {
			t.Fatalf("proving an insertion without its keys: %v", err)
		}
	})
	t.Run("verifier-only keys cannot prove", func(t *testing.T) {
		dir := copyDevKeys(t)
		os.Remove(filepath.Join(dir, "ownership.pk"))
		ks, err := LoadKeyDir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		vp := New(ks)
		proof, pub := ownership(t)
		if err := vp.VerifyOwnership(proof, pub); err != nil {
			t.Fatalf("verifier-only keys: %v", err)
		}
		if _, _, err := vp.ProveOwnership(ownershipWitness(t)); !errors.Is(err, ErrNoProvingKey) {
			t.Fatalf("prove without a proving key: %v", err)
		}
	})
}

func TestDevKeysAreMarked(t *testing.T) {
	ks, err := DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains([]byte(ks.Manifest.Origin), []byte("NOT FOR PRODUCTION")) {
		t.Fatalf("dev keys' origin does not warn: %q", ks.Manifest.Origin)
	}
	if ks.RegistryHash() == ([32]byte{}) {
		t.Fatal("empty registry hash")
	}
}

// TestExportSolidityOrigin: a manifest's origin lands in the verifier's
// header as one comment line, whatever line breaks it holds.
func TestExportSolidityOrigin(t *testing.T) {
	dev, err := DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	ks := *dev
	ks.Manifest.Origin = "local ceremony\ncontract Evil {}\r\n  NOT FOR PRODUCTION"
	var buf bytes.Buffer
	if err := ks.ExportSolidity(Ownership, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("\n// Keys: local ceremony contract Evil {} NOT FOR PRODUCTION\n")) || bytes.Contains(buf.Bytes(), []byte("\ncontract Evil")) {
		t.Fatalf("header:\n%s", buf.Bytes()[:300])
	}
}

func BenchmarkProveOwnership(b *testing.B) {
	p, w := devProver(b), ownershipWitness(b)
	comp, _ := Compile(Ownership)
	b.ReportMetric(float64(comp.CS.GetNbConstraints()), "constraints")
	for b.Loop() {
		if _, _, err := p.ProveOwnership(w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProveEntitlement(b *testing.B) {
	p, w := devProver(b), entitlementWitness()
	comp, _ := Compile(Entitlement)
	b.ReportMetric(float64(comp.CS.GetNbConstraints()), "constraints")
	for b.Loop() {
		if _, _, err := p.ProveEntitlement(w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	p := devProver(b)
	b.Run("ownership", func(b *testing.B) {
		proof, pub, err := p.ProveOwnership(ownershipWitness(b))
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := p.VerifyOwnership(proof, pub); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("entitlement", func(b *testing.B) {
		proof, pub, err := p.ProveEntitlement(entitlementWitness())
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := p.VerifyEntitlement(proof, pub); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLoadKeys measures a cold start: reading and checking the key files
// (no setup is ever re-run; the circuit compile is cached per process).
func BenchmarkLoadKeys(b *testing.B) {
	dir := b.TempDir()
	for _, name := range []string{ManifestFile, "ownership.pk", "ownership.vk", "entitlement.pk", "entitlement.vk"} {
		raw, _ := devKeys.ReadFile("devkeys/" + name)
		os.WriteFile(filepath.Join(dir, name), raw, 0o644)
	}
	for b.Loop() {
		if _, err := LoadKeyDir(dir, true); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCopyKeyDir: a copy loads as the same keys, holds only the key files,
// and a source whose files do not match its manifest is refused before
// the copy gets a manifest.
func TestCopyKeyDir(t *testing.T) {
	src := copyDevKeys(t)
	os.WriteFile(filepath.Join(src, "README.md"), []byte("not a key"), 0o644)
	dst := filepath.Join(t.TempDir(), "keys")
	if err := CopyKeyDir(src, dst); err != nil {
		t.Fatal(err)
	}
	ks, err := LoadKeyDir(dst, true)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := DevKeys()
	if ks.RegistryHash() != dev.RegistryHash() || ks.Manifest.Transcript != dev.Manifest.Transcript {
		t.Fatal("the copy holds other keys")
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); err == nil {
		t.Fatal("a file the manifest does not name was copied")
	}

	bad := copyDevKeys(t)
	os.WriteFile(filepath.Join(bad, "entitlement.vk"), []byte("tampered"), 0o644)
	dst = filepath.Join(t.TempDir(), "keys")
	if err := CopyKeyDir(bad, dst); !errors.Is(err, ErrKeyFiles) {
		t.Fatalf("tampered source: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, ManifestFile)); err == nil {
		t.Fatal("a refused copy has a manifest")
	}
	if err := CopyKeyDir(t.TempDir(), dst); !errors.Is(err, ErrKeyFiles) {
		t.Fatalf("no manifest: %v", err)
	}
}

var updateTemplate = flag.Bool("update-template", false, "make a new insertion template key (then: make generate)")

// TestInsertionTemplateKey: the insertion verifier's template key reads and
// has the circuit's public inputs; -update-template makes a new one.
func TestInsertionTemplateKey(t *testing.T) {
	if *updateTemplate {
		var buf bytes.Buffer
		if err := WriteInsertionTemplate(&buf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("templatekeys", "insertion.vk"), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Skip("wrote a new template key: rebuild (make generate) before testing it")
	}
	vk, err := InsertionTemplateVK()
	if err != nil {
		t.Fatal(err)
	}
	comp, err := Compile(Insertion)
	if err != nil {
		t.Fatal(err)
	}
	if vk.NbPublicWitness() != comp.CS.GetNbPublicVariables()-1 {
		t.Fatalf("the template key has %d public inputs, the circuit %d: make a new one (-update-template)", vk.NbPublicWitness(), comp.CS.GetNbPublicVariables()-1)
	}
}
