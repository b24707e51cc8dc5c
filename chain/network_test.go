package chain

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// TestThreeProviders runs the life of a 3-authority network: up, one node
// crashes and the others carry on, it comes back with its chain and seals
// again, the network goes down and comes back up with its chain.
func TestThreeProviders(t *testing.T) {
	n := newTestNetwork(t, 3)
	st := n.State()
	start := time.Now()
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED up, 3 providers: %s", time.Since(start).Round(10*time.Millisecond))

	c1, c3 := client(t, n, 1), client(t, n, 3)
	h0 := height(t, c1)
	took := waitChain(t, n, 20*time.Second, "4 blocks", func() (bool, string) { return height(t, c1) >= h0+4, "" })
	t.Logf("MEASURED block time (period 1 s, 3 signers): %s", (took / 4).Round(10*time.Millisecond))

	s, err := n.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Signers) != 3 || !s.Drift.None() || len(s.Nodes) != 3 {
		t.Fatalf("status: %+v", s)
	}
	for _, ns := range s.Nodes {
		if !ns.Up || !ns.Signer || ns.Peers != 2 {
			t.Fatalf("node: %+v", ns)
		}
	}

	// Provider 3 crashes: the other two keep sealing, reads keep working.
	before := height(t, c3)
	crash(n, 3)
	if n.Running(3) {
		t.Fatal("provider 3 still running after SIGKILL")
	}
	h := height(t, c1)
	waitChain(t, n, 20*time.Second, "blocks without provider 3", func() (bool, string) { return height(t, c1) >= h+3, "" })
	bal, err := c1.Eth().BalanceAt(t.Context(), st.Deployer, nil)
	if err != nil || bal.Cmp(fundEach) != 0 {
		t.Fatalf("deployer balance %v, %v", bal, err)
	}

	start = time.Now()
	// It restarts with the chain it had, catches up and seals again.
	if err := n.Start(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	c3 = client(t, n, 3)
	if h := loadedHead(t, n, 3); h < before {
		t.Fatalf("provider 3 loaded head %d from disk, had %d before the crash", h, before)
	}
	took = eventually(t, 15*time.Second, "provider 3 catches up", func() (bool, string) {
		h1, h3 := height(t, c1), height(t, c3)
		return h3 >= h1, strconv.Itoa(int(h3)) + " < " + strconv.Itoa(int(h1))
	})
	t.Logf("provider 3 caught up in %s", took)
	took = time.Since(start)
	b := waitSealedBy(t, n, c1, st.Nodes[2].Authority, height(t, c1), 20*time.Second)
	t.Logf("provider 3 sealed block %d after %s", b, time.Since(start)-took)

	// Down stops every process; up brings the same chain back.
	top := height(t, c1)
	if err := n.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, ns := range n.State().Nodes {
		if ns.PID != 0 || n.Running(ns.Provider) {
			t.Fatalf("provider %d still running after down", ns.Provider)
		}
	}
	if s, err := n.Status(t.Context()); err != nil || s.Nodes[0].Up || s.Height != 0 {
		t.Fatalf("status of a stopped network: %+v, %v", s, err)
	}

	// A port taken while it was down: a clear error, nothing started.
	taken, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(st.Nodes[1].HTTPPort))
	if err != nil {
		t.Fatal(err)
	}
	err = n.Up(t.Context())
	taken.Close()
	if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(st.Nodes[1].HTTPPort)) {
		t.Fatalf("up with a port taken: %v", err)
	}
	for _, ns := range n.State().Nodes {
		if n.Running(ns.Provider) {
			t.Fatalf("provider %d started although a port was taken", ns.Provider)
		}
	}

	// Reopened from disk (as the CLI does), the network restarts with its chain.
	n2, err := Open(n.Dir(), n.geth, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := n2.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED up again, 3 providers: %s", time.Since(start).Round(10*time.Millisecond))
	if h := height(t, client(t, n2, 2)); h <= top {
		t.Fatalf("after down and up: height %d, was %d", h, top)
	}

	// Every node crashes at once: each restarts from its own disk (no peer
	// is ahead to sync from) and the chain goes on from there.
	top = height(t, client(t, n2, 1))
	killAll(n2)
	start = time.Now()
	if err := n2.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED up after all crashed: %s", time.Since(start).Round(10*time.Millisecond))
	for p := 1; p <= 3; p++ {
		if h := loadedHead(t, n2, p); h+1 < top {
			t.Errorf("provider %d loaded head %d after the crash, the chain was at %d", p, h, top)
		}
	}
	if h := height(t, client(t, n2, 1)); h <= top {
		t.Fatalf("after all crashed: height %d, was %d", h, top)
	}
}

