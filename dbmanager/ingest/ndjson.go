package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the spool's driver

	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Bulk NDJSON import (FHIR bulk data: one resource per line, one file per
// resource type, as Synthea's bulk output and EHR bulk exports write it).
//
// The files are per type, a patient's resources are spread over all of
// them, and a patient must go in whole or not at all: so an import reads
// twice. The first pass streams every line into a spool, a temporary SQLite
// file keyed by patient, reading of each line only whose it is; the second
// takes the spool one patient at a time, validates the patient's resources
// (on all cores, while the store writes the patient before), resolves
// references, and stores each patient's resources in one transaction.
// Memory holds the lines in flight and two patients; disk holds about one
// copy of the input.
//
// Shared resources (Organization, Practitioner, Location …) are a
// directory import: created or updated, in batches, before the patients.
//
// An import is idempotent: resources are keyed by type and id and a
// resource whose bytes are unchanged writes nothing (store.Upsert). So an
// interrupted import is resumed by running it again: the patients committed
// before the interruption come out unchanged, the others go in.

// NDJSON import limits.
const (
	// MaxPatientResources bounds one patient's resources in one import.
	MaxPatientResources = 50000
	// MaxPatientBytes bounds one patient's resources' bytes in one import
	// (they are held in memory for the patient's transaction).
	MaxPatientBytes = 128 << 20
	// sharedBatch is how many shared resources one transaction stores.
	sharedBatch = 500
)

// NDJSONFile is one NDJSON input: its name (for messages) and its lines.
type NDJSONFile struct {
	Name string
	R    io.Reader
}

// NDJSONOptions tune ImportNDJSON.
type NDJSONOptions struct {
	// SpoolDir holds the spool while the import runs (default os.TempDir()).
	SpoolDir string
	// Progress, if set, is called as the import advances (from one
	// goroutine at a time).
	Progress func(NDJSONProgress)
}

// NDJSONProgress is how far an import got.
type NDJSONProgress struct {
	Phase     string // "read" (first pass) or "write" (second)
	Lines     int    // lines read
	Patients  int    // patients written or refused so far (write phase)
	Total     int    // patients in the import (write phase)
	Resources int    // resources written (write phase)
}

// NDJSONReport says what an NDJSON import did.
type NDJSONReport struct {
	Files     int `json:"files"`
	Lines     int `json:"lines"`
	Patients  int `json:"patients"`  // patients whose resources went in
	Shared    int `json:"shared"`    // shared resources that went in
	Resources int `json:"resources"` // resources that went in, shared ones included
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
	// Refused lists each patient refused (whole) and each shared resource
	// refused, in patient order; nothing of theirs was written.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is one patient (or one shared resource) an import refused.
type Refusal struct {
	PatientID string `json:"patient,omitempty"` // "" for a shared resource
	File      string `json:"file"`
	Line      int    `json:"line"`
	Reason    string `json:"reason"`
}

func (r Refusal) String() string {
	who := "shared resource"
	if r.PatientID != "" {
		who = "patient " + r.PatientID
	}
	return fmt.Sprintf("%s line %d: %s refused: %s", r.File, r.Line, who, r.Reason)
}

// ImportNDJSON imports NDJSON files, read one after the other from next
// (io.EOF after the last), each patient in one transaction. A patient with
// any bad line — malformed, not valid FHIR, without an id, naming another
// patient, a reference that resolves to nothing — is refused whole and
// listed in the report with the file, line and reason; the other patients
// go in. A line that cannot be told to belong to any patient (not JSON, no
// known resource type, no patient reference), an input that ends in error
// or is not NDJSON at all refuse the whole import: ErrInvalid naming file
// and line, nothing written. A store failure other than a refusal (the
// database unavailable, ctx ended) stops the import with that error; what
// was committed stays, and running the import again resumes it.
//
// Conditional references "Type?identifier=[system|]value" (Synthea's to
// practitioners, organizations and locations) are resolved against the
// import's shared resources and the records database: exactly one match is
// required, and the reference is stored as the literal "Type/id" (as a FHIR
// transaction would store it); nothing else in a resource is changed.
func (in *Ingester) ImportNDJSON(ctx context.Context, next func() (NDJSONFile, error), by Actor, opt NDJSONOptions) (NDJSONReport, error) {
	sp, err := openSpool(ctx, opt.SpoolDir)
	if err != nil {
		return NDJSONReport{}, fmt.Errorf("ndjson import: %w", err)
	}
	defer sp.close()
	imp := &ndjsonImport{in: in, sp: sp, by: by, opt: opt, loaded: map[string]bool{}}
	if err := imp.read(ctx, next); err != nil {
		return imp.rep, fmt.Errorf("ndjson import: %w", err)
	}
	if err := imp.write(ctx); err != nil {
		return imp.rep, fmt.Errorf("ndjson import: %w", err)
	}
	return imp.rep, nil
}

type ndjsonImport struct {
	in     *Ingester
	sp     *spool
	by     Actor
	opt    NDJSONOptions
	rep    NDJSONReport
	files  []string
	loaded map[string]bool // types whose stored identifiers are in the spool
}

func (imp *ndjsonImport) progress(p NDJSONProgress) {
	if imp.opt.Progress != nil {
		imp.opt.Progress(p)
	}
}

// --- the first pass: spool by patient ---------------------------------------

// line is one input line on its way to the spool.
type line struct {
	file, n int
	name    string // the file's
	raw     []byte
	// Filled by the worker:
	typ, id string
	patient string // "" for a shared resource
	idents  []ident
	bad     string // why it is refused ("" if it is fine)
	fatal   error  // a line no patient can be charged with
}

type ident struct{ system, value string }

// read streams every file's lines into the spool, by patient.
func (imp *ndjsonImport) read(ctx context.Context, next func() (NDJSONFile, error)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	workers := min(runtime.GOMAXPROCS(0), 8)
	jobs := make(chan *line, workers)
	done := make(chan *line, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for l := range jobs {
				imp.check(l)
				done <- l // spoolAll reads them all, so the first bad line is reported
			}
		}()
	}
	spooled := make(chan error, 1)
	go func() { spooled <- imp.spoolAll(ctx, cancel, done) }()

	readErr := imp.feed(ctx, next, jobs)
	close(jobs)
	wg.Wait()
	close(done)
	spoolErr := <-spooled
	switch {
	case spoolErr != nil: // the first bad line, before any later failure
		return spoolErr
	case readErr != nil:
		return readErr
	case context.Cause(ctx) != nil:
		return context.Cause(ctx)
	}
	return imp.sp.index(ctx)
}

// feed reads the files' lines into jobs.
func (imp *ndjsonImport) feed(ctx context.Context, next func() (NDJSONFile, error), jobs chan<- *line) error {
	for {
		f, err := next()
		if errors.Is(err, io.EOF) {
			switch {
			case imp.rep.Files == 0:
				return fmt.Errorf("no NDJSON files: %w", store.ErrInvalid)
			case imp.rep.Lines == 0:
				return fmt.Errorf("no resources in %s: %w", strings.Join(imp.files, ", "), store.ErrInvalid)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading file %d: %w: %v", len(imp.files)+1, store.ErrInvalid, err)
		}
		name := f.Name
		if name == "" {
			name = fmt.Sprintf("file %d", len(imp.files)+1)
		}
		imp.files = append(imp.files, name)
		imp.rep.Files++
		fi := len(imp.files) - 1
		lr := newLineReader(f.R)
		for {
			raw, n, err := lr.next()
			if errors.Is(err, io.EOF) {
				break
			}
			switch {
			case errors.Is(err, errLineTooLong):
				return fmt.Errorf("%s line %d: %w: %v", name, n, store.ErrInvalid, err)
			case err != nil:
				return fmt.Errorf("%s: the input broke off at line %d (%v): %w", name, n, err, store.ErrInvalid)
			}
			if len(skipSpaceBytes(raw)) == 0 {
				continue // blank lines separate nothing; tolerated
			}
			imp.rep.Lines++
			if imp.rep.Lines%1000 == 0 {
				imp.progress(NDJSONProgress{Phase: "read", Lines: imp.rep.Lines})
			}
			select {
			case jobs <- &line{file: fi, n: n, name: name, raw: append([]byte(nil), raw...)}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

func skipSpaceBytes(b []byte) []byte { return b[skipSpace(b, 0):] }

// check finds whose a line is (without validating it: the second pass
// does, with the patient's other resources).
func (imp *ndjsonImport) check(l *line) {
	where := func() string { return fmt.Sprintf("%s line %d", l.name, l.n) }
	scan, err := scanLine(l.raw)
	if err != nil {
		l.fatal = fmt.Errorf("%s is not a JSON resource (%v): its patient cannot be told, so no patient can be imported whole: %w", where(), err, store.ErrInvalid)
		return
	}
	l.typ, l.id = scan.Type, scan.ID
	if store.ValidType(l.typ) != nil {
		l.fatal = fmt.Errorf("%s: a %s that cannot be charged to a patient (not a resource type this gateway holds), so no patient can be imported whole: %w", where(), orUnknown(l.typ), store.ErrInvalid)
		return
	}
	shared := !fhirval.InPatientCompartment(l.typ)
	// Whose is it? The validator reads the same compartment paths later,
	// with the patient's other resources.
	switch {
	case shared:
	case l.typ == "Patient":
		l.patient = l.id
	default:
		refs := fhirval.PatientReferences(l.raw, l.typ)
		if refs == nil {
			// Not strict JSON: charge it to the patient its references name.
			for _, r := range scan.Refs {
				refs = append(refs, r.Value)
			}
		}
		for _, ref := range refs {
			if id, ok := patientOfRef(ref); ok {
				l.patient = id
				break
			}
		}
	}
	if !shared && (l.patient == "" || store.ValidID(l.patient) != nil) {
		l.fatal = fmt.Errorf("%s: a %s that cannot be charged to a patient (it names no patient), so no patient can be imported whole: %w", where(), l.typ, store.ErrInvalid)
		return
	}
	switch {
	case l.id == "":
		l.bad = fmt.Sprintf("the %s has no id (bulk data resources are keyed by id)", l.typ)
	case store.ValidID(l.id) != nil:
		l.bad = fmt.Sprintf("the %s's id %q is not a FHIR id", l.typ, l.id)
	case shared:
		l.idents = identifiers(l.raw)
	}
}

// validate validates resources (on all cores) as they are about to be
// stored: each must be valid FHIR R4 of its type and, given a patient,
// belong to that patient. It returns why each is invalid (nil if valid).
func (imp *ndjsonImport) validate(ss []spooled, patient string) []error {
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(runtime.GOMAXPROCS(0), len(ss)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := imp.in.val.Validate(ss[i].raw, ss[i].typ)
				if err == nil && patient != "" {
					err = r.CheckPatient("Patient/"+patient, "urn:uuid:"+patient)
				}
				errs[i] = err
			}
		}()
	}
	for i := range ss {
		next <- i
	}
	close(next)
	wg.Wait()
	return errs
}

func orUnknown(typ string) string {
	if typ == "" {
		return "resource of no known type"
	}
	return typ
}

// spoolAll writes the checked lines into the spool, in one transaction.
func (imp *ndjsonImport) spoolAll(ctx context.Context, cancel context.CancelCauseFunc, done <-chan *line) error {
	w, err := imp.sp.writer(ctx)
	if err != nil {
		cancel(err)
		for range done {
		}
		return err
	}
	// Lines arrive out of order: of the lines that refuse the import, the
	// first in the input is reported (every line before it was fed, and
	// every line fed is checked).
	var first error
	var at *line
	for l := range done {
		var err error
		switch {
		case l.fatal != nil:
			err = l.fatal
		case first != nil:
			continue
		case l.bad != "":
			err = w.bad(l)
		default:
			err = w.put(l)
		}
		if err != nil && (first == nil || l.file < at.file || l.file == at.file && l.n < at.n) {
			first, at = err, l
			cancel(err)
		}
	}
	if first != nil {
		w.rollback()
		return first
	}
	return w.commit()
}

// --- the second pass: one patient at a time ---------------------------------

// write stores the shared resources, then each patient. Patients are
// prepared (read back, validated, references resolved) one ahead of the
// one being stored, so that validation runs while the store writes.
func (imp *ndjsonImport) write(ctx context.Context) error {
	if err := imp.writeShared(ctx); err != nil {
		return err
	}
	patients, err := imp.sp.patients(ctx)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan prepared, 1)
	failed := make(chan error, 1)
	go func() {
		defer close(items)
		for _, p := range patients {
			it, err := imp.prepare(pctx, p)
			if err != nil {
				failed <- err
				return
			}
			select {
			case items <- it:
			case <-pctx.Done():
				return
			}
		}
	}()
	done := 0
	for it := range items {
		if err := imp.commit(ctx, it); err != nil {
			cancel()
			for range items {
			}
			return err
		}
		done++
		imp.progress(NDJSONProgress{Phase: "write", Lines: imp.rep.Lines, Patients: done, Total: len(patients), Resources: imp.rep.Resources})
	}
	select {
	case err := <-failed:
		return err
	default:
		return nil
	}
}

// prepared is one patient ready to store, or refused.
type prepared struct {
	patient string
	refused *Refusal
	batch   store.Batch
	ss      []spooled
}

// spooled is one resource read back from the spool.
type spooled struct {
	file, n int
	typ, id string
	raw     []byte
}

func (imp *ndjsonImport) refuse(patient string, s spooled, format string, args ...any) {
	imp.rep.Refused = append(imp.rep.Refused, *imp.refusal(patient, s, format, args...))
}

func (imp *ndjsonImport) refusal(patient string, s spooled, format string, args ...any) *Refusal {
	return &Refusal{PatientID: patient, File: imp.files[s.file], Line: s.n, Reason: fmt.Sprintf(format, args...)}
}

// writeShared stores the shared resources (created or updated), sharedBatch
// to a transaction; a batch the store refuses is retried one by one, so
// that only the resource at fault is refused.
func (imp *ndjsonImport) writeShared(ctx context.Context) error {
	dups, err := imp.sp.duplicates(ctx)
	if err != nil {
		return err
	}
	first := map[string]spooled{} // the first line of each duplicated type/id
	var batch []spooled
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		err := imp.applyShared(ctx, batch)
		if err == nil || !refusable(err) {
			return err
		}
		for _, s := range batch {
			if err := imp.applyShared(ctx, []spooled{s}); err != nil {
				if !refusable(err) {
					return err
				}
				imp.refuse("", s, "%v", err)
			}
		}
		return nil
	}
	after := spooled{file: -1}
	for {
		page, err := imp.sp.sharedPage(ctx, after, sharedBatch)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return flush()
		}
		after = page[len(page)-1]
		invalid := imp.validate(page, "")
		for i, s := range page {
			if invalid[i] != nil {
				imp.refuse("", s, "%v", invalid[i])
				continue
			}
			key := s.typ + "/" + s.id
			if dups[key] {
				// The same resource twice (a directory exported along with
				// each patient) is stored once; two different ones are
				// ambiguous, and the later is refused.
				if f, seen := first[key]; seen {
					if !bytes.Equal(f.raw, s.raw) {
						imp.refuse("", s, "%s is also at line %d of %s, different", key, f.n, imp.files[f.file])
					}
					continue
				}
				first[key] = s
			}
			raw, err := imp.resolve(ctx, s, nil, "")
			if err != nil {
				if !refusable(err) {
					return err
				}
				imp.refuse("", s, "%v", err)
				continue
			}
			s.raw = raw
			batch = append(batch, s)
		}
		if err := flush(); err != nil {
			return err
		}
	}
}

// refusable reports whether err refuses the input (as opposed to a store
// or context failure, which stops the import).
func refusable(err error) bool {
	return errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)
}

