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

// goals maps a benchmark name (without the -N CPU suffix) to its ns/op ceiling.
var goals = map[string]time.Duration{
	"BenchmarkProveOwnership":     150 * time.Millisecond,
	"BenchmarkProveEntitlement":   30 * time.Millisecond,
	"BenchmarkVerify/ownership":   2 * time.Millisecond,
	"BenchmarkVerify/entitlement": 2 * time.Millisecond,
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
		goal, status := "", ""
		if g, ok := goals[name]; ok {
			goal = "≤ " + g.String()
			if med > g {
				status = " ✗"
				failed = true
			} else {
				status = " ✓"
			}
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
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s%s | %s |\n", strings.TrimPrefix(name, "Benchmark"),
			strings.TrimPrefix(a.pkg, "github.com/medrec-zk/medrec/"), len(a.ns), med.Round(time.Microsecond/10), goal, status, strings.Join(extra, ", "))
	}
	return b.String(), failed, nil
}
