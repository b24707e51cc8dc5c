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
package dbmanager
