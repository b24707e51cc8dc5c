package wallet

import (
	"context"
	"fmt"
	"slices"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/zkhash"
)

// A rotation replaces the delegate of one relationship (a lost or stolen
// device) and, on chain, ends every grant the replaced delegate made —
// including any a thief made with it. The patient keeps what they choose:
// those grants are issued again, signed by the new delegate, unchanged.

// GrantRef names one grant of a relationship: its grantee kind and id.
type GrantRef struct {
	Kind    access.GranteeKind
	Grantee [32]byte
}

// RefOf returns the reference of g.
func RefOf(g chainview.Grant) GrantRef { return GrantRef{Kind: g.Kind, Grantee: g.Grantee} }

// RotationPlan is what rotating the delegate at one provider will do.
type RotationPlan struct {
	Relationship Relationship
	Next         uint32            // the rotation counter after it
	Ending       []chainview.Grant // the grants in force now: the rotation ends them all
}

// PlanRotation lists what rotating the delegate at provider p would end.
// It works whether or not this seed derives the current owner (rotating back
// to a delegate it derives is the remedy when it does not).
func (w *Wallet) PlanRotation(ctx context.Context, p uint32) (RotationPlan, error) {
	rels, err := w.Relationships(ctx)
	if err != nil {
		return RotationPlan{}, err
	}
	for _, r := range rels {
		if r.Provider.ID != p {
			continue
		}
		plan := RotationPlan{Relationship: r, Next: r.Rotation + 1}
		now := uint64(w.now().Unix())
		for _, g := range r.Grants {
			if g.Active(now) {
				plan.Ending = append(plan.Ending, g)
			}
		}
		return plan, nil
	}
	return RotationPlan{}, fmt.Errorf("wallet: no relationship at provider %d", p)
}

// RotationResult is what a rotation did.
type RotationResult struct {
	Provider string
	Rotation uint32            // the relationship's rotation counter after it
	Ended    []chainview.Grant // the grants in force before, all ended by the rotation
	Reissued []chainview.Grant // those kept, issued again by the new delegate
}

// Rotate replaces the delegate of the relationship at p with the next
// rotation's, bound by a fresh Ownership proof and relayed by the provider's
// gateway, then issues again, signed by the new delegate, the grants in keep
// (each must be in force now; the same grantee, scope, purpose and expiry,
// anonymous ones under the same grant id g so the viewer's share bundle keeps
// working). Grants not kept stay ended.
//
// Nothing happens when keep names a grant not in force. An error after the
// rotation is relayed comes with the result so far: the rotation stands, and
// the grants not re-issued can be shared again.
func (w *Wallet) Rotate(ctx context.Context, p uint32, keep []GrantRef) (RotationResult, error) {
	plan, err := w.PlanRotation(ctx, p)
	if err != nil {
		return RotationResult{}, err
	}
	r := plan.Relationship
	var kept []chainview.Grant
	for _, ref := range keep {
		i := slices.IndexFunc(plan.Ending, func(g chainview.Grant) bool { return RefOf(g) == ref })
		if i < 0 {
			return RotationResult{}, fmt.Errorf("wallet: the grant to %s is not in force at %s, so there is nothing to keep", hexutil.Encode(ref.Grantee[:]), r.Provider.Name)
		}
		if !slices.ContainsFunc(kept, func(g chainview.Grant) bool { return RefOf(g) == ref }) {
			kept = append(kept, plan.Ending[i])
		}
	}
	next, err := w.keys.Delegate(p, plan.Next)
	if err != nil {
		return RotationResult{}, err
	}
	proof, pub, err := w.ownership(ctx, p, circuits.ActionRotate, next.Address, uint64(plan.Next))
	if err != nil {
		return RotationResult{}, err
	}
	if err := w.postJSON(ctx, r.Provider, "/relay/rotate", map[string]string{
		"tag": hexutil.EncodeBig(r.Tag), "newOwner": next.Address.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String(),
	}, nil); err != nil {
		return RotationResult{}, err
	}
	// The gateway answers once the rotation is mined: it stands from here on.
	res := RotationResult{Provider: r.Provider.Name, Rotation: plan.Next, Ended: plan.Ending}
	// The gateway answered once the rotation was mined; this device's node
	// may be a block behind, and the new delegate signs only once the view
	// shows it as the owner.
	if err := w.awaitChain(ctx, chainWait, func() bool {
		rel, ok := w.view.Relationship(r.Tag)
		return ok && rel.Rotation == plan.Next
	}); err != nil {
		return res, fmt.Errorf("wallet: the delegate at %s was replaced, but this device's chain node has not shown it yet, so the %d grant(s) you kept were not issued again: share them again from the Sharing page", r.Provider.Name, len(kept))
	}
	nr, err := w.Relationship(ctx, p)
	if err != nil {
		return res, err
	}
	for i, g := range kept {
		if uint64(w.now().Unix()) >= g.Expiry {
			continue // expired meanwhile: nothing to keep
		}
		if err := w.issue(ctx, nr, g.Kind, g.Grantee, g.Scope, g.Purpose, g.Expiry); err != nil {
			return res, fmt.Errorf("wallet: the delegate at %s was replaced; issuing again kept grant %d of %d failed (%w): share it and the rest again from the Sharing page", r.Provider.Name, i+1, len(kept), err)
		}
		g.Epoch, g.Ended = plan.Next, false
		res.Reissued = append(res.Reissued, g)
	}
	return res, nil
}
