package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
)

// TestGovernanceCLI: on real geth, a fourth provider is proposed and voted
// in through the registry with `medrec governance`, the authorities'
// mirrors (`network watch`) make it a Clique signer and it seals; a founding
// provider is voted out the same way and stops sealing. Refusals along the
// way are one clear line, exit 1.
func TestGovernanceCLI(t *testing.T) {
	needGeth(t)
	start := time.Now()
	dir := filepath.Join(t.TempDir(), "net")
	t.Cleanup(func() { killNetwork(dir) })
	ok := func(args ...string) string {
		t.Helper()
		r := medrec(t, "", args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		return r.stdout
	}
	refused := func(want string, args ...string) {
		t.Helper()
		r := medrec(t, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
			t.Fatalf("%v: exit %d, stderr %q; want exit 1 and %q", args, r.code, r.stderr, want)
		}
	}
	list := func() govListing {
		t.Helper()
		var l govListing
		if err := json.Unmarshal([]byte(ok("governance", "list", "--dir", dir, "--json")), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	// as is `governance CMD` signed by provider p, flags before the arguments.
	as := func(p int, cmd string, args ...string) []string {
		return append([]string{"governance", cmd, "--dir", dir, "--provider", fmt.Sprint(p)}, args...)
	}

	ok("network", "up", "--dir", dir, "--providers", "3", "--period", "1")
	ok("network", "add-provider", "--dir", dir)
	up := time.Since(start)
	st, err := chain.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	auth := func(p int) common.Address { return st.Nodes[p-1].Authority }
	node, err := chain.Dial(t.Context(), st.Nodes[0].RPC)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()

	// Provider 1 proposes the newcomer: 1 of 2 votes.
	out := ok(as(1, "propose-add", "--authority", auth(4).Hex(), "--gateway", st.Nodes[3].Gateway.Hex(),
		"--name", "Provider 4", "--gateway-url", "http://127.0.0.1:7999")...)
	if !strings.Contains(out, "Proposal 1 (add): 1 of 2 votes") {
		t.Fatalf("propose-add: %s", out)
	}
	l := list()
	if len(l.Members) != 3 || len(l.Proposals) != 1 || l.Proposals[0].Votes != 1 || l.Needed != 2 || !l.InSync || len(l.Clique) != 3 {
		t.Fatalf("list after the proposal: %+v", l)
	}
	human := ok("governance", "list", "--dir", dir)
	for _, want := range []string{"3 members", "1/2", "Provider 4", "Clique signers (3): the registry's members"} {
		if !strings.Contains(human, want) {
			t.Errorf("list lacks %q:\n%s", want, human)
		}
	}
	refused("provider 1 has already voted for proposal 1", as(1, "vote", "1")...)
	refused(auth(4).Hex()+" is not the authority of an active provider", as(4, "vote", "1")...)
	refused("no proposal 9", as(2, "vote", "9")...)
	refused("no provider 7 in the registry", as(2, "propose-remove", "7")...)
	refused("is already a provider's authority", as(2, "propose-add", "--authority", auth(3).Hex(), "--gateway", st.Nodes[3].Gateway.Hex(),
		"--name", "Again", "--gateway-url", "http://127.0.0.1:7998")...)

	// Provider 2's vote carries it. No mirror runs yet: list flags the mismatch.
	out = ok(as(2, "vote", "1")...)
	if !strings.Contains(out, "Proposal 1 carried: provider 4 is now in the registry") {
		t.Fatalf("vote: %s", out)
	}
	l = list()
	if len(l.Members) != 4 || len(l.Proposals) != 0 || l.InSync || l.Drift == nil || !slices.Equal(l.Drift.Missing, []common.Address{auth(4)}) {
		t.Fatalf("list after the vote: %+v", l)
	}
	if human := ok("governance", "list", "--dir", dir); !strings.Contains(human, "MISMATCH") {
		t.Fatalf("no mismatch flagged:\n%s", human)
	}
	if s, _ := chain.LoadState(dir); !s.Nodes[3].Signer {
		t.Fatal("network.json does not record provider 4 as wanted")
	}
	refused("proposal 1 has already been carried out", as(3, "vote", "1")...)
	refused("proposal 1 has already been carried out", as(3, "execute", "1")...)

	// The mirrors follow the registry: provider 4 becomes a signer and seals.
	watch := exec.Command(medrecBin, "network", "watch", "--dir", dir, "--interval", "250ms")
	var wout strings.Builder
	watch.Stdout, watch.Stderr = &wout, &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { watch.Process.Kill(); watch.Wait() })
	voted := time.Now()
	h := waitSigners(t, node, func(s []common.Address) bool { return slices.Contains(s, auth(4)) })
	in := time.Since(voted)
	sealed := waitSealed(t, node, h, func(a common.Address) bool { return a == auth(4) })
	t.Logf("MEASURED vote in: a signer %s after the registry vote, its first block (%d) after %s", in.Round(10*time.Millisecond), sealed, time.Since(voted).Round(10*time.Millisecond))
	if l = list(); !l.InSync || len(l.Clique) != 4 {
		t.Fatalf("list after the mirrors voted: %+v", l)
	}

	// The newcomer proposes removing founding provider 3, by its authority;
	// 3 of 4 votes carry it.
	out = ok(as(4, "propose-remove", auth(3).Hex())...)
	if !strings.Contains(out, "Proposal 2 (remove): 1 of 3 votes") {
		t.Fatalf("propose-remove: %s", out)
	}
	ok(as(1, "vote", "2")...)
	// Provider 2 votes as a provider with its own node would: its RPC, the
	// deployment record, its keystore file and the password on stdin.
	keyFile := filepath.Join(dir, st.Nodes[1].AuthorityKey)
	own := []string{"governance", "vote", "--rpc", st.Nodes[1].RPC, "--deployment", filepath.Join(dir, "deployment.json"), "--authority-key", keyFile, "--password-file", "-", "2"}
	if r := medrec(t, "not the password", own...); r.code != 1 || !strings.Contains(r.stderr, "wrong password") {
		t.Fatalf("a wrong password: exit %d: %s", r.code, r.stderr)
	}
	pw, err := os.ReadFile(filepath.Join(dir, chain.PasswordFile))
	if err != nil {
		t.Fatal(err)
	}
	r := medrec(t, string(pw), own...)
	out = r.stdout
	if r.code != 0 || !strings.Contains(out, "provider 3 is now out of the registry") || strings.Contains(r.stdout+r.stderr, strings.TrimSpace(string(pw))) {
		t.Fatalf("vote with its own key: exit %d: %s%s", r.code, out, r.stderr)
	}
	voted = time.Now()
	removed := waitSigners(t, node, func(s []common.Address) bool { return len(s) == 3 && !slices.Contains(s, auth(3)) })
	t.Logf("MEASURED vote out: %s after the registry vote", time.Since(voted).Round(10*time.Millisecond))
	last := waitSealed(t, node, removed+2, func(common.Address) bool { return true })
	for b := removed + 1; b <= last; b++ {
		if a, err := node.SignerOf(t.Context(), b); err != nil || a == auth(3) {
			t.Fatalf("block %d sealed by %s after provider 3's removal (%v)", b, a, err)
		}
	}
	if l = list(); !l.InSync || len(l.Members) != 3 {
		t.Fatalf("list after the removal: %+v", l)
	}
	// The registry keeps its members' majority rule for what is left: a
	// removed provider votes no more.
	refused("is not the authority of an active provider", as(3, "propose-remove", "1")...)
	t.Logf("MEASURED whole test %s (network up + add-provider %s)", time.Since(start).Round(10*time.Millisecond), up.Round(10*time.Millisecond))
}

// waitSigners waits until Clique's signers satisfy ok and returns the head then.
func waitSigners(t *testing.T, n *chain.Node, ok func([]common.Address) bool) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := n.Signers(t.Context())
		if err == nil && ok(s) {
			h, err := n.Height(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("signers %v (%v)", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSealed waits for a block above after whose sealer satisfies ok and returns its number.
func waitSealed(t *testing.T, n *chain.Node, after uint64, ok func(common.Address) bool) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	next := after + 1
	for {
		h, err := n.Height(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for ; next <= h; next++ {
			if a, err := n.SignerOf(t.Context(), next); err == nil && ok(a) {
				return next
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no such block after %d (head %d)", after, h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGovernanceBadInput: refusals that need no chain.
func TestGovernanceBadInput(t *testing.T) {
	dir := t.TempDir()
	a := "0x" + strings.Repeat("ab", 20)
	add := func(extra ...string) []string {
		return append([]string{"governance", "propose-add", "--authority", a, "--gateway", a, "--name", "N", "--gateway-url", "http://127.0.0.1:1"}, extra...)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no network", []string{"governance", "list"}, 2, "missing --dir"},
		{"dir and rpc", []string{"governance", "list", "--dir", dir, "--rpc", "http://127.0.0.1:1"}, 2, "not both"},
		{"rpc without deployment", []string{"governance", "list", "--rpc", "http://127.0.0.1:1"}, 2, "missing --deployment"},
		{"credentials in the rpc URL", []string{"governance", "list", "--rpc", "http://u:secret@127.0.0.1:1", "--deployment", "d.json"}, 2, "credentials"},
		{"dir with a password file", []string{"governance", "vote", "--dir", dir, "--provider", "1", "--password-file", "-", "1"}, 2, "--password-file is for --authority-key"},
		{"sign without provider", []string{"governance", "vote", "--dir", dir, "1"}, 2, "missing --provider"},
		{"sign without key", []string{"governance", "vote", "--rpc", "http://127.0.0.1:1", "--deployment", "d.json", "1"}, 2, "missing --authority-key"},
		{"list signs nothing", []string{"governance", "list", "--dir", dir, "--provider", "1"}, 2, "flag provided but not defined"},
		{"flags after the id", []string{"governance", "vote", "1", "--dir", dir}, 2, "flags go before the proposal id"},
		{"malformed authority", add("--authority", "0x12345"), 2, `--authority "0x12345" is not an address`},
		{"malformed gateway", add("--gateway", "zz"+a[2:]), 2, "--gateway"},
		{"zero authority", add("--authority", "0x"+strings.Repeat("0", 40)), 2, "zero address"},
		{"blank name", add("--name", " "), 2, "--name must not be empty"},
		{"gateway URL not http", add("--gateway-url", "ftp://x"), 2, "--gateway-url"},
		{"propose-add without name", []string{"governance", "propose-add", "--authority", a, "--gateway", a, "--gateway-url", "http://x"}, 2, "missing --name"},
		{"remove: malformed address", []string{"governance", "propose-remove", "--dir", dir, "--provider", "1", "0xnothex"}, 2, "not an address"},
		{"remove: not an id", []string{"governance", "propose-remove", "--dir", dir, "--provider", "1", "first"}, 2, "a registry id"},
		{"remove: two providers", []string{"governance", "propose-remove", "--dir", dir, "--provider", "1", "1", "2"}, 2, "one provider"},
		{"vote: not an id", []string{"governance", "vote", "--dir", dir, "--provider", "1", "x1"}, 2, "a proposal id"},
		{"vote: zero", []string{"governance", "vote", "--dir", dir, "--provider", "1", "0"}, 2, "a proposal id"},
		{"vote: no id", []string{"governance", "vote", "--dir", dir, "--provider", "1"}, 2, "one proposal id"},
		{"execute: no id", []string{"governance", "execute", "--dir", dir, "--provider", "1"}, 2, "execute takes one proposal id"},
		{"a password on the command line", []string{"governance", "vote", "--password", "x", "1"}, 2, "flag provided but not defined"},
		{"no network in dir", []string{"governance", "list", "--dir", dir}, 1, "no network"},
		{"missing deployment", []string{"governance", "vote", "--rpc", "http://127.0.0.1:1", "--deployment", filepath.Join(dir, "none.json"), "--authority-key", filepath.Join(dir, "none"), "1"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each runs the binary, reading only dir
			r := medrec(t, "", tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("exit %d (want %d), stderr %q (want %q)", r.code, tt.code, r.stderr, tt.stderr)
			}
			if strings.Contains(r.stderr, "secret") {
				t.Fatalf("a credential reached stderr: %s", r.stderr)
			}
		})
	}
}

// TestGovernanceRefusals: every registry refusal reads as words naming the
// proposal, provider or address, and still matches contracts.ErrReverted.
func TestGovernanceRefusals(t *testing.T) {
	a := common.HexToAddress("0x00000000000000000000000000000000000000aa")
	tests := []struct {
		name string
		args []any
		want string
	}{
		{"NotActiveProvider", []any{a}, a.Hex() + " is not the authority of an active provider"},
		{"UnknownProposal", []any{uint64(9)}, "no proposal 9"},
		{"AlreadyVoted", []any{uint64(1), uint32(2)}, "provider 2 has already voted for proposal 1"},
		{"ProposalExecuted", []any{uint64(1)}, "proposal 1 has already been carried out"},
		{"ProposalExpired", []any{uint64(1)}, "proposal 1 expired"},
		{"NoMajority", []any{uint64(1), uint32(1), uint32(3)}, "1 votes of 3 active providers"},
		{"NoProviders", nil, "would leave no provider to seal blocks"},
		{"UnknownProvider", []any{uint32(7)}, "no provider 7 in the registry"},
		{"ProviderInactive", []any{uint32(3)}, "provider 3 is not active"},
		{"AuthorityTaken", []any{a}, a.Hex() + " is already a provider's authority"},
		{"GatewayTaken", []any{a}, a.Hex() + " is already in use"},
		{"ZeroAddress", nil, "the zero address"},
		{"EmptyName", nil, "name must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := explainRevert(fmt.Errorf("send: %w", &contracts.RevertError{Name: tt.name, Args: tt.args}))
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "refused: ") || !errors.Is(err, contracts.ErrReverted) {
				t.Fatalf("%v; want %q", err, tt.want)
			}
		})
	}
	other := errors.New("connection refused")
	if err := explainRevert(other); err != other {
		t.Fatalf("a non-revert error changed: %v", err)
	}
}
