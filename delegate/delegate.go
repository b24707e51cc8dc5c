package delegate

import (
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"strings"

	"github.com/btcsuite/btcd/btcutil/hdkeychain"
	"github.com/btcsuite/btcd/chaincfg"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	bip39 "github.com/cosmos/go-bip39"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
	"golang.org/x/text/unicode/norm"

	"github.com/medrec-zk/medrec/zkhash"
)

// Purpose is MedRec-ZK's BIP32 purpose number: 0x4D52, "MR".
const Purpose = 19794

// Path branches below m/Purpose'.
const (
	branchIdentity = 0
	branchDelegate = 1
	branchViewer   = 2
	branchGrant    = 3
)

const hardened = hdkeychain.HardenedKeyStart

// Path is a BIP32 derivation path; Hardened entries have hdkeychain.HardenedKeyStart added.
type Path []uint32

// String renders p in the usual m/44'/60'/0'/0/0 form.
func (p Path) String() string {
	var b strings.Builder
	b.WriteString("m")
	for _, i := range p {
		if i >= hardened {
			fmt.Fprintf(&b, "/%d'", i-hardened)
		} else {
			fmt.Fprintf(&b, "/%d", i)
		}
	}
	return b.String()
}

// WalletPath is the default Ethereum account path, m/44'/60'/0'/0/0.
func WalletPath() Path { return Path{hardened + 44, hardened + 60, hardened + 0, 0, 0} }

// IdentityPath is the path of the identity secret s.
func IdentityPath() Path { return Path{hardened + Purpose, hardened + branchIdentity, hardened + 0} }

// DelegatePath is the path of the delegate account for provider p and rotation e.
func DelegatePath(provider, rotation uint32) (Path, error) {
	if err := checkIndex(provider, rotation); err != nil {
		return nil, err
	}
	return Path{hardened + Purpose, hardened + branchDelegate, hardened + provider, hardened + rotation}, nil
}

// ViewerPath is the path of viewer secret number index.
func ViewerPath(index uint32) (Path, error) {
	if err := checkIndex(index); err != nil {
		return nil, err
	}
	return Path{hardened + Purpose, hardened + branchViewer, hardened + index}, nil
}

// GrantRootPath is the path of the grant-secret root of the relationship at
// provider p (one per provider: a seed has one relationship there). The key
// there is only ever used through GrantSecret.
func GrantRootPath(provider uint32) (Path, error) {
	if err := checkIndex(provider); err != nil {
		return nil, err
	}
	return Path{hardened + Purpose, hardened + branchGrant, hardened + provider}, nil
}

func checkIndex(xs ...uint32) error {
	for _, x := range xs {
		if x >= hardened {
			return fmt.Errorf("%d: %w", x, ErrIndexRange)
		}
	}
	return nil
}

// NewMnemonic returns 12 fresh words (128 bits of entropy from crypto/rand).
func NewMnemonic() (string, error) {
	entropy, err := bip39.NewEntropy(128)
	if err != nil {
		return "", fmt.Errorf("delegate: entropy: %w", err)
	}
	m, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return "", fmt.Errorf("delegate: mnemonic: %w", err)
	}
	return m, nil
}

// NormalizeMnemonic checks a mnemonic as a person may type it (any case, any
// white space) and returns its canonical form: lower-case words separated by
// single spaces. The error names the first unknown word and its position.
func NormalizeMnemonic(s string) (string, error) {
	words := strings.Fields(strings.ToLower(norm.NFKD.String(s)))
	switch len(words) {
	case 12, 15, 18, 21, 24:
	default:
		return "", fmt.Errorf("got %d words: %w", len(words), ErrWordCount)
	}
	for i, w := range words {
		if _, ok := bip39.ReverseWordMap[w]; !ok {
			return "", fmt.Errorf("word %d %q: %w", i+1, w, ErrUnknownWord)
		}
	}
	m := strings.Join(words, " ")
	if _, err := bip39.MnemonicToByteArray(m); err != nil {
		return "", ErrChecksum
	}
	return m, nil
}

// Keys derives every key of one mnemonic. It holds the BIP32 root in memory;
// keep it no longer than needed.
type Keys struct {
	root *hdkeychain.ExtendedKey
}

// FromMnemonic validates mnemonic and derives the BIP32 root from it and the
// optional BIP39 passphrase (both NFKD-normalised, as BIP39 requires).
func FromMnemonic(mnemonic, passphrase string) (*Keys, error) {
	m, err := NormalizeMnemonic(mnemonic)
	if err != nil {
		return nil, err
	}
	seed := bip39.NewSeed(m, norm.NFKD.String(passphrase))
	return FromSeed(seed)
}

// FromSeed derives the BIP32 root from a BIP39 seed.
func FromSeed(seed []byte) (*Keys, error) {
	root, err := hdkeychain.NewMaster(seed, &chaincfg.MainNetParams)
	if err != nil {
		return nil, fmt.Errorf("delegate: bip32 root: %w", err)
	}
	return &Keys{root: root}, nil
}

// RootXPrv returns the serialised BIP32 root (for the BIP39 test vectors only;
// it is the whole secret).
func (k *Keys) RootXPrv() string { return k.root.String() }

func (k *Keys) derive(p Path) (*hdkeychain.ExtendedKey, error) {
	key := k.root
	for _, i := range p {
		var err error
		if key, err = key.Derive(i); err != nil {
			return nil, fmt.Errorf("delegate: derive %s: %w", p, err)
		}
	}
	return key, nil
}

