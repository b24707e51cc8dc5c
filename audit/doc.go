// Package audit checks MedRec-ZK's anonymity promises from the public chain
// alone: an auditor needs an RPC connection and the deployment record, nothing
// a provider or patient holds.
//
// Run reads the MedRec-ZK contracts' raw logs in batched block ranges, then
// (unless Config.LogsOnly) every transaction of the audited range, then the
// state at the audited head (delegates' balances and nonces, the verifiers'
// code, the registry's signer set), and returns a Report of named checks:
//
//	anonymity-set   enrolled commitments under the root of each open's proof
//	shared-owner    one address owning relationships at two providers
//	delegate-ether  a delegate that sent a transaction or received ether
//	relayer         opens not sent by the provider's gateway at that block
//	grantee-links   address grantees linking relationships across providers
//	close-opens     opens at different providers close in time (warning)
//	per-patient     logs or calls beyond open/rotate/grant/revoke
//	verifiers       verifier code whose verifying key is not the ceremony's
//	signers         registry signer set versus the Clique signer set
//	grant-times     grants at different providers close in time, or ending
//	                at the same moment (warning)
//
// The analysis is streaming: memory grows with relationships, enrolments,
// delegates and grants (16 bytes each, for grant-times), not with other
// events or blocks. docs/audit.md says what each check
// means and what it cannot see.
package audit
