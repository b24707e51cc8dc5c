package wallet

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/medrec-zk/medrec/chainview"
)

// Record is one resource from one provider, with what a person reads of it
// picked out of the FHIR JSON (Raw, kept byte for byte as received: the
// device checks it against the provider's anchor).
type Record struct {
	Provider chainview.Provider
	Type     string
	ID       string
	Version  int64     // from the Bundle entry's latest-version link
	Date     time.Time // the clinically relevant date when the resource has one
	// Summary is one line: "Heart rate: 72 /min", "Asthma", "Alex Demo".
	Summary string
	Raw     json.RawMessage

	// Display is the coded concept in words (the code's display or text).
	Display string
	// Code is the code and its system in words ("LOINC 8867-4"); "" when
	// the resource has none.
	Code string
	// Value is the measured value exactly as the provider sent it ("6.0",
	// never re-formatted to "6"), Unit its unit.
	Value, Unit string
	// Range is the reference range in words ("60–100 /min"); RangeLow and
	// RangeHigh its numeric ends (HasLow/HasHigh say which exist).
	Range               string
	RangeLow, RangeHigh float64
	HasLow, HasHigh     bool
	Status              string // "final", "active" (a condition's clinical status), …
	Recorded            time.Time
	Performer           string // who performed or recorded it, as the resource names them
	Category            string // "vital signs", "laboratory", …
}

type coding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display"`
}

type concept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text"`
}

// words is the concept as a person reads it: its text, else the first
// display.
func (c concept) words() string {
	if c.Text != "" {
		return c.Text
	}
	for _, cd := range c.Coding {
		if cd.Display != "" {
			return cd.Display
		}
	}
	return ""
}

// systems names the code systems a person may have heard of.
var systems = map[string]string{
	"http://loinc.org":                            "LOINC",
	"http://snomed.info/sct":                      "SNOMED CT",
	"http://hl7.org/fhir/sid/cvx":                 "CVX",
	"http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
	"http://hl7.org/fhir/sid/icd-10":              "ICD-10",
	"http://hl7.org/fhir/sid/icd-10-cm":           "ICD-10-CM",
	"http://unitsofmeasure.org":                   "UCUM",
}

// codeWords is "LOINC 8867-4" for the concept's first coding with a code.
func (c concept) codeWords() string {
	for _, cd := range c.Coding {
		if cd.Code == "" {
			continue
		}
		sys := systems[cd.System]
		if sys == "" {
			sys = cd.System
		}
		return strings.TrimSpace(sys + " " + cd.Code)
	}
	return ""
}

type quantity struct {
	Value json.Number `json:"value"` // the literal, so 6.0 stays 6.0
	Unit  string      `json:"unit"`
	Code  string      `json:"code"`
}

func (q *quantity) unit() string {
	if q == nil {
		return ""
	}
	if q.Unit != "" {
		return q.Unit
	}
	return q.Code
}

type reference struct {
	Display   string `json:"display"`
	Reference string `json:"reference"`
}

func (r reference) words() string {
	if r.Display != "" {
		return r.Display
	}
	return r.Reference
}

