package dbmanager

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// BenchmarkSignedRead measures signed FHIR reads over loopback HTTP (64
// concurrent keep-alive clients, as a gateway serving many readers sees;
// SQLite with synchronous=FULL, every read logged durably before it is
// served, its nonce in the same commit), side by side with the same server
// with the permission check switched off (signature, nonce, relationship,
// grant), in alternating batches of one run. Requests are signed before the
// clock runs. Goals: ≥ 5,000 req/s checked, ≥ 70 % of unchecked.
func BenchmarkSignedRead(b *testing.B) {
	w := newWorld(b, func(c *Config) { c.SyncInterval = 500 * time.Millisecond; c.RateLimit = 1 << 30 })
	w.open() // the gateway relayed the open: its next decision sees it
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.gw.Listen(ctx, addr)
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: 128}
	for i := 0; i < 100; i++ {
		if st, _, err := hc.Get(nil, "http://"+addr+"/fhir/metadata"); err == nil && st == 200 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	const (
		target = "/fhir/Observation/o1"
		conc   = 64
		batch  = 250
	)
	sign := func(n int) []*fasthttp.Request {
		reqs := make([]*fasthttp.Request, n)
		for i := range reqs {
			h := http.Header{}
			err := gatewayauth.Sign(h, gatewayauth.Request{Method: "GET", Path: target, BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1,
				Expiry: uint64(time.Now().Add(4 * time.Minute).Unix())}, w.owner, w.chain.ChainID, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			r := new(fasthttp.Request)
			r.SetRequestURI("http://" + addr + target)
			for k, v := range h {
				r.Header.Set(k, v[0])
			}
			reqs[i] = r
		}
		return reqs
	}
	run := func(reqs []*fasthttp.Request) time.Duration {
		var next atomic.Int64
		var wg sync.WaitGroup
		failed := make(chan string, 1)
		start := time.Now()
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var res fasthttp.Response
				for {
					i := next.Add(1) - 1
					if i >= int64(len(reqs)) {
						return
					}
					if err := hc.Do(reqs[i], &res); err != nil || res.StatusCode() != 200 || string(res.Body()) != observationJS {
						select {
						case failed <- string(res.Body()):
						default:
						}
						return
					}
				}
			}()
		}
		wg.Wait()
		took := time.Since(start)
		select {
		case body := <-failed:
			b.Fatalf("a read failed: %s", body)
		default:
		}
		return took
	}
	off := &reader{kind: store.ActorPatient, id: simchain.Addr(w.owner).Hex(), tag: w.tag, patient: "p1", scope: access.AllTypes}
	var checked, unchecked time.Duration
	n := 0
	b.ResetTimer()
	for n < b.N {
		k := min(batch, b.N-n)
		b.StopTimer()
		reqs, plain := sign(k), sign(k)
		b.StartTimer()
		checked += run(reqs)
		w.gw.unchecked.Store(off)
		unchecked += run(plain)
		w.gw.unchecked.Store(nil)
		n += k
	}
	b.ReportMetric(float64(n)/checked.Seconds(), "checked-req/s")
	b.ReportMetric(float64(n)/unchecked.Seconds(), "unchecked-req/s")
	b.ReportMetric(100*unchecked.Seconds()/checked.Seconds(), "%-of-unchecked")
}
