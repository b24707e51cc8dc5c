package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Dirty implements store.Anchors.
func (s *DB) Dirty(ctx context.Context, logEnd uint64) ([]store.PatientState, error) {
	var out []store.PatientState
	err := s.read(ctx, func(tx *sql.Tx) error {
		from, err := s.logEndOfLastAnchor(ctx, tx)
		if err != nil {
			return err
		}
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT next FROM log_head WHERE id = 1`).Scan(&next); err != nil {
			return dbErr("read log head", err)
		}
		if logEnd < from || logEnd > uint64(next) {
			return fmt.Errorf("the next batch cannot end at log seq %d: the last one ended at %d, the log has %d entries: %w", logEnd, from, next, store.ErrConflict)
		}
		// Dirty: records changed since the last anchor, or entries about the
		// patient in the next batch's log range.
		rows, err := tx.QueryContext(ctx, s.d.q(`SELECT id, tag, seq, anchored_seq, history_root, log_through, log_count, log_head FROM patients
WHERE tag IS NOT NULL AND (anchored_seq < seq OR id IN (SELECT patient_id FROM access_log WHERE seq >= ? AND seq < ?))
ORDER BY tag`), int64(from), int64(logEnd))
		if err != nil {
			return dbErr("query dirty patients", err)
		}
		defer rows.Close()
		var (
			logs  []store.LogCommitment
			known []*store.History // the anchored history, where the records did not change since
		)
		for rows.Next() {
			var (
				ps                            store.PatientState
				c                             store.LogCommitment
				tag, root, head               []byte
				seq, anchored, through, count int64
			)
			if err := rows.Scan(&ps.PatientID, &tag, &seq, &anchored, &root, &through, &count, &head); err != nil {
				return dbErr("scan dirty patients", err)
			}
			var err1, err2 error
			ps.Tag, err1 = hash32(tag)
			c.Head, err2 = hash32(head)
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			ps.Seq, c.Through, c.Count = uint64(seq), uint64(through), uint64(count)
			var h *store.History
			if anchored == seq && root != nil {
				h = &store.History{Size: uint64(seq)}
				if h.Root, err = hash32(root); err != nil {
					return err
				}
			}
			out = append(out, ps)
			logs = append(logs, c)
			known = append(known, h)
		}
		if err := rows.Err(); err != nil {
			return dbErr("query dirty patients", err)
		}
		rows.Close()
		for i := range out {
			ps := &out[i]
			// A patient dirty for new log entries only keeps its anchored
			// history; a changed one is recomputed from the stored rows, so
			// an edited earlier version shows in the root it anchors.
			if known[i] != nil {
				ps.History = *known[i]
			} else if ps.History, err = s.historyAt(ctx, tx, ps.PatientID, ps.Seq); err != nil {
				return fmt.Errorf("patient %s: %w", ps.PatientID, err)
			}
			if ps.Log, err = s.extendLog(ctx, tx, ps.PatientID, logs[i], logEnd); err != nil {
				return fmt.Errorf("patient %s: %w", ps.PatientID, err)
			}
			ps.Hash = store.StateHashV2(ps.History, ps.Log)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dirty patients: %w", err)
	}
	return out, nil
}

// logEndOfLastAnchor returns where the last batch's log range ended (0
// before the first batch): where the next one starts.
func (s *DB) logEndOfLastAnchor(ctx context.Context, q querier) (uint64, error) {
	var from, count int64
	err := q.QueryRowContext(ctx, `SELECT log_from, log_count FROM anchors ORDER BY batch DESC LIMIT 1`).Scan(&from, &count)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, dbErr("read last anchor", err)
	}
	return uint64(from + count), nil
}

// extendLog extends a patient's log commitment c over the patient's entries
// from c.Through up to (not including) through.
func (s *DB) extendLog(ctx context.Context, tx *sql.Tx, patientID string, c store.LogCommitment, through uint64) (store.LogCommitment, error) {
	if through < c.Through {
		return c, fmt.Errorf("log commitment through %d cannot go back to %d: %w", c.Through, through, store.ErrConflict)
	}
	rows, err := s.txQuery(ctx, tx, `SELECT seq, hash FROM access_log WHERE patient_id = ? AND seq >= ? AND seq < ? ORDER BY seq`,
		patientID, int64(c.Through), int64(through))
	if err != nil {
		return c, dbErr("query patient log", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq  int64
			hash []byte
		)
		if err := rows.Scan(&seq, &hash); err != nil {
			return c, dbErr("scan patient log", err)
		}
		h, err := hash32(hash)
		if err != nil {
			return c, fmt.Errorf("log entry %d: %w: %w", seq, store.ErrTampered, err)
		}
		c = c.Extend(uint64(seq), h)
	}
	c.Through = through
	return c, dbErr("query patient log", rows.Err())
}

// AddAnchor implements store.Anchors. Each state must be the patient's true
// state at its change number and the batch's end (recomputed from the
// stored rows), so an anchor never commits to a state the database does
// not hold.
func (s *DB) AddAnchor(ctx context.Context, a store.Anchor) (store.Anchor, error) {
	if a.Time.IsZero() {
		a.Time = time.Now()
	}
	a.Time = store.Micro(a.Time)
	a.States = slices.Clone(a.States)
	slices.SortFunc(a.States, func(x, y store.PatientState) int { return bytes.Compare(x.Tag[:], y.Tag[:]) })
	for i, st := range a.States {
		switch {
		case i > 0 && st.Tag == a.States[i-1].Tag:
			return store.Anchor{}, fmt.Errorf("add anchor: tag %s twice: %w", st.Tag, store.ErrInvalid)
		case st.Legacy:
			return store.Anchor{}, fmt.Errorf("add anchor: tag %s: a v1 state: %w", st.Tag, store.ErrInvalid)
		case st.History.Size != st.Seq:
			return store.Anchor{}, fmt.Errorf("add anchor: tag %s: a history of %d changes at change %d: %w", st.Tag, st.History.Size, st.Seq, store.ErrInvalid)
		}
	}
	// The Anchors contract's rules for a batch without log entries.
	if a.LogCount == 0 && a.LogRoot != ([32]byte{}) {
		return store.Anchor{}, fmt.Errorf("add anchor: a log root without log entries: %w", store.ErrInvalid)
	}
	if a.LogCount == 0 && a.StateRoot == ([32]byte{}) {
		return store.Anchor{}, fmt.Errorf("add anchor: an empty batch: %w", store.ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		batch := int64(-1)
		err := tx.QueryRowContext(ctx, `SELECT batch FROM anchors ORDER BY batch DESC LIMIT 1`).Scan(&batch)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return dbErr("read last anchor", err)
		}
		want, err := s.logEndOfLastAnchor(ctx, tx)
		if err != nil {
			return err
		}
		if a.LogFrom != want {
			return fmt.Errorf("log range starts at %d, want %d: %w", a.LogFrom, want, store.ErrConflict)
		}
		var next int64
		if err := tx.QueryRowContext(ctx, `SELECT next FROM log_head WHERE id = 1`).Scan(&next); err != nil {
			return dbErr("read log head", err)
		}
		if a.LogFrom+a.LogCount > uint64(next) {
			return fmt.Errorf("log range [%d, %d) goes past the log's %d entries: %w", a.LogFrom, a.LogFrom+a.LogCount, next, store.ErrConflict)
		}
		// Batch numbers are assigned here, not by a sequence, so they have no
		// gaps; a concurrent AddAnchor fails on the primary key (ErrConflict).
		batch++
		_, err = tx.ExecContext(ctx, s.d.q(`INSERT INTO anchors (batch, time_us, log_from, log_count, log_root, state_root) VALUES (?, ?, ?, ?, ?, ?)`),
			batch, micros(a.Time), int64(a.LogFrom), int64(a.LogCount), a.LogRoot[:], a.StateRoot[:])
		if err != nil {
			return dbErr("insert anchor", err)
		}
		a.Batch = uint64(batch)
		for _, st := range a.States {
			if err := s.anchorState(ctx, tx, batch, a.LogFrom+a.LogCount, st); err != nil {
				return fmt.Errorf("state of tag %s: %w", st.Tag, err)
			}
		}
		return nil
	})
	if err != nil {
		return store.Anchor{}, fmt.Errorf("add anchor: %w", err)
	}
	return a, nil
}

// anchorState checks and stores one leaf of batch, whose log range ends at
// logEnd, and moves the patient's anchored marks forward.
func (s *DB) anchorState(ctx context.Context, tx *sql.Tx, batch int64, logEnd uint64, st store.PatientState) error {
	var (
		patient                       string
		seq, anchored, through, count int64
		root, head                    []byte
		prev                          store.LogCommitment
	)
	rows, err := s.txQuery(ctx, tx, `SELECT id, seq, anchored_seq, history_root, log_through, log_count, log_head FROM patients WHERE tag = ?`+s.d.forUpdate, st.Tag[:])
	if err != nil {
		return dbErr("read patient", err)
	}
	err = sql.ErrNoRows
	if rows.Next() {
		err = rows.Scan(&patient, &seq, &anchored, &root, &through, &count, &head)
	}
	if cerr := errors.Join(rows.Err(), rows.Close()); cerr != nil {
		err = cerr
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("no patient has this tag: %w", store.ErrNotFound)
	}
	if err != nil {
		return dbErr("read patient", err)
	}
	if prev.Head, err = hash32(head); err != nil {
		return err
	}
	prev.Through, prev.Count = uint64(through), uint64(count)
	switch {
	case patient != st.PatientID:
		return fmt.Errorf("tag belongs to patient %s, not %s: %w", patient, st.PatientID, store.ErrConflict)
	case st.Seq > uint64(seq):
		return fmt.Errorf("state at change %d, but the patient's last change is %d: %w", st.Seq, seq, store.ErrConflict)
	case int64(st.Seq) < anchored:
		return fmt.Errorf("state at change %d, but change %d is anchored already: %w", st.Seq, anchored, store.ErrConflict)
	case st.Log.Through != logEnd:
		return fmt.Errorf("log commitment through %d, but the batch ends at %d: %w", st.Log.Through, logEnd, store.ErrConflict)
	}
	var h store.History
	if int64(st.Seq) == anchored && root != nil {
		h.Size = st.Seq // unchanged since its last anchor (see Dirty)
		if h.Root, err = hash32(root); err != nil {
			return err
		}
	} else if h, err = s.historyAt(ctx, tx, patient, st.Seq); err != nil {
		return err
	}
	if h != st.History {
		return fmt.Errorf("history is not the patient's first %d changes: %w", st.Seq, store.ErrConflict)
	}
	c, err := s.extendLog(ctx, tx, patient, prev, logEnd)
	if err != nil {
		return err
	}
	if c != st.Log {
		return fmt.Errorf("log commitment is not the patient's entries before %d: %w", logEnd, store.ErrConflict)
	}
	if store.StateHashV2(st.History, st.Log) != st.Hash {
		return fmt.Errorf("hash is not the state of its history and log commitment: %w", store.ErrConflict)
	}
	_, err = s.txExec(ctx, tx, `INSERT INTO anchor_states (batch, tag, patient_id, seq, hash, history_root, log_through, log_count, log_head) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		batch, st.Tag[:], patient, int64(st.Seq), st.Hash[:], st.History.Root[:], int64(st.Log.Through), int64(st.Log.Count), st.Log.Head[:])
	if err != nil {
		return dbErr("insert anchor state", err)
	}
	_, err = s.txExec(ctx, tx, `UPDATE patients SET anchored_seq = ?, history_root = ?, log_through = ?, log_count = ?, log_head = ? WHERE id = ?`,
		int64(st.Seq), st.History.Root[:], int64(st.Log.Through), int64(st.Log.Count), st.Log.Head[:], patient)
	return dbErr("mark anchored", err)
}

const selectAnchor = `SELECT batch, time_us, log_from, log_count, log_root, state_root, tx FROM anchors `

// Anchor implements store.Anchors.
func (s *DB) Anchor(ctx context.Context, batch uint64) (store.Anchor, error) {
	var a store.Anchor
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		if a, err = scanAnchor(tx.QueryRowContext(ctx, s.d.q(selectAnchor+`WHERE batch = ?`), int64(batch))); err != nil {
			return err
		}
		a.States, err = s.states(ctx, tx, `SELECT tag, patient_id, seq, hash, history_root, log_through, log_count, log_head
FROM anchor_states WHERE batch = ? ORDER BY tag`, int64(batch))
		return err
	})
	if err != nil {
		return store.Anchor{}, fmt.Errorf("anchor batch %d: %w", batch, err)
	}
	return a, nil
}

