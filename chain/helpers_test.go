package chain

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// testGeth is the geth the tests run: $MEDREC_GETH. Without it the test is
// skipped, unless MEDREC_REQUIRE_GETH=1 (make test-go) makes that a failure.
func testGeth(t *testing.T) *Geth {
	t.Helper()
	path := os.Getenv(GethEnv)
	if path == "" {
		if os.Getenv("MEDREC_REQUIRE_GETH") == "1" {
			t.Fatalf("%s is unset but MEDREC_REQUIRE_GETH=1", GethEnv)
		}
		t.Skipf("%s unset: no geth to run (make test-go builds bin/geth and sets it)", GethEnv)
	}
	g, err := FindGeth(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// testLogger writes the supervisor's log to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p[:len(p)-1])); return len(p), nil }

// newTestNetwork creates a network of providers with 1 s blocks in the
// test's own directory, and kills its nodes when the test ends.
func newTestNetwork(t *testing.T, providers int) *Network {
	t.Helper()
	n, err := Create(t.Context(), t.TempDir(), testGeth(t), Options{Providers: providers, Period: 1}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killAll(n)
		if keepLogs != "" {
			for _, ns := range n.State().Nodes {
				dst := filepath.Join(keepLogs, t.Name(), ns.Dir+".log")
				os.MkdirAll(filepath.Dir(dst), 0o755)
				if raw, err := os.ReadFile(n.logPath(&ns)); err == nil {
					os.WriteFile(dst, raw, 0o644)
				}
			}
		}
	})
	return n
}

// killAll SIGKILLs every geth serving a data dir under n's directory,
// found in /proc — not from network.json, which another Network value on
// the same directory may have changed.
// It returns once they are gone (their ports free).
func killAll(n *Network) {
	pids := gethsUnder(n.dir)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !exited(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// gethsUnder lists the processes whose --datadir lies under dir.
func gethsUnder(dir string) []int {
	var pids []int
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
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// crash kills provider's geth with SIGKILL and waits until it is gone.
func crash(n *Network, provider int) {
	st, err := LoadState(n.dir)
	if err != nil {
		return
	}
	ns, err := st.node(provider)
	if err != nil || !alive(ns.PID, n.datadir(ns)) {
		return
	}
	syscall.Kill(ns.PID, syscall.SIGKILL)
	waitDead(context.Background(), ns.PID, n.datadir(ns), 10*time.Second)
}

// eventually polls cond every 100 ms until it holds or d passes; the
// failure message is cond's last report.
func eventually(t *testing.T, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	var report string
	for time.Since(start) < d {
		var ok bool
		if ok, report = cond(); ok {
			return time.Since(start)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %v", what, t.Context().Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("%s: not within %s: %s", what, d, report)
	return 0
}

func client(t *testing.T, n *Network, provider int) *Node {
	t.Helper()
	c, err := n.Client(t.Context(), provider)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func height(t *testing.T, c *Node) uint64 {
	t.Helper()
	h, err := c.Height(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sealers counts the authorities that sealed blocks from..to (inclusive).
func sealers(t *testing.T, c *Node, from, to uint64) map[common.Address]int {
	t.Helper()
	out := map[common.Address]int{}
	for b := from; b <= to; b++ {
		a, err := c.SignerOf(t.Context(), b)
		if err != nil {
			t.Fatal(err)
		}
		out[a]++
	}
	return out
}

// waitSealedBy waits until a block above `after` is sealed by addr and
// returns its number.
func waitSealedBy(t *testing.T, n *Network, c *Node, addr common.Address, after uint64, d time.Duration) uint64 {
	t.Helper()
	next := after + 1
	var found uint64
	waitChain(t, n, d, fmt.Sprintf("a block after %d sealed by %s", after, addr), func() (bool, string) {
		h := height(t, c)
		for ; next <= h; next++ {
			if a, err := c.SignerOf(t.Context(), next); err == nil && a == addr {
				found = next
				return true, ""
			}
		}
		return false, fmt.Sprintf("head %d", h)
	})
	return found
}

// fileSnapshot maps every file under dir to its size and modification time.
func fileSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				out[p] = fmt.Sprintf("%d %s", fi.Size(), fi.ModTime())
			}
		}
		return nil
	})
	return out
}

func init() {
	// MEDREC_KEEP_LOGS=DIR copies every test network's geth logs there.
	keepLogs = os.Getenv("MEDREC_KEEP_LOGS")
}

var keepLogs string

// waitChain is eventually for conditions that need new blocks: when the
// network's top height stalls (stallAfter), it heals a fork, as the
// supervisor's Watch loop does, and says so in the test log.
//
// A heal may wait up to 30 s for a rewound node to sync (geth, with fewer
// than five peers, syncs on its 10 s forced cycle; slower on a loaded
// machine), so d is at least long enough for a stall, a heal that times out
// and a second one: 90 s. A passing wait returns as soon as cond holds.
func waitChain(t *testing.T, n *Network, d time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	d = max(d, 90*time.Second)
	var (
		top      uint64
		progress = time.Now()
		checked  time.Time
	)
	return eventually(t, d, what, func() (bool, string) {
		if ok, report := cond(); ok {
			return true, report
		}
		if time.Since(checked) > time.Second {
			checked = time.Now()
			if h := topHeight(n); h > top {
				top, progress = h, time.Now()
			} else if time.Since(progress) > stallAfter(n.State()) {
				moved, err := n.Heal(t.Context())
				t.Logf("HEAL at height %d after %s without a block: moved providers %v (err %v)", top, time.Since(progress).Round(time.Second), moved, err)
				progress = time.Now()
			}
		}
		return false, fmt.Sprintf("top height %d", top)
	})
}

func topHeight(n *Network) uint64 {
	var top uint64
	for _, ns := range n.State().Nodes {
		if c, err := Dial(context.Background(), ns.RPC); err == nil {
			if h, err := c.Height(context.Background()); err == nil {
				top = max(top, h)
			}
			c.Close()
		}
	}
	return top
}
