package dbmanager

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/google/fhir/go/fhirversion"
	"github.com/google/fhir/go/jsonformat"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// TestFHIRLogAndConsent: the owner reads the access log as AuditEvents
// (every entry once, paged, each valid R4, saying who, what, why and the
// outcome), the grants as Consents derived from the chain (Patient/$grants: active, or
// inactive once revoked), and the accounting of disclosures (only reads
// served to others); nobody else reads any of them, and bad parameters are
// a 400.
func TestFHIRLogAndConsent(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, func(c *Config) { c.RateLimit, c.ReaderRateLimit = 1<<30, 1<<30 })
	w.open()
	um, err := jsonformat.NewUnmarshaller("UTC", fhirversion.R4)
	if err != nil {
		t.Fatal(err)
	}
	valid := func(what string, raw json.RawMessage) {
		t.Helper()
		if _, err := um.Unmarshal(raw); err != nil {
			t.Fatalf("%s is not valid R4: %v\n%s", what, err, raw)
		}
	}

	doctor, researcher := simchain.Key("doctor"), simchain.Key("researcher")
	obs, _ := access.NewScope("Observation")
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(doctor)), obs, access.Treatment); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	if r := w.grant(1, contracts.AddressGrantee(simchain.Addr(researcher)), access.AllTypes, access.Research); r.status != 200 {
		t.Fatalf("grant: %d %s", r.status, r.body)
	}
	if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("doctor read: %d %s", r.status, r.body)
	}
	if r := w.get(simchain.Key("stranger"), "/fhir/Observation/o1"); r.status != 403 {
		t.Fatalf("stranger read: %d %s", r.status, r.body)
	}
	if r := w.revoke(1, contracts.AddressGrantee(simchain.Addr(researcher))); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
		t.Fatalf("owner read: %d %s", r.status, r.body)
	}

	type bundle struct {
		ResourceType, Type string
		Total              *int
		Link               []struct{ Relation, URL string }
		Entry              []struct {
			FullURL  string
			Resource json.RawMessage
		}
	}
	type auditEvent struct {
		ID, Action, Outcome, Recorded string
		Subtype                       []struct{ System, Code string }
		PurposeOfEvent                []struct{ Coding []struct{ Code string } }
		Agent                         []struct {
			Who struct {
				Reference  string
				Identifier struct{ System, Value string }
			}
		}
		Entity []struct{ What struct{ Reference string } }
	}
	get := func(target string) bundle {
		t.Helper()
		r := w.get(w.owner, target)
		var b bundle
		if r.status != 200 || json.Unmarshal(r.body, &b) != nil || b.ResourceType != "Bundle" {
			t.Fatalf("GET %s: %d %s", target, r.status, r.body)
		}
		valid(target, r.body)
		return b
	}

	// The log, two at a time, following the next links.
	want, err := w.cfg.Store.PatientLog(ctx, "p1", 0, store.MaxCount)
	if err != nil {
		t.Fatal(err)
	}
	var events []auditEvent
	pages := 0
	for target := "/fhir/AuditEvent?_count=2"; target != ""; pages++ {
		b := get(target)
		target = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				u, err := url.Parse(l.URL)
				if err != nil || !strings.HasSuffix(u.Path, "/fhir/AuditEvent") {
					t.Fatalf("next link %q", l.URL)
				}
				target = "/fhir/AuditEvent?" + u.RawQuery
			}
		}
		for _, e := range b.Entry {
			var a auditEvent
			if err := json.Unmarshal(e.Resource, &a); err != nil || !strings.HasSuffix(e.FullURL, "/AuditEvent/"+a.ID) {
				t.Fatalf("entry %s: %v", e.FullURL, err)
			}
			events = append(events, a)
		}
	}
	if len(events) != len(want) || pages != (len(want)+1)/2 {
		t.Fatalf("%d AuditEvents in %d pages, the log holds %d entries", len(events), pages, len(want))
	}
	var doctorRead, strangerRead *auditEvent
	for i, e := range want {
		a := &events[i]
		if a.ID != auditID(e.Seq) {
			t.Fatalf("event %d is %s, the entry %d", i, a.ID, e.Seq)
		}
		if e.ActorKind == store.ActorGrantee && strings.EqualFold(e.ActorID, simchain.Addr(doctor).Hex()) && e.Action == "read" {
			doctorRead = a
		}
		if e.Outcome == store.Denied && e.Action == "read" {
			strangerRead = a
		}
	}
	if doctorRead == nil || strangerRead == nil {
		t.Fatalf("the doctor's read or the stranger's attempt is missing: %+v", want)
	}
	if doctorRead.Outcome != "0" || doctorRead.Action != "R" || doctorRead.Subtype[0].Code != "read" ||
		len(doctorRead.PurposeOfEvent) != 1 || doctorRead.PurposeOfEvent[0].Coding[0].Code != "TREAT" ||
		!strings.EqualFold(doctorRead.Agent[0].Who.Identifier.Value, simchain.Addr(doctor).Hex()) ||
		len(doctorRead.Entity) != 2 || doctorRead.Entity[0].What.Reference != "Patient/p1" || doctorRead.Entity[1].What.Reference != "Observation/o1/_history/1" {
		t.Errorf("the doctor's read: %+v", *doctorRead)
	}
	if strangerRead.Outcome != "8" {
		t.Errorf("the stranger's attempt: %+v", *strangerRead)
	}

	// One by id; ids that name nothing of this patient's.
	if r := w.get(w.owner, "/fhir/AuditEvent/"+doctorRead.ID); r.status != 200 || !strings.Contains(string(r.body), `"id":"`+doctorRead.ID+`"`) {
		t.Errorf("AuditEvent/%s: %d %s", doctorRead.ID, r.status, r.body)
	}
	other, err := w.cfg.Store.AppendLog(ctx, store.LogEntry{ActorKind: store.ActorStaff, ActorID: "desk", Action: "create", PatientID: "p2", Outcome: store.Allowed})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{auditID(other[0].Seq), "log-01", "log-", "7", "log-99999"} {
		if r := w.get(w.owner, "/fhir/AuditEvent/"+id); r.status != 404 {
			t.Errorf("AuditEvent/%s: %d %s", id, r.status, r.body)
		}
	}

	// The grants as Consents.
	b := get("/fhir/Patient/$grants")
	status := map[string]string{}
	for _, e := range b.Entry {
		var c struct {
			ID, Status string
			Provision  struct {
				Actor []struct {
					Reference struct{ Identifier struct{ Value string } }
				}
				Purpose []struct{ Code string }
				Class   []struct{ Code string }
			}
		}
		if err := json.Unmarshal(e.Resource, &c); err != nil {
			t.Fatal(err)
		}
		who := strings.ToLower(c.Provision.Actor[0].Reference.Identifier.Value)
		status[who] = c.Status + " " + c.Provision.Purpose[0].Code + " " + c.Provision.Class[0].Code
	}
	doctorAddr, researcherAddr := strings.ToLower(simchain.Addr(doctor).Hex()), strings.ToLower(simchain.Addr(researcher).Hex())
	if len(status) != 2 || status[doctorAddr] != "active TREAT Observation" || !strings.HasPrefix(status[researcherAddr], "inactive HRESCH ") {
		t.Errorf("consents: %v", status)
	}

	// The accounting of disclosures: the doctor's read, nothing else.
	b = get("/fhir/Patient/$disclosures")
	if b.Type != "collection" || b.Total == nil || *b.Total != 1 || len(b.Entry) != 1 || !strings.Contains(string(b.Entry[0].Resource), `"id":"`+doctorRead.ID+`"`) {
		t.Errorf("disclosures: %+v", b)
	}
	if b := get("/fhir/Patient/$disclosures?_since=2999-01-01"); len(b.Entry) != 0 {
		t.Errorf("disclosures since 2999: %d", len(b.Entry))
	}

	// Bad parameters; readers other than the owner, refused and logged.
	for _, target := range []string{"/fhir/AuditEvent?_count=0", "/fhir/AuditEvent?_count=x", "/fhir/AuditEvent?_cursor=-1", "/fhir/AuditEvent?patient=p1",
		"/fhir/Patient/$grants?status=active", "/fhir/Patient/$disclosures?_since=yesterday", "/fhir/Patient/$disclosures?_count=5"} {
		if r := w.get(w.owner, target); r.status != 400 || !strings.Contains(string(r.body), "OperationOutcome") {
			t.Errorf("%s: %d %s", target, r.status, r.body)
		}
	}
	for _, target := range []string{"/fhir/AuditEvent", "/fhir/AuditEvent/" + doctorRead.ID, "/fhir/Patient/$grants", "/fhir/Patient/$disclosures"} {
		head, _ := w.cfg.Store.LogHead(ctx)
		if r := w.get(doctor, target); r.status != 403 {
			t.Errorf("the doctor reads %s: %d %s", target, r.status, r.body)
		}
		if entries, err := w.cfg.Store.LogRange(ctx, head.Next, 10); err != nil || len(entries) != 1 || entries[0].Outcome != store.Denied {
			t.Errorf("the doctor's attempt at %s, logged: %+v %v", target, entries, err)
		}
	}
}
