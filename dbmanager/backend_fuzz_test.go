package dbmanager

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

var feedRoutes = []string{"POST /smart/token", "POST /fhir", "POST /fhir/Observation", "PUT /fhir/Observation/o1", "PUT /fhir/Observation"}

// FuzzFeedEndpoints sends a backend client's requests through the real
// handlers: token forms with any assertion, and FHIR writes and Bundles of
// any body with a valid backend token. Whatever they hold, the answer is
// a 2xx or a 4xx — never a 5xx — an error is RFC 6749 JSON on the token
// endpoint and an OperationOutcome on FHIR, nothing logs an error, and a
// refused write writes nothing. Seeds include a genuine assertion, write
// and transaction.
func FuzzFeedEndpoints(f *testing.F) {
	errs := &errorLog{}
	w := newFeedWorld(f, filepath.Join(f.TempDir(), "records.db"), func(c *Config) { c.Log = slog.New(errs) })
	tok := w.token(f, "engine", "system/*.cu")
	claims := assertionClaims("engine")
	claims.Audience = []string{"http://gateway/smart/token"} // the base mustRequest's requests reach
	f.Add(uint8(0), "", []byte(backendForm(sign(f, testBackendKeys.ec, jose.ES384, "ec-1", claims), "system/*.cu").Encode()))
	f.Add(uint8(0), "", []byte(backendForm("eyJhbGciOiJub25lIn0.e30.", "system/*.cu").Encode()))
	f.Add(uint8(1), "", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":`+observation("o1", "Patient/p1", "")+`,"request":{"method":"PUT","url":"Observation/o1"}}]}`))
	f.Add(uint8(1), "", []byte(`{"resourceType":"Bundle","type":"batch","entry":[{"resource":`+observation("", "Patient/p1", "")+`,"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=a|b"}}]}`))
	f.Add(uint8(2), "identifier=urn:lab|A1", []byte(observation("", "Patient/p1", identified("urn:lab", "A1"))))
	f.Add(uint8(3), "", []byte(observation("o1", "Patient/p1", `,"performer":[{"reference":"Practitioner/ghost"}]`)))
	f.Add(uint8(4), "identifier=urn:lab|A1", []byte(observation("", "Patient/p1", "")))
	f.Fuzz(func(t *testing.T, route uint8, cond string, body []byte) {
		method, path, _ := strings.Cut(feedRoutes[int(route)%len(feedRoutes)], " ")
		if strings.ContainsFunc(cond, func(c rune) bool { return c < 0x20 || c >= 0x7f || c == ' ' || c == '#' }) {
			t.Skip("not a header or query value a client sends")
		}
		r := mustRequest(t, method, path, body)
		switch path {
		case "/smart/token":
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		case "/fhir/Observation":
			if method == "PUT" {
				r.URL.RawQuery = cond
			} else if cond != "" {
				r.Header.Set("If-None-Exist", cond)
			}
			fallthrough
		default:
			r.Header.Set("Content-Type", "application/fhir+json")
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		ctx := context.Background()
		changes, err := w.cfg.Store.Changes(ctx, "p1", 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		logged := errs.count()
		res, err := w.gw.App().Test(r, -1)
		if err != nil {
			if strings.Contains(err.Error(), "small read buffer") {
				return
			}
			t.Fatalf("%s %s: %v", r.Method, r.URL, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode >= 500 {
			t.Fatalf("%s %s: %d %s", r.Method, r.URL, res.StatusCode, b)
		}
		if errs.count() != logged {
			t.Fatalf("%s %s: %d; logged an error", r.Method, r.URL, res.StatusCode)
		}
		if res.StatusCode < 400 {
			return
		}
		var e struct{ Error, ResourceType string }
		if err := json.Unmarshal(b, &e); err != nil || (path == "/smart/token") != (e.Error != "") || (path != "/smart/token" && e.ResourceType != "OperationOutcome") {
			t.Fatalf("%s %s: %d is not the error its endpoint answers: %q", r.Method, r.URL, res.StatusCode, b)
		}
		after, err := w.cfg.Store.Changes(ctx, "p1", 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		if len(after) != len(changes) {
			t.Fatalf("%s %s: %d, yet wrote %+v", r.Method, r.URL, res.StatusCode, after[len(changes):])
		}
	})
}