// NewRecord reads what a person reads of a resource: type, id, date, the
// concept in words and its code, value and unit as sent, reference range,
// status, performer.
func NewRecord(p chainview.Provider, raw json.RawMessage) Record {
	var r struct {
		ResourceType       string                 `json:"resourceType"`
		ID                 string                 `json:"id"`
		Status             string                 `json:"status"`
		ClinicalStatus     *concept               `json:"clinicalStatus"`
		Category           []concept              `json:"category"`
		EffectiveDateTime  string                 `json:"effectiveDateTime"`
		EffectivePeriod    struct{ Start string } `json:"effectivePeriod"`
		Issued             string                 `json:"issued"`
		RecordedDate       string                 `json:"recordedDate"`
		OnsetDateTime      string                 `json:"onsetDateTime"`
		AuthoredOn         string                 `json:"authoredOn"`
		OccurrenceDateTime string                 `json:"occurrenceDateTime"`
		Date               string                 `json:"date"`
		BirthDate          string                 `json:"birthDate"`
		Period             struct{ Start string } `json:"period"`
		PerformedPeriod    struct{ Start string } `json:"performedPeriod"`
		PerformedDateTime  string                 `json:"performedDateTime"`
		Code               concept                `json:"code"`
		Type               []concept              `json:"type"`
		VaccineCode        concept                `json:"vaccineCode"`
		MedicationCode     concept                `json:"medicationCodeableConcept"`
		ValueQuantity      *quantity              `json:"valueQuantity"`
		ValueString        string                 `json:"valueString"`
		ValueCodeable      *concept               `json:"valueCodeableConcept"`
		ReferenceRange     []struct {
			Low  *quantity `json:"low"`
			High *quantity `json:"high"`
			Text string    `json:"text"`
		} `json:"referenceRange"`
		Performer json.RawMessage `json:"performer"`
		Recorder  *reference      `json:"recorder"`
		Asserter  *reference      `json:"asserter"`
		Requester *reference      `json:"requester"`
		Name      []struct {
			Text   string   `json:"text"`
			Family string   `json:"family"`
			Given  []string `json:"given"`
		} `json:"name"`
		Gender string `json:"gender"`
	}
	_ = json.Unmarshal(raw, &r)
	rec := Record{Provider: p, Type: r.ResourceType, ID: r.ID, Raw: raw, Status: r.Status}
	for _, s := range []string{r.EffectiveDateTime, r.EffectivePeriod.Start, r.PerformedDateTime, r.OccurrenceDateTime, r.OnsetDateTime, r.RecordedDate, r.AuthoredOn, r.Issued, r.Period.Start, r.PerformedPeriod.Start, r.Date, r.BirthDate} {
		if t, ok := parseFHIRDate(s); ok {
			rec.Date = t
			break
		}
	}
	for _, s := range []string{r.Issued, r.RecordedDate} {
		if t, ok := parseFHIRDate(s); ok {
			rec.Recorded = t
			break
		}
	}
	if r.ClinicalStatus != nil {
		if s := r.ClinicalStatus.words(); s != "" {
			rec.Status = s
		} else if len(r.ClinicalStatus.Coding) > 0 {
			rec.Status = r.ClinicalStatus.Coding[0].Code
		}
	}
	for _, c := range r.Category {
		if s := c.words(); s != "" {
			rec.Category = s
		} else if len(c.Coding) > 0 {
			rec.Category = strings.ReplaceAll(c.Coding[0].Code, "-", " ")
		}
		break
	}
	for _, c := range []concept{r.Code, r.VaccineCode, r.MedicationCode} {
		if s := c.words(); s != "" {
			rec.Display, rec.Code = s, c.codeWords()
			break
		}
		if rec.Code == "" {
			rec.Code = c.codeWords()
		}
	}
	if rec.Display == "" && len(r.Type) > 0 {
		rec.Display = r.Type[0].words()
	}
	if r.ResourceType == "Patient" && len(r.Name) > 0 {
		n := r.Name[0]
		rec.Display = n.Text
		if rec.Display == "" {
			rec.Display = strings.TrimSpace(strings.Join(append(append([]string(nil), n.Given...), n.Family), " "))
		}
	}
	rec.Summary = rec.Display
	switch {
	case r.ValueQuantity != nil && r.ValueQuantity.Value != "":
		rec.Value, rec.Unit = r.ValueQuantity.Value.String(), r.ValueQuantity.unit()
		rec.Summary += ": " + strings.TrimSpace(rec.Value+" "+rec.Unit)
	case r.ValueString != "":
		rec.Value = r.ValueString
		rec.Summary += ": " + rec.Value
	case r.ValueCodeable != nil && r.ValueCodeable.words() != "":
		rec.Value = r.ValueCodeable.words()
		rec.Summary += ": " + rec.Value
	}
	if len(r.ReferenceRange) > 0 {
		rr := r.ReferenceRange[0]
		var lo, hi string
		if rr.Low != nil {
			if v, err := strconv.ParseFloat(rr.Low.Value.String(), 64); err == nil {
				rec.RangeLow, rec.HasLow, lo = v, true, rr.Low.Value.String()
			}
		}
		if rr.High != nil {
			if v, err := strconv.ParseFloat(rr.High.Value.String(), 64); err == nil {
				rec.RangeHigh, rec.HasHigh, hi = v, true, rr.High.Value.String()
			}
		}
		unit := rec.Unit
		if u := rr.Low.unit(); u != "" {
			unit = u
		} else if u := rr.High.unit(); u != "" {
			unit = u
		}
		switch {
		case rr.Text != "":
			rec.Range = rr.Text
		case lo != "" && hi != "":
			rec.Range = strings.TrimSpace(lo + "–" + hi + " " + unit)
		case lo != "":
			rec.Range = strings.TrimSpace("at least " + lo + " " + unit)
		case hi != "":
			rec.Range = strings.TrimSpace("at most " + hi + " " + unit)
		}
	}
	rec.Performer = performer(r.Performer)
	for _, ref := range []*reference{r.Recorder, r.Asserter, r.Requester} {
		if rec.Performer == "" && ref != nil {
			rec.Performer = ref.words()
		}
	}
	return rec
}

