package dbmanager

import (
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/cors"
)

// The standard door is open to browser-only SMART apps: a public client
// whose whole code runs in a web page discovers the endpoints, trades its
// code at the token endpoint and reads with its token from that page, so
// the browser must let the page read the gateway's answers (CORS). It does
// so for the web origins of the registered apps' redirect URIs only — a
// browser app's redirect page lives at its own origin — and only on the
// door: SMART discovery, the token endpoint and /fhir/. Nothing here rides
// on cookies (tokens travel in Authorization), so credentials are never
// allowed. Every other route (the patient's relay, the approval steps, the
// desk's admin routes) stays closed to other origins, and a preflight there,
// or from any other origin, is refused.
//
// A token is bound to its app's origins too: a browser request carrying an
// Origin that is not one of the token's app's is refused (authorizeApp),
// and so is a code or refresh token traded from another app's origin
// (smartToken), so one registered app's page cannot use another's token.

// corsDoor says whether path is on the door browser apps may read.
func corsDoor(path string) bool {
	switch path {
	case "/.well-known/smart-configuration", "/smart/token":
		return true
	}
	return strings.HasPrefix(path, "/fhir/")
}

// webOrigin is the ASCII serialisation of u's origin as a browser sends it
// (RFC 6454 §6.2): lower-case scheme and host, the port only when it is
// not the scheme's default. ok is false for anything but http(s).
func webOrigin(u *url.URL) (string, bool) {
	scheme := strings.ToLower(u.Scheme)
	if (scheme != "http" && scheme != "https") || u.Host == "" {
		return "", false
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, true
}

// origins are the web origins of an app's redirect URIs.
func (a *SMARTApp) origins() []string {
	var out []string
	for _, r := range a.RedirectURIs {
		if u, err := url.Parse(r); err == nil {
			if o, ok := webOrigin(u); ok {
				out = append(out, o)
			}
		}
	}
	return out
}

// fromOrigin says whether a request may come from origin for app: no
// Origin (not a browser's cross-origin request) or one of the app's.
func (a *SMARTApp) fromOrigin(origin string) bool {
	if origin == "" {
		return true
	}
	for _, o := range a.origins() {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// appOrigins is the set of every registered app's web origins.
func appOrigins(apps []SMARTApp) map[string]bool {
	set := map[string]bool{}
	for i := range apps {
		for _, o := range apps[i].origins() {
			set[o] = true
		}
	}
	return set
}

// corsFor answers a browser app's preflight on the door and adds the
// CORS headers to the door's answers to an app's origin; it does nothing
// for anything else (preflights elsewhere are refused in routes).
func corsFor(origins map[string]bool) fiber.Handler {
	return cors.New(cors.Config{
		Next: func(c *fiber.Ctx) bool {
			return !corsDoor(c.Path()) || !origins[strings.ToLower(c.Get(fiber.HeaderOrigin))]
		},
		AllowOriginsFunc: func(origin string) bool { return origins[origin] },
		AllowMethods:     "GET,POST,DELETE",
		AllowHeaders:     "Authorization,Accept,Content-Type,Prefer,If-None-Match",
		ExposeHeaders:    "Content-Location,Location,ETag,Last-Modified,X-Progress,Retry-After,Expires,WWW-Authenticate",
		MaxAge:           600,
	})
}

// corsPreflight says whether an OPTIONS request is a preflight the door
// answers: on the door, from a registered app's origin.
func corsPreflight(c *fiber.Ctx, origins map[string]bool) bool {
	return corsDoor(c.Path()) && c.Get(fiber.HeaderAccessControlRequestMethod) != "" &&
		origins[strings.ToLower(c.Get(fiber.HeaderOrigin))]
}
