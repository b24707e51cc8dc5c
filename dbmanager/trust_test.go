package dbmanager

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/internal/simchain"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestSignedReadOtherDeployment: two deployments on one chain (the same
// chain id), the same patient keys, the same provider id. A read signed for
// one deployment's gateway is refused by the other's: the signature's domain
// names the deployment (its AgentRegistry).
func TestSignedReadOtherDeployment(t *testing.T) {
	a := newWorld(t)
	b := newWorldOnChain(t, a.chain.Redeploy(t), filepath.Join(t.TempDir(), "records.db"))
	a.open()
	b.open()
	if a.chain.ChainID.Cmp(b.chain.ChainID) != 0 || a.tag.Cmp(b.tag) != 0 || a.chain.D.AgentRegistry == b.chain.D.AgentRegistry {
		t.Fatalf("the two worlds should share chain id and tag, not the registry")
	}
	req := a.signed(a.owner, "/fhir/Observation/o1", a.tag, 1)
	if r := b.do(req.Clone(context.Background())); r.status != 401 || !bytes.Contains(r.body, []byte("signature")) {
		t.Fatalf("a read signed for deployment A at deployment B: %d %s", r.status, r.body)
	}
	if r := a.do(req); r.status != 200 {
		t.Fatalf("the same read at deployment A: %d %s", r.status, r.body)
	}
}

