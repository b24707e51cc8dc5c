package faultnet

import (
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections to a target and can slow them down: every
// chunk of bytes read, in each direction, is written Delay later; with
// probability Loss a chunk is held back a further RTO, and everything
// behind it waits, which is what a lost segment costs a TCP stream (its
// retransmission). It is not packet loss — a userspace proxy cannot drop
// what TCP will resend — but its effect on the stream's timing.
type Proxy struct {
	l net.Listener

	mu     sync.Mutex
	target string
	delay  time.Duration
	loss   float64
	conns  map[net.Conn]struct{}
	closed bool
}

// RTO is what a lost chunk costs: Linux's minimum retransmission timeout.
const RTO = 200 * time.Millisecond

// Listen starts a proxy on addr (host:0 for a free port); target is set
// with SetTarget before the first connection is useful.
func Listen(addr string) (*Proxy, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{l: l, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

// Addr is where the proxy listens.
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// SetTarget sets where connections go.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
}

// SetFaults sets the one-way delay and the chunk loss probability for the
// bytes that pass from now on.
func (p *Proxy) SetFaults(delay time.Duration, loss float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay, p.loss = delay, loss
}

func (p *Proxy) faults() (time.Duration, float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay, p.loss
}

// Close stops the proxy and closes its connections.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	return p.l.Close()
}

func (p *Proxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		if p.closed {
			return false
		}
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
	return true
}

func (p *Proxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(in)
	}
}

func (p *Proxy) handle(in net.Conn) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	out, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, true) || !p.track(out, true) {
		in.Close()
		out.Close()
		return
	}
	defer p.track(in, false)
	defer p.track(out, false)
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(out, in) })
	wg.Go(func() { p.pipe(in, out) })
	wg.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk written when it is due; closing either
// side closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				delay, loss := p.faults()
				if loss > 0 && rand.Float64() < loss {
					delay += RTO
				}
				q <- chunk{buf[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range q { // let the reader finish
	}
}
