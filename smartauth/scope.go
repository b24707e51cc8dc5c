package smartauth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/medrec-zk/medrec/access"
)

// Scopes. An app asks for SMART scopes; a gateway grants the part of them
// it can serve, which is never more than was asked:
//
//   - patient/T.rs, patient/*.rs (SMART v2; any of the letters c, r, u, d, s
//     in that order): reads (r) and searches (s) of type T, or of every
//     grantable type — the letters that write (c, u, d) are dropped, as the
//     gateway serves reads only;
//   - patient/T.read and patient/T.* (SMART v1): as patient/T.rs;
//   - launch/patient: the token response names the patient (it always does:
//     a token reads one patient's records);
//   - offline_access: refresh tokens, if the patient also allows it.
//
// Anything else is dropped: user/ and system/ scopes (a token here reads
// one patient's records, for that patient), write-only scopes, scopes with
// a query (v2 granular scopes: the gateway cannot narrow by them, and
// granting the whole type would be wider than asked), types outside
// access's grantable types, openid and fhirUser (no identity is issued:
// the gateway does not know who the patient is beyond the relationship).

// Limits on a scope parameter.
const (
	MaxScopeLen    = 2048
	MaxScopeTokens = 64
)

// Errors of Grant.
var (
	ErrMalformedScope = errors.New("smartauth: malformed scope")
	ErrNoScope        = errors.New("smartauth: no requested scope can be granted")
)

// Granted is what a gateway grants of a requested scope.
type Granted struct {
	Scope   string       // the granted scopes, space-separated, as the token response says
	Read    access.Scope // types the app may read (by id, version, history, $everything, export)
	Search  access.Scope // types the app may search
	Launch  bool         // launch/patient was asked for
	Offline bool         // offline_access was asked for
}

// Grant returns the part of the requested scopes (space-separated) a
// gateway can grant, within the types allowed (an app's registration). It
// fails with ErrNoScope when no type could be read or searched, and with
// ErrMalformedScope when the parameter is too long or not printable ASCII.
func Grant(requested string, allowed access.Scope) (Granted, error) {
	var g Granted
	tokens, err := scopeTokens(requested)
	if err != nil {
		return g, err
	}
	for _, t := range tokens {
		switch t {
		case "launch/patient":
			g.Launch = true
			continue
		case "offline_access":
			g.Offline = true
			continue
		}
		rest, ok := strings.CutPrefix(t, "patient/")
		if !ok || strings.ContainsRune(rest, '?') {
			continue
		}
		dot := strings.LastIndexByte(rest, '.')
		if dot < 0 {
			continue
		}
		read, search := permissions(rest[dot+1:])
		var types access.Scope
		if typ := rest[:dot]; typ == "*" {
			types = access.AllTypes
		} else if s, err := access.NewScope(typ); err == nil {
			types = s
		}
		types &= allowed
		if read {
			g.Read |= types
		}
		if search {
			g.Search |= types
		}
	}
	if g.Read|g.Search == 0 {
		return Granted{}, ErrNoScope
	}
	g.Scope = g.format()
	return g, nil
}

// permissions reads a scope's permissions: SMART v2 letters (a non-empty
// subsequence of "cruds"), or v1's read, write and *.
func permissions(p string) (read, search bool) {
	switch p {
	case "read", "*":
		return true, true
	case "write":
		return false, false
	}
	const order = "cruds"
	at := 0
	for i := 0; i < len(p); i++ {
		j := strings.IndexByte(order[at:], p[i])
		if j < 0 {
			return false, false // unknown, repeated or out of order
		}
		at += j + 1
		read = read || p[i] == 'r'
		search = search || p[i] == 's'
	}
	return read, search
}

// format writes the granted scopes in SMART v2 form, one per type (or
// patient/*.rs for every type), types in access's sorted order.
func (g Granted) format() string {
	var out []string
	if g.Launch {
		out = append(out, "launch/patient")
	}
	if g.Read == access.AllTypes && g.Search == access.AllTypes {
		out = append(out, "patient/*.rs")
	} else {
		for _, t := range (g.Read | g.Search).Types() {
			p := ""
			if g.Read.Allows(t) {
				p += "r"
			}
			if g.Search.Allows(t) {
				p += "s"
			}
			out = append(out, "patient/"+t+"."+p)
		}
	}
	if g.Offline {
		out = append(out, "offline_access")
	}
	return strings.Join(out, " ")
}

// WithoutOffline returns g without offline access (the patient declined it).
func (g Granted) WithoutOffline() Granted {
	g.Offline = false
	g.Scope = g.format()
	return g
}

// Within returns g narrowed to the types of s (an anonymous viewer's grant:
// an app it approves reads no more than the grant allows), or ErrNoScope if
// nothing is left.
func (g Granted) Within(s access.Scope) (Granted, error) {
	g.Read &= s
	g.Search &= s
	if g.Read|g.Search == 0 {
		return Granted{}, ErrNoScope
	}
	g.Scope = g.format()
	return g, nil
}

