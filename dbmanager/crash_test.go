package dbmanager

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore"
	"github.com/medrec-zk/medrec/dbmanager/store/sqlstore/sqltest"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/prover"
)

// The crash test proves the gateway's durability promise: "A gateway killed
// with -9 mid-import loses nothing it acknowledged." The test binary starts
// itself as a real gateway process (TestHelperGatewayProcess) on a records
// database, imports into it over HTTP from several workers at once, kills it
// with SIGKILL while requests are in flight, and then checks the database:
// every acknowledged write is there byte for byte with its log entry, the
// access log's hash chain is intact, the change feeds agree with the
// resources, an unacknowledged request is all there or not there at all, and
// (SQLite) the file passes PRAGMA integrity_check. Meanwhile a reader sends
// signed reads the gateway refuses (no such relationship): each refusal's
// nonce and log entry are group-committed writes, which must survive too. It does so several times
// on the same database, each round restarting the gateway on what the
// previous one left, and finally checks that a restarted gateway takes new
// imports.

const (
	crashDSNEnv   = "MEDREC_CRASH_GATEWAY_DSN"   // set: TestHelperGatewayProcess is the gateway
	crashTokenEnv = "MEDREC_CRASH_GATEWAY_TOKEN" // its staff bearer token
	crashReady    = "medrec crash-test gateway listening on "
	crashStaff    = "crash-desk" // the staff id of the token
	crashRounds   = 3            // kills per backend
	crashWorkers  = 4            // concurrent importers of generated resources
	crashReaders  = 2            // concurrent senders of refused signed reads
	crashDenial   = "no relationship with this tag"
)

// TestHelperGatewayProcess is not a test: run by TestCrashDurability as a
// child process (with crashDSNEnv set), it serves a real gateway on the
// database crashDSNEnv names until it is killed. It prints crashReady and
// the address once the gateway accepts connections.
func TestHelperGatewayProcess(t *testing.T) {
	dsn := os.Getenv(crashDSNEnv)
	if dsn == "" {
		return // an ordinary test run
	}
	// Exit once the parent is gone (its end of stdin closes), so an aborted
	// test leaves no gateway behind.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	ctx := context.Background()
	db, err := sqlstore.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	// The chain only has to exist: imports do not touch it.
	c := simchain.New(t, 1, nil)
	v, err := chainview.New(c.Backend, c.D)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := prover.DevKeys()
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(Config{
		Provider: 1, Store: db, View: v, Chain: c.Client, Relayer: c.Auth(c.Providers[0].Gateway), Prover: prover.New(ks),
		StaffTokens: map[string]string{TokenHash(os.Getenv(crashTokenEnv)): crashStaff},
		RateLimit:   1 << 30, ReaderRateLimit: 1 << 30, // the reader is one fast client
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	errc := make(chan error, 1)
	go func() { errc <- g.Listen(ctx, addr) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("listen on %s: %v", addr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway does not accept connections on %s", addr)
		}
	}
	fmt.Printf("%s%s chain %s registry %s\n", crashReady, addr, c.ChainID, c.D.AgentRegistry.Hex())
	t.Fatalf("the gateway stopped serving: %v", <-errc)
}

// TestCrashDurability: see the top of this file. Each backend takes a few
// seconds; PostgreSQL runs when MEDREC_TEST_POSTGRES_DSN is set.
func TestCrashDurability(t *testing.T) {
	if os.Getenv(crashDSNEnv) != "" {
		t.Skip("inside the gateway process")
	}
	for _, be := range sqltest.Backends(t) {
		t.Run(be.Name, func(t *testing.T) {
			h := newCrashHarness(t, be)
			inFlight := 0
			for round := range crashRounds {
				inFlight += h.round(round, true)
				h.verify(fmt.Sprintf("after kill %d", round+1))
			}
			if inFlight == 0 {
				t.Fatal("no request was in flight at any kill")
			}
			// The gateway restarted on the database the last kill left takes
			// new imports (and they survive a kill too).
			h.round(crashRounds, false)
			h.verify("after the final restart")
		})
	}
}

// crashWrite is one resource a request carries.
type crashWrite struct {
	typ, id  string
	raw      []byte
	ifAbsent bool // stored only if absent (a shared resource of a patient bundle)
}

func (w crashWrite) key() string { return w.typ + "/" + w.id }

// crashRequest is one request and what became of it.
type crashRequest struct {
	worker, round int
	method, path  string
	header        http.Header
	body          []byte
	// What its access-log entry says.
	actorKind store.ActorKind
	actorID   string
	action    string // "write", "import", or "read" (refused)
	patient   string // "" for a directory bundle or a refused read
	resources []string
	outcome   store.Decision
	detail    string
	nonce     [32]byte  // a signed read's, with its expiry
	expires   time.Time // (nonces are recorded with their signed expiry)
	writes    []crashWrite
	// unique: every write carries bytes never sent before, so whether an
	// unacknowledged request was applied can be told from the database.
	unique bool

	acked    bool
	versions []int64 // per write, from the response (resource requests)
	applied  *bool   // an unacknowledged unique request: decided by the first check
}

// logKey is what the request's access-log entry says, but for its seq and time.
func (r *crashRequest) logKey() string {
	return logKey(store.LogEntry{ActorKind: r.actorKind, ActorID: r.actorID, Action: r.action, PatientID: r.patient,
		Resources: r.resources, Outcome: r.outcome, Detail: r.detail})
}

func logKey(e store.LogEntry) string {
	return fmt.Sprintf("%s|%s|%d|%s|%s|%s|%s|%s", e.ActorKind, e.ActorID, e.Purpose, e.Action, e.PatientID,
		strings.Join(e.Resources, ","), e.Outcome, e.Detail)
}

func writeKeys(ws []crashWrite) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.key()
	}
	return out
}

