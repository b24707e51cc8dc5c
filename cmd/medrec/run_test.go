package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/audit"
	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/contracts/verifiers"
	"github.com/medrec-zk/medrec/devnet"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/prover/ceremony"
	"github.com/medrec-zk/medrec/prover/provertest"
)

// needSolc returns the repository's contracts directory, skipping the test
// when Node.js or solc-js is missing, unless in CI (make test installs both).
func needSolc(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../../contracts")
	if err != nil {
		t.Fatal(err)
	}
	if err := verifiers.Check(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI has no Solidity toolchain: %v", err)
		}
		t.Skipf("%v (make test installs it)", err)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runProc is a `medrec run` child process; its standard output is read line
// by line as it comes.
type runProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	stderr bytes.Buffer
	lines  chan struct{} // a line arrived
	done   chan error
}

func startRun(t *testing.T, dir, contractsDir string) *runProc {
	t.Helper()
	cmd := exec.Command(medrecBin, "run", "--dir", dir, "--geth", os.Getenv(chain.GethEnv), "--contracts", contractsDir,
		"--providers", "2", "--period", "1", "--listen", freeAddr(t), "--viewer-listen", freeAddr(t), "--desk-port", "0")
	cmd.SysProcAttr = detachTTY()
	p := &runProc{cmd: cmd, lines: make(chan struct{}, 1), done: make(chan error, 1)}
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- struct{}{}:
			default:
			}
		}
		p.done <- cmd.Wait()
	}()
	return p
}

func (p *runProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor waits until the output holds s.
func (p *runProc) waitFor(t *testing.T, s string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.lines:
		case err := <-p.done:
			p.done <- err
			if !strings.Contains(p.output(), s) {
				t.Fatalf("medrec run exited (%v) before %q:\n%s\nstderr:\n%s", err, s, p.output(), p.stderr.String())
			}
		case <-deadline:
			t.Fatalf("no %q after %v:\n%s", s, within, p.output())
		}
	}
}

// interrupt sends SIGINT and expects a clean exit.
func (p *runProc) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("after Ctrl-C: %v\n%s\nstderr:\n%s", err, p.output(), p.stderr.String())
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("still running 90 s after Ctrl-C:\n%s", p.output())
	}
}

