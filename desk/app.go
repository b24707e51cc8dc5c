package desk

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/medrec-zk/medrec/internal/localweb"
	"github.com/medrec-zk/medrec/tagcode"
)

// Config is what the desk page needs.
type Config struct {
	Gateway  string // the provider's gateway URL
	Provider string // the provider's name, for the pages
	Log      *slog.Logger
}

// App is the desk's web page: one per provider, on 127.0.0.1, for the staff
// at that computer. A login opens a session at the gateway (its token stays
// here, behind an HttpOnly cookie); every action is the gateway's staff API
// with that token, so the gateway decides and logs.
type App struct {
	cfg    Config
	app    *fiber.App
	pages  *template.Template
	csrf   string
	cookie string

	mu       sync.Mutex
	sessions map[string]*session // cookie value → session
	printed  map[string]printed  // claim codes to print, by random id
}

type session struct {
	client  *Client
	staff   string
	name    string
	role    string
	expires time.Time
}

// printed is a claim code waiting on its printable page.
type printed struct {
	owner    string // the cookie of the session that issued it
	patient  string
	code     ClaimCode
	deskCode string
	until    time.Time
}

// New builds the desk page.
func New(cfg Config) (*App, error) {
	if _, err := NewClient(cfg.Gateway, ""); err != nil {
		return nil, err
	}
	if cfg.Provider == "" {
		cfg.Provider = "this provider"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	csrf, err := localweb.NewToken()
	if err != nil {
		return nil, err
	}
	t, err := template.New("pages").Funcs(template.FuncMap{
		"svg":  func(s string) template.HTML { return template.HTML(s) }, // generated here, never from input
		"when": func(t time.Time) string { return t.Local().Format("15:04, Mon 2 Jan 2006") },
	}).Parse(pageTemplates)
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, pages: t, csrf: csrf, cookie: "medrec_desk_" + csrf[:12], sessions: map[string]*session{}, printed: map[string]printed{}}
	a.app = fiber.New(fiber.Config{
		AppName: "medrec-desk", DisableStartupMessage: true,
		// Values kept past a handler (a printed claim code's patient and
		// owner) must not point into fasthttp's reused buffers.
		Immutable:   true,
		ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute, IdleTimeout: time.Minute,
		BodyLimit: 8 << 20, ErrorHandler: a.errorPage,
	})
	a.routes()
	return a, nil
}

// Fiber returns the fiber app (tests).
func (a *App) Fiber() *fiber.App { return a.app }

// Listen serves on addr (a loopback address) until ctx ends.
func (a *App) Listen(ctx context.Context, addr string) error {
	if err := localweb.Serve(ctx, a.app, addr, nil); err != nil {
		return fmt.Errorf("desk: %w", err)
	}
	return nil
}

func (a *App) routes() {
	a.app.Use(localweb.Guard(a.csrf))
	a.app.Get("/login", func(c *fiber.Ctx) error { return a.render(c, "login", nil) })
	a.app.Post("/login", a.login)
	in := a.app.Group("", a.signedIn)
	in.Get("/", a.home)
	in.Post("/logout", a.logout)
	in.Post("/patients", a.createPatient)
	in.Get("/find", a.find)
	in.Get("/patient", a.patient)
	in.Post("/patient/enrol", a.enrol)
	in.Post("/patient/claim-code", a.claimCode)
	in.Get("/claim-code/:id", a.printClaimCode)
	in.Post("/patient/unmap", a.unmap)
	in.Get("/import", func(c *fiber.Ctx) error { return a.render(c, "import", fiber.Map{"Flash": c.Query("done")}) })
	in.Post("/import", a.importBundle)
	in.Get("/staff", a.staff)
	in.Post("/staff", a.addStaff)
}

// session returns the request's desk session, if any.
func (a *App) sessionOf(c *fiber.Ctx) *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[c.Cookies(a.cookie)]
	if s != nil && time.Now().After(s.expires) {
		delete(a.sessions, c.Cookies(a.cookie))
		return nil
	}
	return s
}

func (a *App) signedIn(c *fiber.Ctx) error {
	s := a.sessionOf(c)
	if s == nil {
		return c.Redirect("/login", fiber.StatusSeeOther)
	}
	c.Locals("session", s)
	return c.Next()
}

func sess(c *fiber.Ctx) *session { s, _ := c.Locals("session").(*session); return s }

func (a *App) login(c *fiber.Ctx) error {
	staff, pw := strings.TrimSpace(c.FormValue("staff")), c.FormValue("password")
	if staff == "" || pw == "" {
		return a.render(c, "login", fiber.Map{"Error": "Enter your staff id and password.", "Staff": staff})
	}
	cl, err := NewClient(a.cfg.Gateway, "")
	if err != nil {
		return err
	}
	s, err := cl.Login(c.UserContext(), staff, pw)
	if err != nil {
		return a.render(c, "login", fiber.Map{"Error": refusal(err), "Staff": staff})
	}
	cl.Token = s.Token
	cookie, err := localweb.NewToken()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.sessions[cookie] = &session{client: cl, staff: s.Staff, name: s.Name, role: s.Role, expires: s.Expires}
	a.mu.Unlock()
	c.Cookie(&fiber.Cookie{Name: a.cookie, Value: cookie, HTTPOnly: true, SameSite: "Strict", Path: "/", Expires: s.Expires})
	return c.Redirect("/", fiber.StatusSeeOther)
}

