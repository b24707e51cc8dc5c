package dbmanager

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestCORS: the door answers registered browser apps' origins (preflights
// and reads, never with credentials); every other origin and every other
// route stays closed; a token or a code is refused from another app's
// page.
func TestCORS(t *testing.T) {
	const (
		chartOrigin = "https://app.example" // chart's and obs's redirect URIs (newSMARTWorld)
		webOrigin   = "http://web.example:8080"
	)
	w := newSMARTWorld(t, func(c *Config) {
		c.SMARTApps = append(c.SMARTApps, SMARTApp{ClientID: "web", Name: "Web App", RedirectURIs: []string{webOrigin + "/app/index.html"}})
	})
	tok := w.accessToken(t, newLaunch("chart", "patient/*.rs"), false)["access_token"].(string)

	send := func(method, target, origin string, header ...string) *http.Response {
		t.Helper()
		req := httptest.NewRequest(method, target, nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := w.gw.App().Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	preflight := func(method string) []string {
		return []string{"Access-Control-Request-Method", method, "Access-Control-Request-Headers", "authorization"}
	}
	for _, tc := range []struct {
		name, method, target, origin string
		header                       []string
		status                       int
		allowed                      string // the Access-Control-Allow-Origin expected ("" none)
	}{
		{"preflight of a read, the app's origin", "OPTIONS", "/fhir/Observation", chartOrigin, preflight("GET"), 204, chartOrigin},
		{"preflight of the token endpoint", "OPTIONS", "/smart/token", webOrigin, preflight("POST"), 204, webOrigin},
		{"preflight of discovery", "OPTIONS", "/.well-known/smart-configuration", webOrigin, preflight("GET"), 204, webOrigin},
		{"preflight from an unregistered origin", "OPTIONS", "/fhir/Observation", "https://evil.example", preflight("GET"), 403, ""},
		{"preflight from the app's host on another port", "OPTIONS", "/fhir/Observation", "http://web.example", preflight("GET"), 403, ""},
		{"preflight off the door (authorize)", "OPTIONS", "/smart/authorize", chartOrigin, preflight("GET"), 403, ""},
		{"preflight off the door (admin)", "OPTIONS", "/admin/patients", chartOrigin, preflight("POST"), 403, ""},
		{"an OPTIONS that is no preflight", "OPTIONS", "/fhir/Observation", chartOrigin, nil, 403, ""},
		{"metadata from an app's origin", "GET", "/fhir/metadata", webOrigin, nil, 200, webOrigin},
		{"metadata from another origin", "GET", "/fhir/metadata", "https://evil.example", nil, 200, ""},
		{"metadata, no origin", "GET", "/fhir/metadata", "", nil, 200, ""},
		{"discovery from an app's origin", "GET", "/.well-known/smart-configuration", chartOrigin, nil, 200, chartOrigin},
		{"a read with the token from its app's page", "GET", "/fhir/Observation/o1", chartOrigin, []string{"Authorization", "Bearer " + tok}, 200, chartOrigin},
		{"a read with the token, no origin", "GET", "/fhir/Observation/o1", "", []string{"Authorization", "Bearer " + tok}, 200, ""},
		// The refusal is readable by the page that sent it (its OperationOutcome).
		{"the token from another app's page", "GET", "/fhir/Observation/o1", webOrigin, []string{"Authorization", "Bearer " + tok}, 403, webOrigin},
		{"the token from an unregistered page", "GET", "/fhir/Observation/o1", "https://evil.example", []string{"Authorization", "Bearer " + tok}, 403, ""},
		{"the owner's relay from an app's origin", "POST", "/relay/grant", chartOrigin, nil, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := send(tc.method, tc.target, tc.origin, tc.header...)
			if tc.status != 0 && res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.status)
			}
			h := res.Header
			if got := h.Get("Access-Control-Allow-Origin"); got != tc.allowed {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.allowed)
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Fatal("credentials allowed")
			}
			if tc.allowed == "" {
				for k := range h {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Fatalf("%s sent to a closed origin or route", k)
					}
				}
				return
			}
			if !strings.Contains(h.Get("Vary"), "Origin") {
				t.Fatalf("Vary %q", h.Get("Vary"))
			}
			if tc.method == "OPTIONS" {
				if !strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), tc.header[1]) {
					t.Fatalf("preflight answer %v", h)
				}
			} else if !strings.Contains(h.Get("Access-Control-Expose-Headers"), "Content-Location") {
				t.Fatalf("Access-Control-Expose-Headers %q", h.Get("Access-Control-Expose-Headers"))
			}
		})
	}

	// A code is traded only from its own app's page (or off the browser).
	l := newLaunch("chart", "patient/*.rs")
	form := l.codeForm(w.code(t, l, false))
	req := httptest.NewRequest("POST", "/smart/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", webOrigin)
	if r := w.do(req); r.status != 401 || !strings.Contains(string(r.body), "invalid_client") {
		t.Fatalf("a code traded from another app's page: %d %s", r.status, r.body)
	}
	form = l.codeForm(w.code(t, l, false))
	req = httptest.NewRequest("POST", "/smart/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", chartOrigin)
	if r := w.do(req); r.status != 200 || !strings.Contains(string(r.body), "access_token") {
		t.Fatalf("a code traded from its app's page: %d %s", r.status, r.body)
	}
}

func TestWebOrigin(t *testing.T) {
	for in, want := range map[string]string{
		"https://App.Example/cb":         "https://app.example",
		"https://app.example:443/cb":     "https://app.example",
		"http://app.example:80/x":        "http://app.example",
		"http://127.0.0.1:8080/app":      "http://127.0.0.1:8080",
		"https://app.example:8443/a?b=c": "https://app.example:8443",
		"http://[::1]:9000/cb":           "http://[::1]:9000",
		"ftp://app.example/cb":           "",
		"/relative":                      "",
	} {
		u, _ := url.Parse(in)
		if got, _ := webOrigin(u); got != want {
			t.Errorf("webOrigin(%s) = %q, want %q", in, got, want)
		}
	}
}