// LatestStates implements store.Anchors: per tag ever anchored, the leaf
// of the newest batch that has one (the index on (tag, batch) gives each
// tag's newest batch). A tag staff unmapped keeps its last leaf, as the
// tree the gateway anchors does.
func (s *DB) LatestStates(ctx context.Context) ([]store.PatientState, error) {
	var out []store.PatientState
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		out, err = s.states(ctx, tx, `SELECT a.tag, a.patient_id, a.seq, a.hash, a.history_root, a.log_through, a.log_count, a.log_head
FROM (SELECT tag, max(batch) AS batch FROM anchor_states GROUP BY tag) m JOIN anchor_states a ON a.batch = m.batch AND a.tag = m.tag
ORDER BY a.tag`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("latest anchored states: %w", err)
	}
	return out, nil
}

// Batches implements store.Anchors.
func (s *DB) Batches(ctx context.Context, from uint64, limit int) ([]store.Anchor, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(selectAnchor+`WHERE batch >= ? ORDER BY batch LIMIT ?`), int64(from), store.PageRequest{Count: limit}.Limit())
	if err != nil {
		return nil, fmt.Errorf("batches from %d: %w", from, dbErr("query", err))
	}
	defer rows.Close()
	var out []store.Anchor
	for rows.Next() {
		a, err := scanAnchor(rows)
		if err != nil {
			return nil, fmt.Errorf("batches from %d: %w", from, err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("batches from %d: %w", from, dbErr("query", err))
	}
	return out, nil
}

// states reads anchored leaves.
func (s *DB) states(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]store.PatientState, error) {
	rows, err := tx.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, dbErr("query anchor states", err)
	}
	defer rows.Close()
	var out []store.PatientState
	for rows.Next() {
		var (
			st                    store.PatientState
			tag, hash, root, head []byte
			seq                   int64
			through, count        sql.NullInt64
		)
		if err := rows.Scan(&tag, &st.PatientID, &seq, &hash, &root, &through, &count, &head); err != nil {
			return nil, dbErr("scan anchor state", err)
		}
		var err1, err2 error
		st.Tag, err1 = hash32(tag)
		st.Hash, err2 = hash32(hash)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		st.Seq = uint64(seq)
		if root == nil {
			st.Legacy = true // anchored before state v2
		} else {
			st.History.Size, st.Log.Through, st.Log.Count = uint64(seq), uint64(through.Int64), uint64(count.Int64)
			st.History.Root, err1 = hash32(root)
			st.Log.Head, err2 = hash32(head)
			if err := errors.Join(err1, err2); err != nil {
				return nil, err
			}
		}
		out = append(out, st)
	}
	return out, dbErr("query anchor states", rows.Err())
}

