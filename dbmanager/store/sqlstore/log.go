package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// AppendLog implements store.AccessLog.
func (s *DB) AppendLog(ctx context.Context, entries ...store.LogEntry) ([]store.LogEntry, error) {
	for i, e := range entries {
		if err := store.ValidateEntry(e); err != nil {
			return nil, fmt.Errorf("append log: entry %d: %w", i, err)
		}
	}
	out := append([]store.LogEntry(nil), entries...)
	if _, err := s.groupLog(ctx, nil, time.Time{}, out); err != nil {
		return nil, fmt.Errorf("append log: %w", err)
	}
	return out, nil
}

// appendLog chains and inserts validated entries (in place) inside tx.
func (s *DB) appendLog(ctx context.Context, tx *sql.Tx, entries []store.LogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	now := store.Micro(time.Now())
	for i := range entries {
		if entries[i].Time.IsZero() {
			entries[i].Time = now
		} else {
			entries[i].Time = store.Micro(entries[i].Time)
		}
	}
	// Taking the head row's lock serialises appenders.
	var (
		next int64
		prev []byte
	)
	st, err := s.prepared(ctx, `UPDATE log_head SET next = next + ? WHERE id = 1 RETURNING next, hash`)
	if err != nil {
		return err
	}
	err = tx.StmtContext(ctx, st).QueryRowContext(ctx, len(entries)).Scan(&next, &prev)
	if err != nil {
		return dbErr("lock log head", err)
	}
	head := store.LogHead{Next: uint64(next) - uint64(len(entries))}
	if head.Hash, err = hash32(prev); err != nil {
		return err
	}
	head = store.Chain(head, entries)
	for _, e := range entries {
		res, err := json.Marshal(nonNil(e.Resources))
		if err != nil {
			return fmt.Errorf("encode resources: %w", err)
		}
		_, err = s.txExec(ctx, tx, `INSERT INTO access_log (seq, time_us, actor_kind, actor_id, purpose, action, patient_id, resources, outcome, detail, prev, hash)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			int64(e.Seq), micros(e.Time), int(e.ActorKind), e.ActorID, int(e.Purpose), e.Action, e.PatientID, string(res),
			int(e.Outcome), e.Detail, e.Prev[:], e.Hash[:])
		if err != nil {
			return dbErr("insert log entry", err)
		}
	}
	_, err = s.txExec(ctx, tx, `UPDATE log_head SET hash = ? WHERE id = 1`, head.Hash[:])
	return dbErr("update log head", err)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

const selectLog = `SELECT seq, time_us, actor_kind, actor_id, purpose, action, patient_id, resources, outcome, detail, prev, hash FROM access_log `

// LogRange implements store.AccessLog.
func (s *DB) LogRange(ctx context.Context, from uint64, limit int) ([]store.LogEntry, error) {
	out, err := s.logQuery(ctx, selectLog+`WHERE seq >= ? ORDER BY seq LIMIT ?`, int64(from), store.PageRequest{Count: limit}.Limit())
	if err != nil {
		return nil, fmt.Errorf("log from %d: %w", from, err)
	}
	return out, nil
}

// PatientLog implements store.AccessLog.
func (s *DB) PatientLog(ctx context.Context, patientID string, from uint64, limit int) ([]store.LogEntry, error) {
	if from > math.MaxInt64 { // seqs are int64: none lies beyond
		return nil, nil
	}
	out, err := s.logQuery(ctx, selectLog+`WHERE patient_id = ? AND seq >= ? ORDER BY seq LIMIT ?`, patientID, int64(from), store.PageRequest{Count: limit}.Limit())
	if err != nil {
		return nil, fmt.Errorf("log of patient %s from %d: %w", patientID, from, err)
	}
	return out, nil
}

func (s *DB) logQuery(ctx context.Context, query string, args ...any) ([]store.LogEntry, error) {
	rows, err := s.db.QueryContext(ctx, s.d.q(query), args...)
	if err != nil {
		return nil, dbErr("query log", err)
	}
	defer rows.Close()
	var out []store.LogEntry
	for rows.Next() {
		var (
			e                      store.LogEntry
			seq, us                int64
			kind, purpose, outcome int
			res                    string
			prev, hash             []byte
		)
		if err := rows.Scan(&seq, &us, &kind, &e.ActorID, &purpose, &e.Action, &e.PatientID, &res, &outcome, &e.Detail, &prev, &hash); err != nil {
			return nil, dbErr("scan log", err)
		}
		e.Seq, e.Time = uint64(seq), fromMicros(us)
		e.ActorKind, e.Purpose, e.Outcome = store.ActorKind(kind), access.Purpose(purpose), store.Decision(outcome)
		if err := json.Unmarshal([]byte(res), &e.Resources); err != nil {
			// A row whose resource list no longer parses was edited.
			return nil, fmt.Errorf("log entry %d: resources: %w: %w", seq, store.ErrTampered, err)
		}
		if len(e.Resources) == 0 {
			e.Resources = nil
		}
		var err1, err2 error
		e.Prev, err1 = hash32(prev)
		e.Hash, err2 = hash32(hash)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("log entry %d: %w", seq, store.ErrTampered)
		}
		out = append(out, e)
	}
	return out, dbErr("query log", rows.Err())
}

// LogHead implements store.AccessLog.
func (s *DB) LogHead(ctx context.Context) (store.LogHead, error) {
	var (
		next int64
		hash []byte
		h    store.LogHead
	)
	if err := s.db.QueryRowContext(ctx, `SELECT next, hash FROM log_head WHERE id = 1`).Scan(&next, &hash); err != nil {
		return h, fmt.Errorf("log head: %w", dbErr("query", err))
	}
	h.Next = uint64(next)
	var err error
	if h.Hash, err = hash32(hash); err != nil {
		return h, fmt.Errorf("log head: %w", err)
	}
	return h, nil
}