func (r *crashRequest) String() string {
	ack := "unacknowledged"
	if r.acked {
		ack = "acknowledged"
	}
	ids := writeKeys(r.writes)
	if len(ids) > 4 {
		ids = append(ids[:4], fmt.Sprintf("… (%d resources)", len(r.writes)))
	}
	if r.action == "read" {
		ids = []string{"signer " + r.actorID}
	}
	return fmt.Sprintf("round %d worker %d %s %s %s [%s]", r.round, r.worker, ack, r.method, r.path, strings.Join(ids, " "))
}

// crashBundle is a Synthea bundle with what it writes.
type crashBundle struct {
	name    string
	raw     []byte
	patient string
	writes  []crashWrite
}

type crashWorker struct {
	n       int
	reader  bool   // sends signed reads that are refused
	patient string // generated resources' patient; "" for the Synthea worker and the reader
	next    int    // number of the next new resource
	rng     *rand.Rand
	// Observations this worker stored, by id, with their latest
	// acknowledged version: what later requests update.
	observations map[string]int64
	obsIDs       []string
	bundles      []*crashBundle // the Synthea worker's bundles
	k            int            // the bundle to import next
}

type crashHarness struct {
	t       *testing.T
	backend string
	dsn     string
	token   string
	rng     *rand.Rand
	value   atomic.Int64 // makes every generated resource's bytes unique
	workers []*crashWorker

	mu       sync.Mutex
	reqs     []*crashRequest // in the order they were sent, per worker
	patients map[string]bool // patients whose creation was acknowledged
}

func newCrashHarness(t *testing.T, be sqltest.Backend) *crashHarness {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	token, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	h := &crashHarness{t: t, backend: be.Name, dsn: be.DSN(t), token: token, rng: rand.New(rand.NewPCG(seed, 0)), patients: map[string]bool{}}
	for i := range crashWorkers {
		h.workers = append(h.workers, &crashWorker{n: i, patient: fmt.Sprintf("crash-p%d", i), rng: rand.New(rand.NewPCG(seed, uint64(i+1))),
			observations: map[string]int64{}})
	}
	for range crashReaders {
		h.workers = append(h.workers, &crashWorker{n: len(h.workers), reader: true})
	}
	if bundles := crashSynthea(t); len(bundles) > 0 {
		h.workers = append(h.workers, &crashWorker{n: len(h.workers), bundles: bundles})
	} else {
		t.Log("no Synthea bundles: importing generated resources only")
	}
	return h
}

