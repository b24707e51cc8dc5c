package fhirsearch

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Errors of the parsers. Every error wraps exactly one of them.
var (
	// ErrUnsupported: a parameter, modifier, prefix or value this gateway
	// does not support. Under Prefer: handling=lenient the parameter is
	// ignored instead.
	ErrUnsupported = errors.New("not supported")
	// ErrInvalid: a supported parameter with a malformed value, or one
	// given twice that may be given once. Never ignored.
	ErrInvalid = errors.New("invalid")
)

// Arg is one query parameter as sent, decoded, in the order sent.
type Arg struct{ Key, Value string }

// Limits of what one request may ask.
const (
	MaxArgs     = 64  // query parameters
	MaxValue    = 512 // bytes in one parameter's value
	MaxIncludes = 8   // _include and _revinclude together
	MaxElements = 32  // names in _elements
)

// Interaction says which request the parameters are for; each accepts its
// own.
type Interaction uint8

// Interactions.
const (
	// Read and VRead accept no parameter.
	Read Interaction = iota + 1
	// History (instance history) accepts _count and _cursor.
	History
	// Search (search-type) accepts the type's parameters, _id,
	// _lastUpdated, _sort, _count, _cursor, _include, _revinclude,
	// _summary and _elements.
	Search
	// Everything (Patient/$everything) accepts _since, _type, _count and
	// _cursor.
	Everything
)

// Value is one value of a criterion as parsed.
type Value struct {
	Raw       string // as sent, without its prefix
	Match     store.Match
	Precision Precision // of a date
}

// Criterion is one search parameter of a request.
type Criterion struct {
	Param  Param  // _id and _lastUpdated included (Kind Token and Date)
	Target string // a reference's type modifier (subject:Patient=…), "" if none
	Values []Value
}

// Request is what a request's parameters ask for.
type Request struct {
	Interaction Interaction
	Type        string
	Criteria    []Criterion
	Sort        store.Sort
	Count       int // _count; -1 if not given
	Cursor      string
	Summary     bool     // _summary=count
	Elements    []string // _elements: the top-level elements to keep
	Include     []store.Include
	RevInclude  []store.Include
	Since       DateValue // _since of $everything (zero if not given)
	Types       []string  // _type of $everything
	// Applied are the parameters used, in the order sent; Ignored the
	// names of those ignored under lenient handling.
	Applied []Arg
	Ignored []string
}

// Parse reads the parameters of a request of interaction i on type typ
// (Search; "" otherwise). base is this server's FHIR base URL: an absolute
// reference under it is read as a relative one. lenient ignores what is
// ErrUnsupported instead of failing.
func Parse(i Interaction, typ string, args []Arg, base string, lenient bool) (*Request, error) {
	if len(args) > MaxArgs {
		return nil, fmt.Errorf("more than %d parameters: %w", MaxArgs, ErrInvalid)
	}
	r := &Request{Interaction: i, Type: typ, Count: -1}
	once := map[string]bool{}
	for _, a := range args {
		err := r.arg(a, base, once)
		switch {
		case err == nil:
			r.Applied = append(r.Applied, a)
		case lenient && errors.Is(err, ErrUnsupported):
			r.Ignored = append(r.Ignored, a.Key)
		default:
			return nil, err
		}
	}
	return r, nil
}

// accepted are the parameters of each interaction besides a type's own.
var accepted = map[Interaction][]string{
	Read:       nil,
	History:    {"_count", "_cursor"},
	Search:     {"_count", "_cursor", "_sort", "_summary", "_elements", "_include", "_revinclude", store.IDParam, store.UpdatedParam},
	Everything: {"_count", "_cursor", "_since", "_type"},
}

// singletons may be given once.
var singletons = map[string]bool{"_count": true, "_cursor": true, "_sort": true, "_summary": true, "_elements": true, "_since": true, "_type": true}

