package client

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/wallet"
)

// Sharing, one way through: GET /share (the form) → POST /share/review (what
// the chain will see; nothing changes) → POST /share (starts the grants, one
// per provider, and redirects) → GET /op/:id (progress, then the outcome).
// Every form carries a key made when it was shown: the same form sent twice
// (a double click, a reload of the POST) finds the operation the first one
// started and starts nothing (ops.go). Revoking goes the same way: GET
// /revoke (what will happen) → POST /revoke → GET /op/:id.

// grantRow is one grant as the pages show it.
type grantRow struct {
	Provider string
	ID       uint32
	Who      wallet.Who
	KindNum  uint8
	Grantee  string // the full 32-byte grantee id (0x hex), for the revoke link
	Ref      string // kind and full grantee id, as a keep box's value
	Scope    string // in words
	Purpose  string
	Expiry   time.Time
	Status   string
	Active   bool
}

// newGrantRow describes grant g of a relationship at provider p at time
// now; dir names the grantee (nil: no names).
func newGrantRow(dir *wallet.Directory, p chainview.Provider, g chainview.Grant, now time.Time) grantRow {
	row := grantRow{Provider: p.Name, ID: p.ID, KindNum: uint8(g.Kind), Grantee: hexutil.Encode(g.Grantee[:]), Ref: grantRef(g),
		Scope: scopeWords(g.Scope), Purpose: purposeWords(uint8(g.Purpose)), Expiry: time.Unix(int64(g.Expiry), 0).UTC()}
	if dir == nil {
		dir = &wallet.Directory{}
	}
	row.Who = dir.Grantee(g.Kind, g.Grantee)
	row.Status = grantStatus(g, now)
	row.Active = row.Status == "active"
	return row
}

// grantStatus says whether g is in force at now, and if not, why.
func grantStatus(g chainview.Grant, now time.Time) string {
	switch {
	case g.Revoked:
		return "revoked"
	case g.Ended:
		return "ended (key replaced)"
	case !g.Active(uint64(now.Unix())):
		return "expired"
	}
	return "active"
}

// grantRows lists the grants of rels, named; activeOnly keeps those in force.
func (a *App) grantRows(w *wallet.Wallet, rels []wallet.Relationship, activeOnly bool) ([]grantRow, error) {
	dir, err := w.Directory(rels)
	if err != nil {
		return nil, err
	}
	var rows []grantRow
	t := now()
	for _, r := range rels {
		for _, g := range r.Grants {
			row := newGrantRow(dir, r.Provider, g, t)
			if !activeOnly || row.Active {
				rows = append(rows, row)
			}
		}
	}
	return rows, nil
}

// shareForm is the share form as typed.
type shareForm struct {
	Key        string // made when the form was shown (ops.go)
	Name       string
	To         string
	Providers  map[uint32]bool
	Preset     string // a presets key, or "custom"
	Types      map[string]bool
	Purpose    string
	Expiry     string // days of an expiries entry, or "custom"
	Days       string // the custom number of days
	AcceptLink bool
}

func newKey() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on a supported platform
	}
	return hex.EncodeToString(b)
}

func readShareForm(c *fiber.Ctx) shareForm {
	f := shareForm{Key: trim(c.FormValue("key")), Name: trim(c.FormValue("name")), To: trim(c.FormValue("to")),
		Providers: map[uint32]bool{}, Preset: c.FormValue("preset"), Types: map[string]bool{},
		Purpose: c.FormValue("purpose"), Expiry: c.FormValue("expiry"), Days: trim(c.FormValue("days")),
		AcceptLink: c.FormValue("accept-link") == "yes"}
	for _, v := range formValues(c, "provider") {
		if p, err := strconv.ParseUint(v, 10, 32); err == nil {
			f.Providers[uint32(p)] = true
		}
	}
	for _, t := range formValues(c, "type") {
		f.Types[t] = true
	}
	return f
}

// sharePlan is a checked share form: what will be granted, where.
type sharePlan struct {
	Name      string
	Kind      access.GranteeKind
	Address   common.Address
	Viewer    fr.Element
	Rels      []wallet.Relationship
	Scope     access.Scope
	Purpose   access.Purpose
	Days      int
	Expiry    time.Time // as the chain will hold it (wallet.GrantExpiry)
	Links     []string  // where the address already holds a grant, or will at once
	Anonymous bool
}

