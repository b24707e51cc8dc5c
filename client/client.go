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
// access log (verified against the chain), viewer mode. Records and access
// log are checked against each provider's anchor on chain and against what
// this device verified before (kept encrypted beside the keystore); what
// contradicts either is shown as a warning.
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
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/devstore"
	"github.com/medrec-zk/medrec/internal/localweb"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/smartauth"
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
	// TestKeystores writes keystores with the cheap test scrypt cost and
	// opens such keystores (tests and the make run demo only). Without it,
	// a keystore of the test cost is refused: it must not hold real words.
	TestKeystores bool
	Log           *slog.Logger
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

	// ctx lives as long as the app serves: chain writes run under it, not
	// under the request that started them (ops.go).
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	session string         // cookie value once unlocked
	w       *wallet.Wallet // nil while locked
	pending string         // the 12 words shown once, awaiting confirmation
	// rotations are finished rotations by id, for their done pages (rotate.go).
	rotations map[string]rotationOutcome
	// ops are chain writes (shares, revocations) by id, and the form key
	// that started each: a form submitted twice starts one (ops.go).
	ops     map[string]*op
	opByKey map[string]string
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
	a := &App{cfg: cfg, csrf: hex.EncodeToString(tok), rotations: map[string]rotationOutcome{}, ops: map[string]*op{}, opByKey: map[string]string{}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.cookie = "medrec_" + a.csrf[:12]
	t, err := template.New("pages").Funcs(funcs).ParseFS(templates, "templates/*.html")
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

// Listen serves on addr (which must be a loopback address: the app holds
// keys) until ctx ends, then locks the keys.
func (a *App) Listen(ctx context.Context, addr string) error {
	err := localweb.Serve(ctx, a.app, addr, func() { a.cancel(); a.lock() })
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return nil
}

func (a *App) routes() {
	// same origin, form token, headers; apps' requests land from a gateway
	a.app.Use(localweb.Guard(a.csrf, smartauth.ApprovePath))
	a.app.Get(smartauth.ApprovePath, a.smartLanding)
	a.app.Get("/", a.index)
	a.app.Post("/create", a.create)
	a.app.Get("/create/words", a.words)
	a.app.Post("/create/confirm", a.confirm)
	a.app.Post("/restore", a.restore)
	a.app.Post("/unlock", a.unlock)
	a.app.Post("/lock", a.lockNow)
	u := a.app.Group("", a.unlocked)
	u.Get("/home", a.home)
	u.Get("/connect", a.connectPage)
	u.Post("/connect", a.connect)
	u.Get("/rotate", a.rotateConfirm)
	u.Post("/rotate", a.doRotate)
	u.Get("/rotate/done/:id", a.rotateDone)
	u.Get("/records", a.records)
	u.Get("/records/export", a.export)
	u.Get("/share", a.share)
	u.Post("/share/review", a.reviewShare)
	u.Post("/share", a.doShare)
	u.Get("/revoke", a.revokeConfirm)
	u.Post("/revoke", a.doRevoke)
	u.Get("/op/:id", a.opPage)
	u.Get("/log", a.accessLog)
	u.Get("/viewer", a.viewer)
	u.Post("/viewer/read", a.viewerSave)
	u.Get("/viewer/read/:id", a.viewerRead)
	u.Get("/smart/review", a.smartReview)
	u.Post("/smart/answer", a.smartAnswer)
}

// signedIn reports whether the request carries this process's session.
func (a *App) signedIn(c *fiber.Ctx) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w != nil && a.session != "" && subtle.ConstantTimeCompare([]byte(c.Cookies(a.cookie)), []byte(a.session)) == 1
}

// unlocked lets only the signed-in session through; anyone else is sent
// to unlock, and comes back to the page they asked for.
func (a *App) unlocked(c *fiber.Ctx) error {
	if !a.signedIn(c) {
		if c.Method() == fiber.MethodGet {
			return c.Redirect("/?next="+url.QueryEscape(c.OriginalURL()), fiber.StatusSeeOther)
		}
		return c.Redirect("/", fiber.StatusSeeOther)
	}
	return c.Next()
}

// localPath returns next if it is a path of this app ("/log?page=2"),
// else "/home": an unlock never sends anyone elsewhere.
func localPath(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") || next == "/" {
		return "/home"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" {
		return "/home"
	}
	return next
}

func (a *App) wallet() *wallet.Wallet {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.w
}