func (a *App) logout(c *fiber.Ctx) error {
	s := sess(c)
	if err := s.client.Logout(c.UserContext()); err != nil && Status(err) != fiber.StatusNotFound {
		a.cfg.Log.Warn("desk logout at the gateway failed", "err", err)
	}
	a.mu.Lock()
	delete(a.sessions, c.Cookies(a.cookie))
	for id, p := range a.printed {
		if p.owner == c.Cookies(a.cookie) {
			delete(a.printed, id)
		}
	}
	a.mu.Unlock()
	c.ClearCookie(a.cookie)
	return c.Redirect("/login", fiber.StatusSeeOther)
}

func (a *App) home(c *fiber.Ctx) error {
	st, err := sess(c).client.Status(c.UserContext())
	data := fiber.Map{"Flash": c.Query("done")}
	if err != nil {
		data["StatusError"] = refusal(err)
	} else {
		data["Status"] = st
	}
	return a.render(c, "home", data)
}

func (a *App) find(c *fiber.Ctx) error {
	q := Query{Name: strings.TrimSpace(c.Query("name")), BirthDate: strings.TrimSpace(c.Query("birthdate")), Identifier: strings.TrimSpace(c.Query("identifier"))}
	found, more, err := sess(c).client.Find(c.UserContext(), q)
	data := fiber.Map{"Q": q, "Found": found, "More": more, "Searched": true}
	if err != nil {
		data["Error"] = refusal(err)
	}
	return a.render(c, "home", data)
}

func (a *App) createPatient(c *fiber.Ctx) error {
	id := strings.TrimSpace(c.FormValue("id"))
	if err := sess(c).client.CreatePatient(c.UserContext(), id); err != nil {
		return a.render(c, "home", fiber.Map{"Error": refusal(err), "NewID": id})
	}
	return c.Redirect("/patient?id="+url.QueryEscape(id)+"&done=created", fiber.StatusSeeOther)
}

func (a *App) patient(c *fiber.Ctx) error {
	id := strings.TrimSpace(c.Query("id"))
	if id == "" {
		return c.Redirect("/", fiber.StatusSeeOther)
	}
	p, err := sess(c).client.Patient(c.UserContext(), id)
	if err != nil {
		return a.render(c, "home", fiber.Map{"Error": refusal(err), "Find": id})
	}
	return a.render(c, "patient", fiber.Map{"P": p, "Flash": c.Query("done")})
}

// back re-renders the patient's page with an error, keeping what was typed.
func (a *App) back(c *fiber.Ctx, id string, err error, typed fiber.Map) error {
	p, perr := sess(c).client.Patient(c.UserContext(), id)
	if perr != nil {
		return a.render(c, "home", fiber.Map{"Error": refusal(perr), "Find": id})
	}
	typed["P"], typed["Error"] = p, refusal(err)
	return a.render(c, "patient", typed)
}

func (a *App) enrol(c *fiber.Ctx) error {
	id, cm := c.FormValue("patient"), strings.TrimSpace(c.FormValue("commitment"))
	if _, err := sess(c).client.Enrol(c.UserContext(), id, cm); err != nil {
		return a.back(c, id, err, fiber.Map{"Commitment": cm})
	}
	return c.Redirect("/patient?id="+url.QueryEscape(id)+"&done=enrolled", fiber.StatusSeeOther)
}

func (a *App) claimCode(c *fiber.Ctx) error {
	id, typed := c.FormValue("patient"), c.FormValue("deskcode")
	dc, err := tagcode.Parse(typed)
	if err != nil {
		return a.back(c, id, fmt.Errorf("the desk code %q: %w — check it against the patient's app", typed, err), fiber.Map{"DeskCode": typed})
	}
	cc, err := sess(c).client.NewClaimCode(c.UserContext(), id, dc.String())
	if err != nil {
		return a.back(c, id, err, fiber.Map{"DeskCode": typed})
	}
	key, err := localweb.NewToken()
	if err != nil {
		return err
	}
	a.mu.Lock()
	for k, p := range a.printed {
		if time.Now().After(p.until) {
			delete(a.printed, k)
		}
	}
	a.printed[key] = printed{owner: c.Cookies(a.cookie), patient: id, code: cc, deskCode: dc.String(), until: time.Now().Add(10 * time.Minute)}
	a.mu.Unlock()
	return c.Redirect("/claim-code/"+key, fiber.StatusSeeOther)
}

