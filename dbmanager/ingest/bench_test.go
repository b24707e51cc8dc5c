package ingest

import (
	"context"
	"testing"

	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
)

func openBench(b *testing.B) *sqlstore.DB {
	b.Helper()
	s, err := sqlstore.OpenSQLite(context.Background(), b.TempDir()+"/bench.db")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkImportSynthea imports the five Synthea patients into a fresh
// SQLite database (validation, one transaction per bundle, fsync'd).
func BenchmarkImportSynthea(b *testing.B) {
	patients, _ := syntheatest.Bundles(b)
	raws := make([][]byte, len(patients))
	for i, p := range patients {
		raws[i] = syntheatest.Read(b, p)
	}
	v := validator(b)
	resources := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		in := New(openBench(b), v)
		b.StartTimer()
		resources = 0
		for _, raw := range raws {
			rep, err := in.ImportBundle(context.Background(), raw, importer)
			if err != nil {
				b.Fatal(err)
			}
			resources += rep.Entries
		}
	}
	b.ReportMetric(float64(resources*b.N)/b.Elapsed().Seconds(), "resources/s")
}

// BenchmarkReimportSynthea: importing the same bundle again (all unchanged).
func BenchmarkReimportSynthea(b *testing.B) {
	patients, _ := syntheatest.Bundles(b)
	raw := syntheatest.Read(b, patients[0])
	in := New(openBench(b), validator(b))
	rep, err := in.ImportBundle(context.Background(), raw, importer)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if r, err := in.ImportBundle(context.Background(), raw, importer); err != nil || !r.NoChange() {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rep.Entries*b.N)/b.Elapsed().Seconds(), "resources/s")
}

// loaded is a SQLite store holding every Synthea bundle.
type loaded struct {
	s        *sqlstore.DB
	patients []string
	refs     []store.Meta
}

func load(b *testing.B) loaded {
	patients, directory := syntheatest.Bundles(b)
	l := loaded{s: openBench(b)}
	in := New(l.s, validator(b))
	for _, p := range append(patients, directory...) {
		rep := importFile(b, in, p)
		if rep.PatientID != "" {
			l.patients = append(l.patients, rep.PatientID)
		}
		for _, r := range rep.Results {
			l.refs = append(l.refs, r.Meta)
		}
	}
	return l
}

// BenchmarkGet reads one resource by type and id.
func BenchmarkGet(b *testing.B) {
	l := load(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m := l.refs[i*7919%len(l.refs)]
		if _, err := l.s.Get(ctx, m.Type, m.ID); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSearch reads the first page (50) of a patient's Observations.
func BenchmarkSearch(b *testing.B) {
	l := load(b)
	ctx := context.Background()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		page, err := l.s.Search(ctx, l.patients[i%len(l.patients)], store.Query{Type: "Observation", PageRequest: store.PageRequest{Count: 50}})
		if err != nil || len(page.Resources) == 0 {
			b.Fatal(err)
		}
		n += len(page.Resources)
	}
	b.ReportMetric(float64(n)/float64(b.N), "resources/op")
}

// BenchmarkEverything reads all of a patient's resources, 100 per page.
func BenchmarkEverything(b *testing.B) {
	l := load(b)
	ctx := context.Background()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		cursor := ""
		for {
			page, err := l.s.Everything(ctx, l.patients[i%len(l.patients)], store.EverythingQuery{PageRequest: store.PageRequest{Count: 100, Cursor: cursor}})
			if err != nil {
				b.Fatal(err)
			}
			n += len(page.Resources)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
	}
	b.ReportMetric(float64(n)/float64(b.N), "resources/op")
}

// BenchmarkState computes a patient's records-state hash.
func BenchmarkState(b *testing.B) {
	l := load(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := l.s.State(ctx, l.patients[i%len(l.patients)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAppendLog appends one access-log entry (one transaction each).
func BenchmarkAppendLog(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	e := store.LogEntry{ActorKind: store.ActorGrantee, ActorID: "0x70997970c51812dc3a010c7d01b50e0d17dc79c8", Purpose: 1,
		Action: "read", PatientID: "p1", Resources: []string{"Observation/o1"}, Outcome: store.Allowed}
	for b.Loop() {
		if _, err := s.AppendLog(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplySynthea stores the five pre-validated Synthea patients into
// a fresh SQLite database: the storage share of an import.
func BenchmarkApplySynthea(b *testing.B) {
	patients, _ := syntheatest.Bundles(b)
	in := New(nil, validator(b))
	var batches []store.Batch
	resources := 0
	for _, p := range patients {
		batch, err := in.prepare(syntheatest.Read(b, p), importer)
		if err != nil {
			b.Fatal(err)
		}
		batches = append(batches, batch)
		resources += len(batch.Writes)
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openBench(b)
		b.StartTimer()
		for _, batch := range batches {
			if _, err := s.Apply(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(resources*b.N)/b.Elapsed().Seconds(), "resources/s")
}
