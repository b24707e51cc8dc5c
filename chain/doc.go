// Package chain runs and follows the providers' proof-of-authority network:
// go-ethereum v1.13.15 nodes sealing Clique blocks, one authority per
// provider, on this machine's loopback.
//
// A network lives in one directory (see docs/chain.md for its layout).
// Create writes the keys (go-ethereum keystore files), a Clique genesis and
// initialised node directories; Network.Up starts a geth process per
// provider, detached so it outlives the command that started it, and
// returns once every node answers, is peered and has imported a new block.
// The network's state — chain id, genesis hash, and per provider its
// authority and gateway addresses, RPC URL, ports, pid and directory — is
// network.json, which every other component reads (LoadState).
//
// Go code talks to the nodes only over JSON-RPC (Node), never by importing
// geth 1.13: the go-ethereum library in go.mod is v1.17, which cannot seal
// Clique but speaks the protocol's RPC. Admin calls go over the node's IPC
// socket; HTTP serves eth, net, web3 and clique only.
//
// Governance: the AgentRegistry contract says which providers are active
// (`medrec governance` proposes and votes there); a Mirror makes one
// authority vote (clique_propose) until the Clique signer set equals a
// SignerSource's set — the registry's, read by a package above this one —
// and reports the Drift. Every authority
// runs its own mirror, since Clique counts one vote per signer per sealed
// block and changes the set once more than half voted. Network.Watch runs
// them for the local nodes and heals Clique's forked-signer stall (Heal).
//
// Nodes start with the authority key locked and seal only once connected
// to their peers (startSealing); docs/chain.md says why, and what running
// an unlocked signer key costs.
//
// Measured on the 2-core shared development machine, period 1 s (the
// tests; upper ends with other builds running):
//
//	bring up 3 providers (create + start + first block)  1.4–3.7 s
//	bring up 5 providers                                  4.1–5.4 s
//	restart a stopped or wholly crashed 3-provider net    1.7–4.0 s
//	block time, 3 of 3 signers up                         1.0 s
//	block time, 3 of 5 signers up (2 crashed)             0.8–1.0 s
//	crashed node restarted: caught up                     at once
//	signer change, 3 authorities vote a 4th in            2.4–3.0 s to take effect,
//	                                                      4.3–6.5 s to its first sealed block
//	signer change, 4 authorities vote one out             3.7–4.0 s
//	heal a forked stall                                   6–10 s
package chain
