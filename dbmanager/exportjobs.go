package dbmanager

import (
	"context"
	"encoding/json"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Bulk-export jobs, a patient's (export.go) and a research group's
// (group.go), one way: the kick-off stores the job (store.ExportJobs) and
// runs it in the background; the process running it beats it every
// exportBeat; its end — the files, or the failure as the status will
// answer it — is stored in one transaction; the status, the files and
// DELETE read the store. So an accepted export is never lost: any gateway
// process on the database answers for it, before and after a restart, for
// exportTTL after it finished. A job whose beats stopped for exportGone
// ran in a process that is gone: its status says so, and the client kicks
// it off again. Each reader (or group) runs one export at a time.

const (
	exportTTL     = time.Hour
	exportMaxJobs = 64
	exportBeat    = 10 * time.Second
	exportGone    = 3 * exportBeat
)

// exportRuns holds the cancel functions of the jobs this process runs.
type exportRuns struct {
	mu     sync.Mutex
	cancel map[string]context.CancelFunc
}

func (e *exportRuns) add(id string, cancel context.CancelFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel == nil {
		e.cancel = map[string]context.CancelFunc{}
	}
	e.cancel[id] = cancel
}

// stop cancels job id if this process runs it, and forgets it.
func (e *exportRuns) stop(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if cancel, ok := e.cancel[id]; ok {
		cancel()
		delete(e.cancel, id)
	}
}

// startExport stores a new job of owner and runs work for it in the
// background; it returns the job's id. 429 while owner has a job running,
// or the gateway holds exportMaxJobs.
func (g *Gateway) startExport(c *fiber.Ctx, owner string, work func(ctx context.Context) ([]store.ExportPart, error)) (string, error) {
	ctx, now := c.UserContext(), g.cfg.Now()
	if _, err := g.cfg.Store.PruneExportJobs(ctx, now.Add(-exportTTL)); err != nil {
		return "", err
	}
	jobs, err := g.cfg.Store.ExportJobs(ctx)
	if err != nil {
		return "", err
	}
	for _, j := range jobs {
		if j.Owner == owner && j.Finished.IsZero() && now.Sub(j.Beat) <= exportGone {
			return "", errf(fiber.StatusTooManyRequests, "throttled", "an export of yours is still running: wait for it, or DELETE it")
		}
	}
	if len(jobs) >= exportMaxJobs {
		return "", errf(fiber.StatusTooManyRequests, "throttled", "too many exports at this gateway; try again later")
	}
	id, err := randomHex(16)
	if err != nil {
		return "", err
	}
	if err := g.cfg.Store.AddExportJob(ctx, store.ExportJob{ID: id, Owner: owner, Request: g.publicBase(c) + c.OriginalURL(), Started: now}); err != nil {
		return "", err
	}
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.exports.add(id, cancel)
	go func() {
		defer g.exports.stop(id)
		beats := make(chan struct{})
		go g.beatExport(run, id, cancel, beats)
		parts, err := work(run)
		close(beats)
		failure := ""
		if err != nil {
			g.log.Error("bulk export failed", "job", id, "err", err)
			parts, failure = nil, encodeFailure(exportFailure(err))
		}
		// Stored even if the job was cancelled: a DELETE has removed the
		// row, and the store then refuses (ErrNotFound).
		err = g.cfg.Store.FinishExportJob(context.WithoutCancel(run), id, g.cfg.Now(), parts, failure)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			g.log.Error("bulk export: its end was not stored; its status will say it stopped", "job", id, "err", err)
		}
	}()
	return id, nil
}

// beatExport records every exportBeat that this process still runs job id,
// until done closes; a job deleted meanwhile (by any process) is cancelled.
func (g *Gateway) beatExport(ctx context.Context, id string, cancel context.CancelFunc, done <-chan struct{}) {
	t := time.NewTicker(exportBeat)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := g.cfg.Store.BeatExportJob(ctx, id, g.cfg.Now()); errors.Is(err, store.ErrNotFound) {
			cancel()
			return
		} else if err != nil {
			g.log.Warn("bulk export: beat not stored", "job", id, "err", err)
		}
	}
}

