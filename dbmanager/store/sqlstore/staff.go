package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// maxStaffName bounds a staff member's display name.
const maxStaffName = 200

func validStaff(a store.StaffAccount) error {
	if err := store.ValidID(a.ID); err != nil {
		return fmt.Errorf("staff id: %w", err)
	}
	if a.Name == "" || len(a.Name) > maxStaffName || !utf8.ValidString(a.Name) || strings.ContainsAny(a.Name, "\n\r\t") {
		return fmt.Errorf("staff name: one line of at most %d bytes: %w", maxStaffName, store.ErrInvalid)
	}
	if !a.Role.Valid() {
		return fmt.Errorf("staff role %q: %w", a.Role, store.ErrInvalid)
	}
	return nil
}

func nullableHash(h [32]byte) any {
	if h == ([32]byte{}) {
		return nil
	}
	return h[:]
}

// AddStaff implements store.Staff.
func (s *DB) AddStaff(ctx context.Context, a store.StaffAccount, log ...store.LogEntry) error {
	if err := validStaff(a); err != nil {
		return fmt.Errorf("add staff: %w", err)
	}
	for i, e := range log {
		if err := store.ValidateEntry(e); err != nil {
			return fmt.Errorf("add staff: log entry %d: %w", i, err)
		}
	}
	if a.Created.IsZero() {
		a.Created = time.Now()
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.d.q(`INSERT INTO staff (id, name, role, password_hash, token_hash, created_us, disabled) VALUES (?, ?, ?, ?, ?, ?, ?)`),
			a.ID, a.Name, string(a.Role), a.PasswordHash, nullableHash(a.TokenHash), micros(a.Created), boolInt(a.Disabled))
		if err != nil {
			return dbErr("insert staff", err)
		}
		return s.appendLog(ctx, tx, append([]store.LogEntry(nil), log...))
	})
	if err != nil {
		return fmt.Errorf("add staff %s: %w", a.ID, err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

const selectStaff = `SELECT id, name, role, password_hash, token_hash, created_us, disabled FROM staff `

func scanStaff(row interface{ Scan(...any) error }) (store.StaffAccount, error) {
	var (
		a        store.StaffAccount
		role     string
		tok      []byte
		created  int64
		disabled int
	)
	if err := row.Scan(&a.ID, &a.Name, &role, &a.PasswordHash, &tok, &created, &disabled); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return a, store.ErrNotFound
		}
		return a, dbErr("read staff", err)
	}
	a.Role, a.Created, a.Disabled = store.StaffRole(role), fromMicros(created), disabled != 0
	if tok != nil {
		h, err := hash32(tok)
		if err != nil {
			return a, err
		}
		a.TokenHash = h
	}
	return a, nil
}

// StaffAccount implements store.Staff.
func (s *DB) StaffAccount(ctx context.Context, id string) (store.StaffAccount, error) {
	a, err := scanStaff(s.db.QueryRowContext(ctx, s.d.q(selectStaff+`WHERE id = ?`), id))
	if err != nil {
		return a, fmt.Errorf("staff %s: %w", id, err)
	}
	return a, nil
}

// StaffByToken implements store.Staff.
func (s *DB) StaffByToken(ctx context.Context, hash [32]byte, now time.Time) (store.StaffAccount, error) {
	a, err := scanStaff(s.db.QueryRowContext(ctx, s.d.q(selectStaff+`WHERE token_hash = ? OR id = (SELECT staff_id FROM staff_sessions WHERE token_hash = ? AND expires_us > ?)`),
		hash[:], hash[:], micros(now)))
	if err == nil && a.Disabled {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.StaffAccount{}, fmt.Errorf("staff by token: %w", err)
	}
	return a, nil
}

// ListStaff implements store.Staff.
func (s *DB) ListStaff(ctx context.Context) ([]store.StaffAccount, error) {
	rows, err := s.db.QueryContext(ctx, selectStaff+`ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list staff: %w", dbErr("query", err))
	}
	defer rows.Close()
	var out []store.StaffAccount
	for rows.Next() {
		a, err := scanStaff(rows)
		if err != nil {
			return nil, fmt.Errorf("list staff: %w", err)
		}
		out = append(out, a)
	}
	return out, dbErr("list staff", rows.Err())
}

// UpdateStaff implements store.Staff.
func (s *DB) UpdateStaff(ctx context.Context, id string, ch store.StaffChange, log ...store.LogEntry) error {
	if ch.Role != nil && !ch.Role.Valid() {
		return fmt.Errorf("update staff %s: role %q: %w", id, *ch.Role, store.ErrInvalid)
	}
	for i, e := range log {
		if err := store.ValidateEntry(e); err != nil {
			return fmt.Errorf("update staff %s: log entry %d: %w", id, i, err)
		}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, s.d.q(`SELECT 1 FROM staff WHERE id = ?`+s.d.forUpdate), id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return dbErr("read staff", err)
		}
		set := func(col string, v any) error {
			_, err := tx.ExecContext(ctx, s.d.q(`UPDATE staff SET `+col+` = ? WHERE id = ?`), v, id)
			return dbErr("update staff "+col, err)
		}
		if ch.Role != nil {
			if err := set("role", string(*ch.Role)); err != nil {
				return err
			}
		}
		if ch.PasswordHash != nil {
			if err := set("password_hash", *ch.PasswordHash); err != nil {
				return err
			}
		}
		if ch.TokenHash != nil {
			if err := set("token_hash", nullableHash(*ch.TokenHash)); err != nil {
				return err
			}
		}
		if ch.Disabled != nil {
			if err := set("disabled", boolInt(*ch.Disabled)); err != nil {
				return err
			}
			if *ch.Disabled {
				if _, err := tx.ExecContext(ctx, s.d.q(`DELETE FROM staff_sessions WHERE staff_id = ?`), id); err != nil {
					return dbErr("end sessions", err)
				}
			}
		}
		return s.appendLog(ctx, tx, append([]store.LogEntry(nil), log...))
	})
	if err != nil {
		return fmt.Errorf("update staff %s: %w", id, err)
	}
	return nil
}

// PutStaffSession implements store.Staff.
func (s *DB) PutStaffSession(ctx context.Context, hash [32]byte, staffID string, expires time.Time) error {
	if hash == ([32]byte{}) || expires.IsZero() {
		return fmt.Errorf("put staff session: a hash and an expiry are required: %w", store.ErrInvalid)
	}
	_, err := s.exec(ctx, `INSERT INTO staff_sessions (token_hash, staff_id, expires_us) VALUES (?, ?, ?)`, hash[:], staffID, micros(expires))
	if err != nil {
		return fmt.Errorf("put staff session: %w", dbErr("insert", err))
	}
	return nil
}

// DeleteStaffSession implements store.Staff.
func (s *DB) DeleteStaffSession(ctx context.Context, hash [32]byte) error {
	n, err := s.exec(ctx, `DELETE FROM staff_sessions WHERE token_hash = ?`, hash[:])
	if err != nil {
		return fmt.Errorf("delete staff session: %w", dbErr("delete", err))
	}
	if n == 0 {
		return fmt.Errorf("delete staff session: %w", store.ErrNotFound)
	}
	return nil
}

// PruneStaffSessions implements store.Staff.
func (s *DB) PruneStaffSessions(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.exec(ctx, `DELETE FROM staff_sessions WHERE expires_us <= ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune staff sessions: %w", dbErr("delete", err))
	}
	return n, nil
}
