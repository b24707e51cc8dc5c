package dbmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// FHIR searches: search-type and Patient/$everything, answered as
// searchset Bundles. A search flows: its parameters parsed (params,
// package fhirsearch) → begin decides who reads (authorize.go) → the
// reader's limits applied (research.go: what a research reader may search
// by, and its pseudonyms) → the store searched → one log entry naming every
// resource served → the Bundle.
//
// The Bundle carries each resource byte for byte as stored (unless
// de-identified or cut by _elements), so the patient's app can hash it
// against the anchored history. Its version is therefore not written into
// the resource (meta.versionId) but beside it, in the entry's
// "latest-version" link to the version's own URL (…/Type/id/_history/v):
// a searchset entry has no response element to carry an ETag (bdl-4), and
// its fullUrl may not be a version's URL (bdl-8).

// params reads a request's query parameters for interaction i on type typ.
// Under "Prefer: handling=lenient" unsupported parameters are left out
// (the self link shows what was used); otherwise they are a 400.
func (g *Gateway) params(c *fiber.Ctx, i fhirsearch.Interaction, typ string) (*fhirsearch.Request, error) {
	var args []fhirsearch.Arg
	c.Request().URI().QueryArgs().VisitAll(func(k, v []byte) {
		args = append(args, fhirsearch.Arg{Key: string(k), Value: string(v)})
	})
	lenient := preferLenient(c.Get("Prefer"))
	req, err := fhirsearch.Parse(i, typ, args, g.base(c), lenient)
	if err != nil {
		if errors.Is(err, fhirsearch.ErrUnsupported) {
			return nil, errf(fiber.StatusBadRequest, "not-supported", "%v (Prefer: handling=lenient ignores what is not supported)", err)
		}
		return nil, badRequest("%v", err)
	}
	if lenient {
		c.Set("Preference-Applied", "handling=lenient")
	}
	return req, nil
}

// preferLenient reports whether a Prefer header asks for lenient handling.
func preferLenient(h string) bool {
	for _, p := range strings.FieldsFunc(h, func(r rune) bool { return r == ',' || r == ';' }) {
		if strings.EqualFold(strings.ReplaceAll(strings.TrimSpace(p), " ", ""), "handling=lenient") {
			return true
		}
	}
	return false
}

// base is this gateway's FHIR base URL as the reader reached it.
func (g *Gateway) base(c *fiber.Ctx) string { return g.publicBase(c) + "/fhir" }

// publicBase is the gateway's own base URL: Config.PublicURL, or where it
// is not set the request's. What the gateway names itself by — the FHIR base
// an app's aud must equal, the endpoints it announces, the audience of a
// backend client's assertion — never comes from the request's Host header
// where the gateway knows its address: behind a proxy that passes Host
// through, a Host of another server would let an app's aud for that server
// pass here, and a token meant for this gateway be obtained through it.
func (g *Gateway) publicBase(c *fiber.Ctx) string {
	if g.cfg.PublicURL != "" {
		return strings.TrimSuffix(g.cfg.PublicURL, "/")
	}
	return c.BaseURL()
}

func (g *Gateway) search(c *fiber.Ctx) error {
	typ := c.Params("type")
	if err := store.ValidType(typ); err != nil {
		return badRequest("%v", err)
	}
	if !fhirval.InPatientCompartment(typ) {
		return errf(fiber.StatusBadRequest, "not-supported", "%s is a directory resource outside every patient's records: read it by id, or follow a reference to it with _include", typ)
	}
	req, err := g.params(c, fhirsearch.Search, typ)
	if err != nil {
		return err
	}
	r, err := g.begin(c, "search", typ)
	if err != nil {
		return err
	}
	q, nothing, err := g.searchQuery(c, r, req)
	if err == nil {
		err = g.includable(r, req)
	}
	if err != nil {
		return g.refuse(c, r, "search", typ, err)
	}
	var page store.Page
	if !nothing {
		if page, err = g.cfg.Store.Search(c.UserContext(), r.patient, q); err != nil {
			return storeError(err)
		}
	}
	included, err := g.included(c, r, req, page.Resources)
	if err != nil {
		return err
	}
	return g.searchset(c, r, "search", req, "/"+typ, page, included)
}

