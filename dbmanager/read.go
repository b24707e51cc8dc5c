package dbmanager

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/api"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// metadata answers the FHIR CapabilityStatement: what this gateway serves.
func (g *Gateway) metadata(c *fiber.Ctx) error {
	var res []fiber.Map
	for _, t := range access.ResourceTypes() {
		res = append(res, fiber.Map{
			"type":        t,
			"interaction": []fiber.Map{{"code": "read"}, {"code": "search-type"}},
			"searchParam": []fiber.Map{{"name": "_count", "type": "number"}},
		})
	}
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.JSON(fiber.Map{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2026-11-25",
		"kind":         "instance",
		"fhirVersion":  "4.0.1",
		"format":       []string{"application/fhir+json"},
		"software":     fiber.Map{"name": "MedRec-ZK dbmanager"},
		"implementation": fiber.Map{
			"description": fmt.Sprintf("MedRec-ZK gateway of provider %d: reads need a signed request of the relationship's owner or an address grantee, or an anonymous viewer's session", g.cfg.Provider),
		},
		"rest": []fiber.Map{{
			"mode":      "server",
			"resource":  res,
			"operation": []fiber.Map{{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}},
		}},
	}, "application/fhir+json")
}

// begin authorizes a read and checks the resource type against the scope;
// refusals are logged and returned.
func (g *Gateway) begin(c *fiber.Ctx, action, typ string) (*reader, error) {
	if r := g.unchecked.Load(); r != nil {
		return r, nil
	}
	r, d := g.authorize(c)
	if d != nil {
		_ = g.appendLog(c, store.LogEntry{ActorKind: orSystem(d.kind), ActorID: d.id, Action: action, PatientID: d.patient, Resources: typeRes(typ), Outcome: store.Denied, Detail: d.err.Error()})
		return nil, d.err
	}
	if typ != "" && !r.scope.Allows(typ) {
		err := forbidden("the grant does not cover %s", typ)
		_ = g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Resources: typeRes(typ), Outcome: store.Denied, Detail: err.Error()})
		return nil, err
	}
	return r, nil
}

func orSystem(k store.ActorKind) store.ActorKind {
	if k == 0 {
		// Unidentified callers (bad signature) are logged as "system"-observed attempts.
		return store.ActorSystem
	}
	return k
}

func typeRes(typ string) []string {
	if typ == "" {
		return nil
	}
	return []string{typ}
}

func (g *Gateway) read(c *fiber.Ctx) error {
	typ, id := c.Params("type"), c.Params("id")
	if err := store.ValidType(typ); err != nil {
		return badRequest("%v", err)
	}
	if err := store.ValidID(id); err != nil {
		return badRequest("%v", err)
	}
	r, err := g.begin(c, "read", typ)
	if err != nil {
		return err
	}
	res, err := g.cfg.Store.Get(c.UserContext(), typ, id)
	if err == nil && res.PatientID != "" && res.PatientID != r.patient {
		err = store.ErrNotFound // another patient's resource: never say it exists
	}
	if err != nil {
		_ = g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "read", PatientID: r.patient, Resources: []string{typ + "/" + id}, Outcome: store.Failed, Detail: "not found"})
		return storeError(err)
	}
	ref := fmt.Sprintf("%s/%s/_history/%d", typ, id, res.Version)
	if err := g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "read", PatientID: r.patient, Resources: []string{ref}, Outcome: store.Allowed}); err != nil {
		return err
	}
	body, err := g.present(r, res.Raw)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, fmt.Sprintf(`W/"%d"`, res.Version))
	c.Set(fiber.HeaderLastModified, res.LastUpdated.UTC().Format(time.RFC1123))
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(body)
}

// searchParams reads _count and _cursor; anything else is refused.
func searchParams(c *fiber.Ctx) (store.PageRequest, error) {
	var p store.PageRequest
	var bad error
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		switch string(k) {
		case "_count":
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 1 {
				bad = badRequest("_count must be a positive integer")
			}
			p.Count = n
		case "_cursor":
			p.Cursor = string(v)
		default:
			bad = errf(fiber.StatusBadRequest, "not-supported", "search parameter %q is not supported", k)
		}
	})
	return p, bad
}

