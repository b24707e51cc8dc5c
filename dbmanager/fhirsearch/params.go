package fhirsearch

import (
	"slices"
	"sort"
	"strings"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Param is a search parameter of one resource type.
type Param struct {
	Name string
	Kind store.IndexKind
	// Paths are the JSON elements the values come from: dotted paths walk
	// into objects and every element of an array; a choice element is
	// listed once per type (effectiveDateTime, effectivePeriod, …).
	Paths []string
	// Targets are the types a reference parameter may refer to.
	Targets []string
	// Research: a research reader may use it. Tokens are searched as they
	// are, dates by year only, references only to follow them (_include,
	// _revinclude) — and patient and subject by the reader's pseudonym of
	// the patient. Only elements that de-identification keeps, and keeps
	// as they are (dates as their years), may be marked; a test checks it
	// on every Synthea resource.
	Research bool

	index string // see Index; "" for the parameter's own name
}

// Index names the parameter whose stored values p is matched against: p
// itself, or — for patient, where it reads the same element as subject —
// subject: such values are stored once, not once per name.
func (p Param) Index() string {
	if p.index != "" {
		return p.index
	}
	return p.Name
}

// Patient reads the same element as subject wherever a type has both:
// its values are subject's.
func init() {
	for typ, ps := range params {
		subject, ok := Lookup(typ, "subject")
		for i, p := range ps {
			if ok && p.Name == "patient" && slices.Equal(p.Paths, subject.Paths) {
				ps[i].index = "subject"
			}
		}
	}
}

// Documentation says what a parameter matches, for the CapabilityStatement.
func (p Param) Documentation() string {
	return strings.Join(p.Paths, " | ")
}

// The shapes of the table's rows.
func token(name string, research bool, paths ...string) Param {
	return Param{Name: name, Kind: store.Token, Paths: paths, Research: research}
}

func date(name string, paths ...string) Param {
	return Param{Name: name, Kind: store.Date, Paths: paths, Research: true}
}

func ref(name string, targets []string, paths ...string) Param {
	return Param{Name: name, Kind: store.Reference, Paths: paths, Targets: targets, Research: true}
}

var (
	patientOnly   = []string{"Patient"}
	subjectTypes  = []string{"Patient", "Group", "Device", "Location"}
	encounterOnly = []string{"Encounter"}
	actors        = []string{"Practitioner", "PractitionerRole", "Organization", "Patient", "RelatedPerson", "CareTeam", "Device"}
	people        = []string{"Practitioner", "PractitionerRole", "RelatedPerson"}
	orgOnly       = []string{"Organization"}
)

// params lists, per resource type, the search parameters this gateway
// supports besides _id and _lastUpdated: their FHIR R4 names and
// expressions, restricted to the elements listed. A type absent here is
// searched by _id and _lastUpdated alone.
var params = map[string][]Param{
	"AllergyIntolerance": {
		ref("patient", patientOnly, "patient"),
		token("clinical-status", true, "clinicalStatus"),
		token("category", true, "category"),
		token("code", true, "code"),
		date("date", "recordedDate"),
	},
	"CarePlan": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		date("date", "period"),
		ref("encounter", encounterOnly, "encounter"),
	},
	"CareTeam": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		date("date", "period"),
		ref("encounter", encounterOnly, "encounter"),
	},
	"Claim": {
		ref("patient", patientOnly, "patient"),
		token("status", true, "status"),
		date("created", "created"),
		ref("provider", actors, "provider"),
		ref("encounter", encounterOnly, "item.encounter"),
	},
	"Condition": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("clinical-status", true, "clinicalStatus"),
		token("category", true, "category"),
		token("code", true, "code"),
		date("onset-date", "onsetDateTime", "onsetPeriod"),
		date("recorded-date", "recordedDate"),
		ref("encounter", encounterOnly, "encounter"),
	},
	"DiagnosticReport": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		token("code", true, "code"),
		date("date", "effectiveDateTime", "effectivePeriod"),
		ref("encounter", encounterOnly, "encounter"),
		ref("result", []string{"Observation"}, "result"),
		ref("performer", actors, "performer"),
	},
	"DocumentReference": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		token("type", true, "type"),
		date("date", "date"),
		ref("encounter", encounterOnly, "context.encounter"),
	},
	"Encounter": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("class", true, "class"),
		token("type", true, "type"),
		date("date", "period"),
		ref("participant", people, "participant.individual"),
		ref("service-provider", orgOnly, "serviceProvider"),
		ref("location", []string{"Location"}, "location.location"),
	},
	"ExplanationOfBenefit": {
		ref("patient", patientOnly, "patient"),
		token("status", true, "status"),
		date("created", "created"),
		ref("provider", actors, "provider"),
		ref("claim", []string{"Claim"}, "claim"),
	},
	"Goal": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("lifecycle-status", true, "lifecycleStatus"),
		token("category", true, "category"),
	},
	"ImagingStudy": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		date("started", "started"),
		ref("encounter", encounterOnly, "encounter"),
	},
	"Immunization": {
		ref("patient", patientOnly, "patient"),
		token("status", true, "status"),
		token("vaccine-code", true, "vaccineCode"),
		date("date", "occurrenceDateTime"),
		ref("location", []string{"Location"}, "location"),
	},
	"MedicationAdministration": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("code", true, "medicationCodeableConcept"),
		date("effective-time", "effectiveDateTime", "effectivePeriod"),
		ref("medication", []string{"Medication"}, "medicationReference"),
		ref("context", []string{"Encounter", "EpisodeOfCare"}, "context"),
	},
	"MedicationRequest": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("intent", true, "intent"),
		token("category", true, "category"),
		token("code", true, "medicationCodeableConcept"),
		date("authoredon", "authoredOn"),
		ref("encounter", encounterOnly, "encounter"),
		ref("medication", []string{"Medication"}, "medicationReference"),
		ref("requester", actors, "requester"),
	},
	"MedicationStatement": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		token("code", true, "medicationCodeableConcept"),
		date("effective", "effectiveDateTime", "effectivePeriod"),
		ref("medication", []string{"Medication"}, "medicationReference"),
	},
	"Observation": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		token("code", true, "code"),
		date("date", "effectiveDateTime", "effectivePeriod", "effectiveInstant"),
		ref("encounter", encounterOnly, "encounter"),
		ref("performer", actors, "performer"),
		ref("has-member", []string{"Observation"}, "hasMember"),
	},
	"Patient": {
		ref("general-practitioner", []string{"Practitioner", "PractitionerRole", "Organization"}, "generalPractitioner"),
		ref("organization", orgOnly, "managingOrganization"),
	},
	"Procedure": {
		ref("patient", patientOnly, "subject"),
		ref("subject", subjectTypes, "subject"),
		token("status", true, "status"),
		token("category", true, "category"),
		token("code", true, "code"),
		date("date", "performedDateTime", "performedPeriod"),
		ref("encounter", encounterOnly, "encounter"),
		ref("performer", actors, "performer.actor"),
		ref("location", []string{"Location"}, "location"),
	},
}

