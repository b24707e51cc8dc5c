package wallet

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/medrec-zk/medrec/chainview"
)

// TestNewRecordInWords reads what a person reads out of the shared FHIR
// vectors in testdata/records: each file's "expect" is the Record fields
// it must give.
func TestNewRecordInWords(t *testing.T) {
	files, err := filepath.Glob("testdata/records/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v struct {
				Resource json.RawMessage   `json:"resource"`
				Expect   map[string]string `json:"expect"`
			}
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatal(err)
			}
			r := NewRecord(chainview.Provider{ID: 1, Name: "Provider 1"}, v.Resource)
			got := map[string]string{"summary": r.Summary, "display": r.Display, "code": r.Code, "value": r.Value, "unit": r.Unit,
				"range": r.Range, "status": r.Status, "performer": r.Performer, "category": r.Category, "date": r.Date.Format("2006-01-02")}
			for k, want := range v.Expect {
				if got[k] != want {
					t.Errorf("%s = %q, want %q", k, got[k], want)
				}
			}
		})
	}
}

func TestTypeWords(t *testing.T) {
	for _, c := range []struct {
		n    int
		typ  string
		want string
	}{{12, "Observation", "12 observations"}, {1, "Observation", "1 observation"}, {2, "AllergyIntolerance", "2 allergies"}, {3, "QuestionnaireResponse", "3 questionnaire responses"}} {
		if got := Count(c.n, c.typ); got != c.want {
			t.Errorf("Count(%d, %s) = %q, want %q", c.n, c.typ, got, c.want)
		}
	}
}
