package contracts

import (
	"context"
	"fmt"
	"math/big"
	"testing"
	"time"
)

// TestGovernanceRead: the members, the open proposals with their voters,
// the majority, and what a mined governance transaction did.
func TestGovernanceRead(t *testing.T) {
	e := newEnv(t, 3)
	c := NewClient(e.client, e.d)
	ctx := context.Background()
	p := e.providers
	newAuth, newGw := addr(key("authority-new")), addr(key("gateway-new"))

	g, err := c.Governance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 3 || g.Needed != 2 || len(g.Proposals) != 0 || len(g.Signers) != 3 || g.Members[1].ID != 2 || g.Members[1].Authority != addr(p[1].authority) {
		t.Fatalf("governance before: %+v", g)
	}

	// Proposal 1 (remove 3), then 2 (add): both open, newest first.
	r := e.mustSend(p[0].authority, e.agentsC, e.agents.PackProposeRemove(3))
	if out, err := c.GovernanceOutcome(r); err != nil || out.Proposal != 1 || out.Executed {
		t.Fatalf("propose remove: %+v %v", out, err)
	}
	r = e.mustSend(p[1].authority, e.agentsC, e.agents.PackProposeAdd(newAuth, newGw, "New", "http://127.0.0.1:9000"))
	if out, err := c.GovernanceOutcome(r); err != nil || out.Proposal != 2 || out.Executed {
		t.Fatalf("propose add: %+v %v", out, err)
	}
	g, err = c.Governance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Proposals) != 2 {
		t.Fatalf("proposals %+v", g.Proposals)
	}
	add, rm := g.Proposals[0], g.Proposals[1]
	if add.ID != 2 || add.Kind != "add" || add.Authority != newAuth || add.Name != "New" || add.Votes != 1 || fmt.Sprint(add.Voters) != "[2]" ||
		time.Until(add.Deadline) < 6*24*time.Hour {
		t.Fatalf("add proposal %+v", add)
	}
	if rm.ID != 1 || rm.Kind != "remove" || rm.Provider != 3 || rm.Authority != addr(p[2].authority) || rm.Proposer != 1 || rm.Votes != 1 {
		t.Fatalf("remove proposal %+v", rm)
	}

	// The second vote executes the add: provider 4, and it leaves the list.
	r = e.mustSend(p[2].authority, e.agentsC, e.agents.PackVote(big.NewInt(2)))
	if out, err := c.GovernanceOutcome(r); err != nil || out != (Outcome{Proposal: 2, Executed: true, Kind: KindAdd, Provider: 4}) {
		t.Fatalf("vote: %+v %v", out, err)
	}
	g, err = c.Governance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 4 || g.Needed != 3 || len(g.Proposals) != 1 || g.Proposals[0].ID != 1 || g.Signers[3] != newAuth {
		t.Fatalf("governance after: %+v", g)
	}
	if id, err := c.ProviderOfAuthority(ctx, newAuth); err != nil || id != 4 {
		t.Fatalf("provider of the new authority: %d %v", id, err)
	}

	// Expired proposals are not listed.
	e.advance(8 * 24 * time.Hour)
	e.sim.Commit()
	if g, err = c.Governance(ctx); err != nil || len(g.Proposals) != 0 {
		t.Fatalf("after the voting period: %+v %v", g, err)
	}
}

// TestGovernanceExecute: a proposal whose votes became a majority when the
// active set shrank is listed as ready and carried out by Execute.
func TestGovernanceExecute(t *testing.T) {
	e := newEnv(t, 4)
	c := NewClient(e.client, e.d)
	ctx := context.Background()
	p := e.providers
	newAuth, newGw := addr(key("authority-new")), addr(key("gateway-new"))
	e.mustSend(p[0].authority, e.agentsC, e.agents.PackProposeAdd(newAuth, newGw, "New", "http://127.0.0.1:9000"))
	e.mustSend(p[1].authority, e.agentsC, e.agents.PackVote(big.NewInt(1))) // 2 of 4: not yet
	e.mustSend(p[0].authority, e.agentsC, e.agents.PackProposeRemove(4))
	e.mustSend(p[1].authority, e.agentsC, e.agents.PackVote(big.NewInt(2)))
	e.mustSend(p[2].authority, e.agentsC, e.agents.PackVote(big.NewInt(2))) // 3 of 4: provider 4 out
	g, err := c.Governance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 3 || g.Needed != 2 || len(g.Proposals) != 1 || g.Proposals[0].Votes != 2 {
		t.Fatalf("after the removal: %+v", g)
	}
	tx, err := c.Execute(ctx, e.auth(e.stranger), big.NewInt(1))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.GovernanceOutcome(e.mine(tx))
	if err != nil || out != (Outcome{Proposal: 1, Executed: true, Kind: KindAdd, Provider: 5}) {
		t.Fatalf("execute: %+v %v", out, err)
	}
	if _, err := c.Execute(ctx, e.auth(e.stranger), big.NewInt(1)); RevertName(err) != "ProposalExecuted" {
		t.Fatalf("second execute: %v", err)
	}
}
