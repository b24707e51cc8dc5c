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
	// file, line and reason.
	Summary string   `json:"summary,omitempty"`
	Refused []string `json:"refused,omitempty"`
}

// BulkProgress is how far the upload of a bulk import got.
type BulkProgress struct {
	File  string // the file being sent
	Sent  int64  // bytes sent, of all files
	Total int64  // bytes of all files
	Lines int    // lines sent (resources, give or take blank lines)
	Done  bool   // everything is sent; the gateway is writing
}

// ErrRefusedPatients: a bulk import took some patients and refused others
// (BulkReport.Refused says which and why).
var ErrRefusedPatients = errors.New("the gateway refused some patients")

// ImportNDJSON streams NDJSON files (one resource per line, e.g. a Synthea
// bulk export's Patient.ndjson, Observation.ndjson …) to the gateway's bulk
// import, in one request, never holding a file in memory; each patient goes
// in whole or not at all. progress, if set, is called as the upload
// advances (from another goroutine). When the gateway refused some patients
// the report lists them and the error is ErrRefusedPatients.
func (c *Client) ImportNDJSON(ctx context.Context, files []string, progress func(BulkProgress)) (BulkReport, error) {
	var rep BulkReport
	var total int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return rep, err
		}
		total += fi.Size()
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pw.CloseWithError(sendFiles(mw, files, total, progress))
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
	if err != nil {
		return rep, fmt.Errorf("the gateway %s: %w", c.Base, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return rep, err
	}
	var oo struct {
		Issue []struct {
			Severity    string `json:"severity"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	switch {
	case res.StatusCode == http.StatusCreated:
		if err := json.Unmarshal(raw, &rep); err != nil {
			return rep, fmt.Errorf("the gateway's answer: %w", err)
		}
		return rep, nil
	case res.StatusCode == http.StatusOK && json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0:
		// Some refused, the others went in.
		for _, i := range oo.Issue {
			if i.Severity == "information" {
				rep.Summary = i.Diagnostics
			} else {
				rep.Refused = append(rep.Refused, i.Diagnostics)
			}
		}
		return rep, ErrRefusedPatients
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0 {
		msg = oo.Issue[0].Diagnostics
	}
	return rep, &Error{Status: res.StatusCode, Message: msg}
}

// sendFiles writes each file as one part of the multipart body.
func sendFiles(mw *multipart.Writer, files []string, total int64, progress func(BulkProgress)) error {
	p := BulkProgress{Total: total}
	report := func() {
		if progress != nil {
			progress(p)
		}
	}
	for _, f := range files {
		p.File = filepath.Base(f)
		part, err := mw.CreateFormFile("file", p.File)
		if err != nil {
			return err
		}
		in, err := os.Open(f)
		if err != nil {
			return err
		}
		buf := make([]byte, 256<<10)
		for {
			n, rerr := in.Read(buf)
			if n > 0 {
				if _, err := part.Write(buf[:n]); err != nil {
					in.Close()
					return err
				}
				p.Sent += int64(n)
				p.Lines += bytes.Count(buf[:n], []byte("\n"))
				report()
			}
			if errors.Is(rerr, io.EOF) {
				break
			}
			if rerr != nil {
				in.Close()
				return fmt.Errorf("%s: %w", f, rerr)
			}
		}
		in.Close()
	}
	if err := mw.Close(); err != nil {
		return err
	}
	p.Done = true
	report()
	return nil
}
