// Package zkhash owns H, the one hash MedRec-ZK uses wherever a value must be
// provable in zero knowledge: identity commitments, per-provider tags, viewer
// commitments, grant identifiers and Merkle tree nodes. It also owns the
// encoding of BN254 scalar-field elements that crosses process boundaries.
//
// # The hash
//
// H is the Poseidon2 permutation over the BN254 scalar field with state width
// t = 3, S-box x^5, 8 full rounds and 56 partial rounds (the Poseidon/Poseidon2
// 128-bit recommendation with its security margin, checked by a test that
// re-derives it from the papers' inequalities), as implemented natively by
// gnark-crypto and in-circuit by gnark's std/permutation/poseidon2 with the same
// parameters. Round constants are gnark-crypto's deterministic derivation for
// these parameters. docs/adr/0001-hash.md records why this replaces the MiMC
// of the first design.
//
// H is used as a fixed-length sponge with one capacity element that carries a
// domain tag:
//
//	state = [D, 0, 0]
//	for each pair (a, b) of inputs: state[1] += a; state[2] += b; state = P(state)
//	(a trailing single input is absorbed as (a, 0))
//	H(D; x1, ..., xk) = state[1]
//
// Every use has its own domain D, and every domain fixes its arity, so no
// padding is needed and no two uses can collide by construction. Only one lane
// of the final state is ever published, so a published value never exposes a
// sponge state that could be extended (the length-extension attack the design
// warns about for Miyaguchi–Preneel MiMC; see TestLengthExtension).
//
// The domains are:
//
//	C   = H(D_commit; s)              identity commitment
//	tag = H(D_tag;    s, provider)    per-provider relationship tag
//	Cv  = H(D_viewer; v)              viewer commitment
//	g   = H(D_grant;  Cv, tag, k)     anonymous grant identifier
//	n   = H(D_node;   left, right)    Merkle tree node
//
// with D_x = keccak256("medrec-zk/v1/" + x) reduced modulo r. The Solidity
// implementation in contracts/ must match this package bit for bit; the shared
// vectors in testdata/vectors.json prove it.
package zkhash
