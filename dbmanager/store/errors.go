package store

import "errors"

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
	// ErrTampered: a stored access-log row no longer matches its hash chain.
	ErrTampered = errors.New("access log tampered")
)
