package store

import (
	"fmt"
	"time"
)

// Search: the values a search can match, kept beside each resource's
// current version, and the queries over them. Which FHIR search parameter
// reads which element is package fhirsearch's business: it extracts the
// values (Extract) and turns a query string into a Query; the store keeps
// the values in the same transaction as the version they were read from
// and answers the queries. A store only knows three kinds of value.

// IndexKind is the kind of a searchable value.
type IndexKind uint8

// Kinds of searchable values.
const (
	// Token: a code, with the system it belongs to ("" if none).
	Token IndexKind = iota + 1
	// Date: the range of instants a date, dateTime, instant or Period covers.
	Date
	// Reference: the type ("" when the reference does not say: urn:uuid)
	// and id of the resource referred to.
	Reference
)

func (k IndexKind) String() string {
	switch k {
	case Token:
		return "token"
	case Date:
		return "date"
	case Reference:
		return "reference"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// IndexValue is one searchable value of a resource's current version.
type IndexValue struct {
	Param string // the search parameter, e.g. "code", "date", "subject"
	// Token: the system and the code. Reference: the target's type and id.
	System, Value string
	// Date: the instants covered, [Lo, Hi] in Unix microseconds UTC (an
	// open end is math.MinInt64 or math.MaxInt64), and the years as
	// written (YearOpen at an open end) — what a research reader, who sees
	// dates cut to the year as written, may compare with.
	Lo, Hi         int64
	YearLo, YearHi int
}

// YearOpenLo and YearOpenHi stand for the year of an open end of a
// Period: before or after every year.
const (
	YearOpenLo = 0
	YearOpenHi = 10000
)

// Query is a search over one patient's current resources of one type.
type Query struct {
	Type     string
	Criteria []Criterion // every one must hold
	Sort     Sort
	PageRequest
	// CountOnly asks for Total alone (FHIR _summary=count).
	CountOnly bool
}

// Criterion is one search parameter with its values: a resource matches
// if any of the values matches one of its own.
type Criterion struct {
	// Param is an indexed parameter, or IDParam or UpdatedParam, which
	// match the resource's id and lastUpdated.
	Param string
	Kind  IndexKind // Token, Date or Reference; Token for IDParam, Date for UpdatedParam
	Any   []Match
}

// The parameters every resource has, matched without the index.
const (
	IDParam      = "_id"
	UpdatedParam = "_lastUpdated"
)

// Match is one value of a criterion.
type Match struct {
	// Token: System and Value; AnySystem when the value named no system
	// ("code"), AnyValue when it named only one ("system|"). Reference:
	// System is the target's type ("" for any) and Value its id. IDParam:
	// Value is the id.
	System, Value       string
	AnySystem, AnyValue bool

	// Date: the search value's range [Lo, Hi] (microseconds) and how a
	// target range must relate to it (FHIR R4 3.1.1.4.2: eq, the target
	// lies within it; gt and lt, the target reaches beyond it; ge and le,
	// either). ByYear compares the years as written with Year instead.
	Prefix Prefix
	Lo, Hi int64
	ByYear bool
	Year   int
}

// Prefix is a date comparison.
type Prefix uint8

// Date prefixes.
const (
	Eq Prefix = iota
	Gt
	Lt
	Ge
	Le
)

func (p Prefix) String() string {
	switch p {
	case Eq:
		return "eq"
	case Gt:
		return "gt"
	case Lt:
		return "lt"
	case Ge:
		return "ge"
	case Le:
		return "le"
	}
	return fmt.Sprintf("prefix(%d)", uint8(p))
}

// SortKey says what a search is ordered by; ties (and SortID) by id.
type SortKey uint8

// Sort keys.
const (
	SortID SortKey = iota
	// SortDate orders by a date parameter: ascending by the earliest
	// instant of its values, descending by the latest; resources without
	// one come last.
	SortDate
	SortUpdated
)

// Sort is a search's order.
type Sort struct {
	Key   SortKey
	Param string // SortDate: the date parameter
	Desc  bool
}

// EverythingQuery asks for a page of a patient's current resources (FHIR
// Patient/$everything).
type EverythingQuery struct {
	Types []string  // only these types; nil: every type
	Since time.Time // only resources changed at or after; zero: all
	PageRequest
	CountOnly bool // Total alone
}

// Include names a reference parameter of a source type, followed forwards
// (_include: the resources the matches refer to, of the Target types) or
// backwards (_revinclude: the Source resources that refer to the matches).
type Include struct {
	Source string
	Param  string
	Target []string // the types it may lead to
}

// Ref names a resource.
type Ref struct{ Type, ID string }

// Limits of searches.
const (
	// MaxIncluded is the most resources one _include or _revinclude adds to
	// a page.
	MaxIncluded = 1000
	// MaxMatches is the most values one criterion may have.
	MaxMatches = 100
)
