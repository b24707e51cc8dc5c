package devnet

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts"
)

// TestSoak is `make soak`'s long run, not part of make test: MEDREC_SOAK
// is how long (30m there). Mixed load on a 3-provider loopback network —
// signed reads by the patient, grants and revocations relayed through the
// other providers' nodes and checked at the gateway, imports by staff —
// while an authority is restarted every MEDREC_SOAK_RESTART (5m there;
// providers 1, 3, 2 in turn, 2 being the gateway's own node). It checks
// that every answer is one the docs allow (a read 200, or 503 while the
// gateway's own node is down; a revoked doctor never served once the
// revocation was enforced) and that memory stays flat, and logs the
// figures for docs/reliability.md.
func TestSoak(t *testing.T) {
	total, err := time.ParseDuration(os.Getenv("MEDREC_SOAK"))
	if err != nil || total <= 0 {
		t.Skip("MEDREC_SOAK (a duration) unset: the soak runs under make soak")
	}
	every, err := time.ParseDuration(os.Getenv("MEDREC_SOAK_RESTART"))
	if err != nil || every <= 0 {
		every = 5 * time.Minute
	}
	n := testNetwork(t)
	w := newFaultWorld(t, n, 2)
	g := w.gateway(gatewaySetup{heads: true, interval: 500 * time.Millisecond})
	defer g.close()
	ctx, cancel := context.WithTimeout(t.Context(), total)
	defer cancel()

	var (
		mu       sync.Mutex
		problems []string
		reads    = map[int]int{}
		readLat  []time.Duration
		cycles   atomic.Int64
		enforce  []time.Duration // revocation mined → refused at the gateway
		imports  atomic.Int64
		node2Up  atomic.Bool
	)
	node2Up.Store(true)
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 50 {
			problems = append(problems, fmt.Sprintf("%s: ", time.Now().Format("15:04:05.000"))+fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup

	// Readers: the patient reads back to back.
	for range 3 {
		wg.Go(func() {
			for ctx.Err() == nil {
				up := node2Up.Load()
				s := time.Now()
				st := g.read(w.owner)
				d := time.Since(s)
				mu.Lock()
				reads[st]++
				if st == 200 {
					readLat = append(readLat, d)
				}
				mu.Unlock()
				if st != 200 && !(st == 503 && !(up && node2Up.Load())) {
					problem("patient read answered %d (gateway's node up: %v)", st, up)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// Sharing: grant a new doctor, see it served, revoke, see it refused
	// and never served again.
	wg.Go(func() {
		for ctx.Err() == nil {
			doctor, _ := crypto.GenerateKey()
			if !soakStep(ctx, w, g, doctor, false) {
				continue
			}
			start := time.Now()
			if !soakStep(ctx, w, g, doctor, true) {
				if ctx.Err() == nil {
					problem("a revocation was not enforced")
				}
				continue
			}
			mu.Lock()
			enforce = append(enforce, time.Since(start))
			mu.Unlock()
			for range 5 {
				if st := g.read(doctor); st == 200 {
					problem("a revoked doctor was served again")
				}
			}
			cycles.Add(1)
		}
	})
	// Imports: staff add records now and then.
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			body := fmt.Sprintf(`{"resourceType":"Observation","id":"soak%d","status":"final","code":{"text":"Heart rate"},"subject":{"reference":"Patient/p7"}}`, i)
			req := httptest.NewRequest("POST", "/admin/patients/p7/resources", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+faultStaffToken)
			res, err := g.g.App().Test(req, -1)
			if err != nil {
				problem("import: %v", err)
			} else if res.StatusCode != 201 {
				problem("import answered %d", res.StatusCode)
			} else {
				imports.Add(1)
			}
			time.Sleep(time.Second)
		}
	})

	// Restarts, and memory.
	type sample struct {
		at   time.Duration
		heap uint64
		rss  []int64
	}
	var samples []sample
	take := func(at time.Duration) {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s := sample{at: at, heap: m.HeapAlloc}
		for _, ns := range n.State().Nodes {
			s.rss = append(s.rss, rssKiB(ns.PID))
		}
		samples = append(samples, s)
	}
	began := time.Now()
	take(0)
	order := []int{1, 3, 2}
	restarts := 0
	tick := time.NewTicker(min(every, 30*time.Second))
	defer tick.Stop()
	next := began.Add(every)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			take(time.Since(began))
			if time.Now().Before(next) {
				continue
			}
			next = next.Add(every)
			p := order[restarts%len(order)]
			restarts++
			if p == 2 {
				node2Up.Store(false)
			}
			s := time.Now()
			if err := n.Restart(context.WithoutCancel(ctx), p); err != nil {
				problem("restart provider %d: %v", p, err)
			}
			t.Logf("restarted provider %d in %s", p, time.Since(s).Round(10*time.Millisecond))
			if p == 2 {
				// The gateway subscribes again within a second or two.
				deadline := time.Now().Add(30 * time.Second)
				for !g.g.FollowingHeads() && time.Now().Before(deadline) {
					time.Sleep(100 * time.Millisecond)
				}
				time.Sleep(time.Second)
				node2Up.Store(true)
			}
		}
	}
	wg.Wait()
	take(time.Since(began))

	slices.Sort(readLat)
	slices.Sort(enforce)
	pct := func(l []time.Duration, p int) time.Duration {
		if len(l) == 0 {
			return 0
		}
		return l[min(len(l)-1, len(l)*p/100)]
	}
	t.Logf("MEASURED soak %s, an authority restarted every %s (%d restarts): reads %v, p50 %s p99 %s; %d grant/revoke cycles, revocation enforced p50 %s max %s after it was sent; %d imports",
		total, every, restarts, reads, pct(readLat, 50).Round(100*time.Microsecond), pct(readLat, 99).Round(100*time.Microsecond),
		cycles.Load(), pct(enforce, 50).Round(10*time.Millisecond), pct(enforce, 100).Round(10*time.Millisecond), imports.Load())
	var lines []string
	for _, s := range samples {
		lines = append(lines, fmt.Sprintf("%s heap %d MiB, geth RSS %v MiB", s.at.Round(time.Second), s.heap>>20, mib(s.rss)))
	}
	t.Logf("MEASURED soak memory:\n  %s", strings.Join(lines, "\n  "))
	for _, p := range problems {
		t.Error(p)
	}
	if cycles.Load() == 0 || imports.Load() == 0 {
		t.Errorf("no sharing cycle (%d) or import (%d) completed", cycles.Load(), imports.Load())
	}
	// Flat: the test process's live heap at the end within 2× (+16 MiB) of
	// its largest in the first quarter.
	var early uint64
	for _, s := range samples {
		if s.at <= total/4 {
			early = max(early, s.heap)
		}
	}
	if last := samples[len(samples)-1].heap; last > 2*early+16<<20 {
		t.Errorf("heap grew from %d MiB (first quarter) to %d MiB", early>>20, last>>20)
	}
}

// soakStep sends a grant or a revocation of doctor with the owner's next
// nonce (read from the chain) through provider 1's or 3's node, and waits
// until the gateway serves (grant) or refuses (revocation) the doctor. A
// node restarting meanwhile makes it try again; false when ctx ended.
func soakStep(ctx context.Context, w *faultWorld, g *testGateway, doctor *ecdsa.PrivateKey, revoke bool) bool {
	want := map[bool]int{false: 200, true: 403}[revoke]
	for attempt := 0; ctx.Err() == nil; attempt++ {
		via := []int{1, 3}[attempt%2]
		ec, err := Dial(ctx, w.n, via)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		rel, err := contracts.NewClient(ec, w.d).Relationship(ctx, w.tag)
		ec.Close()
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		if _, err := w.trySend(ctx, via, doctor, revoke, rel.Nonce); err != nil {
			time.Sleep(time.Second)
			continue
		}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
			if g.read(doctor) == want {
				return true
			}
		}
	}
	return false
}

// rssKiB is a process's resident set (0 when gone).
func rssKiB(pid int) int64 {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func mib(kib []int64) []int64 {
	out := make([]int64, len(kib))
	for i, k := range kib {
		out[i] = k >> 10
	}
	return out
}
