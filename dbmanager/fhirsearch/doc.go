// Package fhirsearch owns what the gateway's FHIR R4 search parameters
// mean: which parameters each resource type has (params.go: their names,
// kinds and the elements they read), the searchable values of a resource
// (Extract, which the records store keeps beside each current version),
// FHIR dates as ranges of instants (ParseDate), and the parameters of a
// request (Parse: the search's criteria, sort, paging, _include and
// _revinclude, _summary and _elements; $everything's _since and _type).
//
// The one table here is what the gateway indexes, parses, and lists in
// its CapabilityStatement, so the three cannot disagree. Who may use which
// parameter (a research reader's limits) is the gateway's decision; the
// table marks, per parameter, what de-identification lets a research
// reader use (Param.Research).
//
// Dates follow FHIR R4 search (3.1.1.4.2): a value is the range its
// precision covers, and a prefix compares ranges — eq: the target lies
// within the value's range; gt and lt: the target reaches beyond it; ge
// and le: either. A date without a time zone is UTC, as the validator
// reads stored ones.
package fhirsearch
