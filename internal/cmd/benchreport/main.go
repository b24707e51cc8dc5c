// Command benchreport turns `go test -bench` output (standard input) into the
// Markdown table of `make bench`: one row per benchmark with the median of
// its runs for ns/op and every custom metric, checked against the goals the
// issues set where a goal exists.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/tools/benchmark/parse"
)

// goal is a ceiling (ns/op, or a metric such as p95-ms) or a floor (a rate
// such as checked-req/s) that an issue sets for a benchmark.
type goal struct {
	unit  string // "ns/op" or a custom metric's unit
	limit float64
	floor bool // the median must be at least limit (else at most)
}

func (g goal) String() string {
	op := "≤"
	if g.floor {
		op = "≥"
	}
	if g.unit == "ns/op" {
		return op + " " + time.Duration(g.limit).String()
	}
	return fmt.Sprintf("%s %g %s", op, g.limit, g.unit)
}

func (g goal) met(v float64) bool {
	if g.floor {
		return v >= g.limit
	}
	return v <= g.limit
}

// goals maps a benchmark name (without the -N CPU suffix) to its goals.
var goals = map[string][]goal{
	"BenchmarkProveOwnership":        {{unit: "ns/op", limit: float64(150 * time.Millisecond)}},
	"BenchmarkProveEntitlement":      {{unit: "ns/op", limit: float64(30 * time.Millisecond)}},
	"BenchmarkVerify/ownership":      {{unit: "ns/op", limit: float64(2 * time.Millisecond)}},
	"BenchmarkVerify/entitlement":    {{unit: "ns/op", limit: float64(2 * time.Millisecond)}}, // ≥ 500/s per core
	"BenchmarkAudit100k":             {{unit: "ns/op", limit: float64(time.Minute)}},
	"BenchmarkRecords5x1000/cold":    {{unit: "p95-ms", limit: 300}},
	"BenchmarkRecords5x1000/cached":  {{unit: "p95-ms", limit: 300}},
	"BenchmarkPages/home":            {{unit: "p95-ms", limit: 100}},
	"BenchmarkPages/records":         {{unit: "p95-ms", limit: 100}}, // the newest 200 of 5,000
	"BenchmarkPages/share":           {{unit: "p95-ms", limit: 100}},
	"BenchmarkPages/records?page=25": {{unit: "p95-ms", limit: 100}}, // the oldest 200
	"BenchmarkPages/log":             {{unit: "p95-ms", limit: 100}}, // 10,000 entries
	"BenchmarkChainWrite":            {{unit: "p50-s", limit: 2.5}},  // a share, click to in force, 2 s blocks
	// Ownership at the registry's next depth (ADR 0002, issue 16).
	"BenchmarkOwnershipDepth/depth=30": {{unit: "ns/op", limit: float64(150 * time.Millisecond)}},
	// Enrolment in frontier batches of 256 on the simulated chain (issue 16:
	// ≤ 30 k gas amortised).
	"BenchmarkEnrolBatches": {{unit: "gas/enrolment", limit: 30_000}, {unit: "capacity", limit: 1 << 30, floor: true}},
	// The audit of 10^7 enrolments in ≤ 10 minutes (issue 16): ≥ 16,667 a second.
	"BenchmarkAuditEnrolments": {{unit: "enrolments/s", limit: 16_667, floor: true}},
	// The gateway's tree in its records database (issue 16): it must keep up
	// with blocks full of enrolments (≈ 2,100 a 30 M-gas block of batches).
	"BenchmarkRegistryTree": {{unit: "enrolments/s", limit: 2_100, floor: true}, {unit: "path-µs", limit: 10_000}},
	// A batch of 128 enrolments proved on a gateway's 2 cores (issue 16).
	"BenchmarkProveInsertion": {{unit: "ms/enrolment", limit: 50}},
	// Proven batches of 128 on the simulated chain (issue 16: ≤ 5 k gas
	// amortised with a batch-insertion proof).
	"BenchmarkEnrolProven": {{unit: "gas/enrolment", limit: 5_000}},
	// A client's download for its path in a tree of 10^8 (issue 16: < 5 MB).
	"BenchmarkBucketPath10e8": {{unit: "download-bytes", limit: 5_000_000}},
	"BenchmarkSignedRead":     {{unit: "checked-req/s", limit: 5000, floor: true}, {unit: "%-of-unchecked", limit: 70, floor: true}},
	// FHIR search with two parameters over 10,000 resources (issue 14).
	"BenchmarkSearchTwoParams/code+date":       {{unit: "p95-ms", limit: 50}},
	"BenchmarkSearchTwoParams/category+status": {{unit: "p95-ms", limit: 50}},
	// A SMART app's token-authorised reads (issue 14).
	"BenchmarkTokenReads": {{unit: "checked-req/s", limit: 5000, floor: true}, {unit: "%-of-unchecked", limit: 70, floor: true}},
}

func main() {
	out := flag.String("o", "", "write the report here as well as to standard output")
	flag.Parse()
	report, failed, err := build(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	fmt.Print(report)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

func build(r io.Reader) (string, bool, error) {
	type agg struct {
		pkg     string
		ns      []float64
		metrics map[string][]float64
	}
	byName := map[string]*agg{}
	var order []string
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "pkg: ") {
			pkg = strings.TrimPrefix(line, "pkg: ")
			continue
		}
		b, err := parse.ParseLine(line)
		if err != nil {
			continue
		}
		name := b.Name
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i]
		}
		a, ok := byName[name]
		if !ok {
			a = &agg{pkg: pkg, metrics: map[string][]float64{}}
			byName[name] = a
			order = append(order, name)
		}
		a.ns = append(a.ns, b.NsPerOp)
		// Custom metrics (b.ReportMetric) follow "value unit" pairs after ns/op.
		fields := strings.Fields(line)
		for i := 2; i+1 < len(fields); i += 2 {
			unit := fields[i+1]
			if unit == "ns/op" || unit == "B/op" || unit == "allocs/op" || unit == "MB/s" {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(fields[i], &v); err == nil {
				a.metrics[unit] = append(a.metrics[unit], v)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", false, err
	}
	var b strings.Builder
	failed := false
	fmt.Fprintf(&b, "| benchmark | package | runs | median | goal | extra |\n|---|---|---|---|---|---|\n")
	for _, name := range order {
		a := byName[name]
		med := time.Duration(median(a.ns))
		var goalText []string
		for _, g := range goals[name] {
			v := float64(med)
			if g.unit != "ns/op" {
				xs, ok := a.metrics[g.unit]
				if !ok {
					goalText = append(goalText, g.String()+" (not reported) ✗")
					failed = true
					continue
				}
				v = median(xs)
			}
			mark := " ✓"
			if !g.met(v) {
				mark = " ✗"
				failed = true
			}
			goalText = append(goalText, g.String()+mark)
		}
		var extra []string
		units := make([]string, 0, len(a.metrics))
		for u := range a.metrics {
			units = append(units, u)
		}
		sort.Strings(units)
		for _, u := range units {
			extra = append(extra, fmt.Sprintf("%.4g %s", median(a.metrics[u]), u))
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s |\n", strings.TrimPrefix(name, "Benchmark"),
			strings.TrimPrefix(a.pkg, "github.com/medrec-zk/medrec/"), len(a.ns), med.Round(time.Microsecond/10), strings.Join(goalText, ", "), strings.Join(extra, ", "))
	}
	return b.String(), failed, nil
}
