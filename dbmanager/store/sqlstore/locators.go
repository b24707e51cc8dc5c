package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// PutLocator implements store.Locators: one statement, atomic on both
// backends.
func (s *DB) PutLocator(ctx context.Context, tag [32]byte, note []byte) error {
	if tag == ([32]byte{}) || len(note) != store.LocatorNoteSize {
		return fmt.Errorf("put locator: a non-zero tag and a note of %d bytes are required: %w", store.LocatorNoteSize, store.ErrInvalid)
	}
	if _, err := s.exec(ctx, `INSERT INTO locators (tag, note) VALUES (?, ?) ON CONFLICT (tag) DO UPDATE SET note = excluded.note`, tag[:], note); err != nil {
		return fmt.Errorf("put locator: %w", dbErr("upsert locator", err))
	}
	return nil
}

// Locator implements store.Locators.
func (s *DB) Locator(ctx context.Context, tag [32]byte) ([]byte, error) {
	var note []byte
	err := s.db.QueryRowContext(ctx, s.d.q(`SELECT note FROM locators WHERE tag = ?`), tag[:]).Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("locator: none filed under this tag: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("locator: %w", dbErr("read locator", err))
	}
	return note, nil
}