// crashSynthea reads the Synthea bundles, directory bundles first, if there
// are any (syntheatest.Dir skips a test without them, so it runs in a
// subtest here).
func crashSynthea(t *testing.T) []*crashBundle {
	var patients, directory []string
	t.Run("synthea-bundles", func(t *testing.T) { patients, directory = syntheatest.Bundles(t) })
	var out []*crashBundle
	for _, path := range append(directory, patients...) {
		raw := syntheatest.Read(t, path)
		var b struct {
			Entry []struct {
				FullURL  string          `json:"fullUrl"`
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cb := &crashBundle{name: filepath.Base(path), raw: raw}
		for _, e := range b.Entry {
			var r struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if err := json.Unmarshal(e.Resource, &r); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if r.ID == "" {
				r.ID = strings.ToLower(strings.TrimPrefix(e.FullURL, "urn:uuid:"))
			}
			if r.ResourceType == "Patient" {
				cb.patient = r.ID
			}
			cb.writes = append(cb.writes, crashWrite{typ: r.ResourceType, id: r.ID, raw: e.Resource})
		}
		for i, w := range cb.writes {
			cb.writes[i].ifAbsent = cb.patient != "" && !fhirval.InPatientCompartment(w.typ)
		}
		out = append(out, cb)
	}
	return out
}

// crashGateway is one gateway process.
type crashGateway struct {
	cmd    *exec.Cmd
	base   string             // http://addr
	domain gatewayauth.Domain // its simulated chain and deployment
	exited chan struct{}      // closed once the process is gone
	err    error              // its Wait error, once exited
	out    *lockedBuffer      // its stdout and stderr
}

// lockedBuffer collects a child's output; ready receives the address once
// the ready line is in.
type lockedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan string
	sent  bool
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if !b.sent {
		for line := range strings.Lines(b.buf.String()) {
			if addr, ok := strings.CutPrefix(line, crashReady); ok && strings.HasSuffix(addr, "\n") {
				b.ready <- strings.TrimSpace(addr)
				b.sent = true
				break
			}
		}
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start starts a gateway process on the harness's database.
func (h *crashHarness) start() *crashGateway {
	t := h.t
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperGatewayProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDSNEnv+"="+h.dsn, crashTokenEnv+"="+h.token)
	out := &lockedBuffer{ready: make(chan string, 1)}
	cmd.Stdout, cmd.Stderr = out, out
	// Kept open until Wait closes it: the child exits when it closes.
	if _, err := cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	gw := &crashGateway{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() {
		gw.err = cmd.Wait()
		close(gw.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-gw.exited
	})
	select {
	case ready := <-out.ready:
		addr, rest, _ := strings.Cut(ready, " chain ")
		chain, registry, _ := strings.Cut(rest, " registry ")
		id, ok := new(big.Int).SetString(chain, 10)
		if !ok || !common.IsHexAddress(registry) {
			t.Fatalf("the gateway process says %q", ready)
		}
		gw.base, gw.domain = "http://"+addr, gatewayauth.Domain{ChainID: id, Registry: common.HexToAddress(registry)}
	case <-gw.exited:
		t.Fatalf("the gateway process exited before serving (%v):\n%s", gw.err, out)
	case <-time.After(30 * time.Second):
		t.Fatalf("the gateway process did not start serving within 30 s:\n%s", out)
	}
	return gw
}

// kill kills the gateway with SIGKILL and checks that it was still running.
func (gw *crashGateway) kill(t *testing.T) {
	t.Helper()
	select {
	case <-gw.exited:
		t.Fatalf("the gateway process exited before it was killed (%v):\n%s", gw.err, gw.out)
	default:
	}
	if err := gw.cmd.Process.Kill(); err != nil { // SIGKILL: no shutdown, no deferred code
		t.Fatal(err)
	}
	<-gw.exited
	if gw.cmd.ProcessState.Exited() {
		t.Fatalf("the gateway process exited by itself (%v), not by the kill:\n%s", gw.err, gw.out)
	}
	// Built with -race, the gateway reports races as they happen; killed,
	// it never gets to fail for them.
	if out := gw.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
		t.Fatalf("the gateway process reported a data race:\n%s", out)
	}
}

// crashClient is the workers' view of one gateway process.
type crashClient struct {
	h      *crashHarness
	base   string
	domain gatewayauth.Domain
	http   *http.Client
	round  int
	killed atomic.Bool   // set just before the kill: later errors are expected
	acked  chan struct{} // closed at the first acknowledged import
	once   sync.Once
	limit  int // requests per worker (0: until the kill)
}

// round starts a gateway on the database and imports into it from every
// worker. With kill, it kills the gateway with SIGKILL 200–800 ms after the
// first acknowledged import, mid-import; without, every worker sends a few
// requests, all of which must be acknowledged, before the kill.
// It returns the number of requests in flight at the kill.
func (h *crashHarness) round(round int, kill bool) int {
	t := h.t
	t.Helper()
	start := time.Now()
	gw := h.start()
	cl := &crashClient{h: h, base: gw.base, domain: gw.domain, round: round, acked: make(chan struct{}),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 2 * len(h.workers)}}}
	if !kill {
		cl.limit = 5
	}
	defer cl.http.CloseIdleConnections()
	nreqs := len(h.reqs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { // also when the round fails
		cl.killed.Store(true)
		cancel()
		wg.Wait()
	}()
	for _, w := range h.workers {
		wg.Go(func() { cl.work(ctx, w) })
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	if kill {
		select {
		case <-cl.acked:
		case <-stopped:
			t.Fatalf("round %d: every worker stopped before an import was acknowledged", round)
		case <-gw.exited:
			t.Fatalf("round %d: the gateway process exited (%v):\n%s", round, gw.err, gw.out)
		case <-time.After(20 * time.Second):
			cl.killed.Store(true)
			t.Fatalf("round %d: no import acknowledged within 20 s", round)
		}
		time.Sleep(time.Duration(200+h.rng.IntN(600)) * time.Millisecond)
		cl.killed.Store(true)
		gw.kill(t)
		cancel()
		wg.Wait()
	} else {
		wg.Wait()
		cl.killed.Store(true)
		gw.kill(t)
	}
	if t.Failed() {
		t.Logf("gateway output:\n%s", gw.out)
		t.FailNow()
	}
	var acked, reads, inFlight int
	for _, r := range h.reqs[nreqs:] {
		switch {
		case !r.acked:
			inFlight++
		case r.action == "read":
			reads++
		default:
			acked++
		}
	}
	t.Logf("round %d: %d imports and %d refused reads acknowledged, %d requests in flight at the kill (%v)",
		round, acked, reads, inFlight, time.Since(start).Round(time.Millisecond))
	if !kill && inFlight > 0 {
		t.Fatalf("round %d: %d requests unacknowledged without a kill", round, inFlight)
	}
	return inFlight
}

// work sends the worker's requests one after the other until the gateway is
// killed (or it sent cl.limit). A failure of the live gateway fails the test.
func (cl *crashClient) work(ctx context.Context, w *crashWorker) {
	t := cl.h.t
	if w.patient != "" {
		status, body, err := cl.do(ctx, &crashRequest{method: "POST", path: "/admin/patients", body: []byte(`{"id":"` + w.patient + `"}`)})
		switch {
		case err != nil:
			cl.failed(err)
			return
		case status == http.StatusCreated:
			cl.h.mu.Lock()
			cl.h.patients[w.patient] = true
			cl.h.mu.Unlock()
		case status != http.StatusConflict: // created in an earlier round
			t.Errorf("round %d: create patient %s: %d %s", cl.round, w.patient, status, body)
			return
		}
	}
	for i := 0; cl.limit == 0 || i < cl.limit; i++ {
		if cl.killed.Load() || ctx.Err() != nil {
			return
		}
		var r *crashRequest
		switch {
		case w.reader:
			var err error
			if r, err = cl.readRequest(w); err != nil {
				t.Error(err)
				return
			}
		case w.patient == "":
			r = cl.h.syntheaRequest(w)
		default:
			r = cl.h.generatedRequest(w)
		}
		r.round = cl.round
		cl.h.mu.Lock()
		cl.h.reqs = append(cl.h.reqs, r)
		cl.h.mu.Unlock()
		status, body, err := cl.do(ctx, r)
		if err != nil {
			cl.failed(err)
			return
		}
		switch {
		case w.reader && status == http.StatusForbidden && bytes.Contains(body, []byte(crashDenial)):
			r.acked = true
			continue
		case status != http.StatusCreated:
			t.Errorf("%v: %d %s", r, status, body)
			return
		}
		if err := cl.h.acknowledged(w, r, body); err != nil {
			t.Errorf("%v: %v: %s", r, err, body)
			return
		}
		cl.once.Do(func() { close(cl.acked) })
	}
}

// failed reports a transport error, which only the kill may cause.
func (cl *crashClient) failed(err error) {
	if !cl.killed.Load() {
		cl.h.t.Errorf("round %d: the gateway failed before the kill: %v", cl.round, err)
	}
}

func (cl *crashClient) do(ctx context.Context, r *crashRequest) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, cl.base+r.path, bytes.NewReader(r.body))
	if err != nil {
		return 0, nil, err
	}
	if r.header != nil {
		req.Header = r.header.Clone()
	} else {
		req.Header.Set("Authorization", "Bearer "+cl.h.token)
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	res, err := cl.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, err // a response cut short is no acknowledgement
	}
	return res.StatusCode, b, nil
}

