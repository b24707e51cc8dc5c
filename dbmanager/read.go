package dbmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// FHIR reads of one resource: read, vread and instance history. Each
// handler reads its parameters, has begin decide (authorize.go), then logs
// and answers. Searches are in search.go, the CapabilityStatement in
// capability.go.

// readTarget reads and checks a read's type and id from the path.
func readTarget(c *fiber.Ctx) (typ, id string, err error) {
	typ, id = c.Params("type"), c.Params("id")
	if err := store.ValidType(typ); err != nil {
		return "", "", badRequest("%v", err)
	}
	if err := store.ValidID(id); err != nil {
		return "", "", badRequest("%v", err)
	}
	return typ, id, nil
}

func (g *Gateway) read(c *fiber.Ctx) error {
	typ, id, err := readTarget(c)
	if err != nil {
		return err
	}
	if _, err := g.params(c, fhirsearch.Read, ""); err != nil {
		return err
	}
	r, err := g.begin(c, "read", typ)
	if err != nil {
		return err
	}
	return g.serveRead(c, r, typ, id, 0)
}

func (g *Gateway) vread(c *fiber.Ctx) error {
	typ, id, err := readTarget(c)
	if err != nil {
		return err
	}
	v, err := strconv.ParseInt(c.Params("vid"), 10, 64)
	if err != nil || v < 1 || strings.HasPrefix(c.Params("vid"), "+") {
		return badRequest("version %q is not a version number (1, 2, …)", c.Params("vid"))
	}
	if _, err := g.params(c, fhirsearch.Read, ""); err != nil {
		return err
	}
	r, err := g.begin(c, "read", typ)
	if err != nil {
		return err
	}
	return g.serveRead(c, r, typ, id, v)
}

// serveRead logs and answers a read r may make: the current version, or
// version v (vread).
func (g *Gateway) serveRead(c *fiber.Ctx, r *reader, typ, id string, v int64) error {
	var res store.Resource
	real, err := g.realID(c, r, typ, id)
	if err == nil {
		if v == 0 {
			res, err = g.cfg.Store.Get(c.UserContext(), typ, real)
		} else {
			res, err = g.cfg.Store.GetVersion(c.UserContext(), typ, real, v)
		}
	}
	if err == nil && res.PatientID != "" && res.PatientID != r.patient {
		err = store.ErrNotFound // another patient's resource: never say it exists
	}
	if err != nil {
		what := typ + "/" + real
		if real == "" {
			what = typ // a research reader's unknown pseudonym names nothing here
		}
		if errors.Is(err, store.ErrNotFound) {
			return g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "read", PatientID: r.patient, Resources: []string{what}, Outcome: store.Failed, Detail: "not found"},
				notFound("%s/%s is not here", typ, id))
		}
		return storeError(err)
	}
	etag := fmt.Sprintf(`W/"%d"`, res.Version)
	notModified := matchesETag(c.Get(fiber.HeaderIfNoneMatch), res.Version)
	entry := store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "read", PatientID: r.patient, Resources: []string{versionRef(res.Meta)}, Outcome: store.Allowed}
	if notModified {
		// The reader learns the version is unchanged: a read all the same.
		entry.Detail = "not modified"
	}
	if err := g.appendLog(c, entry); err != nil {
		return err
	}
	c.Set(fiber.HeaderETag, etag)
	if r.purpose != access.Research {
		// The exact time of the last change is a date finer than a year:
		// research readers get the version only.
		c.Set(fiber.HeaderLastModified, res.LastUpdated.UTC().Format(time.RFC1123))
	}
	if notModified {
		return c.SendStatus(fiber.StatusNotModified)
	}
	body, err := g.present(r, res.Raw)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(body)
}

// matchesETag reports whether an If-None-Match header names version v
// (weak or strong, or "*").
func matchesETag(h string, v int64) bool {
	if h == "" {
		return false
	}
	want := strconv.FormatInt(v, 10)
	for _, t := range strings.Split(h, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.Trim(strings.TrimPrefix(t, "W/"), `"`) == want {
			return true
		}
	}
	return false
}

