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
	"mime/multipart"
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
	// BulkLimit bounds the NDJSON bytes of one bulk import upload
	// (DefaultBulkLimit if 0). It is streamed through to the gateway, never
	// held here; every other request body stays under formLimit.
	BulkLimit int64
}

// DefaultBulkLimit is the most NDJSON one bulk import upload may carry
// unless Config.BulkLimit says otherwise: about a Synthea export of a few
// thousand patients. Larger exports go in several uploads, or through
// `medrec desk import-ndjson`, which has no limit.
const DefaultBulkLimit = 1 << 30

const (
	// formLimit bounds every request body but a bulk upload's.
	formLimit = 8 << 20
	// bulkPath is the bulk import's form action: its body is streamed.
	bulkPath = "/import/ndjson"
	// bulkIdle is how long a bulk upload may pause (the browser waits
	// while the gateway reads) before the desk gives up on it.
	bulkIdle = 2 * time.Minute
)

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

// admin says the staff member signed in as an admin (the role the gateway
// gave at login; the gateway still decides every request).
func (s *session) admin() bool { return s.role == "admin" }

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
	if cfg.BulkLimit <= 0 {
		cfg.BulkLimit = DefaultBulkLimit
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
		// Request bodies are streamed, so that a bulk import's upload
		// goes through to the gateway as it comes (fasthttp reads at most
		// BodyLimit before a handler runs, then streams the rest; nor does
		// it parse a multipart form before one). boundBody reads every
		// other body whole, up to formLimit.
		BodyLimit: formLimit, StreamRequestBody: true, DisablePreParseMultipartForm: true,
		ErrorHandler: a.errorPage,
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
	a.app.Use(a.boundBody, localweb.Guard(a.csrf))
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
	in.Post(bulkPath, a.importNDJSON)
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
		return a.failed(c, "login", badForm("Enter your staff id and password."), fiber.Map{"Staff": staff})
	}
	cl, err := NewClient(a.cfg.Gateway, "")
	if err != nil {
		return err
	}
	s, err := cl.Login(c.UserContext(), staff, pw)
	if err != nil {
		return a.failed(c, "login", err, fiber.Map{"Staff": staff})
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
		return a.failed(c, "home", err, data)
	}
	return a.render(c, "home", data)
}

func (a *App) createPatient(c *fiber.Ctx) error {
	id := strings.TrimSpace(c.FormValue("id"))
	if err := sess(c).client.CreatePatient(c.UserContext(), id); err != nil {
		return a.failed(c, "home", err, fiber.Map{"NewID": id})
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
		return a.failed(c, "home", err, fiber.Map{"Find": id})
	}
	return a.render(c, "patient", fiber.Map{"P": p, "Flash": c.Query("done")})
}

// back re-renders the patient's page with an error, keeping what was typed.
func (a *App) back(c *fiber.Ctx, id string, err error, typed fiber.Map) error {
	p, perr := sess(c).client.Patient(c.UserContext(), id)
	if perr != nil {
		return a.failed(c, "home", perr, fiber.Map{"Find": id})
	}
	typed["P"] = p
	return a.failed(c, "patient", err, typed)
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
		return a.back(c, id, badForm(fmt.Sprintf("the desk code %q: %v — check it against the patient's app", typed, err)), fiber.Map{"DeskCode": typed})
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
		return a.failed(c, "import", badForm("Choose a FHIR Bundle file (JSON) to import."), nil)
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
		return a.failed(c, "import", err, nil)
	}
	return c.Redirect(fmt.Sprintf("/patient?id=%s&done=%s", url.QueryEscape(rep.Patient), url.QueryEscape(fmt.Sprintf("imported %d entries (%d new, %d updated, %d unchanged)", rep.Entries, rep.Created, rep.Updated, rep.Unchanged))), fiber.StatusSeeOther)
}

