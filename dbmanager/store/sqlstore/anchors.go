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
func (s *DB) Dirty(ctx context.Context) ([]store.PatientState, error) {
	var out []store.PatientState
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, tag, seq FROM patients WHERE tag IS NOT NULL AND anchored_seq < seq ORDER BY tag`)
		if err != nil {
			return dbErr("query dirty patients", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				ps  store.PatientState
				tag []byte
				seq int64
			)
			if err := rows.Scan(&ps.PatientID, &tag, &seq); err != nil {
				return dbErr("scan dirty patients", err)
			}
			if ps.Tag, err = hash32(tag); err != nil {
				return err
			}
			ps.Seq = uint64(seq)
			out = append(out, ps)
		}
		if err := rows.Err(); err != nil {
			return dbErr("query dirty patients", err)
		}
		rows.Close()
		for i := range out {
			entries, err := s.stateEntries(ctx, tx, out[i].PatientID, -1)
			if err != nil {
				return err
			}
			out[i].Hash = store.StateHash(entries)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dirty patients: %w", err)
	}
	return out, nil
}

// AddAnchor implements store.Anchors. Each state must be the patient's true
// records state at its sequence number (recomputed from the stored versions),
// so an anchor can never commit to a state the database does not hold.
func (s *DB) AddAnchor(ctx context.Context, a store.Anchor) (store.Anchor, error) {
	if a.Time.IsZero() {
		a.Time = time.Now()
	}
	a.Time = store.Micro(a.Time)
	a.States = slices.Clone(a.States)
	slices.SortFunc(a.States, func(x, y store.PatientState) int { return bytes.Compare(x.Tag[:], y.Tag[:]) })
	for i, st := range a.States {
		if i > 0 && st.Tag == a.States[i-1].Tag {
			return store.Anchor{}, fmt.Errorf("add anchor: tag %s twice: %w", st.Tag, store.ErrInvalid)
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
		var (
			batch             = int64(-1)
			from, count, want int64
		)
		err := tx.QueryRowContext(ctx, `SELECT batch, log_from, log_count FROM anchors ORDER BY batch DESC LIMIT 1`).Scan(&batch, &from, &count)
		switch {
		case err == nil:
			want = from + count
		case !errors.Is(err, sql.ErrNoRows):
			return dbErr("read last anchor", err)
		}
		if a.LogFrom != uint64(want) {
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
			if err := s.anchorState(ctx, tx, batch, st); err != nil {
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

func (s *DB) anchorState(ctx context.Context, tx *sql.Tx, batch int64, st store.PatientState) error {
	var (
		patient       string
		seq, anchored int64
	)
	err := tx.QueryRowContext(ctx, s.d.q(`SELECT id, seq, anchored_seq FROM patients WHERE tag = ?`+s.d.forUpdate), st.Tag[:]).Scan(&patient, &seq, &anchored)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("no patient has this tag: %w", store.ErrNotFound)
	}
	if err != nil {
		return dbErr("read patient", err)
	}
	if patient != st.PatientID {
		return fmt.Errorf("tag belongs to patient %s, not %s: %w", patient, st.PatientID, store.ErrConflict)
	}
	if st.Seq > uint64(seq) {
		return fmt.Errorf("state at change %d, but the patient's last change is %d: %w", st.Seq, seq, store.ErrConflict)
	}
	entries, err := s.stateEntries(ctx, tx, patient, int64(st.Seq))
	if err != nil {
		return err
	}
	if store.StateHash(entries) != st.Hash {
		return fmt.Errorf("hash is not the records state at change %d: %w", st.Seq, store.ErrConflict)
	}
	_, err = tx.ExecContext(ctx, s.d.q(`INSERT INTO anchor_states (batch, tag, patient_id, seq, hash) VALUES (?, ?, ?, ?, ?)`),
		batch, st.Tag[:], patient, int64(st.Seq), st.Hash[:])
	if err != nil {
		return dbErr("insert anchor state", err)
	}
	if int64(st.Seq) > anchored {
		_, err = tx.ExecContext(ctx, s.d.q(`UPDATE patients SET anchored_seq = ? WHERE id = ?`), int64(st.Seq), patient)
	}
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
		rows, err := tx.QueryContext(ctx, s.d.q(`SELECT tag, patient_id, seq, hash FROM anchor_states WHERE batch = ? ORDER BY tag`), int64(batch))
		if err != nil {
			return dbErr("query anchor states", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				st        store.PatientState
				tag, hash []byte
				seq       int64
			)
			if err := rows.Scan(&tag, &st.PatientID, &seq, &hash); err != nil {
				return dbErr("scan anchor state", err)
			}
			var err1, err2 error
			st.Tag, err1 = hash32(tag)
			st.Hash, err2 = hash32(hash)
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			st.Seq = uint64(seq)
			a.States = append(a.States, st)
		}
		return dbErr("query anchor states", rows.Err())
	})
	if err != nil {
		return store.Anchor{}, fmt.Errorf("anchor batch %d: %w", batch, err)
	}
	return a, nil
}

// LatestAnchor implements store.Anchors.
func (s *DB) LatestAnchor(ctx context.Context) (store.Anchor, error) {
	a, err := scanAnchor(s.db.QueryRowContext(ctx, selectAnchor+`ORDER BY batch DESC LIMIT 1`))
	if err != nil {
		return a, fmt.Errorf("latest anchor: %w", err)
	}
	return a, nil
}

func scanAnchor(row *sql.Row) (store.Anchor, error) {
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