// TestRunCeremony: `medrec run` on a fresh directory runs the network's own
// ceremony, deploys verifiers compiled from its keys and seeds the demo
// with proofs only those verifiers accept; Ctrl-C stops it; running again
// resumes without a ceremony. A first start stopped during the ceremony
// leaves no keys, and the next start runs the ceremony afresh.
func TestRunCeremony(t *testing.T) {
	needGeth(t)
	contractsDir := needSolc(t)
	dir := filepath.Join(t.TempDir(), "state")
	t.Cleanup(func() { killNetwork(dir) })
	ctx := t.Context()

	// Ctrl-C during the ceremony: a clean stop, no keys.
	r := startRun(t, dir, contractsDir)
	r.waitFor(t, "==> ceremony: phase 1, provider-1 contributes", 2*time.Minute)
	r.interrupt(t)
	if out := r.output(); !strings.Contains(out, "unfinished ceremony") || strings.Contains(out, "ceremony done") {
		t.Fatalf("interrupted ceremony:\n%s", out)
	}
	if has, err := devnet.HasKeys(dir); err != nil || has {
		t.Fatalf("an interrupted ceremony left keys: %v", err)
	}

	// The first full start: the ceremony again from the beginning, then everything.
	start := time.Now()
	r = startRun(t, dir, contractsDir)
	r.waitFor(t, "Everything is up", 6*time.Minute)
	t.Logf("first run (ceremony included): %.1f s", time.Since(start).Seconds())
	out := r.output()
	for _, want := range []string{
		"==> ceremony: starting in " + devnet.CeremonyDir(dir),
		"==> ceremony: phase 1, provider-2 contributes",
		"==> ceremony: sealing phase 1 with a fresh random beacon",
		"==> ceremony: finalizing phase 2 with a fresh random beacon",
		"==> ceremony done in ",
		"keys: MedRec-ZK local ceremony of `medrec run`",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("first run lacks %q:\n%s", want, out)
		}
	}

	ks, err := prover.LoadKeyDir(devnet.KeysDir(dir), false)
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := prover.DevKeys()
	if ks.RegistryHash() == dev.RegistryHash() || !strings.Contains(ks.Manifest.Origin, "NOT FOR PRODUCTION") {
		t.Fatalf("the network's keys: %q", ks.Manifest.Origin)
	}
	// The transcript names the providers and fresh beacons, not the dev ones.
	c, err := ceremony.Open(devnet.CeremonyDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	st := c.State()
	if st.Phase != ceremony.Done || len(st.Phase1) != 2 || st.Phase1[1].Contributor != "provider-2" || c.TranscriptDigest() != ks.Manifest.Transcript {
		t.Fatalf("transcript: %+v", st)
	}
	for _, b := range []string{st.Beacon1, st.Beacon2} {
		if len(b) != 64 || b == hex.EncodeToString([]byte(devBeacon1)) || b == hex.EncodeToString([]byte(devBeacon2)) || st.Beacon1 == st.Beacon2 {
			t.Fatalf("beacons %s, %s", st.Beacon1, st.Beacon2)
		}
	}

	// On chain: the registry records these keys, and the verifiers are the
	// ones compiled from them, not the dev verifiers.
	ns, err := chain.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	rpc := ns.Nodes[0].RPC
	ec, err := ethclient.DialContext(ctx, rpc)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	d, err := devnet.LoadDeployment(dir)
	if err != nil {
		t.Fatal(err)
	}
	if h, err := contracts.NewClient(ec, d).VerifyingKeyHash(ctx); err != nil || h != ks.RegistryHash() {
		t.Fatalf("registry's verifying-key hash %x (%v), the keys' %x", h, err, ks.RegistryHash())
	}
	compiled, err := verifiers.Compile(ctx, contractsDir, ks)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]struct {
		at             common.Address
		creation, devs []byte
	}{
		"OwnershipVerifier":   {d.OwnershipVerifier, compiled.Ownership, contracts.DevVerifiers().Ownership},
		"EntitlementVerifier": {d.EntitlementVerifier, compiled.Entitlement, contracts.DevVerifiers().Entitlement},
	} {
		code, err := ec.CodeAt(ctx, v.at, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Runtime code is the tail of its creation code.
		if len(code) == 0 || !bytes.HasSuffix(v.creation, code) || bytes.HasSuffix(v.devs, code) {
			t.Fatalf("%s: %d bytes deployed, not the verifier compiled from the network's keys", name, len(code))
		}
	}

	// The auditor reads the keys out of the verifiers and finds the
	// registry's hash; the demo patient's two relationships were opened with
	// Ownership proofs the new verifier accepted.
	src, err := audit.Dial(ctx, rpc, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Run(ctx, src, d, audit.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]audit.Status{audit.CheckVerifiers: audit.StatusPass, audit.CheckSigners: audit.StatusPass} {
		if ch, ok := rep.Check(name); !ok || ch.Status != want {
			var b bytes.Buffer
			rep.WriteText(&b, 5)
			t.Fatalf("audit check %s: want %s\n%s", name, want, b.String())
		}
	}
	if rep.Stats.Relationships != 2 {
		t.Fatalf("the demo patient's relationships: %d, want 2", rep.Stats.Relationships)
	}
	r.interrupt(t)
	if !strings.Contains(r.output(), "==> stopping the network") {
		t.Fatalf("no clean stop:\n%s", r.output())
	}

	// Running again resumes: the same keys, no ceremony.
	start = time.Now()
	r = startRun(t, dir, contractsDir)
	r.waitFor(t, "Everything is up", 3*time.Minute)
	t.Logf("resume: %.1f s", time.Since(start).Seconds())
	out = r.output()
	if strings.Contains(out, "==> ceremony") || !strings.Contains(out, "==> resuming the network in "+dir) || !strings.Contains(out, "keys: MedRec-ZK local ceremony of `medrec run`") {
		t.Fatalf("resume:\n%s", out)
	}
	if again, err := prover.LoadKeyDir(devnet.KeysDir(dir), false); err != nil || again.Manifest.Transcript != ks.Manifest.Transcript {
		t.Fatalf("keys after resume: %v", err)
	}

	// A client started without the network's keys (here: keys/ moved away,
	// so the dev keys) is refused: the registry records other keys.
	away := devnet.KeysDir(dir) + ".away"
	if err := os.Rename(devnet.KeysDir(dir), away); err != nil {
		t.Fatal(err)
	}
	_, viewerKS := devnet.DemoKeystores(dir)
	res := medrec(t, "", "client", "serve", "--dir", dir, "--keystore", viewerKS, "--listen", freeAddr(t))
	if err := os.Rename(away, devnet.KeysDir(dir)); err != nil {
		t.Fatal(err)
	}
	if res.code != 1 || !strings.Contains(res.stderr, "not the keys the network's AgentRegistry records") {
		t.Fatalf("client with the wrong keys: exit %d: %s", res.code, res.stderr)
	}
	r.interrupt(t)
	if _, err := os.Stat(filepath.Join(devnet.KeysDir(dir), prover.ManifestFile)); errors.Is(err, fs.ErrNotExist) {
		t.Fatal("keys gone after the run")
	}
}

// TestRunBadInput: refusals before anything is written.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh")
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"one provider", []string{"run", "--dir", fresh, "--providers", "1"}, 2, "at least 2"},
		{"period zero", []string{"run", "--dir", fresh, "--period", "0"}, 2, "--period"},
		{"no contracts dir", []string{"run", "--dir", fresh, "--geth", os.Args[0], "--contracts", filepath.Join(dir, "none")}, 1, "compile.js"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := medrec(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tt.code, r.stderr, tt.stderr)
			}
		})
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Fatal("a refused run created the directory")
	}
}

