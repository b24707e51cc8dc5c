package dbmanager

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/tagcode"
)

// What the desk reads (staff only, not logged: no health data): one
// patient's relationship and records state, and the gateway's status.

// deskPatient answers what the desk knows of one patient: whether a tag is
// mapped, the relationship's state on chain, how many records, whether
// they are anchored. It never shows a record.
func (g *Gateway) deskPatient(c *fiber.Ctx) error {
	ctx := c.UserContext()
	p, err := g.cfg.Store.Patient(ctx, c.Params("id"))
	if err != nil {
		return storeError(err)
	}
	st, err := g.cfg.Store.State(ctx, p.ID)
	if err != nil {
		return storeError(err)
	}
	out := fiber.Map{"id": p.ID, "created": p.Created.Unix(), "records": st.Count, "anchored": !st.Dirty}
	rel := fiber.Map{"state": "not claimed"}
	if p.Tag != nil {
		code, err := tagcode.Of(p.Tag.Big())
		if err != nil {
			return err
		}
		rel = fiber.Map{"state": "mapped, not open on chain", "tag": p.Tag.String(), "deskCode": code.String()}
		if err := g.syncChain(ctx); err != nil {
			return err
		}
		if r, ok := g.cfg.View.Relationship(p.Tag.Big()); ok {
			var active int
			now := uint64(g.cfg.Now().Unix())
			for _, gr := range g.cfg.View.GrantsOf(p.Tag.Big()) {
				if gr.Active(now) {
					active++
				}
			}
			rel["state"] = "open"
			rel["owner"] = r.Owner.Hex()
			rel["rotations"] = r.Rotation
			rel["grantsInForce"] = active
		}
	}
	out["relationship"] = rel
	return c.JSON(out)
}

// status answers the gateway's state: its chain view, its access log and
// its anchors (the latest batch, whether it is published, what waits for
// the next one).
func (g *Gateway) status(c *fiber.Ctx) error {
	ctx := c.UserContext()
	head, err := g.cfg.Store.LogHead(ctx)
	if err != nil {
		return storeError(err)
	}
	out := fiber.Map{"provider": g.cfg.Provider, "chainHead": g.cfg.View.Head(), "log": fiber.Map{"entries": head.Next, "head": hexutil.Encode(head.Hash[:])}}
	a, err := g.cfg.Store.LatestAnchor(ctx)
	switch {
	case err == nil:
		out["anchor"] = fiber.Map{"batch": a.Batch, "time": a.Time.UTC().Format(time.RFC3339), "logThrough": a.LogFrom + a.LogCount,
			"published": a.TxHash != "", "tx": a.TxHash, "unanchoredEntries": head.Next - (a.LogFrom + a.LogCount)}
	case errors.Is(err, store.ErrNotFound):
		out["anchor"] = fiber.Map{"batch": nil, "unanchoredEntries": head.Next}
	default:
		return storeError(err)
	}
	return c.JSON(out)
}

// maxFound bounds how many patients one desk search returns.
const maxFound = 50

// patientCard is what a desk search shows of a patient's Patient resource.
type patientCard struct {
	Name []struct {
		Text   string   `json:"text"`
		Family string   `json:"family"`
		Given  []string `json:"given"`
	} `json:"name"`
	BirthDate  string `json:"birthDate"`
	Identifier []struct {
		Value string `json:"value"`
	} `json:"identifier"`
}

func (p patientCard) names() []string {
	var out []string
	for _, n := range p.Name {
		full := strings.TrimSpace(strings.Join(append(append([]string{}, n.Given...), n.Family), " "))
		if n.Text != "" {
			full = n.Text
		}
		if full != "" {
			out = append(out, full)
		}
	}
	return out
}

var birthDateRE = regexp.MustCompile(`^\d{4}(-\d{2}(-\d{2})?)?$`)

// findPatients finds patients by name (a part of any of their names, any
// case), birth date (a year, year-month or full date) and record number
// (an identifier's value, exactly): all the criteria given must hold. Each
// patient found is logged (the staff member looked them up), so patients
// see who searched for them.
func (g *Gateway) findPatients(c *fiber.Ctx) error {
	name := strings.ToLower(strings.TrimSpace(c.Query("name")))
	birth := strings.TrimSpace(c.Query("birthdate"))
	ident := strings.TrimSpace(c.Query("identifier"))
	switch {
	case name == "" && birth == "" && ident == "":
		return badRequest("give a name, a birth date or a record number (identifier) to find a patient")
	case name != "" && (len([]rune(name)) < 2 || len(name) > 100):
		return badRequest("a name to find has 2 to 100 characters")
	case birth != "" && !birthDateRE.MatchString(birth):
		return badRequest("a birth date is YYYY, YYYY-MM or YYYY-MM-DD")
	case len(ident) > 64:
		return badRequest("a record number has at most 64 characters")
	}
	ctx := c.UserContext()
	var found []fiber.Map
	var logs []store.LogEntry
	req := store.PageRequest{Count: store.MaxCount}
	for len(found) < maxFound {
		page, err := g.cfg.Store.PatientResources(ctx, req)
		if err != nil {
			return storeError(err)
		}
		for _, r := range page.Resources {
			var card patientCard
			if json.Unmarshal(r.Raw, &card) != nil {
				continue
			}
			if birth != "" && !strings.HasPrefix(card.BirthDate, birth) {
				continue
			}
			if ident != "" && !slices.ContainsFunc(card.Identifier, func(i struct {
				Value string `json:"value"`
			}) bool {
				return i.Value == ident
			}) {
				continue
			}
			names := card.names()
			if name != "" && !slices.ContainsFunc(names, func(n string) bool { return strings.Contains(strings.ToLower(n), name) }) {
				continue
			}
			var ids []string
			for _, i := range card.Identifier {
				ids = append(ids, i.Value)
			}
			found = append(found, fiber.Map{"id": r.PatientID, "names": names, "birthDate": card.BirthDate, "identifiers": ids})
			logs = append(logs, store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "find", PatientID: r.PatientID,
				Resources: []string{"Patient/" + r.ID}, Outcome: store.Allowed})
			if len(found) == maxFound {
				break
			}
		}
		if page.Next == "" {
			break
		}
		req.Cursor = page.Next
	}
	if len(logs) > 0 {
		if _, err := g.cfg.Store.AppendLog(ctx, logs...); err != nil {
			return fmt.Errorf("access log: %w", err)
		}
	}
	return c.JSON(fiber.Map{"patients": found, "more": len(found) == maxFound})
}