// generatedRequest builds the worker's next request: one resource or a
// transaction Bundle of up to 12, new ones and new versions of the worker's
// earlier Observations. Every write's bytes are new.
func (h *crashHarness) generatedRequest(w *crashWorker) *crashRequest {
	n := 1
	if w.rng.IntN(2) == 0 {
		n = 2 + w.rng.IntN(11)
	}
	r := &crashRequest{worker: w.n, method: "POST", path: "/admin/patients/" + w.patient + "/resources", unique: true,
		actorKind: store.ActorStaff, actorID: crashStaff, action: "write", patient: w.patient, outcome: store.Allowed}
	seen := map[string]bool{}
	for range n {
		var cw crashWrite
		v := h.value.Add(1)
		if len(w.obsIDs) > 0 && w.rng.IntN(3) == 0 {
			id := w.obsIDs[w.rng.IntN(len(w.obsIDs))]
			if seen[id] {
				continue
			}
			cw = crashWrite{typ: "Observation", id: id}
		} else if w.rng.IntN(3) == 0 {
			cw = crashWrite{typ: "Condition", id: fmt.Sprintf("w%d-c%d", w.n, w.next)}
			w.next++
		} else {
			cw = crashWrite{typ: "Observation", id: fmt.Sprintf("w%d-o%d", w.n, w.next)}
			w.next++
		}
		seen[cw.id] = true
		if cw.typ == "Condition" {
			cw.raw = fmt.Appendf(nil, `{"resourceType":"Condition","id":%q,"subject":{"reference":"Patient/%s"},"code":{"text":"condition %d"}}`, cw.id, w.patient, v)
		} else {
			cw.raw = fmt.Appendf(nil, `{"resourceType":"Observation","id":%q,"status":"final","code":{"text":"crash test"},"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":%d,"unit":"1"}}`, cw.id, w.patient, v)
		}
		r.writes = append(r.writes, cw)
	}
	r.resources = writeKeys(r.writes)
	if len(r.writes) == 1 && w.rng.IntN(2) == 0 {
		r.body = r.writes[0].raw
		return r
	}
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"transaction","entry":[`)
	for i, cw := range r.writes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"resource":%s}`, cw.raw)
	}
	b.WriteString(`]}`)
	r.body = b.Bytes()
	return r
}

