package chain

import "errors"

// Sentinel errors. Callers match them with errors.Is; messages wrapped
// around them name the file, port, URL or node concerned.
var (
	// ErrGethMissing: no geth binary where we looked.
	ErrGethMissing = errors.New("geth binary not found")
	// ErrGethVersion: the geth binary is not the release that seals Clique.
	ErrGethVersion = errors.New("wrong geth version")
	// ErrPortInUse: a loopback port a node needs is taken.
	ErrPortInUse = errors.New("port already in use")
	// ErrGenesisMismatch: a node's data directory belongs to another network.
	ErrGenesisMismatch = errors.New("data directory belongs to another network")
	// ErrUnreachable: a node's JSON-RPC endpoint does not answer.
	ErrUnreachable = errors.New("node RPC unreachable")
	// ErrNoNetwork: the directory holds no network (no network.json).
	ErrNoNetwork = errors.New("no network in directory")
	// ErrNotEmpty: a new network was asked for in a directory holding other files.
	ErrNotEmpty = errors.New("directory is not empty")
	// ErrConflict: the options given disagree with the network on disk.
	ErrConflict = errors.New("options conflict with the existing network")
	// ErrNodeExited: a geth process died while we waited for it.
	ErrNodeExited = errors.New("geth exited")
	// ErrUnknownProvider: no node for that provider id.
	ErrUnknownProvider = errors.New("unknown provider")
	// ErrNotConverged: the chain's signers did not reach the wanted set in time.
	ErrNotConverged = errors.New("signer set did not converge")
	// ErrNoSigners: a signer source returned an empty set (never mirrored:
	// it would vote every authority out).
	ErrNoSigners = errors.New("signer source returned no signers")
)
