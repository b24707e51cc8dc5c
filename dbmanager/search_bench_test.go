package dbmanager

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

// BenchmarkSearchTwoParams: one patient with 10,000 Observations (20
// codes, two categories, four statuses, dates over fifteen years); the
// owner searches with two parameters through the gateway on loopback —
// signature checked, search, log entry committed durably, first page of
// 50 with its total — one request at a time. Goal: p95 ≤ 50 ms (for the
// two-parameter searches; the third adds a sort by date).
func BenchmarkSearchTwoParams(b *testing.B) {
	w := newWorld(b, func(c *Config) { c.ReaderRateLimit, c.RateLimit = 1<<30, 1<<30 })
	w.open()
	ctx := context.Background()
	const n = 10_000
	statuses := []string{"final", "final", "amended", "preliminary"}
	categories := []string{"vital-signs", "laboratory"}
	for start := 0; start < n; start += 500 {
		var ws []store.Write
		for i := start; i < start+500; i++ {
			day := time.Date(2010, 1, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(i) * 13 * time.Hour)
			raw := fmt.Sprintf(`{"resourceType":"Observation","id":"b%05d","status":%q,"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":%q}]}],"code":{"coding":[{"system":"http://loinc.org","code":"1000-%d"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":%q,"valueQuantity":{"value":%d,"unit":"mmHg"}}`,
				i, statuses[i%len(statuses)], categories[i%len(categories)], i%20, day.Format(time.RFC3339), i%200)
			ws = append(ws, store.Write{Type: "Observation", ID: fmt.Sprintf("b%05d", i), Raw: []byte(raw), Mode: store.Create})
		}
		if _, err := w.cfg.Store.Apply(ctx, store.Batch{PatientID: "p1", Writes: ws}); err != nil {
			b.Fatal(err)
		}
	}
	addr := freeAddr(b)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.gw.Listen(sctx, addr)
	for i := 0; ; i++ {
		if res, err := http.Get("http://" + addr + "/fhir/metadata"); err == nil {
			res.Body.Close()
			break
		} else if i > 100 {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hc := &http.Client{}
	for _, c := range []struct{ name, query string }{
		{"code+date", "code=http://loinc.org|1000-7&date=ge2018-01-01"}, // 230 matches
		{"category+status", "category=vital-signs&status=final"},        // 2,500 matches
		{"category+status+sort", "category=vital-signs&status=final&_sort=-date"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				b.StopTimer()
				req := httptest.NewRequest("GET", "http://"+addr+"/fhir/Observation?"+c.query, nil)
				req.RequestURI = ""
				if err := gatewayauth.Sign(req.Header, gatewayauth.Request{Method: "GET", Path: req.URL.EscapedPath(), Query: req.URL.RawQuery,
					BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1}, w.owner, w.domain(), time.Now()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				res, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				var body [1 << 16]byte
				for {
					if _, err := res.Body.Read(body[:]); err != nil {
						break
					}
				}
				res.Body.Close()
				took = append(took, time.Since(start))
				if res.StatusCode != 200 {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[(len(took)*95+99)/100-1].Microseconds())/1000, "p95-ms")
		})
	}
}