func (g *Gateway) search(c *fiber.Ctx) error {
	typ := c.Params("type")
	if err := store.ValidType(typ); err != nil {
		return badRequest("%v", err)
	}
	p, err := searchParams(c)
	if err != nil {
		return err
	}
	r, err := g.begin(c, "search", typ)
	if err != nil {
		return err
	}
	page, err := g.cfg.Store.Search(c.UserContext(), r.patient, typ, p)
	if err != nil {
		return storeError(err)
	}
	return g.bundle(c, r, "search", page, "/fhir/"+typ, p.Count)
}

func (g *Gateway) everything(c *fiber.Ctx) error {
	p, err := searchParams(c)
	if err != nil {
		return err
	}
	r, err := g.begin(c, "everything", "")
	if err != nil {
		return err
	}
	page, err := g.cfg.Store.Everything(c.UserContext(), r.patient, p)
	if err != nil {
		return storeError(err)
	}
	kept := page.Resources[:0]
	for _, res := range page.Resources {
		if r.scope.Allows(res.Type) {
			kept = append(kept, res)
		}
	}
	page.Resources = kept
	return g.bundle(c, r, "everything", page, "/fhir/Patient/$everything", p.Count)
}

// bundle logs and writes a searchset Bundle. Resources are embedded byte for
// byte as stored (unless de-identified), so a client can hash what it got.
func (g *Gateway) bundle(c *fiber.Ctx, r *reader, action string, page store.Page, self string, count int) error {
	refs := make([]string, len(page.Resources))
	for i, res := range page.Resources {
		refs[i] = fmt.Sprintf("%s/%s/_history/%d", res.Type, res.ID, res.Version)
	}
	if err := g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Resources: refs, Outcome: store.Allowed}); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"searchset","link":[`)
	link := func(rel, u string) {
		j, _ := json.Marshal(map[string]string{"relation": rel, "url": u})
		b.Write(j)
	}
	link("self", self)
	if page.Next != "" {
		q := url.Values{"_cursor": {page.Next}}
		if count > 0 {
			q.Set("_count", strconv.Itoa(count))
		}
		b.WriteByte(',')
		link("next", self+"?"+q.Encode())
	}
	b.WriteString(`],"entry":[`)
	for i, res := range page.Resources {
		if i > 0 {
			b.WriteByte(',')
		}
		body, err := g.present(r, res.Raw)
		if err != nil {
			return err
		}
		head, _ := json.Marshal(g.fullURL(r, res.Type, res.ID))
		fmt.Fprintf(&b, `{"fullUrl":%s,"response":{"etag":"W/\"%d\""},"resource":`, head, res.Version)
		b.Write(body)
		b.WriteString(`,"search":{"mode":"match"}}`)
	}
	b.WriteString("]}")
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(b.Bytes())
}

// present returns what a reader gets of a stored resource: the raw bytes, or
// for the research purpose a de-identified copy.
func (g *Gateway) present(r *reader, raw []byte) ([]byte, error) {
	if r.purpose != access.Research {
		return raw, nil
	}
	return deidentify(raw, g.pseudonyms(r))
}

// fullURL is a bundle entry's fullUrl as the reader may see it.
func (g *Gateway) fullURL(r *reader, typ, id string) string {
	if r.purpose == access.Research {
		id = g.pseudonyms(r)(id)
	}
	return typ + "/" + id
}

// pseudonyms returns the research reader's pseudonym of a resource id: a
// UUID made of HMAC-SHA256(PseudonymKey, reader id, resource id). Keyed by
// the id alone, so a reference (Patient/x, urn:uuid:x) and the resource it
// points to keep agreeing.
func (g *Gateway) pseudonyms(r *reader) func(id string) string {
	return func(id string) string {
		m := hmac.New(sha256.New, g.cfg.PseudonymKey)
		m.Write([]byte(r.id))
		m.Write([]byte{0})
		m.Write([]byte(id))
		h := m.Sum(nil)
		h[6] = h[6]&0x0f | 0x80 // UUID version 8 (custom), RFC 9562
		h[8] = h[8]&0x3f | 0x80
		return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
	}
}

var dateRE = regexp.MustCompile(`^\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// relativeRef is a FHIR relative reference Type/id, optionally with a version.
var relativeRef = regexp.MustCompile(`^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$`)

// identifying are the elements removed for research: the person's names,
// contacts, addresses, identifiers, photos and free-text narrative.
var identifying = map[string]bool{"name": true, "telecom": true, "address": true, "identifier": true, "photo": true, "contact": true, "text": true}

// deidentify removes identifying elements at every depth, reduces every date
// to its year, drops the display texts of references (which may carry
// names), and replaces resource ids and the ids in references by pseudonyms
// (a reference it cannot read is cut).
func deidentify(raw []byte, pseudonym func(id string) string) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("de-identify: %w", err)
	}
	var walk func(any) any
	walk = func(x any) any {
		switch t := x.(type) {
		case map[string]any:
			for k, val := range t {
				if identifying[k] {
					delete(t, k)
					continue
				}
				t[k] = walk(val)
			}
			if _, ok := t["resourceType"].(string); ok {
				if id, ok := t["id"].(string); ok {
					t["id"] = pseudonym(id)
				}
			}
			if ref, ok := t["reference"].(string); ok {
				delete(t, "display")
				switch m := relativeRef.FindStringSubmatch(ref); {
				case strings.HasPrefix(ref, "#"): // a contained resource
				case strings.HasPrefix(ref, "urn:uuid:"):
					t["reference"] = "urn:uuid:" + pseudonym(strings.TrimPrefix(ref, "urn:uuid:"))
				case m != nil:
					t["reference"] = m[1] + "/" + pseudonym(m[2])
				default:
					t["reference"] = "redacted"
				}
			}
			return t
		case []any:
			for i := range t {
				t[i] = walk(t[i])
			}
			return t
		case string:
			if dateRE.MatchString(t) {
				return t[:4]
			}
			return t
		}
		return x
	}
	return json.Marshal(walk(v))
}

