package faultnet

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echo serves one line back per line, until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(line))
				}
			}()
		}
	}()
	return l.Addr().String()
}

// TestProxy: bytes pass through unchanged; a delay is paid each way; a lost
// chunk costs an RTO more; Close ends the connections.
func TestProxy(t *testing.T) {
	p, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetTarget(echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	roundTrip := func(msg string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg+"\n" {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
		return time.Since(start)
	}
	roundTrip("warm up")
	for _, tc := range []struct {
		name    string
		delay   time.Duration
		loss    float64
		atLeast time.Duration
	}{
		{"no faults", 0, 0, 0},
		{"50 ms each way", 50 * time.Millisecond, 0, 100 * time.Millisecond},
		{"every chunk lost once", 10 * time.Millisecond, 1, 2 * (10*time.Millisecond + RTO)},
	} {
		p.SetFaults(tc.delay, tc.loss)
		if got := roundTrip(tc.name); got < tc.atLeast {
			t.Errorf("%s: round trip %s, want at least %s", tc.name, got, tc.atLeast)
		}
	}
	p.SetFaults(0, 0)
	p.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a connection outlived the proxy's Close")
	}
}