func (r *Request) arg(a Arg, base string, once map[string]bool) error {
	name, mod, hasMod := strings.Cut(a.Key, ":")
	unsupported := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", a.Key, fmt.Sprintf(format, args...), ErrUnsupported)
	}
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", a.Key, fmt.Sprintf(format, args...), ErrInvalid)
	}
	accepts := accepted[r.Interaction]
	_, own := Lookup(r.Type, name)
	if !slices.Contains(accepts, name) && !(r.Interaction == Search && own) {
		if strings.Contains(name, ".") {
			return unsupported("chained parameters are not supported")
		}
		return unsupported("not a parameter of this request (see /fhir/metadata)")
	}
	if hasMod && !(own && mod != "") {
		return unsupported("modifier %q is not supported", mod)
	}
	if len(a.Value) > MaxValue {
		return invalid("longer than %d bytes", MaxValue)
	}
	if a.Value == "" {
		return invalid("no value")
	}
	if singletons[name] {
		if once[name] {
			return invalid("given twice")
		}
		once[name] = true
	}
	switch name {
	case "_count":
		n, err := strconv.Atoi(a.Value)
		if err != nil || n < 0 || strings.HasPrefix(a.Value, "+") {
			return invalid("not a count (0, 1, 2 …)")
		}
		r.Count = min(n, store.MaxCount)
	case "_cursor":
		r.Cursor = a.Value
	case "_sort":
		return r.sortBy(a.Value, unsupported)
	case "_summary":
		switch a.Value {
		case "count":
			r.Summary = true
		case "false":
		default:
			return unsupported("only _summary=count (and false) are supported")
		}
	case "_elements":
		names := strings.Split(a.Value, ",")
		if len(names) > MaxElements {
			return invalid("more than %d elements", MaxElements)
		}
		for _, n := range names {
			if !elementRE.MatchString(n) {
				return invalid("%q is not a top-level element name", n)
			}
		}
		r.Elements = names
	case "_include", "_revinclude":
		if len(r.Include)+len(r.RevInclude) >= MaxIncludes {
			return invalid("more than %d _include and _revinclude", MaxIncludes)
		}
		inc, err := r.include(name, a.Value)
		if err != nil {
			return fmt.Errorf("%s=%s: %w", a.Key, a.Value, err)
		}
		if name == "_include" {
			r.Include = append(r.Include, inc)
		} else {
			r.RevInclude = append(r.RevInclude, inc)
		}
	case "_since":
		d, err := ParseDate(a.Value)
		if err != nil {
			return invalid("%v", err)
		}
		r.Since = d
	case "_type":
		for _, t := range strings.Split(a.Value, ",") {
			if err := store.ValidType(t); err != nil {
				return invalid("%q is not a resource type this gateway serves", t)
			}
			if !slices.Contains(r.Types, t) {
				r.Types = append(r.Types, t)
			}
		}
	case store.IDParam:
		c := Criterion{Param: Param{Name: store.IDParam, Kind: store.Token}}
		for _, v := range splitValues(a.Value) {
			v = unescape(v)
			if store.ValidID(v) != nil {
				return invalid("%q is not a resource id", v)
			}
			c.Values = append(c.Values, Value{Raw: v, Match: store.Match{Value: v}})
		}
		return r.add(c, invalid)
	case store.UpdatedParam:
		c, err := dateCriterion(Param{Name: store.UpdatedParam, Kind: store.Date}, a.Value)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
		return r.add(c, invalid)
	default:
		p, _ := Lookup(r.Type, name)
		c, err := criterion(p, mod, a.Value, base)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
		return r.add(c, invalid)
	}
	return nil
}

var elementRE = regexp.MustCompile(`^[a-z][A-Za-z0-9]{0,63}$`)

func (r *Request) add(c Criterion, invalid func(string, ...any) error) error {
	if len(c.Values) > store.MaxMatches {
		return invalid("more than %d values", store.MaxMatches)
	}
	r.Criteria = append(r.Criteria, c)
	return nil
}

