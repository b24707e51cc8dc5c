package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var medrecBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "medrec-cli")
	if err != nil {
		panic(err)
	}
	medrecBin = filepath.Join(dir, "medrec")
	if out, err := exec.Command("go", "build", "-o", medrecBin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// medrec runs the binary with stdin and no terminal (so nothing can
// prompt), in a fresh home directory.
func medrec(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return medrecAt(t, t.TempDir(), stdin, args...)
}

// medrecAt is medrec with home as the home directory, kept between runs.
func medrecAt(t *testing.T, home, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(medrecBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "HOME="+home)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = detachTTY()
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

const testJunk = "test test test test test test test test test test test junk"

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeysInspectJSON(t *testing.T) {
	r := medrec(t, testJunk+"\n", "keys", "inspect", "--mnemonic-file", "-", "--json", "--provider", "1", "--provider", "2")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var out InspectOutput
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, r.stdout)
	}
	// The same values as delegate/testdata/vectors.json.
	raw, err := os.ReadFile("../../delegate/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		Mnemonic, Wallet, Commitment string
		Delegates                    []struct {
			Provider, Rotation uint32
			Address, Tag       string
		}
	}
	json.Unmarshal(raw, &vectors)
	v := vectors[0]
	if v.Mnemonic != testJunk || out.Address != v.Wallet || out.Address != "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266" {
		t.Fatalf("address %s, vector %s", out.Address, v.Wallet)
	}
	if out.Commitment != v.Commitment {
		t.Fatalf("commitment %s, vector %s", out.Commitment, v.Commitment)
	}
	if len(out.Delegates) != 2 {
		t.Fatalf("delegates: %+v", out.Delegates)
	}
	for i, d := range out.Delegates {
		if d.Provider != v.Delegates[i].Provider || d.Address != v.Delegates[i].Address || d.Tag != v.Delegates[i].Tag {
			t.Errorf("delegate %d = %+v, vector %+v", i, d, v.Delegates[i])
		}
	}
	if strings.Contains(r.stdout+r.stderr, "junk") {
		t.Fatal("the words were echoed")
	}
}

func TestKeysNewRestoreInspect(t *testing.T) {
	dir := t.TempDir()
	ks := filepath.Join(dir, "ks.json")
	pw := writeFile(t, "correct horse battery")
	r := medrec(t, "", "keys", "new", "--keystore", ks, "--password-file", pw, "--insecure-test-kdf")
	if r.code != 0 {
		t.Fatalf("new: exit %d: %s", r.code, r.stderr)
	}
	var words []string
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasSuffix(f[0], ".") {
			words = append(words, f[1])
		}
	}
	if len(words) != 12 {
		t.Fatalf("expected 12 numbered words, got %v in:\n%s", words, r.stdout)
	}
	before, _ := os.ReadFile(ks)

	// A second `new` on the same path must refuse and change nothing.
	r = medrec(t, "", "keys", "new", "--keystore", ks, "--password-file", pw, "--insecure-test-kdf")
	if r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second new: exit %d: %s", r.code, r.stderr)
	}
	if after, _ := os.ReadFile(ks); !bytes.Equal(before, after) {
		t.Fatal("keystore changed by a refused `keys new`")
	}

	// Inspect from the keystore equals inspect from the printed words.
	// A test keystore is refused unless the command is told it is one.
	if r := medrec(t, "correct horse battery", "keys", "inspect", "--keystore", ks, "--password-file", "-", "--provider", "7"); r.code == 0 || !strings.Contains(r.stderr, "made for tests") {
		t.Fatalf("inspect of a test keystore: exit %d: %s", r.code, r.stderr)
	}
	fromKS := medrec(t, "correct horse battery", "keys", "inspect", "--keystore", ks, "--password-file", "-", "--json", "--provider", "7", "--insecure-test-kdf")
	fromWords := medrec(t, strings.Join(words, " "), "keys", "inspect", "--mnemonic-file", "-", "--json", "--provider", "7")
	if fromKS.code != 0 || fromWords.code != 0 || fromKS.stdout != fromWords.stdout {
		t.Fatalf("keystore and words disagree:\n%s\n%s\n%s%s", fromKS.stdout, fromWords.stdout, fromKS.stderr, fromWords.stderr)
	}

	// Restore the words into a second keystore: same identity.
	ks2 := filepath.Join(dir, "restored.json")
	r = medrec(t, strings.Join(words, "  ")+"\n", "keys", "restore", "--keystore", ks2, "--mnemonic-file", "-", "--password-file", pw, "--insecure-test-kdf")
	if r.code != 0 {
		t.Fatalf("restore: exit %d: %s", r.code, r.stderr)
	}
	fromKS2 := medrec(t, "", "keys", "inspect", "--keystore", ks2, "--password-file", pw, "--json", "--provider", "7", "--insecure-test-kdf")
	if fromKS2.stdout != fromKS.stdout {
		t.Fatal("restored keystore derives other keys")
	}
}

