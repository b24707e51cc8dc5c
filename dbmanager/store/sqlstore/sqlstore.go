// Package sqlstore implements store.Store on SQL databases: SQLite (the
// default, modernc.org/sqlite, pure Go) and PostgreSQL (pgx). One
// implementation serves both; the few differences (placeholders, row locks,
// read isolation, error codes, DDL) live in a dialect. The schema is created
// and upgraded by embedded goose migrations, one directory per dialect, when
// a database is opened; then the search values are filled if they were
// extracted by an older fhirsearch.Version (search.go, reindex).
//
// Concurrency: every write is one transaction. On PostgreSQL, writers to the
// same patient serialise on the patient's row lock, shared resources on their
// own row locks, the access log on its single head row. On SQLite, writers
// of one process serialise on a mutex and the database is opened with
// BEGIN IMMEDIATE, WAL, a busy timeout, foreign keys and synchronous=FULL, so
// an acknowledged write survives a crash or power loss.
package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

//go:embed migrations
var migrations embed.FS

// DB is a store.Store on an SQL database.
type DB struct {
	db  *sql.DB
	d   *dialect
	wmu sync.Mutex // SQLite: one writer at a time in this process

	// Group commit of small writes (access-log appends, used nonces).
	gmu     sync.Mutex // held by the caller committing a group
	qmu     sync.Mutex // guards queue
	queue   []*groupOp
	grouped func(ops int) // test hook: called with each group's size

	stmts sync.Map // query → *sql.Stmt, for the statements of the hot paths
}

var _ store.Store = (*DB)(nil)

type dialect struct {
	name      string
	goose     goose.Dialect
	forUpdate string // row-lock suffix for SELECT in a write transaction
	readTx    sql.TxOptions
	mu        sync.Mutex
	rebound   map[string]string // SQL with ? → SQL with $n
}

var (
	sqliteDialect = &dialect{
		name:   "sqlite",
		goose:  goose.DialectSQLite3,
		readTx: sql.TxOptions{ReadOnly: true}, // BEGIN DEFERRED: a WAL snapshot
	}
	postgresDialect = &dialect{
		name:      "postgres",
		goose:     goose.DialectPostgres,
		forUpdate: " FOR UPDATE",
		readTx:    sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead},
		rebound:   map[string]string{},
	}
)

// q returns query in the dialect's placeholder syntax. Queries are written
// with ?; PostgreSQL gets $1, $2 … (no query here has ? inside a literal).
func (d *dialect) q(query string) string {
	if d.rebound == nil {
		return query
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if r, ok := d.rebound[query]; ok {
		return r
	}
	var b strings.Builder
	n := 0
	for _, c := range query {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	d.rebound[query] = b.String()
	return b.String()
}

// Open opens the database named by dsn: a PostgreSQL URL or keyword/value
// string ("postgres://…", "postgresql://…", "host=… dbname=…"), or else an
// SQLite file path, optionally prefixed "sqlite:".
func Open(ctx context.Context, dsn string) (*DB, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"), strings.Contains(dsn, "dbname="), strings.HasPrefix(dsn, "host="):
		return OpenPostgres(ctx, dsn)
	default:
		return OpenSQLite(ctx, strings.TrimPrefix(dsn, "sqlite:"))
	}
}

// OpenSQLite opens (creating if needed) the SQLite database at path and
// migrates it to the current schema.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") || path == ":memory:" {
		return nil, fmt.Errorf("sqlstore: sqlite path %q: want a file path without ? or #: %w", path, store.ErrInvalid)
	}
	params := url.Values{}
	params.Set("_txlock", "immediate")
	params.Add("_pragma", "busy_timeout(10000)")
	params.Add("_pragma", "journal_mode(WAL)")
	params.Add("_pragma", "foreign_keys(1)")
	params.Add("_pragma", "synchronous(FULL)")
	db, err := sql.Open("sqlite", path+"?"+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(0)
	return open(ctx, db, sqliteDialect)
}

// OpenPostgres connects to PostgreSQL and migrates the database (or the
// schema first on the search_path) to the current schema.
func OpenPostgres(ctx context.Context, dsn string) (*DB, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: open postgres: %w", err)
	}
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(8)
	return open(ctx, db, postgresDialect)
}

func open(ctx context.Context, db *sql.DB, d *dialect) (*DB, error) {
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlstore: connect %s: %w", d.name, err)
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, err
	}
	s := &DB{db: db, d: d}
	if err := s.reindex(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func migrate(ctx context.Context, db *sql.DB, d *dialect) error {
	dir, err := fs.Sub(migrations, "migrations/"+d.name)
	if err != nil {
		return fmt.Errorf("sqlstore: migrations: %w", err)
	}
	p, err := goose.NewProvider(d.goose, db, dir, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("sqlstore: migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("sqlstore: migrate %s: %w", d.name, err)
	}
	return nil
}

// Dialect names the backend: "sqlite" or "postgres".
func (s *DB) Dialect() string { return s.d.name }

// Close closes the database.
func (s *DB) Close() error {
	s.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return s.db.Close()
}

// prepared returns query's statement, prepared once and then reused on
// every connection (database/sql prepares it per connection when first
// used there): the hot paths — a read, its tag lookup, its log entry, its
// nonce — then skip SQLite's parse and plan.
func (s *DB) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, s.d.q(query))
	if err != nil {
		return nil, dbErr("prepare", err)
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// txExec runs a prepared statement inside tx.
func (s *DB) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st).ExecContext(ctx, args...)
}

