package dbmanager

// De-identification of research reads, by allowlist.
//
// A reader whose grant has the research purpose gets, of each resource, only
// the elements the allowlist of its type names; everything else — elements
// this file does not know, unknown extensions, free text, identifiers — is
// dropped. The reference is HIPAA's Safe Harbor method (45 CFR
// 164.514(b)(2)): none of its 18 identifiers of the patient, relatives,
// employers or household members may remain. docs/records.md maps each
// identifier to the rule here that removes it.
//
// The tables are declarative and meant to be reviewed:
//
//   - researchResources lists, per grantable resource type, the elements
//     kept, by their FHIR JSON names; "prefix: a b" keeps a and b inside the
//     backbone element prefix, and a choice element is named with its type
//     (valueQuantity, never value[x]), so that valueString is visibly absent.
//   - researchDataTypes says what survives of each data type an allowed
//     element may have (a Coding keeps system, code and display; a
//     CodeableConcept keeps its codings, not its text).
//   - researchExtensions lists the extensions kept, by url, per type.
//
// The tables are compiled once, at start, against the FHIR R4 definitions
// of github.com/google/fhir/go (the library fhirval validates with), and the
// compiler refuses what must never be kept: an element R4 does not have,
// any string, markdown, uri, id or time of a resource's own (free text or
// an identifier), and the data types outside researchDataTypes (Identifier,
// HumanName, Address, ContactPoint, Annotation, Attachment, Narrative,
// Signature, SampledData…). A table that does not compile stops the program
// at start and fails every test.
//
// What survives is rewritten on the way: every date, dateTime and instant
// is cut to its year; a patient who may be 90 or older by the gateway's
// clock gets no birth year at all (see ageOver89URL), and every age of 90
// years or more reads "≥ 90 years"; resource ids and the ids in references
// become the reader's pseudonyms (Gateway.pseudonyms); a reference that is
// not to a resource here (an absolute URL, a search) is dropped. An element
// that carries a modifierExtension is dropped whole, since the extension may
// reverse its meaning ("not done") and the reader would not see it; a
// resource that carries one at its root is answered as a stub (type,
// pseudonymised id, security label REDACTED).

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	bcr "github.com/google/fhir/go/proto/google/fhir/proto/r4/core/resources/bundle_and_contained_resource_go_proto"

	"github.com/medrec-zk/medrec/access"
)

// present returns what a reader gets of a stored resource: the raw bytes, or
// for the research purpose a de-identified copy.
func (g *Gateway) present(r *reader, raw []byte) ([]byte, error) {
	if r.purpose != access.Research {
		return raw, nil
	}
	return deidentify(raw, g.pseudonyms(r), g.cfg.Now())
}

// fullURL is a bundle entry's fullUrl as the reader may see it.
func (g *Gateway) fullURL(r *reader, typ, id string) string {
	if r.purpose == access.Research {
		id = g.pseudonyms(r)(id)
	}
	return typ + "/" + id
}

// pseudonyms returns the research reader's pseudonym of a resource id: a
// UUID made of HMAC-SHA256(PseudonymKey, reader id, resource id). Keyed by
// the id alone, so a reference (Patient/x, urn:uuid:x) and the resource it
// points to keep agreeing.
func (g *Gateway) pseudonyms(r *reader) func(id string) string {
	return func(id string) string {
		m := hmac.New(sha256.New, g.cfg.PseudonymKey)
		m.Write([]byte(r.id))
		m.Write([]byte{0})
		m.Write([]byte(id))
		h := m.Sum(nil)
		h[6] = h[6]&0x0f | 0x80 // UUID version 8 (custom), RFC 9562
		h[8] = h[8]&0x3f | 0x80
		return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
	}
}

// sealCursor returns the cursor of a next link as the reader may see it.
// The store's cursors name the last resource of the page (its type and id,
// in base64), and a research reader must see no provider id: its cursors
// are sealed (AES-256-GCM under a key derived from PseudonymKey, bound to
// the reader), so only this gateway can open them, and only for it. The
// store's cursor is padded to cursorPad bytes first, so not even the
// id's length shows.
func (g *Gateway) sealCursor(r *reader, cursor string) string {
	if r.purpose != access.Research || cursor == "" {
		return cursor
	}
	plain := []byte(cursor)
	if len(plain) < cursorPad {
		plain = append(plain, make([]byte, cursorPad-len(plain))...)
	}
	aead := g.cursorAEAD()
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail (Go 1.24)
	}
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(r.id)))
}

// cursorPad bounds the store's cursors a research reader gets: base64 of a
// direction and an order letter, a zero byte, a type (at most 26
// characters), a zero byte and an id (at most 64), so 126 characters (its
// cursors never carry a sort key: it cannot sort by one). The store's
// cursors end in no zero byte, so the padding comes off unambiguously.
const cursorPad = 128

// openCursor returns the store's cursor a research reader's cursor seals;
// other readers' cursors are the store's own.
func (g *Gateway) openCursor(r *reader, cursor string) (string, error) {
	if r.purpose != access.Research || cursor == "" {
		return cursor, nil
	}
	aead := g.cursorAEAD()
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err == nil && len(b) >= aead.NonceSize() {
		var plain []byte
		if plain, err = aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(r.id)); err == nil {
			return string(bytes.TrimRight(plain, "\x00")), nil
		}
	}
	return "", badRequest("_cursor is not a cursor this gateway gave this reader")
}

