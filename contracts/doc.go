// Package contracts owns MedRec-ZK's on-chain part: the Solidity sources under
// src/ (AgentRegistry, PatientRegistry, Relationships, Anchors, the generated
// Groth16 verifiers and Poseidon2), their compiled output under build/, the
// generated abigen v2 bindings (package bindings), and the Go helpers every
// component uses to deploy them (Deploy, Deployment), to sign the EIP-712
// messages a relationship's owner authorises (GrantDigest, RevokeDigest, Sign)
// and to decode their custom errors (DecodeRevert).
//
// The contracts hold who may read what and where it lives, never medical data,
// and nothing that links a patient's relationships across providers. `make
// generate` rebuilds every generated file byte for byte; the tests run on
// go-ethereum's simulated backend with real proofs from package prover.
package contracts
