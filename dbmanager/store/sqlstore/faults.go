package sqlstore

import (
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// fault says whether a driver error is the database being away
// (store.ErrUnavailable) or full (store.ErrFull), so the gateway can answer
// "try again" or "full" instead of an internal error; nil for anything
// else.
func fault(err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		switch {
		case strings.HasPrefix(pg.Code, "08"), // connection exception
			pg.Code == "57P01", pg.Code == "57P02", pg.Code == "57P03", // shutting down, crashed, starting up
			pg.Code == "53300": // too many connections
			return store.ErrUnavailable
		case pg.Code == "53100": // disk full
			return store.ErrFull
		}
		return nil
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff {
		case sqlite3.SQLITE_FULL:
			return store.ErrFull
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return store.ErrUnavailable
		}
		return nil
	}
	var (
		connect *pgconn.ConnectError
		op      *net.OpError
	)
	switch {
	case errors.As(err, &connect), errors.As(err, &op),
		errors.Is(err, driver.ErrBadConn), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return store.ErrUnavailable
	}
	if pgconn.SafeToRetry(err) {
		return store.ErrUnavailable
	}
	return nil
}