// PurposeWords is the plan's purpose in words.
func (p sharePlan) PurposeWords() string { return purposeWords(uint8(p.Purpose)) }

// ProviderNames lists the plan's providers in words.
func (p sharePlan) ProviderNames() string {
	var names []string
	for _, r := range p.Rels {
		names = append(names, r.Provider.Name)
	}
	return strings.Join(names, ", ")
}

// check checks the form against the patient's relationships and returns
// the plan, or what is wrong with each field (field → words).
func (a *App) checkShare(c *fiber.Ctx, w *wallet.Wallet, f shareForm) (sharePlan, map[string]string, error) {
	problems := map[string]string{}
	var plan sharePlan
	if n, err := wallet.CleanName(f.Name); err != nil {
		problems["name"] = "Give the person a name you will recognise, such as “Dr Lee, cardiology” (up to 80 characters). It stays on this computer."
	} else {
		plan.Name = n
	}
	switch {
	case f.To == "":
		problems["to"] = "Paste the code the person gave you: their viewer code (0x and 64 characters, recommended) or their address (0x and 40 characters)."
	case common.IsHexAddress(f.To) && len(f.To) == 42:
		plan.Kind, plan.Address = access.AddressGrantee, common.HexToAddress(f.To)
		if plan.Address == (common.Address{}) {
			problems["to"] = "That address is all zeros: ask the person for theirs again."
		}
	default:
		cv, err := wallet.ParseViewerCommitment(f.To)
		if err != nil || len(strings.TrimPrefix(f.To, "0x")) != 64 {
			problems["to"] = "That is neither a viewer code (0x and 64 characters) nor an address (0x and 40 characters): copy it again, whole."
		} else {
			plan.Kind, plan.Viewer, plan.Anonymous = access.AnonymousGrantee, cv, true
		}
	}
	rels, err := w.Relationships(c.UserContext())
	if err != nil {
		return plan, nil, err
	}
	for _, r := range rels {
		if f.Providers[r.Provider.ID] && r.OwnedHere {
			plan.Rels = append(plan.Rels, r)
		}
	}
	if len(plan.Rels) == 0 {
		problems["provider"] = "Choose at least one provider whose records to share."
	}
	switch {
	case f.Preset == "custom":
		var types []string
		for _, t := range access.ResourceTypes() {
			if f.Types[t] {
				types = append(types, t)
			}
		}
		if s, err := access.NewScope(types...); err != nil {
			problems["what"] = "Tick at least one kind of record, or choose one of the ready-made choices."
		} else {
			plan.Scope = s
		}
	default:
		s, ok := presetScope(f.Preset)
		if !ok {
			problems["what"] = "Choose what to share."
		}
		plan.Scope = s
	}
	if p, err := access.ParsePurpose(f.Purpose); err != nil {
		problems["purpose"] = "Choose why they may read it."
	} else {
		plan.Purpose = p
	}
	days := f.Expiry
	if days == "custom" {
		days = f.Days
	}
	if n, err := strconv.Atoi(days); err != nil || n < 1 || n > 3650 {
		problems["expiry"] = "Choose how long: a number of days from 1 to 3650."
	} else {
		plan.Days = n
		plan.Expiry = wallet.GrantExpiry(now().Add(time.Duration(n) * 24 * time.Hour))
	}
	if plan.Kind == access.AddressGrantee && len(problems) == 0 {
		links, err := w.AddressLinks(c.UserContext(), plan.Address)
		if err != nil {
			return plan, nil, err
		}
		seen := map[string]bool{}
		for _, l := range links {
			seen[l] = true
		}
		if len(plan.Rels) > 1 || len(links) > 0 {
			for _, r := range plan.Rels {
				seen[r.Provider.Name] = true
			}
		}
		if len(seen) > 1 {
			for _, r := range rels {
				if seen[r.Provider.Name] {
					plan.Links = append(plan.Links, r.Provider.Name)
				}
			}
		}
	}
	return plan, problems, nil
}