// loadedHead is the head block provider's geth loaded from its own disk at
// its last start (geth 1.13 logs "Loaded most recent local block number=N").
func loadedHead(t *testing.T, n *Network, provider int) uint64 {
	t.Helper()
	raw, err := os.ReadFile(n.Path(fmt.Sprintf("node%d/geth.log", provider)))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`Loaded most recent local block\s+number=([0-9,]+)`).FindAllSubmatch(raw, -1)
	if m == nil {
		t.Fatal("geth logged no loaded head")
	}
	h, err := strconv.ParseUint(strings.ReplaceAll(string(m[len(m)-1][1]), ",", ""), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestFiveProvidersTwoDown: Clique seals while ⌊N/2⌋+1 signers are up;
// the two crashed nodes restart, rejoin the one chain and seal again.
func TestFiveProvidersTwoDown(t *testing.T) {
	n := newTestNetwork(t, 5)
	start := time.Now()
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURED up, 5 providers: %s", time.Since(start).Round(10*time.Millisecond))
	crash(n, 4)
	crash(n, 5)
	c1 := client(t, n, 1)
	h := height(t, c1)
	took := waitChain(t, n, 30*time.Second, "blocks with 3 of 5 up", func() (bool, string) { return height(t, c1) >= h+4, "" })
	t.Logf("MEASURED block time, 3 of 5 signers up: %s", (took / 4).Round(10*time.Millisecond))
	st := n.State()
	got := sealers(t, c1, h+1, h+4)
	for _, ns := range st.Nodes[3:] {
		if got[ns.Authority] > 0 {
			t.Fatalf("a crashed provider sealed: %v", got)
		}
	}

	// A graceful restart of a signer while two are down: the network
	// stalls at most while it is away and goes on when it is back.
	h = height(t, c1)
	if err := n.Restart(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	c2 := client(t, n, 2)
	waitChain(t, n, 30*time.Second, "blocks after restarting provider 2", func() (bool, string) {
		return height(t, c1) >= h+2 && height(t, c2) >= h+2, ""
	})

	// The two crashed nodes restart: each loads the chain it had, catches
	// up with the others, and seals again.
	start = time.Now()
	if err := n.Start(t.Context(), 4, 5); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{4, 5} {
		c := client(t, n, p)
		eventually(t, 20*time.Second, fmt.Sprintf("provider %d catches up", p), func() (bool, string) {
			hp, h1 := height(t, c), height(t, c1)
			return hp >= h1, fmt.Sprintf("%d < %d", hp, h1)
		})
		t.Logf("MEASURED 5 providers, provider %d restarted after a crash: caught up %s after the restart began", p, time.Since(start).Round(10*time.Millisecond))
	}
	h = height(t, c1)
	for _, ns := range st.Nodes[3:] {
		b := waitSealedBy(t, n, c1, ns.Authority, h, 40*time.Second)
		t.Logf("provider %d sealed block %d", ns.Provider, b)
	}
	t.Logf("MEASURED 5 providers, both restarted nodes sealing again %s after the restart began", time.Since(start).Round(10*time.Millisecond))
	// One chain: every node has the same block at a height all reached.
	top := height(t, c1)
	waitChain(t, n, 20*time.Second, "every node at the same height", func() (bool, string) {
		for p := 1; p <= 5; p++ {
			if height(t, client(t, n, p)) < top {
				return false, fmt.Sprintf("provider %d behind %d", p, top)
			}
		}
		return true, ""
	})
	want, err := c1.Header(t.Context(), &top)
	if err != nil {
		t.Fatal(err)
	}
	for p := 2; p <= 5; p++ {
		got, err := client(t, n, p).Header(t.Context(), &top)
		if err != nil || got.Hash() != want.Hash() {
			t.Fatalf("provider %d's block %d differs from provider 1's (%v)", p, top, err)
		}
	}
}

// TestVoteProviderInAndOut: a fourth provider joins as a peer, the three
// authorities' mirrors vote it in and it seals; they vote it out and it
// stops sealing.
func TestVoteProviderInAndOut(t *testing.T) {
	n := newTestNetwork(t, 3)
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	d, err := n.AddProvider(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d.Provider != 4 || d.Signer || !n.Running(4) {
		t.Fatalf("added %+v", d)
	}
	st := n.State()
	c1, c4 := client(t, n, 1), client(t, n, 4)
	if s, _ := c4.Signers(t.Context()); len(s) != 3 {
		t.Fatalf("provider 4 sees signers %v", s)
	}
	status, err := n.Status(t.Context())
	if err != nil || status.Nodes[3].Signer || !status.Nodes[3].Up {
		t.Fatalf("status after add: %+v %v", status, err)
	}

	want := NewSignerSet(st.Signers()...)
	want.Add(d.Authority)
	ms, err := n.Mirrors(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseMirrors(ms)
	step := func() bool {
		settled := true
		for _, m := range ms {
			d, err := m.Step(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			settled = settled && d.None()
		}
		return settled
	}
	isSigner := func(a common.Address) bool {
		s, err := c1.Signers(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range s {
			if x == a {
				return true
			}
		}
		return false
	}

	start := time.Now()
	voteIn := waitChain(t, n, 30*time.Second, "provider 4 voted in", func() (bool, string) {
		step()
		return isSigner(d.Authority), ""
	})
	h := height(t, c1)
	sealed := waitSealedBy(t, n, c1, d.Authority, h, 30*time.Second)
	t.Logf("MEASURED vote in: signer after %s, first block sealed after %s", voteIn.Round(10*time.Millisecond), time.Since(start).Round(10*time.Millisecond))
	if !step() {
		t.Fatal("drift after the vote passed")
	}
	for _, m := range ms {
		if p, _ := m.node.Proposals(t.Context()); len(p) != 0 {
			t.Fatalf("%s still votes %v after convergence", m.node.URL, p)
		}
	}

	want.Remove(d.Authority)
	start = time.Now()
	voteOut := waitChain(t, n, 30*time.Second, "provider 4 voted out", func() (bool, string) {
		step()
		return !isSigner(d.Authority), ""
	})
	t.Logf("MEASURED vote out: %s", voteOut.Round(10*time.Millisecond))
	out := height(t, c1)
	if out <= sealed {
		t.Fatalf("removal at %d before its block %d", out, sealed)
	}
	waitChain(t, n, 20*time.Second, "4 blocks after the removal", func() (bool, string) { return height(t, c1) >= out+4, "" })
	if got := sealers(t, c1, out+1, out+4); got[d.Authority] > 0 {
		t.Fatalf("provider 4 sealed after its removal: %v", got)
	}
	step()
	if status, _ := n.Status(t.Context()); len(status.Signers) != 3 {
		t.Fatalf("signers %v", status.Signers)
	}
}

func TestBadInput(t *testing.T) {
	g := testGeth(t)
	ctx := t.Context()

	t.Run("geth missing", func(t *testing.T) {
		_, err := FindGeth(ctx, filepath.Join(t.TempDir(), "geth"))
		if !errors.Is(err, ErrGethMissing) || !strings.Contains(err.Error(), "make bin/geth") {
			t.Fatal(err)
		}
	})
	t.Run("geth of another version", func(t *testing.T) {
		fake := filepath.Join(t.TempDir(), "geth")
		os.WriteFile(fake, []byte("#!/bin/sh\necho Geth\necho Version: 1.14.0-stable\n"), 0o755)
		_, err := FindGeth(ctx, fake)
		if !errors.Is(err, ErrGethVersion) || !strings.Contains(err.Error(), "1.14.0") || !strings.Contains(err.Error(), GethVersion) {
			t.Fatal(err)
		}
	})
	t.Run("not geth", func(t *testing.T) {
		if _, err := FindGeth(ctx, "/bin/true"); !errors.Is(err, ErrGethVersion) {
			t.Fatal(err)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		dir := filepath.Join(t.TempDir(), "net")
		_, err = Create(ctx, dir, g, Options{Providers: 2, Period: 1, BasePort: port}, nil)
		if !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), strconv.Itoa(port)) {
			t.Fatal(err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a failed create left %s behind", dir)
		}
	})
	t.Run("unreachable RPC", func(t *testing.T) {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		url := "http://" + l.Addr().String()
		l.Close()
		_, err := Dial(ctx, url)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), url) {
			t.Fatal(err)
		}
	})
	t.Run("foreign data dir", func(t *testing.T) {
		a, err := Create(ctx, filepath.Join(t.TempDir(), "a"), g, Options{Providers: 2, Period: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Create(ctx, filepath.Join(t.TempDir(), "b"), g, Options{Providers: 1, Period: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { killAll(a) })
		// b's chain where a's second node should be.
		dd := a.Path("node2/geth")
		if err := os.RemoveAll(dd); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(b.Path("node1/geth"), dd); err != nil {
			t.Fatal(err)
		}
		before := fileSnapshot(t, a.Dir())
		err = a.Up(ctx)
		if !errors.Is(err, ErrGenesisMismatch) || !strings.Contains(err.Error(), a.Path("node2")) {
			t.Fatal(err)
		}
		for _, p := range []int{1, 2} {
			if a.Running(p) {
				t.Fatalf("provider %d started", p)
			}
		}
		// Reading the stored genesis opens the database read-only, which
		// takes its (empty) LOCK file: the only files allowed to change.
		after := fileSnapshot(t, a.Dir())
		for f, v := range before {
			if after[f] != v && !strings.HasSuffix(f, lockFile) && filepath.Base(f) != "LOCK" {
				t.Errorf("%s changed", f)
			}
		}
		if len(after) != len(before) {
			t.Errorf("%d files before, %d after", len(before), len(after))
		}
	})
	t.Run("not a network", func(t *testing.T) {
		if _, err := Open(t.TempDir(), g, nil); !errors.Is(err, ErrNoNetwork) {
			t.Fatal(err)
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600)
		if _, err := Create(ctx, dir, g, Options{Providers: 1}, nil); !errors.Is(err, ErrNotEmpty) {
			t.Fatal(err)
		}
	})
}