// Params returns the search parameters of a type besides _id and
// _lastUpdated, sorted by name.
func Params(typ string) []Param {
	out := slices.Clone(params[typ])
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns a type's parameter by name.
func Lookup(typ, name string) (Param, bool) {
	for _, p := range params[typ] {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// PatientParams are the reference parameters that name the patient whose
// records a resource is: a reader searches them by its own patient only.
var PatientParams = []string{"patient", "subject"}

// IsPatientParam reports whether name is patient or subject.
func IsPatientParam(name string) bool { return slices.Contains(PatientParams, name) }

// Includes returns the references a search of typ can follow: its own
// (_include, Source = typ) and those of other types that may refer to typ
// (_revinclude, typ among the Targets), sorted.
func Includes(typ string) (include, revinclude []store.Include) {
	for _, p := range params[typ] {
		if p.Kind == store.Reference {
			include = append(include, store.Include{Source: typ, Param: p.Name, Target: p.Targets})
		}
	}
	for src, ps := range params {
		for _, p := range ps {
			if p.Kind == store.Reference && slices.Contains(p.Targets, typ) {
				revinclude = append(revinclude, store.Include{Source: src, Param: p.Name, Target: []string{typ}})
			}
		}
	}
	key := func(i store.Include) string { return i.Source + ":" + i.Param }
	sort.Slice(include, func(i, j int) bool { return key(include[i]) < key(include[j]) })
	sort.Slice(revinclude, func(i, j int) bool { return key(revinclude[i]) < key(revinclude[j]) })
	return include, revinclude
}

// Types returns the types with parameters of their own, sorted.
func Types() []string {
	out := make([]string, 0, len(params))
	for t := range params {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
