package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/wallet"
)

// confirmWords are the positions (1-based) the user retypes after creation.
var confirmWords = []int{3, 7, 11}

func (a *App) index(c *fiber.Ctx) error {
	if a.signedIn(c) {
		return c.Redirect("/home", fiber.StatusSeeOther)
	}
	_, err := os.Stat(a.cfg.Keystore)
	return a.render(c, "onboarding", fiber.Map{"HasKeystore": err == nil, "Keystore": a.cfg.Keystore})
}

func (a *App) scrypt() (int, int) {
	if a.cfg.LightKDF {
		return keystore.LightScryptN, keystore.LightScryptP
	}
	return keystore.StandardScryptN, keystore.StandardScryptP
}

func checkPassword(pw, again string) error {
	if len(pw) < 8 {
		return userErr("choose a password of at least 8 characters")
	}
	if pw != again {
		return userErr("the two passwords differ")
	}
	return nil
}

// create shows a fresh mnemonic once and asks for some of its words back.
func (a *App) create(c *fiber.Ctx) error {
	if _, err := os.Stat(a.cfg.Keystore); err == nil {
		return userErr("a keystore already exists at %s: unlock it, or move it away to start again", a.cfg.Keystore)
	}
	m, err := delegate.NewMnemonic()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.pending = m
	a.mu.Unlock()
	return a.render(c, "words", fiber.Map{"Words": strings.Fields(m), "Confirm": confirmWords})
}

func (a *App) confirm(c *fiber.Ctx) error {
	a.mu.Lock()
	m := a.pending
	a.mu.Unlock()
	if m == "" {
		return userErr("start again: the words were not kept")
	}
	words := strings.Fields(m)
	for _, i := range confirmWords {
		if strings.ToLower(trim(c.FormValue(fmt.Sprintf("w%d", i)))) != words[i-1] {
			return a.render(c, "words", fiber.Map{"Words": words, "Confirm": confirmWords, "Error": fmt.Sprintf("word %d is not right — check your copy of the words", i)})
		}
	}
	if err := checkPassword(c.FormValue("password"), c.FormValue("password2")); err != nil {
		return a.render(c, "words", fiber.Map{"Words": words, "Confirm": confirmWords, "Error": err.Error()})
	}
	return a.save(c, m, c.FormValue("password"))
}

func (a *App) save(c *fiber.Ctx, mnemonic, password string) error {
	n, p := a.scrypt()
	if err := delegate.WriteKeystore(a.cfg.Keystore, delegate.Keystore{Mnemonic: mnemonic}, password, n, p); err != nil {
		return fmt.Errorf("could not write the keystore: %w", err)
	}
	keys, err := delegate.FromMnemonic(mnemonic, "")
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.pending = ""
	a.mu.Unlock()
	if err := a.open(c, keys); err != nil {
		return err
	}
	return c.Redirect("/home", fiber.StatusSeeOther)
}

func (a *App) restore(c *fiber.Ctx) error {
	m, err := delegate.NormalizeMnemonic(c.FormValue("words"))
	if err != nil {
		return a.render(c, "onboarding", fiber.Map{"Error": "Those words are not a valid recovery phrase: " + err.Error()})
	}
	if err := checkPassword(c.FormValue("password"), c.FormValue("password2")); err != nil {
		return a.render(c, "onboarding", fiber.Map{"Error": err.Error()})
	}
	if _, err := os.Stat(a.cfg.Keystore); err == nil {
		return a.render(c, "onboarding", fiber.Map{"HasKeystore": true, "Error": "A keystore already exists here; unlock it instead (or move it away)."})
	}
	return a.save(c, m, c.FormValue("password"))
}

func (a *App) unlock(c *fiber.Ctx) error {
	ks, err := delegate.ReadKeystore(a.cfg.Keystore, c.FormValue("password"))
	if errors.Is(err, delegate.ErrWrongPassword) {
		return a.render(c, "onboarding", fiber.Map{"HasKeystore": true, "Error": "Wrong password."})
	}
	if errors.Is(err, fs.ErrNotExist) {
		return a.render(c, "onboarding", fiber.Map{"Error": "There is no keystore yet: create or restore one."})
	}
	if err != nil {
		return err
	}
	keys, err := ks.Keys()
	if err != nil {
		return err
	}
	if err := a.open(c, keys); err != nil {
		return err
	}
	return c.Redirect("/home", fiber.StatusSeeOther)
}

