package client

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/wallet"
)

// The access log as a person reads it: every provider's entries merged,
// newest first, each saying when (local time, and how long ago), who (by
// the name the patient gave them, "you" for the patient's own keys), what
// in words ("12 observations: body weight, heart rate"), why and how it
// ended; filters by who, provider and date; pages of logPageSize. Each
// entry's check against the chain shows as a check mark, or as a neutral
// "not anchored yet" until the provider's next anchor. Emergency reads
// stand out above everything.

// logPageSize is how many entries one page of the log shows.
const logPageSize = 50

// logRow is one access-log entry as the page shows it.
type logRow struct {
	Seq        uint64
	Time       time.Time
	Provider   string
	ProviderID uint32
	Who        wallet.Who
	What       string
	Purpose    string
	Outcome    string // in words
	Allowed    bool
	Denied     bool
	Emergency  bool
	Verified   bool
	Pending    bool
	Problem    string

	// What the entry touched, put in words only for the rows shown.
	action, detail string
	resources      []string
}

// logSection is one provider's log check.
type logSection struct {
	ID       uint32
	Provider string
	Err      string
	Problem  string
	Warnings []wallet.Warning
	Entries  int
	Verified int
}

// logFilter is the filter as asked (the form's values).
type logFilter struct {
	Who, Provider, From, To string
	Page                    int
}

// query is the filter as a query string, for the page links.
func (f logFilter) query(page int) string {
	v := url.Values{}
	for k, s := range map[string]string{"who": f.Who, "provider": f.Provider, "from": f.From, "to": f.To} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/log"
	}
	return "/log?" + v.Encode()
}

func (a *App) accessLog(c *fiber.Ctx) error {
	w := a.wallet()
	ctx := c.UserContext()
	rels, err := w.Relationships(ctx)
	if err != nil {
		return err
	}
	f := logFilter{Who: c.Query("who"), Provider: c.Query("provider"), From: c.Query("from"), To: c.Query("to")}
	f.Page, _ = strconv.Atoi(c.Query("page"))
	f.Page = max(f.Page, 1)
	var from, to time.Time
	var problem string
	if f.From != "" {
		t, err := time.ParseInLocation("2006-01-02", f.From, time.Local)
		if err != nil {
			problem = "The “from” date is not a date: use the date picker, or year-month-day."
		}
		from = t
	}
	if f.To != "" {
		t, err := time.ParseInLocation("2006-01-02", f.To, time.Local)
		if err != nil {
			problem = "The “to” date is not a date: use the date picker, or year-month-day."
		} else {
			to = t.AddDate(0, 0, 1) // through the end of that day
		}
	}
	dir, err := w.Directory(rels)
	if err != nil {
		return err
	}
	// What each resource is, in words, from the records this session read
	// (no gateway asked again; read once if none were).
	recs := w.KnownRecords()
	if recs == nil {
		recs, _, _ = w.Records(ctx)
	}
	names := make(map[string]string, len(recs))
	for _, r := range recs {
		names[fmt.Sprintf("%d/%s/%s", r.Provider.ID, r.Type, r.ID)] = r.Display
	}
	sections := make([]logSection, len(rels))
	rows := make([][]*logRow, len(rels))
	var wg sync.WaitGroup
	for i, r := range rels {
		sections[i] = logSection{ID: r.Provider.ID, Provider: r.Provider.Name}
		if !r.OwnedHere {
			sections[i].Err = "this relationship is held by a key this device does not have"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &sections[i]
			rep, err := w.AccessLog(ctx, r.Provider.ID)
			if err != nil {
				s.Err = plain(err)
			}
			s.Problem, s.Warnings, s.Entries = rep.Problem, rep.Warnings, len(rep.Entries)
			out := make([]*logRow, len(rep.Entries))
			all := make([]logRow, len(rep.Entries))
			who := map[string]wallet.Who{} // the same few actors, thousands of times
			for j, e := range rep.Entries {
				k := string(rune(e.ActorKind)) + e.Actor
				if _, ok := who[k]; !ok {
					who[k] = dir.Actor(r.Provider.ID, r.Provider.Name, e.ActorKind, e.Actor)
				}
				out[j] = &all[j]
				*out[j] = logRow{Seq: e.Seq, Time: time.UnixMicro(e.TimeMicro), Provider: r.Provider.Name, ProviderID: r.Provider.ID,
					Who: who[k], Purpose: purposeWords(e.Purpose), Allowed: e.Decision == "allowed", Denied: e.Decision == "denied",
					Verified: e.Verified, Pending: e.Pending, Problem: e.Problem,
					action: e.Action, Outcome: e.Decision, detail: e.Detail, resources: e.Resources} // Outcome: in words for the rows shown
				// An emergency read of records stands out; the session it
				// opened first is logged too, but reads nothing.
				out[j].Emergency = e.Purpose == uint8(access.Emergency) && (e.Action == "everything" || e.Action == "read" || e.Action == "search")
				if e.Verified {
					s.Verified++
				}
			}
			rows[i] = out
		}()
	}
	wg.Wait()

	var all []*logRow
	for _, r := range rows {
		all = append(all, r...)
	}
	slices.SortStableFunc(all, func(a, b *logRow) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.Seq, a.Seq)
	})
	// Who can be chosen: everyone the log names, named people first.
	whoSeen := map[string]wallet.Who{}
	var emergencies []*logRow
	var shown []*logRow
	for _, r := range all {
		whoSeen[r.Who.Key] = r.Who
		if r.Emergency && r.Allowed {
			emergencies = append(emergencies, r)
		}
		switch {
		case f.Who != "" && r.Who.Key != f.Who:
		case f.Provider != "" && strconv.FormatUint(uint64(r.ProviderID), 10) != f.Provider:
		case !from.IsZero() && r.Time.Before(from):
		case !to.IsZero() && !r.Time.Before(to):
		default:
			shown = append(shown, r)
		}
	}
	whoList := []typeOption{{Value: "", Label: "everyone", Selected: f.Who == ""}}
	var people []wallet.Who
	for _, w := range whoSeen {
		people = append(people, w)
	}
	sort.Slice(people, func(i, j int) bool {
		if people[i].You != people[j].You {
			return people[i].You
		}
		if people[i].Named != people[j].Named {
			return people[i].Named
		}
		return people[i].Name+people[i].Key < people[j].Name+people[j].Key
	})
	for _, p := range people {
		label := p.Name
		if p.ID != "" {
			label += " (" + p.Kind + " " + p.ID + ")"
		}
		whoList = append(whoList, typeOption{Value: p.Key, Label: label, Selected: p.Key == f.Who})
	}
	provList := []typeOption{{Value: "", Label: "every provider", Selected: f.Provider == ""}}
	for _, r := range rels {
		id := strconv.FormatUint(uint64(r.Provider.ID), 10)
		provList = append(provList, typeOption{Value: id, Label: r.Provider.Name, Selected: id == f.Provider})
	}
	pages := max((len(shown)+logPageSize-1)/logPageSize, 1)
	f.Page = min(f.Page, pages)
	lo := (f.Page - 1) * logPageSize
	page := shown[lo:min(lo+logPageSize, len(shown))]
	for _, r := range append(slices.Clip(page), emergencies...) {
		r.words(names)
	}
	data := fiber.Map{"Rows": page, "Total": len(shown), "All": len(all), "Sections": sections, "Emergencies": emergencies,
		"WhoList": whoList, "Providers": provList, "Filter": f, "PageNo": f.Page, "Pages": pages, "Error": problem}
	if f.Page > 1 {
		data["Prev"] = f.query(f.Page - 1)
	}
	if f.Page < pages {
		data["Next"] = f.query(f.Page + 1)
	}
	return a.render(c, "log", data)
}

