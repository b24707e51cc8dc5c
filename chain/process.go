package chain

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
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
// command that started it), output appended to logPath.
func spawn(gethPath string, args []string, logPath string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- medrec: starting geth at %s\n", time.Now().UTC().Format(time.RFC3339))
	cmd := exec.Command(gethPath, args...)
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

func waitDead(ctx context.Context, pid int, datadir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for alive(pid, datadir) {
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

// freePorts reserves n distinct free loopback ports and releases them.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
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
