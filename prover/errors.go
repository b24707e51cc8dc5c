package prover

import "errors"

// Errors returned by this package. Match them with errors.Is.
var (
	ErrUnknownCircuit = errors.New("unknown circuit")
	ErrKeyFiles       = errors.New("key files are missing, corrupted or do not match")
	ErrKeyMismatch    = errors.New("keys were made for a different circuit")
	ErrWitness        = errors.New("witness does not satisfy the circuit")
	ErrProofEncoding  = errors.New("malformed proof")
	ErrInvalidProof   = errors.New("proof does not verify")
	ErrNoProvingKey   = errors.New("proving key not loaded (verifier-only keys)")
)
