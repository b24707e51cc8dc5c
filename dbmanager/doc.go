// Package dbmanager is a provider's gateway: the only door to the
// provider's records, and the chain decides who passes. It serves FHIR R4
// reads to the relationship's owner delegate and to the grantees the owner
// authorised on chain (addresses by signed requests, anonymous viewers by
// an Entitlement proof bound to a fresh challenge) and to the SMART apps
// the owner approved, enforces scope, purpose and expiry on every read,
// answers research readers with de-identified copies (an allowlist per
// resource type), logs every attempt in the hash-chained access log,
// relays the patients' signed grant/revoke/rotate messages so patients
// never need ether, gives the provider's staff an admin API (patients,
// enrolment, claims, records), and takes FHIR writes from the systems the
// provider registered (SMART Backend Services), logged like every write.
//
// # The request path
//
// A request flows one way through the package's files: gateway.go routes
// it (security headers, CORS for registered browser apps on the standard
// door — cors.go —, body limit, per-address limits); authorize.go
// decides who the reader is and what it may read (signature, session or a
// SMART app's access token; relationship, grant or approval, scope,
// per-reader limit); accesslog.go logs the decision with the request's
// nonce in one commit; the handlers answer (read.go for FHIR read, vread
// and history, search.go for searches and $everything — their parameters
// read by package fhirsearch before begin, research.go applying a research
// reader's limits after it — capability.go for the CapabilityStatement,
// owner.go for the owner's feed, log, state and history, fhirlog.go for
// the owner's log as AuditEvents, grants as Consents and accounting of
// disclosures, export.go for bulk export (its files are logged before they
// are listed), group.go for a research grantee's Group/research and its
// group export — requests signed without a tag, authorized per member —
// deidentify.go shaping what research readers get).
// docs/fhir.md describes the FHIR API. smart.go is SMART App Launch (the
// authorize step that sends the browser to the patient's app, the
// patient's signed approval, the token endpoint; its requests are decoded
// in smartrequest.go), whose access tokens authorize.go then checks on
// every read. backend.go is SMART Backend Services at the same token
// endpoint (a registered system's signed assertion for a write-only
// token), feed.go the FHIR writes made with it (create, update,
// conditional, batch and transaction Bundles, stored by ingest.Feed and
// logged in the same commit). viewer.go holds the anonymous viewers' challenges and
// sessions, admin.go the staff's API (bulkimport.go its one streamed
// body, the bulk NDJSON import), relay.go the relay, chain.go the chain
// view and the gateway's transactions, anchoring.go the anchors,
// maintain.go the housekeeping that runs off the request path (pruning
// expired nonces, claim codes and SMART codes and tokens once a minute
// while the gateway listens).
//
// Permissions come from a chainview.View brought up to date before a
// decision whenever the node announced a new head since the last sync
// (Config.Heads, followed by subscription), and at least every
// SyncInterval; so a revocation is enforced once its block's announcement
// reaches the gateway (heads.go). Errors are FHIR OperationOutcome
// resources with the matching HTTP status; the OAuth endpoints of SMART App
// Launch answer RFC 6749's JSON errors instead.
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
// minute, by the gateway's clock, in the background (Maintain). A request's nonce is recorded in the same
// commit as its access-log entry (or, for the owner's unlogged requests,
// after the handler), before anything is answered; if the database cannot
// record it, the request is refused (5xx), never served.
//
// Kept in memory only, and lost on a restart: SMART apps' pending
// authorize requests, codes and tokens (their SHA-256; an app launches
// again) and backend clients' tokens (a client asks again; the jti of
// their assertions are nonces of the database, so survive), the key of anonymous viewers' challenges (2 minutes; a challenge
// is stateless until a valid proof uses it, so requests for challenges
// fill no table) and the used ones, sessions (SessionTTL, 10 minutes by
// default) — a viewer asks for a new challenge and proves again — and the
// chain view, which is rebuilt from the chain.
package dbmanager
