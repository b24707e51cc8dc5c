package dbmanager

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/faultnet"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// The records database's faults: what a reader sees while the database is
// away, and that nothing is served without its access-log entry.

// pgCluster is a throwaway PostgreSQL cluster of the test's own (the
// project's scripts/postgres-test.sh on another directory and port), so
// that the test may stop and start it under the other tests' feet.
type pgCluster struct {
	dir, dsn, bin string
	as            []string                     // runuser -u postgres -- as root
	script        func(string) (string, error) // scripts/postgres-test.sh start|stop on this cluster
}

func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	if os.Getenv("MEDREC_TEST_POSTGRES_DSN") == "" {
		if os.Getenv("MEDREC_REQUIRE_POSTGRES") == "1" {
			t.Fatal("MEDREC_REQUIRE_POSTGRES=1 but MEDREC_TEST_POSTGRES_DSN is not set (run scripts/postgres-test.sh)")
		}
		t.Skip("PostgreSQL skipped: MEDREC_TEST_POSTGRES_DSN is not set")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// Not under t.TempDir: its parents are the test user's only, and the
	// server runs as postgres when we are root.
	dir := filepath.Join(os.TempDir(), "medrec-pgfault-"+strconv.Itoa(port)+"-"+strconv.Itoa(os.Getpid()))
	script, err := filepath.Abs("../scripts/postgres-test.sh")
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "MEDREC_PG_DIR="+dir, "MEDREC_PG_PORT="+strconv.Itoa(port))
	run := func(arg string) (string, error) {
		cmd := exec.Command(script, arg)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: []byte(stderr.String())}
		}
		return strings.TrimSpace(string(out)), nil
	}
	t.Cleanup(func() { run("stop") })
	dsn, err := run("start")
	if err != nil {
		t.Fatalf("start a cluster: %v: %s", err, err.(*exec.ExitError).Stderr)
	}
	c := &pgCluster{dir: dir, dsn: dsn, script: run}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		p, err := exec.LookPath("pg_ctl")
		if err != nil {
			t.Fatal("no pg_ctl")
		}
		bins = []string{p}
	}
	c.bin = filepath.Dir(bins[len(bins)-1])
	if os.Geteuid() == 0 {
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	return c
}

func (c *pgCluster) ctl(t *testing.T, args ...string) {
	t.Helper()
	argv := append(append(append([]string{}, c.as...), filepath.Join(c.bin, "pg_ctl"), "-D", filepath.Join(c.dir, "data")), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %v: %v: %s", args, err, out)
	}
}

