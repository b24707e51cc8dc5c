// Package faultnet gives fault tests a small network of hosts on one
// machine: one Linux network namespace per host, each joined to a bridge in
// this namespace by a veth pair, so that setting a host's link down cuts it
// off (a partition) and setting it up heals it. These kernels have no netem
// queueing discipline, so latency and loss come from a userspace TCP proxy
// (Proxy) that the hosts dial instead of each other. Nothing leaves the
// machine. It needs root (CAP_NET_ADMIN); Require says so clearly. Test
// code only. RequireRoot serves the other fault tests that need root (a
// small filesystem to fill).
package faultnet

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RequireEnv names the variable that makes a missing root a failure rather
// than a skip (make test sets it in CI, which runs as root).
const RequireEnv = "MEDREC_REQUIRE_ROOT"

// Require skips tb when this process cannot make namespaces (not root, or
// no `ip`), or fails it when RequireEnv=1.
func Require(tb testing.TB) {
	tb.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "not root: network namespaces need CAP_NET_ADMIN"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "no `ip` command (iproute2)"
	}
	refuse(tb, why)
}

// RequireRoot skips tb unless this process is root (to mount a small
// filesystem, say), or fails it when RequireEnv=1.
func RequireRoot(tb testing.TB, what string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		refuse(tb, "not root: "+what+" needs root")
	}
}

func refuse(tb testing.TB, why string) {
	tb.Helper()
	if why == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatalf("%s, but %s=1: run the tests as root (CI does)", why, RequireEnv)
	}
	tb.Skipf("%s (set %s=1 to make this a failure)", why, RequireEnv)
}

// Lab is a bridge and its hosts.
type Lab struct {
	id     string // short random name prefix: parallel labs never collide
	bridge string
	Net    string // CIDR of the hosts' network
	Gate   string // the bridge's own address: where this process listens for the hosts
	Hosts  []Host
}

// Host is one namespace on the lab's bridge.
type Host struct {
	NetNS string // namespace name (ip netns exec)
	IP    string
	link  string // the veth end on the bridge side
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// New makes a lab of n hosts (n ≤ 200) on a random 10.x.y.0/24, removed when
// tb ends. Call Require first.
func New(tb testing.TB, n int) *Lab {
	tb.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	id := "mf" + hex.EncodeToString(b)[:5]
	l := &Lab{id: id, bridge: id + "br", Net: fmt.Sprintf("10.%d.%d.0/24", 100+int(b[0])%100, b[1]), Gate: fmt.Sprintf("10.%d.%d.254", 100+int(b[0])%100, b[1])}
	prefix := strings.TrimSuffix(l.Net, "0/24")
	tb.Cleanup(l.close)
	must := func(err error) {
		if err != nil {
			tb.Fatalf("faultnet: %v", err)
		}
	}
	must(ip("link", "add", l.bridge, "type", "bridge"))
	must(ip("addr", "add", l.Gate+"/24", "dev", l.bridge))
	must(ip("link", "set", l.bridge, "up"))
	for i := 1; i <= n; i++ {
		h := Host{NetNS: fmt.Sprintf("%s-%d", id, i), IP: fmt.Sprintf("%s%d", prefix, i), link: fmt.Sprintf("%sh%d", id, i)}
		inner := fmt.Sprintf("%sn%d", id, i)
		must(ip("netns", "add", h.NetNS))
		l.Hosts = append(l.Hosts, h)
		must(ip("link", "add", h.link, "type", "veth", "peer", "name", inner))
		must(ip("link", "set", inner, "netns", h.NetNS))
		must(ip("link", "set", h.link, "master", l.bridge))
		must(ip("link", "set", h.link, "up"))
		must(ip("-n", h.NetNS, "addr", "add", h.IP+"/24", "dev", inner))
		must(ip("-n", h.NetNS, "link", "set", inner, "up"))
		must(ip("-n", h.NetNS, "link", "set", "lo", "up"))
	}
	return l
}

// close removes the hosts and the bridge (the veth pairs go with their
// namespaces). The processes in a namespace must be gone first.
func (l *Lab) close() {
	for _, h := range l.Hosts {
		ip("link", "del", h.link)
		ip("netns", "del", h.NetNS)
	}
	ip("link", "del", l.bridge)
}

// Cut sets host i's link (1-based) down: nothing reaches it or leaves it,
// as when its network is cut. Established TCP connections are not reset;
// they stall, as on a real cut.
func (l *Lab) Cut(i int) error { return ip("link", "set", l.Hosts[i-1].link, "down") }

// Heal sets host i's link up again.
func (l *Lab) Heal(i int) error { return ip("link", "set", l.Hosts[i-1].link, "up") }
