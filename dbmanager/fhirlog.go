package dbmanager

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// The owner's access log and grants through the FHIR door: the log as
// AuditEvent resources (shaped after IHE Basic Audit Log Patterns where it
// fits), the grants on the relationship as Consent resources derived from
// the chain (read-only, Patient/$grants), and the accounting of disclosures (HIPAA 45 CFR
// 164.528) as one Bundle. Owner only, like /patient/log: the owner reading
// their own log is not itself logged (each read would add an entry to
// what it reads). The hash-chained form with its proofs stays
// /patient/log; these are views of the same entries.

// auditEvents answers GET /fhir/AuditEvent: the owner's log entries, oldest
// first, _count at a time (default 100, at most store.MaxCount), _cursor
// the sequence number a page starts at.
func (g *Gateway) auditEvents(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "log")
	if err != nil {
		return err
	}
	count, from := 100, uint64(0)
	for k, v := range c.Queries() {
		switch k {
		case "_count":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxCount {
				return badRequest("_count %q: a number from 1 to %d", v, store.MaxCount)
			}
			count = n
		case "_cursor":
			n, err := strconv.ParseUint(v, 10, 63)
			if err != nil {
				return badRequest("_cursor %q: not a cursor of this search", v)
			}
			from = n
		case "_format":
			if v != "json" && v != "application/fhir+json" {
				return badRequest("_format %q: only FHIR JSON is served", v)
			}
		default:
			return badRequest("AuditEvent search takes _count and _cursor only, not %q", k)
		}
	}
	entries, err := g.cfg.Store.PatientLog(c.UserContext(), r.patient, from, count+1)
	if err != nil {
		return storeError(err)
	}
	next := ""
	if len(entries) > count {
		next = strconv.FormatUint(entries[count].Seq, 10)
		entries = entries[:count]
	}
	self := g.base(c) + "/AuditEvent?_count=" + strconv.Itoa(count)
	b := fhirBundle{ResourceType: "Bundle", Type: "searchset", Link: []bundleLink{{"self", self + "&_cursor=" + strconv.FormatUint(from, 10)}}}
	if next != "" {
		b.Link = append(b.Link, bundleLink{"next", self + "&_cursor=" + next})
	}
	for _, e := range entries {
		b.Entry = append(b.Entry, bundleEntry{FullURL: g.base(c) + "/AuditEvent/" + auditID(e.Seq), Resource: g.auditEvent(e), Search: &entrySearch{Mode: "match"}})
	}
	return fhirJSON(c, b)
}

// auditEvent answers GET /fhir/AuditEvent/:id: one entry of the owner's log.
func (g *Gateway) auditEventByID(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "log")
	if err != nil {
		return err
	}
	seq, ok := parseAuditID(c.Params("id"))
	if !ok {
		return notFound("AuditEvent/%s is not here", c.Params("id"))
	}
	entries, err := g.cfg.Store.PatientLog(c.UserContext(), r.patient, seq, 1)
	if err != nil {
		return storeError(err)
	}
	if len(entries) == 0 || entries[0].Seq != seq {
		return notFound("AuditEvent/%s is not here", c.Params("id"))
	}
	return fhirJSON(c, g.auditEvent(entries[0]))
}

// disclosureYears is how far back the accounting of disclosures goes by
// default: six years, as 164.528(a) asks.
const disclosureYears = 6

// disclosures answers GET /fhir/Patient/$disclosures: the accounting of
// disclosures as one Bundle (type collection) of AuditEvents — every read
// the gateway served to someone other than the patient (grantees and
// anonymous viewers, for any purpose: a superset of what 164.528 requires,
// which exempts treatment) since _since (default six years back).
func (g *Gateway) disclosures(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "log")
	if err != nil {
		return err
	}
	since := g.cfg.Now().AddDate(-disclosureYears, 0, 0)
	for k, v := range c.Queries() {
		switch k {
		case "_since":
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				if t, err = time.Parse(time.DateOnly, v); err != nil {
					return badRequest("_since %q: a date (YYYY-MM-DD) or an instant (RFC 3339)", v)
				}
			}
			since = t
		default:
			return badRequest("$disclosures takes _since only, not %q", k)
		}
	}
	b := fhirBundle{ResourceType: "Bundle", Type: "collection", Timestamp: g.cfg.Now().UTC().Format(time.RFC3339)}
	for from := uint64(0); ; {
		entries, err := g.cfg.Store.PatientLog(c.UserContext(), r.patient, from, store.MaxCount)
		if err != nil {
			return storeError(err)
		}
		for _, e := range entries {
			if disclosed(e) && !e.Time.Before(since) {
				b.Entry = append(b.Entry, bundleEntry{FullURL: g.base(c) + "/AuditEvent/" + auditID(e.Seq), Resource: g.auditEvent(e)})
			}
		}
		if len(entries) < store.MaxCount {
			break
		}
		from = entries[len(entries)-1].Seq + 1
	}
	total := len(b.Entry)
	b.Total = &total
	return fhirJSON(c, b)
}

