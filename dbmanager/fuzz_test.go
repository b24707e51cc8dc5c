package dbmanager

// Fuzz tests of every request decoder of the gateway: the JSON bodies
// (decodeStrict and the request types), the 0x-hex fields, the search
// parameters, and, through the real HTTP handlers of a gateway on a
// simulated chain, the public and admin POST bodies, signed reads and the
// authentication headers. Whatever a request holds, the gateway answers it
// with a 2xx or a 4xx — never a 5xx — every error is a FHIR
// OperationOutcome, nothing logs an error, and a refused request writes
// nothing to the records (the access log records the refusal).

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// --- decoders on their own ------------------------------------------------------

// requestTypes returns a fresh value of every JSON body type the gateway
// decodes with decodeStrict.
func requestTypes() []any {
	return []any{
		&claimRequest{}, &relayGrantRequest{}, &relayRevokeRequest{}, &relayRotateRequest{},
		&entitlementRequest{}, &createPatientRequest{}, &enrolRequest{},
	}
}

// jsonNasties are request bodies every decoder must refuse or survive.
var jsonNasties = []string{
	``, ` `, `null`, `true`, `0`, `"x"`, `[]`, `{}`, `{} `, `{}{}`, `{} {}`, `{}x`, `{}]`, `{`, `}`, "\ufeff{}", "{}\x00",
	`{"tag":"0x1","tag":"0x2"}`, `{"TAG":"0x1"}`, `{"Tag":"0x1","tag":"0x2"}`, `{"tag":"0x1","bogus":1}`, `{"tag":null}`, `{"tag":1}`,
	`{"tag":"\ud800"}`, "{\"tag\":\"\xff\"}", "{\"t\xffg\":1}", `{"tag":"0x1"` + strings.Repeat(" ", 1000) + `}`,
	`{"request":{"scope":18446744073709551616}}`, `{"request":{"scope":-1}}`, `{"request":{"scope":1e3}}`, `{"request":{"purpose":256}}`,
	`{"request":{"nonce":4294967296}}`, `{"request":{"deadline":1.5}}`, `{"request":{"granteeKind":"1"}}`, `{"request":null,"signature":null}`,
	`{"request":[]}`, `{"request":{"tag":{"x":1}}}`, `{"request":` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}`,
	`{"x":` + strings.Repeat(`{"x":`, 200) + `1` + strings.Repeat(`}`, 200) + `}`,
}

// FuzzDecodeStrict decodes each input as every request type. decodeStrict
// never panics; it refuses with a 400 OperationOutcome error; what it
// accepts is one JSON value with nothing after it, and decodes again to the
// same request after encoding.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range jsonNasties {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"code":"c","tag":"0x1","owner":"0x0000000000000000000000000000000000000001","root":"0x2","proof":"0x"}`,
		`{"request":{"tag":"0x1","granteeKind":1,"grantee":"0x00","scope":3,"purpose":1,"expiry":5,"nonce":0,"deadline":9},"signature":"0x"}`,
		`{"request":{"tag":"0x1","granteeKind":2,"grantee":"0x00","nonce":1,"deadline":9},"signature":"0x"}`,
		`{"tag":"0x1","newOwner":"0x0000000000000000000000000000000000000001","root":"0x2","proof":"0x"}`,
		`{"tag":"0x1","grant":"0x2","challenge":"0x3","proof":"0x"}`, `{"id":"p1"}`, `{"commitment":"0x1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range requestTypes() {
			err := decodeStrict(body, v)
			if err != nil {
				var ae *apiError
				if !errors.As(err, &ae) || ae.status != fiber.StatusBadRequest || ae.code != "invalid" {
					t.Fatalf("%T: refused with %#v", v, err)
				}
				continue
			}
			if !json.Valid(body) {
				t.Fatalf("%T: accepted %q, which is not one JSON value", v, body)
			}
			again, _ := json.Marshal(v)
			w := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := decodeStrict(again, w); err != nil || !reflect.DeepEqual(v, w) {
				t.Fatalf("%T: %q decoded to %+v, which encodes to %s, decoding to %+v, %v", v, body, v, again, w, err)
			}
		}
	})
}

// FuzzParseFields: parseFields accepts exactly "0x" and 1 to 64 hex digits
// and returns their value; anything else is a 400.
func FuzzParseFields(f *testing.F) {
	for _, s := range []string{
		"0x0", "0x1", "0xF", "0x" + strings.Repeat("f", 64), "0x" + strings.Repeat("0", 64), "0x1" + strings.Repeat("0", 64),
		"0x", "", "1", "0X1", "0x-1", "0x+1", "0x 1", "0x1_0", "0x0x1", "0xg", "0x" + strings.Repeat("0", 65), "-0x1", "0x１",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := parseFields(s, "0x1")
		digits, ok := strings.CutPrefix(s, "0x")
		want := ok && len(digits) >= 1 && len(digits) <= 64 && strings.Trim(digits, "0123456789abcdefABCDEF") == ""
		if !want {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != fiber.StatusBadRequest {
				t.Fatalf("parseFields(%q) = %v, %v; want a 400", s, out, err)
			}
			return
		}
		v, _ := new(big.Int).SetString(digits, 16)
		if err != nil || len(out) != 2 || out[0].Cmp(v) != 0 || out[1].Cmp(big.NewInt(1)) != 0 {
			t.Fatalf("parseFields(%q) = %v, %v", s, out, err)
		}
	})
}

// FuzzSearchParams: the gateway's reading of a search's query string and
// Prefer header. A request is refused with a 400 (not-supported for what
// lenient handling would ignore), or read into a search whose self link —
// the parameters used — reads back, strictly, to the same search; nothing
// is ignored unless the request asked for lenient handling, and a page is
// never larger than the store's largest.
func FuzzSearchParams(f *testing.F) {
	for _, s := range []string{
		"", "_count=10", "_count=0", "_count=-1", "_count=1e3", "_count=99999999999999999999", "_count=9223372036854775807",
		"_count=%31%30", "_count=+5", "_count= 5", "_count=5&_count=x", "_count=x&_count=5", "_cursor=abc", "_cursor=", "_cursor",
		"_count", "name=x", "_count=5&name", "&&&", "=", "_cursor=a%00b", "_cursor=%zz", "_count=5;_cursor=x", "_COUNT=5",
		"_cursor=" + strings.Repeat("A", 5000), "%5Fcount=5", "_count=5#frag", "_count=\xff",
		"code=http://loinc.org|8302-2", "code=|x,y%5C,z", "code=a|b|c", "code:text=x", "status=final&category=vital-signs",
		"date=ge2020-03-14&date=lt2021", "date=2020-03-14T10:00:00+01:00", "date=ap2020", "date=2020-13", "date=ge",
		"subject=Patient/p1", "patient=p1", "subject:Patient=p1", "subject:Group=p1", "subject=https://other/fhir/Patient/p1",
		"_id=o1,o2", "_id=bad%20id", "_lastUpdated=gt2024-01-01T00:00:00Z", "_sort=-date", "_sort=date,_id", "_sort=name",
		"_include=Observation:encounter", "_include=Encounter:participant", "_revinclude=DiagnosticReport:result",
		"_include:iterate=Observation:encounter", "_summary=count", "_summary=true", "_elements=status,code", "_elements=Status",
		"subject.name=x", "_has:Observation:patient:code=x", "_total=accurate", "_format=json",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	g := &Gateway{}
	var (
		rawQuery string
		lenient  bool
		req      *fhirsearch.Request
		perr     error
	)
	app := fiber.New()
	app.Get("/fhir/Observation", func(c *fiber.Ctx) error {
		c.Request().URI().SetQueryString(rawQuery)
		if lenient {
			c.Request().Header.Set("Prefer", "return=minimal, handling=lenient")
		}
		req, perr = g.params(c, fhirsearch.Search, "Observation")
		return nil
	})
	f.Fuzz(func(t *testing.T, q string, le bool) {
		rawQuery, lenient = q, le
		res, err := app.Test(mustRequest(t, "GET", "/fhir/Observation", nil), -1)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%v %v", res, err)
		}
		if perr != nil {
			var ae *apiError
			if !errors.As(perr, &ae) || ae.status != fiber.StatusBadRequest {
				t.Fatalf("query %q refused with %v", q, perr)
			}
			if lenient && ae.code == "not-supported" {
				t.Fatalf("query %q: lenient handling refused what is not supported: %v", q, perr)
			}
			return
		}
		if !lenient && req.Ignored != nil {
			t.Fatalf("query %q: ignored %v without lenient handling", q, req.Ignored)
		}
		if req.Count > store.MaxCount {
			t.Fatalf("query %q: _count %d", q, req.Count)
		}
		self := strings.TrimPrefix(query(req.Applied, "", ""), "?")
		var args []fhirsearch.Arg
		var fa fasthttp.Args
		fa.Parse(self)
		fa.VisitAll(func(k, v []byte) { args = append(args, fhirsearch.Arg{Key: string(k), Value: string(v)}) })
		again, err := fhirsearch.Parse(fhirsearch.Search, "Observation", args, "http://gateway/fhir", false)
		if err != nil {
			t.Fatalf("query %q: the self link's %q does not read back: %v", q, self, err)
		}
		again.Applied, again.Ignored = req.Applied, req.Ignored
		if !reflect.DeepEqual(again, req) {
			t.Fatalf("query %q: the self link's %q reads back as\n%+v, not\n%+v", q, self, again, req)
		}
	})
}

func mustRequest(t testing.TB, method, target string, body []byte) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://gateway"+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// --- through the gateway ----------------------------------------------------------

// recordingStore counts the writes to the records database that are not
// the access log or a nonce: patients, tags, resources, claim codes, anchors.
type recordingStore struct {
	store.Store
	mu     sync.Mutex
	writes []string
}

func (s *recordingStore) wrote(err error, format string, args ...any) {
	if err == nil {
		s.mu.Lock()
		s.writes = append(s.writes, fmt.Sprintf(format, args...))
		s.mu.Unlock()
	}
}

func (s *recordingStore) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.writes) }

func (s *recordingStore) CreatePatient(ctx context.Context, id string, log ...store.LogEntry) (store.Patient, error) {
	p, err := s.Store.CreatePatient(ctx, id, log...)
	s.wrote(err, "create patient %q", id)
	return p, err
}

func (s *recordingStore) MapTag(ctx context.Context, patientID string, tag store.Tag) error {
	err := s.Store.MapTag(ctx, patientID, tag)
	s.wrote(err, "map tag of %q", patientID)
	return err
}

func (s *recordingStore) Apply(ctx context.Context, b store.Batch) ([]store.Result, error) {
	res, err := s.Store.Apply(ctx, b)
	s.wrote(err, "apply %d writes for %q", len(b.Writes), b.PatientID)
	return res, err
}

func (s *recordingStore) PutClaimCode(ctx context.Context, c store.ClaimCode, log ...store.LogEntry) error {
	err := s.Store.PutClaimCode(ctx, c, log...)
	s.wrote(err, "claim code for %q", c.PatientID)
	return err
}

func (s *recordingStore) UnmapTag(ctx context.Context, patientID string, tag store.Tag, e store.LogEntry) error {
	err := s.Store.UnmapTag(ctx, patientID, tag, e)
	s.wrote(err, "unmap tag of %q", patientID)
	return err
}

func (s *recordingStore) AddStaff(ctx context.Context, a store.StaffAccount, log ...store.LogEntry) error {
	err := s.Store.AddStaff(ctx, a, log...)
	s.wrote(err, "staff %q", a.ID)
	return err
}

func (s *recordingStore) UpdateStaff(ctx context.Context, id string, ch store.StaffChange, log ...store.LogEntry) error {
	err := s.Store.UpdateStaff(ctx, id, ch, log...)
	s.wrote(err, "change staff %q", id)
	return err
}

func (s *recordingStore) ConsumeClaimCode(ctx context.Context, hash [32]byte) error {
	err := s.Store.ConsumeClaimCode(ctx, hash)
	s.wrote(err, "consume claim code")
	return err
}

func (s *recordingStore) AddAnchor(ctx context.Context, a store.Anchor) (store.Anchor, error) {
	a, err := s.Store.AddAnchor(ctx, a)
	s.wrote(err, "anchor")
	return a, err
}

func (s *recordingStore) SetAnchorTx(ctx context.Context, batch uint64, tx string) error {
	err := s.Store.SetAnchorTx(ctx, batch, tx)
	s.wrote(err, "anchor tx")
	return err
}

// errorLog counts what the gateway logs at level Error: failed requests,
// access-log appends that failed, nonce-store failures.
type errorLog struct {
	mu   sync.Mutex
	msgs []string
}

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h *errorLog) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *errorLog) WithGroup(string) slog.Handler                { return h }
func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	h.mu.Lock()
	h.msgs = append(h.msgs, b.String())
	h.mu.Unlock()
	return nil
}

func (h *errorLog) count() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.msgs) }

// fuzzWorld is a gateway for provider 1 on a simulated chain, built once per
// fuzz target: patient p1 with records and an open relationship owned by
// w.owner; an address grantee (the doctor) with a research grant over
// Observation, Condition and Patient; patient p2 enrolled with keys2, not
// yet claimed, with a claim code.
type fuzzWorld struct {
	*world
	rec    *recordingStore
	errs   *errorLog
	doctor *ecdsa.PrivateKey
	keys2  *delegate.Keys
	code2  string // p2's claim code

	listenOnce sync.Once // overNetwork's listener
	addr       string
	listenErr  error
}

func newFuzzWorld(f *testing.F) *fuzzWorld {
	fw := &fuzzWorld{errs: &errorLog{}, doctor: simchain.Key("doctor")}
	fw.world = newWorld(f, func(c *Config) {
		fw.rec = &recordingStore{Store: c.Store}
		c.Store = fw.rec
		c.Log = slog.New(fw.errs)
		c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30
		c.BodyLimit = 16 << 10 // bodies over 32 KiB meet fasthttp's own limit
		c.SMARTApps = []SMARTApp{{ClientID: "chart", Name: "Chart App", RedirectURIs: []string{smartRedirect}}}
	})
	w := fw.world
	w.open()
	scope, _ := access.NewScope("Observation", "Condition", "Patient")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(fw.doctor)), scope, access.Research); r.status != 200 {
		f.Fatalf("grant: %d %s", r.status, r.body)
	}
	var err error
	fw.keys2, err = delegate.FromMnemonic("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about", "")
	if err != nil {
		f.Fatal(err)
	}
	if r := w.staff("POST", "/admin/patients", map[string]string{"id": "p2"}); r.status != 201 {
		f.Fatalf("create p2: %d %s", r.status, r.body)
	}
	cm2, _ := fw.keys2.Commitment()
	if r := w.staff("POST", "/admin/patients/p2/enrol", map[string]string{"commitment": zkhash.Hex(cm2)}); r.status != 200 {
		f.Fatalf("enrol p2: %d %s", r.status, r.body)
	}
	r := w.staff("POST", "/admin/patients/p2/claim-code", map[string]string{"tagCode": deskCode(f, fw.keys2, 1)})
	if r.status != 201 {
		f.Fatalf("claim code: %d %s", r.status, r.body)
	}
	var cc struct{ Code string }
	if err := json.Unmarshal(r.body, &cc); err != nil {
		f.Fatal(err)
	}
	fw.code2 = cc.Code
	if err := w.view.Sync(context.Background()); err != nil {
		f.Fatal(err)
	}
	if n := fw.errs.count(); n != 0 {
		f.Fatalf("errors logged while setting up: %v", fw.errs.msgs)
	}
	return fw
}

// overNetwork sends req to the gateway listening on a real socket (started
// on first use).
func (fw *fuzzWorld) overNetwork(req *http.Request) (*http.Response, error) {
	fw.listenOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fw.listenErr = err
			return
		}
		fw.addr = ln.Addr().String()
		go fw.gw.App().Listener(ln)
	})
	if fw.listenErr != nil {
		return nil, fw.listenErr
	}
	r := req.Clone(context.Background())
	r.URL.Host, r.Host = fw.addr, ""
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = body
	}
	return http.DefaultClient.Do(r)
}

// connDropped reports a connection closed or reset under the client.
func connDropped(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// fuzzResponse is a gateway's answer.
type fuzzResponse struct {
	status int
	ctype  string
	body   []byte
	header http.Header
}

// snapshot is what a refused request must leave as it was.
type snapshot struct {
	writes, errs int
	p1, p2       string // records states
}

func stateString(st store.State) string {
	tag := "untagged"
	if st.Tag != nil {
		tag = st.Tag.String()
	}
	return fmt.Sprintf("%s seq %d count %d hash %x dirty %v", tag, st.Seq, st.Count, st.Hash, st.Dirty)
}

func (fw *fuzzWorld) snapshot(t *testing.T) snapshot {
	t.Helper()
	ctx := context.Background()
	p1, err := fw.rec.Store.State(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := fw.rec.Store.State(ctx, "p2")
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{writes: fw.rec.count(), errs: fw.errs.count(), p1: stateString(p1), p2: stateString(p2)}
}

// send sends req and checks the answer: never a 5xx, every error an
// OperationOutcome, no error logged, and for a refusal no write.
func (fw *fuzzWorld) send(t *testing.T, req *http.Request) fuzzResponse {
	t.Helper()
	before := fw.snapshot(t)
	res, err := fw.gw.App().Test(req, -1)
	if err != nil && strings.Contains(err.Error(), "small read buffer") {
		// A request line or headers longer than fasthttp reads: App().Test
		// returns the error; a real listener answers it (431).
		res, err = fw.overNetwork(req)
	}
	if err != nil && strings.Contains(err.Error(), "body size exceeds the given limit") {
		// fasthttp refused the body before fiber saw it, and App().Test
		// returns that error instead of the answer: ask a real listener.
		res, err = fw.overNetwork(req)
		if err != nil && req.ContentLength > 2*int64(fw.gw.cfg.BodyLimit) && connDropped(err) {
			// fasthttp answers 413 and closes without reading the body; a
			// client still writing it may see the connection reset before
			// the answer. Refused either way: nothing may have changed.
			after := fw.snapshot(t)
			if after != before {
				t.Fatalf("%s %s: an oversize body dropped the connection, yet wrote %v", req.Method, req.URL, fw.rec.writes[before.writes:])
			}
			return fuzzResponse{status: http.StatusRequestEntityTooLarge}
		}
	}
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := fuzzResponse{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), body: body, header: res.Header}
	after := fw.snapshot(t)
	if r.status >= 500 {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL, r.status, r.body)
	}
	if r.status >= 400 {
		var oo operationOutcome
		if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 || oo.Issue[0].Code == "" || oo.Issue[0].Severity != "error" {
			t.Fatalf("%s %s: %d is not an OperationOutcome: %q", req.Method, req.URL, r.status, r.body)
		}
		if r.ctype != "application/fhir+json" {
			t.Fatalf("%s %s: %d OperationOutcome as %q", req.Method, req.URL, r.status, r.ctype)
		}
	}
	if after.errs != before.errs {
		t.Fatalf("%s %s: %d; logged %v", req.Method, req.URL, r.status, fw.errs.msgs[before.errs:])
	}
	if r.status >= 300 && (after.writes != before.writes || after.p1 != before.p1 || after.p2 != before.p2) {
		t.Fatalf("%s %s: refused with %d %s, yet wrote %v (p1 %s → %s, p2 %s → %s)", req.Method, req.URL, r.status, r.body,
			fw.rec.writes[before.writes:], before.p1, after.p1, before.p2, after.p2)
	}
	return r
}

func jsonOf(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// generatorProof is a well-encoded proof that verifies nothing.
func generatorProof() string {
	_, _, g1, g2 := bn254.Generators()
	a, b := g1.RawBytes(), g2.RawBytes()
	return hexutil.Encode(append(append(a[:], b[:]...), a[:]...))
}

var publicRoutes = []string{"/claims", "/relay/grant", "/relay/revoke", "/relay/rotate", "/auth/entitlement", "/auth/challenge", "/admin/login"}

// FuzzPublicPost posts bodies to the public POST routes: the claim with a
// code, the relayed grant, revocation and rotation, and the anonymous
// viewer's challenge and entitlement. Seeds include genuine requests (a
// claim that opens p2, an owner-signed grant and revocation, a rotation
// proof, an entitlement proof), which succeed once.
func FuzzPublicPost(f *testing.F) {
	fw := newFuzzWorld(f)
	w := fw.world
	ctx := context.Background()
	route := func(path string) uint8 {
		for i, r := range publicRoutes {
			if r == path {
				return uint8(i)
			}
		}
		panic(path)
	}
	for i, s := range jsonNasties {
		f.Add(uint8(i%len(publicRoutes)), []byte(s))
	}
	// Claims with p2's code: with p1's proof (open already), with a proof
	// that verifies nothing, then p2's genuine claim, which opens p2.
	claim1 := w.claimFor(1, simchain.Addr(w.owner))
	claim1["code"] = fw.code2
	f.Add(route("/claims"), jsonOf(claim1))
	claim1["proof"] = generatorProof()
	f.Add(route("/claims"), jsonOf(claim1))
	claim1["code"] = "no such code"
	f.Add(route("/claims"), jsonOf(claim1))
	claim2 := w.claimWith(fw.keys2, 1, simchain.Addr(simchain.Key("owner of p2")))
	claim2["code"] = fw.code2
	f.Add(route("/claims"), jsonOf(claim2))
	// An owner-signed grant and revocation, as the wallet sends them.
	rel, err := w.chain.Client.Relationship(ctx, w.tag)
	if err != nil {
		f.Fatal(err)
	}
	now := w.chain.Now(f)
	nurse := contracts.AddressGrantee(simchain.Addr(simchain.Key("nurse")))
	scope, _ := access.NewScope("Observation")
	g := contracts.GrantRequest{Tag: w.tag, GranteeKind: 1, Grantee: nurse, Scope: uint64(scope), Purpose: uint8(access.Treatment), Expiry: now + 86400, Nonce: rel.Nonce, Deadline: now + 3600}
	sig, err := contracts.Sign(w.owner, contracts.GrantDigest(contracts.DomainSeparator(w.chain.ChainID, w.chain.D.Relationships), g))
	if err != nil {
		f.Fatal(err)
	}
	grant := map[string]any{"request": map[string]any{
		"tag": hexutil.EncodeBig(w.tag), "granteeKind": 1, "grantee": hexutil.Encode(nurse[:]), "scope": g.Scope,
		"purpose": g.Purpose, "expiry": g.Expiry, "nonce": g.Nonce, "deadline": g.Deadline,
	}, "signature": hexutil.Encode(sig)}
	f.Add(route("/relay/grant"), jsonOf(grant))
	doctor := contracts.AddressGrantee(simchain.Addr(fw.doctor))
	rv := contracts.RevokeRequest{Tag: w.tag, GranteeKind: 1, Grantee: doctor, Nonce: rel.Nonce + 1, Deadline: now + 3600} // after the grant
	rsig, err := contracts.Sign(w.owner, contracts.RevokeDigest(contracts.DomainSeparator(w.chain.ChainID, w.chain.D.Relationships), rv))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(route("/relay/revoke"), jsonOf(map[string]any{"request": map[string]any{
		"tag": hexutil.EncodeBig(w.tag), "granteeKind": 1, "grantee": hexutil.Encode(doctor[:]), "nonce": rv.Nonce, "deadline": rv.Deadline,
	}, "signature": hexutil.Encode(rsig)}))
	for _, mod := range []func(m map[string]any){
		func(m map[string]any) { m["signature"] = "0x" + strings.Repeat("00", 65) },
		func(m map[string]any) { m["signature"] = "0x" },
		func(m map[string]any) { m["request"].(map[string]any)["granteeKind"] = 9 },
		func(m map[string]any) { m["request"].(map[string]any)["purpose"] = 0 },
		func(m map[string]any) { m["request"].(map[string]any)["scope"] = uint64(1) << 63 },
		func(m map[string]any) { m["request"].(map[string]any)["deadline"] = 1 },
		func(m map[string]any) { m["request"].(map[string]any)["tag"] = "0x1" },
		func(m map[string]any) { m["request"].(map[string]any)["tag"] = "0x" + strings.Repeat("f", 64) },
		func(m map[string]any) { m["request"].(map[string]any)["grantee"] = "0x" + strings.Repeat("00", 32) },
	} {
		m := jsonOf(grant)
		var c map[string]any
		_ = json.Unmarshal(m, &c)
		mod(c)
		f.Add(route("/relay/grant"), jsonOf(c))
	}
	// A rotation of p1's relationship to the owner's next delegate.
	next, err := w.keys.Delegate(1, 1)
	if err != nil {
		f.Fatal(err)
	}
	cm, _ := w.keys.Commitment()
	path, err := w.view.MerkleProof(cm)
	if err != nil {
		f.Fatal(err)
	}
	secret, _ := w.keys.Identity()
	proof, pub, err := w.prover.ProveOwnership(circuits.OwnershipWitness{Secret: secret.Element(), Path: path, Provider: 1,
		Signal: circuits.OwnershipSignal(circuits.ActionRotate, next.Address, 1, w.chain.ChainID, w.chain.D.Relationships)})
	if err != nil {
		f.Fatal(err)
	}
	rotate := map[string]string{"tag": hexutil.EncodeBig(w.tag), "newOwner": next.Address.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String()}
	f.Add(route("/relay/rotate"), jsonOf(rotate))
	rotate["proof"] = generatorProof()
	f.Add(route("/relay/rotate"), jsonOf(rotate))
	rotate["newOwner"] = "0x0000000000000000000000000000000000000000"
	f.Add(route("/relay/rotate"), jsonOf(rotate))
	rotate["root"] = "0x1"
	f.Add(route("/relay/rotate"), jsonOf(rotate))
	// An anonymous viewer's entitlement, for a fresh challenge, and without a grant.
	var ch struct{ Challenge string }
	if err := json.Unmarshal(w.post("/auth/challenge", nil).body, &ch); err != nil {
		f.Fatal(err)
	}
	chEl, err := zkhash.ParseHex(ch.Challenge)
	if err != nil {
		f.Fatal(err)
	}
	tagEl, _ := w.keys.Tag(1)
	var v, k fr.Element
	v.SetUint64(4242)
	k.SetUint64(777)
	eproof, epub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v, GrantSecret: k, Tag: tagEl, Challenge: chEl})
	if err != nil {
		f.Fatal(err)
	}
	ent := map[string]string{"tag": zkhash.Hex(epub.Tag), "grant": zkhash.Hex(epub.Grant), "challenge": zkhash.Hex(epub.Challenge), "proof": eproof.String()}
	f.Add(route("/auth/entitlement"), jsonOf(ent))
	ent["challenge"] = "0x" + strings.Repeat("0", 63) + "1"
	f.Add(route("/auth/entitlement"), jsonOf(ent))
	ent["proof"] = generatorProof()
	f.Add(route("/auth/entitlement"), jsonOf(ent))
	ent["grant"] = "0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"
	f.Add(route("/auth/entitlement"), jsonOf(ent))
	f.Add(route("/claims"), bytes.Repeat([]byte("x"), 20<<10)) // over the gateway's limit
	f.Add(route("/claims"), bytes.Repeat([]byte("x"), 40<<10)) // over fasthttp's
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := publicRoutes[int(route)%len(publicRoutes)]
		req := mustRequest(t, "POST", path, body)
		req.Header.Set("Content-Type", "application/json")
		fw.send(t, req)
	})
}

var adminRoutes = []string{"/admin/patients", "/admin/patients/%s/enrol", "/admin/patients/%s/claim", "/admin/patients/%s/claim-code", "/admin/patients/%s/resources", "/admin/import", "/admin/patients/%s/unmap", "/admin/staff", "/admin/staff/%s", ndjsonImportPath}

// FuzzAdminPost posts bodies, with a staff token, to the admin routes:
// patients, enrolment, the staff claim, claim codes, resources (one or a
// Bundle), the import of a patient's Bundle, the bulk NDJSON import and
// undoing a tag mapping, for any patient id.
func FuzzAdminPost(f *testing.F) {
	fw := newFuzzWorld(f)
	w := fw.world
	for i, s := range jsonNasties {
		f.Add(uint8(i%len(adminRoutes)), "p1", []byte(s))
	}
	obs2 := `{"resourceType":"Observation","id":"o2","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p2"}}`
	bundle := func(typ string, rs ...string) string {
		var es []string
		for _, r := range rs {
			es = append(es, `{"resource":`+r+`}`)
		}
		return `{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(es, ",") + `]}`
	}
	cm2, _ := fw.keys2.Commitment()
	for _, s := range []struct {
		route uint8
		id    string
		body  string
	}{
		{0, "", `{"id":"p9"}`}, {0, "", `{"id":"p1"}`}, {0, "", `{"id":"bad id!"}`}, {0, "", `{"id":""}`}, {0, "", `{"id":"` + strings.Repeat("a", 65) + `"}`},
		{0, "", `{"id":"a","id":"b"}`}, {0, "", `{"ID":"p10"}`},
		{1, "p1", `{"commitment":"` + zkhash.Hex(cm2) + `"}`}, {1, "p1", `{"commitment":"0x0"}`}, {1, "nobody", `{"commitment":"0x5"}`},
		{1, "p1", `{"commitment":"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001"}`},
		{2, "p1", string(jsonOf(w.claimFor(1, simchain.Addr(w.owner))))},
		{2, "p2", string(jsonOf(w.claimWith(fw.keys2, 1, simchain.Addr(simchain.Key("owner of p2")))))},
		{2, "p2", `{"code":"x","tag":"0x1","owner":"0x0000000000000000000000000000000000000001","root":"0x1","proof":"` + generatorProof() + `"}`},
		{3, "p2", ``}, {3, "nobody", ``}, {3, "p1", `{"x":1}`}, {3, "p2", `{"tagCode":"` + deskCode(f, fw.keys2, 1) + `"}`},
		{3, "p2", `{"tagCode":"` + strings.ToLower(deskCode(f, fw.keys2, 2)) + `"}`}, {3, "p2", `{"tagCode":"0000-0000"}`}, {3, "p2", `{"tagCode":""}`},
		{6, "p1", `{"reason":""}`}, {6, "p1", `{"tag":"0x5","reason":"not this patient"}`}, {6, "p2", `{"reason":"not this patient"}`},
		{6, "nobody", `{"reason":"x"}`}, {6, "p1", `{"reason":"` + strings.Repeat("x", 501) + `"}`}, {6, "p1", `{"reason":"a\nb"}`},
		{7, "", `{"id":"ann","name":"Ann","role":"clerk","password":"short"}`}, {7, "", `{"id":"ann","name":"Ann","role":"root","token":true}`},
		{7, "", `{"id":"a b","name":"Ann","role":"clerk","token":true}`}, {7, "", `{"id":"ann","name":"Ann","role":"clerk"}`},
		{8, "nobody", `{"disabled":true}`}, {8, "desk-1", `{"disabled":true}`}, {8, "desk-1", `{}`}, {8, "x", `{"role":"root"}`},
		{4, "p1", observationJS}, {4, "p1", bundle("transaction", patientJSON, observationJS, conditionJS)}, {4, "p1", obs2}, {4, "p2", obs2},
		{4, "p1", bundle("transaction")}, {4, "p1", `{"resourceType":"Bundle","entry":[{"fullUrl":"x"}]}`}, {4, "p1", `{"resourceType":"Bundle","entry":null}`},
		{4, "p1", `{"resourceType":"Bundle","entry":[{"resource":null}]}`}, {4, "p1", `{"resourceType":"Bundle","entry":[{"resource":"x"}]}`},
		{4, "p1", strings.Replace(patientJSON, `"p1"`, `"p2"`, 1)}, {4, "p1", strings.Replace(observationJS, `"id":"o1",`, ``, 1)},
		{4, "p1", `{"resourceType":"Organization","id":"org1","name":"Clinic"}`}, {4, "nobody", observationJS},
		{4, "p1", bundle("transaction", observationJS, observationJS)}, {4, "p1", bundle("collection", observationJS, obs2)},
		{5, "", bundle("collection", strings.ReplaceAll(patientJSON, "p1", "p3"), strings.ReplaceAll(observationJS, "p1", "p3"))},
		{5, "", bundle("collection", patientJSON, observationJS)}, {5, "", bundle("collection", strings.ReplaceAll(patientJSON, "p1", "p3"), observationJS)},
		{5, "", bundle("collection", `{"resourceType":"Organization","id":"org1","name":"Clinic"}`)},
		{4, "p1", strings.Repeat(" ", 20<<10) + observationJS}, {5, "", strings.Repeat(" ", 40<<10)},
		// The bulk NDJSON import (sent as application/fhir+ndjson).
		{9, "", strings.ReplaceAll(patientJSON, "p1", "p4") + "\n" + strings.ReplaceAll(observationJS, "p1", "p4") + "\n"},
		{9, "", strings.ReplaceAll(observationJS, "p1", "p4") + "\n" + obs2 + "\n" + `{"resourceType":"Organization","id":"org9","name":"Clinic"}`},
		{9, "", obs2 + "\n{"}, {9, "", "\n\n"}, {9, "", `{"resourceType":"Observation","id":"o7","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"},"performer":[{"reference":"Practitioner?identifier=x|y"}]}`},
	} {
		f.Add(s.route, s.id, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route uint8, id string, body []byte) {
		path := adminRoutes[int(route)%len(adminRoutes)]
		if strings.Contains(path, "%s") {
			path = fmt.Sprintf(path, url.PathEscape(id))
		}
		req := mustRequest(t, "POST", path, body)
		req.Header.Set("Authorization", "Bearer "+staffToken)
		if path == ndjsonImportPath {
			req.Header.Set("Content-Type", "application/fhir+ndjson")
		}
		fw.send(t, req)
	})
}