// open unlocks with keys: connect to the chain, start a session cookie.
// fresh says the words were just made here.
func (a *App) open(c *fiber.Ctx, keys *delegate.Keys, fresh bool) error {
	src, closeSrc, err := a.cfg.Dial(c.UserContext())
	if err != nil {
		a.cfg.Log.Error("Cannot reach the chain", "err", err)
		return errNoChain
	}
	// With a node that answers calls too (RPC always does), the wallet keeps
	// no copy of the registry's tree: it fetches its membership path by
	// bucket from the gateways (wallet.UseBucketPaths).
	reg, buckets := src.(wallet.RegistryReader)
	newView := chainview.New
	if buckets {
		newView = chainview.NewWithoutTree
	}
	v, err := newView(src, a.cfg.Deployment)
	if err != nil {
		closeSrc()
		return err
	}
	if err := v.Sync(c.UserContext()); err != nil {
		closeSrc()
		a.cfg.Log.Error("Cannot read the chain", "err", err)
		return errNoChain
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		closeSrc()
		return err
	}
	mem, err := a.deviceStore(keys)
	if err != nil {
		closeSrc()
		a.cfg.Log.Error("Cannot open the device store", "err", err)
		return errors.New("what this app remembers on this computer cannot be opened (see the app's log); nothing was changed")
	}
	a.mu.Lock()
	if a.closeFn != nil {
		a.closeFn()
	}
	a.w = wallet.New(keys, v, a.cfg.Deployment, a.cfg.Prover)
	if buckets {
		a.w.UseBucketPaths(reg, a.cfg.Deployment.Block)
	}
	a.w.Remember(mem)
	if fresh {
		// A new seed has no enrolment in the chain's past: the first look
		// for it starts here.
		if err := a.w.SeedMadeNow(); err != nil {
			a.cfg.Log.Warn("Cannot remember where to look for the enrolment", "err", err)
		}
	}
	clear(a.ops)
	clear(a.opByKey)
	a.session = hex.EncodeToString(tok)
	a.closeFn = closeSrc
	w, session := a.w, a.session
	a.mu.Unlock()
	if buckets {
		// Once per device (a bucket and a proof, well under a second), and
		// never in the way: a failure is only logged, the next unlock tries
		// again.
		ctx, cancel := context.WithTimeout(c.UserContext(), locatorWait)
		if err := w.KeepLocator(ctx); err != nil {
			a.cfg.Log.Warn("Filing the locator note failed; the next unlock tries again", "err", err)
		}
		cancel()
	}
	c.Cookie(&fiber.Cookie{Name: a.cookie, Value: session, HTTPOnly: true, SameSite: "Strict", Path: "/"})
	return nil
}

// locatorWait bounds how long an unlock spends filing the wallet's locator
// note (wallet.KeepLocator).
const locatorWait = 10 * time.Second

// DeviceStorePath is where the app keeps, beside the keystore, what it
// verified at each provider (encrypted; package devstore).
func DeviceStorePath(keystore string) string { return keystore + ".device" }

// deviceStore opens the device store of keys. One that this seed cannot
// read (another seed's, or damaged) is set aside, not deleted, and the app
// starts remembering afresh: it then checks against the chain alone, as a
// new device does.
func (a *App) deviceStore(keys *delegate.Keys) (*devstore.Store, error) {
	key, err := keys.DeviceStoreKey()
	if err != nil {
		return nil, err
	}
	path := DeviceStorePath(a.cfg.Keystore)
	s, err := devstore.Open(path, key)
	if errors.Is(err, devstore.ErrUnreadable) {
		aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
		a.cfg.Log.Warn("Device store unreadable with these keys; set aside", "path", path, "moved to", aside)
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("the device store %s cannot be read with these keys and cannot be set aside: %w", path, rerr)
		}
		s, err = devstore.Open(path, key)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot open the device store: %w", err)
	}
	return s, nil
}

// errNoChain: the chain node the app reads cannot be reached.
var errNoChain = errors.New("the network cannot be reached right now (its node does not answer); try again in a moment")

// lock ends the session: the keys, the wallet, the chain connection and
// every finished operation's page (a share's bundle) are dropped.
func (a *App) lock() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w, a.session, a.pending = nil, "", ""
	clear(a.ops)
	clear(a.opByKey)
	clear(a.rotations)
	if a.closeFn != nil {
		a.closeFn()
		a.closeFn = nil
	}
}

// lockNow locks and drops the session cookie, so the browser holds nothing
// that opens a page again.
func (a *App) lockNow(c *fiber.Ctx) error {
	a.lock()
	c.Cookie(&fiber.Cookie{Name: a.cookie, Value: "", HTTPOnly: true, SameSite: "Strict", Path: "/", Expires: time.Unix(1, 0), MaxAge: -1})
	c.Set("Clear-Site-Data", `"cache"`)
	return c.Redirect("/?locked=1", fiber.StatusSeeOther)
}

// render executes a page template into the response.
func (a *App) render(c *fiber.Ctx, page string, data fiber.Map) error {
	if data == nil {
		data = fiber.Map{}
	}
	data["CSRF"] = a.csrf
	data["Page"] = page
	data["Unlocked"] = a.signedIn(c)
	if _, ok := data["Title"]; !ok {
		data["Title"] = titles[page]
	}
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
		a.cfg.Log.Error("Page failed", "path", c.Path(), "err", err)
		msg = plain(err)
	}
	back := "/"
	if ref, perr := url.Parse(c.Get(fiber.HeaderReferer)); perr == nil && ref.Host == c.Hostname() {
		back = localPath(ref.RequestURI())
	}
	return a.render(c, "message", fiber.Map{"Title": "Something went wrong", "Message": msg, "Back": back})
}

// userError is a mistake in what the user entered.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

func userErr(format string, args ...any) error { return userError{fmt.Sprintf(format, args...)} }

func trim(s string) string { return strings.TrimSpace(s) }
