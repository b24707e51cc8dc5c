package chain

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
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
	t.Cleanup(func() { killAll(n) })
	return n
}

// killAll SIGKILLs every live node of n (test cleanup: no grace needed).
func killAll(n *Network) {
	st := n.State()
	if fresh, err := LoadState(n.dir); err == nil {
		st = fresh
	}
	for _, ns := range st.Nodes {
		crash(n, ns.Provider)
	}
}

// crash kills provider's geth with SIGKILL and waits until it is gone.
func crash(n *Network, provider int) {
	st := n.State()
	ns, err := st.node(provider)
	if err != nil || !alive(ns.PID, n.datadir(ns)) {
		return
	}
	syscall.Kill(ns.PID, syscall.SIGKILL)
	waitDead(context.Background(), ns.PID, n.datadir(ns), 10*time.Second)
}
