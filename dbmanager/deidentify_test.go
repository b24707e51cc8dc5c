package dbmanager

// Tests of what a research reader gets of a resource (deidentify.go): the
// specific leaks of the old blocklist, the age rule, the Synthea sweep that
// looks for every identifying string of each patient in every research
// output of that patient's bundle, and the allowlist compiler's guards.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/dbmanager/internal/syntheatest"
)

// deidNow is the clock of the research tests: the age rule depends on it.
var deidNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// researchPresenter returns what a research reader gets of a stored
// resource, through the gateway's present (the function every read,
// search and $everything answer goes through), and the reader's pseudonyms.
func researchPresenter(now time.Time) (present func([]byte) ([]byte, error), pseudonym func(string) string) {
	g := &Gateway{cfg: Config{PseudonymKey: []byte("research-test-key"), Now: func() time.Time { return now }}}
	r := &reader{id: "0x00000000000000000000000000000000000000aa", purpose: access.Research}
	return func(raw []byte) ([]byte, error) { return g.present(r, raw) }, g.pseudonyms(r)
}

// fullDate is a date more precise than a year anywhere in a text: YYYY-MM
// not inside a longer run of letters and digits (so the hex groups of a
// UUID, "…-1234-56ab-…", do not count).
var fullDate = regexp.MustCompile(`(^|[^0-9A-Za-z])\d{4}-\d{2}($|[^0-9A-Za-z])`)

