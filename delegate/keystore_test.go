package delegate

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// veryLight keeps scrypt cheap in tests; real keystores use StandardScryptN.
const veryLightN, veryLightP = 1 << 4, 1

func writeTestKeystore(t *testing.T) (string, Keystore) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keystore.json")
	ks := Keystore{Mnemonic: testJunk, Passphrase: "ünïcode"}
	if err := WriteKeystore(path, ks, "correct horse", veryLightN, veryLightP); err != nil {
		t.Fatal(err)
	}
	return path, ks
}

func TestKeystoreRoundTrip(t *testing.T) {
	path, want := writeTestKeystore(t)
	got, err := ReadTestKeystore(path, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("read back %+v", got)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("keystore mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	for _, w := range strings.Fields(testJunk) {
		if strings.Contains(string(raw), w+" ") {
			t.Fatal("keystore holds the words in clear")
		}
	}
}

func TestKeystoreErrors(t *testing.T) {
	path, _ := writeTestKeystore(t)
	raw, _ := os.ReadFile(path)
	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	tamper := func(mut func(map[string]any)) string {
		var g map[string]any
		json.Unmarshal(raw, &g)
		mut(g)
		out, _ := json.Marshal(g)
		p := filepath.Join(t.TempDir(), "ks.json")
		os.WriteFile(p, out, 0o600)
		return p
	}
	flipHex := func(s string) string {
		if s[0] == '0' {
			return "1" + s[1:]
		}
		return "0" + s[1:]
	}
	tests := []struct {
		name     string
		path     string
		password string
		want     error
	}{
		{"wrong password", path, "wrong horse", ErrWrongPassword},
		{"empty password", path, "", ErrWrongPassword},
		{"ciphertext changed", tamper(func(g map[string]any) {
			c := g["crypto"].(map[string]any)
			c["ciphertext"] = flipHex(c["ciphertext"].(string))
		}), "correct horse", ErrWrongPassword},
		{"address changed", tamper(func(g map[string]any) {
			g["address"] = "0x0000000000000000000000000000000000000001"
		}), "correct horse", ErrCorruptKeystore},
		{"other kind", tamper(func(g map[string]any) { g["kind"] = "geth-key" }), "correct horse", ErrCorruptKeystore},
		{"unknown field", tamper(func(g map[string]any) { g["extra"] = 1 }), "correct horse", ErrCorruptKeystore},
		{"kdf removed", tamper(func(g map[string]any) {
			delete(g["crypto"].(map[string]any), "kdf")
		}), "correct horse", ErrCorruptKeystore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadTestKeystore(tt.path, tt.password)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("truncated", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "ks.json")
		os.WriteFile(p, raw[:len(raw)/2], 0o600)
		if _, err := ReadTestKeystore(p, "correct horse"); !errors.Is(err, ErrCorruptKeystore) {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := ReadTestKeystore(filepath.Join(t.TempDir(), "none"), "x"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error = %v", err)
		}
	})
}

// TestTestKeystoreRefused: a keystore written with the cheap test cost is
// refused by ReadKeystore — what every real path uses — before any password
// is tried; ReadTestKeystore (tests, the make run demo) opens it. A
// keystore of the standard cost opens with ReadKeystore.
func TestTestKeystoreRefused(t *testing.T) {
	for _, cost := range []struct {
		name string
		n, p int
	}{{"very light", veryLightN, veryLightP}, {"light", LightScryptN, LightScryptP}, {"standard n halved", StandardScryptN / 2, StandardScryptP}} {
		path := filepath.Join(t.TempDir(), "keystore.json")
		if err := WriteKeystore(path, Keystore{Mnemonic: testJunk}, "correct horse", cost.n, cost.p); err != nil {
			t.Fatal(err)
		}
		for _, pw := range []string{"correct horse", "wrong"} {
			if _, err := ReadKeystore(path, pw); !errors.Is(err, ErrTestKeystore) {
				t.Fatalf("%s keystore, password %q: %v", cost.name, pw, err)
			}
		}
		if ks, err := ReadTestKeystore(path, "correct horse"); err != nil || ks.Mnemonic != testJunk {
			t.Fatalf("%s keystore as a test keystore: %v", cost.name, err)
		}
	}
	path := filepath.Join(t.TempDir(), "keystore.json")
	if err := WriteKeystore(path, Keystore{Mnemonic: testJunk}, "correct horse", StandardScryptN, StandardScryptP); err != nil {
		t.Fatal(err)
	}
	if ks, err := ReadKeystore(path, "correct horse"); err != nil || ks.Mnemonic != testJunk {
		t.Fatalf("a standard keystore: %v", err)
	}
}

func TestKeystoreNeverOverwrites(t *testing.T) {
	path, _ := writeTestKeystore(t)
	before, _ := os.ReadFile(path)
	err := WriteKeystore(path, Keystore{Mnemonic: abandonAbout}, "other", veryLightN, veryLightP)
	if !errors.Is(err, ErrKeystoreExists) {
		t.Fatalf("error = %v, want ErrKeystoreExists", err)
	}
	after, _ := os.ReadFile(path)
	if string(before) != string(after) {
		t.Fatal("existing keystore was modified")
	}
	if err := WriteKeystore(filepath.Join(t.TempDir(), "k.json"), Keystore{Mnemonic: "not words"}, "pw", veryLightN, veryLightP); !errors.Is(err, ErrWordCount) {
		t.Fatalf("invalid mnemonic: error = %v", err)
	}
}
