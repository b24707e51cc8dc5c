package sqlstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/medrec-zk/medrec/anchor"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Apply implements store.Records.
func (s *DB) Apply(ctx context.Context, b store.Batch) ([]store.Result, error) {
	if err := validateBatch(b); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	now := b.Time
	if now.IsZero() {
		now = time.Now()
	}
	now = store.Micro(now)
	var results []store.Result
	err := s.write(ctx, func(tx *sql.Tx) error {
		results = make([]store.Result, 0, len(b.Writes))
		a := applier{s: s, tx: tx, ctx: ctx, patient: b.PatientID, now: now}
		if err := a.lockPatient(b.CreatePatient); err != nil {
			return err
		}
		for i, w := range b.Writes {
			r, err := a.write(w)
			if err != nil {
				return fmt.Errorf("write %d (%s/%s): %w", i, w.Type, w.ID, err)
			}
			results = append(results, r)
		}
		if a.seq != a.seq0 {
			if _, err := tx.ExecContext(ctx, s.d.q(`UPDATE patients SET seq = ? WHERE id = ?`), int64(a.seq), b.PatientID); err != nil {
				return dbErr("update patient seq", err)
			}
		}
		if len(b.Log) > 0 {
			entries := append([]store.LogEntry(nil), b.Log...)
			if err := s.appendLog(ctx, tx, entries); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply batch for patient %q: %w", b.PatientID, err)
	}
	return results, nil
}

func validateBatch(b store.Batch) error {
	if b.PatientID != "" {
		if err := store.ValidID(b.PatientID); err != nil {
			return fmt.Errorf("patient: %w", err)
		}
	} else if b.CreatePatient {
		return fmt.Errorf("CreatePatient without a patient id: %w", store.ErrInvalid)
	}
	for i, w := range b.Writes {
		if err := validateWrite(w, b.PatientID); err != nil {
			return fmt.Errorf("write %d: %w", i, err)
		}
	}
	for i, e := range b.Log {
		if err := store.ValidateEntry(e); err != nil {
			return fmt.Errorf("log entry %d: %w", i, err)
		}
	}
	return nil
}

func validateWrite(w store.Write, patient string) error {
	if err := store.ValidType(w.Type); err != nil {
		return err
	}
	if err := store.ValidID(w.ID); err != nil {
		return err
	}
	if w.Mode < store.Create || w.Mode > store.CreateIfAbsent {
		return fmt.Errorf("mode %d: %w", w.Mode, store.ErrInvalid)
	}
	if w.IfVersion < 0 {
		return fmt.Errorf("if-version %d: %w", w.IfVersion, store.ErrInvalid)
	}
	if !w.Shared && patient == "" {
		return fmt.Errorf("%s/%s: a patient resource needs a patient: %w", w.Type, w.ID, store.ErrInvalid)
	}
	if len(w.Raw) == 0 || !json.Valid(w.Raw) {
		return fmt.Errorf("%s/%s: body is not JSON: %w", w.Type, w.ID, store.ErrInvalid)
	}
	return nil
}

// applier carries one Apply transaction.
type applier struct {
	s         *DB
	tx        *sql.Tx
	ctx       context.Context
	patient   string
	now       time.Time
	seq0, seq uint64               // patient change sequence before and during the batch
	stmts     map[string]*sql.Stmt // prepared once per batch, closed with the transaction
}

// stmt returns a statement of the batch, preparing it on first use.
func (a *applier) stmt(query string) (*sql.Stmt, error) {
	if st, ok := a.stmts[query]; ok {
		return st, nil
	}
	st, err := a.tx.PrepareContext(a.ctx, a.s.d.q(query))
	if err != nil {
		return nil, dbErr("prepare", err)
	}
	if a.stmts == nil {
		a.stmts = map[string]*sql.Stmt{}
	}
	a.stmts[query] = st
	return st, nil
}

func (a *applier) exec(query string, args ...any) (sql.Result, error) {
	st, err := a.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(a.ctx, args...)
}

func (a *applier) queryRow(query string, args ...any) *sql.Row {
	st, err := a.stmt(query)
	if err != nil {
		// Let Scan report it: QueryRowContext on a failed prepare is not
		// possible, so run the query unprepared.
		return a.tx.QueryRowContext(a.ctx, a.s.d.q(query), args...)
	}
	return st.QueryRowContext(a.ctx, args...)
}

// lockPatient creates the patient if asked, then locks its row and reads its
// change sequence.
func (a *applier) lockPatient(create bool) error {
	if a.patient == "" {
		return nil
	}
	if create {
		_, err := a.tx.ExecContext(a.ctx, a.s.d.q(`INSERT INTO patients (id, created_us) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`),
			a.patient, micros(a.now))
		if err != nil {
			return dbErr("create patient", err)
		}
	}
	var seq int64
	err := a.tx.QueryRowContext(a.ctx, a.s.d.q(`SELECT seq FROM patients WHERE id = ?`+a.s.d.forUpdate), a.patient).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("patient %s: %w", a.patient, store.ErrNotFound)
	}
	if err != nil {
		return dbErr("lock patient", err)
	}
	a.seq0, a.seq = uint64(seq), uint64(seq)
	return nil
}

type current struct {
	version int64
	patient sql.NullString
	updated int64
	sha     []byte
	seq     int64
}

func (a *applier) current(typ, id string) (*current, error) {
	var c current
	err := a.queryRow(`SELECT version, patient_id, last_updated_us, sha256, seq FROM resources WHERE rtype = ? AND id = ?`+a.s.d.forUpdate, typ, id).
		Scan(&c.version, &c.patient, &c.updated, &c.sha, &c.seq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, dbErr("read resource", err)
	}
	return &c, nil
}

func (a *applier) write(w store.Write) (store.Result, error) {
	owner := a.patient
	if w.Shared {
		owner = ""
	}
	sum := sha256.Sum256(w.Raw)
	cur, err := a.current(w.Type, w.ID)
	if err != nil {
		return store.Result{}, err
	}
	if cur == nil && w.Mode == store.CreateIfAbsent {
		// Insert-or-ignore, so that concurrent batches carrying the same
		// shared resource both succeed.
		res, err := a.exec(`INSERT INTO resources (rtype, id, version, patient_id, last_updated_us, sha256, seq) VALUES (?, ?, 1, ?, ?, ?, ?) ON CONFLICT (rtype, id) DO NOTHING`,
			w.Type, w.ID, nullable(owner), micros(a.now), sum[:], a.nextSeq(owner))
		if err != nil {
			return store.Result{}, dbErr("insert resource", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return a.newVersion(w, owner, 1, sum, store.EffectCreated)
		}
		a.undoSeq(owner)
		if cur, err = a.current(w.Type, w.ID); err != nil || cur == nil {
			return store.Result{}, fmt.Errorf("re-read resource: %w", errors.Join(err, store.ErrConflict))
		}
	}
	if cur != nil {
		meta := store.Meta{Type: w.Type, ID: w.ID, Version: cur.version, LastUpdated: fromMicros(cur.updated),
			PatientID: cur.patient.String, Seq: uint64(cur.seq)}
		if meta.SHA256, err = hash32(cur.sha); err != nil {
			return store.Result{}, err
		}
		switch {
		case cur.patient.String != owner && owner == "":
			return store.Result{}, fmt.Errorf("exists as a patient resource, not a shared one: %w", store.ErrConflict)
		case cur.patient.String != owner:
			return store.Result{}, fmt.Errorf("belongs to another patient: %w", store.ErrConflict)
		case w.Mode == store.Create:
			return store.Result{}, fmt.Errorf("already exists: %w", store.ErrConflict)
		case w.Mode == store.CreateIfAbsent:
			return store.Result{Meta: meta, Effect: store.EffectUnchanged}, nil
		case w.IfVersion != 0 && w.IfVersion != cur.version:
			return store.Result{}, fmt.Errorf("current version is %d, not %d: %w", cur.version, w.IfVersion, store.ErrConflict)
		case meta.SHA256 == sum:
			return store.Result{Meta: meta, Effect: store.EffectUnchanged}, nil
		}
		v := cur.version + 1
		_, err := a.exec(`UPDATE resources SET version = ?, last_updated_us = ?, sha256 = ?, seq = ? WHERE rtype = ? AND id = ?`,
			v, micros(a.now), sum[:], a.nextSeq(owner), w.Type, w.ID)
		if err != nil {
			return store.Result{}, dbErr("update resource", err)
		}
		return a.newVersion(w, owner, v, sum, store.EffectUpdated)
	}
	switch {
	case w.Mode == store.Update:
		return store.Result{}, fmt.Errorf("no such resource: %w", store.ErrNotFound)
	case w.IfVersion != 0:
		return store.Result{}, fmt.Errorf("no such resource, expected version %d: %w", w.IfVersion, store.ErrConflict)
	}
	_, err = a.exec(`INSERT INTO resources (rtype, id, version, patient_id, last_updated_us, sha256, seq) VALUES (?, ?, 1, ?, ?, ?, ?)`,
		w.Type, w.ID, nullable(owner), micros(a.now), sum[:], a.nextSeq(owner))
	if err != nil {
		return store.Result{}, dbErr("insert resource", err)
	}
	return a.newVersion(w, owner, 1, sum, store.EffectCreated)
}

// nextSeq advances the patient's change sequence for a change to a resource
// of owner, returning the new number (0 for shared resources).
func (a *applier) nextSeq(owner string) int64 {
	if owner == "" {
		return 0
	}
	a.seq++
	return int64(a.seq)
}

func (a *applier) undoSeq(owner string) {
	if owner != "" {
		a.seq--
	}
}

// newVersion stores the version's JSON and, for patient resources, the change.
func (a *applier) newVersion(w store.Write, owner string, version int64, sum [32]byte, effect store.Effect) (store.Result, error) {
	var seq uint64
	if owner != "" {
		seq = a.seq
	}
	_, err := a.exec(`INSERT INTO resource_versions (rtype, id, version, patient_id, last_updated_us, sha256, seq, raw) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		w.Type, w.ID, version, nullable(owner), micros(a.now), sum[:], int64(seq), w.Raw)
	if err != nil {
		return store.Result{}, dbErr("insert version", err)
	}
	if err := a.index(w.Type, w.ID, owner, w.Raw, version > 1); err != nil {
		return store.Result{}, err
	}
	if owner != "" {
		_, err = a.exec(`INSERT INTO changes (patient_id, seq, rtype, id, version, time_us) VALUES (?, ?, ?, ?, ?, ?)`,
			owner, int64(seq), w.Type, w.ID, version, micros(a.now))
		if err != nil {
			return store.Result{}, dbErr("insert change", err)
		}
	}
	return store.Result{
		Meta: store.Meta{Type: w.Type, ID: w.ID, Version: version, LastUpdated: a.now, SHA256: sum,
			PatientID: owner, Seq: seq},
		Effect: effect,
	}, nil
}

const selectResource = `SELECT r.rtype, r.id, r.version, r.patient_id, r.last_updated_us, r.sha256, r.seq, v.raw
FROM resources r JOIN resource_versions v ON v.rtype = r.rtype AND v.id = r.id AND v.version = r.version `

func scanResource(sc interface{ Scan(...any) error }) (store.Resource, error) {
	var (
		r       store.Resource
		patient sql.NullString
		updated int64
		sha     []byte
		seq     int64
	)
	if err := sc.Scan(&r.Type, &r.ID, &r.Version, &patient, &updated, &sha, &seq, &r.Raw); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return r, store.ErrNotFound
		}
		return r, dbErr("read resource", err)
	}
	r.PatientID, r.LastUpdated, r.Seq = patient.String, fromMicros(updated), uint64(seq)
	var err error
	r.SHA256, err = hash32(sha)
	return r, err
}

// Get implements store.Records.
func (s *DB) Get(ctx context.Context, typ, id string) (store.Resource, error) {
	st, err := s.prepared(ctx, selectResource+`WHERE r.rtype = ? AND r.id = ?`)
	if err != nil {
		return store.Resource{}, fmt.Errorf("get %s/%s: %w", typ, id, err)
	}
	r, err := scanResource(st.QueryRowContext(ctx, typ, id))
	if err != nil {
		return r, fmt.Errorf("get %s/%s: %w", typ, id, err)
	}
	return r, nil
}

// GetVersion implements store.Records.
func (s *DB) GetVersion(ctx context.Context, typ, id string, version int64) (store.Resource, error) {
	r, err := scanResource(s.db.QueryRowContext(ctx, s.d.q(`SELECT rtype, id, version, patient_id, last_updated_us, sha256, seq, raw
FROM resource_versions WHERE rtype = ? AND id = ? AND version = ?`), typ, id, version))
	if err != nil {
		return r, fmt.Errorf("get %s/%s/_history/%d: %w", typ, id, version, err)
	}
	return r, nil
}

// Changes implements store.Records.
func (s *DB) Changes(ctx context.Context, patientID string, since uint64, limit int) ([]store.Change, error) {
	limit = store.PageRequest{Count: limit}.Limit()
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT seq, rtype, id, version, time_us FROM changes WHERE patient_id = ? AND seq > ? ORDER BY seq LIMIT ?`),
		patientID, int64(since), limit)
	if err != nil {
		return nil, fmt.Errorf("changes of patient %s: %w", patientID, dbErr("query", err))
	}
	defer rows.Close()
	var out []store.Change
	for rows.Next() {
		var (
			c       store.Change
			seq, us int64
		)
		if err := rows.Scan(&seq, &c.Type, &c.ID, &c.Version, &us); err != nil {
			return nil, fmt.Errorf("changes of patient %s: %w", patientID, dbErr("scan", err))
		}
		c.Seq, c.Time = uint64(seq), fromMicros(us)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("changes of patient %s: %w", patientID, dbErr("query", err))
	}
	if len(out) == 0 {
		if _, err := s.Patient(ctx, patientID); err != nil {
			return nil, fmt.Errorf("changes: %w", err)
		}
	}
	return out, nil
}

// State implements store.Records.
func (s *DB) State(ctx context.Context, patientID string) (store.State, error) {
	var st store.State
	err := s.read(ctx, func(tx *sql.Tx) error {
		var (
			tag           []byte
			seq, anchored int64
		)
		err := tx.QueryRowContext(ctx, s.d.q(`SELECT tag, seq, anchored_seq FROM patients WHERE id = ?`), patientID).Scan(&tag, &seq, &anchored)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return dbErr("read patient", err)
		}
		if tag != nil {
			t, err := hash32(tag)
			if err != nil {
				return err
			}
			st.Tag = (*store.Tag)(&t)
		}
		entries, err := s.stateEntries(ctx, tx, patientID)
		if err != nil {
			return err
		}
		st.PatientID, st.Seq, st.Count = patientID, uint64(seq), len(entries)
		st.Hash = store.StateHash(entries)
		st.Dirty = anchored < seq
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("state of patient %s: %w", patientID, err)
	}
	return st, nil
}

// stateEntries returns the patient's current resource versions.
func (s *DB) stateEntries(ctx context.Context, q querier, patientID string) ([]store.StateEntry, error) {
	rows, err := q.QueryContext(ctx, s.d.q(`SELECT rtype, id, version, sha256 FROM resources WHERE patient_id = ?`), patientID)
	if err != nil {
		return nil, dbErr("query state", err)
	}
	defer rows.Close()
	var out []store.StateEntry
	for rows.Next() {
		var (
			e   store.StateEntry
			sha []byte
		)
		if err := rows.Scan(&e.Type, &e.ID, &e.Version, &sha); err != nil {
			return nil, dbErr("scan state", err)
		}
		if e.SHA256, err = hash32(sha); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, dbErr("query state", rows.Err())
}

// History implements store.Records.
func (s *DB) History(ctx context.Context, patientID string, after uint64, limit int) ([]store.HistoryEntry, error) {
	var out []store.HistoryEntry
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if after < math.MaxInt64 { // change numbers are int64: none lies beyond
			out, err = s.history(ctx, tx, patientID, after, min(after+uint64(store.PageRequest{Count: limit}.Limit()), math.MaxInt64))
		}
		if err == nil && len(out) == 0 {
			err = tx.QueryRowContext(ctx, s.d.q(`SELECT 1 FROM patients WHERE id = ?`), patientID).Scan(new(int))
			if errors.Is(err, sql.ErrNoRows) {
				err = fmt.Errorf("patient %s: %w", patientID, store.ErrNotFound)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("history of patient %s after %d: %w", patientID, after, err)
	}
	return out, nil
}

// history returns the patient's history entries after..through (change
// numbers after+1 … through, as far as they exist): the versions those
// changes wrote, with their SHA-256. Every version row carries the change
// that wrote it, so one index range gives the history in order. A gap in
// the numbering is ErrTampered: every change writes exactly one version.
func (s *DB) history(ctx context.Context, tx *sql.Tx, patientID string, after, through uint64) ([]store.HistoryEntry, error) {
	rows, err := s.txQuery(ctx, tx, `SELECT seq, rtype, id, version, sha256 FROM resource_versions
WHERE patient_id = ? AND seq > ? AND seq <= ? ORDER BY seq`, patientID, int64(after), int64(through))
	if err != nil {
		return nil, dbErr("query history", err)
	}
	defer rows.Close()
	var out []store.HistoryEntry
	for rows.Next() {
		var (
			e   store.HistoryEntry
			seq int64
			sha []byte
		)
		if err := rows.Scan(&seq, &e.Type, &e.ID, &e.Version, &sha); err != nil {
			return nil, dbErr("scan history", err)
		}
		e.Seq = uint64(seq)
		if want := after + uint64(len(out)) + 1; e.Seq != want {
			return nil, fmt.Errorf("change %d where %d should be: %w", e.Seq, want, store.ErrTampered)
		}
		if e.SHA256, err = hash32(sha); err != nil {
			return nil, fmt.Errorf("change %d: %w: %w", e.Seq, store.ErrTampered, err)
		}
		out = append(out, e)
	}
	return out, dbErr("query history", rows.Err())
}

// historyAt returns the patient's history of its first size changes,
// ErrTampered unless all of them are stored.
func (s *DB) historyAt(ctx context.Context, tx *sql.Tx, patientID string, size uint64) (store.History, error) {
	var f anchor.Frontier
	for f.Size() < size {
		page, err := s.history(ctx, tx, patientID, f.Size(), min(size, f.Size()+historyPage))
		if err != nil {
			return store.History{}, err
		}
		if len(page) == 0 {
			return store.History{}, fmt.Errorf("the history ends at change %d, not %d: %w", f.Size(), size, store.ErrTampered)
		}
		for _, e := range page {
			f.Append(store.HistoryLeaf(e))
		}
	}
	return store.History{Size: size, Root: f.Root()}, nil
}

// historyPage is how many changes historyAt reads at a time.
const historyPage = 5000