type providerRow struct {
	chainview.Provider
	Rel       *wallet.Relationship
	New       int // records added since last seen
	Emergency int // emergency-purpose reads logged
	Err       string
}

func (a *App) home(c *fiber.Ctx) error {
	w := a.wallet()
	ctx := c.UserContext()
	cm, err := w.Commitment()
	if err != nil {
		return err
	}
	rels, err := w.Relationships(ctx)
	if err != nil {
		return err
	}
	var rows []providerRow
	for _, p := range w.View().Providers() {
		if !p.Active {
			continue
		}
		row := providerRow{Provider: p}
		for i := range rels {
			if rels[i].Provider.ID == p.ID {
				row.Rel = &rels[i]
			}
		}
		rows = append(rows, row)
	}
	// New-record badges, from every gateway at once: a slow one delays the
	// page by its own time only, never by the sum.
	var wg sync.WaitGroup
	for i := range rows {
		row := &rows[i]
		if row.Rel == nil || !row.Rel.OwnedHere {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.mu.Lock()
			since := a.seen[row.ID]
			a.mu.Unlock()
			ctx, cancel := context.WithTimeout(ctx, gatewayWait)
			defer cancel()
			if ch, err := w.Changes(ctx, row.ID, since); err == nil {
				row.New = len(ch)
			} else {
				row.Err = err.Error()
			}
		}()
	}
	wg.Wait()
	qr, err := qrSVG(cm)
	if err != nil {
		return err
	}
	vc, _ := w.ViewerCommitment()
	acct, _ := w.Keys().Wallet()
	return a.render(c, "home", fiber.Map{"Commitment": cm, "QR": qr, "Providers": rows, "Viewer": vc, "Address": acct.Address.Hex(), "Flash": c.Query("done")})
}

func providerParam(s string) (uint32, error) {
	p, err := strconv.ParseUint(trim(s), 10, 32)
	if err != nil || p == 0 {
		return 0, userErr("choose a provider")
	}
	return uint32(p), nil
}

func (a *App) connect(c *fiber.Ctx) error {
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	code := trim(c.FormValue("code"))
	if code == "" {
		return userErr("enter the claim code the provider's desk gave you")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 90*time.Second)
	defer cancel()
	if err := a.wallet().Connect(ctx, p, code); err != nil {
		return userErr("could not connect: %v", err)
	}
	return c.Redirect("/home?done=connected", fiber.StatusSeeOther)
}

func (a *App) rotate(c *fiber.Ctx) error {
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	if err := a.wallet().Rotate(c.UserContext(), p); err != nil {
		return userErr("could not rotate: %v", err)
	}
	return c.Redirect("/home?done=rotated", fiber.StatusSeeOther)
}

func (a *App) records(c *fiber.Ctx) error {
	w := a.wallet()
	recs, results, err := w.Records(c.UserContext())
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, r := range results {
		if r.Err == nil {
			wg.Add(1)
			go func() { defer wg.Done(); a.markSeen(c.UserContext(), r.Provider.ID) }()
		}
	}
	wg.Wait()
	typ := c.Query("type")
	types := map[string]int{}
	var shown []wallet.Record
	for _, r := range recs {
		types[r.Type]++
		if typ == "" || r.Type == typ {
			shown = append(shown, r)
		}
	}
	var typeList []string
	for t := range types {
		typeList = append(typeList, t)
	}
	sort.Strings(typeList)
	total := len(shown)
	if c.Query("all") == "" && len(shown) > timelinePage {
		shown = shown[:timelinePage]
	}
	return a.render(c, "records", fiber.Map{"Records": shown, "Total": total, "Results": results, "Types": typeList, "Type": typ, "Charts": charts(recs)})
}

// timelinePage is how many records the timeline shows before "show all".
const timelinePage = 200

// gatewayWait bounds how long a page waits for one gateway's badge.
const gatewayWait = 5 * time.Second

