package dbmanager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
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
// Jobs and their files live in the gateway's memory for exportTTL after
// they finish (not across a restart: the client kicks off again; nothing
// accepted is lost, an export is a read). Each reader has one export at a
// time.

const (
	exportTTL     = time.Hour
	exportMaxJobs = 64
)

type exportJob struct {
	id      string
	owner   string // the reader that kicked it off (exportOwner)
	request string
	started time.Time

	mu       sync.Mutex
	done     bool
	finished time.Time
	err      error
	files    map[string][]byte // type → NDJSON
	counts   map[string]int
	group    []memberExport // a group export's parts, by member (group.go); nil for a patient's
	cancel   context.CancelFunc
}

type exportJobs struct {
	mu   sync.Mutex
	jobs map[string]*exportJob
}

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

	id, err := randomHex(16)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(c.UserContext()))
	job := &exportJob{id: id, owner: exportOwner(r), request: g.publicBase(c) + c.OriginalURL(), started: g.cfg.Now(), cancel: cancel}
	if err := g.exports.add(job, g.cfg.Now()); err != nil {
		cancel()
		return err
	}
	// The reader outlives the request: its strings are copied.
	rr := *r
	rr.id, rr.patient = strings.Clone(r.id), strings.Clone(r.patient)
	go func() {
		defer cancel()
		files, counts, err := g.export(ctx, &rr, types, since)
		job.mu.Lock()
		defer job.mu.Unlock()
		job.done, job.finished, job.files, job.counts, job.err = true, g.cfg.Now(), files, counts, err
		if err != nil {
			g.log.Error("bulk export failed", "job", id, "err", err)
		}
	}()
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
// (zero: all), logs them in one entry, and returns them as NDJSON by type.
func (g *Gateway) export(ctx context.Context, r *reader, types []string, since time.Time) (map[string][]byte, map[string]int, error) {
	files, counts, refs, err := g.exportRead(ctx, r, types, since)
	if err != nil {
		return nil, nil, err
	}
	// Logged before the status shows any file. The entry goes through the
	// same store as every read's (no nonce: the kick-off recorded it).
	if _, err := g.cfg.Store.AppendLog(ctx, exportEntry(r, refs)); err != nil {
		return nil, nil, fmt.Errorf("access log: %w", err)
	}
	return files, counts, nil
}

// exportEntry is an export's access-log entry in r's patient's log, naming
// every resource version exported (refs).
func exportEntry(r *reader, refs []string) store.LogEntry {
	return store.LogEntry{ActorKind: r.kind, ActorID: r.id, Purpose: r.purpose, Action: "export", PatientID: r.patient, Resources: refs, Outcome: store.Allowed}
}

// exportRead reads what export exports, as r sees it, without logging it:
// the NDJSON files by type, their line counts, and the version of every
// resource read (for the log entry that must precede serving them).
func (g *Gateway) exportRead(ctx context.Context, r *reader, types []string, since time.Time) (map[string][]byte, map[string]int, []string, error) {
	files, counts := map[string][]byte{}, map[string]int{}
	var refs []string
	q := store.EverythingQuery{Types: types, Since: since, PageRequest: store.PageRequest{Count: store.MaxCount}}
	for {
		page, err := g.cfg.Store.Everything(ctx, r.patient, q)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, res := range page.Resources {
			body, err := g.present(r, res.Raw)
			if err != nil {
				return nil, nil, nil, err
			}
			var line bytes.Buffer
			if err := json.Compact(&line, body); err != nil {
				return nil, nil, nil, fmt.Errorf("%s/%s: %w", res.Type, res.ID, err)
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
	return files, counts, refs, nil
}

// exportStatus answers GET /fhir/_export/:job: 202 while it runs, then the
// manifest (or the error as an OperationOutcome).
func (g *Gateway) exportStatus(c *fiber.Ctx) error {
	job, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	if !job.done {
		c.Set("X-Progress", "in progress")
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.SendStatus(fiber.StatusAccepted)
	}
	if job.err != nil {
		return storeError(job.err)
	}
	type output struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	}
	out := []output{}
	for _, t := range slices.Sorted(maps.Keys(job.files)) {
		out = append(out, output{Type: t, URL: g.base(c) + "/_export/" + job.id + "/" + t + ".ndjson", Count: job.counts[t]})
	}
	return c.JSON(fiber.Map{
		"transactionTime":     job.started.UTC().Format(time.RFC3339Nano),
		"request":             job.request,
		"requiresAccessToken": true,
		"output":              out,
		"error":               []any{},
	})
}

// exportFile answers GET /fhir/_export/:job/:file — Type.ndjson.
func (g *Gateway) exportFile(c *fiber.Ctx) error {
	job, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	typ, ok := strings.CutSuffix(c.Params("file"), ".ndjson")
	job.mu.Lock()
	defer job.mu.Unlock()
	body, have := job.files[typ]
	if !ok || !job.done || !have {
		return notFound("no file %s in this export", c.Params("file"))
	}
	c.Set(fiber.HeaderContentType, "application/fhir+ndjson")
	return c.Send(body)
}

// exportDelete answers DELETE /fhir/_export/:job: the job is cancelled if it
// runs, and forgotten.
func (g *Gateway) exportDelete(c *fiber.Ctx) error {
	job, err := g.exportJobOf(c)
	if err != nil {
		return err
	}
	job.cancel()
	g.exports.remove(job.id)
	return c.SendStatus(fiber.StatusAccepted)
}

// exportJobOf authorizes the request as a reader and returns the job it
// names if that reader kicked it off (404 otherwise: another reader's job
// is not said to exist).
func (g *Gateway) exportJobOf(c *fiber.Ctx) (*exportJob, error) {
	r, err := g.begin(c, "export", "")
	if err != nil {
		return nil, err
	}
	job := g.exports.get(c.Params("job"), g.cfg.Now())
	if job == nil || job.owner != exportOwner(r) {
		return nil, notFound("no export %s here", c.Params("job"))
	}
	return job, nil
}

func (e *exportJobs) add(job *exportJob, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.jobs == nil {
		e.jobs = map[string]*exportJob{}
	}
	e.expire(now)
	for _, j := range e.jobs {
		j.mu.Lock()
		running := !j.done
		j.mu.Unlock()
		if running && j.owner == job.owner {
			return errf(fiber.StatusTooManyRequests, "throttled", "an export of yours is still running: wait for it, or DELETE it")
		}
	}
	if len(e.jobs) >= exportMaxJobs {
		return errf(fiber.StatusTooManyRequests, "throttled", "too many exports at this gateway; try again later")
	}
	e.jobs[job.id] = job
	return nil
}

func (e *exportJobs) get(id string, now time.Time) *exportJob {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.expire(now)
	return e.jobs[id]
}

func (e *exportJobs) remove(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.jobs, id)
}

// expire forgets jobs finished more than exportTTL ago; e.mu held.
func (e *exportJobs) expire(now time.Time) {
	for id, j := range e.jobs {
		j.mu.Lock()
		old := j.done && now.Sub(j.finished) > exportTTL
		j.mu.Unlock()
		if old {
			delete(e.jobs, id)
		}
	}
}
