package delegate

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	bip39 "github.com/cosmos/go-bip39"

	"github.com/medrec-zk/medrec/zkhash"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const (
	abandonAbout = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
	testJunk     = "test test test test test test test test test test test junk"
)

func mustKeys(t testing.TB, mnemonic, passphrase string) *Keys {
	t.Helper()
	k, err := FromMnemonic(mnemonic, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBIP39Vectors runs the official BIP39 vectors: entropy → words, words +
// passphrase "TREZOR" → seed, seed → BIP32 root.
func TestBIP39Vectors(t *testing.T) {
	raw, err := os.ReadFile("testdata/bip39_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Passphrase string `json:"passphrase"`
		Vectors    []struct {
			Entropy, Mnemonic, Seed, XPrv string
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) != 24 {
		t.Fatalf("got %d vectors, want the 24 English ones", len(file.Vectors))
	}
	for _, v := range file.Vectors {
		t.Run(v.Entropy, func(t *testing.T) {
			entropy, _ := hex.DecodeString(v.Entropy)
			words, err := bip39.NewMnemonic(entropy)
			if err != nil || words != v.Mnemonic {
				t.Fatalf("entropy → words = %q, %v", words, err)
			}
			m, err := NormalizeMnemonic(v.Mnemonic)
			if err != nil || m != v.Mnemonic {
				t.Fatalf("NormalizeMnemonic = %q, %v", m, err)
			}
			seed := bip39.NewSeed(m, file.Passphrase)
			if hex.EncodeToString(seed) != v.Seed {
				t.Fatalf("seed = %x", seed)
			}
			keys, err := FromMnemonic(v.Mnemonic, file.Passphrase)
			if err != nil {
				t.Fatal(err)
			}
			if keys.RootXPrv() != v.XPrv {
				t.Fatalf("root = %s, want %s", keys.RootXPrv(), v.XPrv)
			}
		})
	}
}

// TestWalletMatchesMetaMask: the default account must be the one MetaMask
// (and Hardhat, and go-ethereum's accounts.DefaultBaseDerivationPath) shows.
func TestWalletMatchesMetaMask(t *testing.T) {
	tests := []struct{ mnemonic, address string }{
		{testJunk, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"},
		{abandonAbout, "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"},
	}
	for _, tt := range tests {
		w, err := mustKeys(t, tt.mnemonic, "").Wallet()
		if err != nil {
			t.Fatal(err)
		}
		if w.Address.Hex() != tt.address {
			t.Errorf("%q: wallet = %s, want %s", tt.mnemonic, w.Address.Hex(), tt.address)
		}
		if w.Path.String() != "m/44'/60'/0'/0/0" {
			t.Errorf("wallet path = %s", w.Path)
		}
	}
}

func TestNormalizeMnemonic(t *testing.T) {
	words := strings.Fields(abandonAbout)
	swapped := append([]string{}, words...)
	swapped[10], swapped[11] = swapped[11], swapped[10]
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr error
	}{
		{"canonical", abandonAbout, abandonAbout, nil},
		{"shouting and spaces", "  ABANDON abandon\tabandon abandon abandon abandon abandon abandon abandon abandon abandon About\n", abandonAbout, nil},
		{"eleven words", strings.Join(words[:11], " "), "", ErrWordCount},
		{"thirteen words", abandonAbout + " about", "", ErrWordCount},
		{"empty", "", "", ErrWordCount},
		{"unknown word", strings.Replace(abandonAbout, "about", "aboot", 1), "", ErrUnknownWord},
		{"bad checksum", strings.Join(swapped, " "), "", ErrChecksum},
		{"last word changed", strings.Replace(abandonAbout, "about", "zoo", 1), "", ErrChecksum},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeMnemonic(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	_, err := NormalizeMnemonic(strings.Replace(abandonAbout, "about", "aboot", 1))
	if !strings.Contains(err.Error(), `word 12 "aboot"`) {
		t.Fatalf("error %q does not name the word and its position", err)
	}
	if _, err := FromMnemonic(strings.Join(swapped, " "), ""); !errors.Is(err, ErrChecksum) {
		t.Fatalf("FromMnemonic with a bad checksum: %v", err)
	}
}

// TestSeparation: nothing derived for one use or provider equals, or is
// visibly related to, another.
func TestSeparation(t *testing.T) {
	k := mustKeys(t, testJunk, "")
	wallet, _ := k.Wallet()
	seen := map[string]string{wallet.Address.Hex(): "wallet"}
	tags := map[string]uint32{}
	for p := uint32(0); p < 5; p++ {
		for e := uint32(0); e < 3; e++ {
			d, err := k.Delegate(p, e)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("delegate(%d,%d)", p, e)
			if other, dup := seen[d.Address.Hex()]; dup {
				t.Fatalf("%s has the same address as %s", name, other)
			}
			seen[d.Address.Hex()] = name
		}
		tag, err := k.Tag(p)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := tags[zkhash.Hex(tag)]; dup {
			t.Fatalf("providers %d and %d share a tag", p, other)
		}
		tags[zkhash.Hex(tag)] = p
	}
	s, _ := k.Identity()
	v, _ := k.Viewer(0)
	cv, _ := k.ViewerCommitment(0)
	g, _ := k.GrantSecret(1, cv)
	if s.Element() == v.Element() || s.Element() == g.Element() || v.Element() == g.Element() {
		t.Fatal("field secrets of different uses coincide")
	}
	// A BIP39 passphrase gives an unrelated identity.
	c1, _ := k.Commitment()
	c2, _ := mustKeys(t, testJunk, "hospital").Commitment()
	if c1 == c2 {
		t.Fatal("passphrase does not change the identity")
	}
}

func TestIndexRange(t *testing.T) {
	k := mustKeys(t, testJunk, "")
	if _, err := k.Delegate(1<<31, 0); !errors.Is(err, ErrIndexRange) {
		t.Fatalf("provider 2^31: %v", err)
	}
	if _, err := k.Delegate(1, 1<<31); !errors.Is(err, ErrIndexRange) {
		t.Fatalf("rotation 2^31: %v", err)
	}
	if _, err := k.Viewer(1 << 31); !errors.Is(err, ErrIndexRange) {
		t.Fatalf("viewer 2^31: %v", err)
	}
	if _, err := k.GrantSecret(1<<31, zkhash.FromUint64(1)); !errors.Is(err, ErrIndexRange) {
		t.Fatalf("grant secret at provider 2^31: %v", err)
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	k := mustKeys(t, testJunk, "")
	s, _ := k.Identity()
	d, _ := k.Delegate(1, 0)
	secretHex := zkhash.Hex(s.Element())[2:]
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("Derived", "s", s, "delegate", d)
	out := fmt.Sprintf("%v %+v %#v %s %d %x %q", s, s, s, s, s, s, s) + buf.String()
	if strings.Contains(out, secretHex) || strings.Contains(out, secretHex[:16]) {
		t.Fatalf("secret leaked: %s", out)
	}
	if !strings.Contains(buf.String(), d.Address.Hex()) {
		t.Fatalf("account log lost its address: %s", buf.String())
	}
	keyHex := fmt.Sprintf("%x", d.PrivateKey().D.Bytes())
	if strings.Contains(fmt.Sprintf("%v %+v", d, d)+buf.String(), keyHex) {
		t.Fatal("delegate private key leaked")
	}
}

// Vector is one mnemonic's entry in testdata/vectors.json (published in
// docs/keys.md, read again by the contract tests).
type Vector struct {
	Mnemonic   string           `json:"mnemonic"`
	Passphrase string           `json:"passphrase"`
	Wallet     string           `json:"wallet"`
	Secret     string           `json:"identitySecret"`
	Commitment string           `json:"commitment"`
	Delegates  []DelegateVector `json:"delegates"`
	Viewer     ViewerVector     `json:"viewer0"`
	Grant      string           `json:"grantSecret_1_viewer0"` // k at provider 1 for Cv = viewer0's commitment
}

type DelegateVector struct {
	Provider uint32 `json:"provider"`
	Rotation uint32 `json:"rotation"`
	Path     string `json:"path"`
	Address  string `json:"address"`
	Tag      string `json:"tag"`
}

type ViewerVector struct {
	Secret     string `json:"secret"`
	Commitment string `json:"commitment"`
}

func buildVector(t *testing.T, mnemonic, passphrase string) Vector {
	k := mustKeys(t, mnemonic, passphrase)
	w, _ := k.Wallet()
	s, _ := k.Identity()
	c, _ := k.Commitment()
	v, _ := k.Viewer(0)
	cv, _ := k.ViewerCommitment(0)
	g, _ := k.GrantSecret(1, cv)
	out := Vector{
		Mnemonic: mnemonic, Passphrase: passphrase, Wallet: w.Address.Hex(),
		Secret: zkhash.Hex(s.Element()), Commitment: zkhash.Hex(c),
		Viewer: ViewerVector{Secret: zkhash.Hex(v.Element()), Commitment: zkhash.Hex(cv)},
		Grant:  zkhash.Hex(g.Element()),
	}
	for _, pe := range [][2]uint32{{1, 0}, {2, 0}, {3, 0}, {1, 1}} {
		d, err := k.Delegate(pe[0], pe[1])
		if err != nil {
			t.Fatal(err)
		}
		tag, _ := k.Tag(pe[0])
		out.Delegates = append(out.Delegates, DelegateVector{
			Provider: pe[0], Rotation: pe[1], Path: d.Path.String(), Address: d.Address.Hex(), Tag: zkhash.Hex(tag),
		})
	}
	// The derived values must agree with zkhash computed from the secrets.
	if zkhash.Commitment(s.Element()) != c || zkhash.ViewerCommitment(v.Element()) != cv {
		t.Fatal("derived commitments disagree with zkhash")
	}
	return out
}

func TestGoldenVectors(t *testing.T) {
	var vs []Vector
	for _, mp := range [][2]string{
		{testJunk, ""},
		{abandonAbout, ""},
		{abandonAbout, "TREZOR"},
		{"legal winner thank year wave sausage worth useful legal winner thank yellow", ""},
	} {
		vs = append(vs, buildVector(t, mp[0], mp[1]))
	}
	got, _ := json.MarshalIndent(vs, "", "  ")
	got = append(got, '\n')
	const path = "testdata/vectors.json"
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./delegate -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale or a derivation changed: every existing user's keys would change", path)
	}
}

func BenchmarkFromMnemonic(b *testing.B) {
	for b.Loop() {
		k := mustKeys(b, testJunk, "")
		if _, err := k.Tag(1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGrantSecretPerViewer: k depends on the viewer, not on how many grants
// the chain shows, so two shares made at once to two viewers never reuse it
// (the old index-from-the-chain derivation did); the same viewer gets the
// same k again, also on a restored device; other providers get other roots.
func TestGrantSecretPerViewer(t *testing.T) {
	k := mustKeys(t, testJunk, "")
	restored := mustKeys(t, testJunk, "")
	cvA := zkhash.ViewerCommitment(zkhash.FromUint64(1))
	cvB := zkhash.ViewerCommitment(zkhash.FromUint64(2))
	seen := map[fr.Element]string{}
	for _, c := range []struct {
		name     string
		provider uint32
		cv       fr.Element
	}{{"viewer A at 1", 1, cvA}, {"viewer B at 1", 1, cvB}, {"viewer A at 2", 2, cvA}, {"viewer B at 2", 2, cvB}} {
		g, err := k.GrantSecret(c.provider, c.cv)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[g.Element()]; dup {
			t.Fatalf("%s and %s share k", c.name, other)
		}
		seen[g.Element()] = c.name
		again, _ := restored.GrantSecret(c.provider, c.cv)
		if again.Element() != g.Element() {
			t.Fatalf("%s: a restored seed derives another k", c.name)
		}
	}
	// Another seed gives the same viewer another k.
	other, _ := mustKeys(t, abandonAbout, "").GrantSecret(1, cvA)
	if _, dup := seen[other.Element()]; dup {
		t.Fatal("two seeds derive the same k for one viewer")
	}
	if p, _ := GrantRootPath(7); p.String() != "m/19794'/3'/7'" {
		t.Fatalf("grant root path %s", p)
	}
}
