package desk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/medrec-zk/medrec/gatewayapi"
)

// BulkReport is what a bulk NDJSON import did.
type BulkReport struct {
	Files     int `json:"files"`
	Lines     int `json:"lines"`
	Patients  int `json:"patients"`
	Shared    int `json:"shared"`
	Resources int `json:"resources"`
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	// Summary and Refused are set when the gateway refused some patients
	// (and took the others): what went in, and each patient refused with
	// file, line and reason, in the gateway's words.
	Summary string   `json:"summary,omitempty"`
	Refused []string `json:"refused,omitempty"`

	refusals []BulkRefusal // Refused, read from the answer's extensions
}

// BulkRefusal is one patient (or shared resource) a bulk import refused.
type BulkRefusal struct {
	File    string // the input file
	Line    int    // its line (0 if the gateway did not say)
	Patient string // "" for a shared resource
	Reason  string // why; the gateway's whole sentence if it did not say
}

// Refusals returns the refusals of the report, each with its file, line,
// patient and reason.
func (r BulkReport) Refusals() []BulkRefusal { return r.refusals }

// bulkIssue is an issue of the gateway's OperationOutcome for an import it
// took in part.
type bulkIssue struct {
	Extension   []gatewayapi.Extension `json:"extension"`
	Severity    string                 `json:"severity"`
	Diagnostics string                 `json:"diagnostics"`
}

// read fills the report from the gateway's issues: the counts from the
// information issue's extension, a refusal from each error issue's
// (gatewayapi.BulkImportCountsURL, BulkImportRefusalURL).
func (r *BulkReport) read(issues []bulkIssue) {
	for _, i := range issues {
		ext := func(url string) (gatewayapi.Extension, bool) { return gatewayapi.FindExtension(i.Extension, url) }
		if i.Severity == "information" {
			r.Summary = i.Diagnostics
			if e, ok := ext(gatewayapi.BulkImportCountsURL); ok {
				for _, c := range []struct {
					name string
					to   *int
				}{{"patients", &r.Patients}, {"resources", &r.Resources}, {"created", &r.Created}, {"updated", &r.Updated},
					{"unchanged", &r.Unchanged}, {"shared", &r.Shared}, {"lines", &r.Lines}, {"files", &r.Files}} {
					if x, ok := e.Sub(c.name); ok && x.ValueInteger != nil {
						*c.to = *x.ValueInteger
					}
				}
			}
			continue
		}
		r.Refused = append(r.Refused, i.Diagnostics)
		ref := BulkRefusal{Reason: i.Diagnostics}
		if e, ok := ext(gatewayapi.BulkImportRefusalURL); ok {
			str := func(name string) string {
				if x, ok := e.Sub(name); ok && x.ValueString != nil {
					return *x.ValueString
				}
				return ""
			}
			ref = BulkRefusal{File: str("file"), Patient: str("patient"), Reason: str("reason")}
			if x, ok := e.Sub("line"); ok && x.ValueInteger != nil {
				ref.Line = *x.ValueInteger
			}
		}
		r.refusals = append(r.refusals, ref)
	}
}

// BulkProgress is how far the upload of a bulk import got.
type BulkProgress struct {
	File  string // the file being sent
	Sent  int64  // bytes sent, of all files
	Total int64  // bytes of all files (0 if not known)
	Lines int    // lines sent (resources, give or take blank lines)
	Done  bool   // everything is sent; the gateway is writing
}

// NDJSONFile is one file of a bulk import: its name (the gateway's
// messages name it) and its lines. R is closed once sent if it is an
// io.Closer.
type NDJSONFile struct {
	Name string
	R    io.Reader
}

