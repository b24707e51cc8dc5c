package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// exec runs one write statement on its own: a single statement is atomic on
// both backends. On SQLite it takes the writer mutex like every write.
func (s *DB) exec(ctx context.Context, query string, args ...any) (int64, error) {
	if s.d == sqliteDialect {
		s.wmu.Lock()
		defer s.wmu.Unlock()
	}
	res, err := s.db.ExecContext(ctx, s.d.q(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// UseNonce implements store.Nonces. The primary key (expires_us, nonce)
// decides: of concurrent inserts of one pair exactly one adds a row, the
// others affect none (also within one group commit, where they run one after
// the other).
func (s *DB) UseNonce(ctx context.Context, nonce [32]byte, expires time.Time) error {
	var n int64
	err := s.group(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := s.txExec(ctx, tx, insertNonce, nonce[:], micros(expires))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("use nonce: %w", dbErr("insert nonce", err))
	}
	if n == 0 {
		return fmt.Errorf("nonce already used: %w", store.ErrConflict)
	}
	return nil
}

const insertNonce = `INSERT INTO used_nonces (nonce, expires_us) VALUES (?, ?) ON CONFLICT (expires_us, nonce) DO NOTHING`

// UseNonceWithLog implements store.Nonces: the nonce row and the log
// entries ride in one group commit.
func (s *DB) UseNonceWithLog(ctx context.Context, nonce [32]byte, expires time.Time, entries ...store.LogEntry) ([]store.LogEntry, error) {
	for i, e := range entries {
		if err := store.ValidateEntry(e); err != nil {
			return nil, fmt.Errorf("use nonce with log: entry %d: %w", i, err)
		}
	}
	out := append([]store.LogEntry(nil), entries...)
	taken, err := s.groupLog(ctx, &nonce, expires, out)
	if err != nil {
		return nil, fmt.Errorf("use nonce with log: %w", err)
	}
	if taken {
		return nil, fmt.Errorf("nonce already used: %w", store.ErrConflict)
	}
	return out, nil
}

// PruneNonces implements store.Nonces.
func (s *DB) PruneNonces(ctx context.Context, before time.Time) (int64, error) {
	n, err := s.exec(ctx, `DELETE FROM used_nonces WHERE expires_us <= ?`, micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune nonces: %w", dbErr("delete nonces", err))
	}
	return n, nil
}
