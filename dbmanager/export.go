package dbmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Bulk export (FHIR Bulk Data Access IG, patient level): a reader kicks off
// GET /fhir/Patient/$export with Prefer: respond-async and gets 202 with a
// status URL; the status answers 202 while the export runs and then the
// manifest; the manifest's files are NDJSON, one per resource type; DELETE
// on the status URL cancels or deletes. It exports what $everything would
// serve the same reader — its own patient's resources of the types the
// grant covers, de-identified for research readers — and is logged the
// same way: one "export" entry naming every resource version, written
// before the status shows a single file. Status and files are read by the
// reader that kicked the export off only (the same signed identity and
// relationship, or session grant), each request authorized again: a grant
// revoked since ends the downloads too.
//
// Jobs and their files are kept in the records database (exportjobs.go)
// for exportTTL after they finish, across restarts. Each reader has one
// export at a time.

// exportOwner is who may read a job: the reader's kind, identity and
// relationship.
func exportOwner(r *reader) string {
	return fmt.Sprintf("%d/%s/%s", r.kind, r.id, r.tag.Text(16))
}

// exportKickOff answers GET /fhir/Patient/$export.
func (g *Gateway) exportKickOff(c *fiber.Ctx) error {
	if !strings.Contains(c.Get("Prefer"), "respond-async") {
		return badRequest("a bulk export is asynchronous: send Prefer: respond-async")
	}
	types, since, err := exportParams(c)
	if err != nil {
		return err
	}
	r, err := g.begin(c, "export", "")
	if err != nil {
		return err
	}
	if !since.IsZero() && r.purpose == access.Research {
		return g.refuse(c, r, "export", "", researchLimit("_since is an instant: research readers see dates to the year only"))
	}
	if types == nil {
		types = access.ResourceTypes()
	}
	types = slices.DeleteFunc(slices.Clone(types), func(t string) bool { return !r.scope.Allows(t) })
	// The reader outlives the request: its strings are copied.
	rr := *r
	rr.id, rr.patient = strings.Clone(r.id), strings.Clone(r.patient)
	id, err := g.startExport(c, exportOwner(r), func(ctx context.Context) ([]store.ExportPart, error) {
		return g.export(ctx, &rr, types, since)
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentLocation, g.base(c)+"/_export/"+id)
	return c.SendStatus(fiber.StatusAccepted)
}

// exportParams reads a kick-off's parameters: the types asked for (nil:
// every type) and since (zero: all). Its strings are copies: fiber's die
// with the request.
func exportParams(c *fiber.Ctx) (types []string, since time.Time, err error) {
	for k, v := range c.Queries() {
		switch k {
		case "_outputFormat":
			if v != "application/fhir+ndjson" && v != "application/ndjson" && v != "ndjson" {
				return nil, since, badRequest("_outputFormat %q: only application/fhir+ndjson", v)
			}
		case "_type":
			for _, t := range strings.Split(v, ",") {
				if _, err := access.NewScope(t); err != nil {
					return nil, since, badRequest("_type %q: not a type of patients' records here", t)
				}
				types = append(types, strings.Clone(t))
			}
		case "_since":
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return nil, since, badRequest("_since %q: an instant (RFC 3339)", v)
			}
			since = t
		default:
			return nil, since, badRequest("$export takes _outputFormat, _type and _since, not %q", k)
		}
	}
	return types, since, nil
}

// export reads the reader's patient's resources of types, changed since
// (zero: all), logs them in one entry, and returns them as NDJSON parts,
// one a type.
func (g *Gateway) export(ctx context.Context, r *reader, types []string, since time.Time) ([]store.ExportPart, error) {
	parts, refs, err := g.exportRead(ctx, r, types, since)
	if err != nil {
		return nil, err
	}
	// Logged before the status shows any file. The entry goes through the
	// same store as every read's (no nonce: the kick-off recorded it).
	if _, err := g.cfg.Store.AppendLog(ctx, exportEntry(r, refs)); err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	return parts, nil
}

// exportEntry is an export's access-log entry in r's patient's log, naming
// every resource version exported (refs).
func exportEntry(r *reader, refs []string) store.LogEntry {
	return store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "export", PatientID: r.patient, Resources: refs, Outcome: store.Allowed}
}

// exportRead reads what export exports, as r sees it, without logging it:
// the NDJSON parts by type, and the version of every resource read (for the log entry that must precede
// serving them).
func (g *Gateway) exportRead(ctx context.Context, r *reader, types []string, since time.Time) ([]store.ExportPart, []string, error) {
	files, counts := map[string][]byte{}, map[string]int{}
	var refs []string
	q := store.EverythingQuery{Types: types, Since: since, PageRequest: store.PageRequest{Count: store.MaxCount}}
	for {
		page, err := g.cfg.Store.Everything(ctx, r.patient, q)
		if err != nil {
			return nil, nil, err
		}
		for _, res := range page.Resources {
			body, err := g.present(r, res.Raw)
			if err != nil {
				return nil, nil, err
			}
			var line bytes.Buffer
			if err := json.Compact(&line, body); err != nil {
				return nil, nil, fmt.Errorf("%s/%s: %w", res.Type, res.ID, err)
			}
			line.WriteByte('\n')
			files[res.Type] = append(files[res.Type], line.Bytes()...)
			counts[res.Type]++
			refs = append(refs, versionRef(res.Meta))
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	parts := make([]store.ExportPart, 0, len(files))
	for _, t := range slices.Sorted(maps.Keys(files)) {
		parts = append(parts, store.ExportPart{Type: t, Count: counts[t], NDJSON: files[t]})
	}
	return parts, refs, nil
}

// exportStatus answers GET /fhir/_export/:job: 202 while it runs, then the
// manifest (or the failure as an OperationOutcome).
func (g *Gateway) exportStatus(c *fiber.Ctx) error {
	j, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	return g.answerExportStatus(c, j, func() []exportOutput {
		var out []exportOutput
		for _, p := range j.Parts {
			out = append(out, exportOutput{Type: p.Type, URL: g.base(c) + "/_export/" + j.ID + "/" + p.Type + ".ndjson", Count: p.Count})
		}
		return out
	})
}

// exportFile answers GET /fhir/_export/:job/:file — Type.ndjson.
func (g *Gateway) exportFile(c *fiber.Ctx) error {
	j, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	body, err := g.exportFileBody(c.UserContext(), j, c.Params("file"), nil)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, "application/fhir+ndjson")
	return c.Send(body)
}

// exportDelete answers DELETE /fhir/_export/:job: the job is cancelled if it
// runs, and forgotten with its files.
func (g *Gateway) exportDelete(c *fiber.Ctx) error {
	j, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	return g.deleteExport(c, j.ID)
}

// deleteExport cancels job id if this process runs it (another process's
// run ends at its next beat) and forgets it with its files.
func (g *Gateway) deleteExport(c *fiber.Ctx, id string) error {
	g.exports.stop(id)
	if err := g.cfg.Store.DeleteExportJob(c.UserContext(), id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.SendStatus(fiber.StatusAccepted)
}

// exportJobOf authorizes the request as a reader and returns the job it
// names if that reader kicked it off (404 otherwise: another reader's job
// is not said to exist).
func (g *Gateway) exportJobOf(c *fiber.Ctx) (store.ExportJob, error) {
	r, err := g.begin(c, "export", "")
	if err != nil {
		return store.ExportJob{}, err
	}
	return g.exportJobFor(c.UserContext(), c.Params("job"), exportOwner(r))
}
