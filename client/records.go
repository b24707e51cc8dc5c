package client

import (
	"context"
	"net/url"
	"sort"
	"strconv"
	"sync"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/wallet"
)

// The records page: every provider's records merged into one timeline,
// read in words (what, value as sent, range, status, who, where), checked
// against each provider's anchor; a filter by type and by provider that
// the charts follow too; the timeline in pages of timelinePage, newest
// first.

// timelinePage is how many records one page of the timeline shows.
const timelinePage = 200

// typeOption is a filter choice.
type typeOption struct {
	Value, Label string
	Selected     bool
}

func (a *App) records(c *fiber.Ctx) error {
	w := a.wallet()
	ctx := c.UserContext()
	recs, results, err := w.Records(ctx)
	if err != nil {
		return err
	}
	typ := c.Query("type")
	prov, _ := strconv.ParseUint(c.Query("provider"), 10, 32)
	checks := make([]recordsCheck, 0, len(results))
	var wg sync.WaitGroup
	for _, r := range results {
		if prov != 0 && uint64(r.Provider.ID) != prov {
			continue
		}
		checks = append(checks, recordsCheck{ID: r.Provider.ID, Name: r.Provider.Name})
	}
	for i := range checks {
		var res wallet.ProviderResult
		for _, r := range results {
			if r.Provider.ID == checks[i].ID {
				res = r
			}
		}
		if res.Err != nil {
			checks[i].Unavailable = plain(res.Err)
			continue
		}
		checks[i].Count = res.Count
		wg.Add(2)
		go func() { defer wg.Done(); a.markSeen(ctx, w, res.Provider.ID) }()
		go func() { defer wg.Done(); checks[i].check(ctx, w, res.Provider.ID, recs) }()
	}
	wg.Wait()

	types := map[string]int{}
	var shown []wallet.Record
	for _, r := range recs {
		if prov != 0 && uint64(r.Provider.ID) != prov {
			continue
		}
		types[r.Type]++
		if typ == "" || r.Type == typ {
			shown = append(shown, r)
		}
	}
	typeList := []typeOption{{Value: "", Label: "every kind", Selected: typ == ""}}
	var names []string
	for t := range types {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		typeList = append(typeList, typeOption{Value: t, Label: capital(wallet.Count(types[t], t)), Selected: t == typ})
	}
	provList := []typeOption{{Value: "", Label: "every provider", Selected: prov == 0}}
	for _, r := range results {
		id := strconv.FormatUint(uint64(r.Provider.ID), 10)
		provList = append(provList, typeOption{Value: id, Label: r.Provider.Name, Selected: uint64(r.Provider.ID) == prov})
	}
	pages := max((len(shown)+timelinePage-1)/timelinePage, 1)
	page, _ := strconv.Atoi(c.Query("page"))
	page = min(max(page, 1), pages)
	lo := (page - 1) * timelinePage
	list := shown[lo:min(lo+timelinePage, len(shown))]
	data := fiber.Map{"Records": list, "Total": len(shown), "First": lo + 1, "Last": lo + len(list),
		"PageNo": page, "Pages": pages, "Types": typeList, "Providers": provList,
		"Type": typ, "Provider": c.Query("provider"), "Charts": charts(shown), "Checks": checks}
	if page > 1 {
		data["Prev"] = recordsQuery(typ, c.Query("provider"), page-1)
	}
	if page < pages {
		data["Next"] = recordsQuery(typ, c.Query("provider"), page+1)
	}
	return a.render(c, "records", data)
}

// recordsQuery is the records page's address with these filters, at page.
func recordsQuery(typ, provider string, page int) string {
	v := url.Values{}
	if typ != "" {
		v.Set("type", typ)
	}
	if provider != "" {
		v.Set("provider", provider)
	}
	if page > 1 {
		v.Set("page", strconv.Itoa(page))
	}
	if len(v) == 0 {
		return "/records"
	}
	return "/records?" + v.Encode()
}

// recordsCheck is how one provider's records read and checked out.
type recordsCheck struct {
	ID          uint32
	Name        string
	Count       int
	Unavailable string // the records could not be read
	*wallet.StateCheck
	Err string // the check itself failed (the gateway did not answer)
}

func (rc *recordsCheck) check(ctx context.Context, w *wallet.Wallet, p uint32, recs []wallet.Record) {
	ctx, cancel := context.WithTimeout(ctx, gatewayWait)
	defer cancel()
	sc, err := w.VerifyRecords(ctx, p, recs)
	if err != nil {
		rc.Err = plain(err)
		return
	}
	rc.StateCheck = &sc
}

// markSeen remembers, on the device, the newest change at provider p as
// seen: the home page's badge counts from there.
func (a *App) markSeen(ctx context.Context, w *wallet.Wallet, p uint32) {
	seen, err := w.Seen()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, gatewayWait)
	defer cancel()
	ch, err := w.Changes(ctx, p, seen[p])
	if err != nil || len(ch) == 0 {
		return
	}
	if err := w.MarkSeen(p, ch[len(ch)-1].Seq); err != nil {
		a.cfg.Log.Warn("Cannot keep what was seen", "err", err)
	}
}

func (a *App) export(c *fiber.Ctx) error {
	recs, _, err := a.wallet().Records(c.UserContext())
	if err != nil {
		return err
	}
	b, err := wallet.ExportBundle(recs)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="medrec-export.json"`)
	c.Type("json")
	return c.Send(b)
}
