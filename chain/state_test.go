package chain

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIPCPathFitsUnixSocket(t *testing.T) {
	short := "/tmp/net/node1"
	if got := ipcPath(short); got != short+"/geth.ipc" {
		t.Fatalf("short dir: %s", got)
	}
	long := "/" + strings.Repeat("very-long-directory-name/", 6) + "node1"
	got := ipcPath(long)
	if len(got) >= 100 || !strings.HasPrefix(got, os.TempDir()) {
		t.Fatalf("long dir: %s (%d bytes)", got, len(got))
	}
	if ipcPath(long+"x") == got {
		t.Fatal("two data dirs share a socket")
	}
}

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st := State{ChainID: 7, Period: 2, PasswordFile: PasswordFile,
		Nodes: []NodeState{{Provider: 1, Signer: true, Dir: "node1"}, {Provider: 2, Dir: "node2"}}}
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.ChainID != 7 || len(got.Nodes) != 2 || len(got.Signers()) != 1 {
		t.Fatalf("%+v", got)
	}
	if _, err := got.node(3); err == nil {
		t.Fatal("found provider 3")
	}
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644)
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Fatalf("corrupt state: %v", err)
	}
}
