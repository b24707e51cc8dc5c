package dbmanager

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/dbmanager/ingest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/tagcode"
	"github.com/medrec-zk/medrec/zkhash"
)

// The provider's staff (the admin API, behind staffOnly): patients,
// enrolment, claims and claim codes, undoing a wrong mapping, records.

type createPatientRequest struct {
	ID string `json:"id"`
}

func (g *Gateway) createPatient(c *fiber.Ctx) error {
	var req createPatientRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	created := store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "create-patient", PatientID: req.ID, Outcome: store.Allowed}
	if store.ValidID(req.ID) != nil {
		created.PatientID = ""
	}
	p, err := g.cfg.Store.CreatePatient(c.UserContext(), req.ID, created)
	if err != nil {
		return storeError(err)
	}
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"id": p.ID})
}

type enrolRequest struct {
	Commitment string `json:"commitment"`
}

func (g *Gateway) enrol(c *fiber.Ctx) error {
	pid := c.Params("id")
	var req enrolRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	vs, err := parseFields(req.Commitment)
	if err != nil || vs[0].Sign() == 0 || vs[0].Cmp(zkhash.Modulus()) >= 0 {
		return badRequest("commitment must be a non-zero field element in 0x hex")
	}
	cm, err := zkhash.FromBig(vs[0])
	if err != nil {
		return badRequest("commitment: %v", err)
	}
	if _, err := g.cfg.Store.Patient(c.UserContext(), pid); err != nil {
		return storeError(err)
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), chainTimeout)
	defer cancel()
	done, err := g.enrolCommitment(ctx, cm)
	if err != nil {
		return err
	}
	r := done.receipt
	if err := g.appendLog(c, store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "enrol", PatientID: pid, Outcome: store.Allowed,
		Detail: fmt.Sprintf("in a batch of %d, block %d", done.batch, r.BlockNumber.Uint64())}); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"tx": r.TxHash.Hex(), "block": r.BlockNumber.Uint64(), "batch": done.batch})
}

type claimRequest struct {
	Code  string `json:"code,omitempty"`
	Tag   string `json:"tag"`
	Owner string `json:"owner"`
	Root  string `json:"root"`
	Proof string `json:"proof"`
}

// claim verifies a patient's Ownership proof off chain, checks that its root
// is one the chain knows, maps the tag to the patient (kept only here), and
// relays the open transaction. A claim with a claim code opens only the tag
// the code is bound to (bound; "" for a claim staff submit at the desk).
func (g *Gateway) claim(c *fiber.Ctx, patientID string, req claimRequest, actor store.ActorKind, actorID string, bound tagcode.Code) error {
	if !common.IsHexAddress(req.Owner) || common.HexToAddress(req.Owner) == (common.Address{}) {
		return badRequest("owner must be a non-zero address")
	}
	owner := common.HexToAddress(req.Owner)
	d := g.cfg.Chain.Deployment()
	signal := circuits.OwnershipSignal(circuits.ActionOpen, owner, 0, d.ChainID, d.Relationships)
	pub, proof, err := g.verifyOwnership(req.Root, uint64(g.cfg.Provider), req.Tag, signal, req.Proof)
	if errors.Is(err, errProofRefused) {
		return forbidden("the ownership proof does not verify for this provider, tag and owner")
	}
	if err != nil {
		return err
	}
	tag := zkhash.Big(pub.Tag)
	var t store.Tag
	tag.FillBytes(t[:])
	refuse := func(err error) error {
		return g.logRefusal(c, store.LogEntry{ActorKind: actor, ActorID: actorID, Action: "claim", PatientID: patientID, Outcome: store.Denied, Detail: err.Error()}, err)
	}
	// The proof shows only that the claimant holds *some* enrolled secret;
	// the binding shows it is the patient the desk issued the code for.
	if bound != "" && !bound.Matches(tag) {
		return refuse(forbidden("this claim code is bound to another relationship: ask the desk for a claim code bound to the desk code your app shows for this provider"))
	}
	if err := g.syncChain(c.UserContext()); err != nil {
		return err
	}
	if rel, ok := g.cfg.View.Relationship(tag); ok {
		if p, err := g.cfg.Store.PatientByTag(c.UserContext(), t); err == nil && p.ID == patientID && rel.Owner == owner {
			return c.JSON(fiber.Map{"tag": hexutil.EncodeBig(tag), "status": "already open"})
		}
		return errf(fiber.StatusConflict, "conflict", "the relationship is already open")
	}
	// A delegate belongs to one relationship: an owner that already owns one
	// (here or at another provider) would link the two on chain.
	if owned := g.cfg.View.OwnedBy(owner); len(owned) > 0 {
		return refuse(errf(fiber.StatusConflict, "conflict", "the delegate %s already owns a relationship at provider %d: each relationship needs a delegate of its own, derived for this provider", owner.Hex(), owned[0].Provider))
	}
	// The chain opens only with a root its registry knows (one recent
	// enough), which the proof alone does not show: check it before the tag
	// is mapped, so that a claim the chain would refuse writes nothing.
	root := zkhash.Big(pub.Root)
	known, err := g.knownRoot(c.UserContext(), root)
	if err != nil {
		return err
	}
	if !known {
		return badRequest("the proof's root is not a current root of the patient registry: prove again against the latest root")
	}
	if err := g.cfg.Store.MapTag(c.UserContext(), patientID, t); err != nil {
		return storeError(err)
	}
	r, err := g.send(c, func(ctx context.Context) (*types.Transaction, error) {
		return g.cfg.Chain.Open(ctx, g.cfg.Relayer, tag, g.cfg.Provider, owner, root, proof[:])
	})
	if err != nil {
		return err
	}
	if err := g.appendLog(c, store.LogEntry{ActorKind: actor, ActorID: actorID, Action: "claim", PatientID: patientID, Outcome: store.Allowed}); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"tag": hexutil.EncodeBig(tag), "tx": r.TxHash.Hex(), "status": "opened"})
}

