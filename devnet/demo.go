package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/accounts/keystore"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/wallet"
)

// Demo accounts of `medrec run`: keystores in DIR/demo, with these dev
// passwords. The words are generated on the first run and stay in the
// keystores (encrypted); nothing here is for real patients.
const (
	DemoPatientPassword = "demo-patient"
	DemoViewerPassword  = "demo-viewer"
	demoPatientID       = "demo-patient"
)

// DemoKeystores returns the demo patient's and viewer's keystore paths.
func DemoKeystores(dir string) (patient, viewer string) {
	return filepath.Join(dir, "demo", "patient.keystore.json"), filepath.Join(dir, "demo", "viewer.keystore.json")
}

// ensureKeystore creates a keystore with fresh words unless it exists.
func ensureKeystore(path, password string) (*delegate.Keys, error) {
	ks, err := delegate.ReadTestKeystore(path, password) // the demo's: cheap cost, printed password
	if errors.Is(err, fs.ErrNotExist) {
		m, err := delegate.NewMnemonic()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := delegate.WriteKeystore(path, delegate.Keystore{Mnemonic: m}, password, keystore.LightScryptN, keystore.LightScryptP); err != nil {
			return nil, err
		}
		return delegate.FromMnemonic(m, "")
	}
	if err != nil {
		return nil, err
	}
	return ks.Keys()
}

// staffClient calls a gateway's admin API with the provider's first staff token.
type staffClient struct {
	base, token string
}

func newStaffClient(n *chain.Network, p int, gatewayURL string) (*staffClient, error) {
	raw, err := os.ReadFile(filepath.Join(n.Dir(), fmt.Sprintf("provider%d", p), "staff-tokens"))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			return &staffClient{base: strings.TrimRight(gatewayURL, "/"), token: f[1]}, nil
		}
	}
	return nil, fmt.Errorf("devnet: provider %d has no staff token", p)
}

// post returns the status and body; statuses in ok are not errors.
func (s *staffClient) post(ctx context.Context, path string, body []byte, ok ...int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", s.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode < 300 {
		return b, nil
	}
	for _, code := range ok {
		if res.StatusCode == code {
			return b, nil
		}
	}
	return nil, fmt.Errorf("devnet: %s: %d %s", path, res.StatusCode, b)
}

// demoRecords generates the demo patient's records at provider p: vitals
// every month for a year at provider 1, labs, a condition and immunizations
// at provider 2. Deterministic, so a re-run changes nothing.
func demoRecords(p int) []byte {
	var entries []string
	add := func(r string) { entries = append(entries, `{"resource":`+r+`}`) }
	ref := `"subject":{"reference":"Patient/` + demoPatientID + `"}`
	add(`{"resourceType":"Patient","id":"` + demoPatientID + `","name":[{"family":"Demo","given":["Alex"]}],"gender":"other","birthDate":"1980-06-15"}`)
	start := time.Date(2025, 1, 10, 9, 0, 0, 0, time.UTC)
	if p == 1 {
		for m := 0; m < 12; m++ {
			t := start.AddDate(0, m, 0).Format(time.RFC3339)
			add(fmt.Sprintf(`{"resourceType":"Observation","id":"hr-%d","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}],"text":"Heart rate"},%s,"effectiveDateTime":"%s","valueQuantity":{"value":%d,"unit":"/min"}}`, m, ref, t, 64+(m*7)%15))
			add(fmt.Sprintf(`{"resourceType":"Observation","id":"bw-%d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"29463-7"}],"text":"Body weight"},%s,"effectiveDateTime":"%s","valueQuantity":{"value":%.1f,"unit":"kg"}}`, m, ref, t, 82.0-float64(m)*0.4))
		}
		add(`{"resourceType":"Encounter","id":"enc-1","status":"finished","class":{"code":"AMB"},"type":[{"text":"General check-up"}],` + ref + `,"period":{"start":"2025-03-10T09:00:00Z"}}`)
	} else {
		for q := 0; q < 4; q++ {
			t := start.AddDate(0, 3*q, 5).Format(time.RFC3339)
			add(fmt.Sprintf(`{"resourceType":"Observation","id":"a1c-%d","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}],"text":"Hemoglobin A1c"},%s,"effectiveDateTime":"%s","valueQuantity":{"value":%.1f,"unit":"%%"}}`, q, ref, t, 6.4-float64(q)*0.2))
		}
		add(`{"resourceType":"Condition","id":"asthma","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"code":{"text":"Asthma"},` + ref + `,"recordedDate":"2025-02-01"}`)
		add(`{"resourceType":"Immunization","id":"flu-2025","status":"completed","vaccineCode":{"text":"Influenza vaccine"},"patient":{"reference":"Patient/` + demoPatientID + `"},"occurrenceDateTime":"2025-10-01"}`)
	}
	return []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
}