// disclosed: an entry of a read served to someone other than the patient:
// a grantee, an anonymous viewer, or an app the patient approved.
func disclosed(e store.LogEntry) bool {
	if e.Outcome != store.Allowed || (e.ActorKind != store.ActorGrantee && e.ActorKind != store.ActorAnonymous && e.ActorKind != store.ActorApp) {
		return false
	}
	_, read := restInteraction[e.Action]
	return read
}

// grants answers GET /fhir/Patient/$grants: every grant recorded on the
// owner's relationship, from the gateway's chain view, as Consent resources
// in a collection Bundle. They are not stored records — Consent is also a
// record type patients' records may hold, read and searched as any other —
// so they come from an operation, not from a Consent search.
func (g *Gateway) grants(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "grants")
	if err != nil {
		return err
	}
	if len(c.Queries()) > 0 {
		return badRequest("$grants takes no parameters")
	}
	now := uint64(g.cfg.Now().Unix())
	grants := g.cfg.View.GrantsOf(r.tag)
	total := len(grants)
	b := fhirBundle{ResourceType: "Bundle", Type: "collection", Timestamp: g.cfg.Now().UTC().Format(time.RFC3339), Total: &total}
	for _, gr := range grants {
		b.Entry = append(b.Entry, bundleEntry{FullURL: "urn:medrec-zk:grant:" + consentID(gr), Resource: g.consent(r.patient, gr, now)})
	}
	return fhirJSON(c, b)
}

func fhirJSON(c *fiber.Ctx, v any) error {
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.JSON(v)
}

// --- the resources -----------------------------------------------------------

type fhirBundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp,omitempty"`
	Total        *int          `json:"total,omitempty"`
	Link         []bundleLink  `json:"link,omitempty"`
	Entry        []bundleEntry `json:"entry,omitempty"`
}

type bundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type bundleEntry struct {
	FullURL  string       `json:"fullUrl"`
	Resource any          `json:"resource"`
	Search   *entrySearch `json:"search,omitempty"`
}

type entrySearch struct {
	Mode string `json:"mode"`
}

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type concept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text,omitempty"`
}

type identifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type reference struct {
	Reference  string      `json:"reference,omitempty"`
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

type auditAgent struct {
	Who       reference `json:"who"`
	Requestor bool      `json:"requestor"`
	Purpose   []concept `json:"purposeOfUse,omitempty"`
}

type auditEntity struct {
	What *reference `json:"what,omitempty"`
	Type *coding    `json:"type,omitempty"`
	Role *coding    `json:"role,omitempty"`
}

type auditSource struct {
	Observer reference `json:"observer"`
	Type     []coding  `json:"type"`
}

type auditEventResource struct {
	ResourceType   string        `json:"resourceType"`
	ID             string        `json:"id"`
	Type           coding        `json:"type"`
	Subtype        []coding      `json:"subtype,omitempty"`
	Action         string        `json:"action,omitempty"`
	Recorded       string        `json:"recorded"`
	Outcome        string        `json:"outcome"`
	OutcomeDesc    string        `json:"outcomeDesc,omitempty"`
	PurposeOfEvent []concept     `json:"purposeOfEvent,omitempty"`
	Agent          []auditAgent  `json:"agent"`
	Source         auditSource   `json:"source"`
	Entity         []auditEntity `json:"entity,omitempty"`
}

// Code systems.
const (
	auditEventType   = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	restfulInteract  = "http://hl7.org/fhir/restful-interaction"
	actReason        = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	securitySource   = "http://terminology.hl7.org/CodeSystem/security-source-type"
	auditEntityType  = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	objectRole       = "http://terminology.hl7.org/CodeSystem/object-role"
	participation    = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
	dicomDCM         = "http://dicom.nema.org/resources/ontology/DCM"
	logActionSystem  = "urn:medrec-zk:log-action" // the gateway's own action names
	actorSystemOf    = "urn:medrec-zk:actor:"     // + the actor kind: who, as the log names them
	grantSystem      = "urn:medrec-zk:grant"      // a grant: relationship tag, grantee kind, grantee
	granteeAddrSys   = "urn:medrec-zk:grantee:address"
	granteeAnonSys   = "urn:medrec-zk:grantee:anonymous"
	resourceTypesSys = "http://hl7.org/fhir/resource-types"
)

// restInteraction maps the log's read actions to FHIR's RESTful
// interactions: a disclosure of records.
var restInteraction = map[string]string{
	"read": "read", "vread": "vread", "history": "history-instance",
	"search": "search-type", "everything": "operation", "export": "operation",
}

// auditAction is the AuditEvent action code of a log action.
func auditAction(action string) string {
	switch {
	case restInteraction[action] != "" || action == "log" || action == "changes" || action == "state":
		return "R"
	case action == "create" || action == "import":
		return "C"
	case action == "unmap":
		return "D"
	}
	return "E"
}

func (g *Gateway) auditEvent(e store.LogEntry) auditEventResource {
	a := auditEventResource{
		ResourceType: "AuditEvent",
		ID:           auditID(e.Seq),
		Type:         coding{System: auditEventType, Code: "rest", Display: "RESTful Operation"},
		Action:       auditAction(e.Action),
		Recorded:     e.Time.UTC().Format(time.RFC3339Nano),
		OutcomeDesc:  e.Detail,
		Source: auditSource{
			Observer: reference{Display: fmt.Sprintf("MedRec-ZK gateway of provider %d", g.cfg.Provider)},
			Type:     []coding{{System: securitySource, Code: "4", Display: "Application Server"}},
		},
	}
	if it, ok := restInteraction[e.Action]; ok {
		a.Subtype = append(a.Subtype, coding{System: restfulInteract, Code: it})
	} else {
		a.Type = coding{System: dicomDCM, Code: "110100", Display: "Application Activity"}
	}
	a.Subtype = append(a.Subtype, coding{System: logActionSystem, Code: e.Action})
	switch e.Outcome {
	case store.Allowed:
		a.Outcome = "0"
	case store.Failed:
		a.Outcome = "4" // allowed, but it failed (not found)
	default:
		a.Outcome = "8" // refused
	}
	if e.Purpose.Valid() {
		a.PurposeOfEvent = []concept{{Coding: []coding{{System: actReason, Code: e.Purpose.HL7()}}, Text: e.Purpose.String()}}
	}
	who := reference{Display: actorWords[e.ActorKind]}
	if e.ActorID != "" {
		who.Identifier = &identifier{System: actorSystemOf + strings.ReplaceAll(actorWords[e.ActorKind], " ", "-"), Value: e.ActorID}
	}
	if e.ActorKind == store.ActorPatient && e.PatientID != "" {
		who.Reference = "Patient/" + e.PatientID
	}
	a.Agent = []auditAgent{{Who: who, Requestor: true, Purpose: a.PurposeOfEvent}}
	if e.PatientID != "" {
		a.Entity = append(a.Entity, auditEntity{
			What: &reference{Reference: "Patient/" + e.PatientID},
			Type: &coding{System: auditEntityType, Code: "1", Display: "Person"},
			Role: &coding{System: objectRole, Code: "1", Display: "Patient"},
		})
	}
	for _, res := range e.Resources {
		ref := reference{Reference: res}
		if !strings.Contains(res, "/") {
			ref = reference{Display: res} // a type only (a refused search)
		}
		a.Entity = append(a.Entity, auditEntity{What: &ref, Type: &coding{System: auditEntityType, Code: "2", Display: "System Object"}})
	}
	return a
}

var actorWords = map[store.ActorKind]string{
	store.ActorSystem:    "gateway",
	store.ActorStaff:     "staff",
	store.ActorPatient:   "patient",
	store.ActorGrantee:   "grantee",
	store.ActorAnonymous: "anonymous viewer",
	store.ActorApp:       "app",
}

func auditID(seq uint64) string { return "log-" + strconv.FormatUint(seq, 10) }

func parseAuditID(id string) (uint64, bool) {
	s, ok := strings.CutPrefix(id, "log-")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseUint(s, 10, 63)
	return seq, err == nil && strconv.FormatUint(seq, 10) == s
}

type consentProvision struct {
	Type    string         `json:"type"`
	Period  *consentPeriod `json:"period,omitempty"`
	Actor   []consentActor `json:"actor"`
	Action  []concept      `json:"action"`
	Purpose []coding       `json:"purpose,omitempty"`
	Class   []coding       `json:"class"`
}

type consentPeriod struct {
	End string `json:"end"`
}

type consentActor struct {
	Role      concept   `json:"role"`
	Reference reference `json:"reference"`
}

type consentResource struct {
	ResourceType string           `json:"resourceType"`
	ID           string           `json:"id"`
	Identifier   []identifier     `json:"identifier"`
	Status       string           `json:"status"`
	Scope        concept          `json:"scope"`
	Category     []concept        `json:"category"`
	Patient      reference        `json:"patient"`
	PolicyRule   concept          `json:"policyRule"`
	Provision    consentProvision `json:"provision"`
}

// consentID names a grant by its grantee (one grant per grantee on a
// relationship), as a FHIR id (at most 64 of [A-Za-z0-9.-]): "a" and the
// address of an address grantee, the 64 hex digits of an anonymous one's g.
func consentID(gr chainview.Grant) string {
	if gr.Kind == access.AddressGrantee {
		return "a" + hex.EncodeToString(gr.Grantee[12:])
	}
	return hex.EncodeToString(gr.Grantee[:])
}

// consent is a grant as a Consent: active while it allows reads, inactive
// once revoked, expired, or ended by a rotation.
func (g *Gateway) consent(patient string, gr chainview.Grant, now uint64) consentResource {
	status := "active"
	if !gr.Active(now) {
		status = "inactive"
	}
	grantee := reference{Display: "an anonymous viewer (the chain does not say who)", Identifier: &identifier{System: granteeAnonSys, Value: "0x" + hex.EncodeToString(gr.Grantee[:])}}
	if gr.Kind == access.AddressGrantee {
		addr := "0x" + hex.EncodeToString(gr.Grantee[12:])
		grantee = reference{Display: "the holder of account " + addr, Identifier: &identifier{System: granteeAddrSys, Value: addr}}
	}
	var classes []coding
	for _, t := range gr.Scope.Types() {
		classes = append(classes, coding{System: resourceTypesSys, Code: t})
	}
	p := consentProvision{
		Type:   "permit",
		Period: &consentPeriod{End: time.Unix(int64(gr.Expiry), 0).UTC().Format(time.RFC3339)},
		Actor:  []consentActor{{Role: concept{Coding: []coding{{System: participation, Code: "IRCP", Display: "information recipient"}}}, Reference: grantee}},
		Action: []concept{{Coding: []coding{{System: "http://terminology.hl7.org/CodeSystem/consentaction", Code: "access"}}}},
		Class:  classes,
	}
	if gr.Purpose.Valid() {
		p.Purpose = []coding{{System: actReason, Code: gr.Purpose.HL7(), Display: gr.Purpose.String()}}
	}
	return consentResource{
		ResourceType: "Consent",
		ID:           consentID(gr),
		Identifier:   []identifier{{System: grantSystem, Value: fmt.Sprintf("%s/%d/0x%s", gr.Tag.Text(16), gr.Kind, hex.EncodeToString(gr.Grantee[:]))}},
		Status:       status,
		Scope:        concept{Coding: []coding{{System: "http://terminology.hl7.org/CodeSystem/consentscope", Code: "patient-privacy"}}},
		Category:     []concept{{Coding: []coding{{System: "http://loinc.org", Code: "59284-0", Display: "Patient Consent"}}}},
		Patient:      reference{Reference: "Patient/" + patient},
		PolicyRule:   concept{Coding: []coding{{System: "http://terminology.hl7.org/CodeSystem/v3-ActCode", Code: "OPTIN"}}},
		Provision:    p,
	}
}
