package circuits

import "errors"

// Errors returned by this package.
var (
	ErrWitness      = errors.New("witness does not satisfy the circuit")
	ErrPublicInputs = errors.New("malformed public inputs")
)
