package ingest

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var ndjsonMB = flag.Int("ndjson-mb", 10, "size in MB of the export BenchmarkImportNDJSON imports (100 for the issue's memory goal)")

// writeBulk writes a Synthea-shaped export of about mb megabytes into dir,
// patient by patient (never all in memory), each patient with enc
// encounters of obs observations, and returns the files and the number of
// resources.
func writeBulk(tb testing.TB, dir string, mb, enc, obs int) ([]string, int) {
	tb.Helper()
	names := []string{"Encounter.ndjson", "Observation.ndjson", "Organization.ndjson", "Patient.ndjson", "Practitioner.ndjson"}
	ws := map[string]*bufio.Writer{}
	var files []*os.File
	for _, n := range names {
		f, err := os.Create(filepath.Join(dir, n))
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, f)
		ws[n] = bufio.NewWriterSize(f, 1<<20)
	}
	written, resources := 0, 0
	for p := 0; written < mb<<20; p++ {
		one := synthBulk(1, enc, obs)
		for n, ls := range one {
			if n == "Practitioner.ndjson" || n == "Organization.ndjson" {
				if p > 0 {
					continue
				}
			}
			for _, l := range ls {
				l = strings.ReplaceAll(l, `"p0"`, `"p`+strconv.Itoa(p)+`"`)
				l = strings.ReplaceAll(l, `Patient/p0"`, `Patient/p`+strconv.Itoa(p)+`"`)
				l = strings.ReplaceAll(l, `-p0-`, `-p`+strconv.Itoa(p)+`-`)
				ws[n].WriteString(l)
				ws[n].WriteByte('\n')
				written += len(l) + 1
				resources++
			}
		}
	}
	var paths []string
	for i, n := range names {
		if err := ws[n].Flush(); err != nil {
			tb.Fatal(err)
		}
		files[i].Close()
		paths = append(paths, filepath.Join(dir, n))
	}
	return paths, resources
}

func nextFiles(tb testing.TB, paths []string) func() (NDJSONFile, error) {
	i := 0
	var open *os.File
	return func() (NDJSONFile, error) {
		if open != nil {
			open.Close()
		}
		if i == len(paths) {
			return NDJSONFile{}, io.EOF
		}
		f, err := os.Open(paths[i])
		if err != nil {
			tb.Fatal(err)
		}
		open = f
		i++
		return NDJSONFile{Name: filepath.Base(f.Name()), R: f}, nil
	}
}

// peakMemory samples the Go heap in use while it runs; stop returns the
// highest sample and the process's peak resident set since start (Linux:
// VmHWM, reset through /proc/self/clear_refs; 0 elsewhere).
func peakMemory() (stop func() (heap, rss uint64)) {
	os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		var rss uint64
		if b, err := os.ReadFile("/proc/self/status"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
					fmt.Sscanf(strings.TrimSpace(v), "%d", &rss)
					rss <<= 10
				}
			}
		}
		return peak.Load(), rss
	}
}

// BenchmarkImportNDJSON imports a generated Synthea-shaped export of
// -ndjson-mb megabytes (patients of 10 encounters × 30 observations) into a
// fresh SQLite database: both passes, every patient's transaction fsync'd.
// It reports resources/s and the peak heap and resident set of the process.
func BenchmarkImportNDJSON(b *testing.B) {
	dir := b.TempDir()
	paths, resources := writeBulk(b, dir, *ndjsonMB, 10, 30)
	v := validator(b)
	var heap, rss uint64
	for b.Loop() {
		b.StopTimer()
		in := New(openBench(b), v)
		runtime.GC()
		stop := peakMemory()
		b.StartTimer()
		rep, err := in.ImportNDJSON(context.Background(), nextFiles(b, paths), ndjsonImporter, NDJSONOptions{SpoolDir: dir})
		if err != nil || rep.Resources != resources {
			b.Fatalf("%+v (want %d resources): %v", rep, resources, err)
		}
		b.StopTimer()
		h, r := stop()
		heap, rss = max(heap, h), max(rss, r)
		b.StartTimer()
	}
	b.ReportMetric(float64(resources*b.N)/b.Elapsed().Seconds(), "resources/s")
	b.ReportMetric(float64(*ndjsonMB), "input-MB")
	b.ReportMetric(float64(resources), "resources")
	b.ReportMetric(float64(heap)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MB")
}

// BenchmarkImportNDJSONLargePatient: one patient of 3,501 resources (100
// encounters × 34 observations), in one transaction.
func BenchmarkImportNDJSONLargePatient(b *testing.B) {
	files := synthBulk(1, 100, 34)
	v := validator(b)
	n := 0
	for _, ls := range files {
		n += len(ls)
	}
	for b.Loop() {
		b.StopTimer()
		in := New(openBench(b), v)
		b.StartTimer()
		rep, err := in.ImportNDJSON(context.Background(), files.next(), ndjsonImporter, NDJSONOptions{SpoolDir: b.TempDir()})
		if err != nil || rep.Patients != 1 || rep.Resources != n {
			b.Fatalf("%+v: %v", rep, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "resources/s")
}