// readRequest is a read signed by a new key, for a tag with no
// relationship: the gateway records its nonce, logs the refusal and
// answers 403. It writes no resource.
func (cl *crashClient) readRequest(w *crashWorker) (*crashRequest, error) {
	key, err := crypto.GenerateKey()
	if err != nil {
		return nil, err
	}
	r := &crashRequest{worker: w.n, method: "GET", path: "/fhir/Observation/o1", header: http.Header{},
		actorKind: store.ActorSystem, actorID: crypto.PubkeyToAddress(key.PublicKey).Hex(), action: "read",
		resources: []string{"Observation"}, outcome: store.Denied, detail: crashDenial}
	if _, err := cryptorand.Read(r.nonce[:]); err != nil {
		return nil, err
	}
	err = gatewayauth.Sign(r.header, gatewayauth.Request{Method: r.method, Path: r.path, BodyHash: gatewayauth.BodyHash(nil),
		Tag: big.NewInt(int64(1_000_000*(w.n+1) + w.next)), Audience: 1, Nonce: r.nonce}, key, cl.domain, time.Now())
	if err != nil {
		return nil, err
	}
	w.next++
	exp, err := strconv.ParseInt(r.header.Get(gatewayauth.HeaderExpiry), 10, 64)
	r.expires = time.Unix(exp, 0)
	return r, err
}

// syntheaRequest imports the worker's next Synthea bundle; after the last it
// starts again (a re-import, which changes nothing).
func (h *crashHarness) syntheaRequest(w *crashWorker) *crashRequest {
	b := w.bundles[w.k%len(w.bundles)]
	sum := sha256.Sum256(b.raw)
	return &crashRequest{worker: w.n, method: "POST", path: "/admin/import", body: b.raw, writes: b.writes,
		actorKind: store.ActorStaff, actorID: crashStaff, action: "import", patient: b.patient, resources: writeKeys(b.writes),
		outcome: store.Allowed, detail: "bundle sha256 " + hex.EncodeToString(sum[:])}
}

// acknowledged records a 201 and checks what the response says.
func (h *crashHarness) acknowledged(w *crashWorker, r *crashRequest, body []byte) error {
	if r.action == "import" {
		var rep struct {
			Patient                              string
			Entries, Created, Updated, Unchanged int
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			return err
		}
		if rep.Patient != r.patient || rep.Entries != len(r.writes) || rep.Created+rep.Updated+rep.Unchanged != rep.Entries {
			return fmt.Errorf("the import reports %+v", rep)
		}
		r.acked = true
		w.k++
		return nil
	}
	var res struct {
		Results []struct {
			Type, ID, Effect string
			Version          int64
		}
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return err
	}
	if len(res.Results) != len(r.writes) {
		return fmt.Errorf("%d results for %d writes", len(res.Results), len(r.writes))
	}
	for i, x := range res.Results {
		cw := r.writes[i]
		if x.Type != cw.typ || x.ID != cw.id {
			return fmt.Errorf("result %d is %s/%s", i, x.Type, x.ID)
		}
		prev, updated := w.observations[cw.id]
		switch {
		case updated && (x.Effect != "updated" || x.Version <= prev):
			return fmt.Errorf("the update of %s, last acknowledged as version %d: %s version %d", cw.key(), prev, x.Effect, x.Version)
		case !updated && (x.Effect != "created" || x.Version != 1):
			return fmt.Errorf("the new %s: %s version %d", cw.key(), x.Effect, x.Version)
		}
		r.versions = append(r.versions, x.Version)
	}
	r.acked = true
	for i, cw := range r.writes {
		if cw.typ == "Observation" {
			if _, ok := w.observations[cw.id]; !ok {
				w.obsIDs = append(w.obsIDs, cw.id)
			}
			w.observations[cw.id] = r.versions[i]
		}
	}
	return nil
}

