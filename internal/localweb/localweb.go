// Package localweb owns what a web app served on 127.0.0.1 to one person's
// browser needs so that no other web page can drive it: the same-origin
// guard (a loopback Host, no foreign Origin or Sec-Fetch-Site, a per-process
// form token on every POST) and the headers every page carries. The
// patient's app and the provider's desk app both use it.
package localweb

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/url"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"
)

// NewToken returns a fresh random token (hex): a form token, a cookie value.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Guard refuses anything another web origin could send: a Host that is not
// loopback (DNS rebinding), a foreign Origin or Sec-Fetch-Site, and a POST
// without the form token csrf (in a form field of that name). A GET of one
// of the entry paths may come from another site (a link or a redirect to
// a page that changes nothing and shows nothing of the person's): only its
// Host is checked. It sets the
// headers every answer carries: a strict content security policy, no
// framing, no caching (pages hold personal data: Back after logging out
// shows nothing), and a referrer policy that keeps Origin on form posts.
// A POST body the server streams carries the token as its first part
// (formToken).
func Guard(csrf string, entries ...string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		host := c.Hostname()
		h, _, err := net.SplitHostPort(host)
		if err != nil {
			h = host
		}
		if h != "127.0.0.1" && h != "localhost" && h != "[::1]" && h != "::1" {
			return fiber.NewError(fiber.StatusForbidden, "this app answers on 127.0.0.1 only")
		}
		entry := c.Method() == fiber.MethodGet && slices.Contains(entries, c.Path())
		if site := c.Get("Sec-Fetch-Site"); !entry && site != "" && site != "same-origin" && site != "none" {
			return fiber.NewError(fiber.StatusForbidden, "requests from other web pages are refused")
		}
		if o := c.Get(fiber.HeaderOrigin); o != "" && !entry {
			u, err := url.Parse(o)
			if err != nil || u.Host != host {
				return fiber.NewError(fiber.StatusForbidden, "requests from other web pages are refused")
			}
		}
		if c.Method() == fiber.MethodPost && subtle.ConstantTimeCompare([]byte(formToken(c)), []byte(csrf)) != 1 {
			return fiber.NewError(fiber.StatusForbidden, "the form is stale or came from elsewhere; reload the page")
		}
		c.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
		c.Set("X-Frame-Options", "DENY")
		c.Set("Cache-Control", "no-store")
		c.Set("Referrer-Policy", "same-origin") // "no-referrer" makes form posts send Origin: null
		return c.Next()
	}
}

// formToken returns the form token a POST carries: its csrf field. A body
// the server streams (fiber's StreamRequestBody, left unread for its
// handler: a large upload) is read only as far as the token, which must be
// its first part: multipart/form-data with the hidden csrf input before
// every other field of the form (browsers send fields in document order).
// The handler reads the rest with StreamedForm.
func formToken(c *fiber.Ctx) string {
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		return c.FormValue("csrf")
	}
	mt, params, err := mime.ParseMediaType(c.Get(fiber.HeaderContentType))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return ""
	}
	mr := multipart.NewReader(stream, params["boundary"])
	p, err := mr.NextPart()
	if err != nil || p.FormName() != "csrf" || p.FileName() != "" {
		return ""
	}
	token, err := io.ReadAll(io.LimitReader(p, 256))
	if err != nil {
		return ""
	}
	c.Locals(streamedFormKey{}, mr)
	return string(token)
}

type streamedFormKey struct{}

// StreamedForm returns the rest of a streamed multipart POST, after the
// form token Guard read and checked; nil if the request is not one.
func StreamedForm(c *fiber.Ctx) *multipart.Reader {
	mr, _ := c.Locals(streamedFormKey{}).(*multipart.Reader)
	return mr
}

// Serve serves app on addr, which must be a loopback address, until ctx
// ends; then stop runs (if not nil) and the app shuts down.
func Serve(ctx context.Context, app *fiber.App, addr string, stop func()) error {
	if err := CheckListen(addr); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- app.Listen(addr) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		if stop != nil {
			stop()
		}
		return app.ShutdownWithTimeout(5 * time.Second)
	}
}

// CheckListen refuses to serve on anything but a loopback address.
func CheckListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to listen on %s: this app serves 127.0.0.1 only", addr)
	}
	return nil
}
