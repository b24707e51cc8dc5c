// Package client is the patient's and viewer's web app: a local Go process
// (fiber) on 127.0.0.1 that holds the keys and renders plain HTML pages; the
// browser never sees a secret and needs no script. It refuses requests from
// other origins (checked on Origin, Sec-Fetch-Site and Host, plus a per-process
// form token and an HttpOnly SameSite=Strict session cookie), so no other web
// page can drive it — MedRec's local API was open to any page.
//
// Pages: onboarding (create with the 12 words shown once and confirmed,
// restore, unlock), home (identity commitment as text and QR code, provider
// directory, connect, notifications), records (one merged timeline, filter,
// charts, export), sharing (grants per provider, revoke, who can see what),
// access log (verified against the chain), viewer mode.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/wallet"
)

// Config is what the app needs.
type Config struct {
	Keystore   string                // path of the encrypted keystore (created on onboarding)
	RPC        string                // a node's JSON-RPC URL
	Deployment *contracts.Deployment // where the contracts are
	Prover     *prover.Prover
	// Dial connects to the chain when the app unlocks; nil dials RPC with
	// ethclient. The returned func closes the connection.
	Dial func(ctx context.Context) (chainview.Source, func(), error)
	// LightKDF uses a cheap scrypt for the keystore (tests only).
	LightKDF bool
	Log      *slog.Logger
}

// App is the running web app.
type App struct {
	cfg   Config
	app   *fiber.App
	pages *template.Template
	csrf  string
	// cookie is this process's session cookie name: cookies are not kept
	// apart by port, and two apps (patient, viewer) may share 127.0.0.1.
	cookie string

	mu      sync.Mutex
	session string         // cookie value once unlocked
	w       *wallet.Wallet // nil while locked
	pending string         // mnemonic shown once, awaiting confirmation
	seen    map[uint32]uint64
	closeFn func()
}

// New builds the app.
func New(cfg Config) (*App, error) {
	if cfg.Keystore == "" || (cfg.RPC == "" && cfg.Dial == nil) || cfg.Deployment == nil || cfg.Prover == nil {
		return nil, errors.New("client: keystore, RPC, deployment and prover are required")
	}
	if cfg.Dial == nil {
		rpc := cfg.RPC
		cfg.Dial = func(ctx context.Context) (chainview.Source, func(), error) {
			ec, err := ethclient.DialContext(ctx, rpc)
			if err != nil {
				return nil, nil, fmt.Errorf("the chain node %s is unreachable: %w", rpc, err)
			}
			return ec, ec.Close, nil
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, csrf: hex.EncodeToString(tok), seen: map[uint32]uint64{}}
	a.cookie = "medrec_" + a.csrf[:12]
	t, err := template.New("pages").Funcs(funcs).Parse(pageTemplates)
	if err != nil {
		return nil, err
	}
	a.pages = t
	a.app = fiber.New(fiber.Config{
		AppName: "medrec-client", DisableStartupMessage: true,
		ReadTimeout: 30 * time.Second, WriteTimeout: 120 * time.Second, IdleTimeout: time.Minute,
		BodyLimit: 1 << 20, ErrorHandler: a.errorPage,
	})
	a.routes()
	return a, nil
}

// Fiber returns the fiber app (tests).
func (a *App) Fiber() *fiber.App { return a.app }

// Listen serves on addr (which must be a loopback address) until ctx ends.
func (a *App) Listen(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("client: listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("client: refusing to listen on %s: the app holds keys and serves 127.0.0.1 only", addr)
	}
	errc := make(chan error, 1)
	go func() { errc <- a.app.Listen(addr) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		a.lock()
		return a.app.ShutdownWithTimeout(5 * time.Second)
	}
}

func (a *App) routes() {
	a.app.Use(a.sameOrigin)
	a.app.Get("/", a.index)
	a.app.Post("/create", a.create)
	a.app.Post("/create/confirm", a.confirm)
	a.app.Post("/restore", a.restore)
	a.app.Post("/unlock", a.unlock)
	u := a.app.Group("", a.unlocked)
	u.Post("/lock", func(c *fiber.Ctx) error { a.lock(); return c.Redirect("/", fiber.StatusSeeOther) })
	u.Get("/home", a.home)
	u.Post("/connect", a.connect)
	u.Post("/rotate", a.rotate)
	u.Get("/records", a.records)
	u.Get("/records/export", a.export)
	u.Get("/share", a.share)
	u.Post("/share", a.doShare)
	u.Post("/revoke", a.revoke)
	u.Get("/log", a.accessLog)
	u.Get("/viewer", a.viewer)
	u.Post("/viewer/read", a.viewerRead)
	u.Post("/viewer/read-grant", a.viewerReadGrant)
}

// sameOrigin refuses anything another web origin could send: a foreign
// Origin or Sec-Fetch-Site, a Host that is not loopback (DNS rebinding), and
// state-changing requests without this process's form token.
func (a *App) sameOrigin(c *fiber.Ctx) error {
	host := c.Hostname()
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h != "127.0.0.1" && h != "localhost" && h != "[::1]" && h != "::1" {
		return fiber.NewError(fiber.StatusForbidden, "this app answers on 127.0.0.1 only")
	}
	if site := c.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fiber.NewError(fiber.StatusForbidden, "requests from other web pages are refused")
	}
	if o := c.Get(fiber.HeaderOrigin); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != host {
			return fiber.NewError(fiber.StatusForbidden, "requests from other web pages are refused")
		}
	}
	if c.Method() == fiber.MethodPost && subtle.ConstantTimeCompare([]byte(c.FormValue("csrf")), []byte(a.csrf)) != 1 {
		return fiber.NewError(fiber.StatusForbidden, "the form is stale or came from elsewhere; reload the page")
	}
	c.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Cache-Control", "no-store")
	c.Set("Referrer-Policy", "same-origin") // "no-referrer" makes form posts send Origin: null
	return c.Next()
}