// TestDeidentifyLeaks: each element the blocklist let through, and a few
// the allowlist must keep for research to stay useful.
func TestDeidentifyLeaks(t *testing.T) {
	present, _ := researchPresenter(deidNow)
	tests := []struct {
		name     string
		in       string
		never    []string // substrings the output must not contain
		kept     []string // substrings it must contain
		wantNull bool     // the whole resource reduced to its redaction stub
	}{
		{"mother's maiden name",
			`{"resourceType":"Patient","id":"p","gender":"female","extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName","valueString":"Faith Tremblay"}]}`,
			[]string{"Tremblay", "mothersMaidenName"}, []string{`"gender":"female"`}, false},
		{"birthplace",
			`{"resourceType":"Patient","id":"p","extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthPlace","valueAddress":{"city":"Dedham","state":"Massachusetts","country":"US"}}],"birthDate":"1988-03-16"}`,
			[]string{"Dedham", "Massachusetts", "birthPlace", "1988-03"}, []string{`"birthDate":"1988"`}, false},
		{"race and ethnicity categories kept, their free text not",
			`{"resourceType":"Patient","id":"p","extension":[{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-race","extension":[{"url":"ombCategory","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"2106-3","display":"White"}},{"url":"detailed","valueCoding":{"system":"urn:oid:2.16.840.1.113883.6.238","code":"1010-8","display":"Apache"}},{"url":"text","valueString":"White, lives on Elm St"}]},{"url":"http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex","valueCode":"F"}]}`,
			[]string{"Elm St", "1010-8", `"text"`}, []string{`"code":"2106-3"`, `"valueCode":"F"`, "us-core-birthsex"}, false},
		{"name, telecom, address, identifier, photo, contact, link",
			`{"resourceType":"Patient","id":"p","name":[{"family":"Hoeger","given":["Buster"]}],"telecom":[{"system":"phone","value":"555-866-2259"}],"address":[{"line":["535 Howe Neck"],"city":"Amherst","postalCode":"01002"}],"identifier":[{"system":"http://hl7.org/fhir/sid/us-ssn","value":"999-59-2277"}],"photo":[{"contentType":"image/png","data":"iVBORw0KGgo="}],"contact":[{"name":{"family":"Kreiger"}}],"link":[{"other":{"reference":"Patient/other"},"type":"seealso"}],"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M"}],"text":"Married to Jane Hoeger"}}`,
			[]string{"Hoeger", "Buster", "555-866", "Howe", "Amherst", "01002", "999-59", "iVBOR", "Kreiger", "Patient/other", "Married"}, []string{`"code":"M"`}, false},
		{"valueString",
			`{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"63586-2"}],"text":"Buster's living situation"},"subject":{"reference":"Patient/p"},"valueString":"lives alone at 12 Elm St"}`,
			[]string{"Elm St", "valueString", "Buster"}, []string{`"code":"63586-2"`, `"status":"final"`}, false},
		{"note, comment and CodeableConcept text",
			`{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}],"text":"HTN, see Dr Smith"},"note":[{"authorString":"Dr Smith","time":"2020-05-01T10:00:00Z","text":"patient works at Acme Corp"}]}`,
			[]string{"Smith", "Acme", "note", "2020-05"}, []string{`"code":"38341003"`}, false},
		{"description and conclusion",
			`{"resourceType":"DiagnosticReport","id":"d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"24323-8"}]},"subject":{"reference":"Patient/p"},"conclusion":"Mr Hoeger is fine","conclusionCode":[{"coding":[{"system":"http://snomed.info/sct","code":"281900007"}]}],"presentedForm":[{"contentType":"application/pdf","url":"https://records.example/hoeger.pdf","data":"JVBERi0x"}]}`,
			[]string{"Hoeger", "conclusion\"", "records.example", "JVBERi0x", "presentedForm"}, []string{`"code":"281900007"`}, false},
		{"care plan description, appointment comment",
			`{"resourceType":"CarePlan","id":"cp","status":"active","intent":"plan","subject":{"reference":"Patient/p"},"description":"walk with neighbour Joe","title":"Joe's plan","category":[{"coding":[{"system":"http://snomed.info/sct","code":"734163000"}]}],"activity":[{"detail":{"status":"scheduled","description":"call Joe","code":{"coding":[{"system":"http://snomed.info/sct","code":"229065009"}]}}}]}`,
			[]string{"Joe"}, []string{`"code":"229065009"`, `"code":"734163000"`}, false},
		{"attachment data and url",
			`{"resourceType":"DocumentReference","id":"dr","status":"current","subject":{"reference":"Patient/p"},"type":{"coding":[{"system":"http://loinc.org","code":"34133-9"}]},"content":[{"attachment":{"contentType":"text/plain","data":"QnVzdGVyIEhvZWdlcg==","url":"https://records.example/doc/42","title":"Buster's summary"},"format":{"system":"http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem","code":"urn:ihe:pcc:xphr:2007"}}],"description":"summary of Buster"}`,
			[]string{"QnVzdGVy", "records.example", "Buster", "attachment"}, []string{`"code":"34133-9"`, `urn:ihe:pcc:xphr:2007`}, false},
		{"media content",
			`{"resourceType":"Media","id":"m","status":"completed","subject":{"reference":"Patient/p"},"content":{"contentType":"image/jpeg","url":"https://records.example/face.jpg","data":"/9j/4AAQ"},"deviceName":"Camera of Dr Who"}`,
			[]string{"face.jpg", "/9j/4AAQ", "Dr Who"}, []string{`"status":"completed"`}, false},
		{"device UDI, serial and lot numbers",
			`{"resourceType":"Device","id":"dev","status":"active","patient":{"reference":"Patient/p"},"udiCarrier":[{"deviceIdentifier":"09504000059118","carrierHRF":"(01)09504000059118(17)141120(10)7654321D(21)10987654d321"}],"serialNumber":"10987654d321","lotNumber":"7654321D","distinctIdentifier":"DI-0042","manufacturer":"Acme Devices","modelNumber":"PM-42","type":{"coding":[{"system":"http://snomed.info/sct","code":"72506001"}]}}`,
			[]string{"09504000059118", "10987654d321", "7654321D", "DI-0042", "PM-42", "udiCarrier"}, []string{`"code":"72506001"`}, false},
		{"location position and address",
			`{"resourceType":"Location","id":"l","status":"active","name":"Hoeger residence","address":{"line":["535 Howe Neck"],"city":"Amherst"},"position":{"latitude":42.37528,"longitude":-72.517884},"type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-RoleCode","code":"PTRES"}]}]}`,
			[]string{"42.37528", "-72.517884", "position", "Hoeger", "Howe", "Amherst"}, []string{`"code":"PTRES"`}, false},
		{"coverage identifiers and subscriber id",
			`{"resourceType":"Coverage","id":"cov","status":"active","identifier":[{"system":"http://payer.example/member","value":"MBR-123456"}],"subscriberId":"SUB-987654","dependent":"03","beneficiary":{"reference":"Patient/p"},"payor":[{"reference":"Organization/o","display":"Acme Health"}],"class":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/coverage-class","code":"group"}]},"value":"GRP-555","name":"Acme employees"}],"network":"Acme PPO","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"HIP"}]}}`,
			[]string{"MBR-123456", "SUB-987654", "GRP-555", "Acme", `"dependent"`}, []string{`"code":"HIP"`, `"code":"group"`}, false},
		{"claim and explanation of benefit identifiers",
			`{"resourceType":"ExplanationOfBenefit","id":"eob","status":"active","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type","code":"institutional"}]},"use":"claim","patient":{"reference":"Patient/p"},"created":"1994-09-02T14:10:57+00:00","insurer":{"display":"Acme Health"},"provider":{"reference":"Practitioner/dr"},"outcome":"complete","identifier":[{"system":"https://bluebutton.cms.gov/resources/variables/clm_id","value":"f5596efd-4bd9"}],"insurance":[{"focal":true,"coverage":{"reference":"#coverage","display":"Acme Health"},"preAuthRef":["PA-778899"]}],"disposition":"paid to Buster","payment":{"amount":{"value":12.5,"currency":"USD"},"identifier":{"value":"CHK-0042"}}}`,
			[]string{"f5596efd", "Acme", "PA-778899", "Buster", "CHK-0042", "09-02", "14:10"}, []string{`"created":"1994"`, `"currency":"USD"`, `"value":12.5`, `"reference":"#`}, false},
		{"unknown extensions everywhere, and primitive extensions",
			`{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4","extension":[{"url":"http://x.example/who","valueString":"Buster"}]}]},"extension":[{"url":"http://x.example/home","valueAddress":{"city":"Amherst"}}],"_status":{"extension":[{"url":"http://x.example/by","valueString":"Hoeger"}]},"valueQuantity":{"value":72,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`,
			[]string{"Buster", "Amherst", "Hoeger", "x.example", "extension"}, []string{`"code":"8867-4"`, `"value":72`}, false},
		{"an element under an unknown modifier extension is dropped",
			`{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},"component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":120}},{"modifierExtension":[{"url":"http://x.example/not-measured","valueBoolean":true}],"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":80}}]}`,
			[]string{"8462-4", "not-measured", `"value":80`}, []string{"8480-6", `"value":120`}, false},
		{"a resource under an unknown modifier extension is reduced to a redacted stub",
			`{"resourceType":"Procedure","id":"pr","status":"completed","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"73761001"}]},"modifierExtension":[{"url":"http://x.example/not-really","valueBoolean":true}]}`,
			[]string{"73761001", "not-really", "completed"}, []string{`"code":"REDACTED"`, `"resourceType":"Procedure"`}, true},
		{"narrative, meta times and tags, reference displays and identifiers",
			`{"resourceType":"Encounter","id":"e","meta":{"lastUpdated":"2023-01-02T03:04:05Z","versionId":"7","source":"http://ehr.example/hoeger","tag":[{"system":"http://x.example","code":"hoeger-family"}],"security":[{"system":"http://terminology.hl7.org/CodeSystem/v3-Confidentiality","code":"R"}]},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Buster Hoeger</div>"},"status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":"Patient/p","display":"Buster Hoeger","identifier":{"value":"MRN-1"}},"participant":[{"individual":{"reference":"Practitioner/dr","display":"Dr Smith"}}],"period":{"start":"2023-01-02T03:04:05Z","end":"2023-01-02T04:00:00Z"}}`,
			[]string{"Buster", "Hoeger", "Smith", "MRN-1", "03:04", "2023-01", "ehr.example", "lastUpdated", "versionId"}, []string{`"code":"AMB"`, `"code":"R"`, `"start":"2023"`}, false},
		{"contained resources by their own allowlist",
			`{"resourceType":"MedicationRequest","id":"mr","status":"active","intent":"order","subject":{"reference":"Patient/p"},"contained":[{"resourceType":"Medication","id":"med","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"314076"}]},"batch":{"lotNumber":"LOT-31"}},{"resourceType":"Patient","id":"other","name":[{"family":"Kreiger"}]}],"medicationReference":{"reference":"#med"},"dosageInstruction":[{"text":"take with Buster's lunch","timing":{"event":["2020-05-01T12:00:00Z"],"repeat":{"frequency":1,"period":1,"periodUnit":"d","timeOfDay":["12:30:00"]}},"doseAndRate":[{"doseQuantity":{"value":10,"unit":"mg"}}]}]}`,
			[]string{"LOT-31", "Kreiger", "Buster", "12:30", "2020-05", `"#med"`}, []string{`"code":"314076"`, `"periodUnit":"d"`, `"value":10`, `"event":["2020"]`}, false},
		{"references: relative, versioned, urn:uuid, contained, absolute",
			`{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/mrn-0042"},"encounter":{"reference":"urn:uuid:1234"},"performer":[{"reference":"Practitioner/x/_history/2"},{"reference":"https://other.example/fhir/Patient/mrn-0042"}],"specimen":{"reference":"#s"}}`,
			[]string{"mrn-0042", "1234", "other.example", "_history", `"#s"`}, []string{`"reference":"Patient/`, `"reference":"urn:uuid:`, `"reference":"Practitioner/`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := present([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("not JSON: %s", out)
			}
			for _, s := range tt.never {
				if bytes.Contains(out, []byte(s)) {
					t.Errorf("%q kept: %s", s, out)
				}
			}
			for _, s := range tt.kept {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("%q lost: %s", s, out)
				}
			}
			if fullDate.Match(out) {
				t.Errorf("a full date: %s", out)
			}
			if stub := len(m) == 3 && m["meta"] != nil; stub != tt.wantNull {
				t.Errorf("redaction stub %v, want %v: %s", stub, tt.wantNull, out)
			}
		})
	}
}

