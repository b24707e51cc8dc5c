package dbmanager

// A FHIR client library not written here reads through the gateway.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/zkhash"
)

// stockClientDir holds the stock client: its pinned npm package and the
// script that drives it (make test installs the package with npm ci).
const stockClientDir = "testdata/fhirclient"

// needStockClient skips the test without node or the installed package,
// unless MEDREC_REQUIRE_FHIRCLIENT=1 (make test-go) makes that a failure.
func needStockClient(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(stockClientDir, "node_modules", "fhir-kit-client", "package.json"))
	}
	if err != nil {
		if os.Getenv("MEDREC_REQUIRE_FHIRCLIENT") == "1" {
			t.Fatalf("the stock FHIR client is not installed (make test installs it: cd dbmanager/%s && npm ci): %v", stockClientDir, err)
		}
		t.Skipf("the stock FHIR client is not installed (cd dbmanager/%s && npm ci): %v", stockClientDir, err)
	}
	return node
}

// TestStockFHIRClient: fhir-kit-client, unmodified, reads a Synthea
// patient's records through a gateway on loopback as an anonymous viewer
// (its session token obtained here with an Entitlement proof, handed over
// in a file): a sorted search page by page both ways, _include, read,
// vread, If-None-Match, history, $everything, and an unsupported parameter
// refused, then ignored under lenient handling. Every read is in the
// access log under the viewer's grant.
func TestStockFHIRClient(t *testing.T) {
	node := needStockClient(t)
	w := newWorld(t, func(c *Config) { c.BodyLimit = 64 << 20 })
	p := w.synthea(2)

	// The viewer: a grant over every type, then a session.
	var v, k fr.Element
	v.SetUint64(31337)
	k.SetUint64(4711)
	tag, _ := w.keys.Tag(1)
	gID := zkhash.Grant(zkhash.ViewerCommitment(v), tag, k)
	if r := w.grant(2, zkhash.Bytes32(gID), access.AllTypes, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	r := w.post("/auth/entitlement", w.entitlementBody(v, k, tag, w.newChallenge()))
	if r.status != 200 {
		t.Fatalf("session: %d %s", r.status, r.body)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(r.json(t)["token"].(string)), 0o600); err != nil {
		t.Fatal(err)
	}

	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.gw.Listen(ctx, addr) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		res, err := http.Get("http://" + addr + "/fhir/metadata")
		if err == nil {
			res.Body.Close()
			break
		}
		if i > 100 {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before, err := w.cfg.Store.LogHead(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	cmd := exec.CommandContext(rctx, node, "stock-client.mjs")
	cmd.Dir = stockClientDir
	cmd.Env = append(os.Environ(), "MEDREC_FHIR_BASE=http://"+addr+"/fhir", "MEDREC_FHIR_TOKEN_FILE="+tokenFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the stock client failed: %v\n%s", err, stderr.String())
	}
	var got struct {
		FhirVersion       string
		ObservationParams []string
		Patient           string
		Pages             []struct {
			Total   int
			Self    string
			Entries []struct{ Ref, FullURL, Version, Date string }
		}
		Back    [][]string
		Include struct {
			Code              string
			Total             int
			Matches, Included []string
		}
		Read struct {
			ID      string
			Same    bool
			VreadID string
		}
		NotModified, Unsupported struct {
			Status       int
			ResourceType string
		}
		History struct {
			Type  string
			Total int
			Etags []string
		}
		Everything struct {
			Total int
			Refs  []string
		}
		Lenient struct {
			Total int
			Self  string
		}
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("the stock client's report %q: %v", stdout.String(), err)
	}

	if got.FhirVersion != "4.0.1" || !slices.Contains(got.ObservationParams, "code") || got.Patient != p.id {
		t.Errorf("capability %s %v, patient %s", got.FhirVersion, got.ObservationParams, got.Patient)
	}
	// The pages: every Observation once, latest first, each entry's
	// absolute fullUrl and version; back the same way.
	obs := p.where("Observation", func(map[string]any) bool { return true })
	var refs, dates []string
	var forward [][]string
	for i, pg := range got.Pages {
		var page []string
		for _, e := range pg.Entries {
			if e.FullURL != "http://"+addr+"/fhir/"+e.Ref || e.Version != "1" {
				t.Errorf("entry %+v", e)
			}
			refs, dates, page = append(refs, e.Ref), append(dates, e.Date), append(page, e.Ref)
		}
		forward = append(forward, page)
		if pg.Total != len(obs) || !strings.Contains(pg.Self, "_sort=-date") || (i > 0) != strings.Contains(pg.Self, "_cursor=") {
			t.Errorf("page %d: total %d, self %s", i, pg.Total, pg.Self)
		}
	}
	sorted := slices.Clone(refs)
	sort.Strings(sorted)
	if !slices.Equal(sorted, obs) || len(got.Pages) != (len(obs)+9)/10 || !slices.IsSortedFunc(dates, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Errorf("%d pages of %d Observations (want %d), dates %v", len(got.Pages), len(refs), len(obs), dates)
	}
	if fmt.Sprint(got.Back) != fmt.Sprint(forward) {
		t.Errorf("back %v, forward %v", got.Back, forward)
	}
	// _include: the matches' encounters.
	var wantEnc []string
	matches := p.where("Observation", func(m map[string]any) bool {
		if hasCoding(m["code"], got.Include.Code) {
			if e := "Encounter/" + refID(m["encounter"]); !slices.Contains(wantEnc, e) {
				wantEnc = append(wantEnc, e)
			}
			return true
		}
		return false
	})
	sort.Strings(wantEnc)
	slices.Sort(got.Include.Matches)
	slices.Sort(got.Include.Included)
	if !slices.Equal(got.Include.Matches, matches) || !slices.Equal(got.Include.Included, wantEnc) || got.Include.Total != len(matches) {
		t.Errorf("include: %+v, want %v and %v", got.Include, matches, wantEnc)
	}
	if !got.Read.Same || got.Read.ID == "" || got.Read.VreadID != got.Read.ID || got.NotModified.Status != 304 {
		t.Errorf("read %+v, If-None-Match %+v", got.Read, got.NotModified)
	}
	if got.History.Type != "history" || got.History.Total != 1 || !slices.Equal(got.History.Etags, []string{`W/"1"`}) {
		t.Errorf("history %+v", got.History)
	}
	var all []string
	for typ := range p.byType {
		if typ != "Organization" && typ != "Practitioner" {
			all = append(all, p.where(typ, func(map[string]any) bool { return true })...)
		}
	}
	sort.Strings(all)
	sort.Strings(got.Everything.Refs)
	if !slices.Equal(got.Everything.Refs, all) || got.Everything.Total != len(all) {
		t.Errorf("$everything: %d of %d, total %d", len(got.Everything.Refs), len(all), got.Everything.Total)
	}
	if got.Unsupported.Status != 400 || got.Unsupported.ResourceType != "OperationOutcome" || got.Lenient.Total != len(obs) || strings.Contains(got.Lenient.Self, "name=") {
		t.Errorf("unsupported %+v, lenient %+v", got.Unsupported, got.Lenient)
	}

	// Every answer the viewer got is in the log, under its grant.
	entries, err := w.cfg.Store.LogRange(context.Background(), before.Next, store.MaxCount)
	if err != nil {
		t.Fatal(err)
	}
	served, grant := 0, zkhash.Bytes32(gID)
	for _, e := range entries {
		if e.ActorKind != store.ActorAnonymous || e.ActorID != hexutil.Encode(grant[:]) || e.Outcome != store.Allowed || e.PatientID != p.id {
			t.Errorf("log entry %+v", e)
		}
		served += len(e.Resources)
	}
	// Searches 1 + pages both ways + include + read, vread, 304, history + $everything pages + lenient.
	if want := 1 + 2*len(got.Pages) - 1 + 1 + 4 + (len(all)+24)/25 + 1; len(entries) != want || served < len(obs)*2+len(all) {
		t.Errorf("%d log entries naming %d resources, want %d entries", len(entries), served, want)
	}
}