// signedIn reports whether the request carries this process's session.
func (a *App) signedIn(c *fiber.Ctx) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w != nil && a.session != "" && subtle.ConstantTimeCompare([]byte(c.Cookies(a.cookie)), []byte(a.session)) == 1
}

func (a *App) unlocked(c *fiber.Ctx) error {
	if !a.signedIn(c) {
		return c.Redirect("/", fiber.StatusSeeOther)
	}
	return c.Next()
}

func (a *App) wallet() *wallet.Wallet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w
}

// open unlocks with keys: connect to the chain, start a session cookie.
func (a *App) open(c *fiber.Ctx, keys *delegate.Keys) error {
	src, closeSrc, err := a.cfg.Dial(c.UserContext())
	if err != nil {
		return err
	}
	v, err := chainview.New(src, a.cfg.Deployment)
	if err != nil {
		closeSrc()
		return err
	}
	if err := v.Sync(c.UserContext()); err != nil {
		closeSrc()
		return fmt.Errorf("cannot read the chain: %w", err)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		closeSrc()
		return err
	}
	a.mu.Lock()
	if a.closeFn != nil {
		a.closeFn()
	}
	a.w = wallet.New(keys, v, a.cfg.Deployment, a.cfg.Prover)
	a.session = hex.EncodeToString(tok)
	a.closeFn = closeSrc
	a.mu.Unlock()
	c.Cookie(&fiber.Cookie{Name: a.cookie, Value: a.session, HTTPOnly: true, SameSite: "Strict", Path: "/"})
	return nil
}

func (a *App) lock() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w, a.session, a.pending = nil, "", ""
	if a.closeFn != nil {
		a.closeFn()
		a.closeFn = nil
	}
}

// render executes a page template into the response.
func (a *App) render(c *fiber.Ctx, page string, data fiber.Map) error {
	if data == nil {
		data = fiber.Map{}
	}
	data["CSRF"] = a.csrf
	data["Page"] = page
	a.mu.Lock()
	data["Unlocked"] = a.w != nil
	a.mu.Unlock()
	var b bytes.Buffer
	if err := a.pages.ExecuteTemplate(&b, page, data); err != nil {
		return err
	}
	c.Type("html", "utf-8")
	return c.Send(b.Bytes())
}

// errorPage shows any failure as a human message; nothing is lost.
func (a *App) errorPage(c *fiber.Ctx, err error) error {
	status := fiber.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		status = fe.Code
	}
	var ue userError
	if errors.As(err, &ue) {
		status = fiber.StatusBadRequest
	}
	c.Status(status)
	msg := err.Error()
	if status == fiber.StatusInternalServerError {
		a.cfg.Log.Error("page failed", "path", c.Path(), "err", err)
	}
	return a.render(c, "message", fiber.Map{"Title": "Something went wrong", "Message": msg, "Back": c.Get(fiber.HeaderReferer, "/")})
}

// userError is a mistake in what the user entered.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

func userErr(format string, args ...any) error { return userError{fmt.Sprintf(format, args...)} }

func trim(s string) string { return strings.TrimSpace(s) }