// performer reads a resource's performer: references (Observation) or
// {actor: reference} entries (Immunization, Procedure).
func performer(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var list []struct {
		reference
		Actor *reference `json:"actor"`
	}
	if json.Unmarshal(raw, &list) != nil {
		return ""
	}
	var names []string
	for _, p := range list {
		if p.Actor != nil {
			p.reference = *p.Actor
		}
		if s := p.words(); s != "" {
			names = append(names, s)
		}
	}
	return strings.Join(names, ", ")
}

// Value returns an Observation's numeric value and unit.
func (r Record) Value64() (float64, string, bool) {
	if r.Value == "" {
		return 0, "", false
	}
	v, err := strconv.ParseFloat(r.Value, 64)
	if err != nil {
		return 0, "", false
	}
	return v, r.Unit, true
}

func parseFHIRDate(s string) (time.Time, bool) {
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02", "2006-01", "2006"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// TypeName is a resource type in words, singular and plural: "observation",
// "observations".
func TypeName(t string) (one, many string) {
	if n, ok := typeNames[t]; ok {
		return n[0], n[1]
	}
	// CamelCase → words, as a fallback for types without a name here.
	var b strings.Builder
	for i, r := range t {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	one = strings.ToLower(b.String())
	return one, one + "s"
}

var typeNames = map[string][2]string{
	"AllergyIntolerance":         {"allergy", "allergies"},
	"CarePlan":                   {"care plan", "care plans"},
	"CareTeam":                   {"care team", "care teams"},
	"Claim":                      {"insurance claim", "insurance claims"},
	"Condition":                  {"condition", "conditions"},
	"Coverage":                   {"insurance coverage", "insurance coverages"},
	"Device":                     {"medical device", "medical devices"},
	"DiagnosticReport":           {"test report", "test reports"},
	"DocumentReference":          {"document", "documents"},
	"Encounter":                  {"visit", "visits"},
	"ExplanationOfBenefit":       {"benefit statement", "benefit statements"},
	"FamilyMemberHistory":        {"family history", "family histories"},
	"Goal":                       {"health goal", "health goals"},
	"ImagingStudy":               {"imaging study", "imaging studies"},
	"Immunization":               {"immunization", "immunizations"},
	"Medication":                 {"medication", "medications"},
	"MedicationAdministration":   {"medication given", "medications given"},
	"MedicationDispense":         {"medication dispensed", "medications dispensed"},
	"MedicationRequest":          {"prescription", "prescriptions"},
	"MedicationStatement":        {"medication taken", "medications taken"},
	"Observation":                {"observation", "observations"},
	"Patient":                    {"patient details", "patient details"},
	"Practitioner":               {"practitioner", "practitioners"},
	"Procedure":                  {"procedure", "procedures"},
	"ServiceRequest":             {"referral or order", "referrals and orders"},
	"Specimen":                   {"specimen", "specimens"},
	"ImmunizationRecommendation": {"immunization recommendation", "immunization recommendations"},
}

// Count says n things of type t in words: "1 observation", "12 observations".
func Count(n int, t string) string {
	one, many := TypeName(t)
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
