package client

import (
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/wallet"
)

// The doctor's view (viewer mode): everything shared with this person in
// one list — grants to their address, found on the chain, and the share
// texts patients gave them, saved on this device the first time they are
// pasted — each with provider, records, purpose, expiry and whether it is
// still in force; only those in force can be read. The records read the
// same way as the patient's own: newest first, in words, with charts.

// receivedRow is one share received, as the page lists it.
type receivedRow struct {
	ID        string
	Provider  string
	Anonymous bool
	Scope     string
	Purpose   string
	Expiry    time.Time
	Status    string
	Active    bool
	Saved     time.Time
}

func receivedRows(list []wallet.Received) []receivedRow {
	t := now()
	var rows []receivedRow
	for _, r := range list {
		row := receivedRow{ID: r.ID, Provider: r.Provider.Name, Anonymous: r.Bundle != nil, Saved: r.Saved}
		if !r.OnChain {
			row.Status = "not found on the chain (never made, or on another network)"
		} else {
			row.Scope, row.Purpose = scopeWords(r.Grant.Scope), purposeWords(uint8(r.Grant.Purpose))
			row.Expiry = time.Unix(int64(r.Grant.Expiry), 0).UTC()
			row.Status = grantStatus(r.Grant, t)
			row.Active = row.Status == "active"
		}
		rows = append(rows, row)
	}
	return rows
}

func (a *App) viewer(c *fiber.Ctx) error {
	w := a.wallet()
	vc, err := w.ViewerCommitment()
	if err != nil {
		return err
	}
	acct, err := w.Keys().Wallet()
	if err != nil {
		return err
	}
	list, err := w.Received(c.UserContext())
	if err != nil {
		return err
	}
	return a.render(c, "viewer", fiber.Map{"Viewer": vc, "Address": acct.Address.Hex(), "Shared": receivedRows(list), "ViewerMode": true, "Saved": c.Query("saved")})
}

// viewerSave keeps pasted share texts on the device and opens the first.
func (a *App) viewerSave(c *fiber.Ctx) error {
	w := a.wallet()
	bs, err := wallet.ParseShareBundles(c.FormValue("bundle"))
	if err != nil {
		vc, _ := w.ViewerCommitment()
		acct, _ := w.Keys().Wallet()
		list, lerr := w.Received(c.UserContext())
		if lerr != nil {
			return lerr
		}
		c.Status(fiber.StatusBadRequest)
		return a.render(c, "viewer", fiber.Map{"Viewer": vc, "Address": acct.Address.Hex(), "Shared": receivedRows(list), "ViewerMode": true,
			"Error": capital(err.Error()), "Pasted": c.FormValue("bundle")})
	}
	ids, err := w.SaveBundles(bs)
	if err != nil {
		return err
	}
	if len(ids) == 1 {
		return c.Redirect("/viewer/read/"+ids[0], fiber.StatusSeeOther)
	}
	return c.Redirect("/viewer?saved=1", fiber.StatusSeeOther)
}

// viewerRead reads the records of one share received, if it is in force.
func (a *App) viewerRead(c *fiber.Ctx) error {
	w := a.wallet()
	ctx := c.UserContext()
	list, err := w.Received(ctx)
	if err != nil {
		return err
	}
	id := c.Params("id")
	for i, r := range list {
		if r.ID != id {
			continue
		}
		row := receivedRows(list[i : i+1])[0]
		if !row.Active {
			return userErr("this share from %s is %s: it can no longer be read", row.Provider, row.Status)
		}
		var recs []wallet.Record
		if r.Bundle != nil {
			recs, err = w.ReadShared(ctx, *r.Bundle)
		} else {
			recs, err = w.ReadAsGrantee(ctx, r.Provider.ID, r.Tag)
		}
		if err != nil {
			return userErr("%s", plain(err))
		}
		recs = wallet.Merge(recs) // newest first
		return a.render(c, "shared", fiber.Map{"Share": row, "Records": recs, "Charts": charts(recs), "ViewerMode": true})
	}
	return userErr("there is no such share on this device: open Shared with me again")
}