// markSeen remembers the newest change at provider p as seen.
func (a *App) markSeen(ctx context.Context, p uint32) {
	a.mu.Lock()
	since := a.seen[p]
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, gatewayWait)
	defer cancel()
	ch, err := a.wallet().Changes(ctx, p, since)
	if err != nil || len(ch) == 0 {
		return
	}
	a.mu.Lock()
	if last := ch[len(ch)-1].Seq; last > a.seen[p] {
		a.seen[p] = last
	}
	a.mu.Unlock()
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

type grantRow struct {
	Provider string
	ID       uint32
	Kind     string
	KindNum  uint8
	Grantee  string
	Scope    string
	Purpose  string
	Expiry   time.Time
	Status   string
}

func (a *App) share(c *fiber.Ctx) error {
	w := a.wallet()
	rels, err := w.Relationships(c.UserContext())
	if err != nil {
		return err
	}
	var grants []grantRow
	now := uint64(time.Now().Unix())
	for _, r := range rels {
		for _, g := range r.Grants {
			row := grantRow{Provider: r.Provider.Name, ID: r.Provider.ID, KindNum: uint8(g.Kind), Grantee: hexutil.Encode(g.Grantee[:]),
				Scope: strings.Join(access.Scope(g.Scope).Types(), ", "), Purpose: access.Purpose(g.Purpose).String(), Expiry: time.Unix(int64(g.Expiry), 0)}
			if g.Kind == chainview.GranteeAddress {
				row.Kind = "address"
				row.Grantee = common.BytesToAddress(g.Grantee[12:]).Hex()
			} else {
				row.Kind = "anonymous viewer"
			}
			switch {
			case g.Revoked:
				row.Status = "revoked"
			case !g.Active(now):
				row.Status = "expired"
			default:
				row.Status = "active"
			}
			grants = append(grants, row)
		}
	}
	return a.render(c, "share", fiber.Map{"Rels": rels, "Grants": grants, "Types": access.ResourceTypes(), "Flash": c.Query("done")})
}

func (a *App) doShare(c *fiber.Ctx) error {
	w := a.wallet()
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	form, err := c.MultipartForm()
	var types []string
	if err == nil {
		types = form.Value["type"]
	} else {
		c.Request().PostArgs().VisitAll(func(k, v []byte) {
			if string(k) == "type" {
				types = append(types, string(v))
			}
		})
	}
	if len(types) == 0 {
		return userErr("choose at least one kind of record to share")
	}
	scope, err := access.NewScope(types...)
	if err != nil {
		return userErr("%v", err)
	}
	purpose, err := access.ParsePurpose(c.FormValue("purpose"))
	if err != nil {
		return userErr("choose a purpose: treatment, family, research or emergency")
	}
	days, err := strconv.Atoi(c.FormValue("days", "30"))
	if err != nil || days < 1 || days > 3650 {
		return userErr("the number of days must be between 1 and 3650")
	}
	expiry := time.Now().Add(time.Duration(days) * 24 * time.Hour)
	to := trim(c.FormValue("to"))
	ctx, cancel := context.WithTimeout(c.UserContext(), 90*time.Second)
	defer cancel()
	switch {
	case common.IsHexAddress(to) && len(to) == 42:
		addr := common.HexToAddress(to)
		links, err := w.AddressLinks(ctx, addr)
		if err != nil {
			return err
		}
		if len(links) > 0 && c.FormValue("accept-link") != "yes" {
			return a.render(c, "linkwarning", fiber.Map{"Links": links, "Form": c.Request().PostArgs().String(), "To": to,
				"Provider": p, "TypesList": types, "Purpose": c.FormValue("purpose"), "Days": days})
		}
		if err := w.ShareWithAddress(ctx, p, addr, scope, purpose, expiry); err != nil {
			return userErr("the grant failed: %v", err)
		}
		return c.Redirect("/share?done=shared", fiber.StatusSeeOther)
	default:
		cv, err := wallet.ParseViewerCommitment(to)
		if err != nil {
			return userErr("share with an address (0x and 40 hex digits) or a viewer commitment (0x and 64 hex digits)")
		}
		b, err := w.ShareAnonymous(ctx, p, cv, scope, purpose, expiry)
		if err != nil {
			return userErr("the grant failed: %v", err)
		}
		return a.render(c, "bundle", fiber.Map{"Bundle": b.Encode(), "Provider": p})
	}
}

