package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// AddExportJob implements store.ExportJobs.
func (s *DB) AddExportJob(ctx context.Context, j store.ExportJob) error {
	if j.ID == "" || j.Owner == "" || j.Started.IsZero() {
		return fmt.Errorf("add export job: an id, an owner and a start are required: %w", store.ErrInvalid)
	}
	n, err := s.exec(ctx, `INSERT INTO export_jobs (id, owner, request, started_us, beat_us) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
		j.ID, j.Owner, j.Request, micros(j.Started), micros(j.Started))
	if err != nil {
		return fmt.Errorf("add export job: %w", dbErr("insert export job", err))
	}
	if n == 0 {
		return fmt.Errorf("add export job %s: %w", j.ID, store.ErrConflict)
	}
	return nil
}

// BeatExportJob implements store.ExportJobs.
func (s *DB) BeatExportJob(ctx context.Context, id string, at time.Time) error {
	n, err := s.exec(ctx, `UPDATE export_jobs SET beat_us = ? WHERE id = ?`, micros(at), id)
	if err != nil {
		return fmt.Errorf("beat export job: %w", dbErr("update export job", err))
	}
	if n == 0 {
		return fmt.Errorf("beat export job %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// FinishExportJob implements store.ExportJobs.
func (s *DB) FinishExportJob(ctx context.Context, id string, at time.Time, parts []store.ExportPart, failure string) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		var finished sql.NullInt64
		err := tx.QueryRowContext(ctx, s.d.q(`SELECT finished_us FROM export_jobs WHERE id = ?`), id).Scan(&finished)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("export job %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return dbErr("read export job", err)
		}
		if finished.Valid {
			return fmt.Errorf("export job %s finished already: %w", id, store.ErrConflict)
		}
		var fail any
		if failure != "" {
			fail = failure
		}
		if _, err := tx.ExecContext(ctx, s.d.q(`UPDATE export_jobs SET finished_us = ?, beat_us = ?, failure = ? WHERE id = ?`), micros(at), micros(at), fail, id); err != nil {
			return dbErr("finish export job", err)
		}
		for _, p := range parts {
			if _, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO export_parts (job_id, member, type, count, ndjson) VALUES (?, ?, ?, ?, ?)`),
				id, p.Member[:], p.Type, p.Count, append([]byte{}, p.NDJSON...)); err != nil {
				return dbErr("insert export part", err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish export job: %w", err)
	}
	return nil
}

const exportJobColumns = `id, owner, request, started_us, beat_us, finished_us, failure`

func scanExportJob(row interface{ Scan(...any) error }) (store.ExportJob, error) {
	var (
		j             store.ExportJob
		started, beat int64
		finished      sql.NullInt64
		failure       sql.NullString
	)
	if err := row.Scan(&j.ID, &j.Owner, &j.Request, &started, &beat, &finished, &failure); err != nil {
		return j, err
	}
	j.Started, j.Beat, j.Failure = fromMicros(started), fromMicros(beat), failure.String
	if finished.Valid {
		j.Finished = fromMicros(finished.Int64)
	}
	return j, nil
}

// ExportJob implements store.ExportJobs.
func (s *DB) ExportJob(ctx context.Context, id string) (store.ExportJob, error) {
	j, err := scanExportJob(s.db.QueryRowContext(ctx, s.d.q(`SELECT `+exportJobColumns+` FROM export_jobs WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.ExportJob{}, fmt.Errorf("export job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.ExportJob{}, fmt.Errorf("export job: %w", dbErr("read export job", err))
	}
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT member, type, count FROM export_parts WHERE job_id = ? ORDER BY type, member`), id)
	if err != nil {
		return store.ExportJob{}, fmt.Errorf("export job: %w", dbErr("read export parts", err))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			p      store.ExportPart
			member []byte
		)
		if err := rows.Scan(&member, &p.Type, &p.Count); err != nil {
			return store.ExportJob{}, fmt.Errorf("export job: %w", dbErr("read export part", err))
		}
		copy(p.Member[:], member)
		j.Parts = append(j.Parts, p)
	}
	if err := rows.Err(); err != nil {
		return store.ExportJob{}, fmt.Errorf("export job: %w", dbErr("read export parts", err))
	}
	return j, nil
}

// ExportJobs implements store.ExportJobs.
func (s *DB) ExportJobs(ctx context.Context) ([]store.ExportJob, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+exportJobColumns+` FROM export_jobs ORDER BY started_us, id`)
	if err != nil {
		return nil, fmt.Errorf("export jobs: %w", dbErr("read export jobs", err))
	}
	defer rows.Close()
	var out []store.ExportJob
	for rows.Next() {
		j, err := scanExportJob(rows)
		if err != nil {
			return nil, fmt.Errorf("export jobs: %w", dbErr("read export job", err))
		}
		out = append(out, j)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("export jobs: %w", dbErr("read export jobs", err))
	}
	return out, nil
}

// ExportFile implements store.ExportJobs.
func (s *DB) ExportFile(ctx context.Context, id, typ string) ([]store.ExportPart, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(`SELECT member, count, ndjson FROM export_parts WHERE job_id = ? AND type = ? ORDER BY member`), id, typ)
	if err != nil {
		return nil, fmt.Errorf("export file: %w", dbErr("read export parts", err))
	}
	defer rows.Close()
	var out []store.ExportPart
	for rows.Next() {
		p := store.ExportPart{Type: typ}
		var member []byte
		if err := rows.Scan(&member, &p.Count, &p.NDJSON); err != nil {
			return nil, fmt.Errorf("export file: %w", dbErr("read export part", err))
		}
		copy(p.Member[:], member)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("export file: %w", dbErr("read export parts", err))
	}
	return out, nil
}

// DeleteExportJob implements store.ExportJobs (its parts go with it: ON
// DELETE CASCADE).
func (s *DB) DeleteExportJob(ctx context.Context, id string) error {
	n, err := s.exec(ctx, `DELETE FROM export_jobs WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete export job: %w", dbErr("delete export job", err))
	}
	if n == 0 {
		return fmt.Errorf("delete export job %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// PruneExportJobs implements store.ExportJobs.
func (s *DB) PruneExportJobs(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.exec(ctx, `DELETE FROM export_jobs WHERE finished_us IS NOT NULL AND finished_us < ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune export jobs: %w", dbErr("delete export jobs", err))
	}
	return n, nil
}
