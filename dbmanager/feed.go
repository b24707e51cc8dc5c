package dbmanager

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/ingest"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// EHR feeds: the provider's systems write records in standard FHIR, with
// a backend client's token (backend.go): create (POST /fhir/Type, with
// If-None-Exist a conditional create), update (PUT /fhir/Type/id, or PUT
// /fhir/Type?identifier=… conditionally), and batch or transaction Bundles
// (POST /fhir). Package ingest validates and stores them (ingest.Feed);
// every write and every refusal is in the access log, under the client.

// feedClient admits a backend client's live token; refusals are logged.
func (g *Gateway) feedClient(c *fiber.Ctx) (*backendToken, error) {
	now := g.cfg.Now()
	refuse := func(kind store.ActorKind, id string, err error) (*backendToken, error) {
		return nil, g.logRefusal(c, store.LogEntry{ActorKind: kind, ActorID: id, Action: "feed", Outcome: store.Denied, Detail: err.Error()}, err)
	}
	tok, ok := bearer(c)
	if !ok {
		return refuse(store.ActorSystem, "", unauthorized("a feed writes with a backend client's bearer token (SMART Backend Services: client_credentials at /smart/token)"))
	}
	t, ok, expired := g.backend.token(tok, now)
	switch {
	case ok && expired:
		return refuse(store.ActorStaff, t.actor(), unauthorized("the access token expired: ask /smart/token for a new one"))
	case !ok:
		if a, ok, _ := g.appToken(tok, now); ok {
			return refuse(store.ActorApp, a.approval.app.ClientID, forbidden("a patient-approved app's token reads; it never writes"))
		}
		return refuse(store.ActorSystem, "", unauthorized("unknown or expired access token"))
	}
	return t, nil
}

// feedAllows checks that the token's scopes let it write each of the
// entries; a refusal is logged.
func (g *Gateway) feedAllows(c *fiber.Ctx, t *backendToken, entries []ingest.FeedEntry) error {
	for i, e := range entries {
		if t.granted.Allows(e.Method, e.Type) {
			continue
		}
		what := "create"
		if e.Method == "PUT" {
			what = "update"
		}
		at := ""
		if len(entries) > 1 {
			at = fmt.Sprintf("entry %d: ", i)
		}
		err := forbidden("%sthe token's scope %q does not %s %s", at, t.granted.Scope, what, e.Type)
		return g.logRefusal(c, store.LogEntry{ActorKind: store.ActorStaff, ActorID: t.actor(), Action: "feed", Outcome: store.Denied, Detail: err.Error()}, err)
	}
	return nil
}

// feedCreate answers POST /fhir/Type: a create, conditional with
// If-None-Exist.
func (g *Gateway) feedCreate(c *fiber.Ctx) error {
	return g.feedOne(c, "POST", c.Params("type"), c.Get("If-None-Exist"))
}

// feedUpdate answers PUT /fhir/Type/id, and PUT /fhir/Type?identifier=…
// (a conditional update).
func (g *Gateway) feedUpdate(c *fiber.Ctx) error {
	url := c.Params("type")
	if id := c.Params("id"); id != "" {
		url += "/" + id
	} else if q := string(c.Request().URI().QueryString()); q != "" {
		url += "?" + q
	}
	return g.feedOne(c, "PUT", url, "")
}

// feedOne writes one resource.
func (g *Gateway) feedOne(c *fiber.Ctx, method, url, ifNoneExist string) error {
	t, err := g.feedClient(c)
	if err != nil {
		return err
	}
	e, err := ingest.FeedRequest(method, url, ifNoneExist)
	if err != nil {
		return g.feedRefusal(c, t, "", badRequest("%v", err))
	}
	e.Raw = c.Body()
	if err := g.feedAllows(c, t, []ingest.FeedEntry{e}); err != nil {
		return err
	}
	results, patient, err := g.feed(c, t, []ingest.FeedEntry{e}, method+" "+url)
	if err != nil {
		return g.feedRefusal(c, t, patient, err)
	}
	return g.answerWrite(c, results[0], e.Raw)
}

// feedBundle answers POST /fhir: a transaction Bundle (all of it, or
// nothing) or a batch Bundle (each entry on its own; a batch-response with
// each entry's status).
func (g *Gateway) feedBundle(c *fiber.Ctx) error {
	t, err := g.feedClient(c)
	if err != nil {
		return err
	}
	typ, entries, err := ingest.ParseFeedBundle(c.Body())
	if err != nil {
		return g.feedRefusal(c, t, "", badRequest("%v", err))
	}
	if err := g.feedAllows(c, t, entries); err != nil {
		return err
	}
	out := bundleResponse{ResourceType: "Bundle", Type: typ + "-response", Entry: make([]responseEntry, len(entries))}
	if typ == "transaction" {
		results, patient, err := g.feed(c, t, entries, fmt.Sprintf("transaction of %d entries", len(entries)))
		if err != nil {
			return g.feedRefusal(c, t, patient, err)
		}
		for i, r := range results {
			out.Entry[i] = responseEntry{Response: g.entryResponse(c, r)}
		}
		return c.JSON(out, "application/fhir+json")
	}
	for i, e := range entries {
		results, patient, err := g.feed(c, t, []ingest.FeedEntry{e}, fmt.Sprintf("batch entry %d", i))
		if err != nil {
			ae, ferr := g.feedFailure(c, t, patient, err)
			if ferr != nil {
				return ferr
			}
			out.Entry[i] = responseEntry{Response: entryStatus{Status: fmt.Sprintf("%d %s", ae.status, http.StatusText(ae.status)),
				Outcome: &operationOutcome{ResourceType: "OperationOutcome", Issue: []outcomeIssue{{Severity: "error", Code: ae.code, Diagnostics: ae.msg}}}}}
			continue
		}
		out.Entry[i] = responseEntry{Response: g.entryResponse(c, results[0])}
	}
	return c.JSON(out, "application/fhir+json")
}

