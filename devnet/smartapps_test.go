package devnet

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/medrec-zk/medrec/access"
)

// TestReadSMARTApps: a provider's SMART apps file is read, and a file with
// an unknown field or an unknown type is refused.
func TestReadSMARTApps(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	apps, err := ReadSMARTApps(write("ok.json", `[{"clientId":"chart","name":"Chart App","redirectUris":["https://app.example/cb"],"scope":"Observation,Condition"},
		{"clientId":"all","name":"All","redirectUris":["https://all.example/cb"]}]`))
	want, _ := access.NewScope("Observation", "Condition")
	if err != nil || len(apps) != 2 || apps[0].Scope != want || apps[1].Scope != 0 || apps[0].RedirectURIs[0] != "https://app.example/cb" {
		t.Fatalf("%+v %v", apps, err)
	}
	for name, body := range map[string]string{
		"unknown field": `[{"clientId":"a","secret":"s"}]`,
		"unknown type":  `[{"clientId":"a","scope":"Spaceship"}]`,
		"not an array":  `{"clientId":"a"}`,
	} {
		if _, err := ReadSMARTApps(write("bad.json", body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
