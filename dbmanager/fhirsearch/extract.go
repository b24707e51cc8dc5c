package fhirsearch

import (
	"encoding/json"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Version numbers what Extract reads. A store indexed by an older version
// indexes every resource again when it opens; raise it whenever the table
// or the extraction changes.
const Version = 1

// Extract returns the searchable values of a resource of type typ: for
// each of the type's parameters that has values of its own (not an alias,
// see Param.Index), the values at its paths, without duplicates. Elements of
// an unexpected shape are skipped, never an error: the store indexes
// whatever it keeps, and fhirval decides what it keeps.
func Extract(typ string, raw []byte) []store.IndexValue {
	ps := params[typ]
	if len(ps) == 0 {
		return nil
	}
	// Only the members the parameters read are decoded (a Claim's items,
	// an ExplanationOfBenefit's contained resources are skipped over).
	members, ok := topMembers(raw, firstSegments[typ])
	if !ok {
		return nil
	}
	top := make(map[string]any, len(members))
	for k, v := range members {
		var x any
		if json.Unmarshal(v, &x) == nil {
			top[k] = x
		}
	}
	var out []store.IndexValue
	add := func(v store.IndexValue) {
		if !slices.Contains(out, v) { // a handful of values: a scan beats a map
			out = append(out, v)
		}
	}
	for _, p := range ps {
		if p.Index() != p.Name {
			continue
		}
		for _, path := range p.Paths {
			for _, el := range walk(top, strings.Split(path, ".")) {
				switch p.Kind {
				case store.Token:
					for _, t := range tokens(el) {
						t.Param = p.Name
						add(t)
					}
				case store.Date:
					if d, ok := dateValue(el); ok {
						d.Param = p.Name
						add(d)
					}
				case store.Reference:
					if r, ok := referenceValue(el); ok {
						r.Param = p.Name
						add(r)
					}
				}
			}
		}
	}
	return out
}

// walk returns the elements at path under obj, one per array element.
func walk(obj map[string]any, path []string) []any {
	v, ok := obj[path[0]]
	if !ok {
		return nil
	}
	elems, isArray := v.([]any)
	if !isArray {
		elems = []any{v}
	}
	if len(path) == 1 {
		return elems
	}
	var out []any
	for _, e := range elems {
		if m, ok := e.(map[string]any); ok {
			out = append(out, walk(m, path[1:])...)
		}
	}
	return out
}

// str returns an object's member if it is a string.
func str(m map[string]any, k string) (string, bool) {
	s, ok := m[k].(string)
	return s, ok
}

// tokens reads a code (a JSON string, system ""), a Coding, or a
// CodeableConcept's codings.
func tokens(el any) []store.IndexValue {
	switch x := el.(type) {
	case string:
		if x == "" {
			return nil
		}
		return []store.IndexValue{{Value: x}}
	case map[string]any:
		var out []store.IndexValue
		if code, _ := str(x, "code"); code != "" {
			sys, _ := str(x, "system")
			out = append(out, store.IndexValue{System: sys, Value: code})
		}
		codings, _ := x["coding"].([]any)
		for _, c := range codings {
			if m, ok := c.(map[string]any); ok {
				if code, _ := str(m, "code"); code != "" {
					sys, _ := str(m, "system")
					out = append(out, store.IndexValue{System: sys, Value: code})
				}
			}
		}
		return out
	}
	return nil
}

// dateValue reads a date, dateTime or instant (a JSON string) or a Period.
func dateValue(el any) (store.IndexValue, bool) {
	switch x := el.(type) {
	case string:
		d, err := ParseDate(x)
		if err != nil {
			return store.IndexValue{}, false
		}
		return store.IndexValue{Lo: d.Lo, Hi: d.Hi, YearLo: d.Year, YearHi: d.Year}, true
	case map[string]any:
		start, hasStart := x["start"]
		end, hasEnd := x["end"]
		if !hasStart && !hasEnd {
			return store.IndexValue{}, false
		}
		v := store.IndexValue{Lo: math.MinInt64, Hi: math.MaxInt64, YearLo: store.YearOpenLo, YearHi: store.YearOpenHi}
		if hasStart {
			s, _ := start.(string)
			d, err := ParseDate(s)
			if err != nil {
				return store.IndexValue{}, false
			}
			v.Lo, v.YearLo = d.Lo, d.Year
		}
		if hasEnd {
			s, _ := end.(string)
			d, err := ParseDate(s)
			if err != nil {
				return store.IndexValue{}, false
			}
			v.Hi, v.YearHi = d.Hi, d.Year
		}
		return v, true
	}
	return store.IndexValue{}, false
}

// referenceValue reads a Reference: "Type/id" (a version, if any, is
// dropped: a search is over current versions), or "urn:uuid:U" — how
// imported bundles refer, by an id that is a UUID and so names one
// resource whatever its type. Absolute URLs, contained and conditional
// references name nothing here and are skipped.
func referenceValue(el any) (store.IndexValue, bool) {
	m, ok := el.(map[string]any)
	if !ok {
		return store.IndexValue{}, false
	}
	ref, _ := str(m, "reference")
	typ, id, ok := ParseReference(ref)
	if !ok {
		return store.IndexValue{}, false
	}
	return store.IndexValue{System: typ, Value: id}, true
}

// ParseReference reads a relative reference "Type/id" or
// "Type/id/_history/v", or "urn:uuid:U" (type "").
func ParseReference(ref string) (typ, id string, ok bool) {
	if u, found := strings.CutPrefix(ref, "urn:uuid:"); found {
		if store.ValidID(u) != nil {
			return "", "", false
		}
		return "", u, true
	}
	parts := strings.Split(ref, "/")
	switch {
	case len(parts) == 2:
	case len(parts) == 4 && parts[2] == "_history" && store.ValidID(parts[3]) == nil:
	default:
		return "", "", false
	}
	if !typeName(parts[0]) || store.ValidID(parts[1]) != nil {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// typeName reports whether s looks like a FHIR resource type name.
func typeName(s string) bool {
	if s == "" || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// firstSegments are, per type, the members its parameters' paths start at.
var firstSegments = func() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for typ, ps := range params {
		out[typ] = map[string]bool{}
		for _, p := range ps {
			for _, path := range p.Paths {
				first, _, _ := strings.Cut(path, ".")
				out[typ][first] = true
			}
		}
	}
	return out
}()

// topMembers returns the raw values of the members of a JSON object that
// want names, skipping the others without decoding them. It reports false
// if raw is not an object; a value it returns may still be malformed, for
// json.Unmarshal to refuse.
func topMembers(raw []byte, want map[string]bool) (map[string][]byte, bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return nil, false
	}
	out := map[string][]byte{}
	for i = skipSpace(raw, i+1); i < len(raw) && raw[i] != '}'; {
		if raw[i] != '"' {
			return nil, false
		}
		end, ok := skipString(raw, i)
		if !ok {
			return nil, false
		}
		key := string(raw[i+1 : end-1])
		if (strings.IndexByte(key, '\\') >= 0 || !utf8.ValidString(key)) && json.Unmarshal(raw[i:end], &key) != nil {
			return nil, false
		}
		if i = skipSpace(raw, end); i >= len(raw) || raw[i] != ':' {
			return nil, false
		}
		start := skipSpace(raw, i+1)
		if end, ok = skipValue(raw, start); !ok {
			return nil, false
		}
		if want[key] {
			out[key] = raw[start:end]
		}
		if i = skipSpace(raw, end); i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return out, i < len(raw)
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\r' || raw[i] == '\n') {
		i++
	}
	return i
}

// skipString returns the end of the string starting at raw[i] == '"'.
func skipString(raw []byte, i int) (int, bool) {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipValue returns the end of the value starting at raw[i].
func skipValue(raw []byte, i int) (int, bool) {
	if i >= len(raw) {
		return 0, false
	}
	switch raw[i] {
	case '"':
		return skipString(raw, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(raw); j++ {
			switch raw[j] {
			case '"':
				end, ok := skipString(raw, j)
				if !ok {
					return 0, false
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	}
	j := i
	for j < len(raw) && !strings.ContainsRune(",}] \t\r\n", rune(raw[j])) {
		j++
	}
	return j, j > i
}