// TestPostgresRestartUnderReads: the records database (PostgreSQL) is
// stopped and started again while readers read through the gateway. While
// it is away every read is answered 503 — a clear "try again", never a
// read without its access-log entry; afterwards reads are served again,
// and every read served has its entry in the log, whose chain verifies.
func TestPostgresRestartUnderReads(t *testing.T) {
	pg := newPGCluster(t)
	w := newWorldOnChain(t, simchain.New(t, 2, nil), pg.dsn, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	w.open()
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("owner read: %d %s", r.status, r.body)
	}
	before, err := w.cfg.Store.LogHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		bodies   = map[int]string{}
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := w.get(w.owner, "/fhir/Observation/o1")
				mu.Lock()
				statuses[r.status]++
				if r.status != 200 {
					bodies[r.status] = string(r.body)
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	pg.ctl(t, "-m", "fast", "-w", "stop")
	stopped := time.Now()
	time.Sleep(time.Second)
	mu.Lock()
	during := map[int]int{}
	for k, v := range statuses {
		during[k] = v
	}
	mu.Unlock()
	if _, err := pg.script("start"); err != nil {
		t.Fatalf("start the cluster again: %v", err)
	}
	t.Logf("MEASURED PostgreSQL away for %s", time.Since(stopped).Round(10*time.Millisecond))
	var last resp
	waitFor(t, 30*time.Second, "reads served again", func() bool {
		last = w.get(w.owner, "/fhir/Observation/o1")
		return last.status == 200
	})
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("reads by status: %v (non-200 answers: %v)", statuses, bodies)
	for st := range statuses {
		if st != 200 && st != 503 {
			t.Errorf("a read answered %d while the database restarted: %s", st, bodies[st])
		}
	}
	if statuses[503] == 0 {
		t.Errorf("no read was refused while the database was stopped (%v before the start)", during)
	}

	// Every read served has its entry; the log's chain verifies.
	ctx := context.Background()
	entries, err := w.cfg.Store.LogRange(ctx, before.Next, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for _, e := range entries {
		if e.Outcome == store.Allowed && e.ActorKind == store.ActorPatient {
			allowed++
		}
	}
	served := statuses[200] + 1 // and the last probe
	if allowed < served {
		t.Fatalf("%d reads served, %d allowed entries logged: a read was served without its entry", served, allowed)
	}
	t.Logf("MEASURED PostgreSQL restarted under 4 readers: %d reads served, each with its entry (%d allowed entries), %d answered 503", served, allowed, statuses[503])
	if _, err := store.VerifyLog(ctx, w.cfg.Store); err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteDiskFull: the SQLite file's filesystem fills up under imports.
// The write that does not fit is refused whole with a clear 507, and so is
// a read (its access-log entry cannot be written, so it is not served);
// every acknowledged write is there, the file passes integrity_check and
// the log's chain verifies; with room again, writes and reads go on.
func TestSQLiteDiskFull(t *testing.T) {
	faultnet.RequireRoot(t, "mounting a small tmpfs")
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 1 MiB tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	w := newWorldOnChain(t, simchain.New(t, 2, nil), filepath.Join(dir, "records.db"))
	w.open()

	acked := 0
	var refused resp
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("1 MiB never filled up")
		}
		req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(fillBundle("p1", fmt.Sprintf("fill%d-", i), 20)))
		req.Header.Set("Authorization", "Bearer "+staffToken)
		r := w.do(req)
		if r.status == 201 {
			acked += 20
			continue
		}
		refused = r
		break
	}
	if refused.status != 507 || !strings.Contains(string(refused.body), "full") {
		t.Fatalf("the write that did not fit: %d %s", refused.status, refused.body)
	}
	t.Logf("MEASURED 1 MiB tmpfs: %d resources acknowledged, then %d %s", acked, refused.status, refused.body)
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 507 && r.status != 200 {
		t.Fatalf("a read with the disk full: %d %s", r.status, r.body)
	} else {
		t.Logf("a read with the disk full: %d", r.status)
	}

	// Nothing corrupted, nothing acknowledged lost.
	ctx := context.Background()
	check := func(when string) {
		t.Helper()
		raw, err := sql.Open("sqlite", filepath.Join(dir, "records.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		var ok string
		if err := raw.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("%s: integrity_check: %q %v", when, ok, err)
		}
		if _, err := store.VerifyLog(ctx, w.cfg.Store); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		got := 0
		for cursor := ""; ; {
			page, err := w.cfg.Store.Search(ctx, "p1", store.Query{Type: "Observation", PageRequest: store.PageRequest{Count: store.MaxCount, Cursor: cursor}})
			if err != nil {
				t.Fatalf("%s: %v", when, err)
			}
			got += len(page.Resources)
			if cursor = page.Next; cursor == "" {
				break
			}
		}
		if got < acked+1 {
			t.Fatalf("%s: %d observations stored, %d acknowledged", when, got, acked+1)
		}
	}
	check("with the disk full")

	if out, err := exec.Command("mount", "-o", "remount,size=64m", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount bigger: %v: %s", err, out)
	}
	req := httptest.NewRequest("POST", "/admin/patients/p1/resources", strings.NewReader(fillBundle("p1", "after-", 20)))
	req.Header.Set("Authorization", "Bearer "+staffToken)
	if r := w.do(req); r.status != 201 {
		t.Fatalf("a write with room again: %d %s", r.status, r.body)
	}
	acked += 20
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("a read with room again: %d %s", r.status, r.body)
	}
	check("with room again")
}

