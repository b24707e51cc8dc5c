package audit

import "errors"

// Errors that stop an audit before any check runs. The command maps them to
// exit codes; contracts.ErrNotDeployed is returned (wrapped) as well.
var (
	// ErrRPC: the RPC endpoint did not answer.
	ErrRPC = errors.New("audit: RPC endpoint unreachable")
	// ErrWrongChain: the endpoint serves another chain than the deployment's.
	ErrWrongChain = errors.New("audit: wrong chain")
	// ErrRange: the block range is empty or invalid.
	ErrRange = errors.New("audit: invalid block range")
	// ErrRangeTooLarge: the block range exceeds Config.MaxRange.
	ErrRangeTooLarge = errors.New("audit: block range too large")
	// ErrChainData: the chain returned data the audit cannot interpret
	// (a malformed log of a known event, a missing block).
	ErrChainData = errors.New("audit: unexpected chain data")
)