// verify opens the database the killed gateway left and checks everything.
func (h *crashHarness) verify(when string) {
	t := h.t
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	if h.backend == "sqlite" {
		sqliteIntegrity(t, h.dsn)
	}
	s, err := sqlstore.Open(ctx, h.dsn)
	if err != nil {
		t.Fatalf("%s: reopen the database: %v", when, err)
	}
	defer s.Close()
	v := &crashVerifier{t: t, when: when, s: s, ctx: ctx, versions: map[string][]store.Resource{}, writers: map[string]int{}}

	// The access log's hash chain is intact, and ends at the stored head.
	head, err := store.VerifyLog(ctx, s)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}

	// Every acknowledged write is stored with exactly the bytes sent; an
	// unacknowledged request is stored entirely or not at all.
	for _, r := range h.reqs {
		for _, w := range r.writes {
			v.writers[w.key()]++
		}
	}
	for _, r := range h.reqs {
		v.request(r)
	}
	// Each resource's current version is what the requests that wrote it
	// allow: the last acknowledged write, or one of the unacknowledged ones
	// after it.
	v.currents(h.reqs)
	// Every stored request has exactly its one log entry.
	v.logEntries(h.reqs, head)
	// Patients and their change feeds.
	patients := map[string]bool{}
	for p := range h.patients {
		patients[p] = true
	}
	for _, r := range h.reqs {
		if r.patient != "" && (r.acked || r.applied != nil && *r.applied) {
			patients[r.patient] = true
		}
	}
	for p := range patients {
		v.changeFeed(p)
	}
	if t.Failed() {
		t.FailNow()
	}
	var unacked, stored int
	for _, r := range h.reqs {
		if !r.acked {
			unacked++
			if r.applied != nil && *r.applied {
				stored++
			}
		}
	}
	t.Logf("%s: %d requests (%d unacknowledged, %d of them seen stored), %d log entries, %d resources: checked in %v",
		when, len(h.reqs), unacked, stored, head.Next, len(v.versions), time.Since(start).Round(time.Millisecond))
}

// sqliteIntegrity runs SQLite's own checks on the file.
func sqliteIntegrity(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res []string
	rows, err := db.Query(`PRAGMA integrity_check`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		res = append(res, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0] != "ok" {
		t.Fatalf("PRAGMA integrity_check: %q", res)
	}
	rows, err = db.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if rows.Next() {
		t.Fatal("PRAGMA foreign_key_check reports violations")
	}
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode %q %v", mode, err)
	}
}

type crashVerifier struct {
	t        *testing.T
	when     string
	s        *sqlstore.DB
	ctx      context.Context
	versions map[string][]store.Resource // type/id → every stored version, oldest first
	writers  map[string]int              // type/id → number of requests writing it
}

func (v *crashVerifier) errorf(format string, args ...any) {
	v.t.Helper()
	v.t.Errorf("%s: "+format, append([]any{v.when}, args...)...)
}

// history returns every stored version of a resource (none if absent).
func (v *crashVerifier) history(typ, id string) []store.Resource {
	key := typ + "/" + id
	if h, ok := v.versions[key]; ok {
		return h
	}
	cur, err := v.s.Get(v.ctx, typ, id)
	var h []store.Resource
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		v.t.Fatalf("%s: %v", v.when, err)
	default:
		for ver := int64(1); ver <= cur.Version; ver++ {
			r, err := v.s.GetVersion(v.ctx, typ, id, ver)
			if err != nil {
				v.t.Fatalf("%s: %s is at version %d but version %d: %v", v.when, key, cur.Version, ver, err)
			}
			if sha256.Sum256(r.Raw) != r.SHA256 {
				v.errorf("%s version %d: the stored SHA-256 is not that of the stored bytes", key, ver)
			}
			h = append(h, r)
		}
		if last := h[len(h)-1]; !bytes.Equal(last.Raw, cur.Raw) || last.Meta != cur.Meta {
			v.errorf("%s: the current version differs from version %d", key, cur.Version)
		}
	}
	v.versions[key] = h
	return h
}

