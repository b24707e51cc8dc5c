// Package access owns the vocabulary of permissions that the chain, the
// gateways and the clients must read identically: scopes (sets of FHIR R4
// resource types, stored on chain as a 64-bit mask), purposes of use, and the
// two kinds of grantee. The bit of each resource type is fixed forever: new
// types are only ever appended.
package access

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Errors returned by this package.
var (
	ErrUnknownType    = errors.New("not a grantable FHIR resource type")
	ErrUnknownPurpose = errors.New("unknown purpose of use")
	ErrEmptyScope     = errors.New("a scope names at least one resource type")
)

// resourceTypes lists the grantable FHIR R4 resource types; the index is the bit.
// Append only.
var resourceTypes = [...]string{
	"AllergyIntolerance", "CarePlan", "CareTeam", "Claim", "Condition", "Coverage",
	"Device", "DiagnosticReport", "DocumentReference", "Encounter", "ExplanationOfBenefit",
	"FamilyMemberHistory", "Goal", "ImagingStudy", "Immunization", "Location",
	"Medication", "MedicationAdministration", "MedicationDispense", "MedicationRequest",
	"MedicationStatement", "Observation", "Organization", "Patient", "Practitioner",
	"PractitionerRole", "Procedure", "Provenance", "QuestionnaireResponse", "ServiceRequest",
	"Specimen", "SupplyDelivery", "Communication", "Consent", "DeviceRequest",
	"NutritionOrder", "RiskAssessment", "ClinicalImpression", "DetectedIssue", "AdverseEvent",
	"EpisodeOfCare", "Appointment", "Media", "BodyStructure", "List", "Composition",
	"Flag", "VisionPrescription", "ImmunizationRecommendation",
}

var bitOf = func() map[string]uint {
	m := make(map[string]uint, len(resourceTypes))
	for i, t := range resourceTypes {
		m[t] = uint(i)
	}
	return m
}()

// ResourceTypes returns every grantable resource type in bit order.
func ResourceTypes() []string { return append([]string(nil), resourceTypes[:]...) }

// Scope is a set of FHIR resource types, as stored on chain.
type Scope uint64

// AllTypes is the scope of every grantable type.
const AllTypes = Scope(1)<<len(resourceTypes) - 1

// NewScope returns the scope of the named types.
func NewScope(types ...string) (Scope, error) {
	var s Scope
	for _, t := range types {
		b, ok := bitOf[t]
		if !ok {
			return 0, fmt.Errorf("%q: %w", t, ErrUnknownType)
		}
		s |= 1 << b
	}
	if s == 0 {
		return 0, ErrEmptyScope
	}
	return s, nil
}

// ParseScope parses a comma-separated list of resource types, or "*" for all.
func ParseScope(s string) (Scope, error) {
	if strings.TrimSpace(s) == "*" {
		return AllTypes, nil
	}
	var types []string
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			types = append(types, t)
		}
	}
	return NewScope(types...)
}

// Allows reports whether the scope covers resource type t.
func (s Scope) Allows(t string) bool {
	b, ok := bitOf[t]
	return ok && s&(1<<b) != 0
}

// Valid reports whether the scope is non-empty and names only known types.
func (s Scope) Valid() bool { return s != 0 && s&^AllTypes == 0 }

// Types returns the scope's resource types, sorted.
func (s Scope) Types() []string {
	out := make([]string, 0, bits.OnesCount64(uint64(s)))
	for i, t := range resourceTypes {
		if s&(1<<uint(i)) != 0 {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// String lists the types, comma-separated.
func (s Scope) String() string {
	if s == AllTypes {
		return "*"
	}
	return strings.Join(s.Types(), ",")
}

// Purpose is why a grantee may read. Its numbers are stored on chain.
type Purpose uint8

// Purposes of use, with their HL7 v3 PurposeOfUse codes.
const (
	Treatment Purpose = 1 // TREAT
	Family    Purpose = 2 // FAMRQT
	Research  Purpose = 3 // HRESCH: reads return de-identified resources
	Emergency Purpose = 4 // ETREAT: every use is logged and notified to the patient
)

var purposes = map[Purpose][2]string{
	Treatment: {"treatment", "TREAT"},
	Family:    {"family", "FAMRQT"},
	Research:  {"research", "HRESCH"},
	Emergency: {"emergency", "ETREAT"},
}

// ParsePurpose parses a purpose by name ("treatment", "family", "research", "emergency").
func ParsePurpose(s string) (Purpose, error) {
	for p, names := range purposes {
		if strings.EqualFold(s, names[0]) || strings.EqualFold(s, names[1]) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%q: %w", s, ErrUnknownPurpose)
}

// Valid reports whether p is a known purpose.
func (p Purpose) Valid() bool { _, ok := purposes[p]; return ok }

// String returns the purpose's name.
func (p Purpose) String() string {
	if n, ok := purposes[p]; ok {
		return n[0]
	}
	return fmt.Sprintf("purpose(%d)", uint8(p))
}

// HL7 returns the HL7 v3 PurposeOfUse code (for FHIR AuditEvent.purposeOfEvent).
func (p Purpose) HL7() string { return purposes[p][1] }

// GranteeKind tells how a grantee is identified on chain.
type GranteeKind uint8

// Grantee kinds.
const (
	// AddressGrantee: an Ethereum account (a known clinician). Granting the same
	// address at two providers links those relationships on chain.
	AddressGrantee GranteeKind = 1
	// AnonymousGrantee: g = H(D_grant; Cv, tag, k); the viewer proves Entitlement.
	AnonymousGrantee GranteeKind = 2
)

// Valid reports whether k is a known kind.
func (k GranteeKind) Valid() bool { return k == AddressGrantee || k == AnonymousGrantee }

// String names the kind.
func (k GranteeKind) String() string {
	switch k {
	case AddressGrantee:
		return "address"
	case AnonymousGrantee:
		return "anonymous"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}
