package dbmanager

import (
	"context"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/contracts"
)

// The relay submits patients' owner-signed messages with the gateway's
// account, so delegates never hold or receive ether. The contract checks the
// signatures; the gateway only refuses relationships of other providers.

type grantJSON struct {
	Tag         string `json:"tag"`
	GranteeKind uint8  `json:"granteeKind"`
	Grantee     string `json:"grantee"`
	Scope       uint64 `json:"scope"`
	Purpose     uint8  `json:"purpose"`
	Expiry      uint64 `json:"expiry"`
	Nonce       uint32 `json:"nonce"`
	Deadline    uint64 `json:"deadline"`
}

type relayGrantRequest struct {
	Request   grantJSON `json:"request"`
	Signature string    `json:"signature"`
}

type revokeJSON struct {
	Tag         string `json:"tag"`
	GranteeKind uint8  `json:"granteeKind"`
	Grantee     string `json:"grantee"`
	Nonce       uint32 `json:"nonce"`
	Deadline    uint64 `json:"deadline"`
}

type relayRevokeRequest struct {
	Request   revokeJSON `json:"request"`
	Signature string     `json:"signature"`
}

// ownRelationship refuses tags that are not relationships at this provider.
func (g *Gateway) ownRelationship(c *fiber.Ctx, tag *big.Int) error {
	if err := g.syncChain(c.UserContext()); err != nil {
		return err
	}
	rel, ok := g.cfg.View.Relationship(tag)
	if !ok {
		return notFound("no relationship with this tag")
	}
	if rel.Provider != g.cfg.Provider {
		return forbidden("the relationship is at provider %d; send it to that provider's gateway", rel.Provider)
	}
	return nil
}

func (g *Gateway) relayGrant(c *fiber.Ctx) error {
	var req relayGrantRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ins, err := parseFields(req.Request.Tag)
	if err != nil {
		return err
	}
	if err := g.ownRelationship(c, ins[0]); err != nil {
		return err
	}
	grantee, err := parseBytes32(req.Request.Grantee)
	if err != nil {
		return err
	}
	sig, err := hexutil.Decode(req.Signature)
	if err != nil {
		return badRequest("signature: %v", err)
	}
	gr := contracts.GrantRequest{
		Tag: ins[0], GranteeKind: req.Request.GranteeKind, Grantee: grantee, Scope: req.Request.Scope,
		Purpose: req.Request.Purpose, Expiry: req.Request.Expiry, Nonce: req.Request.Nonce, Deadline: req.Request.Deadline,
	}
	r, err := g.send(c, func(ctx context.Context) (*types.Transaction, error) {
		return g.cfg.Chain.Grant(ctx, g.cfg.Relayer, gr, sig)
	})
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"tx": r.TxHash.Hex(), "block": r.BlockNumber.Uint64()})
}

func (g *Gateway) relayRevoke(c *fiber.Ctx) error {
	var req relayRevokeRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ins, err := parseFields(req.Request.Tag)
	if err != nil {
		return err
	}
	if err := g.ownRelationship(c, ins[0]); err != nil {
		return err
	}
	grantee, err := parseBytes32(req.Request.Grantee)
	if err != nil {
		return err
	}
	sig, err := hexutil.Decode(req.Signature)
	if err != nil {
		return badRequest("signature: %v", err)
	}
	rv := contracts.RevokeRequest{Tag: ins[0], GranteeKind: req.Request.GranteeKind, Grantee: grantee, Nonce: req.Request.Nonce, Deadline: req.Request.Deadline}
	r, err := g.send(c, func(ctx context.Context) (*types.Transaction, error) {
		return g.cfg.Chain.Revoke(ctx, g.cfg.Relayer, rv, sig)
	})
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"tx": r.TxHash.Hex(), "block": r.BlockNumber.Uint64()})
}

type relayRotateRequest struct {
	Tag      string `json:"tag"`
	NewOwner string `json:"newOwner"`
	Root     string `json:"root"`
	Proof    string `json:"proof"`
}

func (g *Gateway) relayRotate(c *fiber.Ctx) error {
	var req relayRotateRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	ins, err := parseFields(req.Tag, req.Root)
	if err != nil {
		return err
	}
	if err := g.ownRelationship(c, ins[0]); err != nil {
		return err
	}
	if !common.IsHexAddress(req.NewOwner) {
		return badRequest("newOwner must be an address")
	}
	newOwner := common.HexToAddress(req.NewOwner)
	// A delegate belongs to one relationship (see claim).
	if owned := g.cfg.View.OwnedBy(newOwner); len(owned) > 0 {
		return errf(fiber.StatusConflict, "conflict", "the delegate %s already owns a relationship at provider %d: each relationship needs a delegate of its own", newOwner.Hex(), owned[0].Provider)
	}
	proof, err := parseProof(req.Proof)
	if err != nil {
		return err
	}
	r, err := g.send(c, func(ctx context.Context) (*types.Transaction, error) {
		return g.cfg.Chain.Rotate(ctx, g.cfg.Relayer, ins[0], newOwner, ins[1], proof[:])
	})
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"tx": r.TxHash.Hex(), "block": r.BlockNumber.Uint64()})
}