// words puts what the entry touched and how it ended in words.
func (r *logRow) words(names map[string]string) {
	if r.What != "" {
		return
	}
	r.What = what(r.ProviderID, r.action, r.resources, names)
	r.Outcome = outcome(r.Outcome, r.detail)
}

// outcome says how an access attempt ended.
func outcome(decision, detail string) string {
	switch decision {
	case "allowed":
		return "allowed"
	case "denied":
		if detail != "" {
			return "refused: " + detail
		}
		return "refused"
	case "failed":
		if detail != "" {
			return "allowed, but failed: " + detail
		}
		return "allowed, but failed"
	}
	return decision
}

// what says in words what an entry touched: "read 12 observations: body
// weight, heart rate".
func what(p uint32, action string, refs []string, names map[string]string) string {
	verb := map[string]string{
		"everything": "read", "search": "searched", "read": "read", "log": "read the access log",
		"state": "checked the records' anchor", "history": "checked the records' history", "changes": "looked for new records",
		"session": "opened a reading session", "claim": "connected this relationship", "claim-code": "issued a claim code",
		"enrol": "enrolled you", "write": "added or updated", "import": "imported", "unmap": "undid a connection",
	}[action]
	if verb == "" {
		verb = action
	}
	if len(refs) == 0 {
		return verb
	}
	type group struct {
		n     int
		names []string
		seen  map[string]bool
	}
	groups := map[string]*group{}
	var order []string
	for _, ref := range refs {
		parts := strings.Split(ref, "/")
		t := parts[0]
		g := groups[t]
		if g == nil {
			g = &group{seen: map[string]bool{}}
			groups[t] = g
			order = append(order, t)
		}
		g.n++
		if len(parts) >= 2 {
			if n := names[fmt.Sprintf("%d/%s/%s", p, t, parts[1])]; n != "" && !g.seen[strings.ToLower(n)] {
				g.seen[strings.ToLower(n)] = true
				if t != "Patient" {
					n = inSentence(n)
				}
				g.names = append(g.names, n)
			}
		} else {
			g.n = 0 // a type asked for, not a record
		}
	}
	var parts []string
	for _, t := range order {
		g := groups[t]
		if g.n == 0 {
			_, many := wallet.TypeName(t)
			parts = append(parts, many)
			continue
		}
		s := wallet.Count(g.n, t)
		if len(g.names) > 0 {
			sort.Strings(g.names)
			if len(g.names) > 4 {
				g.names = append(g.names[:4], "…")
			}
			s += ": " + strings.Join(g.names, ", ")
		}
		parts = append(parts, s)
	}
	return verb + " " + strings.Join(parts, "; ")
}

// inSentence lowers a concept's first letter for the middle of a sentence
// ("Heart rate" → "heart rate") unless the word is an abbreviation
// ("HbA1c", "LDL").
func inSentence(s string) string {
	r := []rune(s)
	if len(r) < 2 || !unicode.IsUpper(r[0]) || unicode.IsUpper(r[1]) || unicode.IsDigit(r[1]) {
		return s
	}
	r[0] = unicode.ToLower(r[0])
	return string(r)
}
