package dbmanager

import (
	"errors"
	"strconv"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// The patient registry's tree, served in buckets (merkle/bucket.go) so a
// client computes its membership path without downloading every
// commitment and without naming its leaf: GET /registry/tops gives every
// bucket's root, GET /registry/buckets/{b} one bucket's leaves. Both are
// public data (the registry's events), served from the chain view,
// unauthenticated and unlogged — the gateway learns which bucket was
// fetched, by which address, nothing more; the client checks the root its
// path leads to against the chain. Bodies are the nodes as 32-byte
// big-endian words, back to back; X-Registry-Leaves and X-Registry-Root
// say which tree the tops are of.

const (
	headerRegistryLeaves = "X-Registry-Leaves"
	headerRegistryRoot   = "X-Registry-Root"
)

// registryTops answers GET /registry/tops.
func (g *Gateway) registryTops(c *fiber.Ctx) error {
	if err := g.syncChain(c.UserContext()); err != nil {
		return err
	}
	tops, leaves, root, err := g.cfg.View.Tops()
	if err != nil {
		return treeUnavailable(err)
	}
	c.Set(headerRegistryLeaves, strconv.Itoa(leaves))
	c.Set(headerRegistryRoot, zkhash.Hex(root))
	return sendNodes(c, tops)
}

// registryBucket answers GET /registry/buckets/:b. A full bucket never
// changes, and is cacheable for ever; the last one grows.
func (g *Gateway) registryBucket(c *fiber.Ctx) error {
	b, err := strconv.Atoi(c.Params("b"))
	if err != nil || b < 0 || b >= merkle.Capacity/merkle.BucketSize {
		return badRequest("a bucket is a number from 0 to %d", merkle.Capacity/merkle.BucketSize-1)
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return err
	}
	leaves, full, err := g.cfg.View.Bucket(b)
	switch {
	case errors.Is(err, merkle.ErrIndexOutside):
		return errf(fiber.StatusNotFound, "not-found", "bucket %d holds no commitment yet", b)
	case err != nil:
		return treeUnavailable(err)
	}
	if err := sendNodes(c, leaves); err != nil {
		return err
	}
	if full {
		c.Set(fiber.HeaderCacheControl, "public, max-age=31536000, immutable")
	}
	return nil
}

// treeUnavailable answers a tree the gateway cannot read now (its view
// catching up after a restart, its records database failing).
func treeUnavailable(err error) error {
	return errf(fiber.StatusServiceUnavailable, "transient", "the registry's tree is not available now: %v", err)
}

// sendNodes answers with nodes as 32-byte big-endian words.
func sendNodes(c *fiber.Ctx, nodes []fr.Element) error {
	body := make([]byte, 0, 32*len(nodes))
	for _, n := range nodes {
		w := n.Bytes()
		body = append(body, w[:]...)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEOctetStream)
	return c.Send(body)
}
