package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/tagcode"
)

// PutClaimCode implements store.ClaimCodes.
func (s *DB) PutClaimCode(ctx context.Context, c store.ClaimCode, log ...store.LogEntry) error {
	if c.Hash == ([32]byte{}) || c.Expires.IsZero() {
		return fmt.Errorf("put claim code: a hash and an expiry are required: %w", store.ErrInvalid)
	}
	if canon, err := tagcode.Parse(string(c.TagCode)); err != nil || canon != c.TagCode {
		return fmt.Errorf("put claim code: the desk code of the tag it is bound to is required, in canonical form: %w", store.ErrInvalid)
	}
	for i, e := range log {
		if err := store.ValidateEntry(e); err != nil {
			return fmt.Errorf("put claim code: log entry %d: %w", i, err)
		}
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, s.d.q(`SELECT 1 FROM patients WHERE id = ?`), c.PatientID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("patient %s: %w", c.PatientID, store.ErrNotFound)
		}
		if err != nil {
			return dbErr("read patient", err)
		}
		_, err = tx.ExecContext(ctx, s.d.q(`INSERT INTO claim_codes (code_hash, patient_id, expires_us, tag_code) VALUES (?, ?, ?, ?)`),
			c.Hash[:], c.PatientID, micros(c.Expires), string(c.TagCode))
		if err != nil {
			return dbErr("insert claim code", err)
		}
		return s.appendLog(ctx, tx, append([]store.LogEntry(nil), log...))
	})
	if err != nil {
		return fmt.Errorf("put claim code: %w", err)
	}
	return nil
}

// ClaimCode implements store.ClaimCodes.
func (s *DB) ClaimCode(ctx context.Context, hash [32]byte, now time.Time) (store.ClaimCode, error) {
	c := store.ClaimCode{Hash: hash}
	var (
		exp  int64
		code sql.NullString
	)
	err := s.db.QueryRowContext(ctx, s.d.q(`SELECT patient_id, expires_us, tag_code FROM claim_codes WHERE code_hash = ? AND expires_us > ?`),
		hash[:], micros(now)).Scan(&c.PatientID, &exp, &code)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ClaimCode{}, fmt.Errorf("claim code: unknown, used or expired: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.ClaimCode{}, fmt.Errorf("claim code: %w", dbErr("read claim code", err))
	}
	c.Expires, c.TagCode = fromMicros(exp), tagcode.Code(code.String)
	return c, nil
}

// ConsumeClaimCode implements store.ClaimCodes.
func (s *DB) ConsumeClaimCode(ctx context.Context, hash [32]byte) error {
	n, err := s.exec(ctx, `DELETE FROM claim_codes WHERE code_hash = ?`, hash[:])
	if err != nil {
		return fmt.Errorf("consume claim code: %w", dbErr("delete claim code", err))
	}
	if n == 0 {
		return fmt.Errorf("consume claim code: %w", store.ErrNotFound)
	}
	return nil
}

// PruneClaimCodes implements store.ClaimCodes.
func (s *DB) PruneClaimCodes(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.exec(ctx, `DELETE FROM claim_codes WHERE expires_us <= ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune claim codes: %w", dbErr("delete claim codes", err))
	}
	return n, nil
}
