package dbmanager

import (
	"errors"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayapi"
	"github.com/medrec-zk/medrec/zkhash"
)

// A patient's locator note says where their leaf is in the registry's
// tree, sealed under a key of their words (delegate.LocatorKey), so that a
// device restored from the words finds its leaf without reading the
// registry's history. The gateway keeps the latest note per locator tag,
// H(D_tag; s, 0): a tag of no provider, linked by nothing to the patient's
// commitment or their tags anywhere. Filing takes an Ownership proof at
// scope circuits.LocatorScope bound to the note (circuits.LocatorSignal)
// against a root the registry knows, so only an enrolled patient files,
// one tag each, and only the holder of the words replaces a note. Reading
// takes the tag alone: the note is sealed, and the tag is the patient's
// to know. Neither is logged: they name no patient and no record — the
// gateway learns that some enrolled patient filed or fetched a note, and
// the address that did.

// fileLocator answers POST /registry/locator.
func (g *Gateway) fileLocator(c *fiber.Ctx) error {
	var req gatewayapi.LocatorFiling
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	note, err := hexutil.Decode(req.Note)
	if err != nil || len(note) != store.LocatorNoteSize {
		return badRequest("note must be %d bytes in 0x hex", store.LocatorNoteSize)
	}
	d := g.cfg.Chain.Deployment()
	signal := circuits.LocatorSignal(note, d.ChainID, d.PatientRegistry)
	pub, _, err := g.verifyOwnership(req.Root, circuits.LocatorScope, req.Tag, signal, req.Proof)
	if errors.Is(err, errProofRefused) {
		return forbidden("the ownership proof does not verify for this locator tag and note")
	}
	if err != nil {
		return err
	}
	known, err := g.knownRoot(c.UserContext(), zkhash.Big(pub.Root))
	if err != nil {
		return err
	}
	if !known {
		return badRequest("the proof's root is not a current root of the patient registry: prove again against the latest root")
	}
	var tag [32]byte
	zkhash.Big(pub.Tag).FillBytes(tag[:])
	if err := g.cfg.Store.PutLocator(c.UserContext(), tag, note); err != nil {
		return storeError(err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// findLocator answers POST /registry/locator/find.
func (g *Gateway) findLocator(c *fiber.Ctx) error {
	var req gatewayapi.LocatorQuery
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	tag, err := locatorTag(req.Tag)
	if err != nil {
		return err
	}
	note, err := g.cfg.Store.Locator(c.UserContext(), tag)
	if errors.Is(err, store.ErrNotFound) {
		return errf(fiber.StatusNotFound, "not-found", "no locator note is filed here under this tag")
	}
	if err != nil {
		return storeError(err)
	}
	return c.JSON(gatewayapi.LocatorNote{Note: hexutil.Encode(note)})
}

// locatorTag parses a locator tag: a non-zero field element in 0x hex.
func locatorTag(s string) ([32]byte, error) {
	var t [32]byte
	vs, err := parseFields(s)
	if err != nil {
		return t, err
	}
	if vs[0].Sign() == 0 || vs[0].Cmp(zkhash.Modulus()) >= 0 {
		return t, badRequest("tag must be a non-zero field element in 0x hex")
	}
	vs[0].FillBytes(t[:])
	return t, nil
}