// Readers of FuzzSignedRequest.
const (
	readOwner     = iota // p1's owner delegate
	readDoctor           // an address grantee, research purpose, Observation, Condition and Patient
	readStranger         // a key with no grant
	readAnonymous        // an anonymous viewer's session (research purpose, Observation)
	readers
)

// researchCursorRE finds the cursors of a bundle's links.
var researchCursorRE = regexp.MustCompile(`_cursor=([A-Za-z0-9_-]+)`)

// FuzzSignedRequest sends genuinely signed (or, for the anonymous viewer,
// session) GET requests for any target, as p1's owner, a grantee, a
// stranger or an anonymous viewer: the reads, searches with their
// parameters and cursors, $everything, and the owner's changes, log and
// state. Beyond the common checks, a genuine signature is never refused as
// a bad one, and a research reader never sees the patient's name, ids
// (not even in a next link's cursor), a date finer than a year (the birth
// date included) or a Last-Modified header.
func FuzzSignedRequest(f *testing.F) {
	fw := newFuzzWorld(f)
	w := fw.world
	// The anonymous viewer: a research grant over Observations, and a session.
	v, k, tagEl, _ := w.researchViewer()
	var ch struct{ Challenge string }
	if err := json.Unmarshal(w.post("/auth/challenge", nil).body, &ch); err != nil {
		f.Fatal(err)
	}
	chEl, _ := zkhash.ParseHex(ch.Challenge)
	proof, pub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v, GrantSecret: k, Tag: tagEl, Challenge: chEl})
	if err != nil {
		f.Fatal(err)
	}
	r := w.post("/auth/entitlement", map[string]string{"tag": zkhash.Hex(pub.Tag), "grant": zkhash.Hex(pub.Grant), "challenge": zkhash.Hex(pub.Challenge), "proof": proof.String()})
	var sess struct{ Token string }
	if err := json.Unmarshal(r.body, &sess); err != nil || sess.Token == "" {
		f.Fatalf("session: %d %s", r.status, r.body)
	}
	// The next page's cursor of a search, as the gateway hands it out.
	r = w.get(w.owner, "/fhir/Observation?_count=1")
	var page struct {
		Link []struct{ Relation, URL string }
	}
	_ = json.Unmarshal(r.body, &page)
	next := "/fhir/Observation?_cursor=x"
	for _, l := range page.Link {
		if l.Relation == "next" {
			next = l.URL
		}
	}
	// Every reader on the main reads; each other target once, readers in turn.
	for _, target := range []string{"/fhir/Observation/o1", "/fhir/Patient/p1", "/fhir/Observation", "/fhir/Patient/$everything", "/patient/log", "/patient/changes", "/patient/state", "/patient/history"} {
		for who := range readers {
			f.Add(uint8(who), target)
		}
	}
	for i, target := range []string{
		"/fhir/Observation/missing", "/fhir/Observation/bad%20id", "/fhir/Spaceship/x", "/fhir/Condition/c1",
		"/fhir/Observation?_count=1", next, "/fhir/Observation?_cursor=" + strings.Repeat("A", 100), "/fhir/Observation?_cursor=Q29uZGl0aW9uAGMx",
		"/fhir/Observation?_count=0", "/fhir/Observation?_count=99999999999999999999", "/fhir/Observation?name=x", "/fhir/Observation?_count=5&_count=6",
		"/fhir/Patient/$everything?_count=2", "/fhir/Patient/%24everything", "/fhir/Patient/$export?_type=Observation", "/fhir/_export/00", "/fhir/_export/00/Observation.ndjson",
		"/fhir/AuditEvent?_count=1", "/fhir/AuditEvent/log-1", "/fhir/Patient/$disclosures", "/fhir/Patient/$grants", "/fhir/Patient/$everything?_cursor=%00",
		"/fhir/metadata", "/fhir/", "/fhir", "/fhir//Observation", "/fhir/Observation/o1/_history/1", "/fhir/../fhir/Observation/o1", "/FHIR/Observation/o1",
		"/patient/changes?since=0", "/patient/changes?since=-1", "/patient/changes?since=18446744073709551616",
		"/patient/changes?since=18446744073709551615", "/patient/changes?since=9223372036854775808", "/patient/log?from=9223372036854775808",
		"/patient/log?from=1", "/patient/log?from=x", "/patient/log?limit=1", "/patient/log?limit=1000",
		"/patient/history?from=1&limit=1", "/patient/history?from=18446744073709551615", "/patient/state?from=2", "/patient/state?from=x",
		"/admin/patients", "/relay/grant", "/",
	} {
		f.Add(uint8(i%readers), target)
	}
	// The FHIR search parameters, reads of versions and history.
	for i, target := range []string{
		"/fhir/Observation?code=http://loinc.org|8302-2&date=ge2020&_sort=-date&_count=1", "/fhir/Observation?date=2020-05-01",
		"/fhir/Observation?_include=Observation:encounter&_revinclude=DiagnosticReport:result", "/fhir/Observation?_summary=count",
		"/fhir/Observation?_elements=status&status=final", "/fhir/Observation?patient=p1", "/fhir/Observation?_lastUpdated=ge2020",
		"/fhir/Observation/o1/_history", "/fhir/Observation/o1/_history/1?_count=1", "/fhir/Patient/p1/$everything?_type=Observation&_since=2020-01-01",
		"/fhir/Condition?_id=c1,c2&clinical-status=active", "/fhir/Organization",
	} {
		f.Add(uint8(i%readers), target)
	}
	// A research reader's pages, with next links.
	f.Add(uint8(readDoctor), "/fhir/Patient/$everything?_count=1")
	f.Add(uint8(readDoctor), "/fhir/Condition?_count=1")
	// A research grantee's group (group.go): signed without a tag (who ≥
	// readers), and with one, which the group routes refuse; a tag-less
	// signature on a relationship's route.
	for i, target := range []string{"/fhir/Group/research", "/fhir/Group/research/$export", "/fhir/Group/research/$export?_type=Observation",
		"/fhir/Group/research/_export/00", "/fhir/Group/research/_export/00/Observation.ndjson", "/fhir/Group/x", "/fhir/Group/research/_history", "/fhir/Observation/o1"} {
		f.Add(uint8(readers+readDoctor), target)
		f.Add(uint8(readers+i%readers), target)
		f.Add(uint8(i%readers), target)
	}
	f.Fuzz(func(t *testing.T, who uint8, target string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		req, err := http.NewRequest("GET", "http://gateway"+target, nil)
		if err != nil || strings.ContainsAny(req.URL.RawQuery, " \t\r\n\x00\x7f") || req.URL.Fragment != "" || req.URL.Host != "gateway" {
			t.Skip("not a request target")
		}
		tag := w.tag
		if who >= readers && who < 2*readers {
			tag = nil // a tag-less request: the group routes' only kind
		}
		who %= readers
		switch who {
		case readAnonymous:
			req.Header.Set("Authorization", "Bearer "+sess.Token)
		default:
			key := map[uint8]*ecdsa.PrivateKey{readOwner: w.owner, readDoctor: fw.doctor, readStranger: simchain.Key("stranger")}[who]
			err := gatewayauth.Sign(req.Header, gatewayauth.Request{
				Method: "GET", Path: req.URL.EscapedPath(), Query: req.URL.RawQuery, BodyHash: gatewayauth.BodyHash(nil), Tag: tag, Audience: 1,
			}, key, w.domain(), time.Now())
			if err != nil {
				t.Fatal(err)
			}
		}
		r := fw.send(t, req)
		// A tag-less signature is served on the group routes only, a
		// tagged one never there (the public routes need neither).
		if p := strings.ToLower(path.Clean(req.URL.Path)); r.status < 300 && who != readAnonymous && !strings.Contains(p, "metadata") && !strings.Contains(p, ".well-known") &&
			(tag == nil) != strings.HasPrefix(p, "/fhir/group/") {
			t.Fatalf("GET %s as %d, tag-less %v: served %d %s", target, who, tag == nil, r.status, r.body)
		}
		if r.status == 401 && bytes.Contains(r.body, []byte("signature")) {
			t.Fatalf("GET %s as %d: a genuine signature refused: %s", target, who, r.body)
		}
		if r.status == 200 && (who == readDoctor || who == readAnonymous) {
			// A Bundle's links echo the reader's own query (FHIR asks
			// for it); everything else is the gateway's.
			served := r.body
			var bundle map[string]json.RawMessage
			if json.Unmarshal(r.body, &bundle) == nil && bundle["link"] != nil {
				delete(bundle, "link")
				served, _ = json.Marshal(bundle)
			}
			for _, s := range []string{"Hoeger", "Buster", "Patient/p1", `"p1"`, `"o1"`, `"c1"`} {
				if bytes.Contains(served, []byte(s)) {
					t.Fatalf("GET %s as a research reader: %q in %s", target, s, r.body)
				}
			}
			// (The capability statement's date is the software's, not the patient's.)
			var answer struct{ ResourceType string }
			_ = json.Unmarshal(r.body, &answer)
			if d := fullDate.Find(served); d != nil && answer.ResourceType != "CapabilityStatement" {
				t.Fatalf("GET %s as a research reader: a full date %q in %s", target, d, r.body)
			}
			if lm := r.header.Get("Last-Modified"); lm != "" {
				t.Fatalf("GET %s as a research reader: Last-Modified %q", target, lm)
			}
			// A next link's cursor names no resource id either (the store's
			// cursors are type, zero byte, id).
			for _, m := range researchCursorRE.FindAllSubmatch(r.body, -1) {
				if c, err := base64.RawURLEncoding.DecodeString(string(m[1])); err == nil && (bytes.Contains(c, []byte("\x00o1")) || bytes.Contains(c, []byte("\x00c1")) || bytes.Contains(c, []byte("\x00p1"))) {
					t.Fatalf("GET %s as a research reader: cursor %q in %s", target, c, r.body)
				}
			}
		}
	})
}