// stored reports whether some version of the resource has exactly raw.
func (v *crashVerifier) stored(w crashWrite) bool {
	for _, r := range v.history(w.typ, w.id) {
		if bytes.Equal(r.Raw, w.raw) {
			return true
		}
	}
	return false
}

// request checks one request's writes.
func (v *crashVerifier) request(r *crashRequest) {
	switch {
	case r.action == "read":
		// The nonce of an acknowledged refusal is recorded: a replay of
		// the request is refused after the crash too.
		if r.acked {
			if err := v.s.UseNonce(v.ctx, r.nonce, r.expires); !errors.Is(err, store.ErrConflict) {
				v.errorf("%v: its nonce is not recorded (UseNonce: %v)", r, err)
			}
		}
	case r.acked && r.versions != nil:
		for i, w := range r.writes {
			h := v.history(w.typ, w.id)
			if ver := r.versions[i]; ver > int64(len(h)) || !bytes.Equal(h[ver-1].Raw, w.raw) {
				v.errorf("%v: %s version %d, acknowledged, is lost or changed (%d versions stored)", r, w.key(), ver, len(h))
			}
		}
	case r.acked:
		// An import: each patient resource, and each directory resource,
		// has its bytes stored; a shared resource of a patient bundle exists.
		for _, w := range r.writes {
			if h := v.history(w.typ, w.id); len(h) == 0 || !w.ifAbsent && !v.stored(w) {
				v.errorf("%v: %s, acknowledged, is lost or changed", r, w.key())
			}
		}
	default:
		// Whether an unacknowledged request was stored shows in the
		// writes of unique bytes, and in the resources no other request
		// wrote (an import's). Once decided, it stays decided.
		var in, out []string
		for _, w := range r.writes {
			if !r.unique && v.writers[w.key()] > 1 {
				continue
			}
			if v.stored(w) {
				in = append(in, w.key())
			} else {
				out = append(out, w.key())
			}
		}
		if len(in) > 0 && len(out) > 0 {
			v.errorf("%v: partly stored: %v stored, %v not", r, in, out)
			return // undecided: no consequential failures
		}
		if len(in)+len(out) == 0 {
			return
		}
		applied := len(out) == 0
		if r.applied != nil && *r.applied != applied {
			v.errorf("%v: was stored=%v, now stored=%v", r, *r.applied, applied)
		}
		r.applied = &applied
	}
}

// currents checks each resource's current version against the possible
// outcomes of the requests that wrote it, in the order they were sent (every
// resource is written by one worker only, one request at a time).
func (v *crashVerifier) currents(reqs []*crashRequest) {
	type outcome = string // the current bytes; "" if absent
	possible := map[string]map[outcome]bool{}
	writer := map[string]int{}
	for _, r := range reqs {
		for _, w := range r.writes {
			key := w.key()
			if wk, ok := writer[key]; ok && wk != r.worker {
				v.t.Fatalf("test bug: %s written by workers %d and %d", key, wk, r.worker)
			}
			writer[key] = r.worker
			before := possible[key]
			if before == nil {
				before = map[outcome]bool{"": true}
			}
			after := map[outcome]bool{}
			for o := range before {
				next := string(w.raw)
				if w.ifAbsent && o != "" {
					next = o
				}
				switch {
				case r.acked || r.applied != nil && *r.applied:
					after[next] = true
				case r.applied != nil: // not applied
					after[o] = true
				default: // may or may not have been applied
					after[o], after[next] = true, true
				}
			}
			possible[key] = after
		}
	}
	for key, outs := range possible {
		typ, id, _ := strings.Cut(key, "/")
		h := v.history(typ, id)
		cur := ""
		if len(h) > 0 {
			cur = string(h[len(h)-1].Raw)
		}
		if outs[cur] {
			continue
		}
		switch {
		case cur == "":
			v.errorf("%s is absent, but an acknowledged request stored it", key)
		case outs[""] && len(outs) == 1:
			v.errorf("%s is stored, but no request that may have stored it was applied", key)
		default:
			v.errorf("%s: the current version (%d) has bytes no acknowledged or in-flight request sent last: %.200s", key, len(h), cur)
		}
	}
}

