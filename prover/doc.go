// Package prover owns the Groth16 side of MedRec-ZK: compiling each circuit
// once per process, loading its proving and verifying keys from disk (never
// re-running a setup), proving from the circuits' witness twins, verifying,
// the 256-byte proof encoding shared with Solidity, the verifying-key hash the
// agent registry records, and the Solidity verifier export.
//
// Keys come from a multi-party ceremony (package prover/ceremony). The keys
// embedded in this package (devkeys/) come from the documented local dev
// ceremony: anyone who ran it knows enough to forge proofs. They are for
// development and tests only, never for production.
package prover
