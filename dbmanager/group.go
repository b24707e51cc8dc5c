package dbmanager

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
)

// Group-level bulk export (FHIR Bulk Data Access IG) for a research
// grantee: an address that many patients of this provider granted research
// access reads them in one export instead of patient by patient.
//
// The group is Group/research, resolved per signer: every relationship at
// this provider whose patient granted the signer's address a research grant
// in force now (researchMembers). It is never stored, and no other group
// id exists (404). GET /fhir/Group/research answers it as a Group resource
// that lists its members by the reader's pseudonyms of the patients (type
// person, actual, quantity); each member's log gets a "read" entry naming
// Group/research before it is answered.
//
// Requests are signed by the researcher's address without a tag
// (gatewayauth: a tag-less request speaks for the address alone). Only the
// routes under /fhir/Group take tag-less requests, and they take no tagged
// one (400, logged); every other reader's route refuses a tag-less one
// (authorize). Signature, audience, expiry and nonce are checked exactly as
// for any signed request, and the nonce is recorded the same way.
//
// An export exports, for each member, what that member's patient-level
// research export would: the patient's resources of the types asked for
// (_type) that its grant covers, de-identified, with this reader's
// pseudonyms (the same as in its per-patient reads, being keyed by the
// address). One NDJSON file per type across members. _since is refused, as
// it is for every research reader: it is an instant of the provider's
// writes. Every member's log gets one "export" entry naming every version
// exported before the status lists any file, all in one commit; if they
// cannot be written, the job fails (its status is the database's error)
// and nothing is served. An empty group exports nothing: the
// manifest has no output.
//
// Status and files are read by the signer that kicked the export off, and
// each request is authorized again: a member whose grant was revoked since,
// has expired, or no longer covers a type, has its lines left out of the
// manifest's counts and of the files from then on.

// researchGroup is the one group id: the signer's research group.
const researchGroup = "research"

// groupReader is an address reading as a research grantee across the
// relationships of its research group.
type groupReader struct {
	id      string    // the signer's address, as its per-relationship reads name it
	members []*reader // one research reader per member relationship, by tag
}

// member returns the group's reader of relationship tag, nil if it is not
// (or no longer) a member.
func (gr *groupReader) member(tag *big.Int) *reader {
	for _, m := range gr.members {
		if m.tag.Cmp(tag) == 0 {
			return m
		}
	}
	return nil
}

// groupOwner is who may read a group export: the signer's address. It
// never equals a patient-level export's owner (exportOwner).
func groupOwner(id string) string { return "group/" + id }

// authorizeGroup identifies the signer of a tag-less request and its
// research group. Every refusal is logged by the caller.
func (g *Gateway) authorizeGroup(c *fiber.Ctx) (*groupReader, *denial) {
	if _, ok := bearer(c); ok {
		return nil, &denial{err: unauthorized("a group export takes a request signed by the research grantee's address, without a tag; not a bearer token")}
	}
	now := g.cfg.Now()
	signed, err := g.sigs.Check(http.Header(c.GetReqHeaders()), c.Method(), string(c.Request().URI().PathOriginal()),
		string(c.Request().URI().QueryString()), c.Body(), now)
	if err != nil {
		return nil, &denial{err: unauthorized("%v", err)}
	}
	c.Locals(pendingNonceKey, &pendingNonce{signed: signed})
	id := signed.Signer.Hex()
	if signed.Tag != nil {
		return nil, &denial{err: badRequest("a group route takes a request signed without the %s header: the group is every research grant to the signer at this provider", gatewayauth.HeaderTag), kind: store.ActorGrantee, id: id}
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return nil, &denial{err: err, kind: store.ActorGrantee, id: id}
	}
	members, err := g.researchMembers(c, signed.Signer, now)
	if err != nil {
		return nil, &denial{err: err, kind: store.ActorGrantee, id: id}
	}
	return &groupReader{id: id, members: members}, nil
}

// researchMembers returns a research reader of each relationship at this
// provider whose patient granted signer a research grant usable now and
// which this provider has mapped to a patient, ordered by tag.
func (g *Gateway) researchMembers(c *fiber.Ctx, signer common.Address, now time.Time) ([]*reader, error) {
	var out []*reader
	for _, gr := range g.cfg.View.GrantsTo(access.AddressGrantee, contracts.AddressGrantee(signer)) {
		if gr.Purpose != access.Research || grantUsable(gr, true, now) != nil {
			continue
		}
		rel, ok := g.cfg.View.Relationship(gr.Tag)
		if !ok || rel.Provider != g.cfg.Provider {
			continue
		}
		patient, err := g.patientOf(c, gr.Tag)
		var unmapped *apiError
		if errors.As(err, &unmapped) && unmapped.status == fiber.StatusNotFound {
			continue // not claimed here: no records to export
		}
		if err != nil {
			return nil, err
		}
		out = append(out, &reader{kind: store.ActorGrantee, id: signer.Hex(), tag: new(big.Int).Set(gr.Tag), patient: patient,
			scope: gr.Scope, purpose: access.Research})
	}
	return out, nil
}

