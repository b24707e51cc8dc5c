package devnet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/medrec-zk/medrec/access"
)

// TestReadBackendClients: a provider's backend clients file is read with
// each client's public keys, and a file with an unknown field, an unknown
// type or a malformed key is refused.
func TestReadBackendClients(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES384", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	clients, err := ReadBackendClients(write("ok.json", `[{"clientId":"engine","name":"Integration engine","jwks":`+string(jwks)+`,"scope":"Observation,Patient"},
		{"clientId":"all","name":"All","jwks":`+string(jwks)+`}]`))
	want, _ := access.NewScope("Observation", "Patient")
	if err != nil || len(clients) != 2 || clients[0].Scope != want || clients[1].Scope != 0 || clients[0].Keys.Keys[0].KeyID != "k1" || !clients[0].Keys.Keys[0].IsPublic() {
		t.Fatalf("%+v %v", clients, err)
	}
	for name, body := range map[string]string{
		"unknown field": `[{"clientId":"a","secret":"s"}]`,
		"unknown type":  `[{"clientId":"a","jwks":` + string(jwks) + `,"scope":"Spaceship"}]`,
		"malformed key": `[{"clientId":"a","jwks":{"keys":[{"kty":"EC","crv":"P-384","x":"AA"}]}}]`,
		"not an array":  `{"clientId":"a"}`,
	} {
		if _, err := ReadBackendClients(write("bad.json", body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
