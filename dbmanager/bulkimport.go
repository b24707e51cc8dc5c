package dbmanager

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"path"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/ingest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
)

// The bulk NDJSON import (admins only): the one request body the gateway
// streams, of any size (boundBody leaves it alone). The body is either
// multipart/form-data, one part per NDJSON file (its filename names it in
// messages), or one NDJSON file (application/fhir+ndjson,
// application/x-ndjson or application/ndjson; ?file= names it). Package
// ingest does the import: each patient in one transaction, logged as an
// "import" by the staff member.

const ndjsonImportPath = "/admin/import/ndjson"

// ndjsonIdle is how long the import waits for the client's next bytes.
const ndjsonIdle = 2 * time.Minute

// maxRefusalIssues bounds the issues of an import's OperationOutcome.
const maxRefusalIssues = 100

// importNDJSON streams a bulk NDJSON import. It answers 201 with the report
// when everything went in. When some patients (or shared resources) were
// refused it answers an OperationOutcome — an information issue saying what
// went in, an error issue per patient refused, naming file, line and
// reason — with 200 if anything was stored; if nothing was, 422 with one
// error issue listing the refusals (an error status always means the
// request stored nothing). 400 when the input as a
// whole is refused (nothing written); 429 while another bulk import runs.
func (g *Gateway) importNDJSON(c *fiber.Ctx) error {
	select {
	case g.bulk <- struct{}{}:
		defer func() { <-g.bulk }()
	default:
		return errf(fiber.StatusTooManyRequests, "throttled", "another bulk import is running; try again when it is done")
	}
	body := c.Context().RequestBodyStream()
	if body == nil {
		body = strings.NewReader(string(c.Body()))
	}
	body = &idleReader{r: body, c: c}
	next, err := ndjsonFiles(c.Get(fiber.HeaderContentType), c.Query("file"), body)
	if err != nil {
		return err
	}
	rep, err := g.ingest.ImportNDJSON(c.UserContext(), next, ingest.Actor{Kind: store.ActorStaff, ID: staffID(c)}, ingest.NDJSONOptions{SpoolDir: g.cfg.SpoolDir})
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return badRequest("%v", err)
		}
		return storeError(err)
	}
	if len(rep.Refused) == 0 {
		return c.Status(fiber.StatusCreated).JSON(rep)
	}
	if rep.Resources == 0 {
		// Nothing stored: an error, one issue like every error answer.
		var why []string
		for i, r := range rep.Refused {
			if i == maxRefusalIssues {
				why = append(why, fmt.Sprintf("and %d more", len(rep.Refused)-i))
				break
			}
			why = append(why, r.String())
		}
		return errf(fiber.StatusUnprocessableEntity, "invalid", "nothing imported, %d refused: %s", len(rep.Refused), strings.Join(why, "; "))
	}
	// In words for people, in extensions for programs (gatewayapi).
	counts := gatewayapi.Extension{URL: gatewayapi.BulkImportCountsURL, Extension: []gatewayapi.Extension{
		gatewayapi.IntExt("patients", rep.Patients), gatewayapi.IntExt("resources", rep.Resources),
		gatewayapi.IntExt("created", rep.Created), gatewayapi.IntExt("updated", rep.Updated),
		gatewayapi.IntExt("unchanged", rep.Unchanged), gatewayapi.IntExt("shared", rep.Shared),
		gatewayapi.IntExt("lines", rep.Lines), gatewayapi.IntExt("files", rep.Files),
	}}
	issues := []outcomeIssue{{Severity: "information", Code: "informational", Extension: []gatewayapi.Extension{counts}, Diagnostics: fmt.Sprintf(
		"%d patients imported (%d resources: %d created, %d updated, %d unchanged, %d of them shared) from %d lines in %d files; %d refused, nothing of theirs written",
		rep.Patients, rep.Resources, rep.Created, rep.Updated, rep.Unchanged, rep.Shared, rep.Lines, rep.Files, len(rep.Refused))}}
	for i, r := range rep.Refused {
		if i == maxRefusalIssues {
			issues = append(issues, outcomeIssue{Severity: "error", Code: "invalid", Diagnostics: fmt.Sprintf("and %d more refused", len(rep.Refused)-i)})
			break
		}
		refusal := gatewayapi.Extension{URL: gatewayapi.BulkImportRefusalURL, Extension: []gatewayapi.Extension{
			gatewayapi.StringExt("file", r.File), gatewayapi.IntExt("line", r.Line), gatewayapi.StringExt("reason", r.Reason),
		}}
		if r.PatientID != "" {
			refusal.Extension = append(refusal.Extension, gatewayapi.StringExt("patient", r.PatientID))
		}
		issues = append(issues, outcomeIssue{Severity: "error", Code: "invalid", Extension: []gatewayapi.Extension{refusal}, Diagnostics: r.String()})
	}
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.Status(fiber.StatusOK).JSON(operationOutcome{ResourceType: "OperationOutcome", Issue: issues})
}

// ndjsonFiles reads the files of an import body of the given content type.
func ndjsonFiles(contentType, name string, body io.Reader) (func() (ingest.NDJSONFile, error), error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, errf(fiber.StatusUnsupportedMediaType, "not-supported", "Content-Type %q: want multipart/form-data (one part per NDJSON file) or application/fhir+ndjson", contentType)
	}
	switch mt {
	case "multipart/form-data":
		if params["boundary"] == "" {
			return nil, badRequest("multipart/form-data without a boundary")
		}
		mr := multipart.NewReader(body, params["boundary"])
		n := 0
		return func() (ingest.NDJSONFile, error) {
			p, err := mr.NextPart()
			if err != nil {
				return ingest.NDJSONFile{}, err
			}
			n++
			return ingest.NDJSONFile{Name: fileName(p.FileName(), p.FormName(), n), R: p}, nil
		}, nil
	case "application/fhir+ndjson", "application/x-ndjson", "application/ndjson":
		done := false
		return func() (ingest.NDJSONFile, error) {
			if done {
				return ingest.NDJSONFile{}, io.EOF
			}
			done = true
			if name = fileName(name, "", 1); name == "file 1" {
				name = "request body"
			}
			return ingest.NDJSONFile{Name: name, R: body}, nil
		}, nil
	}
	return nil, errf(fiber.StatusUnsupportedMediaType, "not-supported", "Content-Type %q: want multipart/form-data (one part per NDJSON file) or application/fhir+ndjson", mt)
}

// fileName is how messages name an input file: its base name, printable,
// at most 100 bytes.
func fileName(name, form string, n int) string {
	if name == "" {
		name = form
	}
	name = path.Base(strings.ReplaceAll(name, "\\", "/"))
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
	if len(name) > 100 {
		name = name[:100]
	}
	if name == "" || name == "." || name == "/" {
		return fmt.Sprintf("file %d", n)
	}
	return name
}

// idleReader reads the request body, giving the client ndjsonIdle for each
// read instead of the server's ReadTimeout for the whole request.
type idleReader struct {
	r io.Reader
	c *fiber.Ctx
}

func (r *idleReader) Read(p []byte) (int, error) {
	if conn := r.c.Context().Conn(); conn != nil {
		conn.SetReadDeadline(time.Now().Add(ndjsonIdle))
	}
	return r.r.Read(p)
}