// exportJobFor returns job id if owner kicked it off (404 otherwise:
// another reader's job is not said to exist).
func (g *Gateway) exportJobFor(ctx context.Context, id, owner string) (store.ExportJob, error) {
	j, err := g.cfg.Store.ExportJob(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.ExportJob{}, err
	}
	expired := !j.Finished.IsZero() && g.cfg.Now().Sub(j.Finished) > exportTTL
	if err != nil || j.Owner != owner || expired {
		return store.ExportJob{}, notFound("no export %s here", id)
	}
	return j, nil
}

// exportOutput is one file of a manifest.
type exportOutput struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
}

// answerExportStatus answers a status request of job: 202 while it runs,
// its failure, or the manifest of the files outputs lists.
func (g *Gateway) answerExportStatus(c *fiber.Ctx, j store.ExportJob, outputs func() []exportOutput) error {
	if j.Finished.IsZero() {
		if g.cfg.Now().Sub(j.Beat) > exportGone {
			failure := errf(fiber.StatusInternalServerError, "incomplete", "this export stopped unfinished: the gateway running it went away (a restart); kick it off again")
			// Final, for every process; one still running it finds the row
			// finished and drops its result.
			if err := g.cfg.Store.FinishExportJob(c.UserContext(), j.ID, g.cfg.Now(), nil, encodeFailure(failure)); err != nil && !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return failure
		}
		c.Set("X-Progress", "in progress")
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.SendStatus(fiber.StatusAccepted)
	}
	if j.Failure != "" {
		return decodeFailure(j.Failure)
	}
	out := outputs()
	if out == nil {
		out = []exportOutput{}
	}
	return c.JSON(fiber.Map{
		"transactionTime":     j.Started.UTC().Format(time.RFC3339Nano),
		"request":             j.Request,
		"requiresAccessToken": true,
		"output":              out,
		"error":               []any{},
	})
}

// exportFileBody returns the NDJSON of typ in finished job j, of the
// members keep allows (nil: the one part of a patient's export); 404 when
// there is none.
func (g *Gateway) exportFileBody(ctx context.Context, j store.ExportJob, file string, keep func(member *big.Int, typ string) bool) ([]byte, error) {
	typ, ok := cutNDJSON(file)
	if !ok || j.Finished.IsZero() || j.Failure != "" {
		return nil, notFound("no file %s in this export", file)
	}
	parts, err := g.cfg.Store.ExportFile(ctx, j.ID, typ)
	if err != nil {
		return nil, err
	}
	var body []byte
	for _, p := range parts {
		if keep == nil || keep(new(big.Int).SetBytes(p.Member[:]), typ) {
			body = append(body, p.NDJSON...)
		}
	}
	if len(body) == 0 {
		return nil, notFound("no file %s in this export", file)
	}
	return body, nil
}

// exportTypes returns the types of j's parts, sorted, once each.
func exportTypes(j store.ExportJob) []string {
	var types []string
	for _, p := range j.Parts {
		types = append(types, p.Type)
	}
	slices.Sort(types)
	return slices.Compact(types)
}

// exportFailure is the answer the status gives for a job that failed with
// err, as the error handler would answer err itself.
func exportFailure(err error) *apiError {
	var ae *apiError
	if errors.As(storeError(err), &ae) {
		return ae
	}
	if ae = storeFault(err); ae != nil {
		return ae
	}
	return errf(fiber.StatusInternalServerError, "exception", "internal error")
}

// storedFailure is a failure as the store keeps it.
type storedFailure struct {
	Status int    `json:"status"`
	Code   string `json:"code"`
	Msg    string `json:"msg"`
}

func encodeFailure(e *apiError) string {
	b, _ := json.Marshal(storedFailure{e.status, e.code, e.msg})
	return string(b)
}

func decodeFailure(s string) *apiError {
	var f storedFailure
	if json.Unmarshal([]byte(s), &f) != nil || f.Status < 400 {
		return errf(fiber.StatusInternalServerError, "exception", "the export failed")
	}
	return errf(f.Status, f.Code, "%s", f.Msg)
}

// cutNDJSON returns the type a file name Type.ndjson names.
func cutNDJSON(file string) (string, bool) {
	typ, ok := strings.CutSuffix(file, ".ndjson")
	return typ, ok && typ != ""
}