// fillBundle is a transaction Bundle of n Observations of patient, ids
// prefix0…, each with a few hundred bytes of text.
func fillBundle(patient, prefix string, n int) string {
	var b strings.Builder
	b.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"resource":{"resourceType":"Observation","id":"%s%d","status":"final","code":{"text":"Heart rate %s"},"subject":{"reference":"Patient/%s"},"effectiveDateTime":"2020-05-01T10:00:00Z","valueQuantity":{"value":%d,"unit":"/min"}}}`,
			prefix, i, strings.Repeat("x", 300), patient, 60+i%40)
	}
	b.WriteString(`]}`)
	return b.String()
}

// killingStore is the gateway's store with an anchoring run killed at one
// point: after the anchor is stored (before it is sent), or after it was
// sent and mined (before the store records that). "Killed" cancels the
// run's context and fails what follows, as a process gone would.
type killingStore struct {
	store.Store
	at     string // "stored" or "sent"
	cancel context.CancelFunc
}

func (k *killingStore) AddAnchor(ctx context.Context, a store.Anchor) (store.Anchor, error) {
	out, err := k.Store.AddAnchor(ctx, a)
	if err == nil && k.at == "stored" {
		k.cancel()
	}
	return out, err
}

func (k *killingStore) SetAnchorTx(ctx context.Context, batch uint64, tx string) error {
	if k.at == "sent" {
		k.cancel()
		return context.Canceled
	}
	return k.Store.SetAnchorTx(ctx, batch, tx)
}

// TestAnchoringKilledMidway: an anchoring run killed after storing its
// batch, or after sending it and before recording that, and a gateway
// started again on the same database: no anchor lost (the chain has every
// stored batch, the same), none doubled (not one more on chain), and every
// log entry before the run is anchored once.
func TestAnchoringKilledMidway(t *testing.T) {
	for _, at := range []string{"stored", "sent"} {
		t.Run("killed after "+at, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t)
			w.open()
			if made, err := w.gw.AnchorOnce(ctx); err != nil || !made {
				t.Fatalf("first anchor: %v %v", made, err)
			}
			w.get(w.owner, "/fhir/Observation/o1")
			w.get(simchain.Key("nosy"), "/fhir/Observation/o1")

			runCtx, cancel := context.WithCancel(ctx)
			killer := &killingStore{at: at, cancel: cancel}
			w.restart(func(c *Config) { killer.Store, c.Store = c.Store, killer })
			if _, err := w.gw.AnchorOnce(runCtx); err == nil {
				t.Fatal("the killed run reported success")
			}
			// Started again on the same database.
			w.restart()
			if _, err := w.gw.AnchorOnce(ctx); err != nil {
				t.Fatalf("the run after the restart: %v", err)
			}
			if made, err := w.gw.AnchorOnce(ctx); err != nil || made {
				t.Fatalf("a further run: made %v, %v (nothing changed)", made, err)
			}
			head, _, err := w.chain.Client.AnchorHead(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			var stored []store.Anchor
			for b := uint64(0); ; b++ {
				a, err := w.cfg.Store.Anchor(ctx, b)
				if errors.Is(err, store.ErrNotFound) {
					break
				} else if err != nil {
					t.Fatal(err)
				}
				stored = append(stored, a)
			}
			if head != uint64(len(stored)) || head != 2 {
				t.Fatalf("%d batches on chain, %d stored; want 2 of each", head, len(stored))
			}
			for i, a := range stored {
				got, err := w.chain.Client.BatchHash(ctx, 1, uint64(i))
				if err != nil || got != contracts.AnchorBatchHash(a.LogRoot, a.LogFrom, a.LogCount, a.StateRoot) || a.TxHash == "" {
					t.Fatalf("batch %d: chain %x, stored %+v (%v)", i, got, a, err)
				}
			}
			last := stored[len(stored)-1]
			logHead, err := w.cfg.Store.LogHead(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if last.LogFrom+last.LogCount != logHead.Next {
				t.Fatalf("anchored through %d, the log has %d entries", last.LogFrom+last.LogCount, logHead.Next)
			}
		})
	}
}

// logFailingStore is the gateway's store with the access log's writes
// failing as a database that went away would, while reads still work.
type logFailingStore struct {
	store.Store
	failing atomic.Bool
}

func (s *logFailingStore) AppendLog(ctx context.Context, e ...store.LogEntry) ([]store.LogEntry, error) {
	if s.failing.Load() {
		return nil, fmt.Errorf("append log: %w", store.ErrUnavailable)
	}
	return s.Store.AppendLog(ctx, e...)
}

func (s *logFailingStore) UseNonceWithLog(ctx context.Context, nonce [32]byte, expires time.Time, e ...store.LogEntry) ([]store.LogEntry, error) {
	if s.failing.Load() {
		return nil, fmt.Errorf("use nonce: %w", store.ErrUnavailable)
	}
	return s.Store.UseNonceWithLog(ctx, nonce, expires, e...)
}

// TestRefusalsAreLogged: a refusal is logged as durably as a read. While
// the access log cannot be written, no answer leaves — a stranger, a read
// of something not there, a grant that does not cover a type, the owner's
// own read all get 503, nothing else, and nothing is logged; once the
// database is back each refusal is answered with its entry.
func TestRefusalsAreLogged(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()
	doctor := simchain.Key("doctor")
	conditions, err := access.NewScope("Condition")
	if err != nil {
		t.Fatal(err)
	}
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), conditions, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	fs := &logFailingStore{}
	w.restart(func(c *Config) { fs.Store, c.Store = c.Store, fs })

	cases := []struct {
		name   string
		key    *ecdsa.PrivateKey
		target string
		status int // once the log can be written
		detail string
	}{
		{"a stranger", simchain.Key("stranger"), "/fhir/Observation/o1", 403, ""},
		{"a type the grant does not cover", doctor, "/fhir/Observation/o1", 403, "does not cover"},
		{"a resource not there", w.owner, "/fhir/Observation/nothere", 404, "not found"},
		{"the owner's read", w.owner, "/fhir/Observation/o1", 200, ""},
	}
	head, err := w.cfg.Store.LogHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fs.failing.Store(true)
	for _, c := range cases {
		if r := w.get(c.key, c.target); r.status != 503 || !bytes.Contains(r.body, []byte("unavailable")) {
			t.Errorf("%s while the log cannot be written: %d %s", c.name, r.status, r.body)
		}
	}
	if after, err := w.cfg.Store.LogHead(ctx); err != nil || after != head {
		t.Fatalf("the log moved while it could not be written: %+v → %+v (%v)", head, after, err)
	}
	fs.failing.Store(false)
	for _, c := range cases {
		if r := w.get(c.key, c.target); r.status != c.status {
			t.Errorf("%s once the log is back: %d %s", c.name, r.status, r.body)
			continue
		}
		entries, err := w.cfg.Store.LogRange(ctx, head.Next, 10)
		if err != nil || len(entries) != 1 || !strings.Contains(entries[0].Detail, c.detail) || (c.status == 200) != (entries[0].Outcome == store.Allowed) {
			t.Errorf("%s: its log entry: %+v %v", c.name, entries, err)
		}
		if head, err = w.cfg.Store.LogHead(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