// changes lists the patient's new record versions since a sequence number
// (notifications by authenticated poll). Owner only.
func (g *Gateway) changes(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "changes")
	if err != nil {
		return err
	}
	since, err := strconv.ParseUint(c.Query("since", "0"), 10, 64)
	if err != nil {
		return badRequest("since must be a sequence number")
	}
	page := store.MaxCount - 1 // one more tells whether another page follows
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > page {
			return badRequest("limit must be a number from 1 to %d", page)
		}
		page = n
	}
	// The patient's newest change, read first: a client that reads the
	// records next and later asks for changes since it misses nothing.
	p, err := g.cfg.Store.Patient(c.UserContext(), r.patient)
	if err != nil {
		return storeError(err)
	}
	ch, err := g.cfg.Store.Changes(c.UserContext(), r.patient, since, page+1)
	if err != nil {
		return storeError(err)
	}
	more := len(ch) > page
	if more {
		ch = ch[:page]
	}
	out := make([]fiber.Map, len(ch))
	for i, x := range ch {
		out[i] = fiber.Map{"seq": x.Seq, "type": x.Type, "id": x.ID, "version": x.Version, "time": x.Time}
	}
	return c.JSON(fiber.Map{"changes": out, "more": more, "latest": p.Seq})
}

// patientLog returns the access-log entries about the owner's records.
func (g *Gateway) patientLog(c *fiber.Ctx) error {
	r, err := g.ownerOnly(c, "log")
	if err != nil {
		return err
	}
	from, err := strconv.ParseUint(c.Query("from", "0"), 10, 64)
	if err != nil {
		return badRequest("from must be a sequence number")
	}
	entries, err := g.cfg.Store.PatientLog(c.UserContext(), r.patient, from, 1000)
	if err != nil {
		return storeError(err)
	}
	seqs := make([]uint64, len(entries))
	for i, e := range entries {
		seqs[i] = e.Seq
	}
	proofs, err := g.logProofs(c.UserContext(), seqs)
	if err != nil {
		return err
	}
	out := api.LogPage{Entries: make([]api.LogEntry, len(entries))}
	for i, e := range entries {
		out.Entries[i] = api.FromStore(e, proofs[e.Seq])
	}
	return c.JSON(out)
}

// ownerOnly authorizes the relationship's owner delegate only.
func (g *Gateway) ownerOnly(c *fiber.Ctx, action string) (*reader, error) {
	r, err := g.begin(c, action, "")
	if err != nil {
		return nil, err
	}
	if r.kind != store.ActorPatient {
		err := forbidden("only the relationship's owner may do this")
		_ = g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Outcome: store.Denied, Detail: err.Error()})
		return nil, err
	}
	return r, nil
}