// feed stores entries as one transaction, logged under the client.
func (g *Gateway) feed(c *fiber.Ctx, t *backendToken, entries []ingest.FeedEntry, detail string) ([]ingest.FeedResult, string, error) {
	by := ingest.Actor{Kind: store.ActorStaff, ID: t.actor()}
	results, patient, err := g.ingest.Feed(c.UserContext(), entries, by, store.LogEntry{Action: "feed", Outcome: store.Allowed, Detail: detail})
	if err != nil {
		return nil, patient, err
	}
	if matched := matchedOnly(results); matched != nil {
		// Nothing was written, but the client learnt what is there.
		if err := g.appendLog(c, store.LogEntry{ActorKind: by.Kind, ActorID: by.ID, Action: "feed", PatientID: patient, Resources: matched,
			Outcome: store.Allowed, Detail: detail + ": matched, nothing written"}); err != nil {
			return nil, patient, err
		}
	}
	return results, patient, nil
}

// matchedOnly returns the versions a feed's conditional creates matched
// when they are all it did (nil otherwise: its log entry says the rest).
func matchedOnly(results []ingest.FeedResult) []string {
	var out []string
	for _, r := range results {
		if !r.Matched {
			return nil
		}
		out = append(out, versionRef(r.Meta))
	}
	return out
}

// feedFailure logs a refused feed write and returns its answer; the
// second result is a fault (the log could not be written, or the store's
// own failure, which is answered as such, not as the client's).
func (g *Gateway) feedFailure(c *fiber.Ctx, t *backendToken, patient string, err error) (*apiError, error) {
	var ae *apiError
	if !errors.As(storeError(err), &ae) {
		return nil, err
	}
	entry := store.LogEntry{ActorKind: store.ActorSystem, Action: "feed", PatientID: patient, Outcome: store.Denied, Detail: ae.msg}
	if t != nil {
		entry.ActorKind, entry.ActorID = store.ActorStaff, t.actor()
	}
	if patient != "" && store.ValidID(patient) == nil {
		if _, perr := g.cfg.Store.Patient(c.UserContext(), patient); perr != nil {
			entry.PatientID = "" // not a patient of this provider: no patient's log
		}
	}
	if err := g.appendLog(c, entry); err != nil {
		return nil, err
	}
	return ae, nil
}

// feedRefusal logs a refused feed write and answers it.
func (g *Gateway) feedRefusal(c *fiber.Ctx, t *backendToken, patient string, err error) error {
	ae, ferr := g.feedFailure(c, t, patient, err)
	if ferr != nil {
		return ferr
	}
	return ae
}

// answerWrite answers a create or update: 201 with Location for what was
// created, 200 for an update or a conditional create's match (with its
// Location); ETag and Last-Modified; the resource as sent unless Prefer:
// return=minimal. A match's body is empty: a backend token reads nothing,
// not even through a conditional create.
func (g *Gateway) answerWrite(c *fiber.Ctx, r ingest.FeedResult, raw []byte) error {
	status := fiber.StatusOK
	if r.Effect == store.EffectCreated || r.Matched {
		c.Set(fiber.HeaderLocation, g.base(c)+"/"+versionRef(r.Meta))
	}
	if r.Effect == store.EffectCreated {
		status = fiber.StatusCreated
	}
	c.Set(fiber.HeaderETag, fmt.Sprintf(`W/"%d"`, r.Version))
	c.Set(fiber.HeaderLastModified, r.LastUpdated.UTC().Format(http.TimeFormat))
	c.Status(status)
	if r.Matched || strings.Contains(c.Get("Prefer"), "return=minimal") {
		return nil
	}
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Send(append([]byte(nil), raw...)) // not the request's buffer
}

// bundleResponse is a batch-response or transaction-response Bundle.
type bundleResponse struct {
	ResourceType string          `json:"resourceType"`
	Type         string          `json:"type"`
	Entry        []responseEntry `json:"entry"`
}

type responseEntry struct {
	Response entryStatus `json:"response"`
}

type entryStatus struct {
	Status       string            `json:"status"`
	Location     string            `json:"location,omitempty"`
	ETag         string            `json:"etag,omitempty"`
	LastModified string            `json:"lastModified,omitempty"`
	Outcome      *operationOutcome `json:"outcome,omitempty"`
}

// entryResponse is one written entry's response in a Bundle.
func (g *Gateway) entryResponse(c *fiber.Ctx, r ingest.FeedResult) entryStatus {
	s := entryStatus{Status: "200 OK", ETag: fmt.Sprintf(`W/"%d"`, r.Version), LastModified: r.LastUpdated.UTC().Format(time.RFC3339Nano),
		Location: g.base(c) + "/" + versionRef(r.Meta)}
	if r.Effect == store.EffectCreated {
		s.Status = "201 Created"
	}
	return s
}
