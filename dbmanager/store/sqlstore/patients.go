package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// CreatePatient implements store.Patients.
func (s *DB) CreatePatient(ctx context.Context, id string, log ...store.LogEntry) (store.Patient, error) {
	if err := store.ValidID(id); err != nil {
		return store.Patient{}, fmt.Errorf("create patient: %w", err)
	}
	for i, e := range log {
		if err := store.ValidateEntry(e); err != nil {
			return store.Patient{}, fmt.Errorf("create patient: log entry %d: %w", i, err)
		}
	}
	p := store.Patient{ID: id, Created: store.Micro(time.Now())}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO patients (id, created_us) VALUES (?, ?)`), id, micros(p.Created))
		if err != nil {
			return dbErr("insert patient", err)
		}
		return s.appendLog(ctx, tx, append([]store.LogEntry(nil), log...))
	})
	if err != nil {
		return store.Patient{}, fmt.Errorf("create patient %s: %w", id, err)
	}
	return p, nil
}

// Patient implements store.Patients.
func (s *DB) Patient(ctx context.Context, id string) (store.Patient, error) {
	p, err := s.scanPatient(s.db.QueryRowContext(ctx, s.d.q(`SELECT id, tag, created_us, seq FROM patients WHERE id = ?`), id))
	if err != nil {
		return p, fmt.Errorf("patient %s: %w", id, err)
	}
	return p, nil
}

// PatientByTag implements store.Patients.
func (s *DB) PatientByTag(ctx context.Context, tag store.Tag) (store.Patient, error) {
	st, err := s.prepared(ctx, `SELECT id, tag, created_us, seq FROM patients WHERE tag = ?`)
	if err != nil {
		return store.Patient{}, fmt.Errorf("patient with tag %s: %w", tag, err)
	}
	p, err := s.scanPatient(st.QueryRowContext(ctx, tag[:]))
	if err != nil {
		return p, fmt.Errorf("patient with tag %s: %w", tag, err)
	}
	return p, nil
}

func (s *DB) scanPatient(row *sql.Row) (store.Patient, error) {
	var (
		p       store.Patient
		tag     []byte
		created int64
		seq     int64
	)
	if err := row.Scan(&p.ID, &tag, &created, &seq); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return p, store.ErrNotFound
		}
		return p, dbErr("read patient", err)
	}
	if tag != nil {
		t, err := hash32(tag)
		if err != nil {
			return p, err
		}
		p.Tag = (*store.Tag)(&t)
	}
	p.Created, p.Seq = fromMicros(created), uint64(seq)
	return p, nil
}

// MapTag implements store.Patients.
func (s *DB) MapTag(ctx context.Context, patientID string, tag store.Tag) error {
	if err := tag.Validate(); err != nil {
		return fmt.Errorf("map tag: %w", err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.lockTag(ctx, tx, patientID)
		if err != nil {
			return err
		}
		if cur != nil {
			if string(cur) == string(tag[:]) {
				return nil
			}
			return fmt.Errorf("the patient already has another tag: %w", store.ErrConflict)
		}
		var other string
		err = tx.QueryRowContext(ctx, s.d.q(`SELECT id FROM patients WHERE tag = ?`), tag[:]).Scan(&other)
		if err == nil {
			return fmt.Errorf("the tag belongs to another patient: %w", store.ErrConflict)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return dbErr("read tag", err)
		}
		_, err = tx.ExecContext(ctx, s.d.q(`UPDATE patients SET tag = ? WHERE id = ?`), tag[:], patientID)
		return dbErr("set tag", err)
	})
	if err != nil {
		return fmt.Errorf("map tag of patient %s: %w", patientID, err)
	}
	return nil
}

// UnmapTag implements store.Patients.
func (s *DB) UnmapTag(ctx context.Context, patientID string, tag store.Tag, entry store.LogEntry) error {
	if err := store.ValidateEntry(entry); err != nil {
		return fmt.Errorf("unmap tag of patient %s: %w", patientID, err)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		cur, err := s.lockTag(ctx, tx, patientID)
		if err != nil {
			return err
		}
		if cur == nil {
			return fmt.Errorf("no tag is mapped to the patient: %w", store.ErrConflict)
		}
		if string(cur) != string(tag[:]) {
			return fmt.Errorf("the patient's tag is not %s: %w", tag, store.ErrConflict)
		}
		// anchored_seq -1: the records state is anchored again under the
		// patient's next tag, whatever the last anchor covered.
		if _, err := tx.ExecContext(ctx, s.d.q(`UPDATE patients SET tag = NULL, anchored_seq = -1 WHERE id = ?`), patientID); err != nil {
			return dbErr("unset tag", err)
		}
		return s.appendLog(ctx, tx, []store.LogEntry{entry})
	})
	if err != nil {
		return fmt.Errorf("unmap tag of patient %s: %w", patientID, err)
	}
	return nil
}

// lockTag locks the patient's row inside tx and returns its tag (nil when
// none is mapped); ErrNotFound if there is no such patient.
func (s *DB) lockTag(ctx context.Context, tx *sql.Tx, patientID string) ([]byte, error) {
	var cur []byte
	err := tx.QueryRowContext(ctx, s.d.q(`SELECT tag FROM patients WHERE id = ?`+s.d.forUpdate), patientID).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, dbErr("read patient", err)
	}
	return cur, nil
}
