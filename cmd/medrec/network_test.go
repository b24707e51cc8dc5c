package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/chain"
)

// needGeth skips a test that runs nodes when $MEDREC_GETH is unset, unless
// MEDREC_REQUIRE_GETH=1 (make test-go) makes that a failure.
func needGeth(t *testing.T) {
	t.Helper()
	if os.Getenv(chain.GethEnv) == "" {
		if os.Getenv("MEDREC_REQUIRE_GETH") == "1" {
			t.Fatalf("%s is unset but MEDREC_REQUIRE_GETH=1", chain.GethEnv)
		}
		t.Skipf("%s unset: no geth to run (make test-go builds bin/geth and sets it)", chain.GethEnv)
	}
}

// killNetwork SIGKILLs every process whose --datadir lies under dir.
func killNetwork(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(raw), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--datadir" && strings.HasPrefix(args[i+1], dir+string(filepath.Separator)) {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}

func status(t *testing.T, dir string) chain.Status {
	t.Helper()
	r := medrec(t, "", "network", "status", "--dir", dir, "--json")
	if r.code != 0 {
		t.Fatalf("status: exit %d: %s", r.code, r.stderr)
	}
	var s chain.Status
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, r.stdout)
	}
	return s
}

func TestNetworkCLI(t *testing.T) {
	needGeth(t)
	dir := filepath.Join(t.TempDir(), "net")
	t.Cleanup(func() { killNetwork(dir) })

	r := medrec(t, "", "network", "up", "--dir", dir, "--providers", "3", "--period", "1", "--chain-id", "2024")
	if r.code != 0 {
		t.Fatalf("up: exit %d: %s", r.code, r.stderr)
	}
	// The nodes outlive the command that started them.
	s := status(t, dir)
	if s.ChainID != 2024 || s.Height < 1 || len(s.Signers) != 3 || !s.Drift.None() || len(s.Nodes) != 3 {
		t.Fatalf("status after up: %+v", s)
	}
	for _, n := range s.Nodes {
		if !n.Up || n.Peers != 2 || n.PID == 0 || !n.Signer {
			t.Fatalf("node after up: %+v", n)
		}
	}
	// The raw JSON has the documented field names.
	raw := medrec(t, "", "network", "status", "--dir", dir, "--json").stdout
	for _, f := range []string{`"height"`, `"signers"`, `"nodes"`, `"provider"`, `"pid"`, `"rpc"`, `"up"`, `"peers"`, `"drift"`, `"missing"`, `"extra"`} {
		if !strings.Contains(raw, f) {
			t.Errorf("status JSON lacks %s", f)
		}
	}
	// The password is in a 0600 file, never on a command line.
	pw, err := os.ReadFile(filepath.Join(dir, chain.PasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, chain.PasswordFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("password file mode %v", fi.Mode())
	}
	for _, n := range s.Nodes {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(n.PID), "cmdline"))
		if len(pw) == 0 || strings.Contains(string(cmdline), string(pw)) {
			t.Fatal("the dev password is on a geth command line")
		}
	}

	// A second up on a running network changes nothing.
	r = medrec(t, "", "network", "up", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "already up") {
		t.Fatalf("up of a running network: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}

	// watch runs the supervisor until interrupted.
	watch := exec.Command(medrecBin, "network", "watch", "--dir", dir, "--interval", "200ms")
	var wout strings.Builder
	watch.Stdout, watch.Stderr = &wout, &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	watch.Process.Signal(os.Interrupt)
	if err := watch.Wait(); err != nil || !strings.Contains(wout.String(), "Watching") {
		t.Fatalf("watch: %v: %s", err, wout.String())
	}

	r = medrec(t, "", "network", "add-provider", "--dir", dir, "--vote")
	if r.code != 0 {
		t.Fatalf("add-provider: exit %d: %s", r.code, r.stderr)
	}
	s = status(t, dir)
	if len(s.Nodes) != 4 || len(s.Signers) != 4 || !s.Nodes[3].Up || !s.Nodes[3].Signer || !s.Drift.None() {
		t.Fatalf("status after add-provider --vote: %+v", s)
	}
	// It went through the registry: a member there, admitted by a majority.
	if !strings.Contains(r.stdout, "admitted by the registry (proposal 1") {
		t.Fatalf("add-provider --vote: %s", r.stdout)
	}
	var l govListing
	if err := json.Unmarshal([]byte(medrec(t, "", "governance", "list", "--dir", dir, "--json").stdout), &l); err != nil {
		t.Fatal(err)
	}
	if len(l.Members) != 4 || l.Members[3].Authority != s.Nodes[3].Authority || len(l.Proposals) != 0 || !l.InSync {
		t.Fatalf("registry after add-provider --vote: %+v", l)
	}
	top := s.Height

	r = medrec(t, "", "network", "down", "--dir", dir)
	if r.code != 0 {
		t.Fatalf("down: exit %d: %s", r.code, r.stderr)
	}
	s = status(t, dir)
	for _, n := range s.Nodes {
		if n.Up || n.PID != 0 {
			t.Fatalf("node after down: %+v", n)
		}
	}

	// Up again without --providers: the same chain, restarted.
	r = medrec(t, "", "network", "up", "--dir", dir)
	if r.code != 0 || !strings.Contains(r.stdout, "restarted") {
		t.Fatalf("second up: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if s = status(t, dir); s.Height <= top || len(s.Signers) != 4 {
		t.Fatalf("after restart: height %d (was %d), signers %v", s.Height, top, s.Signers)
	}
	r = medrec(t, "", "network", "up", "--dir", dir, "--providers", "3")
	if r.code != 1 || !strings.Contains(r.stderr, "add-provider") {
		t.Fatalf("up with another --providers: exit %d: %s", r.code, r.stderr)
	}
	if r := medrec(t, "", "network", "down", "--dir", dir); r.code != 0 {
		t.Fatalf("down: %s", r.stderr)
	}
}

func TestNetworkBadInput(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"up without dir", []string{"network", "up", "--providers", "3"}, 2, "missing --dir"},
		{"up without providers", []string{"network", "up", "--dir", fresh}, 2, "missing --providers"},
		{"no providers", []string{"network", "up", "--dir", fresh, "--providers", "0"}, 2, "--providers 0"},
		{"period zero", []string{"network", "up", "--dir", fresh, "--providers", "1", "--period", "0"}, 2, "--period"},
		{"bad base port", []string{"network", "up", "--dir", fresh, "--providers", "1", "--base-port", "80"}, 2, "--base-port 80"},
		{"unknown flag", []string{"network", "up", "--dir", fresh, "--password", "x"}, 2, "flag provided but not defined"},
		{"geth missing", []string{"network", "up", "--dir", fresh, "--providers", "1", "--geth", filepath.Join(dir, "nogeth")}, 1, "geth binary not found"},
		{"status of no network", []string{"network", "status", "--dir", dir}, 1, "no network"},
		{"down of no network", []string{"network", "down", "--dir", dir}, 1, "no network"},
		{"add-provider without dir", []string{"network", "add-provider"}, 2, "missing --dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := medrec(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tt.code, r.stderr, tt.stderr)
			}
			if tt.code == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("not a one-line error: %q", r.stderr)
			}
		})
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Fatal("a refused up created the directory")
	}
}