// printClaimCode shows a claim code on a page made to be printed and handed
// over (for ten minutes, to the session that issued it; a reload shows the
// same code, it never issues another).
func (a *App) printClaimCode(c *fiber.Ctx) error {
	a.mu.Lock()
	p, ok := a.printed[c.Params("id")]
	a.mu.Unlock()
	if !ok || p.owner != c.Cookies(a.cookie) || time.Now().After(p.until) {
		return fiber.NewError(fiber.StatusNotFound, "this claim code is no longer shown here; issue a new one if it was lost")
	}
	qr, err := qrcode.New(p.code.Code, qrcode.Medium)
	if err != nil {
		return err
	}
	png, err := qr.PNG(256)
	if err != nil {
		return err
	}
	return a.render(c, "print", fiber.Map{"Patient": p.patient, "Code": p.code, "DeskCode": p.deskCode, "QR": template.URL("data:image/png;base64," + b64(png))}) // generated here, never from input
}

func (a *App) unmap(c *fiber.Ctx) error {
	id, reason := c.FormValue("patient"), strings.TrimSpace(c.FormValue("reason"))
	if _, err := sess(c).client.Unmap(c.UserContext(), id, "", reason); err != nil {
		return a.back(c, id, err, fiber.Map{"Reason": reason})
	}
	return c.Redirect("/patient?id="+url.QueryEscape(id)+"&done=unmapped", fiber.StatusSeeOther)
}

func (a *App) importBundle(c *fiber.Ctx) error {
	fh, err := c.FormFile("bundle")
	if err != nil {
		return a.render(c, "import", fiber.Map{"Error": "Choose a FHIR Bundle file (JSON) to import."})
	}
	f, err := fh.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, 8<<20))
	if err != nil {
		return err
	}
	rep, err := sess(c).client.Import(c.UserContext(), raw)
	if err != nil {
		return a.render(c, "import", fiber.Map{"Error": refusal(err)})
	}
	return c.Redirect(fmt.Sprintf("/patient?id=%s&done=%s", url.QueryEscape(rep.Patient), url.QueryEscape(fmt.Sprintf("imported %d entries (%d new, %d updated, %d unchanged)", rep.Entries, rep.Created, rep.Updated, rep.Unchanged))), fiber.StatusSeeOther)
}

func (a *App) staff(c *fiber.Ctx) error {
	list, err := sess(c).client.Staff(c.UserContext())
	if err != nil {
		return a.render(c, "staff", fiber.Map{"Error": refusal(err)})
	}
	return a.render(c, "staff", fiber.Map{"Staff": list, "Flash": c.Query("done")})
}

func (a *App) addStaff(c *fiber.Ctx) error {
	ns := NewStaff{ID: strings.TrimSpace(c.FormValue("id")), Name: strings.TrimSpace(c.FormValue("name")), Role: c.FormValue("role"), Password: c.FormValue("password")}
	if _, err := sess(c).client.AddStaff(c.UserContext(), ns); err != nil {
		list, _ := sess(c).client.Staff(c.UserContext())
		return a.render(c, "staff", fiber.Map{"Staff": list, "Error": refusal(err), "New": ns})
	}
	return c.Redirect("/staff?done="+url.QueryEscape("added "+ns.ID), fiber.StatusSeeOther)
}

// refusal says a gateway error in words.
func refusal(err error) string {
	var e *Error
	if errors.As(err, &e) {
		switch e.Status {
		case fiber.StatusForbidden:
			return "Not allowed: " + e.Message
		case fiber.StatusUnauthorized:
			return "Not signed in, or the password is wrong: " + e.Message
		case fiber.StatusNotFound:
			return "Not found: " + e.Message
		}
		return e.Message
	}
	return err.Error()
}

// render executes a page template into the response.
func (a *App) render(c *fiber.Ctx, page string, data fiber.Map) error {
	if data == nil {
		data = fiber.Map{}
	}
	data["CSRF"], data["Page"], data["Provider"] = a.csrf, page, a.cfg.Provider
	if s := a.sessionOf(c); s != nil {
		data["Me"] = fiber.Map{"Staff": s.staff, "Name": s.name, "Role": s.role, "Admin": s.role == "admin"}
	}
	var b bytes.Buffer
	if err := a.pages.ExecuteTemplate(&b, page, data); err != nil {
		return err
	}
	c.Type("html", "utf-8")
	return c.Send(b.Bytes())
}

// errorPage shows any failure as a message; nothing is lost.
func (a *App) errorPage(c *fiber.Ctx, err error) error {
	status := fiber.StatusInternalServerError
	var fe *fiber.Error
	if errors.As(err, &fe) {
		status = fe.Code
	}
	if status == fiber.StatusInternalServerError {
		a.cfg.Log.Error("desk page failed", "path", c.Path(), "err", err)
	}
	c.Status(status)
	return a.render(c, "message", fiber.Map{"Message": err.Error()})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
