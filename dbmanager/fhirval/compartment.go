package fhirval

// patientPaths lists, for each grantable resource type in the patient
// compartment, the element paths whose references may name the patient: the
// parameters of the FHIR R4 CompartmentDefinition "patient", restricted to
// paths of Reference elements (dotted paths walk into backbone elements and
// arrays). Types absent from the map are outside every patient compartment
// (Organization, Practitioner, PractitionerRole, Location, Medication): they
// are stored as shared resources.
var patientPaths = map[string][]string{
	"AdverseEvent":               {"subject"},
	"AllergyIntolerance":         {"patient", "recorder", "asserter"},
	"Appointment":                {"participant.actor"},
	"BodyStructure":              {"patient"},
	"CarePlan":                   {"subject", "activity.detail.performer"},
	"CareTeam":                   {"subject", "participant.member"},
	"Claim":                      {"patient", "payee.party"},
	"ClinicalImpression":         {"subject"},
	"Communication":              {"subject", "sender", "recipient"},
	"Composition":                {"subject", "author", "attester.party"},
	"Condition":                  {"subject", "asserter"},
	"Consent":                    {"patient"},
	"Coverage":                   {"policyHolder", "subscriber", "beneficiary", "payor"},
	"DetectedIssue":              {"patient"},
	"Device":                     {"patient"},
	"DeviceRequest":              {"subject", "performer"},
	"DiagnosticReport":           {"subject"},
	"DocumentReference":          {"subject", "author"},
	"Encounter":                  {"subject"},
	"EpisodeOfCare":              {"patient"},
	"ExplanationOfBenefit":       {"patient", "payee.party"},
	"FamilyMemberHistory":        {"patient"},
	"Flag":                       {"subject"},
	"Goal":                       {"subject"},
	"ImagingStudy":               {"subject"},
	"Immunization":               {"patient"},
	"ImmunizationRecommendation": {"patient"},
	"List":                       {"subject", "source"},
	"Media":                      {"subject"},
	"MedicationAdministration":   {"subject", "performer.actor"},
	"MedicationDispense":         {"subject", "receiver"},
	"MedicationRequest":          {"subject"},
	"MedicationStatement":        {"subject"},
	"NutritionOrder":             {"patient"},
	"Observation":                {"subject", "performer"},
	"Patient":                    {"link.other"},
	"Procedure":                  {"subject", "performer.actor"},
	"Provenance":                 {"target"},
	"QuestionnaireResponse":      {"subject", "author"},
	"RiskAssessment":             {"subject"},
	"ServiceRequest":             {"subject", "performer"},
	"Specimen":                   {"subject"},
	"SupplyDelivery":             {"patient"},
	"VisionPrescription":         {"patient"},
}

// InPatientCompartment reports whether resources of type typ belong to a
// patient; the others are shared (provider directory) resources.
func InPatientCompartment(typ string) bool {
	_, ok := patientPaths[typ]
	return ok
}
