package wallet

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchmarkRecords5x1000 is the patient's merged timeline: 5 providers with
// 1,000 resources each, read in parallel over loopback HTTP and merged
// newest first — cold (signed $everything, every page, at every provider)
// and cached (each gateway asked for changes only). Goal: p95 ≤ 300 ms.
func BenchmarkRecords5x1000(b *testing.B) {
	const providers, perProvider = 5, 1000
	ctx := context.Background()
	n := newNet(b, providers)
	w := n.wallet(b, patientWords)
	n.SeedConnected(b, w, perProvider)
	for _, cold := range []bool{true, false} {
		name := "cached"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				if cold {
					w.mu.Lock()
					clear(w.cache)
					w.mu.Unlock()
				}
				start := time.Now()
				recs, results, err := w.Records(ctx)
				took = append(took, time.Since(start))
				if err != nil || len(recs) != providers*perProvider {
					b.Fatalf("records: %d, %v; providers: %+v", len(recs), err, results)
				}
				for _, r := range results {
					if r.Err != nil || r.Cached == cold {
						b.Fatalf("%s: cached %v, %v", r.Provider.Name, r.Cached, r.Err)
					}
				}
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[(len(took)*95+99)/100-1].Microseconds())/1000, "p95-ms")
		})
	}
}
