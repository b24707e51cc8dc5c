package delegate

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// TestDeviceStoreKey pins the device-store key of the documented mnemonic
// (docs/keys.md), recomputes it from the path's private key as the page
// describes, and checks it is redacted when printed.
func TestDeviceStoreKey(t *testing.T) {
	k, err := FromMnemonic("test test test test test test test test test test test junk", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := DeviceStorePath().String(); p != "m/19794'/4'/0'" {
		t.Fatalf("path %s", p)
	}
	key, err := k.DeviceStoreKey()
	if err != nil {
		t.Fatal(err)
	}
	b := key.Bytes()
	const want = "4aefc783e21e307045db2402a3e73997c25bc92387713b0d2c53e6f93b3ac791"
	if got := hex.EncodeToString(b[:]); got != want {
		t.Fatalf("device-store key %s, want %s", got, want)
	}
	ext, _ := k.derive(DeviceStorePath())
	priv, _ := ext.ECPrivKey()
	again, _ := hkdf.Key(sha256.New, priv.Serialize(), nil, "medrec-zk/v1/device-store", 32)
	if hex.EncodeToString(again) != want {
		t.Fatal("the key is not HKDF-SHA256 of the path's private key")
	}
	// Another seed, another key.
	other, _ := FromMnemonic("legal winner thank year wave sausage worth useful legal winner thank yellow", "")
	if ok, _ := other.DeviceStoreKey(); ok.Bytes() == b {
		t.Fatal("two seeds give one device-store key")
	}
	for _, s := range []string{fmt.Sprint(key), fmt.Sprintf("%v %+v %#v %x %s", key, key, key, key, key)} {
		if strings.Contains(s, want[:8]) || strings.Count(s, "[secret]") == 0 {
			t.Fatalf("printed key: %s", s)
		}
	}
}

// TestLocatorKey pins the locator key of the documented mnemonic
// (docs/keys.md) and checks it is not the device-store key.
func TestLocatorKey(t *testing.T) {
	k, err := FromMnemonic("test test test test test test test test test test test junk", "")
	if err != nil {
		t.Fatal(err)
	}
	if p := LocatorPath().String(); p != "m/19794'/4'/1'" {
		t.Fatalf("path %s", p)
	}
	key, err := k.LocatorKey()
	if err != nil {
		t.Fatal(err)
	}
	b := key.Bytes()
	ext, _ := k.derive(LocatorPath())
	priv, _ := ext.ECPrivKey()
	again, _ := hkdf.Key(sha256.New, priv.Serialize(), nil, "medrec-zk/v1/locator", 32)
	if hex.EncodeToString(again) != hex.EncodeToString(b[:]) {
		t.Fatal("the key is not HKDF-SHA256 of the path's private key")
	}
	const want = "3f80dc84ba41495e047c446d18cae0a75e72f0b56751859214435075ab582635"
	if got := hex.EncodeToString(b[:]); got != want {
		t.Fatalf("locator key %s, want %s", got, want)
	}
	if ds, _ := k.DeviceStoreKey(); ds.Bytes() == b {
		t.Fatal("the locator key is the device-store key")
	}
}
