package desk

import "errors"

// ErrRefusedPatients: a bulk import took some patients and refused others
// (BulkReport.Refused says which and why).
var ErrRefusedPatients = errors.New("the gateway refused some patients")

// ErrNoFiles: a bulk upload without any NDJSON file in it.
var ErrNoFiles = errors.New("no NDJSON file was uploaded")

// ErrUploadTooLarge: a bulk upload over the desk's BulkLimit.
var ErrUploadTooLarge = errors.New("the upload is larger than this desk takes")

// ErrBadUpload: a bulk upload that could not be read (not a multipart
// form, or broken off).
var ErrBadUpload = errors.New("the upload could not be read")