// importNDJSON streams a bulk upload (one or more NDJSON files) through to
// the gateway's bulk import as the browser sends it, and shows the
// gateway's report: what went in and each patient refused. Admins only:
// the desk refuses others before sending anything (the gateway would).
func (a *App) importNDJSON(c *fiber.Ctx) error {
	s := sess(c)
	if !s.admin() {
		return fiber.NewError(fiber.StatusForbidden, "Not allowed: only an admin may run a bulk import")
	}
	mr := localweb.StreamedForm(c)
	if mr == nil {
		return a.bulkPage(c, BulkReport{}, fmt.Errorf("%w: not a multipart form with the form token first", ErrBadUpload))
	}
	u := &upload{c: c, mr: mr, limit: a.cfg.BulkLimit}
	first, err := u.nextPart()
	if errors.Is(err, io.EOF) {
		return a.bulkPage(c, BulkReport{}, ErrNoFiles)
	}
	if err != nil {
		return a.bulkPage(c, BulkReport{}, err)
	}
	next := func() (NDJSONFile, error) {
		p := first
		if p == nil {
			if p, err = u.nextPart(); err != nil {
				return NDJSONFile{}, err
			}
		}
		first = nil
		return NDJSONFile{Name: p.FileName(), R: &uploadFile{u: u, p: p}}, nil
	}
	rep, err := s.client.ImportNDJSONFrom(c.UserContext(), next, 0, nil)
	if err != nil && !errors.Is(err, ErrRefusedPatients) {
		a.cfg.Log.Warn("Desk bulk import failed", "staff", s.staff, "status", pageStatus(err), "err", err)
	}
	return a.bulkPage(c, rep, err)
}

// bulkPage shows the import page with a bulk import's report or error,
// under the status pageStatus gives.
func (a *App) bulkPage(c *fiber.Ctx, rep BulkReport, err error) error {
	data := fiber.Map{}
	switch {
	case err == nil:
		data["Bulk"] = rep
	case errors.Is(err, ErrRefusedPatients):
		data["Bulk"], data["Refusals"] = rep, rep.Refusals()
		data["Error"] = fmt.Sprintf("%d refused: nothing of theirs was written (listed below); the others went in.", len(rep.Refused))
	case errors.Is(err, ErrNoFiles):
		data["Error"] = "Choose one or more NDJSON files to import."
	case pageStatus(err) == fiber.StatusBadGateway:
		data["Error"] = "The import did not finish: " + refusal(err) + ". The patients the gateway stored before it stopped stay; importing the same files again resumes it."
	case pageStatus(err) == fiber.StatusUnprocessableEntity:
		data["Error"] = refusal(err) // the gateway's words say nothing went in, and why
	default:
		data["Error"] = "Nothing was imported: " + refusal(err)
	}
	c.Status(pageStatus(err))
	return a.render(c, "import", data)
}

// upload reads the files of a bulk upload, part after part, keeping the
// browser's connection open while it pauses (bulkIdle a read, not the
// server's ReadTimeout for the whole request) and counting its bytes
// against the limit.
type upload struct {
	c     *fiber.Ctx
	mr    *multipart.Reader
	limit int64
	read  int64
}

// awake gives the browser bulkIdle for its next bytes.
func (u *upload) awake() {
	if conn := u.c.Context().Conn(); conn != nil {
		conn.SetReadDeadline(time.Now().Add(bulkIdle))
	}
}

// nextPart returns the next file of the upload (io.EOF after the last);
// other fields and a file input left empty are skipped.
func (u *upload) nextPart() (*multipart.Part, error) {
	for {
		u.awake()
		p, err := u.mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadUpload, err)
		}
		if p.FileName() != "" {
			return p, nil
		}
	}
}

// uploadFile is one file of an upload, read as the gateway takes it.
type uploadFile struct {
	u *upload
	p *multipart.Part
}

func (f *uploadFile) Read(b []byte) (int, error) {
	f.u.awake()
	n, err := f.p.Read(b)
	f.u.read += int64(n)
	if f.u.read > f.u.limit {
		return n, fmt.Errorf("%w (%s at most in one upload; split the export, or use medrec desk import-ndjson)", ErrUploadTooLarge, size(f.u.limit))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("%w: %v", ErrBadUpload, err)
	}
	return n, err
}