// logEntries checks that the log holds, for each request, one entry if it
// was stored and none if it was not — and nothing else.
func (v *crashVerifier) logEntries(reqs []*crashRequest, head store.LogHead) {
	got := map[string]int{}
	created := map[string]int{} // patient → create-patient entries
	for from := uint64(0); from < head.Next; {
		entries, err := v.s.LogRange(v.ctx, from, store.MaxCount)
		if err != nil {
			v.t.Fatalf("%s: %v", v.when, err)
		}
		for _, e := range entries {
			if e.Action == "create-patient" {
				created[e.PatientID]++
				continue
			}
			got[logKey(e)]++
		}
		from += uint64(len(entries))
	}
	// A patient's creation is logged with it, in its transaction: once for
	// each patient that exists, never for one that does not.
	for p, n := range created {
		if _, err := v.s.Patient(v.ctx, p); n != 1 || err != nil {
			v.errorf("patient %s: %d creation entries, stored: %v", p, n, err)
		}
	}
	type bounds struct{ lo, hi int }
	want := map[string]*bounds{}
	examples := map[string]*crashRequest{}
	for _, r := range reqs {
		k := r.logKey()
		b := want[k]
		if b == nil {
			b = &bounds{}
			want[k], examples[k] = b, r
		}
		switch {
		case r.acked || r.applied != nil && *r.applied:
			b.lo++
			b.hi++
		case r.applied == nil: // an unacknowledged import or read: logged or not
			b.hi++
		}
	}
	for k, b := range want {
		if n := got[k]; n < b.lo || n > b.hi {
			v.errorf("%v: %d access-log entries with its content, want %d to %d (an acknowledged request's entry is lost, or a request is half stored)",
				examples[k], n, b.lo, b.hi)
		}
	}
	for k, n := range got {
		if want[k] == nil {
			v.errorf("%d log entries of no request: %.300s", n, k)
		}
	}
}

// changeFeed checks a patient's change feed against its resources: changes
// numbered 1, 2, … up to the patient's seq, each the next version of one
// resource, the latest of each the current version, and the records state
// the hash over them.
func (v *crashVerifier) changeFeed(pid string) {
	ctx, s := v.ctx, v.s
	p, err := s.Patient(ctx, pid)
	if err != nil {
		v.errorf("patient %s: %v", pid, err)
		return
	}
	lastSeq := map[string]uint64{} // type/id → seq of its latest change
	versions := map[string]int64{} // type/id → number of changes
	var seq uint64
	for {
		cs, err := s.Changes(ctx, pid, seq, store.MaxCount)
		if err != nil {
			v.t.Fatalf("%s: %v", v.when, err)
		}
		for _, c := range cs {
			key := c.Type + "/" + c.ID
			if c.Seq != seq+1 {
				v.errorf("patient %s: change %d follows change %d", pid, c.Seq, seq)
			}
			if c.Version != versions[key]+1 {
				v.errorf("patient %s: change %d is %s version %d after version %d", pid, c.Seq, key, c.Version, versions[key])
			}
			seq, versions[key], lastSeq[key] = c.Seq, c.Version, c.Seq
			r, err := s.GetVersion(ctx, c.Type, c.ID, c.Version)
			if err != nil || r.PatientID != pid || r.Seq != c.Seq {
				v.errorf("patient %s: change %d (%s version %d): stored as %+v, %v", pid, c.Seq, key, c.Version, r.Meta, err)
			}
		}
		if len(cs) < store.MaxCount {
			break
		}
	}
	if seq != p.Seq {
		v.errorf("patient %s: the change feed ends at %d, the patient's seq is %d", pid, seq, p.Seq)
	}
	var entries []store.StateEntry
	for cursor := ""; ; {
		page, err := s.Everything(ctx, pid, store.EverythingQuery{PageRequest: store.PageRequest{Count: store.MaxCount, Cursor: cursor}})
		if err != nil {
			v.t.Fatalf("%s: %v", v.when, err)
		}
		for _, r := range page.Resources {
			key := r.Type + "/" + r.ID
			if r.Version != versions[key] || r.Seq != lastSeq[key] || sha256.Sum256(r.Raw) != r.SHA256 {
				v.errorf("patient %s: %s is version %d of change %d, the feed says version %d of change %d (or its SHA-256 is wrong)",
					pid, key, r.Version, r.Seq, versions[key], lastSeq[key])
			}
			entries = append(entries, store.StateEntry{Type: r.Type, ID: r.ID, Version: r.Version, SHA256: r.SHA256})
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	if len(entries) != len(versions) {
		v.errorf("patient %s: %d resources, %d in the change feed", pid, len(entries), len(versions))
	}
	st, err := s.State(ctx, pid)
	if err != nil {
		v.t.Fatalf("%s: %v", v.when, err)
	}
	if st.Seq != seq || st.Count != len(entries) || st.Hash != store.StateHash(entries) {
		v.errorf("patient %s: state %d resources at change %d, the resources give %d at %d (or the hash differs)", pid, st.Count, st.Seq, len(entries), seq)
	}
}
