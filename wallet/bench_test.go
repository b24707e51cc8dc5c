package wallet

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/internal/testnet"
)

// BenchmarkRecords5x1000 is the patient's merged timeline: 5 providers with
// 1,000 resources each, read in parallel over loopback HTTP (signed
// $everything, every page) and merged newest first. Goal: p95 ≤ 300 ms.
func BenchmarkRecords5x1000(b *testing.B) {
	const providers, perProvider = 5, 1000
	ctx := context.Background()
	n := newNet(b, providers)
	w := n.wallet(b, patientWords)
	cm, err := w.Commitment()
	if err != nil {
		b.Fatal(err)
	}
	for p := 1; p <= providers; p++ {
		n.staff(b, p, "POST", "/admin/patients", `{"id":"pat"}`)
		n.staff(b, p, "POST", "/admin/patients/pat/resources", testnet.ObservationBundle("pat", fmt.Sprintf("p%d-obs", p), perProvider))
		code := n.ClaimCode(b, p, "pat")
		if p == 1 {
			n.staff(b, p, "POST", "/admin/patients/pat/enrol", `{"commitment":"`+cm+`"}`)
		}
		if err := w.Connect(ctx, uint32(p), code); err != nil {
			b.Fatalf("connect %d: %v", p, err)
		}
	}
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		recs, results, err := w.Records(ctx)
		took = append(took, time.Since(start))
		if err != nil || len(recs) != providers*perProvider {
			b.Fatalf("records: %d, %v", len(recs), err)
		}
		for _, r := range results {
			if r.Err != nil {
				b.Fatalf("%s: %v", r.Provider.Name, r.Err)
			}
		}
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[(len(took)*95+99)/100-1].Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(providers*perProvider), "records")
}