// TestRunOnDevKeysNetwork: a directory deployed with the dev keys and no
// keys/ — what `medrec network up` without --keys makes, and what `medrec
// run` made before networks had their own keys — keeps running on the dev
// keys: no ceremony.
func TestRunOnDevKeysNetwork(t *testing.T) {
	needGeth(t)
	contractsDir := needSolc(t)
	dir := filepath.Join(t.TempDir(), "net")
	t.Cleanup(func() { killNetwork(dir) })
	if r := medrec(t, "", "network", "up", "--dir", dir, "--providers", "2", "--period", "1"); r.code != 0 || !strings.Contains(r.stdout, "Keys: MedRec-ZK local dev ceremony") {
		t.Fatalf("up: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	if r := medrec(t, "", "network", "down", "--dir", dir); r.code != 0 {
		t.Fatalf("down: %s", r.stderr)
	}
	r := startRun(t, dir, contractsDir)
	r.waitFor(t, "Everything is up", 3*time.Minute)
	if out := r.output(); strings.Contains(out, "==> ceremony") || !strings.Contains(out, "keys: MedRec-ZK local dev ceremony") {
		t.Fatalf("run on a dev-keys network:\n%s", out)
	}
	// It says where each desk page is, how to connect there, and where its logs are.
	out := r.output()
	for _, want := range []string{"desk of provider 1: open http://", "connecting at a provider's desk", "print the claim code", "Logs: " + filepath.Join(dir, "medrec.log")} {
		if !strings.Contains(out, want) {
			t.Fatalf("the run's output lacks %q:\n%s", want, out)
		}
	}
	logs, err := os.ReadFile(filepath.Join(dir, "medrec.log"))
	if err != nil || !strings.Contains(string(logs), `"msg":"Step"`) || !strings.Contains(string(logs), `"msg":"Run started"`) {
		t.Fatalf("the structured log: %v\n%.500s", err, logs)
	}
	// The demo's records are loaded once, not at every start.
	for p := 1; p <= 2; p++ {
		if _, err := os.Stat(filepath.Join(dir, "demo", fmt.Sprintf("records-provider%d.loaded", p))); err != nil {
			t.Fatalf("provider %d's demo records: %v", p, err)
		}
	}
	r.interrupt(t)
	if has, _ := devnet.HasKeys(dir); has {
		t.Fatal("keys/ appeared")
	}
}

// TestNetworkUpKeys: `network up --keys DIR` deploys with those keys —
// copied into the network's keys/, the registry recording them, verifiers
// compiled from them — and refuses other keys afterwards.
func TestNetworkUpKeys(t *testing.T) {
	needGeth(t)
	contractsDir := needSolc(t)
	src := provertest.SetupKeys(t, setupOrigin)
	dir := filepath.Join(t.TempDir(), "net")
	t.Cleanup(func() { killNetwork(dir) })
	r := medrec(t, "", "network", "up", "--dir", dir, "--providers", "1", "--period", "1", "--keys", src, "--contracts", contractsDir)
	if r.code != 0 || !strings.Contains(r.stdout, "Keys: "+setupOrigin) {
		t.Fatalf("up --keys: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	ks, err := devnet.Keys(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := prover.LoadKeyDir(src, false)
	if ks.RegistryHash() != want.RegistryHash() {
		t.Fatal("keys/ holds other keys than --keys")
	}
	ns, err := chain.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ethclient.DialContext(t.Context(), ns.Nodes[0].RPC)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	d, err := devnet.LoadDeployment(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := devnet.CheckKeys(t.Context(), ec, d, ks); err != nil {
		t.Fatal(err)
	}
	compiled, err := verifiers.Compile(t.Context(), contractsDir, ks)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := ec.CodeAt(t.Context(), d.OwnershipVerifier, nil); err != nil || len(code) == 0 || !bytes.HasSuffix(compiled.Ownership, code) {
		t.Fatalf("OwnershipVerifier: %d bytes (%v), not compiled from --keys", len(code), err)
	}
	// The same keys again change nothing; other keys are refused.
	if r := medrec(t, "", "network", "up", "--dir", dir, "--keys", src); r.code != 0 {
		t.Fatalf("up with the same --keys: exit %d: %s", r.code, r.stderr)
	}
	if r := medrec(t, "", "network", "up", "--dir", dir, "--keys", "../../prover/devkeys"); r.code != 1 || !strings.Contains(r.stderr, "already has the keys") {
		t.Fatalf("up with other --keys: exit %d: %s", r.code, r.stderr)
	}
	if r := medrec(t, "", "network", "up", "--dir", filepath.Join(t.TempDir(), "x"), "--providers", "1", "--keys", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, "--keys") {
		t.Fatalf("up with a --keys directory without keys: exit %d: %s", r.code, r.stderr)
	}
	if r := medrec(t, "", "network", "down", "--dir", dir); r.code != 0 {
		t.Fatalf("down: %s", r.stderr)
	}
}

const setupOrigin = "cmd/medrec test keys (single-party groth16.Setup): NOT FOR PRODUCTION"