// ImportNDJSON streams NDJSON files (one resource per line, e.g. a Synthea
// bulk export's Patient.ndjson, Observation.ndjson …) from disk to the
// gateway's bulk import, as ImportNDJSONFrom does, opening one file at a
// time.
func (c *Client) ImportNDJSON(ctx context.Context, files []string, progress func(BulkProgress)) (BulkReport, error) {
	var total int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return BulkReport{}, err
		}
		total += fi.Size()
	}
	i := 0
	next := func() (NDJSONFile, error) {
		if i == len(files) {
			return NDJSONFile{}, io.EOF
		}
		i++
		in, err := os.Open(files[i-1])
		if err != nil {
			return NDJSONFile{}, err
		}
		return NDJSONFile{Name: filepath.Base(files[i-1]), R: in}, nil
	}
	return c.ImportNDJSONFrom(ctx, next, total, progress)
}

// ImportNDJSONFrom streams the NDJSON files next returns (io.EOF after the
// last; total is their size, 0 if not known) to the gateway's bulk import,
// in one request, never holding a file in memory; each patient goes in
// whole or not at all. progress, if set, is called as the upload advances
// (from another goroutine). When the gateway refused some patients the
// report says what went in and lists those refused, and the error is
// ErrRefusedPatients. An error reading the files (next's, or a file's)
// ends the upload, and is the error returned: the gateway then stores
// nothing of that upload.
func (c *Client) ImportNDJSONFrom(ctx context.Context, next func() (NDJSONFile, error), total int64, progress func(BulkProgress)) (BulkReport, error) {
	var rep BulkReport
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var sendErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sendErr = sendFiles(mw, next, total, progress)
		pw.CloseWithError(sendErr)
	}()
	req, err := http.NewRequestWithContext(ctx, "POST", c.Base+"/admin/import/ndjson", pr)
	if err != nil {
		pr.Close()
		wg.Wait()
		return rep, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.Token)
	// No overall timeout: an import takes as long as its files (ctx ends it).
	hc := &http.Client{Transport: c.HTTP.Transport}
	res, err := hc.Do(req)
	pr.CloseWithError(errors.New("request over"))
	wg.Wait()
	var rerr *readError
	if errors.As(sendErr, &rerr) {
		if res != nil {
			res.Body.Close()
		}
		return rep, rerr.err
	}
	if err != nil {
		return rep, fmt.Errorf("the gateway %s: %w", c.Base, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return rep, fmt.Errorf("the gateway's answer: %w", err)
	}
	var oo struct {
		Issue []bulkIssue `json:"issue"`
	}
	switch {
	case res.StatusCode == http.StatusCreated:
		if err := json.Unmarshal(raw, &rep); err != nil {
			return rep, fmt.Errorf("the gateway's answer: %w", err)
		}
		return rep, nil
	case res.StatusCode == http.StatusOK && json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0:
		// Some refused, the others went in.
		rep.read(oo.Issue)
		return rep, ErrRefusedPatients
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0 {
		msg = oo.Issue[0].Diagnostics
	}
	return rep, &Error{Status: res.StatusCode, Message: msg}
}

// readError is an error reading the files of an upload (not sending them).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }

// sendFiles writes each file next returns as one part of the multipart
// body.
func sendFiles(mw *multipart.Writer, next func() (NDJSONFile, error), total int64, progress func(BulkProgress)) error {
	p := BulkProgress{Total: total}
	report := func() {
		if progress != nil {
			progress(p)
		}
	}
	buf := make([]byte, 256<<10)
	for {
		f, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &readError{err}
		}
		if err := sendFile(mw, f, buf, &p, report); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	p.Done = true
	report()
	return nil
}

// sendFile writes one file as a part, and closes it.
func sendFile(mw *multipart.Writer, f NDJSONFile, buf []byte, p *BulkProgress, report func()) error {
	if cl, ok := f.R.(io.Closer); ok {
		defer cl.Close()
	}
	p.File = f.Name
	part, err := mw.CreateFormFile("file", f.Name)
	if err != nil {
		return err
	}
	for {
		n, rerr := f.R.Read(buf)
		if n > 0 {
			if _, err := part.Write(buf[:n]); err != nil {
				return err
			}
			p.Sent += int64(n)
			p.Lines += bytes.Count(buf[:n], []byte("\n"))
			report()
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return &readError{fmt.Errorf("reading %s: %w", f.Name, rerr)}
		}
	}
}
