// Package dbmanager is a provider's gateway: the only door to the provider's
// records, and the chain decides who passes. It serves FHIR R4 reads to the
// relationship's owner delegate and to the grantees the owner authorised on
// chain (addresses by signed requests, anonymous viewers by an Entitlement
// proof bound to a fresh challenge), enforces scope, purpose and expiry on
// every read, logs every attempt in the hash-chained access log, relays the
// patients' signed grant/revoke/rotate messages so patients never need ether,
// and gives the provider's staff an admin API (patients, enrolment, claims,
// records).
//
// Permissions come from a chainview.View synchronised at most every
// SyncInterval before a decision, so a revocation is enforced within one
// block. Errors are FHIR OperationOutcome resources with the matching HTTP
// status.
//
// # What survives a restart
//
// Everything the gateway must not forget is in the records database
// (Config.Store), so a new gateway on the same database picks up where the
// old one stopped: the records, the access log, the anchors, the nonces of
// accepted signed requests (each until its request expires, so a request
// replayed after a restart is refused and the refusal logged), and the
// claim codes staff issued (their SHA-256 only, 24 hours, used up by the
// claim they allow). Expired nonces and codes are deleted about once a
// minute, by the gateway's clock. A request's nonce is recorded in the same
// commit as its access-log entry (or, for the owner's unlogged requests,
// after the handler), before anything is answered; if the database cannot
// record it, the request is refused (5xx), never served.
//
// Kept in memory only, and lost on a restart: anonymous viewers' challenges
// (2 minutes) and sessions (SessionTTL, 10 minutes by default) — a viewer
// asks for a new challenge and proves again — and the chain view, which is
// rebuilt from the chain.
package dbmanager