// txQuery runs a prepared query inside tx.
func (s *DB) txQuery(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	return tx.StmtContext(ctx, st).QueryContext(ctx, args...)
}

// write runs fn in a write transaction, retrying it when PostgreSQL reports
// a deadlock or serialization failure.
func (s *DB) write(ctx context.Context, fn func(*sql.Tx) error) error {
	if s.d == sqliteDialect {
		s.wmu.Lock()
		defer s.wmu.Unlock()
	}
	for attempt := 0; ; attempt++ {
		err := s.runTx(ctx, nil, fn)
		if attempt < 4 && retryable(err) {
			time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
			continue
		}
		return err
	}
}

// groupOp is one small write waiting for a group commit: either fn, or log
// entries to append, after recording a nonce if one is given.
type groupOp struct {
	fn func(ctx context.Context, tx *sql.Tx) error

	log     []store.LogEntry // chained and filled in in place
	nonce   *[32]byte        // recorded first; if it is taken, the op writes nothing
	expires time.Time        // the nonce's
	taken   bool             // result: the nonce was recorded already

	done chan error
}

// group commits fn durably, sharing one transaction — and so one fsync —
// with the other small writes queued meanwhile, and returns once it is
// committed (or failed). fn must be idempotent on retry within its
// transaction. See enqueue.
func (s *DB) group(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.enqueue(ctx, &groupOp{fn: fn})
}

// groupLog appends entries through a group commit, recording nonce first
// if it is not nil; it reports whether the nonce was taken (and then
// nothing was written). The entries of one group are chained in one go.
func (s *DB) groupLog(ctx context.Context, nonce *[32]byte, expires time.Time, entries []store.LogEntry) (taken bool, err error) {
	op := &groupOp{log: entries, nonce: nonce, expires: expires}
	err = s.enqueue(ctx, op)
	return op.taken, err
}

// enqueue queues op and then takes turns at committing: whoever commits
// takes the whole queue, so a write waits for at most the group in progress
// and its own. When a group's transaction fails, its writes are retried one
// by one, so one write's failure never fails another's.
func (s *DB) enqueue(ctx context.Context, op *groupOp) error {
	op.done = make(chan error, 1)
	s.qmu.Lock()
	s.queue = append(s.queue, op)
	s.qmu.Unlock()

	s.gmu.Lock()
	s.qmu.Lock()
	ops := s.queue
	s.queue = nil
	s.qmu.Unlock()
	if len(ops) > 0 {
		s.commitGroup(ctx, ops)
	}
	s.gmu.Unlock()
	return <-op.done // committed by this caller or by an earlier one
}

func (s *DB) commitGroup(ctx context.Context, ops []*groupOp) {
	// The group outlives a caller that gives up: other callers' writes ride on it.
	ctx = context.WithoutCancel(ctx)
	if s.grouped != nil {
		s.grouped(len(ops))
	}
	err := s.write(ctx, func(tx *sql.Tx) error { return s.runOps(ctx, tx, ops) })
	if err == nil || len(ops) == 1 {
		for _, op := range ops {
			op.done <- err
		}
		return
	}
	for _, op := range ops {
		op.done <- s.write(ctx, func(tx *sql.Tx) error { return s.runOps(ctx, tx, []*groupOp{op}) })
	}
}

// runOps performs a group's writes in tx: each fn, each nonce, and then all
// log entries as one append (one head update for the group, not one per op).
func (s *DB) runOps(ctx context.Context, tx *sql.Tx, ops []*groupOp) error {
	var (
		batch []store.LogEntry
		spans = make([][2]int, len(ops))
	)
	for i, op := range ops {
		op.taken = false // a failed group is retried op by op
		if op.fn != nil {
			if err := op.fn(ctx, tx); err != nil {
				return err
			}
			continue
		}
		if op.nonce != nil {
			res, err := s.txExec(ctx, tx, insertNonce, op.nonce[:], micros(op.expires))
			if err != nil {
				return dbErr("insert nonce", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return dbErr("insert nonce", err)
			}
			if op.taken = n == 0; op.taken {
				continue
			}
		}
		spans[i] = [2]int{len(batch), len(batch) + len(op.log)}
		batch = append(batch, op.log...)
	}
	if err := s.appendLog(ctx, tx, batch); err != nil {
		return err
	}
	for i, op := range ops {
		if op.fn == nil && !op.taken {
			copy(op.log, batch[spans[i][0]:spans[i][1]])
		}
	}
	return nil
}

// read runs fn in a read-only transaction that sees one snapshot.
func (s *DB) read(ctx context.Context, fn func(*sql.Tx) error) error {
	return s.runTx(ctx, &s.d.readTx, fn)
}

func (s *DB) runTx(ctx context.Context, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return dbErr("begin", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return dbErr("commit", err)
	}
	return nil
}

// dbErr wraps a driver error with context, turning uniqueness violations
// into store.ErrConflict, a database that cannot be reached into
// store.ErrUnavailable and full storage into store.ErrFull (faults.go).
func dbErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if uniqueViolation(err) {
		return fmt.Errorf("%s: %w: %w", what, store.ErrConflict, err)
	}
	if kind := fault(err); kind != nil {
		return fmt.Errorf("%s: %w: %w", what, kind, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func uniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		return lite.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || lite.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

func retryable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "40001" || pg.Code == "40P01")
}

// Execer is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func hash32(b []byte) ([32]byte, error) {
	var h [32]byte
	if len(b) != 32 {
		return h, fmt.Errorf("stored hash has %d bytes", len(b))
	}
	copy(h[:], b)
	return h, nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
