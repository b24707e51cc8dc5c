package dbmanager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
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
	w := newWorld(b, func(c *Config) {
		c.SyncInterval = 500 * time.Millisecond
		c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30
	})
	w.open() // the gateway relayed the open: its next decision sees it
	addr := freeAddr(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.gw.Listen(ctx, addr)
	// The unchecked server: the same gateway's answer to a read, for a fixed
	// reader, without the decision (signature, nonce, relationship, grant),
	// on the same store, in the same process.
	off := &reader{kind: store.ActorPatient, id: simchain.Addr(w.owner).Hex(), tag: w.tag, patient: "p1", scope: access.AllTypes}
	plainApp := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: w.gw.errorHandler})
	plainApp.Get("/fhir/:type/:id", func(c *fiber.Ctx) error { return w.gw.serveRead(c, off, c.Params("type"), c.Params("id"), 0) })
	plainAddr := freeAddr(b)
	go plainApp.Listen(plainAddr)
	defer plainApp.Shutdown()
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: 128}
	plainHC := &fasthttp.HostClient{Addr: plainAddr, MaxConns: 128}
	for _, c := range []*fasthttp.HostClient{hc, plainHC} {
		for i := 0; i < 100; i++ {
			if st, _, err := c.Get(nil, "http://"+c.Addr+"/fhir/metadata"); err == nil && (st == 200 || st == 400) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
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
				Expiry: uint64(time.Now().Add(4 * time.Minute).Unix())}, w.owner, w.domain(), time.Now())
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
	var checked, unchecked time.Duration
	n := 0
	b.ResetTimer()
	for n < b.N {
		k := min(batch, b.N-n)
		b.StopTimer()
		reqs, plain := sign(k), sign(k)
		b.StartTimer()
		checked += runReads(b, hc, reqs, conc, observationJS)
		unchecked += runReads(b, plainHC, plain, conc, observationJS)
		n += k
	}
	b.ReportMetric(float64(n)/checked.Seconds(), "checked-req/s")
	b.ReportMetric(float64(n)/unchecked.Seconds(), "unchecked-req/s")
	b.ReportMetric(100*unchecked.Seconds()/checked.Seconds(), "%-of-unchecked")
}

// runReads sends reqs over hc from conc goroutines and returns how long
// they took; every answer must be a 200 with body want.
func runReads(b *testing.B, hc *fasthttp.HostClient, reqs []*fasthttp.Request, conc int, want string) time.Duration {
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
				if err := hc.Do(reqs[i], &res); err != nil || res.StatusCode() != 200 || string(res.Body()) != want {
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

// BenchmarkAnchorOnce measures one anchoring pass of a provider with 200
// tagged patients holding 100 records each: between passes 20 of them get a
// new record and 500 access-log entries are appended, about those 20
// ("changed") or about all 200 ("spread": every patient read in the
// batch); the pass reads what changed, builds the roots, stores the batch
// and publishes it (simulated chain).
func BenchmarkAnchorOnce(b *testing.B) {
	for _, spread := range []bool{false, true} {
		name := "changed"
		if spread {
			name = "spread"
		}
		b.Run(name, func(b *testing.B) { benchmarkAnchorOnce(b, spread) })
	}
}

func benchmarkAnchorOnce(b *testing.B, spread bool) {
	const patients, records, dirty, entries = 200, 100, 20, 500
	ctx := context.Background()
	w := newWorld(b)
	s := w.cfg.Store
	obs := func(p, id string) []byte {
		return []byte(`{"resourceType":"Observation","id":"` + id + `","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/` + p + `"}}`)
	}
	for i := range patients {
		p := fmt.Sprintf("pat%d", i)
		var ws []store.Write
		for j := range records {
			id := fmt.Sprintf("%s-o%d", p, j)
			ws = append(ws, store.Write{Type: "Observation", ID: id, Raw: obs(p, id), Mode: store.Create})
		}
		imp := []store.LogEntry{{ActorKind: store.ActorStaff, ActorID: "desk", Action: "import", PatientID: p, Outcome: store.Allowed}}
		if _, err := s.Apply(ctx, store.Batch{PatientID: p, CreatePatient: true, Writes: ws, Log: imp}); err != nil {
			b.Fatal(err)
		}
		var tag store.Tag
		tag[30], tag[31] = byte(i>>8), byte(i)+1
		if err := s.MapTag(ctx, p, tag); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.gw.AnchorOnce(ctx); err != nil {
		b.Fatal(err)
	}
	round := 0
	for b.Loop() {
		b.StopTimer()
		round++
		changed := func(i int) string { return fmt.Sprintf("pat%d", (round*dirty+i%dirty)%patients) }
		for i := range dirty {
			p := changed(i)
			id := fmt.Sprintf("%s-r%d", p, round)
			if _, err := s.Apply(ctx, store.Batch{PatientID: p, Writes: []store.Write{{Type: "Observation", ID: id, Raw: obs(p, id), Mode: store.Create}}}); err != nil {
				b.Fatal(err)
			}
		}
		log := make([]store.LogEntry, entries)
		for i := range log {
			p := changed(i)
			if spread {
				p = fmt.Sprintf("pat%d", (i*7+round)%patients)
			}
			log[i] = store.LogEntry{ActorKind: store.ActorGrantee, ActorID: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", Purpose: access.Treatment,
				Action: "read", PatientID: p, Resources: []string{"Observation/x"}, Outcome: store.Allowed}
		}
		if _, err := s.AppendLog(ctx, log...); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if made, err := w.gw.AnchorOnce(ctx); err != nil || !made {
			b.Fatalf("anchor: %v %v", made, err)
		}
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