// FuzzAuthHeaders sends GET requests for any target with arbitrary
// authentication headers: the five signature headers and Authorization.
// Beyond the common checks, nothing but the capability statement is served
// without a genuine signature: the owner's or the grantee's own signature
// of exactly this request (no anonymous session exists in this world).
func FuzzAuthHeaders(f *testing.F) {
	fw := newFuzzWorld(f)
	w := fw.world
	add := func(h http.Header, auth, target string) {
		f.Add(h.Get(gatewayauth.HeaderSigner), h.Get(gatewayauth.HeaderTag), h.Get(gatewayauth.HeaderNonce), h.Get(gatewayauth.HeaderExpiry), h.Get(gatewayauth.HeaderSignature), auth, target)
	}
	for _, target := range []string{"/fhir/Observation/o1", "/fhir/Observation?_count=1", "/patient/log"} {
		for _, key := range []*ecdsa.PrivateKey{w.owner, fw.doctor, simchain.Key("stranger")} {
			add(w.signed(key, target, w.tag, 1).Header, "", target)
		}
	}
	add(w.signed(w.owner, "/fhir/Observation/o1", w.tag, 2).Header, "", "/fhir/Observation/o1") // another provider's
	for _, target := range []string{"/fhir/Group/research", "/fhir/Group/research/$export", "/fhir/Observation/o1"} {
		for _, key := range []*ecdsa.PrivateKey{w.owner, fw.doctor} {
			add(w.signed(key, target, nil, 1).Header, "", target) // tag-less: the group routes' kind
		}
	}
	expired := http.Header{}
	if err := gatewayauth.Sign(expired, gatewayauth.Request{Method: "GET", Path: "/fhir/Observation/o1", BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1},
		w.owner, w.domain(), time.Now().Add(-2*time.Minute)); err != nil {
		f.Fatal(err)
	}
	add(expired, "", "/fhir/Observation/o1")
	h := w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1).Header
	mod := func(k, v string) http.Header { c := h.Clone(); c.Set(k, v); return c }
	for _, c := range []http.Header{
		mod(gatewayauth.HeaderTag, "0x1"), mod(gatewayauth.HeaderTag, ""), mod(gatewayauth.HeaderTag, "0x"+strings.Repeat("f", 64)), mod(gatewayauth.HeaderTag, "0x1"+strings.Repeat("0", 64)),
		mod(gatewayauth.HeaderSigner, simchain.Addr(fw.doctor).Hex()), mod(gatewayauth.HeaderExpiry, "1"), mod(gatewayauth.HeaderExpiry, strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)),
		mod(gatewayauth.HeaderNonce, "0x00"), mod(gatewayauth.HeaderSignature, "0x"+strings.Repeat("1", 130)), mod(gatewayauth.HeaderSignature, "zz"), {},
	} {
		add(c, "", "/fhir/Observation/o1")
	}
	for _, auth := range []string{"Bearer x", "Bearer ", "Bearer", "bearer " + strings.Repeat("a", 64), "Basic dXNlcjpwYXNz", "Bearer " + staffToken, "Bearer \xff"} {
		add(http.Header{}, auth, "/fhir/Observation/o1")
		add(h, auth, "/fhir/Observation/o1")
	}
	// genuine reports whether sig is the owner's or the doctor's signature
	// of the request the headers describe.
	genuine := func(req *http.Request, tag, nonce, expiry, sig string) bool {
		var r gatewayauth.Request
		var err error
		if tag != "" {
			if r.Tag, err = hexutil.DecodeBig(tag); err != nil {
				return false
			}
		}
		nb, err := hexutil.Decode(nonce)
		if err != nil || len(nb) != 32 {
			return false
		}
		copy(r.Nonce[:], nb)
		if r.Expiry, err = strconv.ParseUint(expiry, 10, 64); err != nil || r.Expiry == 0 {
			return false
		}
		r.Method, r.Path, r.Query, r.BodyHash, r.Audience = "GET", req.URL.EscapedPath(), req.URL.RawQuery, gatewayauth.BodyHash(nil), 1
		for _, key := range []*ecdsa.PrivateKey{w.owner, fw.doctor} {
			h := http.Header{}
			if err := gatewayauth.Sign(h, r, key, w.domain(), time.Now()); err == nil && strings.EqualFold(h.Get(gatewayauth.HeaderSignature), sig) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, signer, tag, nonce, expiry, sig, auth, target string) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		req, err := http.NewRequest("GET", "http://gateway"+target, nil)
		if err != nil || strings.ContainsAny(req.URL.RawQuery, " \t\r\n\x00\x7f") || req.URL.Fragment != "" || req.URL.Host != "gateway" {
			t.Skip("not a request target")
		}
		for k, v := range map[string]string{gatewayauth.HeaderSigner: signer, gatewayauth.HeaderTag: tag, gatewayauth.HeaderNonce: nonce,
			gatewayauth.HeaderExpiry: expiry, gatewayauth.HeaderSignature: sig, "Authorization": auth} {
			if strings.ContainsAny(v, "\r\n\x00") {
				t.Skip("not a header value")
			}
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		r := fw.send(t, req)
		var res struct{ ResourceType string }
		if r.status < 300 && (json.Unmarshal(r.body, &res) != nil || res.ResourceType != "CapabilityStatement") {
			// The gateway sees header values trimmed.
			tr := strings.TrimSpace
			if !genuine(req, tr(tag), tr(nonce), tr(expiry), tr(sig)) {
				t.Fatalf("served %d without a genuine signature: %q", r.status, r.body)
			}
		}
	})
}