func (r *Request) sortBy(v string, unsupported func(string, ...any) error) error {
	if strings.Contains(v, ",") {
		return unsupported("sorting by one key only")
	}
	desc := strings.HasPrefix(v, "-")
	key := strings.TrimPrefix(v, "-")
	switch key {
	case store.IDParam:
		r.Sort = store.Sort{Key: store.SortID, Desc: desc}
		if desc {
			return unsupported("_id sorts ascending only")
		}
	case store.UpdatedParam:
		r.Sort = store.Sort{Key: store.SortUpdated, Desc: desc}
	default:
		p, ok := Lookup(r.Type, key)
		if !ok || p.Kind != store.Date {
			return unsupported("%q is not a date parameter of %s (sort by one, or _lastUpdated)", key, r.Type)
		}
		r.Sort = store.Sort{Key: store.SortDate, Param: key, Desc: desc}
	}
	return nil
}

// include reads "Source:param" or "Source:param:Target".
func (r *Request) include(name, v string) (store.Include, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return store.Include{}, fmt.Errorf("want Type:parameter or Type:parameter:Target: %w", ErrInvalid)
	}
	p, ok := Lookup(parts[0], parts[1])
	if !ok || p.Kind != store.Reference {
		return store.Include{}, fmt.Errorf("%s:%s is not a reference this gateway follows (see /fhir/metadata): %w", parts[0], parts[1], ErrUnsupported)
	}
	inc := store.Include{Source: parts[0], Param: p.Index(), Target: p.Targets}
	if name == "_include" && inc.Source != r.Type {
		return store.Include{}, fmt.Errorf("_include follows references of %s, the type searched: %w", r.Type, ErrInvalid)
	}
	if name == "_revinclude" {
		if !slices.Contains(p.Targets, r.Type) {
			return store.Include{}, fmt.Errorf("%s:%s never refers to a %s: %w", parts[0], parts[1], r.Type, ErrInvalid)
		}
		inc.Target = []string{r.Type}
	}
	if len(parts) == 3 {
		if !slices.Contains(inc.Target, parts[2]) {
			return store.Include{}, fmt.Errorf("%s:%s does not refer to %q: %w", parts[0], parts[1], parts[2], ErrInvalid)
		}
		inc.Target = []string{parts[2]}
	}
	return inc, nil
}

// criterion reads the value of one of the type's own parameters.
func criterion(p Param, mod, v, base string) (Criterion, error) {
	switch p.Kind {
	case store.Token:
		if mod != "" {
			return Criterion{}, fmt.Errorf("modifier %q is not supported: %w", mod, ErrUnsupported)
		}
		c := Criterion{Param: p}
		for _, s := range splitValues(v) {
			m, err := tokenMatch(s)
			if err != nil {
				return Criterion{}, err
			}
			c.Values = append(c.Values, Value{Raw: s, Match: m})
		}
		return c, nil
	case store.Date:
		if mod != "" {
			return Criterion{}, fmt.Errorf("modifier %q is not supported: %w", mod, ErrUnsupported)
		}
		return dateCriterion(p, v)
	case store.Reference:
		c := Criterion{Param: p}
		if mod != "" {
			if !slices.Contains(p.Targets, mod) {
				return Criterion{}, fmt.Errorf("modifier %q is not supported (a type %s refers to: %s): %w", mod, p.Name, strings.Join(p.Targets, ", "), ErrUnsupported)
			}
			c.Target = mod
		}
		for _, s := range splitValues(v) {
			s = unescape(s)
			m, err := refMatch(p, c.Target, s, base)
			if err != nil {
				return Criterion{}, err
			}
			c.Values = append(c.Values, Value{Raw: s, Match: m})
		}
		return c, nil
	}
	return Criterion{}, fmt.Errorf("parameter %s: %w", p.Name, ErrUnsupported)
}

