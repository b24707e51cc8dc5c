package dbmanager

import (
	"context"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// BenchmarkTokenReads measures a SMART app's reads with its access token
// over loopback HTTP (64 concurrent keep-alive clients; SQLite with
// synchronous=FULL, every read logged durably before it is served), side
// by side with the same server with the decision switched off (token,
// chain view, owner, scope), in alternating batches of one run, as
// BenchmarkSignedRead does for signed reads. Issue 14's goals: ≥ 5,000
// req/s checked, ≥ 70 % of unchecked. Measured, not asserted.
func BenchmarkTokenReads(b *testing.B) {
	w := newSMARTWorld(b, func(c *Config) {
		c.SyncInterval = 500 * time.Millisecond
		c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30
		c.AppTokenTTL = time.Hour
	})
	tok := w.accessToken(b, newLaunch("chart", "patient/*.rs"), false)["access_token"].(string)
	addr := freeAddr(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.gw.Listen(ctx, addr)
	off := &reader{kind: store.ActorApp, id: "chart", tag: w.tag, patient: "p1", scope: access.AllTypes, search: access.AllTypes}
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
	requests := func(n int, addr string) []*fasthttp.Request {
		reqs := make([]*fasthttp.Request, n)
		for i := range reqs {
			r := new(fasthttp.Request)
			r.SetRequestURI("http://" + addr + target)
			r.Header.Set("Authorization", "Bearer "+tok)
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
		reqs, plain := requests(k, addr), requests(k, plainAddr)
		b.StartTimer()
		checked += runReads(b, hc, reqs, conc, observationJS)
		unchecked += runReads(b, plainHC, plain, conc, observationJS)
		n += k
	}
	b.ReportMetric(float64(n)/checked.Seconds(), "checked-req/s")
	b.ReportMetric(float64(n)/unchecked.Seconds(), "unchecked-req/s")
	b.ReportMetric(100*unchecked.Seconds()/checked.Seconds(), "%-of-unchecked")
}