// share shows the form: empty, or (renderShare) as typed with what is wrong.
func (a *App) share(c *fiber.Ctx) error {
	f := shareForm{Key: newKey(), Providers: map[uint32]bool{}, Preset: "everything", Types: map[string]bool{}, Purpose: "treatment", Expiry: "30", Days: "30"}
	if p, err := strconv.ParseUint(c.Query("provider"), 10, 32); err == nil {
		f.Providers[uint32(p)] = true
	}
	return a.renderShare(c, f, nil, fiber.StatusOK)
}

func (a *App) renderShare(c *fiber.Ctx, f shareForm, problems map[string]string, status int) error {
	w := a.wallet()
	rels, err := w.Relationships(c.UserContext())
	if err != nil {
		return err
	}
	grants, err := a.grantRows(w, rels, false)
	if err != nil {
		return err
	}
	// The types the patient has first: from the records already read this
	// session (the records cache), so the form costs no gateway round trip
	// when they were read before.
	have := map[string]int{}
	if recs, _, err := w.Records(c.UserContext()); err == nil {
		for _, r := range recs {
			have[r.Type]++
		}
	}
	mine, other := typeChoices(have, f.Types)
	if len(f.Providers) == 0 && len(rels) == 1 {
		f.Providers[rels[0].Provider.ID] = true
	}
	var msg string
	if len(problems) > 0 {
		msg = "Some answers need another look; nothing was shared."
	}
	c.Status(status)
	return a.render(c, "share", fiber.Map{"Form": f, "Problems": problems, "Error": msg, "Rels": rels, "Grants": grants,
		"Mine": mine, "Other": other, "Presets": presets, "Expiries": expiries, "Flash": flash(c.Query("done"))})
}

// reviewShare shows what the chain will see, changing nothing.
func (a *App) reviewShare(c *fiber.Ctx) error {
	w := a.wallet()
	f := readShareForm(c)
	if c.FormValue("change") != "" {
		return a.renderShare(c, f, nil, fiber.StatusOK)
	}
	plan, problems, err := a.checkShare(c, w, f)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return a.renderShare(c, f, problems, fiber.StatusBadRequest)
	}
	return a.render(c, "review", fiber.Map{"Form": f, "Plan": plan, "Types": f.typeList()})
}

// typeList is the ticked types, for hidden fields.
func (f shareForm) typeList() []string {
	var out []string
	for _, t := range access.ResourceTypes() {
		if f.Types[t] {
			out = append(out, t)
		}
	}
	return out
}

// ProviderList is the chosen providers, for hidden fields.
func (f shareForm) ProviderList() []uint32 {
	var out []uint32
	for p := range f.Providers {
		out = append(out, p)
	}
	return out
}

// doShare starts the grants of a reviewed form and redirects to their
// progress; a form already started redirects to the same operation.
func (a *App) doShare(c *fiber.Ctx) error {
	w := a.wallet()
	f := readShareForm(c)
	if f.Key == "" {
		return userErr("this form is out of date: open Sharing again")
	}
	if id, ok := a.opFor(f.Key); ok {
		return c.Redirect("/op/"+id, fiber.StatusSeeOther)
	}
	plan, problems, err := a.checkShare(c, w, f)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return a.renderShare(c, f, problems, fiber.StatusBadRequest)
	}
	if len(plan.Links) > 0 && !f.AcceptLink {
		c.Status(fiber.StatusBadRequest)
		return a.render(c, "review", fiber.Map{"Form": f, "Plan": plan, "Types": f.typeList(),
			"Error": "Tick the box to say you accept that this address links these relationships — or share with their viewer code instead."})
	}
	o, started := a.startOp(f.Key, "share", "Sharing with "+plan.Name, plan.Rels)
	if started {
		go a.runShare(o, w, plan)
	}
	return c.Redirect("/op/"+o.ID, fiber.StatusSeeOther)
}