// SystemGranted is what a gateway grants a backend service (SMART Backend
// Services, a client_credentials token): the types it may create and
// update. A backend token writes only; it never reads.
type SystemGranted struct {
	Scope  string       // the granted scopes, space-separated, as the token response says
	Create access.Scope // types it may create (c)
	Update access.Scope // types it may update (u)
}

// ErrReadScope is a system scope that asks to read, search or delete:
// backend tokens here write (create and update) only.
var ErrReadScope = errors.New("smartauth: backend services create and update only (system/T.cu)")

// GrantSystem returns the system scopes (space-separated) a backend
// service asked for, within the types allowed (its registration): each of
// system/T.c, system/T.u, system/T.cu or system/*.cu (SMART v2), and
// system/T.write (v1, as .cu). A scope that also asks to read, search or
// delete is ErrReadScope; a type outside allowed, a scope of another kind
// (patient/, user/, a query) or none at all is ErrNoScope; a parameter too
// long or not printable ASCII is ErrMalformedScope. Unlike Grant, nothing
// asked for is silently dropped: an integration learns at once what it may
// not do.
func GrantSystem(requested string, allowed access.Scope) (SystemGranted, error) {
	var g SystemGranted
	tokens, err := scopeTokens(requested)
	if err != nil {
		return g, err
	}
	for _, t := range tokens {
		rest, ok := strings.CutPrefix(t, "system/")
		dot := strings.LastIndexByte(rest, '.')
		if !ok || strings.ContainsRune(rest, '?') || dot < 0 {
			return SystemGranted{}, fmt.Errorf("%w: %q is not a system/T.cu scope", ErrNoScope, t)
		}
		create, update, other := writePermissions(rest[dot+1:])
		if other {
			return SystemGranted{}, fmt.Errorf("%w: %q", ErrReadScope, t)
		}
		if !create && !update {
			return SystemGranted{}, fmt.Errorf("%w: %q has no permission letters c or u", ErrNoScope, t)
		}
		types := allowed
		if typ := rest[:dot]; typ != "*" {
			s, err := access.NewScope(typ)
			if err != nil || s&allowed == 0 {
				return SystemGranted{}, fmt.Errorf("%w: %s is not a type this client may write", ErrNoScope, typ)
			}
			types = s
		}
		if create {
			g.Create |= types
		}
		if update {
			g.Update |= types
		}
	}
	if g.Create|g.Update == 0 {
		return SystemGranted{}, ErrNoScope
	}
	g.Scope = g.format()
	return g, nil
}

// writePermissions reads a system scope's permissions: SMART v2 letters (a
// non-empty subsequence of "cruds"), or v1's write, read and *. other is
// set for any permission but create and update, and for unknown letters.
func writePermissions(p string) (create, update, other bool) {
	switch p {
	case "write":
		return true, true, false
	case "read", "*", "":
		return false, false, true
	}
	const order = "cruds"
	at := 0
	for i := 0; i < len(p); i++ {
		j := strings.IndexByte(order[at:], p[i])
		if j < 0 {
			return false, false, true // unknown, repeated or out of order
		}
		at += j + 1
		switch p[i] {
		case 'c':
			create = true
		case 'u':
			update = true
		default:
			other = true
		}
	}
	return create, update, other
}

// Allows reports whether g lets its client create (method POST) or update
// (PUT) a resource of type typ.
func (g SystemGranted) Allows(method, typ string) bool {
	if method == "PUT" {
		return g.Update.Allows(typ)
	}
	return g.Create.Allows(typ)
}

// format writes the granted scopes in SMART v2 form, system/*.cu for every
// type, else one per type in access's sorted order.
func (g SystemGranted) format() string {
	if g.Create == access.AllTypes && g.Update == access.AllTypes {
		return "system/*.cu"
	}
	var out []string
	for _, t := range (g.Create | g.Update).Types() {
		p := ""
		if g.Create.Allows(t) {
			p += "c"
		}
		if g.Update.Allows(t) {
			p += "u"
		}
		out = append(out, "system/"+t+"."+p)
	}
	return strings.Join(out, " ")
}

// scopeTokens splits a scope parameter into its tokens, refusing one too
// long, with too many tokens, or with a byte RFC 6749 §3.3 does not allow
// (scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), space-separated).
func scopeTokens(requested string) ([]string, error) {
	if len(requested) > MaxScopeLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformedScope, MaxScopeLen)
	}
	for i := 0; i < len(requested); i++ {
		if b := requested[i]; b != ' ' && (b < 0x21 || b > 0x7e || b == '"' || b == '\\') {
			return nil, fmt.Errorf("%w: byte %#x", ErrMalformedScope, b)
		}
	}
	tokens := strings.Fields(requested)
	if len(tokens) > MaxScopeTokens {
		return nil, fmt.Errorf("%w: more than %d scopes", ErrMalformedScope, MaxScopeTokens)
	}
	return tokens, nil
}
