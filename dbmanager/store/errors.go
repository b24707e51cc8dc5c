package store

import (
	"errors"

	"github.com/medrec-zk/medrec/ledger"
)

// Errors returned by every Store implementation, wrapped with context.
// Match them with errors.Is; the HTTP layer maps them to status codes.
var (
	// ErrNotFound: no such patient, tag, resource, version or anchor.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write contradicts what is stored — an existing id on
	// create, a tag already mapped elsewhere, a resource of another patient,
	// a version precondition that no longer holds, an anchor out of order.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request itself is malformed (bad id, unknown type,
	// empty body, bad cursor, non-canonical tag …).
	ErrInvalid = errors.New("invalid")
	// ErrTampered: stored rows no longer agree with their hashes or with
	// each other (an access-log row that does not match its chain, a
	// change without its version, a gap in a patient's changes). It is
	// ledger.ErrTampered: the hash checks there return it too.
	ErrTampered = ledger.ErrTampered
	// ErrUnavailable: the database cannot be reached or is restarting
	// (refused connection, server shutting down or starting up, a busy
	// SQLite file past its timeout). Nothing was done; try again.
	ErrUnavailable = errors.New("records database unavailable")
	// ErrFull: the database's storage is full. The write was refused
	// whole; what is stored is intact.
	ErrFull = errors.New("records database full")
)
