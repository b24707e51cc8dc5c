package sqlstore_test

import (
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/merkle/merkletest"
)

// TestRegistryNodes: the registry's tree kept in the records database is
// the tree built in memory, through batches, reorgs and a reopening.
func TestRegistryNodes(t *testing.T) {
	for _, b := range sqltest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			db := b.Open(t)
			merkletest.Run(t, func(*testing.T) merkle.Nodes { return db.RegistryNodes() })
		})
	}
}

// BenchmarkRegistryTree keeps the registry's tree in SQLite as a gateway's
// chain view does: batches of 256 enrolments appended (one transaction
// each), then membership paths and buckets read back. It reports the
// enrolments stored a second, the bytes on disk a leaf, and a path's and a
// bucket's read time. The gateway's memory holds only the root and count.
func BenchmarkRegistryTree(b *testing.B) {
	const total, batch = 1 << 17, 256
	leaves := merkletest.Leaves(total)
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		db, err := sqlstore.OpenSQLite(b.Context(), filepath.Join(dir, "records.db"))
		if err != nil {
			b.Fatal(err)
		}
		tree, err := merkle.Open(db.RegistryNodes())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		for i := 0; i < total; i += batch {
			if _, err := tree.Append(leaves[i : i+batch]); err != nil {
				b.Fatal(err)
			}
		}
		appendTook := time.Since(start)
		b.StopTimer()
		const reads = 200
		start = time.Now()
		for k := range reads {
			i := (k * 7919) % total
			if p, err := tree.Proof(i); err != nil || p.Leaf != leaves[i] {
				b.Fatalf("path of %d: %v", i, err)
			}
		}
		pathTook := time.Since(start) / reads
		start = time.Now()
		for k := range reads / 10 {
			if _, err := tree.Bucket(k % (total / merkle.BucketSize)); err != nil {
				b.Fatal(err)
			}
		}
		bucketTook := time.Since(start) / (reads / 10)
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		var size int64
		filepath.WalkDir(dir, func(_ string, d fs.DirEntry, _ error) error {
			if info, err := d.Info(); err == nil && !d.IsDir() {
				size += info.Size()
			}
			return nil
		})
		b.ReportMetric(float64(total)/appendTook.Seconds(), "enrolments/s")
		b.ReportMetric(float64(size)/float64(total), "disk-bytes/leaf")
		b.ReportMetric(float64(pathTook.Microseconds()), "path-µs")
		b.ReportMetric(float64(bucketTook.Microseconds()), "bucket-µs")
		b.StartTimer()
	}
}
