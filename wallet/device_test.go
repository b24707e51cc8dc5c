package wallet

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/devstore"
	"github.com/medrec-zk/medrec/ledger"
)

// openStore opens the device store of words at path.
func openStore(t *testing.T, words, path string) *devstore.Store {
	t.Helper()
	keys, err := delegate.FromMnemonic(words, "")
	if err != nil {
		t.Fatal(err)
	}
	key, err := keys.DeviceStoreKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := devstore.Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestNamesAndSeenStayOnTheDevice: the names a patient gives grantees and
// what they have seen survive a restart (a new wallet on the same device
// store), the file holds neither in the clear, and a bad name changes
// nothing.
func TestNamesAndSeenStayOnTheDevice(t *testing.T) {
	n := newNet(t, 1)
	path := filepath.Join(t.TempDir(), "keystore.json.device")
	w := n.wallet(t, patientWords)
	w.Remember(openStore(t, patientWords, path))
	lee := AnonymousRef([32]byte{1, 2, 3})
	kim := AddressRef([20]byte{9})
	if err := w.SetNames(map[GrantRef]string{lee: "  Dr Lee,   cardiology ", kim: "Dr Kim"}); err != nil {
		t.Fatal(err)
	}
	if err := w.MarkSeen(1, 42); err != nil {
		t.Fatal(err)
	}
	if err := w.MarkSeen(1, 7); err != nil { // never goes back
		t.Fatal(err)
	}
	for _, bad := range []string{"", "   ", "a\x00b", string(bytes.Repeat([]byte("x"), MaxNameLen+1))} {
		if err := w.SetNames(map[GrantRef]string{lee: bad}); err == nil {
			t.Fatalf("name %q accepted", bad)
		}
	}

	again := n.wallet(t, patientWords)
	again.Remember(openStore(t, patientWords, path))
	names, err := again.Names()
	if err != nil {
		t.Fatal(err)
	}
	if names[lee] != "Dr Lee, cardiology" || names[kim] != "Dr Kim" || len(names) != 2 {
		t.Fatalf("names after a restart: %v", names)
	}
	seen, err := again.Seen()
	if err != nil {
		t.Fatal(err)
	}
	if seen[1] != 42 {
		t.Fatalf("seen after a restart: %v", seen)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("Lee")) || bytes.Contains(raw, []byte("Kim")) {
		t.Fatal("a name is in the device store file in the clear")
	}
	// Another seed's wallet on the same network knows none of them.
	other := n.wallet(t, viewerWords)
	if names, _ := other.Names(); len(names) != 0 {
		t.Fatalf("another seed sees names %v", names)
	}
}

// TestDirectory: one identity per grantee on every page — a named grantee
// is its name whichever way it is met (a grant, a log entry), an unnamed one
// a plain description with its short id, and every delegate this seed
// derives at a provider, at any rotation, is "you".
func TestDirectory(t *testing.T) {
	n := newNet(t, 1)
	w := n.wallet(t, patientWords)
	lee := AnonymousRef([32]byte{7})
	doctor := [20]byte{0xab, 0xcd}
	if err := w.SetNames(map[GrantRef]string{lee: "Dr Lee", AddressRef(doctor): "Dr Kim"}); err != nil {
		t.Fatal(err)
	}
	rels := []Relationship{{Provider: chainview.Provider{ID: 1, Name: "Provider 1"}, Rotation: 2}}
	dir, err := w.Directory(rels)
	if err != nil {
		t.Fatal(err)
	}
	old, err := w.Keys().Delegate(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := w.Keys().Delegate(2, 0) // a provider the patient has no relationship with
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		who       Who
		want, key string
		you       bool
	}{
		{"named anonymous grant", dir.Grantee(access.AnonymousGrantee, lee.Grantee), "Dr Lee", "2:0x0700000000000000000000000000000000000000000000000000000000000000", false},
		{"its log entries", dir.Actor(1, "Provider 1", uint8(ledger.ActorAnonymous), "0x0700000000000000000000000000000000000000000000000000000000000000"), "Dr Lee", "2:0x0700000000000000000000000000000000000000000000000000000000000000", false},
		{"named address grant", dir.Grantee(access.AddressGrantee, AddressRef(doctor).Grantee), "Dr Kim", "", false},
		{"its log entries", dir.Actor(1, "Provider 1", uint8(ledger.ActorGrantee), "0xabCD000000000000000000000000000000000000"), "Dr Kim", "", false},
		{"unnamed anonymous", dir.Grantee(access.AnonymousGrantee, [32]byte{8}), "unnamed anonymous viewer", "", false},
		{"the patient now", dir.Actor(1, "Provider 1", uint8(ledger.ActorPatient), "0x01"), "you", "you", true},
		{"a replaced delegate", dir.Actor(1, "Provider 1", uint8(ledger.ActorGrantee), old.Address.Hex()), "you", "you", true},
		{"a delegate at another provider", dir.Actor(1, "Provider 1", uint8(ledger.ActorGrantee), elsewhere.Address.Hex()), "unnamed reader", "", false},
		{"staff", dir.Actor(1, "Provider 1", uint8(ledger.ActorStaff), "desk"), "Provider 1 staff", "staff:1:desk", false},
		{"a feed of the provider's", dir.Actor(1, "Provider 1", uint8(ledger.ActorStaff), "backend:lab-feed"), "Provider 1 system lab-feed", "staff:1:backend:lab-feed", false},
		{"staff whose id looks like a prefix", dir.Actor(1, "Provider 1", uint8(ledger.ActorStaff), "backend:"), "Provider 1 staff", "", false},
	} {
		if c.who.Name != c.want || c.who.You != c.you || (c.key != "" && c.who.Key != c.key) {
			t.Errorf("%s: %+v; want %q (you %v, key %q)", c.name, c.who, c.want, c.you, c.key)
		}
	}
	// One identity: the grant and its log entries have the same key.
	if a, b := dir.Grantee(access.AddressGrantee, AddressRef(doctor).Grantee), dir.Actor(1, "Provider 1", uint8(ledger.ActorGrantee), "0xabcd000000000000000000000000000000000000"); a.Key != b.Key {
		t.Fatalf("one grantee, two keys: %q and %q", a.Key, b.Key)
	}
}