// beginGroup authorizes a request on a group route as action, checks the
// group id, and applies the per-reader rate limit; refusals are logged
// (under no patient: a refused request names no member).
func (g *Gateway) beginGroup(c *fiber.Ctx, action string) (*groupReader, error) {
	gr, d := g.authorizeGroup(c)
	if d != nil {
		return nil, g.logRefusal(c, store.LogEntry{ActorKind: orSystem(d.kind), ActorID: d.id, Action: action, Resources: []string{"Group"}, Outcome: store.Denied, Detail: d.err.Error()}, d.err)
	}
	if id := c.Params("id"); id != researchGroup {
		return nil, g.refuseGroup(c, gr, action, notFound("no Group %q here: a research grantee's group is Group/%s", id, researchGroup))
	}
	if !g.limits.allow(store.ActorGrantee, gr.id) {
		return nil, errf(fiber.StatusTooManyRequests, "throttled", "too many requests from this reader; slow down")
	}
	return gr, nil
}

// refuseGroup logs a refusal of the group reader gr and returns it.
func (g *Gateway) refuseGroup(c *fiber.Ctx, gr *groupReader, action string, err error) error {
	return g.logRefusal(c, store.LogEntry{ActorKind: store.ActorGrantee, ActorID: gr.id, Purpose: access.Research, Action: action,
		Resources: []string{"Group/" + researchGroup}, Outcome: store.Denied, Detail: err.Error()}, err)
}

// groupRead answers GET /fhir/Group/:id: the signer's research group as a
// Group resource, its members by the reader's pseudonyms of the patients.
func (g *Gateway) groupRead(c *fiber.Ctx) error {
	gr, err := g.beginGroup(c, "read")
	if err != nil {
		return err
	}
	if len(c.Queries()) > 0 {
		return g.refuseGroup(c, gr, "read", badRequest("a read of Group/%s takes no parameter", researchGroup))
	}
	pseudonym := g.pseudonyms(&reader{id: gr.id, purpose: access.Research})
	members := []fiber.Map{}
	for _, m := range gr.members {
		// Each member's log names the read before the answer leaves.
		if err := g.appendLog(c, store.LogEntry{ActorKind: store.ActorGrantee, ActorID: gr.id, Purpose: access.Research, Action: "read",
			PatientID: m.patient, Resources: []string{"Group/" + researchGroup}, Outcome: store.Allowed}); err != nil {
			return err
		}
		members = append(members, fiber.Map{"entity": fiber.Map{"reference": "Patient/" + pseudonym(m.patient)}})
	}
	res := fiber.Map{"resourceType": "Group", "id": researchGroup, "type": "person", "actual": true, "quantity": len(members)}
	if len(members) > 0 {
		res["member"] = members // FHIR: no empty arrays
	}
	return c.JSON(res, "application/fhir+json")
}

