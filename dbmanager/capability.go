package dbmanager

import (
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/fhirsearch"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/store"
)

// The CapabilityStatement says exactly what this gateway serves, from the
// tables that decide it: the grantable types (package access) and their
// search parameters and references (package fhirsearch). A test reads it
// back and tries every parameter it lists. rest.security names SMART App
// Launch (smart.go) and its endpoints.

// capabilityResource describes one resource type.
func capabilityResource(t string) fiber.Map {
	// create and update: a backend client's writes (feed.go), not a reader's.
	interactions := []fiber.Map{{"code": "read"}, {"code": "vread"}, {"code": "history-instance"}, {"code": "create"}, {"code": "update"}}
	res := fiber.Map{
		"type":              t,
		"versioning":        "versioned",
		"readHistory":       true,
		"updateCreate":      true,
		"conditionalCreate": true,
		"conditionalUpdate": true,
		"conditionalRead":   "not-match",
	}
	if !fhirval.InPatientCompartment(t) {
		// Directory resources belong to no patient: read by id or included.
		res["interaction"] = interactions
		res["documentation"] = "A directory resource outside every patient's records: read it by id, or follow a reference to it with _include."
		return res
	}
	res["interaction"] = append(interactions, fiber.Map{"code": "search-type"})
	search := []fiber.Map{
		{"name": store.IDParam, "type": "token", "documentation": "The resource's id (a research reader's: its pseudonym)."},
		{"name": store.UpdatedParam, "type": "date", "documentation": "When this gateway stored the current version (not for research readers)."},
	}
	for _, p := range fhirsearch.Params(t) {
		doc := p.Documentation()
		if fhirsearch.IsPatientParam(p.Name) {
			doc += " — the reader's own patient only (a research reader: its pseudonym of the patient)"
		}
		search = append(search, fiber.Map{"name": p.Name, "type": p.Kind.String(), "documentation": doc})
	}
	res["searchParam"] = search
	inc, rev := fhirsearch.Includes(t)
	var incs, revs []string
	for _, i := range inc {
		incs = append(incs, i.Source+":"+i.Param)
	}
	for _, i := range rev {
		revs = append(revs, i.Source+":"+i.Param)
	}
	if incs != nil {
		res["searchInclude"] = incs
	}
	if revs != nil {
		res["searchRevInclude"] = revs
	}
	if t == "Patient" {
		res["operation"] = []fiber.Map{everythingOp, exportOp, disclosuresOp, grantsOp}
	}
	return res
}

