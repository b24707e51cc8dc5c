package delegate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// Scrypt cost parameters: the standard ones (256 MB, about a second) for real
// keystores and light ones for tests.
const (
	StandardScryptN = keystore.StandardScryptN
	StandardScryptP = keystore.StandardScryptP
	LightScryptN    = keystore.LightScryptN
	LightScryptP    = keystore.LightScryptP
)

const (
	keystoreVersion = 1
	keystoreKind    = "medrec-zk-mnemonic"
)

// keystoreFile is the on-disk form. Address is the wallet account, so a person
// can tell keystores apart without decrypting them; it is used on no MedRec
// relationship.
type keystoreFile struct {
	Version int                 `json:"version"`
	Kind    string              `json:"kind"`
	Address common.Address      `json:"address"`
	Crypto  keystore.CryptoJSON `json:"crypto"`
}

type keystorePayload struct {
	Mnemonic   string `json:"mnemonic"`
	Passphrase string `json:"passphrase,omitempty"`
}

// Keystore is a decrypted keystore: the mnemonic and BIP39 passphrase.
type Keystore struct {
	Mnemonic   string
	Passphrase string
}

// Keys derives the keys of the keystore's mnemonic.
func (ks Keystore) Keys() (*Keys, error) { return FromMnemonic(ks.Mnemonic, ks.Passphrase) }

// WriteKeystore encrypts the mnemonic and passphrase with password (scrypt
// cost scryptN, scryptP) and writes them to path with mode 0600. It never
// overwrites an existing file, and a crash leaves either no file or a complete
// one: the data is written to a temporary file, synced, then linked into place.
func WriteKeystore(path string, ks Keystore, password string, scryptN, scryptP int) error {
	m, err := NormalizeMnemonic(ks.Mnemonic)
	if err != nil {
		return err
	}
	keys, err := FromMnemonic(m, ks.Passphrase)
	if err != nil {
		return err
	}
	wallet, err := keys.Wallet()
	if err != nil {
		return err
	}
	plain, err := json.Marshal(keystorePayload{Mnemonic: m, Passphrase: ks.Passphrase})
	if err != nil {
		return err
	}
	cj, err := keystore.EncryptDataV3(plain, []byte(password), scryptN, scryptP)
	if err != nil {
		return fmt.Errorf("delegate: encrypt keystore: %w", err)
	}
	out, err := json.MarshalIndent(keystoreFile{Version: keystoreVersion, Kind: keystoreKind, Address: wallet.Address, Crypto: cj}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteNew(path, append(out, '\n'), 0o600); err != nil {
		if errors.Is(err, atomicfile.ErrExists) {
			return fmt.Errorf("%s: %w", path, ErrKeystoreExists)
		}
		return fmt.Errorf("delegate: write keystore: %w", err)
	}
	return nil
}

// ReadKeystore decrypts the keystore at path. It refuses a keystore
// written with a scrypt cost below the standard one (ErrTestKeystore):
// such a keystore is for tests and demos, whose words are not secret, and
// a password guess against it costs almost nothing.
func ReadKeystore(path, password string) (Keystore, error) {
	return readKeystore(path, password, false)
}

// ReadTestKeystore is ReadKeystore that also opens keystores written with
// the cheap test cost (LightScryptN): for tests and the `make run` demo only.
func ReadTestKeystore(path, password string) (Keystore, error) {
	return readKeystore(path, password, true)
}

// weakKDF reports whether a keystore's key derivation costs less than the
// standard scrypt.
func weakKDF(c keystore.CryptoJSON) bool {
	n, _ := c.KDFParams["n"].(float64)
	p, _ := c.KDFParams["p"].(float64)
	return c.KDF != "scrypt" || n < StandardScryptN || p < StandardScryptP
}

func readKeystore(path, password string, allowTest bool) (Keystore, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Keystore{}, fmt.Errorf("delegate: read keystore: %w", err)
	}
	var f keystoreFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return Keystore{}, fmt.Errorf("%s: %w: %v", path, ErrCorruptKeystore, err)
	}
	if f.Version != keystoreVersion || f.Kind != keystoreKind {
		return Keystore{}, fmt.Errorf("%s: %w: version %d kind %q", path, ErrCorruptKeystore, f.Version, f.Kind)
	}
	if !allowTest && weakKDF(f.Crypto) {
		return Keystore{}, fmt.Errorf("%s: %w", path, ErrTestKeystore)
	}
	plain, err := keystore.DecryptDataV3(f.Crypto, password)
	switch {
	case errors.Is(err, keystore.ErrDecrypt):
		return Keystore{}, ErrWrongPassword
	case err != nil:
		return Keystore{}, fmt.Errorf("%s: %w: %v", path, ErrCorruptKeystore, err)
	}
	var p keystorePayload
	if err := json.Unmarshal(plain, &p); err != nil {
		return Keystore{}, fmt.Errorf("%s: %w: payload: %v", path, ErrCorruptKeystore, err)
	}
	m, err := NormalizeMnemonic(p.Mnemonic)
	if err != nil {
		return Keystore{}, fmt.Errorf("%s: %w: %v", path, ErrCorruptKeystore, err)
	}
	ks := Keystore{Mnemonic: m, Passphrase: p.Passphrase}
	// The clear-text address must belong to the encrypted words.
	keys, err := ks.Keys()
	if err != nil {
		return Keystore{}, err
	}
	wallet, err := keys.Wallet()
	if err != nil {
		return Keystore{}, err
	}
	if wallet.Address != f.Address {
		return Keystore{}, fmt.Errorf("%s: %w: address does not match the encrypted mnemonic", path, ErrCorruptKeystore)
	}
	return ks, nil
}
