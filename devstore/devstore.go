// Package devstore is the encrypted device store: what a person's device
// remembers between sessions — for now, what the wallet verified at each
// provider — in one file beside the keystore. The file holds named
// sections, each a JSON value owned by whoever names it; it is encrypted
// with AES-256-GCM under a key derived from the seed
// (delegate.Keys.DeviceStoreKey; docs/keys.md), so another seed, or anyone
// without the words, reads nothing, and any change to the file makes it
// unreadable rather than silently different. Every write replaces the whole
// file atomically (internal/atomicfile): a crash leaves the old content or
// the new, never a mix.
package devstore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// Format names the file format; it is also the encryption's additional
// data, so a file of another format or version never decrypts as this one.
const Format = "medrec-device-store-v1"

// ErrUnreadable says the file exists but cannot be decrypted with this key
// (another seed's store) or was changed since it was written.
var ErrUnreadable = errors.New("devstore: the device store cannot be read with this key, or it was changed")

// file is the on-disk form: the plaintext is a JSON object of sections.
type file struct {
	Format string `json:"format"`
	Nonce  []byte `json:"nonce"` // 12 random bytes, fresh for every write
	Data   []byte `json:"data"`  // AES-256-GCM ciphertext and tag
}

// Store is an open device store.
type Store struct {
	path string
	aead cipher.AEAD

	mu       sync.Mutex
	sections map[string]json.RawMessage
}

// Open reads the store at path with key; a missing file is an empty store
// (created by the first Put). ErrUnreadable if the file is not this key's
// store as it was written.
func Open(path string, key delegate.DeviceKey) (*Store, error) {
	k := key.Bytes()
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("devstore: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("devstore: %w", err)
	}
	s := &Store{path: path, aead: aead, sections: map[string]json.RawMessage{}}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("devstore: %w", err)
	}
	var f file
	if err := json.Unmarshal(raw, &f); err != nil || f.Format != Format || len(f.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: %s is not a device store of format %s", ErrUnreadable, path, Format)
	}
	plain, err := aead.Open(nil, f.Nonce, f.Data, []byte(Format))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrUnreadable, path)
	}
	if err := json.Unmarshal(plain, &s.sections); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnreadable, path, err)
	}
	return s, nil
}

// Path returns the file's path.
func (s *Store) Path() string { return s.path }

// Get decodes section name into v and reports whether it exists.
func (s *Store) Get(name string, v any) (bool, error) {
	s.mu.Lock()
	raw, ok := s.sections[name]
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("devstore: section %q: %w", name, err)
	}
	return true, nil
}

// Put sets section name to v (JSON) and writes the store. If writing fails,
// the section keeps its old value, in memory as on disk.
func (s *Store) Put(name string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("devstore: section %q: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.sections[name]
	s.sections[name] = raw
	if err := s.writeLocked(); err != nil {
		if had {
			s.sections[name] = old
		} else {
			delete(s.sections, name)
		}
		return err
	}
	return nil
}

func (s *Store) writeLocked() error {
	plain, err := json.Marshal(s.sections)
	if err != nil {
		return fmt.Errorf("devstore: %w", err)
	}
	f := file{Format: Format, Nonce: make([]byte, s.aead.NonceSize())}
	if _, err := rand.Read(f.Nonce); err != nil {
		return fmt.Errorf("devstore: %w", err)
	}
	f.Data = s.aead.Seal(nil, f.Nonce, plain, []byte(Format))
	out, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("devstore: %w", err)
	}
	if err := atomicfile.Write(s.path, out, 0o600); err != nil {
		return fmt.Errorf("devstore: write %s: %w", s.path, err)
	}
	return nil
}