var (
	everythingOp = fiber.Map{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
	exportOp     = fiber.Map{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
		"documentation": "Bulk Data, patient level: what $everything serves the same reader (its patient's resources of the types its grant covers; de-identified for research readers), as NDJSON files; Prefer: respond-async; _type, _since (not for research readers), _outputFormat=application/fhir+ndjson. Status and files: the reader that kicked it off, each request authorized again."}
	disclosuresOp = fiber.Map{"name": "disclosures", "definition": "urn:medrec-zk:operation:disclosures",
		"documentation": "The relationship's owner only: the accounting of disclosures (HIPAA 45 CFR 164.528) — every read served to a grantee or an anonymous viewer since _since (default six years back) — as one collection Bundle of AuditEvents."}
	groupExportOp = fiber.Map{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
		"documentation": "Bulk Data, group level, Group/research only: for an address grantee, signed without a tag, every patient at this provider who granted it research access in force now; each member's resources of the types its grant covers, de-identified, in one NDJSON file per type; each member's log names the export before any file is listed. Prefer: respond-async; _type, _outputFormat=application/fhir+ndjson (no _since: research readers see years only). Status and files: the same signer, each request authorized again per member."}
	grantsOp = fiber.Map{"name": "grants", "definition": "urn:medrec-zk:operation:grants",
		"documentation": "The relationship's owner only: every grant on the relationship, from the chain, as Consent resources in one collection Bundle (read-only: grants are made and revoked by the owner's signed transactions). Consent records the provider holds are read and searched as any other record."}
)

// ownerViews are the resources the relationship's owner reads about their
// own records (fhirlog.go): not records themselves, never granted.
func ownerViews() []fiber.Map {
	interactions := []fiber.Map{{"code": "read"}, {"code": "search-type"}}
	return []fiber.Map{{
		"type": "AuditEvent", "interaction": interactions,
		"documentation": "The relationship's owner only: the access log of their records at this provider, oldest first; _count and _cursor (from the next link) only. Reading it is not itself logged; /patient/log serves the same entries with their hash chain and anchor proofs.",
	}}
}

// groupView is Group/research (group.go): a research grantee's patients at
// this provider, by its pseudonyms, and their group export.
func groupView() fiber.Map {
	return fiber.Map{
		"type": "Group", "interaction": []fiber.Map{{"code": "read"}}, "operation": []fiber.Map{groupExportOp},
		"documentation": "Group/research only, for an address grantee signing without a tag: the patients at this provider who granted it research access in force now, as members by its pseudonyms of them (type person, actual, quantity). Each member's log names the read.",
	}
}

// metadata answers the FHIR CapabilityStatement: what this gateway serves.
func (g *Gateway) metadata(c *fiber.Ctx) error {
	var res []fiber.Map
	for _, t := range access.ResourceTypes() {
		res = append(res, capabilityResource(t))
	}
	res = append(res, ownerViews()...)
	res = append(res, groupView())
	c.Set(fiber.HeaderContentType, "application/fhir+json")
	return c.JSON(fiber.Map{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         "2026-11-25",
		"kind":         "instance",
		"fhirVersion":  "4.0.1",
		"format":       []string{"application/fhir+json"},
		"software":     fiber.Map{"name": "MedRec-ZK dbmanager"},
		"implementation": fiber.Map{
			"description": fmt.Sprintf("MedRec-ZK gateway of provider %d: reads need a signed request of the relationship's owner or an address grantee, an anonymous viewer's session, or a SMART app's access token", g.cfg.Provider),
			"url":         g.base(c),
		},
		"rest": []fiber.Map{{
			"mode": "server",
			"documentation": "Searches are over the reader's own patient's records. Besides each type's parameters: _count (at most " +
				fmt.Sprint(store.MaxCount) + "), _sort (one key: a date parameter or _lastUpdated, - for descending), _include, _revinclude, " +
				"_summary=count and _elements; paging follows the Bundle's next and previous links. An unsupported parameter is a 400 " +
				"unless the request says Prefer: handling=lenient. Patient/$everything takes _since, _type and _count. Research readers " +
				"search dates by year only, ids by their pseudonyms, and never by _lastUpdated or _since.",
			"security": g.security(c),
			// A backend client's Bundles (feed.go).
			"interaction": []fiber.Map{{"code": "transaction"}, {"code": "batch"}},
			"resource":    res,
			"operation":   []fiber.Map{everythingOp, exportOp, groupExportOp, disclosuresOp, grantsOp},
		}},
	}, "application/fhir+json")
}

// security is the CapabilityStatement's rest.security: SMART App Launch,
// with its endpoints in the oauth-uris extension (SMART App Launch 2.0
// §2.2; /.well-known/smart-configuration says the same and more).
func (g *Gateway) security(c *fiber.Ctx) fiber.Map {
	base := g.publicBase(c)
	return fiber.Map{
		"extension": []fiber.Map{{
			"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
			"extension": []fiber.Map{
				{"url": "authorize", "valueUri": base + "/smart/authorize"},
				{"url": "token", "valueUri": base + "/smart/token"},
			},
		}},
		"service": []fiber.Map{{"coding": []fiber.Map{{
			"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR",
		}}}},
		"description": "SMART App Launch 2.0, standalone, for the apps the provider registered: authorization code with PKCE (S256), approved in the patient's own client by the relationship's owner delegate; " +
			"patient/ scopes (v1 and v2, read and search); short access tokens checked against the chain on every request. Also: signed requests (owner delegates, address grantees) and anonymous viewers' sessions. " +
			"Writes (create, update, conditional on identifier, batch and transaction Bundles) are the provider's registered systems' only: SMART Backend Services (client_credentials, private_key_jwt with RS384 or ES384, system/ scopes c and u) at the same token endpoint.",
	}
}