func (a *App) staff(c *fiber.Ctx) error {
	list, err := sess(c).client.Staff(c.UserContext())
	if err != nil {
		return a.failed(c, "staff", err, nil)
	}
	return a.render(c, "staff", fiber.Map{"Staff": list, "Flash": c.Query("done")})
}

func (a *App) addStaff(c *fiber.Ctx) error {
	ns := NewStaff{ID: strings.TrimSpace(c.FormValue("id")), Name: strings.TrimSpace(c.FormValue("name")), Role: c.FormValue("role"), Password: c.FormValue("password")}
	if _, err := sess(c).client.AddStaff(c.UserContext(), ns); err != nil {
		list, _ := sess(c).client.Staff(c.UserContext())
		return a.failed(c, "staff", err, fiber.Map{"Staff": list, "New": ns})
	}
	return c.Redirect("/staff?done="+url.QueryEscape("added "+ns.ID), fiber.StatusSeeOther)
}

// boundBody reads the request's body, at most formLimit bytes of it, so
// that handlers see it whole (c.FormValue, c.FormFile); a longer one is
// refused (413). A bulk import's upload is left to its handler, which
// streams it.
func (a *App) boundBody(c *fiber.Ctx) error {
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		return c.Next()
	}
	tooLarge := func(what string, limit int64) error {
		// The rest of the body is not read: the connection is not reused.
		c.Context().SetConnectionClose()
		return fiber.NewError(fiber.StatusRequestEntityTooLarge, fmt.Sprintf("%s is larger than this desk takes (%s)", what, size(limit)))
	}
	cl := int64(c.Request().Header.ContentLength())
	if c.Method() == fiber.MethodPost && strings.TrimRight(strings.ToLower(c.Path()), "/") == bulkPath {
		c.Context().SetConnectionClose() // what the handler leaves unread cannot be skipped
		if cl > a.cfg.BulkLimit {
			return tooLarge("the upload", a.cfg.BulkLimit)
		}
		return c.Next()
	}
	if cl > formLimit {
		return tooLarge("the form", formLimit)
	}
	body, err := io.ReadAll(io.LimitReader(stream, formLimit+1))
	if err != nil {
		c.Context().SetConnectionClose()
		return fiber.NewError(fiber.StatusBadRequest, "reading the form: "+err.Error())
	}
	if len(body) > formLimit {
		return tooLarge("the form", formLimit)
	}
	c.Request().SetBody(body)
	return c.Next()
}

// pageStatus is the HTTP status of a page that shows err: the gateway's
// refusals keep theirs (400 bad input, 403 not allowed, 422 nothing
// imported, 429 busy …), its failures and silence are 502, and the
// desk's own refusals of a form or an upload 400 or 413. A bulk import that took
// some patients and refused others is 200, as at the gateway: an error
// status means nothing was stored.
func pageStatus(err error) int {
	var e *Error
	switch {
	case err == nil, errors.Is(err, ErrRefusedPatients):
		return fiber.StatusOK
	case errors.Is(err, ErrNoFiles), errors.Is(err, ErrBadUpload):
		return fiber.StatusBadRequest
	case errors.Is(err, ErrUploadTooLarge):
		return fiber.StatusRequestEntityTooLarge
	case errors.As(err, &e) && e.Status >= 400 && e.Status < 500:
		return e.Status
	}
	return fiber.StatusBadGateway
}

// failed shows page with err in words, under err's status (pageStatus): a
// form the desk or the gateway refused is never answered 200, and what was
// typed is kept in data.
func (a *App) failed(c *fiber.Ctx, page string, err error, data fiber.Map) error {
	if data == nil {
		data = fiber.Map{}
	}
	data["Error"] = refusal(err)
	c.Status(pageStatus(err))
	return a.render(c, page, data)
}

// badForm is the desk's own refusal of a form it will not send (400).
func badForm(msg string) error {
	return &Error{Status: fiber.StatusBadRequest, Message: msg}
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
		data["Me"] = fiber.Map{"Staff": s.staff, "Name": s.name, "Role": s.role, "Admin": s.admin()}
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

// size says a number of bytes in words.
func size(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d bytes", n)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
