// Package circuits owns the zero-knowledge statements of MedRec-ZK, as gnark
// circuits over BN254 for Groth16, and their plain-Go twins: the witness
// builders compute every public value with the same zkhash and merkle code the
// rest of the system uses, so a circuit and its twin cannot drift apart
// unnoticed.
//
//   - Ownership: "I hold the secret s behind one of the registered identity
//     commitments, this is my tag at provider Scope, and I bind Signal"; used
//     to open a relationship and to rotate its delegate.
//   - Entitlement: "I hold the viewer secret v and the grant secret k behind
//     grant g on relationship Tag, and I bind Challenge"; used by anonymous
//     viewers at a gateway.
//   - Insertion: "NewRoot is the registry's root after inserting, at Start,
//     the Count leaves whose evaluation at X is E"; a batch of enrolments
//     checked on chain for a fraction of the frontier's gas (ADR 0002).
//     Built and tested here; not yet in the ceremony, the contracts or the
//     gateway.
//
// Public inputs are listed in each circuit in the order the Groth16 verifier
// (Go or Solidity) takes them. No circuit is ever compiled with
// frontend.IgnoreUnconstrainedInputs: every public input is constrained.
package circuits