// LatestAnchor implements store.Anchors.
func (s *DB) LatestAnchor(ctx context.Context) (store.Anchor, error) {
	a, err := scanAnchor(s.db.QueryRowContext(ctx, selectAnchor+`ORDER BY batch DESC LIMIT 1`))
	if err != nil {
		return a, fmt.Errorf("latest anchor: %w", err)
	}
	return a, nil
}

func scanAnchor(row interface{ Scan(...any) error }) (store.Anchor, error) {
	var (
		a                      store.Anchor
		batch, us, from, count int64
		logRoot, stateRoot     []byte
	)
	if err := row.Scan(&batch, &us, &from, &count, &logRoot, &stateRoot, &a.TxHash); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return a, store.ErrNotFound
		}
		return a, dbErr("read anchor", err)
	}
	a.Batch, a.Time, a.LogFrom, a.LogCount = uint64(batch), fromMicros(us), uint64(from), uint64(count)
	var err1, err2 error
	a.LogRoot, err1 = hash32(logRoot)
	a.StateRoot, err2 = hash32(stateRoot)
	return a, errors.Join(err1, err2)
}

// SetAnchorTx implements store.Anchors.
func (s *DB) SetAnchorTx(ctx context.Context, batch uint64, txHash string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.q(`UPDATE anchors SET tx = ? WHERE batch = ?`), txHash, int64(batch))
		if err != nil {
			return dbErr("update anchor", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return store.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set tx of anchor batch %d: %w", batch, err)
	}
	return nil
}