func (k *Keys) account(p Path) (*Account, error) {
	ext, err := k.derive(p)
	if err != nil {
		return nil, err
	}
	priv, err := ext.ECPrivKey()
	if err != nil {
		return nil, fmt.Errorf("delegate: key at %s: %w", p, err)
	}
	key := priv.ToECDSA()
	return &Account{Address: crypto.PubkeyToAddress(key.PublicKey), Path: p, key: key}, nil
}

// fieldSecret derives a BN254 scalar-field secret at path p for a named use.
func (k *Keys) fieldSecret(p Path, use string) (Secret, error) {
	return k.fieldSecretFor(p, use, nil)
}

// fieldSecretFor derives a BN254 scalar-field secret at path p for a named
// use and a public context (appended to the HKDF info after the use's name,
// which has a fixed length per use, so contexts never run into each other).
func (k *Keys) fieldSecretFor(p Path, use string, info []byte) (Secret, error) {
	ext, err := k.derive(p)
	if err != nil {
		return Secret{}, err
	}
	priv, err := ext.ECPrivKey()
	if err != nil {
		return Secret{}, fmt.Errorf("delegate: key at %s: %w", p, err)
	}
	wide, err := hkdf.Key(sha256.New, priv.Serialize(), nil, "medrec-zk/v1/"+use+string(info), 64)
	if err != nil {
		return Secret{}, fmt.Errorf("delegate: hkdf: %w", err)
	}
	var e fr.Element
	e.SetBigInt(new(big.Int).SetBytes(wide)) // reduces modulo r; the bias is below 2^-250
	if e.IsZero() {
		return Secret{}, fmt.Errorf("delegate: %s secret at %s is zero", use, p)
	}
	return Secret{e: e}, nil
}

// Wallet returns the default Ethereum account, m/44'/60'/0'/0/0.
func (k *Keys) Wallet() (*Account, error) { return k.account(WalletPath()) }

// Identity returns the identity secret s.
func (k *Keys) Identity() (Secret, error) { return k.fieldSecret(IdentityPath(), "identity") }

// Commitment returns the identity commitment C = H(D_commit; s), the value a
// provider enrols in the patient registry.
func (k *Keys) Commitment() (fr.Element, error) {
	s, err := k.Identity()
	if err != nil {
		return fr.Element{}, err
	}
	return zkhash.Commitment(s.e), nil
}

// Tag returns the relationship tag at provider p, H(D_tag; s, p).
func (k *Keys) Tag(provider uint32) (fr.Element, error) {
	s, err := k.Identity()
	if err != nil {
		return fr.Element{}, err
	}
	return zkhash.Tag(s.e, provider), nil
}

// Delegate returns the delegate account for provider p and rotation e.
func (k *Keys) Delegate(provider, rotation uint32) (*Account, error) {
	p, err := DelegatePath(provider, rotation)
	if err != nil {
		return nil, err
	}
	return k.account(p)
}

// Viewer returns viewer secret number index.
func (k *Keys) Viewer(index uint32) (Secret, error) {
	p, err := ViewerPath(index)
	if err != nil {
		return Secret{}, err
	}
	return k.fieldSecret(p, "viewer")
}

// ViewerCommitment returns Cv = H(D_viewer; v) of viewer secret number index:
// what a viewer hands a patient (text or QR code) to be granted access.
func (k *Keys) ViewerCommitment(index uint32) (fr.Element, error) {
	v, err := k.Viewer(index)
	if err != nil {
		return fr.Element{}, err
	}
	return zkhash.ViewerCommitment(v.e), nil
}

// GrantSecret returns the grant secret k of the anonymous grant at provider p
// to the viewer whose commitment is cv: HKDF-SHA256 of the relationship's
// grant-secret root (GrantRootPath) with info "medrec-zk/v1/grant-secret" ‖
// Cv (32 bytes, big-endian), reduced modulo r.
//
// k is a function of the viewer, so two shares made at once to two viewers
// never share it (a k chosen from the chain's grant count did), while the
// same viewer gets the same k — and so the same grant id g — again: sharing
// anew or re-issuing after a rotation keeps the viewer's share bundle
// working, and a restored seed recomputes it. Cv is public, but without the
// root nobody can compute k, so g still reveals nothing to whoever knows Cv.
func (k *Keys) GrantSecret(provider uint32, cv fr.Element) (Secret, error) {
	p, err := GrantRootPath(provider)
	if err != nil {
		return Secret{}, err
	}
	b := cv.Bytes()
	return k.fieldSecretFor(p, "grant-secret", b[:])
}

// Account is a secp256k1 account derived at Path.
type Account struct {
	Address common.Address
	Path    Path
	key     *ecdsa.PrivateKey
}

// PrivateKey returns the account's private key, for signing.
func (a *Account) PrivateKey() *ecdsa.PrivateKey { return a.key }

// String shows the address and path, never the key.
func (a *Account) String() string { return a.Address.Hex() + " (" + a.Path.String() + ")" }

// LogValue keeps the key out of structured logs.
func (a *Account) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Secret is a BN254 scalar-field secret (s, v or k). It formats and logs as
// "[secret]" so it cannot leak through a log line or an error by accident;
// Element returns the value for use in a hash or a witness.
type Secret struct{ e fr.Element }

// NewSecret wraps a field element as a Secret.
func NewSecret(e fr.Element) Secret { return Secret{e: e} }

// Element returns the secret value.
func (s Secret) Element() fr.Element { return s.e }

// IsZero reports whether the secret is unset.
func (s Secret) IsZero() bool { return s.e.IsZero() }

// String redacts the value.
func (Secret) String() string { return "[secret]" }

// GoString redacts the value in %#v.
func (Secret) GoString() string { return "[secret]" }

// LogValue redacts the value in slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("[secret]") }

// Format redacts the value under every fmt verb.
func (Secret) Format(f fmt.State, _ rune) { io.WriteString(f, "[secret]") }