func (g *Gateway) claimByStaff(c *fiber.Ctx) error {
	var req claimRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	if req.Code != "" {
		return badRequest("staff claims take no code")
	}
	if _, err := g.cfg.Store.Patient(c.UserContext(), c.Params("id")); err != nil {
		return storeError(err)
	}
	return g.claim(c, c.Params("id"), req, store.ActorStaff, staffID(c), "")
}

const claimCodeTTL = 24 * time.Hour

// claimCodeHash is what the store keeps of a claim code: its SHA-256.
func claimCodeHash(code string) [32]byte { return sha256.Sum256([]byte(code)) }

type claimCodeRequest struct {
	// TagCode is the desk code the patient's app shows for this provider
	// (package tagcode): only that tag can claim with the code.
	TagCode string `json:"tagCode"`
}

// newClaimCode gives staff a one-time code to hand the patient, who then
// claims the relationship from home: the code says which patient this is,
// the desk code it is bound to which tag may claim, and the proof that the
// claimant holds that tag's enrolled secret. Only the code's hash is
// stored, in the records database, so the code outlives a gateway restart;
// who issued it, bound to what, is in the access log.
func (g *Gateway) newClaimCode(c *fiber.Ctx) error {
	pid := c.Params("id")
	var req claimCodeRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	if req.TagCode == "" {
		return badRequest("tagCode is required: the desk code the patient's app shows for this provider, so that only the patient can use the claim code")
	}
	tc, err := tagcode.Parse(req.TagCode)
	if err != nil {
		return badRequest("tagCode: %v", err)
	}
	code, err := randomHex(16)
	if err != nil {
		return err
	}
	now := g.cfg.Now()
	exp := now.Add(claimCodeTTL)
	issued := store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "claim-code", PatientID: pid, Outcome: store.Allowed, Detail: "bound to desk code " + tc.String()}
	if err := g.cfg.Store.PutClaimCode(c.UserContext(), store.ClaimCode{Hash: claimCodeHash(code), PatientID: pid, Expires: exp, TagCode: tc}, issued); err != nil {
		return storeError(err)
	}
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"code": code, "expires": exp.Unix(), "tagCode": tc.String()})
}

func (g *Gateway) claimWithCode(c *fiber.Ctx) error {
	var req claimRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	h := claimCodeHash(req.Code)
	cc, err := g.cfg.Store.ClaimCode(c.UserContext(), h, g.cfg.Now())
	if errors.Is(err, store.ErrNotFound) {
		return unauthorized("unknown or expired claim code")
	}
	if err != nil {
		return err
	}
	if cc.TagCode == "" {
		return unauthorized("this claim code was issued before claim codes were bound to the patient's app: ask the desk for a new one")
	}
	if err := g.claim(c, cc.PatientID, req, store.ActorPatient, req.Owner, cc.TagCode); err != nil {
		return err
	}
	// Used up once the relationship is open. A concurrent claim with the
	// same code may have consumed it first; a failure leaves a code that
	// can only meet an open relationship (409, or "already open").
	if err := g.cfg.Store.ConsumeClaimCode(c.UserContext(), h); err != nil && !errors.Is(err, store.ErrNotFound) {
		g.log.Error("claim code not consumed", "patient", cc.PatientID, "err", err)
	}
	return nil
}

type unmapRequest struct {
	Tag    string `json:"tag,omitempty"` // the tag to unmap (default: the patient's)
	Reason string `json:"reason"`
}

// maxReason bounds the reason staff give for undoing a mapping.
const maxReason = 500

