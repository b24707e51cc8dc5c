package client

import (
	"embed"
	"errors"
	"fmt"
	"html/template"
	"sort"
	"strings"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/wallet"
)

// The pages' templates, one file per page (templates/layout.html holds the
// frame every page shares).
//
//go:embed templates/*.html
var templates embed.FS

// titles are the pages' titles (what a tab and a screen reader announce).
var titles = map[string]string{
	"onboarding": "Welcome", "words": "Your 12 words", "home": "Home", "connect": "Connect to a provider",
	"records": "Your records", "share": "Sharing", "review": "Check and share", "op": "Sending to the chain",
	"revoke": "Stop sharing", "rotate": "Replace your key", "rotated": "Key replaced", "log": "Who saw your records",
	"viewer": "Doctor's view: shared with me", "shared": "Doctor's view: shared records", "message": "Something went wrong",
	"linkwarning": "This links your relationships", "smartland": "An app asks to read your records",
	"smartreview": "Approve an app", "smartdone": "Back to the app",
}

// now is the clock the pages read (tests set it).
var now = time.Now

var funcs = template.FuncMap{
	"date": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.Local().Format("2 Jan 2006")
	},
	// when is a moment in the computer's local time, to the minute.
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.Local().Format("2 Jan 2006, 15:04 MST")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ago": func(t time.Time) string { return ago(now(), t) },
	// through is the last UTC day a grant ending at t is in force: grants
	// end at 00:00 UTC (wallet.GrantExpiry), so that is the day before.
	"through": through,
	"svg":     func(s string) template.HTML { return template.HTML(s) }, // generated here, never from input
	"plus":    func(a, b int) int { return a + b },
	"purpose": purposeWords,
	"types":   scopeWords,
	// kind is one record's type in words: "Observation", "Allergy".
	"kind": func(t string) string {
		one, _ := wallet.TypeName(t)
		return capital(one)
	},
	"capital": capital,
}

func through(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.Add(-time.Second).UTC().Format("2 Jan 2006")
}

func capital(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// purposeWords is a purpose of use in words.
func purposeWords(p uint8) string {
	switch access.Purpose(p) {
	case access.Treatment:
		return "treatment"
	case access.Family:
		return "family or carer"
	case access.Research:
		return "research (de-identified)"
	case access.Emergency:
		return "emergency care"
	}
	return "—"
}

// scopeWords names a scope's types in words: "observations, conditions";
// every type is "everything".
func scopeWords(s access.Scope) string {
	if s == access.AllTypes {
		return "everything"
	}
	var names []string
	for _, t := range s.Types() {
		_, many := wallet.TypeName(t)
		names = append(names, many)
	}
	return strings.Join(names, ", ")
}

// ago says how long before now t was: "just now", "3 hours ago",
// "yesterday", "12 days ago".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case t.IsZero():
		return ""
	case d < 0:
		return "in the future"
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return plural(int(d/time.Minute), "minute") + " ago"
	case d < 24*time.Hour:
		return plural(int(d/time.Hour), "hour") + " ago"
	case d < 48*time.Hour:
		return "yesterday"
	case d < 60*24*time.Hour:
		return plural(int(d/(24*time.Hour)), "day") + " ago"
	case d < 730*24*time.Hour:
		return plural(int(d/(30*24*time.Hour)), "month") + " ago"
	}
	return plural(int(d/(365*24*time.Hour)), "year") + " ago"
}

func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}

// plain is an error in words for a person: the package prefixes go, and
// what only a developer reads (addresses of servers, Go's own wording)
// stays in the app's log.
func plain(err error) string {
	var ue *wallet.UnreachableError
	var ge *wallet.GatewayError
	switch {
	case errors.As(err, &ue):
		return ue.Error()
	case errors.As(err, &ge):
		return ge.Error()
	case errors.Is(err, errNoChain):
		return errNoChain.Error()
	}
	msg := err.Error()
	for _, prefix := range []string{"wallet: ", "chainview: ", "client: ", "contracts: "} {
		msg = strings.ReplaceAll(msg, prefix, "")
	}
	if strings.Contains(msg, "dial tcp") || strings.Contains(msg, "connection refused") || strings.Contains(msg, "context deadline exceeded") {
		return "something did not answer in time; nothing is lost — try again in a moment"
	}
	return capital(msg)
}

// wordsError says what is wrong with typed recovery words, in words.
func wordsError(err error) string {
	switch {
	case errors.Is(err, delegate.ErrWordCount):
		return "Your recovery words are 12 words (some phrases have 15 to 24); " + strings.TrimSuffix(strings.SplitN(err.Error(), ":", 2)[0], " words") + " words were typed. Check your copy."
	case errors.Is(err, delegate.ErrUnknownWord):
		// "word 3 "xyz": …" → its position and the word as typed
		return "“" + strings.SplitN(err.Error(), ":", 2)[0] + "” is not one of the words this app uses: check its spelling."
	case errors.Is(err, delegate.ErrChecksum):
		return "These words do not fit together: a word is wrong or out of order. Check your copy."
	}
	return "These are not recovery words this app can use: check your copy."
}

// presets are the share form's ready-made choices of what to share.
var presets = []struct {
	Key, Label, Help string
	Types            []string // nil: every type
}{
	{"everything", "Everything", "every kind of record, including ones added later", nil},
	{"labs", "Lab results", "observations (which include vital signs), test reports and specimens", []string{"Observation", "DiagnosticReport", "Specimen"}},
	{"medications", "Medications and allergies", "prescriptions, medications taken or given, allergies", []string{"AllergyIntolerance", "Medication", "MedicationAdministration", "MedicationDispense", "MedicationRequest", "MedicationStatement"}},
	{"immunizations", "Immunizations", "vaccinations and recommendations", []string{"Immunization", "ImmunizationRecommendation"}},
}

// presetScope returns the scope of a preset key.
func presetScope(key string) (access.Scope, bool) {
	for _, p := range presets {
		if p.Key == key {
			if p.Types == nil {
				return access.AllTypes, true
			}
			s, err := access.NewScope(p.Types...)
			return s, err == nil
		}
	}
	return 0, false
}

// expiries are the share form's lengths, in days.
var expiries = []struct {
	Days  int
	Label string
}{{1, "1 day"}, {7, "1 week"}, {30, "30 days"}, {90, "3 months"}, {365, "1 year"}}

// typeChoice is one resource type on the share form.
type typeChoice struct {
	Type, Name string
	Have       int // how many of the patient's records are of this type
	Checked    bool
}

// typeChoices lists every grantable type, those the patient has first (most
// first), then the rest by name.
func typeChoices(have map[string]int, checked map[string]bool) (mine, other []typeChoice) {
	for _, t := range access.ResourceTypes() {
		_, many := wallet.TypeName(t)
		c := typeChoice{Type: t, Name: capital(many), Have: have[t], Checked: checked[t]}
		if c.Have > 0 {
			mine = append(mine, c)
		} else {
			other = append(other, c)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool { return mine[i].Have > mine[j].Have })
	sort.SliceStable(other, func(i, j int) bool { return other[i].Name < other[j].Name })
	return mine, other
}