func (a *App) revoke(c *fiber.Ctx) error {
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	kind, err := strconv.ParseUint(c.FormValue("kind"), 10, 8)
	if err != nil {
		return userErr("bad grant kind")
	}
	raw, err := hexutil.Decode(c.FormValue("grantee"))
	if err != nil || len(raw) > 32 {
		return userErr("bad grantee")
	}
	var g [32]byte
	copy(g[32-len(raw):], raw)
	if err := a.wallet().Revoke(c.UserContext(), p, uint8(kind), g); err != nil {
		return userErr("the revocation failed: %v", err)
	}
	return c.Redirect("/share?done=revoked", fiber.StatusSeeOther)
}

func (a *App) accessLog(c *fiber.Ctx) error {
	w := a.wallet()
	rels, err := w.Relationships(c.UserContext())
	if err != nil {
		return err
	}
	type section struct {
		Provider  string
		Entries   []wallet.LogEntry
		Err       string
		State     *wallet.StateCheck
		Emergency int
	}
	recs, _, _ := w.Records(c.UserContext())
	var out []section
	for _, r := range rels {
		s := section{Provider: r.Provider.Name}
		entries, err := w.AccessLog(c.UserContext(), r.Provider.ID)
		if err != nil {
			s.Err = err.Error()
		}
		for i := len(entries) - 1; i >= 0; i-- { // newest first
			s.Entries = append(s.Entries, entries[i])
			if entries[i].Purpose == uint8(access.Emergency) && entries[i].Decision == "allowed" {
				s.Emergency++
			}
		}
		if sc, err := w.VerifyRecords(c.UserContext(), r.Provider.ID, recs); err == nil {
			s.State = &sc
		}
		out = append(out, s)
	}
	return a.render(c, "log", fiber.Map{"Sections": out})
}

func (a *App) viewer(c *fiber.Ctx) error {
	w := a.wallet()
	vc, err := w.ViewerCommitment()
	if err != nil {
		return err
	}
	acct, _ := w.Keys().Wallet()
	grants, err := w.SharedWithMe(c.UserContext())
	if err != nil {
		return err
	}
	type sharedRow struct {
		Provider uint32
		Name     string
		Tag      string
		Scope    string
		Status   string
	}
	var rows []sharedRow
	now := uint64(time.Now().Unix())
	for _, g := range grants {
		rel, _ := w.View().Relationship(g.Tag)
		prov, _ := w.View().Provider(rel.Provider)
		st := "active"
		if g.Revoked {
			st = "revoked"
		} else if !g.Active(now) {
			st = "expired"
		}
		rows = append(rows, sharedRow{Provider: rel.Provider, Name: prov.Name, Tag: hexutil.EncodeBig(g.Tag), Scope: strings.Join(access.Scope(g.Scope).Types(), ", "), Status: st})
	}
	return a.render(c, "viewer", fiber.Map{"Viewer": vc, "Address": acct.Address.Hex(), "Shared": rows})
}

func (a *App) viewerRead(c *fiber.Ctx) error {
	b, err := wallet.ParseShareBundle(c.FormValue("bundle"))
	if err != nil {
		return userErr("%v", err)
	}
	recs, err := a.wallet().ReadShared(c.UserContext(), b)
	if err != nil {
		return userErr("the provider refused: %v", err)
	}
	return a.render(c, "shared", fiber.Map{"Records": recs})
}

func (a *App) viewerReadGrant(c *fiber.Ctx) error {
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	tag, ok := new(big.Int).SetString(strings.TrimPrefix(c.FormValue("tag"), "0x"), 16)
	if !ok {
		return userErr("bad relationship tag")
	}
	recs, err := a.wallet().ReadAsGrantee(c.UserContext(), p, tag)
	if err != nil {
		return userErr("the provider refused: %v", err)
	}
	return a.render(c, "shared", fiber.Map{"Records": recs})
}