// unmapTag undoes a wrong mapping: a relationship opened by someone who is
// not this patient (a claim code used by another person). The tag no longer
// reads the patient's records; the patient can claim again with a new
// code. Who did it, and why, goes to the access log, where the patient
// reads it.
func (g *Gateway) unmapTag(c *fiber.Ctx) error {
	pid := c.Params("id")
	var req unmapRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	reason := strings.TrimSpace(req.Reason)
	switch {
	case reason == "":
		return badRequest("a reason is required: it goes to the access log, which the patient reads")
	case len(reason) > maxReason:
		return badRequest("the reason is longer than %d bytes", maxReason)
	case !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl):
		return badRequest("the reason must be plain text on one line")
	}
	p, err := g.cfg.Store.Patient(c.UserContext(), pid)
	if err != nil {
		return storeError(err)
	}
	var tag store.Tag
	switch {
	case req.Tag != "":
		if tag, err = store.ParseTag(req.Tag); err != nil {
			return badRequest("tag: %v", err)
		}
	case p.Tag == nil:
		return errf(fiber.StatusConflict, "conflict", "no relationship is mapped to patient %s", pid)
	default:
		tag = *p.Tag
	}
	entry := store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "unmap", PatientID: pid, Outcome: store.Allowed,
		Detail: fmt.Sprintf("relationship %s unmapped: %s", tag, reason)}
	if err := g.cfg.Store.UnmapTag(c.UserContext(), pid, tag, entry); err != nil {
		return storeError(err)
	}
	g.forgetTag(tag)
	return c.JSON(fiber.Map{"patient": pid, "tag": tag.String(), "status": "unmapped"})
}

// addResources stores one FHIR resource, or every entry of a Bundle, for a
// patient, in one transaction.
func (g *Gateway) addResources(c *fiber.Ctx) error {
	pid := c.Params("id")
	body := c.Body()
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return badRequest("malformed JSON: %v", err)
	}
	var raws [][]byte
	if head.ResourceType == "Bundle" {
		// Read as an import reads it: a DELETE entry is refused, not written.
		entries, err := ingest.BundleResources(body)
		if err != nil {
			return badRequest("%v", err)
		}
		for _, e := range entries {
			raws = append(raws, e)
		}
	} else {
		raws = [][]byte{body}
	}
	if len(raws) == 0 {
		return badRequest("no resources")
	}
	batch := store.Batch{PatientID: pid}
	for i, raw := range raws {
		w, err := g.write(pid, raw)
		if err != nil {
			return badRequest("resource %d: %v", i, err)
		}
		batch.Writes = append(batch.Writes, w)
	}
	batch.Log = []store.LogEntry{{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "write", PatientID: pid, Resources: writeRefs(batch.Writes), Outcome: store.Allowed}}
	results, err := g.cfg.Store.Apply(c.UserContext(), batch)
	if err != nil {
		return storeError(err)
	}
	out := make([]fiber.Map, len(results))
	for i, r := range results {
		out[i] = fiber.Map{"type": r.Type, "id": r.ID, "version": r.Version, "effect": r.Effect.String()}
	}
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"results": out})
}

func writeRefs(ws []store.Write) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Type + "/" + w.ID
	}
	return out
}

func (g *Gateway) write(patientID string, raw []byte) (store.Write, error) {
	r, err := g.cfg.FHIR.Validate(raw, "")
	if err != nil {
		return store.Write{}, err
	}
	if r.ID == "" {
		return store.Write{}, errors.New("a resource needs an id")
	}
	if err := store.ValidID(r.ID); err != nil {
		return store.Write{}, err
	}
	if r.Type == "Patient" && r.ID != patientID {
		return store.Write{}, fmt.Errorf("the Patient resource's id must be the patient's id %q", patientID)
	}
	shared := r.Shared()
	if !shared {
		if err := r.CheckPatient("Patient/" + patientID); err != nil {
			return store.Write{}, err
		}
	}
	mode := store.Upsert
	if shared {
		mode = store.CreateIfAbsent
	}
	return store.Write{Type: r.Type, ID: r.ID, Raw: append([]byte(nil), raw...), Shared: shared, Mode: mode}, nil
}

// importBundle imports a patient's Bundle unchanged (e.g. Synthea's): the
// patient is the bundle's Patient resource, created if new; importing the
// same bundle again changes nothing.
func (g *Gateway) importBundle(c *fiber.Ctx) error {
	rep, err := g.ingest.ImportBundle(c.UserContext(), c.Body(), ingest.Actor{Kind: store.ActorStaff, ID: staffID(c)})
	if err != nil {
		return storeError(err)
	}
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"patient": rep.PatientID, "entries": rep.Entries, "created": rep.Created, "updated": rep.Updated, "unchanged": rep.Unchanged})
}