// groupExportKickOff answers GET /fhir/Group/:id/$export.
func (g *Gateway) groupExportKickOff(c *fiber.Ctx) error {
	gr, err := g.beginGroup(c, "export")
	if err != nil {
		return err
	}
	if !strings.Contains(c.Get("Prefer"), "respond-async") {
		return g.refuseGroup(c, gr, "export", badRequest("a bulk export is asynchronous: send Prefer: respond-async"))
	}
	types, since, err := exportParams(c)
	if err != nil {
		return g.refuseGroup(c, gr, "export", err)
	}
	if !since.IsZero() {
		return g.refuseGroup(c, gr, "export", researchLimit("_since is an instant: research readers see dates to the year only"))
	}
	if types == nil {
		types = access.ResourceTypes()
	}
	// The members' strings are the gateway's own (the signer's address, the
	// store's patient ids), not fiber's.
	members := gr.members
	id, err := g.startExport(c, groupOwner(gr.id), func(ctx context.Context) ([]store.ExportPart, error) {
		return g.groupExport(ctx, members, types)
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentLocation, g.base(c)+"/Group/"+researchGroup+"/_export/"+id)
	return c.SendStatus(fiber.StatusAccepted)
}

// groupExport reads each member's resources of types its grant covers, as
// its research reader sees them, then logs one export entry in each
// member's log, all in one commit. Nothing is returned unless every entry
// was written.
func (g *Gateway) groupExport(ctx context.Context, members []*reader, types []string) ([]store.ExportPart, error) {
	var (
		parts   []store.ExportPart
		entries []store.LogEntry
	)
	for _, r := range members {
		ts := slices.DeleteFunc(slices.Clone(types), func(t string) bool { return !r.scope.Allows(t) })
		if len(ts) == 0 {
			continue // its grant covers none of the types asked for: nothing read
		}
		ps, rs, err := g.exportRead(ctx, r, ts, time.Time{})
		if err != nil {
			return nil, err
		}
		var member store.Tag
		r.tag.FillBytes(member[:])
		for _, p := range ps {
			p.Member = member
			parts = append(parts, p)
		}
		entries = append(entries, exportEntry(r, rs))
	}
	if len(entries) == 0 {
		return parts, nil
	}
	// Every member's entry in one commit: each member's log names the
	// export, or none does and the job fails.
	if _, err := g.cfg.Store.AppendLog(ctx, entries...); err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return parts, nil
}

// groupJobOf authorizes a request on a group export's status or files and
// returns the reader and the job, if that signer kicked it off (404,
// logged, otherwise: another signer's job is not said to exist).
func (g *Gateway) groupJobOf(c *fiber.Ctx) (*groupReader, store.ExportJob, error) {
	gr, err := g.beginGroup(c, "export")
	if err != nil {
		return nil, store.ExportJob{}, err
	}
	j, err := g.exportJobFor(c.UserContext(), c.Params("job"), groupOwner(gr.id))
	if err != nil {
		return nil, store.ExportJob{}, g.refuseGroup(c, gr, "export", err)
	}
	return gr, j, nil
}

// servable reports whether gr may read typ of member now: a group export's
// files serve only the members still in force, for the types their grants
// still cover.
func (gr *groupReader) servable(member *big.Int, typ string) bool {
	m := gr.member(member)
	return m != nil && m.scope.Allows(typ)
}

// groupExportStatus answers GET /fhir/Group/:id/_export/:job.
func (g *Gateway) groupExportStatus(c *fiber.Ctx) error {
	gr, j, err := g.groupJobOf(c)
	if err != nil {
		return err
	}
	return g.answerExportStatus(c, j, func() []exportOutput {
		var out []exportOutput
		for _, t := range exportTypes(j) {
			n := 0
			for _, p := range j.Parts {
				if p.Type == t && gr.servable(new(big.Int).SetBytes(p.Member[:]), t) {
					n += p.Count
				}
			}
			if n > 0 {
				out = append(out, exportOutput{Type: t, URL: g.base(c) + "/Group/" + researchGroup + "/_export/" + j.ID + "/" + t + ".ndjson", Count: n})
			}
		}
		return out
	})
}

// groupExportFile answers GET /fhir/Group/:id/_export/:job/:file —
// Type.ndjson, the lines of the members still in force.
func (g *Gateway) groupExportFile(c *fiber.Ctx) error {
	gr, j, err := g.groupJobOf(c)
	if err != nil {
		return err
	}
	body, err := g.exportFileBody(c.UserContext(), j, c.Params("file"), gr.servable)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/fhir+ndjson")
	return c.Send(body)
}

// groupExportDelete answers DELETE /fhir/Group/:id/_export/:job.
func (g *Gateway) groupExportDelete(c *fiber.Ctx) error {
	_, j, err := g.groupJobOf(c)
	if err != nil {
		return err
	}
	return g.deleteExport(c, j.ID)
}

// groupOther answers every other request under /fhir/Group: authorized
// and logged as any group request, then refused (405 for a method a group
// route does not take, 404 otherwise).
func (g *Gateway) groupOther(c *fiber.Ctx) error {
	gr, err := g.beginGroup(c, strings.ToLower(c.Method()))
	if err != nil {
		return err
	}
	if m := c.Method(); m != fiber.MethodGet && m != fiber.MethodDelete {
		return g.refuseGroup(c, gr, strings.ToLower(m), errf(fiber.StatusMethodNotAllowed, "not-supported", "%s is not served under /fhir/Group: GET Group/%s, GET Group/%s/$export, then GET or DELETE its status URL", m, researchGroup, researchGroup))
	}
	return g.refuseGroup(c, gr, "read", notFound("no route %s %s", c.Method(), c.Path()))
}
