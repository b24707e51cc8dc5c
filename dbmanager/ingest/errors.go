package ingest

import "errors"

// ErrAmbiguous: a conditional create or update whose identifier matches
// several resources (FHIR answers 412 Precondition Failed). Nothing was
// written.
var ErrAmbiguous = errors.New("the identifier matches several resources")