func (imp *ndjsonImport) applyShared(ctx context.Context, ss []spooled) error {
	b := store.Batch{}
	refs := make([]string, 0, len(ss))
	for _, s := range ss {
		b.Writes = append(b.Writes, store.Write{Type: s.typ, ID: s.id, Raw: s.raw, Shared: true, Mode: store.Upsert})
		refs = append(refs, s.typ+"/"+s.id)
	}
	b.Log = []store.LogEntry{{ActorKind: imp.by.Kind, ActorID: imp.by.ID, Action: "import", Resources: refs, Outcome: store.Allowed,
		Detail: "ndjson sha256 " + digest(ss)}}
	res, err := imp.in.store.Apply(ctx, b)
	if err != nil {
		return err
	}
	imp.rep.Shared += len(res)
	imp.count(res)
	return nil
}

func (imp *ndjsonImport) count(res []store.Result) {
	imp.rep.Resources += len(res)
	for _, r := range res {
		switch r.Effect {
		case store.EffectCreated:
			imp.rep.Created++
		case store.EffectUpdated:
			imp.rep.Updated++
		default:
			imp.rep.Unchanged++
		}
	}
}

// digest is the SHA-256 of the resources as stored, in order.
func digest(ss []spooled) string {
	h := sha256.New()
	for _, s := range ss {
		h.Write(s.raw)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// prepare reads one patient's resources back from the spool, validates
// them and resolves their references: the batch that stores the patient,
// or why the patient is refused. An error is a failure of the spool or the
// store, not of the input.
func (imp *ndjsonImport) prepare(ctx context.Context, patient string) (prepared, error) {
	it := prepared{patient: patient}
	refuse := func(s spooled, format string, args ...any) (prepared, error) {
		it.refused = imp.refusal(patient, s, format, args...)
		return it, nil
	}
	bad, err := imp.sp.badLines(ctx, patient)
	if err != nil {
		return it, err
	}
	if len(bad) > 0 {
		b := bad[0]
		more := ""
		if len(bad) > 1 {
			more = fmt.Sprintf(" (and %d more bad lines)", len(bad)-1)
		}
		return refuse(b.spooled, "%s%s", b.reason, more)
	}
	ss, err := imp.sp.lines(ctx, patient)
	if err != nil {
		return it, err
	}
	if len(ss) == 0 {
		return it, nil
	}
	if len(ss) > MaxPatientResources {
		return refuse(ss[0], "%d resources, more than %d in one import", len(ss), MaxPatientResources)
	}
	// The patient's own resources, by type/id and by id (urn:uuid).
	own := make(map[string]int, len(ss))
	ids := make(map[string]bool, len(ss))
	hasPatient, size := false, 0
	for i, s := range ss {
		key := s.typ + "/" + s.id
		if j, dup := own[key]; dup {
			return refuse(s, "%s is also at line %d of %s", key, ss[j].n, imp.files[ss[j].file])
		}
		own[key], ids[strings.ToLower(s.id)] = i, true
		hasPatient = hasPatient || s.typ == "Patient"
		size += len(s.raw)
	}
	if size > MaxPatientBytes {
		return refuse(ss[0], "%d bytes of resources, more than %d in one import", size, MaxPatientBytes)
	}
	for i, err := range imp.validate(ss, patient) {
		if err != nil {
			return refuse(ss[i], "%v", err)
		}
	}
	if !hasPatient {
		if _, err := imp.in.store.Get(ctx, "Patient", patient); errors.Is(err, store.ErrNotFound) {
			return refuse(ss[0], "patient %s has no Patient resource in this import and is not in the records database", patient)
		} else if err != nil {
			return it, err
		}
	}
	b := store.Batch{PatientID: patient, CreatePatient: hasPatient}
	refs := make([]string, 0, min(len(ss), store.MaxLogResources))
	for i, s := range ss {
		raw, err := imp.resolve(ctx, s, func(ref string) bool { return refIsOwn(ref, own, ids) }, patient)
		if err != nil {
			if !refusable(err) {
				return it, err
			}
			return refuse(s, "%v", err)
		}
		ss[i].raw = raw
		b.Writes = append(b.Writes, store.Write{Type: s.typ, ID: s.id, Raw: raw, Mode: store.Upsert})
		if len(refs) < store.MaxLogResources {
			refs = append(refs, s.typ+"/"+s.id)
		}
	}
	b.Log = []store.LogEntry{{ActorKind: imp.by.Kind, ActorID: imp.by.ID, Action: "import", PatientID: patient, Resources: refs, Outcome: store.Allowed,
		Detail: "ndjson sha256 " + digest(ss)}}
	it.batch, it.ss = b, ss
	return it, nil
}

// commit stores one prepared patient in one transaction, or records why it
// was refused.
func (imp *ndjsonImport) commit(ctx context.Context, it prepared) error {
	switch {
	case it.refused != nil:
		imp.rep.Refused = append(imp.rep.Refused, *it.refused)
		return nil
	case len(it.ss) == 0:
		return nil
	}
	res, err := imp.in.store.Apply(ctx, it.batch)
	if err != nil {
		if !refusable(err) {
			return err
		}
		at := it.ss[0]
		for _, s := range it.ss {
			if strings.Contains(err.Error(), "("+s.typ+"/"+s.id+")") {
				at = s
				break
			}
		}
		imp.refuse(it.patient, at, "%v", err)
		return nil
	}
	imp.rep.Patients++
	imp.count(res)
	return nil
}

// refIsOwn reports whether ref names one of the patient's resources of
// this import.
func refIsOwn(ref string, own map[string]int, ids map[string]bool) bool {
	if u, ok := strings.CutPrefix(ref, "urn:uuid:"); ok {
		return ids[strings.ToLower(u)]
	}
	typ, id, ok := literalRef(ref)
	if !ok {
		return false
	}
	_, found := own[typ+"/"+id]
	return found
}

var typeRE = regexp.MustCompile(`^[A-Z][A-Za-z]{1,63}$`)

// literalRef reads a relative literal reference "Type/id" (or
// "Type/id/_history/v").
func literalRef(ref string) (typ, id string, ok bool) {
	typ, rest, found := strings.Cut(ref, "/")
	if !found || !typeRE.MatchString(typ) {
		return "", "", false
	}
	id, hist, _ := strings.Cut(rest, "/")
	if hist != "" && !strings.HasPrefix(hist, "_history/") {
		return "", "", false
	}
	return typ, id, store.ValidID(id) == nil
}

// resolve checks every reference of a spooled resource and returns its
// bytes with each conditional reference replaced by the literal one it
// resolves to. own says which references name the patient's resources in
// this import (nil for a shared resource). A reference that resolves to
// nothing, to several resources, or to another patient's resource is
// ErrInvalid.
func (imp *ndjsonImport) resolve(ctx context.Context, s spooled, own func(string) bool, patient string) ([]byte, error) {
	scan, err := scanLine(s.raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", store.ErrInvalid, err)
	}
	var spans []refSpan
	var values []string
	for _, ref := range scan.Refs {
		v := ref.Value
		switch {
		case isConditional(v):
			lit, err := imp.conditional(ctx, v)
			if err != nil {
				return nil, err
			}
			spans, values = append(spans, ref), append(values, lit)
		case v == "" || strings.HasPrefix(v, "#") || strings.Contains(v, "://"):
			// Contained, or absolute (outside this provider): not ours to check.
		case own != nil && own(v):
		case strings.HasPrefix(v, "urn:uuid:"):
			if !imp.sp.sharedID(ctx, strings.TrimPrefix(v, "urn:uuid:")) {
				return nil, fmt.Errorf("reference %q resolves to no resource of this import: %w", v, store.ErrInvalid)
			}
		default:
			if err := imp.literal(ctx, v, patient); err != nil {
				return nil, err
			}
		}
	}
	if len(spans) == 0 {
		return s.raw, nil
	}
	return rewriteRefs(s.raw, spans, values), nil
}

// literal checks that a literal reference names a shared resource of the
// import or a stored resource that is shared or the patient's own.
func (imp *ndjsonImport) literal(ctx context.Context, ref, patient string) error {
	typ, id, ok := literalRef(ref)
	if !ok {
		return fmt.Errorf("reference %q is not Type/id: %w", ref, store.ErrInvalid)
	}
	if imp.sp.shared(ctx, typ, id) {
		return nil
	}
	if store.ValidType(typ) != nil {
		return fmt.Errorf("reference %q resolves to nothing (%s is not a type this gateway holds): %w", ref, typ, store.ErrInvalid)
	}
	r, err := imp.in.store.Get(ctx, typ, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("reference %q resolves to nothing, in this import or in the records database: %w", ref, store.ErrInvalid)
	case err != nil:
		return err
	case r.PatientID != "" && r.PatientID != patient:
		return fmt.Errorf("reference %q names another patient's resource: %w", ref, store.ErrInvalid)
	}
	return nil
}

// isConditional reports whether ref is a conditional reference "Type?…".
func isConditional(ref string) bool {
	typ, _, ok := strings.Cut(ref, "?")
	return ok && typeRE.MatchString(typ)
}

// conditional resolves "Type?identifier=[system|]value" to "Type/id".
func (imp *ndjsonImport) conditional(ctx context.Context, ref string) (string, error) {
	typ, query, _ := strings.Cut(ref, "?")
	q, err := url.ParseQuery(query)
	if err != nil || len(q) != 1 || len(q["identifier"]) != 1 {
		return "", fmt.Errorf("conditional reference %q: only Type?identifier=[system|]value is resolved: %w", ref, store.ErrInvalid)
	}
	system, value, hasSystem := strings.Cut(q["identifier"][0], "|")
	if !hasSystem {
		system, value = "", system
	}
	if value == "" {
		return "", fmt.Errorf("conditional reference %q has no identifier value: %w", ref, store.ErrInvalid)
	}
	if !imp.loaded[typ] {
		if err := imp.loadStored(ctx, typ); err != nil {
			return "", err
		}
		imp.loaded[typ] = true
	}
	ids, err := imp.sp.match(ctx, typ, system, value, hasSystem)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 1:
		return typ + "/" + ids[0], nil
	case 0:
		return "", fmt.Errorf("conditional reference %q resolves to no %s, in this import or in the records database: %w", ref, typ, store.ErrInvalid)
	}
	return "", fmt.Errorf("conditional reference %q is ambiguous: %d resources match (%s): %w", ref, len(ids), strings.Join(ids[:min(3, len(ids))], ", "), store.ErrInvalid)
}

// loadStored adds the identifiers of the stored shared resources of typ to
// the spool (those the import does not replace), once per import.
func (imp *ndjsonImport) loadStored(ctx context.Context, typ string) error {
	if store.ValidType(typ) != nil || fhirval.InPatientCompartment(typ) {
		return nil // nothing stored to match
	}
	req := store.PageRequest{Count: store.MaxCount}
	for {
		page, err := imp.in.store.Search(ctx, "", store.Query{Type: typ, PageRequest: req})
		if err != nil {
			return fmt.Errorf("stored %s identifiers: %w", typ, err)
		}
		var found []*line
		for _, r := range page.Resources {
			if imp.sp.shared(ctx, typ, r.ID) {
				continue // this import's version counts
			}
			found = append(found, &line{typ: typ, id: r.ID, idents: identifiers(r.Raw)})
		}
		w, err := imp.sp.writer(ctx)
		if err != nil {
			return err
		}
		for _, l := range found {
			if err := w.idents(l); err != nil {
				w.rollback()
				return err
			}
		}
		if err := w.commit(); err != nil {
			return err
		}
		if page.Next == "" {
			return nil
		}
		req.Cursor = page.Next
	}
}

// identifiers returns a resource's identifiers that have a value.
func identifiers(raw []byte) []ident {
	var r struct {
		Identifier []struct {
			System string `json:"system"`
			Value  string `json:"value"`
		} `json:"identifier"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return nil
	}
	var out []ident
	for _, i := range r.Identifier {
		if i.Value != "" {
			out = append(out, ident{i.System, i.Value})
		}
	}
	return out
}

// --- the spool --------------------------------------------------------------

// spool is the import's temporary SQLite file.
type spool struct {
	db   *sql.DB
	path string
}

// spoolPattern names spool files; staleSpool is the age past which a spool
// is one a killed import left behind (an import writes its spool while it
// reads its input, and reads it back within the hour even for very large
// inputs).
const (
	spoolPattern = "medrec-ndjson-*.spool"
	staleSpool   = 24 * time.Hour
)

// openSpool creates a spool in dir (mode 0600: it holds health data), and
// removes the spools killed imports left there.
func openSpool(ctx context.Context, dir string) (*spool, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if old, err := filepath.Glob(filepath.Join(dir, spoolPattern)); err == nil {
		for _, p := range old {
			if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > staleSpool {
				os.Remove(p)
			}
		}
	}
	f, err := os.CreateTemp(dir, spoolPattern)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	path := f.Name()
	f.Close()
	q := url.Values{}
	q.Add("_pragma", "journal_mode(OFF)")
	q.Add("_pragma", "synchronous(OFF)")
	q.Add("_pragma", "cache_size(-16000)") // 16 MB of page cache
	q.Add("_pragma", "temp_store(FILE)")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("spool: %w", err)
	}
	db.SetMaxOpenConns(1)
	sp := &spool{db: db, path: path}
	_, err = db.ExecContext(ctx, `
CREATE TABLE lines (patient TEXT NOT NULL, file INTEGER NOT NULL, line INTEGER NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL, raw BLOB NOT NULL);
CREATE TABLE bad (patient TEXT NOT NULL, file INTEGER NOT NULL, line INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE idents (rtype TEXT NOT NULL, system TEXT NOT NULL, value TEXT NOT NULL, id TEXT NOT NULL);`)
	if err != nil {
		sp.close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return sp, nil
}

func (sp *spool) close() {
	sp.db.Close()
	os.Remove(sp.path)
	for _, suffix := range []string{"-journal", "-wal", "-shm"} {
		os.Remove(sp.path + suffix)
	}
}

// index builds the second pass's indexes once the first pass is done.
func (sp *spool) index(ctx context.Context) error {
	_, err := sp.db.ExecContext(ctx, `
CREATE INDEX lines_patient ON lines (patient, file, line);
CREATE INDEX lines_order ON lines (file, line) WHERE patient = '';
CREATE INDEX lines_shared ON lines (rtype, id) WHERE patient = '';
CREATE INDEX lines_id ON lines (id) WHERE patient = '';
CREATE INDEX bad_patient ON bad (patient, file, line);
CREATE INDEX idents_value ON idents (rtype, value);`)
	if err != nil {
		return fmt.Errorf("spool index: %w", err)
	}
	return nil
}

// spoolWriter writes to the spool in one transaction.
type spoolWriter struct {
	tx                *sql.Tx
	line, bads, ident *sql.Stmt
}

func (sp *spool) writer(ctx context.Context) (*spoolWriter, error) {
	tx, err := sp.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	w := &spoolWriter{tx: tx}
	for _, s := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&w.line, `INSERT INTO lines (patient, file, line, rtype, id, raw) VALUES (?, ?, ?, ?, ?, ?)`},
		{&w.bads, `INSERT INTO bad (patient, file, line, reason) VALUES (?, ?, ?, ?)`},
		{&w.ident, `INSERT INTO idents (rtype, system, value, id) VALUES (?, ?, ?, ?)`},
	} {
		if *s.st, err = tx.PrepareContext(ctx, s.q); err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	return w, nil
}

func (w *spoolWriter) put(l *line) error {
	if _, err := w.line.Exec(l.patient, l.file, l.n, l.typ, l.id, l.raw); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return w.idents(l)
}

func (w *spoolWriter) idents(l *line) error {
	for _, i := range l.idents {
		if _, err := w.ident.Exec(l.typ, i.system, i.value, l.id); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

func (w *spoolWriter) bad(l *line) error {
	if _, err := w.bads.Exec(l.patient, l.file, l.n, l.bad); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (w *spoolWriter) commit() error {
	if err := w.tx.Commit(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (w *spoolWriter) rollback() { w.tx.Rollback() }

// patients returns every patient of the import, good lines or bad, in order.
func (sp *spool) patients(ctx context.Context) ([]string, error) {
	return sp.strings(ctx, `SELECT DISTINCT patient FROM lines WHERE patient <> '' UNION SELECT DISTINCT patient FROM bad WHERE patient <> '' ORDER BY 1`)
}

// strings runs a query of one text column and returns its values.
func (sp *spool) strings(ctx context.Context, q string, args ...any) ([]string, error) {
	rows, err := sp.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return out, nil
}

// lines returns a patient's spooled resources ("" for the shared ones), in
// input order.
func (sp *spool) lines(ctx context.Context, patient string) ([]spooled, error) {
	rows, err := sp.db.QueryContext(ctx, `SELECT file, line, rtype, id, raw FROM lines WHERE patient = ? ORDER BY file, line`, patient)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer rows.Close()
	var out []spooled
	for rows.Next() {
		var s spooled
		if err := rows.Scan(&s.file, &s.n, &s.typ, &s.id, &s.raw); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

type badLine struct {
	spooled
	reason string
}

func (sp *spool) badLines(ctx context.Context, patient string) ([]badLine, error) {
	rows, err := sp.db.QueryContext(ctx, `SELECT file, line, reason FROM bad WHERE patient = ? ORDER BY file, line`, patient)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer rows.Close()
	var out []badLine
	for rows.Next() {
		var b badLine
		if err := rows.Scan(&b.file, &b.n, &b.reason); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// sharedPage returns up to n shared resources after after, in input order.
func (sp *spool) sharedPage(ctx context.Context, after spooled, n int) ([]spooled, error) {
	rows, err := sp.db.QueryContext(ctx, `SELECT file, line, rtype, id, raw FROM lines WHERE patient = '' AND (file > ? OR (file = ? AND line > ?)) ORDER BY file, line LIMIT ?`,
		after.file, after.file, after.n, n)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer rows.Close()
	var out []spooled
	for rows.Next() {
		var s spooled
		if err := rows.Scan(&s.file, &s.n, &s.typ, &s.id, &s.raw); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// duplicates returns the type/id of every shared resource the import has
// more than once.
func (sp *spool) duplicates(ctx context.Context) (map[string]bool, error) {
	rows, err := sp.db.QueryContext(ctx, `SELECT rtype, id FROM lines WHERE patient = '' GROUP BY rtype, id HAVING COUNT(*) > 1`)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var typ, id string
		if err := rows.Scan(&typ, &id); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		out[typ+"/"+id] = true
	}
	return out, rows.Err()
}

// shared reports whether the import has the shared resource typ/id.
func (sp *spool) shared(ctx context.Context, typ, id string) bool {
	var one int
	return sp.db.QueryRowContext(ctx, `SELECT 1 FROM lines WHERE patient = '' AND rtype = ? AND id = ?`, typ, id).Scan(&one) == nil
}

// sharedID reports whether the import has a shared resource with this id.
func (sp *spool) sharedID(ctx context.Context, id string) bool {
	var one int
	return sp.db.QueryRowContext(ctx, `SELECT 1 FROM lines WHERE patient = '' AND id IN (?, ?)`, id, strings.ToLower(id)).Scan(&one) == nil
}

// match returns the ids of the resources of typ with the identifier.
func (sp *spool) match(ctx context.Context, typ, system, value string, bySystem bool) ([]string, error) {
	q := `SELECT DISTINCT id FROM idents WHERE rtype = ? AND value = ?`
	args := []any{typ, value}
	if bySystem {
		q += ` AND system = ?`
		args = append(args, system)
	}
	return sp.strings(ctx, q+` ORDER BY id`, args...)
}