// TestDeidentifyAge: Safe Harbor groups ages of 90 and over. A patient who
// may be 90 by the gateway's clock gets no birth year at all — a masked
// birthDate and the age-90-or-over extension instead — and every Age of 90
// years or more (in any unit) reads "≥ 90 years".
func TestDeidentifyAge(t *testing.T) {
	present, _ := researchPresenter(deidNow) // 2026
	patient := func(birth string) string {
		return `{"resourceType":"Patient","id":"p","gender":"male","birthDate":"` + birth + `","deceasedDateTime":"2025-02-03"}`
	}
	ninetyPlus := []string{`"_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/data-absent-reason","valueCode":"masked"}]}`,
		`{"url":"` + ageOver89URL + `","valueAge":{"code":"a","comparator":">=","system":"http://unitsofmeasure.org","unit":"years","value":90}}`}
	tests := []struct {
		name  string
		in    string
		never []string
		kept  []string
	}{
		{"born 1937: 88 or 89, the year stays", patient("1937-12-31"), []string{ageOver89URL, "_birthDate"}, []string{`"birthDate":"1937"`, `"deceasedDateTime":"2025"`}},
		{"born 1936: 89 or 90, no year", patient("1936-12-31"), []string{"1936"}, append([]string{`"deceasedDateTime":"2025"`}, ninetyPlus...)},
		{"born 1920, year only", patient("1920"), []string{"1920"}, ninetyPlus},
		{"condition onset at 93 years", `{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}]},"onsetAge":{"value":93,"unit":"years","system":"http://unitsofmeasure.org","code":"a"}}`,
			[]string{"93"}, []string{`"onsetAge":{"code":"a","comparator":">=","system":"http://unitsofmeasure.org","unit":"years","value":90}`}},
		{"condition onset at 89 years stays", `{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}]},"onsetAge":{"value":89,"unit":"years","system":"http://unitsofmeasure.org","code":"a"}}`,
			[]string{"comparator"}, []string{`"value":89`}},
		{"procedure at 1,100 months", `{"resourceType":"Procedure","id":"pr","status":"completed","subject":{"reference":"Patient/p"},"code":{"coding":[{"system":"http://snomed.info/sct","code":"73761001"}]},"performedAge":{"value":1100,"unit":"months","system":"http://unitsofmeasure.org","code":"mo"}}`,
			[]string{"1100"}, []string{`"performedAge":{"code":"a","comparator":">=","system":"http://unitsofmeasure.org","unit":"years","value":90}`}},
		{"family member aged 97", `{"resourceType":"FamilyMemberHistory","id":"f","status":"completed","patient":{"reference":"Patient/p"},"relationship":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-RoleCode","code":"MTH"}]},"name":"Faith Tremblay","bornDate":"1929-01-01","ageAge":{"value":97,"unit":"a","system":"http://unitsofmeasure.org","code":"a"}}`,
			[]string{"97", "1929", "Tremblay"}, []string{`"code":"MTH"`, `"comparator":">="`}},
		{"an observed age of 95 years", `{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"30525-0"}]},"subject":{"reference":"Patient/p"},"valueQuantity":{"value":95,"unit":"a","system":"http://unitsofmeasure.org","code":"a"}}`,
			[]string{"95"}, []string{`"valueQuantity":{"code":"a","comparator":">=","system":"http://unitsofmeasure.org","unit":"years","value":90}`}},
		{"a reference range for ages over 90 does not say the patient's age", `{"resourceType":"Observation","id":"o","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"2160-0"}]},"subject":{"reference":"Patient/p"},"valueQuantity":{"value":1.1,"unit":"mg/dL"},"referenceRange":[{"low":{"value":0.7},"high":{"value":1.3},"age":{"low":{"value":90,"unit":"a","system":"http://unitsofmeasure.org","code":"a"}}}]}`,
			[]string{`"age"`}, []string{`"value":1.3`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := present([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(out) {
				t.Fatalf("not JSON: %s", out)
			}
			for _, s := range tt.never {
				if bytes.Contains(out, []byte(s)) {
					t.Errorf("%q kept: %s", s, out)
				}
			}
			for _, s := range tt.kept {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("%q missing: %s", s, out)
				}
			}
		})
	}
}

// mainElement is, per resource type in the Synthea bundles, the element
// that makes a research copy worth having; the sweep checks it survives
// with every code it had.
var mainElement = map[string]string{
	"AllergyIntolerance": "code", "CarePlan": "category", "Claim": "type", "Condition": "code",
	"DiagnosticReport": "code", "Encounter": "type", "ExplanationOfBenefit": "type",
	"Immunization": "vaccineCode", "MedicationRequest": "medicationCodeableConcept", "Observation": "code",
	"Organization": "type", "Patient": "gender", "Practitioner": "gender", "Procedure": "code",
}

// identifyingParts are the elements whose every string (and number) the
// sweep looks for in research output: the patient's name, address, telecom,
// identifiers and extensions, as the issue lists them.
var identifyingParts = []string{"name", "address", "telecom", "identifier", "extension"}

// vocabularyKeys hold codes and URLs, not facts about one person: the
// system and use of a phone number, an extension's url, a race category's
// code and display. The sweep does not look for their values (and for no
// other string equal to one of them, such as the race extension's text
// "White", which is also the kept category's display): they are shared by
// millions and some are kept on purpose (race and ethnicity categories,
// birth sex).
var vocabularyKeys = map[string]bool{"url": true, "system": true, "code": true, "display": true, "use": true, "valueCode": true, "version": true}

// minNeedle and minNumber: strings shorter than minNeedle and numbers
// shorter than minNumber characters are not looked for. One- and
// two-character values ("US", "M", a state code) occur by chance in any
// output ("USD", a UCUM unit), and so do short numbers (Synthea's
// utilisation counts in Organization and Practitioner extensions) in the
// hex of any pseudonym; they identify nobody. Coordinates (42.37528) are
// longer.
const (
	minNeedle = 3
	minNumber = 6
)

// collectIdentifying returns every string and number under the
// identifying parts of a resource, less vocabulary and short strings.
func collectIdentifying(res map[string]any) []string {
	vocab := map[string]bool{}
	var values []string
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, x := range t {
				walk(k, x)
			}
		case []any:
			for _, x := range t {
				walk(key, x)
			}
		case string:
			if vocabularyKeys[key] {
				vocab[t] = true
			} else {
				values = append(values, t)
			}
		case json.Number:
			if len(t.String()) >= minNumber {
				values = append(values, t.String())
			}
		}
	}
	for _, part := range identifyingParts {
		walk(part, res[part])
	}
	var out []string
	for _, s := range values {
		if len(s) >= minNeedle && !vocab[s] {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// codesUnder returns the system|code pairs of every Coding under v, or v
// itself if it is a plain string (Patient.gender).
func codesUnder(v any) []string {
	if s, ok := v.(string); ok {
		return []string{s}
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if c, ok := t["code"].(string); ok {
				s, _ := t["system"].(string)
				out = append(out, s+"|"+c)
			}
			for _, x := range t {
				walk(x)
			}
		case []any:
			for _, x := range t {
				walk(x)
			}
		}
	}
	walk(v)
	sort.Strings(out)
	return out
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("not a JSON object: %v: %.200s", err, b)
	}
	return m
}