func (g *Gateway) everything(c *fiber.Ctx) error {
	id := c.Params("id")
	if id != "" {
		if err := store.ValidID(id); err != nil {
			return badRequest("%v", err)
		}
	}
	req, err := g.params(c, fhirsearch.Everything, "")
	if err != nil {
		return err
	}
	r, err := g.begin(c, "everything", "")
	if err != nil {
		return err
	}
	if id != "" && id != g.pseudonymOf(r)(r.patient) {
		return g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "everything", PatientID: r.patient, Resources: []string{"Patient"}, Outcome: store.Failed, Detail: "not found"},
			notFound("Patient/%s is not here", id))
	}
	q := store.EverythingQuery{PageRequest: store.PageRequest{Count: max(req.Count, 0)}, CountOnly: req.Count == 0}
	if req.Since.Precision != 0 {
		if r.purpose == access.Research {
			return g.refuse(c, r, "everything", "", researchLimit("_since is an instant: research readers see dates to the year only"))
		}
		q.Since = time.UnixMicro(req.Since.Lo).UTC()
	}
	// Only what the grant covers, of the types asked.
	types := req.Types
	if types == nil {
		types = access.ResourceTypes()
	}
	q.Types = []string{}
	for _, t := range types {
		if r.scope.Allows(t) {
			q.Types = append(q.Types, t)
		}
	}
	if q.Cursor, err = g.openCursor(r, req.Cursor); err != nil {
		return g.refuse(c, r, "everything", "", err)
	}
	page, err := g.cfg.Store.Everything(c.UserContext(), r.patient, q)
	if err != nil {
		return storeError(err)
	}
	self := "/Patient/$everything"
	if id != "" {
		self = "/Patient/" + id + "/$everything"
	}
	return g.searchset(c, r, "everything", req, self, page, nil)
}

// refuse logs a refusal of r's request and returns it.
func (g *Gateway) refuse(c *fiber.Ctx, r *reader, action, typ string, err error) error {
	return g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Resources: typeRes(typ), Outcome: store.Denied, Detail: err.Error()}, err)
}

// includable checks that every _include leads to a type the grant covers
// and every _revinclude comes from one, and that a research reader follows
// only the references de-identification keeps.
func (g *Gateway) includable(r *reader, req *fhirsearch.Request) error {
	for _, inc := range req.Include {
		if !slices.ContainsFunc(inc.Target, r.scope.Allows) {
			return forbidden("the grant does not cover %s, where _include=%s:%s leads", strings.Join(inc.Target, " or "), inc.Source, inc.Param)
		}
	}
	for _, inc := range req.RevInclude {
		if !r.scope.Allows(inc.Source) {
			return forbidden("the grant does not cover %s (_revinclude=%s:%s)", inc.Source, inc.Source, inc.Param)
		}
	}
	if r.purpose == access.Research {
		for _, inc := range slices.Concat(req.Include, req.RevInclude) {
			if p, _ := fhirsearch.Lookup(inc.Source, inc.Param); !p.Research {
				return researchLimit("%s:%s is a reference research readers do not follow", inc.Source, inc.Param)
			}
		}
	}
	return nil
}

// included returns the resources _include and _revinclude add to matches:
// only of types the grant covers, each once, none that is a match.
func (g *Gateway) included(c *fiber.Ctx, r *reader, req *fhirsearch.Request, matches []store.Resource) ([]store.Resource, error) {
	if len(matches) == 0 || len(req.Include)+len(req.RevInclude) == 0 {
		return nil, nil
	}
	seen := map[store.Ref]bool{}
	ids := make([]string, len(matches))
	refs := make([]store.Ref, len(matches))
	for i, m := range matches {
		ids[i], refs[i] = m.ID, store.Ref{Type: m.Type, ID: m.ID}
		seen[refs[i]] = true
	}
	var out []store.Resource
	add := func(rs []store.Resource) {
		for _, res := range rs {
			k := store.Ref{Type: res.Type, ID: res.ID}
			if !seen[k] && r.scope.Allows(res.Type) {
				seen[k] = true
				out = append(out, res)
			}
		}
	}
	for _, inc := range req.Include {
		inc.Target = slices.DeleteFunc(slices.Clone(inc.Target), func(t string) bool { return !r.scope.Allows(t) })
		rs, err := g.cfg.Store.Included(c.UserContext(), r.patient, inc, ids)
		if err != nil {
			return nil, storeError(err)
		}
		add(rs)
	}
	for _, inc := range req.RevInclude {
		rs, err := g.cfg.Store.RevIncluded(c.UserContext(), r.patient, inc, refs)
		if err != nil {
			return nil, storeError(err)
		}
		add(rs)
	}
	return out, nil
}

