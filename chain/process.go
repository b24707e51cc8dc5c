package chain

import (
	"bytes"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// alive reports whether pid is a live geth serving datadir: the pid alone
// may have been reused by any process since we wrote it down.
func alive(pid int, datadir string) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after the parenthesised command name, is the state.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	// A process in the middle of execve — `ip netns exec` becoming geth —
	// shows an empty command line for a moment: look again before calling
	// it gone (a busy machine made a just-started node look dead).
	for try := 0; err == nil && len(cmdline) == 0 && try < 20; try++ {
		time.Sleep(5 * time.Millisecond)
		cmdline, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	}
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "--datadir" && args[i+1] == datadir {
			return true
		}
	}
	return false
}

// spawn starts geth detached in its own session (it outlives the medrec
// command that started it), output appended to logPath; in network
// namespace netns when given (`ip netns exec` execs geth, so the pid is
// geth's).
func spawn(gethPath string, args []string, logPath string, netns string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- medrec: starting geth at %s\n", time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(gethPath, args...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, gethPath}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start geth: %w", err)
	}
	// Reap it if it dies while we are still around; once we exit, init does.
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// terminate stops pid (known to be our geth on datadir): SIGINT, which
// makes geth flush and close its database, then SIGKILL after grace.
func terminate(ctx context.Context, pid int, datadir string, grace time.Duration) error {
	if !alive(pid, datadir) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		return fmt.Errorf("signal geth %d: %w", pid, err)
	}
	if waitDead(ctx, pid, datadir, grace) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && alive(pid, datadir) {
		return fmt.Errorf("kill geth %d: %w", pid, err)
	}
	if !waitDead(ctx, pid, datadir, 10*time.Second) {
		return fmt.Errorf("geth %d survived SIGKILL", pid)
	}
	return nil
}

// exited reports whether pid is gone with all its threads (and so its
// sockets): /proc shows a multi-threaded process's leader as a zombie while
// its other threads are still exiting and still hold its ports.
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return true
	}
	// After ")": state is field 3, num_threads field 20.
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 18 || (f[0] != "Z" && f[0] != "X") {
		return false
	}
	threads, err := strconv.Atoi(f[17])
	return err != nil || threads <= 1
}

// waitDead waits until pid, our geth on datadir, has exited.
func waitDead(ctx context.Context, pid int, datadir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for alive(pid, datadir) || !exited(pid) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// checkPort fails with ErrPortInUse, naming the port, if it cannot be bound
// on loopback.
func checkPort(port int, what string) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%w: 127.0.0.1:%d (%s): %v", ErrPortInUse, port, what, err)
	}
	return l.Close()
}

// portGrace is how long a node's port may stay taken before starting it
// fails: a node killed a moment ago may still be closing its sockets.
const portGrace = 3 * time.Second

// freePorts picks n distinct free loopback ports below the kernel's
// ephemeral range: a node's ports are reused at every restart, and a port
// in the ephemeral range may meanwhile be the source port of any outgoing
// connection.
func freePorts(n int) ([]int, error) {
	lo, hi := portRange()
	seen := map[int]bool{}
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("no free loopback ports in %d–%d", lo, hi)
		}
		p := lo + mrand.IntN(hi-lo)
		if seen[p] || checkPort(p, "") != nil || !claimPort(p) {
			continue
		}
		seen[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// FreePort picks a free loopback port for a service of the network (a
// provider's gateway) the way the nodes' ports are picked: below the
// ephemeral range, where no outgoing connection or test server on port 0
// can take it meanwhile, and claimed against other processes picking ports
// this way.
func FreePort() (int, error) {
	ports, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// portClaimTTL is how long a port freePorts picked stays claimed against
// other processes: long enough for the network to start and its node to
// bind it.
const portClaimTTL = 5 * time.Minute

// claimPort claims port p for this process among those that pick ports with
// freePorts on this machine: a port free now is bound by its geth only
// seconds later, and two networks created at once (test packages run in
// parallel) could otherwise both pick it. A claim is a file created
// exclusively under the temporary directory; one older than portClaimTTL is
// stale and taken over (its port is free again, or checkPort says not).
func claimPort(p int) bool {
	dir := filepath.Join(os.TempDir(), "medrec-port-claims")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true // no claims here: checkPort alone decides
	}
	path := filepath.Join(dir, strconv.Itoa(p))
	for try := 0; try < 2; try++ {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		fi, serr := os.Stat(path)
		if !os.IsExist(err) || serr != nil || time.Since(fi.ModTime()) < portClaimTTL {
			return false
		}
		os.Remove(path) // stale
	}
	return false
}

// portRange is where freePorts looks: from 20000 up to the start of the
// ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range).
func portRange() (int, int) {
	lo, hi := 20000, 32768
	if raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(raw)); len(f) == 2 {
			if start, err := strconv.Atoi(f[0]); err == nil && start > 10000 {
				hi, lo = start, min(lo, start/2)
			}
		}
	}
	return lo, hi
}

// logReason is the line of a geth log that best explains a failure — its
// last "Fatal:" line, else its last line — for one-line error messages.
func logReason(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "Fatal:") {
			return strings.TrimSpace(lines[i])
		}
	}
	return strings.TrimSpace(lines[len(lines)-1])
}