// TestDeidentifySynthea: over every resource of every Synthea bundle, no
// research output contains any string of its bundle's patient's name,
// address, telecom, identifiers or extensions (nor of its own), nor the
// provider's id of any resource of the bundle, nor a date finer than a
// year; each output is JSON that keeps the resource type, a pseudonymised
// id and its main coded element.
func TestDeidentifySynthea(t *testing.T) {
	patients, directory := syntheatest.Bundles(t)
	present, pseudonym := researchPresenter(deidNow)
	seen := map[string]int{}
	for _, path := range append(patients, directory...) {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".json"), func(t *testing.T) {
			var bundle struct {
				Entry []struct {
					Resource json.RawMessage `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(syntheatest.Read(t, path), &bundle); err != nil {
				t.Fatal(err)
			}
			var needles, ids []string
			for _, e := range bundle.Entry {
				m := decodeJSON(t, e.Resource)
				ids = append(ids, m["id"].(string))
				if m["resourceType"] == "Patient" {
					needles = append(needles, collectIdentifying(m)...)
				}
			}
			if len(needles) == 0 && strings.Contains(filepath.Base(path), "_") {
				t.Fatalf("no identifying strings found for the patient of %s", path)
			}
			for _, e := range bundle.Entry {
				in := decodeJSON(t, e.Resource)
				typ, id := in["resourceType"].(string), in["id"].(string)
				name := typ + "/" + id
				out, err := present(e.Resource)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				m := decodeJSON(t, out)
				if m["resourceType"] != typ || m["id"] != pseudonym(id) {
					t.Errorf("%s: resourceType %v, id %v (want %s)", name, m["resourceType"], m["id"], pseudonym(id))
				}
				for _, s := range append(append([]string(nil), needles...), collectIdentifying(in)...) {
					if bytes.Contains(out, []byte(s)) {
						t.Errorf("%s: %q in research output: %s", name, s, out)
					}
				}
				for _, s := range ids {
					if bytes.Contains(out, []byte(s)) {
						t.Errorf("%s: the provider's id %q in research output", name, s)
					}
				}
				if d := fullDate.Find(out); d != nil {
					t.Errorf("%s: a full date %q in research output: %s", name, d, out)
				}
				el, ok := mainElement[typ]
				if !ok {
					t.Fatalf("%s: no main element named for the type", name)
				}
				if want, got := codesUnder(in[el]), codesUnder(m[el]); len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
					t.Errorf("%s: %s had %v, research output %v", name, el, want, got)
				}
				seen[typ]++
			}
		})
	}
	t.Logf("research outputs checked, by type: %v", seen)
}

// TestDeidentifyTables: every grantable type has an allowlist, every
// allowlist compiles against the FHIR R4 definitions, and the compiler
// refuses what must never be kept.
func TestDeidentifyTables(t *testing.T) {
	for _, typ := range access.ResourceTypes() {
		if research.resources[typ] == nil {
			t.Errorf("%s: no research allowlist", typ)
		}
	}
	if len(research.resources) != len(access.ResourceTypes()) {
		t.Errorf("%d allowlists for %d grantable types", len(research.resources), len(access.ResourceTypes()))
	}
	refused := []struct{ name, typ, group string }{
		{"free text", "Observation", "valueString"},
		{"an identifier", "Patient", "identifier"},
		{"a name", "Patient", "name"},
		{"an address", "Location", "address"},
		{"a telecom", "Organization", "telecom"},
		{"an annotation", "Observation", "note"},
		{"an attachment", "Media", "content"},
		{"a narrative", "Observation", "text"},
		{"a serial number", "Device", "serialNumber"},
		{"a URL", "Device", "url"},
		{"a time of day", "Observation", "valueTime"},
		{"a backbone element without its kept children", "Observation", "component"},
		{"a string inside a backbone element", "Coverage", "class: value"},
		{"children of a data type", "Observation", "code.text"},
		{"an element R4 does not have", "Observation", "valueFoo"},
		{"a misspelled backbone child", "Observation", "component: vallueQuantity"},
		{"extensions named as an element", "Observation", "extension"},
		{"a type R4 does not have", "Spaceship", "status"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := compileResource(tt.typ, []string{tt.group}, nil); err == nil {
				t.Fatalf("%s %q compiled", tt.typ, tt.group)
			}
		})
	}
	if _, err := compileResource("Observation", []string{"status code valueQuantity", "component: code valueQuantity"}, nil); err != nil {
		t.Fatalf("a good allowlist refused: %v", err)
	}
	if _, err := compileResource("Patient", nil, map[string]extension{"http://x.example/maiden": {value: "valueString"}}); err == nil {
		t.Fatal("an extension keeping a string compiled")
	}
}

// TestDeidentify: ids, references and dates; pseudonyms per reader.
func TestDeidentify(t *testing.T) {
	pseudo := func(id string) string { return "P(" + id + ")" }
	tests := []struct{ name, in, want string }{
		{"ids and references", `{"resourceType":"Observation","id":"o1","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/mrn-0042","display":"Jane Doe"},"effectiveDateTime":"2020-05-01T10:00:00Z"}`,
			`{"code":{"coding":[{"code":"8867-4","system":"http://loinc.org"}]},"effectiveDateTime":"2020","id":"P(o1)","resourceType":"Observation","status":"final","subject":{"reference":"Patient/P(mrn-0042)"}}`},
		{"the patient", `{"resourceType":"Patient","id":"mrn-0042","name":[{"family":"Doe"}],"birthDate":"1961-04-02","identifier":[{"value":"123-45-6789"}],"gender":"female"}`,
			`{"birthDate":"1961","gender":"female","id":"P(mrn-0042)","resourceType":"Patient"}`},
		{"versioned, urn:uuid, contained and absolute references", `{"resourceType":"Encounter","id":"e","status":"finished","class":{"code":"AMB"},"subject":{"reference":"Patient/x/_history/2"},"episodeOfCare":[{"reference":"urn:uuid:1234"},{"reference":"https://other.example/fhir/EpisodeOfCare/9","type":"EpisodeOfCare"}],"serviceProvider":{"reference":"#org"},"partOf":{"reference":"https://other.example/fhir/Encounter/7"},"contained":[{"resourceType":"Organization","id":"org","active":true}]}`,
			`{"class":{"code":"AMB"},"contained":[{"active":true,"id":"P(org)","resourceType":"Organization"}],"episodeOfCare":[{"reference":"urn:uuid:P(1234)"},{"type":"EpisodeOfCare"}],"id":"P(e)","resourceType":"Encounter","serviceProvider":{"reference":"#P(org)"},"status":"finished","subject":{"reference":"Patient/P(x)"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := deidentify([]byte(tt.in), pseudo, deidNow)
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %s (%v)\nwant %s", got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{"id":"x"}`, `{"resourceType":"Spaceship","id":"x"}`, `{"resourceType":"Observation","id":"x"}{}`} {
		if got, err := deidentify([]byte(bad), pseudo, deidNow); err == nil {
			t.Errorf("%q de-identified to %s", bad, got)
		}
	}
	// Pseudonyms: stable for a reader, different between readers, UUID-shaped.
	g := &Gateway{cfg: Config{PseudonymKey: []byte("key")}}
	a, b := g.pseudonyms(&reader{id: "0xaaa"}), g.pseudonyms(&reader{id: "0xbbb"})
	if a("p1") != a("p1") || a("p1") == b("p1") || a("p1") == a("p2") || len(a("p1")) != 36 || a("p1")[14] != '8' {
		t.Fatalf("pseudonyms %s %s %s", a("p1"), b("p1"), a("p2"))
	}
}

// BenchmarkDeidentify: what de-identifying costs a research read, per
// resource, over the Synthea bundles' resources.
func BenchmarkDeidentify(b *testing.B) {
	patients, _ := syntheatest.Bundles(b)
	var raws [][]byte
	size := 0
	for _, path := range patients {
		var bundle struct {
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(syntheatest.Read(b, path), &bundle); err != nil {
			b.Fatal(err)
		}
		for _, e := range bundle.Entry {
			raws = append(raws, e.Resource)
			size += len(e.Resource)
		}
	}
	present, _ := researchPresenter(deidNow)
	b.SetBytes(int64(size / len(raws)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := present(raws[i%len(raws)]); err != nil {
			b.Fatal(err)
		}
	}
}