// cursorAEAD is the cipher of research cursors. Its key is
// HMAC-SHA256(PseudonymKey, a label without a zero byte), apart from every
// pseudonym's input (reader, zero byte, id).
func (g *Gateway) cursorAEAD() cipher.AEAD {
	m := hmac.New(sha256.New, g.cfg.PseudonymKey)
	m.Write([]byte("medrec research cursor v1"))
	block, err := aes.NewCipher(m.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// researchResources: the elements a research reader gets, per grantable
// resource type (access.ResourceTypes). Besides these, every resource keeps
// resourceType, its id (pseudonymised), meta (as researchDataTypes says)
// and contained resources (each by its own type's list).
//
// Kept: statuses and the other modifier elements (a "not done" procedure
// must not read as done), codes, quantities, amounts, counts, booleans,
// references (pseudonymised) and dates (years). Never: identifiers, names,
// addresses, telecoms, free text (note, comment, description, conclusion,
// valueString, text, title, instructions), attachments, UDI, serial and lot
// numbers, positions, URLs, times of day, DICOM UIDs, and the age ranges
// that would say a patient is 90 or older (referenceRange.age, onsetRange).
var researchResources = map[string][]string{
	"AllergyIntolerance": {
		"clinicalStatus verificationStatus type category criticality code patient encounter",
		"onsetDateTime onsetAge onsetPeriod recordedDate recorder asserter lastOccurrence",
		"reaction: substance manifestation onset severity exposureRoute",
	},
	"CarePlan": {
		"instantiatesCanonical basedOn replaces partOf status intent category subject encounter period created",
		"author contributor careTeam addresses supportingInfo goal",
		"activity: outcomeCodeableConcept outcomeReference reference",
		"activity.detail: kind instantiatesCanonical code reasonCode reasonReference goal status statusReason",
		"activity.detail: doNotPerform scheduledTiming scheduledPeriod location performer",
		"activity.detail: productCodeableConcept productReference dailyAmount quantity",
	},
	"CareTeam": {
		"status category subject encounter period reasonCode reasonReference managingOrganization",
		"participant: role member onBehalfOf period",
	},
	"Claim": {
		"status type subType use patient billablePeriod created enterer insurer provider priority fundsReserve",
		"prescription originalPrescription referral facility total",
		"related: claim relationship",
		"payee: type party",
		"careTeam: sequence provider responsible role qualification",
		"supportingInfo: sequence category code timingDate timingPeriod valueBoolean valueQuantity valueReference reason",
		"diagnosis: sequence diagnosisCodeableConcept diagnosisReference type onAdmission packageCode",
		"procedure: sequence type date procedureCodeableConcept procedureReference udi",
		"insurance: sequence focal coverage claimResponse",
		"accident: date type locationReference",
		"item: sequence careTeamSequence diagnosisSequence procedureSequence informationSequence revenue category",
		"item: productOrService modifier programCode servicedDate servicedPeriod locationCodeableConcept locationReference",
		"item: quantity unitPrice factor net udi bodySite subSite encounter",
		"item.detail: sequence revenue category productOrService modifier programCode quantity unitPrice factor net udi",
		"item.detail.subDetail: sequence revenue category productOrService modifier programCode quantity unitPrice factor net udi",
	},
	"ClinicalImpression": {
		"status statusReason code subject encounter effectiveDateTime effectivePeriod date assessor previous problem",
		"prognosisCodeableConcept prognosisReference supportingInfo",
		"investigation: code item",
		"finding: itemCodeableConcept itemReference",
	},
	"Communication": {
		"instantiatesCanonical basedOn partOf inResponseTo status statusReason category priority medium subject topic",
		"about encounter sent received recipient sender reasonCode reasonReference",
		"payload: contentReference",
	},
	"Composition": {
		"status type category subject encounter date author confidentiality custodian",
		"attester: mode time party",
		"relatesTo: code targetReference",
		"event: code period detail",
		// A section's title and narrative are free text; its nested sections
		// are kept as sections.
		"section: code author focus mode orderedBy entry emptyReason section",
	},
	"Condition": {
		"clinicalStatus verificationStatus category severity code bodySite subject encounter",
		"onsetDateTime onsetAge onsetPeriod abatementDateTime abatementAge abatementPeriod recordedDate recorder asserter",
		"stage: summary assessment type",
		"evidence: code detail",
	},
	"Consent": {
		"status scope category patient dateTime performer organization sourceReference policyRule",
		"verification: verified verifiedWith verificationDate",
		"provision: type period action securityLabel purpose class code dataPeriod provision",
		"provision.actor: role reference",
		"provision.data: meaning reference",
	},
	"Coverage": {
		// Not subscriberId, dependent, class.value, network: plan member
		// numbers (Safe Harbor's health plan beneficiary numbers).
		"status type policyHolder subscriber beneficiary relationship period payor order subrogation contract",
		"class: type",
		"costToBeneficiary: type valueQuantity valueMoney",
		"costToBeneficiary.exception: type period",
	},
	"DetectedIssue": {
		"status code severity patient identifiedDateTime identifiedPeriod author implicated",
		"evidence: code detail",
		"mitigation: action date author",
	},
	"Device": {
		// Not udiCarrier, distinctIdentifier, serialNumber, lotNumber,
		// modelNumber, partNumber, deviceName, manufacturer: device
		// identifiers and serial numbers, and free text.
		"definition status statusReason manufactureDate expirationDate type patient owner location safety parent",
		"specialization: systemType",
		"version: type",
		"property: type valueQuantity valueCode",
	},
	"DeviceRequest": {
		"instantiatesCanonical basedOn priorRequest status intent priority codeReference codeCodeableConcept",
		"subject encounter occurrenceDateTime occurrencePeriod occurrenceTiming authoredOn requester performerType performer",
		"reasonCode reasonReference insurance supportingInfo relevantHistory",
		"parameter: code valueCodeableConcept valueQuantity valueRange valueBoolean",
	},
	"DiagnosticReport": {
		"basedOn status category code subject encounter effectiveDateTime effectivePeriod issued performer",
		"resultsInterpreter specimen result imagingStudy conclusionCode",
		"media: link",
	},
	"DocumentReference": {
		"status docStatus type category subject date author authenticator custodian securityLabel",
		"relatesTo: code target",
		"content: format",
		"context: encounter event period facilityType practiceSetting sourcePatientInfo related",
	},
	"Encounter": {
		"status class type serviceType priority subject episodeOfCare basedOn appointment period length",
		"reasonCode reasonReference account serviceProvider partOf",
		"statusHistory: status period",
		"classHistory: class period",
		"participant: type period individual",
		"diagnosis: condition use rank",
		"hospitalization: origin admitSource reAdmission dietPreference specialCourtesy specialArrangement destination dischargeDisposition",
		"location: location status physicalType period",
	},
	"EpisodeOfCare": {
		"status type patient managingOrganization period referralRequest careManager team account",
		"statusHistory: status period",
		"diagnosis: condition role rank",
	},
	"ExplanationOfBenefit": {
		"status type subType use patient billablePeriod created enterer insurer provider priority",
		"fundsReserveRequested fundsReserve prescription originalPrescription referral facility claim claimResponse",
		"outcome preAuthRefPeriod precedence formCode benefitPeriod",
		"related: claim relationship",
		"payee: type party",
		"careTeam: sequence provider responsible role qualification",
		"supportingInfo: sequence category code timingDate timingPeriod valueBoolean valueQuantity valueReference reason",
		"diagnosis: sequence diagnosisCodeableConcept diagnosisReference type onAdmission packageCode",
		"procedure: sequence type date procedureCodeableConcept procedureReference udi",
		"insurance: focal coverage",
		"accident: date type locationReference",
		"item: sequence careTeamSequence diagnosisSequence procedureSequence informationSequence revenue category",
		"item: productOrService modifier programCode servicedDate servicedPeriod locationCodeableConcept locationReference",
		"item: quantity unitPrice factor net udi bodySite subSite encounter noteNumber",
		"item.adjudication: category reason amount value",
		"item.detail: sequence revenue category productOrService modifier programCode quantity unitPrice factor net udi noteNumber",
		"item.detail.adjudication: category reason amount value",
		"item.detail.subDetail: sequence revenue category productOrService modifier programCode quantity unitPrice factor net udi noteNumber",
		"item.detail.subDetail.adjudication: category reason amount value",
		"addItem: itemSequence detailSequence subDetailSequence provider productOrService modifier programCode",
		"addItem: servicedDate servicedPeriod locationCodeableConcept locationReference quantity unitPrice factor net bodySite subSite noteNumber",
		"addItem.adjudication: category reason amount value",
		"addItem.detail: productOrService modifier quantity unitPrice factor net noteNumber",
		"addItem.detail.adjudication: category reason amount value",
		"addItem.detail.subDetail: productOrService modifier quantity unitPrice factor net noteNumber",
		"addItem.detail.subDetail.adjudication: category reason amount value",
		"adjudication: category reason amount value",
		"total: category amount",
		"payment: type adjustment adjustmentReason date amount",
		"benefitBalance: category excluded network unit term",
		"benefitBalance.financial: type allowedUnsignedInt allowedMoney usedUnsignedInt usedMoney",
	},
	"FamilyMemberHistory": {
		// Not name, born[x], deceasedDate: a relative's name and dates.
		"instantiatesCanonical status dataAbsentReason patient date relationship sex ageAge estimatedAge",
		"deceasedBoolean deceasedAge reasonCode reasonReference",
		"condition: code outcome contributedToDeath onsetAge onsetPeriod",
	},
	"Flag": {
		"status category code subject period encounter author",
	},
	"Goal": {
		"lifecycleStatus achievementStatus category priority description subject startDate startCodeableConcept",
		"statusDate expressedBy addresses outcomeCode outcomeReference",
		"target: measure detailQuantity detailRange detailCodeableConcept detailBoolean detailInteger detailRatio dueDate dueDuration",
	},
	"ImagingStudy": {
		// Not the study's, series' and instances' DICOM UIDs: unique identifiers.
		"status modality subject encounter started basedOn referrer interpreter numberOfSeries numberOfInstances",
		"procedureReference procedureCode location reasonCode reasonReference",
		"series: number modality numberOfInstances bodySite laterality specimen started",
		"series.performer: function actor",
		"series.instance: sopClass number",
	},
	"Immunization": {
		// Not lotNumber.
		"status statusReason vaccineCode patient encounter occurrenceDateTime recorded primarySource reportOrigin",
		"location manufacturer expirationDate site route doseQuantity reasonCode reasonReference",
		"isSubpotent subpotentReason programEligibility fundingSource",
		"performer: function actor",
		"reaction: date detail reported",
		"protocolApplied: authority targetDisease doseNumberPositiveInt seriesDosesPositiveInt",
	},
	"ImmunizationRecommendation": {
		"patient date authority",
		"recommendation: vaccineCode targetDisease contraindicatedVaccineCode forecastStatus forecastReason",
		"recommendation: doseNumberPositiveInt seriesDosesPositiveInt supportingImmunization supportingPatientInformation",
		"recommendation.dateCriterion: code value",
	},
	"List": {
		"status mode code subject encounter date source orderedBy emptyReason",
		"entry: flag deleted date item",
	},
	"Location": {
		// Not name, alias, address, position, telecom: a patient's home
		// can be a Location.
		"status operationalStatus mode type physicalType managingOrganization partOf",
		"hoursOfOperation: daysOfWeek allDay",
	},
	"Media": {
		// Not content: the photograph or recording itself.
		"basedOn partOf status type modality view subject encounter createdDateTime createdPeriod issued operator",
		"reasonCode bodySite device height width frames duration",
	},
	"Medication": {
		"code status manufacturer form amount",
		"ingredient: itemCodeableConcept itemReference isActive strength",
		"batch: expirationDate",
	},
	"MedicationAdministration": {
		"partOf status statusReason category medicationCodeableConcept medicationReference subject context",
		"supportingInformation effectiveDateTime effectivePeriod reasonCode reasonReference request device eventHistory",
		"performer: function actor",
		"dosage: site route method dose rateRatio rateQuantity",
	},
	"MedicationDispense": {
		"partOf status statusReasonCodeableConcept statusReasonReference category medicationCodeableConcept medicationReference",
		"subject context supportingInformation location authorizingPrescription type quantity daysSupply",
		"whenPrepared whenHandedOver destination receiver dosageInstruction detectedIssue eventHistory",
		"performer: function actor",
		"substitution: wasSubstituted type reason responsibleParty",
	},
	"MedicationRequest": {
		"status statusReason intent category priority doNotPerform reportedBoolean reportedReference",
		"medicationCodeableConcept medicationReference subject encounter supportingInformation authoredOn requester",
		"performer performerType recorder reasonCode reasonReference instantiatesCanonical basedOn courseOfTherapyType",
		"insurance dosageInstruction priorPrescription detectedIssue eventHistory",
		"dispenseRequest: dispenseInterval validityPeriod numberOfRepeatsAllowed quantity expectedSupplyDuration performer",
		"dispenseRequest.initialFill: quantity duration",
		"substitution: allowedBoolean allowedCodeableConcept reason",
	},
	"MedicationStatement": {
		"basedOn partOf status statusReason category medicationCodeableConcept medicationReference subject context",
		"effectiveDateTime effectivePeriod dateAsserted informationSource derivedFrom reasonCode reasonReference dosage",
	},
	"NutritionOrder": {
		"instantiatesCanonical status intent patient encounter dateTime orderer allergyIntolerance",
		"foodPreferenceModifier excludeFoodModifier",
		"oralDiet: type schedule fluidConsistencyType",
		"oralDiet.nutrient: modifier amount",
		"oralDiet.texture: modifier foodType",
		"supplement: type schedule quantity",
		"enteralFormula: baseFormulaType additiveType caloricDensity routeofAdministration maxVolumeToDeliver",
		"enteralFormula.administration: schedule quantity rateQuantity rateRatio",
	},
	"Observation": {
		"basedOn partOf status category code subject focus encounter",
		"effectiveDateTime effectivePeriod effectiveTiming effectiveInstant issued performer",
		"valueQuantity valueCodeableConcept valueBoolean valueInteger valueRange valueRatio valueDateTime valuePeriod",
		"dataAbsentReason interpretation bodySite method specimen device hasMember derivedFrom",
		"referenceRange: low high type appliesTo",
		"component: code valueQuantity valueCodeableConcept valueBoolean valueInteger valueRange valueRatio valueDateTime valuePeriod",
		"component: dataAbsentReason interpretation",
		"component.referenceRange: low high type appliesTo",
	},
	"Organization": {
		// Not name, alias, address, telecom, contact: where the patient is
		// treated narrows where the patient lives.
		"active type partOf",
	},
	"Patient": {
		// birthDate: a year, or nothing at 90 and over (groupOldAge).
		// Not multipleBirthInteger (birth order), link (other records of
		// the same person).
		"active gender birthDate deceasedBoolean deceasedDateTime maritalStatus multipleBirthBoolean",
		"generalPractitioner managingOrganization",
		"communication: language preferred",
	},
	"Practitioner": {
		"active gender communication",
		"qualification: code period issuer",
	},
	"PractitionerRole": {
		"active period practitioner organization code specialty location healthcareService",
		"availableTime: daysOfWeek allDay",
		"notAvailable: during",
	},
	"Procedure": {
		"instantiatesCanonical basedOn partOf status statusReason category code subject encounter",
		"performedDateTime performedPeriod performedAge recorder asserter location reasonCode reasonReference",
		"bodySite outcome report complication complicationDetail followUp usedReference usedCode",
		"performer: function actor onBehalfOf",
		"focalDevice: action manipulated",
	},
	"Provenance": {
		"target occurredPeriod occurredDateTime recorded location reason activity",
		"agent: type role who onBehalfOf",
		"entity: role what",
		"entity.agent: type role who onBehalfOf",
	},
	"QuestionnaireResponse": {
		// Not linkId (a string): answers keep their order and nesting only.
		"basedOn partOf questionnaire status subject encounter authored author source",
		"item: answer item",
		"item.answer: valueBoolean valueDecimal valueInteger valueDate valueDateTime valueCoding valueQuantity valueReference item",
	},
	"RiskAssessment": {
		"basedOn parent status method code subject encounter occurrenceDateTime occurrencePeriod condition performer",
		"reasonCode reasonReference basis",
		"prediction: outcome probabilityDecimal probabilityRange qualitativeRisk relativeRisk whenPeriod whenRange",
	},
	"ServiceRequest": {
		"instantiatesCanonical basedOn replaces status intent category priority doNotPerform code orderDetail",
		"quantityQuantity quantityRatio quantityRange subject encounter occurrenceDateTime occurrencePeriod occurrenceTiming",
		"asNeededBoolean asNeededCodeableConcept authoredOn requester performerType performer locationCode locationReference",
		"reasonCode reasonReference insurance supportingInfo specimen bodySite relevantHistory",
	},
	"Specimen": {
		"status type subject receivedTime parent request condition",
		"collection: collector collectedDateTime collectedPeriod duration quantity method bodySite",
		"collection: fastingStatusCodeableConcept fastingStatusDuration",
		"processing: procedure additive timeDateTime timePeriod",
		"container: type capacity specimenQuantity additiveCodeableConcept additiveReference",
	},
	"SupplyDelivery": {
		"basedOn partOf status patient type occurrenceDateTime occurrencePeriod occurrenceTiming supplier destination receiver",
		"suppliedItem: quantity itemCodeableConcept itemReference",
	},
	"Appointment": {
		"status cancelationReason serviceCategory serviceType specialty appointmentType reasonCode reasonReference",
		"priority supportingInformation start end minutesDuration slot created basedOn requestedPeriod",
		"participant: type actor required status period",
	},
	"AdverseEvent": {
		"actuality category event subject encounter date detected recordedDate resultingCondition location",
		"seriousness severity outcome recorder contributor subjectMedicalHistory referenceDocument study",
		"suspectEntity: instance",
		"suspectEntity.causality: assessment author method",
	},
	"BodyStructure": {
		"active morphology location locationQualifier patient",
	},
	"VisionPrescription": {
		"status created patient encounter dateWritten prescriber",
		"lensSpecification: product eye sphere cylinder axis add power backCurve diameter duration",
		"lensSpecification.prism: amount base",
	},
}

// researchDataTypes: what survives of each data type a kept element may
// have. Strings and URIs survive only here, as the vocabulary parts of a
// type (a code system's URL, a code's display, a unit), never as a
// resource's own element. A type missing here is never kept.
var researchDataTypes = map[string][]string{
	"Coding":          {"system version code display userSelected"},
	"CodeableConcept": {"coding"}, // not text: free text
	"Quantity":        {"value comparator unit system code"},
	"SimpleQuantity":  {"value unit system code"},
	"Age":             {"value comparator unit system code"},
	"Duration":        {"value comparator unit system code"},
	"Count":           {"value comparator unit system code"},
	"Distance":        {"value comparator unit system code"},
	"Money":           {"value currency"},
	"Range":           {"low high"},
	"Ratio":           {"numerator denominator"},
	"Period":          {"start end"},
	"Timing": {
		"event code",
		// Not timeOfDay: a time of day.
		"repeat: boundsDuration boundsRange boundsPeriod count countMax duration durationMax durationUnit",
		"repeat: frequency frequencyMax period periodMax periodUnit dayOfWeek when offset",
	},
	"Dosage": {
		// Not text, patientInstruction: free text.
		"sequence additionalInstruction timing asNeededBoolean asNeededCodeableConcept site route method",
		"maxDosePerPeriod maxDosePerAdministration maxDosePerLifetime",
		"doseAndRate: type doseRange doseQuantity rateRatio rateRange rateQuantity",
	},
	// Not lastUpdated (an exact time), versionId, source (a system's URL),
	// tag (anything).
	"Meta": {"profile security"},
}

// researchExtensions: the extensions kept at a resource's root, per type, by
// url. Every other extension, at any depth, is dropped.
var researchExtensions = map[string]map[string]extension{
	"Patient": {
		// Race and ethnicity are not Safe Harbor identifiers and research
		// needs them; only the OMB categories (five races, two
		// ethnicities), not the detailed codes (hundreds, some rare) nor
		// the free text.
		"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race":      {sub: map[string]extension{"ombCategory": {value: "valueCoding"}}},
		"http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity": {sub: map[string]extension{"ombCategory": {value: "valueCoding"}}},
		"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex":  {value: "valueCode"},
	},
}

// extension is what survives of one extension besides its url.
type extension struct {
	value string               // the kept value[x], by JSON name ("valueCoding"); "" for none
	sub   map[string]extension // the kept nested extensions, by url
}

// ageOver89URL is the extension a research copy of a Patient carries
// instead of a birth year when the patient may be 90 or older: valueAge
// "≥ 90 years" (Safe Harbor groups every age over 89 into one category).
// birthDate is then absent, with the data-absent-reason "masked" on it.
const ageOver89URL = "https://github.com/medrec-zk/medrec/fhir/StructureDefinition/age-90-or-over"

const (
	dataAbsentReasonURL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
	ucum                = "http://unitsofmeasure.org"
	// oldAge is the first age Safe Harbor groups: "90 or older".
	oldAge = 90
)

// ageGroup is an Age (or a duration in years) of 90 or more, as research
// output says it.
func ageGroup() map[string]any {
	return map[string]any{"value": json.Number(strconv.Itoa(oldAge)), "comparator": ">=", "unit": "years", "system": ucum, "code": "a"}
}

// redactedMeta labels a resource whose meaning could not be kept (a
// modifier extension at its root) with the HL7 security label REDACTED.
func redactedMeta() map[string]any {
	return map[string]any{"security": []any{map[string]any{
		"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED", "display": "redacted",
	}}}
}

var dateRE = regexp.MustCompile(`^\d{4}(-\d{2}(-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?)?)?$`)

// relativeRef is a FHIR relative reference Type/id, optionally with a version.
var relativeRef = regexp.MustCompile(`^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(/_history/[A-Za-z0-9\-.]{1,64})?$`)

// deidentify returns what a research reader gets of a stored resource:
// the elements the allowlist of its type keeps, dates cut to the year, old
// ages grouped, and ids replaced by pseudonym's. now is the clock of the age
// rule. A resource of a type without an allowlist is an error, never passed
// through.
func deidentify(raw []byte, pseudonym func(id string) string, now time.Time) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var in map[string]any
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("de-identify: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("de-identify: data after the resource")
	}
	d := deidentifier{pseudonym: pseudonym, now: now}
	out, err := d.resource(in)
	if err != nil {
		return nil, fmt.Errorf("de-identify: %w", err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // FHIR JSON, not HTML: "≥" comparators stay readable
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("de-identify: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// deidentifier rewrites one resource for one reader.
type deidentifier struct {
	pseudonym func(id string) string
	now       time.Time
}

func (d deidentifier) resource(in map[string]any) (map[string]any, error) {
	typ, _ := in["resourceType"].(string)
	rule := research.resources[typ]
	if rule == nil {
		return nil, fmt.Errorf("no research allowlist for resource type %q", typ)
	}
	out := map[string]any{"resourceType": typ}
	if id, ok := in["id"].(string); ok {
		out["id"] = d.pseudonym(id)
	}
	if modified(in) || in["implicitRules"] != nil {
		out["meta"] = redactedMeta()
		return out, nil
	}
	for k, v := range d.object(rule.node, in) {
		out[k] = v
	}
	if ext := d.extensions(rule.ext, in["extension"]); ext != nil {
		out["extension"] = ext
	}
	if typ == "Patient" {
		d.groupOldAge(in, out)
	}
	return out, nil
}

// modified reports whether an element carries a modifier extension.
func modified(m map[string]any) bool {
	x, ok := m["modifierExtension"]
	if a, isArray := x.([]any); isArray {
		return len(a) > 0
	}
	return ok
}

// object returns what survives of an element, or nil if nothing does.
func (d deidentifier) object(n *node, m map[string]any) map[string]any {
	if modified(m) {
		return nil
	}
	out := map[string]any{}
	for k, v := range m {
		if c := n.fields[k]; c != nil {
			if x := d.value(c, v); x != nil {
				out[k] = x
			}
		}
	}
	if n.quantity {
		out = groupAge(n, out)
	}
	if len(out) == 0 { // FHIR JSON has no empty objects
		return nil
	}
	return out
}

// value applies n to an element's value, one by one if it repeats.
func (d deidentifier) value(n *node, v any) any {
	a, ok := v.([]any)
	if !ok {
		return d.one(n, v)
	}
	var out []any
	for _, x := range a {
		if y := d.one(n, x); y != nil {
			out = append(out, y)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func (d deidentifier) one(n *node, v any) any {
	switch n.kind {
	case kindObject:
		if m, ok := v.(map[string]any); ok {
			if out := d.object(n, m); out != nil {
				return out
			}
		}
	case kindKeep:
		switch v.(type) {
		case string, bool, json.Number:
			return v
		}
	case kindYear:
		if s, ok := v.(string); ok && dateRE.MatchString(s) {
			return s[:4]
		}
	case kindReference:
		if m, ok := v.(map[string]any); ok {
			if out := d.reference(m); out != nil {
				return out
			}
		}
	case kindContained:
		// A contained resource of a type without an allowlist is dropped.
		if m, ok := v.(map[string]any); ok {
			if out, err := d.resource(m); err == nil {
				return out
			}
		}
	}
	return nil
}

// reference keeps a Reference's target, pseudonymised, and its type; never
// its display (often a name) or identifier.
func (d deidentifier) reference(m map[string]any) map[string]any {
	out := map[string]any{}
	if s, ok := m["reference"].(string); ok {
		if r, ok := d.target(s); ok {
			out["reference"] = r
		}
	}
	if t, ok := m["type"].(string); ok && resourceTypeNames[t] {
		out["type"] = t
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// target pseudonymises a reference's target: relative (its version
// dropped), urn:uuid (how imported bundles refer) or contained. Anything
// else — an absolute URL, a conditional reference — names a server or
// holds search terms, and is not kept.
func (d deidentifier) target(ref string) (string, bool) {
	switch m := relativeRef.FindStringSubmatch(ref); {
	case ref == "#":
		return ref, true
	case strings.HasPrefix(ref, "#"):
		return "#" + d.pseudonym(ref[1:]), true
	case strings.HasPrefix(ref, "urn:uuid:"):
		return "urn:uuid:" + d.pseudonym(strings.TrimPrefix(ref, "urn:uuid:")), true
	case m != nil && resourceTypeNames[m[1]]:
		return m[1] + "/" + d.pseudonym(m[2]), true
	}
	return "", false
}

// extensions keeps the extensions rules names, with what they keep.
func (d deidentifier) extensions(rules map[string]*extNode, v any) []any {
	a, _ := v.([]any)
	var out []any
	for _, x := range a {
		m, _ := x.(map[string]any)
		url, _ := m["url"].(string)
		r := rules[url]
		if r == nil {
			continue
		}
		e := map[string]any{}
		if r.value != "" {
			if val := d.value(r.node, m[r.value]); val != nil {
				e[r.value] = val
			}
		}
		if sub := d.extensions(r.sub, m["extension"]); sub != nil {
			e["extension"] = sub
		}
		if len(e) == 0 {
			continue
		}
		e["url"] = url
		out = append(out, e)
	}
	return out
}

// groupOldAge withholds the birth year of a patient who may be 90 or older
// by the gateway's clock: this year minus the birth year is 90 or more (so
// some 89-year-olds too — the year alone cannot tell them apart). Safe
// Harbor allows no date element, the year included, that says an age over
// 89; the output says "90 or older" instead (ageOver89URL).
func (d deidentifier) groupOldAge(in, out map[string]any) {
	b, _ := in["birthDate"].(string)
	if !dateRE.MatchString(b) {
		return
	}
	year, _ := strconv.Atoi(b[:4])
	if d.now.Year()-year < oldAge {
		return
	}
	delete(out, "birthDate")
	out["_birthDate"] = map[string]any{"extension": []any{map[string]any{"url": dataAbsentReasonURL, "valueCode": "masked"}}}
	ext, _ := out["extension"].([]any)
	out["extension"] = append(ext, map[string]any{"url": ageOver89URL, "valueAge": ageGroup()})
}

// ageUnits converts an Age's UCUM time units to years.
var ageUnits = map[string]float64{"a": 1, "mo": 12, "wk": 52.1775, "d": 365.25, "h": 365.25 * 24, "min": 365.25 * 24 * 60}

// groupAge rewrites a quantity that says an age of 90 years or more as
// "≥ 90 years": every Age (in whatever time unit; an unknown unit is read as
// years, which can only group too much), and any other quantity in UCUM
// years (an observed age, an age range's bound). A SimpleQuantity cannot
// carry the comparator, and an upper bound ("< 95 years") says little: both
// are dropped instead.
func groupAge(n *node, q map[string]any) map[string]any {
	num, ok := q["value"].(json.Number)
	if !ok {
		return q
	}
	v, err := num.Float64()
	if err != nil {
		return q
	}
	code, _ := q["code"].(string)
	per, known := ageUnits[code]
	switch {
	case n.age && !known:
		per = 1
	case n.age:
	case code == "a":
		if sys, ok := q["system"].(string); ok && sys != ucum {
			return q
		}
	default:
		return q
	}
	if v/per < oldAge {
		return q
	}
	if c, _ := q["comparator"].(string); n.simple || c == "<" || c == "<=" {
		return nil
	}
	return ageGroup()
}

// --- the compiled allowlist ------------------------------------------------------

// kind says what survives of a JSON value.
type kind uint8

const (
	kindObject    kind = iota // an element with children: those in fields
	kindKeep                  // a boolean, number, code, or a data type's vocabulary string: as it is
	kindYear                  // a date, dateTime or instant: its year
	kindReference             // a Reference: its target, pseudonymised, and its type
	kindContained             // a contained resource: by its own type's allowlist
)

// node is what survives of one element.
type node struct {
	kind   kind
	fields map[string]*node // kindObject: the kept children, by JSON name
	// Quantity-like data types, whose ages of 90 and over are grouped.
	quantity bool
	age      bool // an Age, in any time unit
	simple   bool // a SimpleQuantity, which has no comparator
}

// extNode is a compiled extension.
type extNode struct {
	value string
	node  *node
	sub   map[string]*extNode
}

// resourceRule is a resource type's compiled allowlist.
type resourceRule struct {
	node *node               // the kept elements, meta and contained included
	ext  map[string]*extNode // the kept extensions, by url
}

// allowlist is the compiled research allowlist of every grantable type.
type allowlist struct {
	resources map[string]*resourceRule
}

// research is the allowlist every research read goes through.
var research = mustCompileResearch()

func mustCompileResearch() allowlist {
	c := newCompiler()
	a := allowlist{resources: map[string]*resourceRule{}}
	for typ, groups := range researchResources {
		r, err := c.resource(typ, groups, researchExtensions[typ])
		if err != nil {
			panic(fmt.Sprintf("dbmanager: research allowlist: %v", err))
		}
		a.resources[typ] = r
	}
	for typ := range researchExtensions {
		if a.resources[typ] == nil {
			panic(fmt.Sprintf("dbmanager: research extensions for %s, which has no allowlist", typ))
		}
	}
	return a
}

// compileResource compiles one type's allowlist (for tests of the compiler).
func compileResource(typ string, groups []string, ext map[string]extension) (*resourceRule, error) {
	return newCompiler().resource(typ, groups, ext)
}

// The FHIR R4 definitions: every resource type (the choices of
// ContainedResource) and the Extension data type.
var (
	resourceTypes = func() map[string]protoreflect.MessageDescriptor {
		fs := (&bcr.ContainedResource{}).ProtoReflect().Descriptor().Fields()
		m := make(map[string]protoreflect.MessageDescriptor, fs.Len())
		for i := 0; i < fs.Len(); i++ {
			if md := fs.Get(i).Message(); md != nil {
				m[string(md.Name())] = md
			}
		}
		return m
	}()
	resourceTypeNames = func() map[string]bool {
		m := make(map[string]bool, len(resourceTypes))
		for t := range resourceTypes {
			m[t] = true
		}
		return m
	}()
	extensionType = resourceTypes["Patient"].Fields().ByName("extension").Message()
)

const fhirPackage = "google.fhir.r4.core"

// Primitive types, by how they may be kept. Everywhere: values and codes
// (a code's value set bounds it), and canonicals (the URL of a published
// definition — a questionnaire, a profile — never the patient's). Dates:
// as their year. Inside data types only: strings and URIs, their
// vocabulary (Coding.display, Coding.system, Quantity.unit). Never:
// markdown, id, oid, uuid, url, base64Binary, time, xhtml.
var (
	keptPrimitives     = map[string]kind{"Boolean": kindKeep, "Integer": kindKeep, "PositiveInt": kindKeep, "UnsignedInt": kindKeep, "Decimal": kindKeep, "Code": kindKeep, "Canonical": kindKeep, "Date": kindYear, "DateTime": kindYear, "Instant": kindYear}
	typeOnlyPrimitives = map[string]kind{"String": kindKeep, "Uri": kindKeep}
	neverPrimitives    = map[string]bool{"Markdown": true, "Id": true, "Oid": true, "Uuid": true, "Url": true, "Base64Binary": true, "Time": true, "Xhtml": true}
	quantityTypes      = map[string]bool{"Quantity": true, "SimpleQuantity": true, "Age": true, "Duration": true, "Count": true, "Distance": true}
	referenceType      = protoreflect.FullName(fhirPackage + ".Reference")
	referenceNode      = &node{kind: kindReference}
	containedNode      = &node{kind: kindContained}
	errNeverKept       = errors.New("never kept")
	errNotAnElement    = errors.New("not an element of FHIR R4")
	errListChildren    = errors.New("a backbone element: list the children to keep")
	errWholeDataType   = errors.New("a data type is kept as researchDataTypes says, not element by element")
)

// compiler compiles allowlists; data types once each.
type compiler struct {
	types map[protoreflect.FullName]*node
}

func newCompiler() *compiler { return &compiler{types: map[protoreflect.FullName]*node{}} }

func (c *compiler) resource(typ string, groups []string, exts map[string]extension) (*resourceRule, error) {
	md := resourceTypes[typ]
	if md == nil {
		return nil, fmt.Errorf("%s: %w", typ, errNotAnElement)
	}
	t, err := parseGroups(groups)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", typ, err)
	}
	n, err := c.object(md, md.FullName(), t, false, nil)
	if err != nil {
		return nil, fmt.Errorf("%s%w", typ, err)
	}
	meta, err := c.dataType(md.Fields().ByName("meta").Message())
	if err != nil {
		return nil, fmt.Errorf("%s.meta: %w", typ, err)
	}
	n.fields["meta"], n.fields["contained"] = meta, containedNode
	r := &resourceRule{node: n, ext: map[string]*extNode{}}
	for url, e := range exts {
		x, err := c.extension(e)
		if err != nil {
			return nil, fmt.Errorf("%s extension %s: %w", typ, url, err)
		}
		r.ext[url] = x
	}
	return r, nil
}

// object compiles the children t of an element of type md. root is the
// resource or data type whose backbone elements md's nested types are;
// inType says whether md is (inside) a data type; scope holds the
// enclosing backbone elements, which a recursive element (a section's
// sections) reuses.
func (c *compiler) object(md protoreflect.MessageDescriptor, root protoreflect.FullName, t trie, inType bool, scope map[protoreflect.FullName]*node) (*node, error) {
	n := &node{kind: kindObject, fields: map[string]*node{}}
	inner := map[protoreflect.FullName]*node{md.FullName(): n}
	for k, v := range scope {
		inner[k] = v
	}
	for name, sub := range t {
		el, err := elementType(md, name)
		if err != nil {
			return nil, fmt.Errorf(".%s: %w", name, err)
		}
		child, err := c.element(el, root, sub, inType, inner)
		if err != nil {
			return nil, fmt.Errorf(".%s%w", name, err)
		}
		n.fields[name] = child
	}
	return n, nil
}

func (c *compiler) element(el protoreflect.MessageDescriptor, root protoreflect.FullName, sub trie, inType bool, scope map[protoreflect.FullName]*node) (*node, error) {
	name := string(el.Name())
	_, kept := keptPrimitives[name]
	_, typeOnly := typeOnlyPrimitives[name]
	isPrimitive := el.Parent().FullName() == fhirPackage && (kept || typeOnly || neverPrimitives[name])
	// A code bound to a value set (a status, a currency) is a type of its
	// own, nested in its element's type, around an enum or a string.
	value := el.Fields().ByName("value")
	isCode := el.Parent().FullName() != fhirPackage && value != nil && value.Message() == nil
	switch {
	case el.FullName() == referenceType:
		if len(sub) > 0 {
			return nil, fmt.Errorf(": %w", errWholeDataType)
		}
		return referenceNode, nil
	case isCode:
		if len(sub) > 0 {
			return nil, fmt.Errorf(": %s has no children", name)
		}
		return &node{kind: kindKeep}, nil
	case isPrimitive:
		k, ok := keptPrimitives[name]
		if !ok && inType {
			k, ok = typeOnlyPrimitives[name]
		}
		if !ok {
			return nil, fmt.Errorf(": %s (free text, an identifier, a URL or a time): %w", name, errNeverKept)
		}
		if len(sub) > 0 {
			return nil, fmt.Errorf(": %s has no children", name)
		}
		return &node{kind: k}, nil
	case strings.HasPrefix(string(el.FullName()), string(root)+"."):
		if len(sub) == 0 {
			if n := scope[el.FullName()]; n != nil {
				return n, nil
			}
			return nil, fmt.Errorf(": %w", errListChildren)
		}
		return c.object(el, root, sub, inType, scope)
	default:
		if len(sub) > 0 {
			return nil, fmt.Errorf(": %w", errWholeDataType)
		}
		n, err := c.dataType(el)
		if err != nil {
			return nil, fmt.Errorf(": %w", err)
		}
		return n, nil
	}
}

// dataType compiles a data type by researchDataTypes.
func (c *compiler) dataType(md protoreflect.MessageDescriptor) (*node, error) {
	if n := c.types[md.FullName()]; n != nil {
		return n, nil
	}
	name := string(md.Name())
	groups, ok := researchDataTypes[name]
	if !ok || md.Parent().FullName() != fhirPackage {
		return nil, fmt.Errorf("data type %s: %w", name, errNeverKept)
	}
	t, err := parseGroups(groups)
	if err != nil {
		return nil, fmt.Errorf("data type %s: %w", name, err)
	}
	n, err := c.object(md, md.FullName(), t, true, nil)
	if err != nil {
		return nil, fmt.Errorf("data type %s%w", name, err)
	}
	n.quantity, n.age, n.simple = quantityTypes[name], name == "Age", name == "SimpleQuantity"
	c.types[md.FullName()] = n
	return n, nil
}

func (c *compiler) extension(e extension) (*extNode, error) {
	x := &extNode{value: e.value, sub: map[string]*extNode{}}
	if e.value != "" {
		el, err := elementType(extensionType, e.value)
		if err != nil || !strings.HasPrefix(e.value, "value") {
			return nil, fmt.Errorf("%s: %w", e.value, errNotAnElement)
		}
		if x.node, err = c.element(el, extensionType.FullName(), nil, false, nil); err != nil {
			return nil, fmt.Errorf("%s%w", e.value, err)
		}
	}
	for url, s := range e.sub {
		sx, err := c.extension(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
		x.sub[url] = sx
	}
	return x, nil
}

// elementType returns the type of md's element of JSON name name: a plain
// element, or one type of a choice element (valueQuantity: value[x] as a
// Quantity).
func elementType(md protoreflect.MessageDescriptor, name string) (protoreflect.MessageDescriptor, error) {
	fs := md.Fields()
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		if f.JSONName() == name && f.Message() != nil && !isChoice(f.Message()) {
			return f.Message(), nil
		}
	}
	for i := 0; i < fs.Len(); i++ {
		f := fs.Get(i)
		rest, ok := strings.CutPrefix(name, f.JSONName())
		if !ok || f.Message() == nil || !isChoice(f.Message()) || rest == "" {
			continue
		}
		vs := f.Message().Fields()
		for j := 0; j < vs.Len(); j++ {
			v := vs.Get(j)
			if j := v.JSONName(); strings.ToUpper(j[:1])+j[1:] == rest && v.Message() != nil {
				return v.Message(), nil
			}
		}
	}
	return nil, errNotAnElement
}

// isChoice reports whether md is google/fhir's message for a choice
// element: all its fields are the choices of one oneof.
func isChoice(md protoreflect.MessageDescriptor) bool {
	return md.Oneofs().Len() == 1 && md.Oneofs().Get(0).Fields().Len() == md.Fields().Len()
}

// trie holds an allowlist's paths: each name's kept children.
type trie map[string]trie

// parseGroups reads groups of names ("a b c", or "prefix.path: a b c").
func parseGroups(groups []string) (trie, error) {
	t := trie{}
	for _, g := range groups {
		var prefix []string
		if p, names, ok := strings.Cut(g, ":"); ok {
			prefix, g = strings.Split(strings.TrimSpace(p), "."), names
		}
		for _, name := range strings.Fields(g) {
			at := t
			path := append(append([]string(nil), prefix...), strings.Split(name, ".")...)
			for i, p := range path {
				if p == "" {
					return nil, fmt.Errorf("empty name in %q", g)
				}
				next, ok := at[p]
				if i == len(path)-1 && ok && len(next) == 0 {
					return nil, fmt.Errorf("%s listed twice", strings.Join(path, "."))
				}
				if !ok {
					next = trie{}
					at[p] = next
				}
				at = next
			}
		}
	}
	return t, nil
}