// runShare makes the plan's grants, one per relationship, and keeps the
// grantee's name on the device for each.
func (a *App) runShare(o *op, w *wallet.Wallet, plan sharePlan) {
	var bundles []string
	for i, r := range plan.Rels {
		ctx := a.opContext(o, i)
		var err error
		var ref wallet.GrantRef
		if plan.Anonymous {
			var b wallet.ShareBundle
			b, err = w.ShareAnonymous(ctx, r.Provider.ID, plan.Viewer, plan.Scope, plan.Purpose, plan.Expiry)
			if err == nil {
				var g [32]byte
				if g, err = b.GrantID(plan.Viewer); err == nil {
					ref = wallet.AnonymousRef(g)
					bundles = append(bundles, b.Encode())
				}
			}
		} else {
			err = w.ShareWithAddress(ctx, r.Provider.ID, plan.Address, plan.Scope, plan.Purpose, plan.Expiry)
			ref = wallet.AddressRef(plan.Address)
		}
		if err == nil {
			if nerr := w.SetNames(map[wallet.GrantRef]string{ref: plan.Name}); nerr != nil {
				a.cfg.Log.Warn("Cannot keep a name", "err", nerr)
			}
		}
		o.finish(i, err)
	}
	o.complete(func(o *op) {
		o.Bundles = strings.Join(bundles, "\n")
		o.Summary = fmt.Sprintf("%s can now read your %s at %s, for %s, through %s (UTC).",
			plan.Name, scopeWords(plan.Scope), o.okProviders(), purposeWords(uint8(plan.Purpose)), through(plan.Expiry))
	})
}

// revokeTarget reads which grant a revoke form or link names.
func (a *App) revokeTarget(c *fiber.Ctx, get func(string) string) (wallet.Relationship, grantRow, error) {
	w := a.wallet()
	p, err := providerParam(get("provider"))
	if err != nil {
		return wallet.Relationship{}, grantRow{}, err
	}
	kind, err := strconv.ParseUint(get("kind"), 10, 8)
	if err != nil || !access.GranteeKind(kind).Valid() {
		return wallet.Relationship{}, grantRow{}, userErr("that link to stop sharing is incomplete: open Sharing again")
	}
	raw, err := hexutil.Decode(get("grantee"))
	if err != nil || len(raw) != 32 {
		return wallet.Relationship{}, grantRow{}, userErr("that link to stop sharing is incomplete: open Sharing again")
	}
	r, err := w.Relationship(c.UserContext(), p)
	if err != nil {
		return r, grantRow{}, userErr("%s", plain(err))
	}
	g, ok := w.View().Grant(r.Tag, access.GranteeKind(kind), [32]byte(raw))
	if !ok {
		return r, grantRow{}, userErr("there is no such grant at %s: open Sharing again", r.Provider.Name)
	}
	dir, err := w.Directory([]wallet.Relationship{r})
	if err != nil {
		return r, grantRow{}, err
	}
	return r, newGrantRow(dir, r.Provider, g, now()), nil
}

// revokeConfirm says what stopping a grant will do, and asks.
func (a *App) revokeConfirm(c *fiber.Ctx) error {
	_, row, err := a.revokeTarget(c, func(k string) string { return c.Query(k) })
	if err != nil {
		return err
	}
	return a.render(c, "revoke", fiber.Map{"Grant": row, "Key": newKey()})
}

func (a *App) doRevoke(c *fiber.Ctx) error {
	key := trim(c.FormValue("key"))
	if key == "" {
		return userErr("this form is out of date: open Sharing again")
	}
	if id, ok := a.opFor(key); ok {
		return c.Redirect("/op/"+id, fiber.StatusSeeOther)
	}
	r, row, err := a.revokeTarget(c, func(k string) string { return c.FormValue(k) })
	if err != nil {
		return err
	}
	if !row.Active {
		return userErr("sharing with %s at %s has already stopped (%s): nothing to do", row.Who.Name, row.Provider, row.Status)
	}
	w := a.wallet()
	o, started := a.startOp(key, "revoke", "Stopping sharing with "+row.Who.Name, []wallet.Relationship{r})
	if started {
		raw, _ := hexutil.Decode(row.Grantee)
		go func() {
			err := w.Revoke(a.opContext(o, 0), r.Provider.ID, access.GranteeKind(row.KindNum), [32]byte(raw))
			o.finish(0, err)
			o.complete(func(o *op) {
				o.Summary = fmt.Sprintf("%s can no longer read your records at %s.", row.Who.Name, row.Provider)
			})
		}()
	}
	return c.Redirect("/op/"+o.ID, fiber.StatusSeeOther)
}