func TestKeysBadInput(t *testing.T) {
	dir := t.TempDir()
	ks := filepath.Join(dir, "ks.json")
	pw := writeFile(t, "correct horse battery")
	if r := medrec(t, testJunk, "keys", "restore", "--keystore", ks, "--mnemonic-file", "-", "--password-file", pw, "--insecure-test-kdf"); r.code != 0 {
		t.Fatalf("restore: %s", r.stderr)
	}
	corrupt := filepath.Join(dir, "corrupt.json")
	raw, _ := os.ReadFile(ks)
	os.WriteFile(corrupt, raw[:len(raw)/2], 0o600)
	swapped := "test test test test test test test test test test junk test"

	tests := []struct {
		name, stdin string
		args        []string
		code        int
		stderr      string
	}{
		{"bad checksum", swapped, []string{"keys", "inspect", "--mnemonic-file", "-"}, 1, "checksum"},
		{"unknown word", strings.Replace(testJunk, "junk", "junc", 1), []string{"keys", "inspect", "--mnemonic-file", "-"}, 1, `word 12 "junc"`},
		{"eleven words", "test test test test test test test test test test junk", []string{"keys", "inspect", "--mnemonic-file", "-"}, 1, "12, 15, 18, 21 or 24 words"},
		{"wrong password", "wrong horse battery", []string{"keys", "inspect", "--keystore", ks, "--password-file", "-", "--insecure-test-kdf"}, 1, "wrong keystore password"},
		{"a test keystore", "correct horse battery", []string{"keys", "inspect", "--keystore", ks, "--password-file", "-"}, 1, "made for tests"},
		{"corrupted keystore", "correct horse battery", []string{"keys", "inspect", "--keystore", corrupt, "--password-file", "-"}, 1, "corrupted"},
		{"missing keystore", "x", []string{"keys", "inspect", "--keystore", filepath.Join(dir, "none"), "--password-file", "-"}, 1, "no such file"},
		{"two secrets on stdin", testJunk, []string{"keys", "restore", "--keystore", filepath.Join(dir, "n.json"), "--mnemonic-file", "-", "--password-file", "-"}, 1, "only one secret"},
		{"no password and no terminal", testJunk, []string{"keys", "restore", "--keystore", filepath.Join(dir, "n.json"), "--mnemonic-file", "-"}, 1, "--password-file"},
		{"short password", testJunk, []string{"keys", "restore", "--keystore", filepath.Join(dir, "n.json"), "--mnemonic-file", "-", "--password-file", writeFile(t, "short")}, 1, "at least 8"},
		{"words on the command line", "", []string{"keys", "inspect", "--mnemonic", testJunk}, 2, "flag provided but not defined"},
		{"provider out of range", testJunk, []string{"keys", "inspect", "--mnemonic-file", "-", "--provider", "2147483648"}, 2, "below 2^31"},
		{"both sources", testJunk, []string{"keys", "inspect", "--mnemonic-file", "-", "--keystore", ks}, 2, "not both"},
		{"ceremony without dir", "", []string{"ceremony", "verify"}, 2, "dir"},
		{"ceremony missing", "", []string{"ceremony", "verify", "--dir", filepath.Join(dir, "none")}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := medrec(t, tt.stdin, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tt.code, r.stderr, tt.stderr)
			}
			if strings.Contains(r.stderr, "junk") && tt.name != "words on the command line" {
				t.Fatalf("a secret reached stderr: %s", r.stderr)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "n.json")); err == nil {
		t.Fatal("a failed restore left a keystore behind")
	}
}

func TestDSNHasPassword(t *testing.T) {
	for dsn, want := range map[string]bool{
		"":                                  false,
		"/var/lib/medrec/records.db":        false,
		"postgres://medrec@db:5432/records": false,
		"postgres://medrec:s3cret@db:5432/records":                       true,
		"postgresql://medrec@db/records?password=s3cret&sslmode=require": true,
		"host=db user=medrec dbname=records":                             false,
		"host=db user=medrec password=s3cret dbname=records":             true,
	} {
		if got := dsnHasPassword(dsn); got != want {
			t.Errorf("dsnHasPassword(%q) = %v, want %v", dsn, got, want)
		}
	}
	r := medrec(t, "", "provider", "serve", "--dir", t.TempDir(), "--provider", "1", "--db", "postgres://medrec:s3cret@127.0.0.1/records")
	if r.code != 2 || !strings.Contains(r.stderr, "PGPASSWORD") || strings.Contains(r.stderr, "s3cret") {
		t.Fatalf("a DSN with a password: exit %d, %s", r.code, r.stderr)
	}
}

// TestCeremonyInitInsertion: `ceremony init --insertion` starts a ceremony
// for the gateways' batch-insertion circuit too, its phase 1 sized for it;
// without the flag, the patients' circuits alone.
func TestCeremonyInitInsertion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
		not  string
	}{
		{[]string{"--insertion"}, []string{"phase 1 size 131072", "insertion", "ownership", "entitlement"}, ""},
		{nil, []string{"phase 1 size 8192", "ownership", "entitlement"}, "insertion"},
	} {
		dir := filepath.Join(t.TempDir(), "c")
		r := medrec(t, "", append([]string{"ceremony", "init", "--dir", dir}, tc.args...)...)
		if r.code != 0 {
			t.Fatalf("init %v: %d %s", tc.args, r.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("init %v: no %q in %q", tc.args, w, r.stdout)
			}
		}
		if tc.not != "" && strings.Contains(r.stdout, tc.not) {
			t.Errorf("init %v: %q in %q", tc.args, tc.not, r.stdout)
		}
	}
}