// tokenMatch reads code, system|code, |code or system|.
func tokenMatch(s string) (store.Match, error) {
	parts := splitUnescaped(s, '|')
	for i := range parts {
		parts[i] = unescape(parts[i])
	}
	switch {
	case len(parts) == 1 && parts[0] != "":
		return store.Match{Value: parts[0], AnySystem: true}, nil
	case len(parts) == 2 && parts[1] != "":
		return store.Match{System: parts[0], Value: parts[1]}, nil
	case len(parts) == 2 && parts[0] != "":
		return store.Match{System: parts[0], AnyValue: true}, nil
	}
	return store.Match{}, fmt.Errorf("%q: want code, system|code, |code or system|: %w", s, ErrInvalid)
}

// dateCriterion reads a comma-separated list of dates, each with a prefix.
func dateCriterion(p Param, v string) (Criterion, error) {
	c := Criterion{Param: p}
	for _, s := range splitValues(v) {
		s = unescape(s)
		prefix, rest := store.Eq, s
		if len(s) >= 2 && s[0] >= 'a' && s[0] <= 'z' {
			switch s[:2] {
			case "eq":
			case "gt":
				prefix = store.Gt
			case "lt":
				prefix = store.Lt
			case "ge":
				prefix = store.Ge
			case "le":
				prefix = store.Le
			case "ne", "sa", "eb", "ap":
				return Criterion{}, fmt.Errorf("prefix %q is not supported (eq, gt, lt, ge, le are): %w", s[:2], ErrUnsupported)
			default:
				return Criterion{}, fmt.Errorf("%q: unknown prefix: %w", s, ErrInvalid)
			}
			rest = s[2:]
		}
		d, err := ParseDate(rest)
		if err != nil {
			return Criterion{}, fmt.Errorf("%w: %w", err, ErrInvalid)
		}
		c.Values = append(c.Values, Value{Raw: s, Precision: d.Precision, Match: store.Match{Prefix: prefix, Lo: d.Lo, Hi: d.Hi, Year: d.Year}})
	}
	return c, nil
}

// refMatch reads id, Type/id, urn:uuid:id or an absolute URL under base.
func refMatch(p Param, target, s, base string) (store.Match, error) {
	if base != "" {
		if rel, ok := strings.CutPrefix(s, strings.TrimSuffix(base, "/")+"/"); ok {
			s = rel
		}
	}
	if strings.Contains(s, "://") {
		return store.Match{}, fmt.Errorf("%q names another server: %w", s, ErrInvalid)
	}
	typ, id := target, s
	if t, i, ok := ParseReference(s); ok {
		if target != "" && t != "" && t != target {
			return store.Match{}, fmt.Errorf("%q is not a %s: %w", s, target, ErrInvalid)
		}
		if t != "" {
			typ = t
		}
		id = i
	} else if store.ValidID(s) != nil {
		return store.Match{}, fmt.Errorf("%q is not a reference (id, Type/id or urn:uuid:id): %w", s, ErrInvalid)
	}
	if typ != "" && !slices.Contains(p.Targets, typ) {
		return store.Match{}, fmt.Errorf("%s never refers to a %s: %w", p.Name, typ, ErrInvalid)
	}
	return store.Match{System: typ, Value: id}, nil
}

// splitValues splits a parameter's value at unescaped commas (FHIR R4
// 3.1.1.5.7: "\," is a comma inside a value); each part keeps its escapes
// until its last split (unescape).
func splitValues(v string) []string { return splitUnescaped(v, ',') }

// splitUnescaped splits s at each sep that no backslash escapes.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // whatever follows is escaped
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape removes the escapes of \, \| \$ and \\.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return escapes.Replace(s)
}

var escapes = strings.NewReplacer(`\,`, ",", `\|`, "|", `\$`, "$", `\\`, `\`)
