package devstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/medrec-zk/medrec/delegate"
)

func key(t *testing.T, words string) delegate.DeviceKey {
	t.Helper()
	k, err := delegate.FromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	dk, err := k.DeviceStoreKey()
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

const (
	words = "test test test test test test test test test test test junk"
	other = "legal winner thank year wave sausage worth useful legal winner thank yellow"
)

type memo struct {
	Size uint64            `json:"size"`
	Seen map[string]string `json:"seen"`
}

// TestRoundTrip: sections written survive reopening, the file holds no
// plaintext and is private to its owner, and a missing section is absent.
func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keystore.json.device")
	k := key(t, words)
	s, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Get("nothing", new(memo)); ok || err != nil {
		t.Fatalf("empty store: %v %v", ok, err)
	}
	want := memo{Size: 42, Seen: map[string]string{"Observation/o1/_history/1": "a-very-recognisable-value"}}
	if err := s.Put("verified/1", want); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("other", []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("recognisable")) || bytes.Contains(raw, []byte("verified/1")) {
		t.Fatalf("plaintext in the file: %s", raw)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	again, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	var got memo
	if ok, err := again.Get("verified/1", &got); !ok || err != nil || got.Size != 42 || got.Seen["Observation/o1/_history/1"] != "a-very-recognisable-value" {
		t.Fatalf("after reopening: %+v %v %v", got, ok, err)
	}
	var ints []int
	if ok, err := again.Get("other", &ints); !ok || err != nil || len(ints) != 2 {
		t.Fatalf("second section: %v %v %v", ints, ok, err)
	}
	// A value that cannot be encoded changes nothing.
	if err := again.Put("verified/1", func() {}); err == nil {
		t.Fatal("a function was stored")
	}
	if ok, _ := again.Get("verified/1", &got); !ok || got.Size != 42 {
		t.Fatal("a failed put changed the section")
	}
}

// TestUnreadable: another seed's key, any changed byte, a truncated file
// or another format is ErrUnreadable — never an empty or partial store.
func TestUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store")
	k := key(t, words)
	s, _ := Open(path, k)
	if err := s.Put("a", "value"); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if _, err := Open(path, key(t, other)); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("another seed's key: %v", err)
	}
	for i := 0; i < len(raw); i += 7 {
		bad := bytes.Clone(raw)
		bad[i] ^= 1
		p := filepath.Join(dir, fmt.Sprint("flipped-", i))
		os.WriteFile(p, bad, 0o600)
		if _, err := Open(p, k); !errors.Is(err, ErrUnreadable) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
	}
	for name, content := range map[string][]byte{
		"truncated":       raw[:len(raw)/2],
		"empty":           {},
		"other format":    bytes.Replace(raw, []byte(Format), []byte("medrec-device-store-v9"), 1),
		"not JSON at all": []byte("hello"),
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, content, 0o600)
		if _, err := Open(p, k); !errors.Is(err, ErrUnreadable) {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestConcurrentPuts: sections put at once from many goroutines all end up
// in the file.
func TestConcurrentPuts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store")
	k := key(t, words)
	s, _ := Open(path, k)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Put(fmt.Sprint("section-", i), i); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	again, err := Open(path, k)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		var v int
		if ok, err := again.Get(fmt.Sprint("section-", i), &v); !ok || err != nil || v != i {
			t.Fatalf("section %d: %v %v %v", i, v, ok, err)
		}
	}
}