// searchset logs and writes a searchset Bundle of a page of matches and
// the resources included with them. self is the request's path under the
// FHIR base; its links keep the parameters that were used.
func (g *Gateway) searchset(c *fiber.Ctx, r *reader, action string, req *fhirsearch.Request, self string, page store.Page, included []store.Resource) error {
	refs := make([]string, 0, len(page.Resources)+len(included))
	for _, res := range slices.Concat(page.Resources, included) {
		refs = append(refs, versionRef(res.Meta))
	}
	if err := g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: action, PatientID: r.patient, Resources: refs, Outcome: store.Allowed}); err != nil {
		return err
	}
	base := g.base(c)
	self = base + self
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"resourceType":"Bundle","type":"searchset","total":%d,"link":[`, page.Total)
	writeLink(&b, "self", self+query(req.Applied, "", ""))
	if page.Next != "" && !req.Summary {
		b.WriteByte(',')
		writeLink(&b, "next", self+query(req.Applied, "_cursor", g.sealCursor(r, page.Next)))
	}
	if page.Prev != "" && !req.Summary {
		b.WriteByte(',')
		writeLink(&b, "previous", self+query(req.Applied, "_cursor", g.sealCursor(r, page.Prev)))
	}
	b.WriteByte(']')
	if !req.Summary && req.Count != 0 {
		b.WriteString(`,"entry":[`)
		pseudonym := g.pseudonymOf(r)
		for i, res := range slices.Concat(page.Resources, included) {
			if i > 0 {
				b.WriteByte(',')
			}
			body, err := g.present(r, res.Raw)
			if err != nil {
				return err
			}
			mode := "include"
			if i < len(page.Resources) {
				mode = "match"
				if req.Elements != nil {
					if body, err = subset(body, req.Elements); err != nil {
						return err
					}
				}
			}
			full := base + "/" + res.Type + "/" + pseudonym(res.ID)
			head, _ := json.Marshal(full)
			version, _ := json.Marshal(fmt.Sprintf("%s/_history/%d", full, res.Version))
			fmt.Fprintf(&b, `{"link":[{"relation":"latest-version","url":%s}],"fullUrl":%s,"resource":`, version, head)
			b.Write(body)
			fmt.Fprintf(&b, `,"search":{"mode":%q}}`, mode)
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(b.Bytes())
}

func writeLink(b *bytes.Buffer, rel, u string) {
	j, _ := json.Marshal(map[string]string{"relation": rel, "url": u})
	b.Write(j)
}

// query encodes the parameters used, in order, with key's value replaced
// by value (when key is not "").
func query(args []fhirsearch.Arg, key, value string) string {
	var parts []string
	for _, a := range args {
		if a.Key != key || key == "" {
			parts = append(parts, url.QueryEscape(a.Key)+"="+url.QueryEscape(a.Value))
		}
	}
	if key != "" {
		parts = append(parts, url.QueryEscape(key)+"="+url.QueryEscape(value))
	}
	if len(parts) == 0 {
		return ""
	}
	return "?" + strings.Join(parts, "&")
}

// subsetted is the tag FHIR asks for on a resource cut by _elements.
var subsetted = map[string]any{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

// subset keeps, of a resource, its top-level elements named in elements,
// and resourceType, id and meta, in their order, and tags it SUBSETTED.
func subset(raw []byte, elements []string) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("_elements: not a resource")
	}
	var out bytes.Buffer
	out.WriteByte('{')
	n, tagged := 0, false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("_elements: %w", err)
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("_elements: %w", err)
		}
		if key == "meta" {
			var meta map[string]any
			if err := json.Unmarshal(v, &meta); err != nil {
				return nil, fmt.Errorf("_elements: meta: %w", err)
			}
			tags, _ := meta["tag"].([]any)
			meta["tag"] = append(tags, subsetted)
			v, _ = json.Marshal(meta)
			tagged = true
		} else if key != "resourceType" && key != "id" && !slices.Contains(elements, key) {
			continue
		}
		if n > 0 {
			out.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		out.Write(k)
		out.WriteByte(':')
		out.Write(v)
		n++
	}
	if !tagged {
		meta, _ := json.Marshal(map[string]any{"tag": []any{subsetted}})
		if n > 0 {
			out.WriteByte(',')
		}
		out.WriteString(`"meta":`)
		out.Write(meta)
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}
