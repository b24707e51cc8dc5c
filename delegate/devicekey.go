package delegate

import (
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
)

// branchDevice is the path branch of keys that only ever encrypt this
// person's own files: on their own devices, or sealed where only they can
// open them (the locator note).
const branchDevice = 4

// DeviceStorePath is the path of the device-store key, m/19794'/4'/0'.
func DeviceStorePath() Path { return Path{hardened + Purpose, hardened + branchDevice, hardened + 0} }

// DeviceKey is a symmetric key of branch 4: the device store's (package
// devstore) or the locator note's. It formats and logs redacted.
type DeviceKey struct{ b [32]byte }

// Bytes returns the key.
func (k DeviceKey) Bytes() [32]byte { return k.b }

// String redacts the key.
func (DeviceKey) String() string { return "[secret]" }

// GoString redacts the key in %#v.
func (DeviceKey) GoString() string { return "[secret]" }

// LogValue redacts the key in slog.
func (DeviceKey) LogValue() slog.Value { return slog.StringValue("[secret]") }

// Format redacts the key under every fmt verb.
func (DeviceKey) Format(f fmt.State, _ rune) { io.WriteString(f, "[secret]") }

// DeviceStoreKey returns the key that encrypts what a device remembers
// between sessions (what it verified at each provider): the 32-byte
// private key at DeviceStorePath expanded with HKDF-SHA256 (no salt, info
// "medrec-zk/v1/device-store") to 32 bytes. Every device of one seed
// derives the same key; nothing derived from it is ever public.
func (k *Keys) DeviceStoreKey() (DeviceKey, error) {
	return k.deviceKey(DeviceStorePath(), "device-store")
}

// LocatorPath is the path of the locator key, m/19794'/4'/1'.
func LocatorPath() Path { return Path{hardened + Purpose, hardened + branchDevice, hardened + 1} }

// LocatorKey returns the key that seals the patient's locator note (where
// their leaf is in the registry's tree, kept at gateways for a device
// restored from the words): the 32-byte private key at LocatorPath
// expanded with HKDF-SHA256 (no salt, info "medrec-zk/v1/locator") to 32
// bytes. The gateways keep the sealed note; the key never leaves the device.
func (k *Keys) LocatorKey() (DeviceKey, error) {
	return k.deviceKey(LocatorPath(), "locator")
}

// deviceKey expands the private key at p for a named use.
func (k *Keys) deviceKey(p Path, use string) (DeviceKey, error) {
	ext, err := k.derive(p)
	if err != nil {
		return DeviceKey{}, err
	}
	priv, err := ext.ECPrivKey()
	if err != nil {
		return DeviceKey{}, fmt.Errorf("delegate: key at %s: %w", p, err)
	}
	b, err := hkdf.Key(sha256.New, priv.Serialize(), nil, "medrec-zk/v1/"+use, 32)
	if err != nil {
		return DeviceKey{}, fmt.Errorf("delegate: hkdf: %w", err)
	}
	var out DeviceKey
	copy(out.b[:], b)
	return out, nil
}
