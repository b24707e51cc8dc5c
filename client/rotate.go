package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/wallet"
)

// Rotating a delegate goes through a confirmation page: GET /rotate shows
// what the rotation will end and lets the patient tick the grants to keep
// (none ticked by default: a stolen device may have made them); one POST
// /rotate does it and redirects to GET /rotate/done/:id, so a reload shows the
// outcome again and never repeats the rotation. The POST also carries the
// rotation counter the page was made for and is refused once the delegate
// has moved on (a resubmitted form, a second tab).

// rotationOutcome is a finished rotation as the done page shows it.
type rotationOutcome struct {
	Provider string
	Rotation uint32
	Ended    []grantRow // ended and not issued again
	Kept     []grantRow // issued again by the new delegate
	Problem  string     // set when the rotation stands but re-issuing stopped
}

// keptOutcomes bounds how many finished rotations the app remembers for
// their done pages.
const keptOutcomes = 16

func (a *App) rotateConfirm(c *fiber.Ctx) error {
	p, err := providerParam(c.Query("provider"))
	if err != nil {
		return err
	}
	plan, err := a.wallet().PlanRotation(c.UserContext(), p)
	if err != nil {
		return userErr("cannot replace the key: %s", plain(err))
	}
	dir, err := a.wallet().Directory([]wallet.Relationship{plan.Relationship})
	if err != nil {
		return err
	}
	t := now()
	rows := make([]grantRow, len(plan.Ending))
	for i, g := range plan.Ending {
		rows[i] = newGrantRow(dir, plan.Relationship.Provider, g, t)
	}
	return a.render(c, "rotate", fiber.Map{"Provider": plan.Relationship.Provider.Name, "ID": p,
		"Rotation": plan.Relationship.Rotation, "Grants": rows})
}

func (a *App) doRotate(c *fiber.Ctx) error {
	w := a.wallet()
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	from, err := strconv.ParseUint(c.FormValue("rotation"), 10, 32)
	if err != nil {
		return userErr("the form lacks the rotation it was made for; open Rotate again")
	}
	var keep []wallet.GrantRef
	for _, v := range formValues(c, "keep") {
		ref, err := parseGrantRef(v)
		if err != nil {
			return err
		}
		keep = append(keep, ref)
	}
	plan, err := w.PlanRotation(c.UserContext(), p)
	if err != nil {
		return userErr("cannot replace the key: %s", plain(err))
	}
	if uint64(plan.Relationship.Rotation) != from {
		return userErr("the key at %s was already replaced since that page was shown (it is at rotation %d now): nothing was done. Open Rotate again to see what it would end now.", plan.Relationship.Provider.Name, plan.Relationship.Rotation)
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 3*time.Minute)
	defer cancel()
	res, err := w.Rotate(ctx, p, keep)
	if err != nil && res.Provider == "" {
		return userErr("could not replace the key: %s; nothing was changed", plain(err)) // nothing happened
	}
	out := rotationOutcome{Provider: res.Provider, Rotation: res.Rotation}
	dir, derr := w.Directory([]wallet.Relationship{plan.Relationship})
	if derr != nil {
		dir = nil
	}
	t := now()
	reissued := map[wallet.GrantRef]bool{}
	for _, g := range res.Reissued {
		reissued[wallet.RefOf(g)] = true
		out.Kept = append(out.Kept, newGrantRow(dir, plan.Relationship.Provider, g, t))
	}
	for _, g := range res.Ended {
		if !reissued[wallet.RefOf(g)] {
			g.Ended = true
			out.Ended = append(out.Ended, newGrantRow(dir, plan.Relationship.Provider, g, t))
		}
	}
	if err != nil {
		out.Problem = plain(err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	key := hex.EncodeToString(id)
	a.mu.Lock()
	if len(a.rotations) >= keptOutcomes {
		clear(a.rotations) // old outcomes only: their pages were shown
	}
	a.rotations[key] = out
	a.mu.Unlock()
	return c.Redirect("/rotate/done/"+key, fiber.StatusSeeOther)
}

func (a *App) rotateDone(c *fiber.Ctx) error {
	a.mu.Lock()
	out, ok := a.rotations[c.Params("id")]
	a.mu.Unlock()
	if !ok {
		return userErr("that rotation's summary is no longer kept; the Sharing page shows every grant and its status")
	}
	return a.render(c, "rotated", fiber.Map{"Out": out})
}

// parseGrantRef reads a keep box's value: "<kind>:<0x grantee, 32 bytes>".
func parseGrantRef(s string) (wallet.GrantRef, error) {
	kind, grantee, ok := strings.Cut(s, ":")
	k, err := strconv.ParseUint(kind, 10, 8)
	raw, herr := hexutil.Decode(grantee)
	if !ok || err != nil || herr != nil || len(raw) != 32 || !access.GranteeKind(k).Valid() {
		return wallet.GrantRef{}, userErr("a grant to keep is malformed; open Rotate again")
	}
	return wallet.GrantRef{Kind: access.GranteeKind(k), Grantee: [32]byte(raw)}, nil
}

// grantRef is the keep box's value of g (parseGrantRef reads it).
func grantRef(g chainview.Grant) string {
	return fmt.Sprintf("%d:%s", g.Kind, hexutil.Encode(g.Grantee[:]))
}

// formValues returns every value of a repeated form field (checkboxes),
// from a urlencoded or a multipart body.
func formValues(c *fiber.Ctx, name string) []string {
	if form, err := c.MultipartForm(); err == nil {
		return form.Value[name]
	}
	var out []string
	c.Request().PostArgs().VisitAll(func(k, v []byte) {
		if string(k) == name {
			out = append(out, string(v))
		}
	})
	return out
}