// SeedDemo sets up the demo patient (records at providers 1 and 2, enrolled,
// relationships open at both) and the demo viewer. Safe to run again.
func SeedDemo(ctx context.Context, n *chain.Network, d *contracts.Deployment, view *chainview.View, ks *prover.KeySet) error {
	patientKS, viewerKS := DemoKeystores(n.Dir())
	keys, err := ensureKeystore(patientKS, DemoPatientPassword)
	if err != nil {
		return fmt.Errorf("devnet: demo patient keystore: %w", err)
	}
	if _, err := ensureKeystore(viewerKS, DemoViewerPassword); err != nil {
		return fmt.Errorf("devnet: demo viewer keystore: %w", err)
	}
	if err := view.Sync(ctx); err != nil {
		return err
	}
	w := wallet.New(keys, view, d, prover.New(ks))
	staff := map[int]*staffClient{}
	for p := 1; p <= 2; p++ {
		prov, ok := view.Provider(uint32(p))
		if !ok {
			return fmt.Errorf("devnet: the demo needs providers 1 and 2")
		}
		if staff[p], err = newStaffClient(n, p, prov.GatewayURL); err != nil {
			return err
		}
		if _, err := staff[p].post(ctx, "/admin/patients", []byte(`{"id":"`+demoPatientID+`"}`), http.StatusConflict); err != nil {
			return err
		}
		// The records are loaded once: loading them again would change
		// nothing in them, but the desk's write would be in the patient's
		// access log at every start.
		seeded := filepath.Join(n.Dir(), "demo", fmt.Sprintf("records-provider%d.loaded", p))
		if _, err := os.Stat(seeded); err == nil {
			continue
		}
		if _, err := staff[p].post(ctx, "/admin/patients/"+demoPatientID+"/resources", demoRecords(p)); err != nil {
			return err
		}
		if err := os.WriteFile(seeded, []byte("loaded\n"), 0o600); err != nil {
			return err
		}
	}
	cm, err := keys.Commitment()
	if err != nil {
		return err
	}
	if _, err := view.MerkleProof(cm); err != nil {
		c, _ := w.Commitment()
		if _, err := staff[1].post(ctx, "/admin/patients/"+demoPatientID+"/enrol", []byte(`{"commitment":"`+c+`"}`)); err != nil {
			return err
		}
	}
	rels, err := w.Relationships(ctx)
	if err != nil {
		return err
	}
	have := map[uint32]bool{}
	for _, r := range rels {
		have[r.Provider.ID] = true
	}
	for p := 1; p <= 2; p++ {
		if have[uint32(p)] {
			continue
		}
		// The desk records the desk code the patient's app shows for p.
		desk, err := w.DeskCode(uint32(p))
		if err != nil {
			return err
		}
		raw, err := staff[p].post(ctx, "/admin/patients/"+demoPatientID+"/claim-code", []byte(`{"tagCode":"`+desk.String()+`"}`))
		if err != nil {
			return err
		}
		var code struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(raw, &code); err != nil {
			return err
		}
		if err := w.Connect(ctx, uint32(p), code.Code); err != nil {
			return fmt.Errorf("devnet: demo patient connects to provider %d: %w", p, err)
		}
	}
	return nil
}