// TestTagHeaderForms: the relationship's tag is read in either form, the
// minimal one (JSON-RPC quantities) and the zero-padded one the CLI and the
// audit print; a tag below 2^252 (a leading zero digit when padded) too.
func TestTagHeaderForms(t *testing.T) {
	w := newWorld(t)
	w.open()
	padded := zkhash.Hex(mustTag(t, w.keys, 1))
	req := httptest.NewRequest("GET", "/fhir/Observation/o1", nil)
	err := gatewayauth.Sign(req.Header, gatewayauth.Request{Method: "GET", Path: "/fhir/Observation/o1", BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1}, w.owner, w.domain(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(gatewayauth.HeaderTag, padded)
	if r := w.do(req); r.status != 200 {
		t.Fatalf("a zero-padded tag header %s: %d %s", padded, r.status, r.body)
	}
	// A tag below 2^252 in both forms: the gateway sees one relationship.
	small := "0x0" + strings.Repeat("0", 62) + "7"
	for _, form := range []string{small, "0x7"} {
		req := w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1)
		req.Header.Set(gatewayauth.HeaderTag, form)
		if r := w.do(req); r.status != 401 { // signed for another tag: the signature fails, the header parses
			t.Fatalf("tag header %s: %d %s", form, r.status, r.body)
		}
	}
	req = w.signed(w.owner, "/fhir/Observation/o1", w.tag, 1)
	req.Header.Set(gatewayauth.HeaderTag, "0x-7")
	if r := w.do(req); r.status != 401 || !bytes.Contains(r.body, []byte("tag")) {
		t.Fatalf("a malformed tag header: %d %s", r.status, r.body)
	}
	// The claim and the undo take the padded form (keys inspect's) too.
	if r := w.staff("POST", "/admin/patients/p1/unmap", map[string]string{"tag": padded, "reason": "test of the padded form"}); r.status != 200 {
		t.Fatalf("unmap with a padded tag: %d %s", r.status, r.body)
	}
}

// TestChallengeFlood: one client asking for more challenges than the old
// shared table held (100,000) locks nobody out: challenges are stateless
// until a proof uses them. A challenge is still single-use, expires, and
// cannot be forged or made up.
func TestChallengeFlood(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	w.open()
	v, k, tag, _ := w.researchViewer()
	const flood = 100_001
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for i := range 8 {
		wg.Go(func() {
			for j := i; j < flood; j += 8 {
				req := httptest.NewRequest("POST", "/auth/challenge", nil)
				req.RemoteAddr = "192.0.2.66:4444"
				res, err := w.gw.App().Test(req, -1)
				if err != nil || res.StatusCode != 200 {
					mu.Lock()
					refused++
					mu.Unlock()
				}
				if res != nil {
					res.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	if refused != 0 {
		t.Logf("%d of the flood's requests refused", refused)
	}
	// Another viewer logs in.
	ch := w.newChallenge()
	body := w.entitlementBody(v, k, tag, ch)
	if r := w.post("/auth/entitlement", body); r.status != 200 {
		t.Fatalf("a viewer after the flood: %d %s", r.status, r.body)
	}
	// Used once.
	if r := w.post("/auth/entitlement", body); r.status != 401 || !bytes.Contains(r.body, []byte("challenge")) {
		t.Fatalf("a used challenge again: %d %s", r.status, r.body)
	}
	// Made up, or forged from a real one.
	for name, bad := range map[string]string{
		"made up": "0x00" + strings.Repeat("11", 31),
		"forged":  forge(w.newChallenge()),
	} {
		if r := w.post("/auth/entitlement", w.entitlementBody(v, k, tag, bad)); r.status != 401 || !bytes.Contains(r.body, []byte("challenge")) {
			t.Fatalf("%s challenge: %d %s", name, r.status, r.body)
		}
	}
	// Expired: a gateway whose clock is past the challenge's expiry.
	ch = w.newChallenge()
	w.gw.cfg.Now = func() time.Time { return time.Now().Add(challengeTTL + time.Second) }
	if r := w.post("/auth/entitlement", w.entitlementBody(v, k, tag, ch)); r.status != 401 || !bytes.Contains(r.body, []byte("challenge")) {
		t.Fatalf("an expired challenge: %d %s", r.status, r.body)
	}
}

// forge changes the expiry of a real challenge, keeping its MAC.
func forge(ch string) string {
	b := []byte(ch)
	i := 2 + 2*8 // the expiry's last byte
	if b[i+1] == 'f' {
		b[i+1] = 'e'
	} else {
		b[i+1] = 'f'
	}
	return string(b)
}

// TestGrantExpiry: an address grantee reads while the grant runs, with the
// grant's purpose written in each log entry; once it has expired, the read
// is refused and logged, and so is an anonymous viewer's login.
func TestGrantExpiry(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.open()
	doctor := simchain.Key("doctor")
	obsOnly, _ := access.NewScope("Observation")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), obsOnly, access.Family); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	v, k, tag, _ := w.researchViewer()
	head, _ := w.cfg.Store.LogHead(ctx)
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("read within the grant: %d %s", r.status, r.body)
	}
	entries, _ := w.cfg.Store.LogRange(ctx, head.Next, 10)
	if len(entries) != 1 || entries[0].Purpose != access.Family || entries[0].ActorKind != store.ActorGrantee || entries[0].Outcome != store.Allowed {
		t.Fatalf("the read's log entry: %+v", entries)
	}
	// Sessions record the anonymous grant's purpose.
	if r := w.post("/auth/entitlement", w.entitlementBody(v, k, tag, w.newChallenge())); r.status != 200 {
		t.Fatalf("session within the grant: %d %s", r.status, r.body)
	}
	entries, _ = w.cfg.Store.LogRange(ctx, head.Next+1, 10)
	if len(entries) != 1 || entries[0].Action != "session" || entries[0].Purpose != access.Research {
		t.Fatalf("the session's log entry: %+v", entries)
	}

	// Two days on: both grants (one day) have expired.
	later := time.Now().Add(48 * time.Hour)
	w.restart(func(c *Config) { c.Now = func() time.Time { return later } })
	head, _ = w.cfg.Store.LogHead(ctx)
	req := httptest.NewRequest("GET", "/fhir/Observation/o1", nil)
	err := gatewayauth.Sign(req.Header, gatewayauth.Request{Method: "GET", Path: "/fhir/Observation/o1", BodyHash: gatewayauth.BodyHash(nil), Tag: w.tag, Audience: 1}, doctor, w.domain(), later)
	if err != nil {
		t.Fatal(err)
	}
	if r := w.do(req); r.status != 403 || !bytes.Contains(r.body, []byte("expired")) {
		t.Fatalf("read after the grant expired: %d %s", r.status, r.body)
	}
	entries, _ = w.cfg.Store.LogRange(ctx, head.Next, 10)
	if len(entries) != 1 || entries[0].Outcome != store.Denied || !strings.Contains(entries[0].Detail, "expired") || entries[0].PatientID != "p1" {
		t.Fatalf("the refusal's log entry: %+v", entries)
	}
	if r := w.post("/auth/entitlement", w.entitlementBody(v, k, tag, w.newChallenge())); r.status != 403 || !bytes.Contains(r.body, []byte("expired")) {
		t.Fatalf("session after the grant expired: %d %s", r.status, r.body)
	}
}

// TestConcurrentRelays: transactions the gateway sends at once from its one
// account — enrolments at two desks, two patients' grants — all go through:
// each takes its own account nonce.
func TestConcurrentRelays(t *testing.T) {
	w := newWorld(t)
	const n = 8
	for i := range n {
		if r := w.staff("POST", "/admin/patients", map[string]string{"id": fmt.Sprintf("c%d", i)}); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
	}
	var wg sync.WaitGroup
	results := make([]resp, n)
	for i := range n {
		wg.Go(func() {
			var c fr.Element
			c.SetUint64(uint64(1000 + i))
			results[i] = w.staff("POST", fmt.Sprintf("/admin/patients/c%d/enrol", i), map[string]string{"commitment": zkhash.Hex(c)})
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.status != 200 {
			t.Fatalf("enrolment %d of %d sent at once: %d %s", i, n, r.status, r.body)
		}
	}
}

// TestRateLimitsByReader: a grantee reading in a loop is throttled, alone.
// The patient behind the same address still reads, and still relays a
// grant — the unauthenticated routes have a budget of their own.
func TestRateLimitsByReader(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 30, 60 })
	w.open()
	doctor := simchain.Key("doctor")
	obsOnly, _ := access.NewScope("Observation")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), obsOnly, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	var served, throttled int
	for range 100 {
		switch r := w.get(doctor, "/fhir/Observation/o1"); r.status {
		case 200:
			served++
		case 429:
			throttled++
			if !bytes.Contains(r.body, []byte("this reader")) {
				t.Fatalf("throttled: %s", r.body)
			}
		default:
			t.Fatalf("the doctor's read: %d %s", r.status, r.body)
		}
	}
	if served < 6 || throttled == 0 || served > 20 {
		t.Fatalf("the doctor's 100 reads: %d served, %d throttled", served, throttled)
	}
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("the patient's read behind the same address: %d %s", r.status, r.body)
	}
	friend := simchain.Key("friend")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(friend)), obsOnly, access.Family); r.status != 200 {
		t.Fatalf("the patient's relayed grant behind the same address: %d %s", r.status, r.body)
	}
}