// versionRef is how the log names a version served: Type/id/_history/v.
func versionRef(m store.Meta) string {
	return fmt.Sprintf("%s/%s/_history/%d", m.Type, m.ID, m.Version)
}

// history answers a resource's instance history: a history Bundle of its
// versions, newest first, _count at a time (_cursor: the version below
// which the page starts).
func (g *Gateway) history(c *fiber.Ctx) error {
	typ, id, err := readTarget(c)
	if err != nil {
		return err
	}
	req, err := g.params(c, fhirsearch.History, "")
	if err != nil {
		return err
	}
	var before int64
	if req.Cursor != "" {
		if before, err = strconv.ParseInt(req.Cursor, 10, 64); err != nil || before < 2 {
			return badRequest("_cursor is not a cursor of this history")
		}
	}
	r, err := g.begin(c, "history", typ)
	if err != nil {
		return err
	}
	count := store.DefaultCount
	if req.Count >= 0 {
		count = req.Count
	}
	real, err := g.realID(c, r, typ, id)
	var (
		cur      store.Resource
		versions []store.Resource
	)
	if err == nil {
		cur, err = g.cfg.Store.Get(c.UserContext(), typ, real)
	}
	if err == nil && cur.PatientID != "" && cur.PatientID != r.patient {
		err = store.ErrNotFound // another patient's resource: never say it exists
	}
	if err == nil && count > 0 {
		versions, err = g.cfg.Store.Versions(c.UserContext(), typ, real, before, count+1)
	}
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return g.logRefusal(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "history", PatientID: r.patient, Resources: []string{typ}, Outcome: store.Failed, Detail: "not found"},
				notFound("%s/%s is not here", typ, id))
		}
		return storeError(err)
	}
	total := int(cur.Version) // versions 1 … current, none ever removed
	next := ""
	if len(versions) > count {
		versions = versions[:count]
		next = strconv.FormatInt(versions[count-1].Version, 10)
	}
	refs := make([]string, len(versions))
	for i, v := range versions {
		refs[i] = versionRef(v.Meta)
	}
	if err := g.appendLog(c, store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "history", PatientID: r.patient, Resources: refs, Outcome: store.Allowed}); err != nil {
		return err
	}
	base := g.base(c)
	self := base + "/" + typ + "/" + id + "/_history"
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"resourceType":"Bundle","type":"history","total":%d,"link":[`, total)
	writeLink(&b, "self", self+query(req.Applied, "", ""))
	if next != "" {
		b.WriteByte(',')
		writeLink(&b, "next", self+query(req.Applied, "_cursor", next))
	}
	b.WriteString(`],"entry":[`)
	pseudonym := g.pseudonymOf(r)
	for i, v := range versions {
		if i > 0 {
			b.WriteByte(',')
		}
		body, err := g.present(r, v.Raw)
		if err != nil {
			return err
		}
		rel := v.Type + "/" + pseudonym(v.ID)
		method, status := "PUT", "200 OK"
		if v.Version == 1 {
			method, status = "POST", "201 Created"
		}
		response := map[string]string{"status": status, "etag": fmt.Sprintf(`W/"%d"`, v.Version)}
		if r.purpose != access.Research {
			response["lastModified"] = v.LastUpdated.UTC().Format(time.RFC3339Nano)
		}
		head, _ := json.Marshal(base + "/" + rel)
		req, _ := json.Marshal(map[string]string{"method": method, "url": rel})
		resp, _ := json.Marshal(response)
		fmt.Fprintf(&b, `{"fullUrl":%s,"resource":`, head)
		b.Write(body)
		fmt.Fprintf(&b, `,"request":%s,"response":%s}`, req, resp)
	}
	b.WriteString("]}")
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(b.Bytes())
}
