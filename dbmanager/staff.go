package dbmanager

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/crypto/argon2"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// The desk's staff accounts: each staff member has a role (clerk or admin),
// a password for the desk's web page and an API token for the command line,
// both stored hashed. The tokens in Config.StaffTokens stay the provider's
// admin tokens (the first admin adds everyone else). Who may do what is
// decided in authorize.go (staffOnly, adminOnly); what staff do is logged.

// Password hashing: argon2id at OWASP's minimum (19 MiB, 2 passes, one
// lane), encoded with its parameters so they can be raised later.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
	minPassword  = 12
)

func hashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// checkPassword reports whether pw matches encoded (in constant time for a
// given encoding). An account without a password matches nothing.
func checkPassword(encoded, pw string) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var v int
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<21 || t > 16 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// loginLock slows password guessing: after maxFailures failed logins of one
// account within lockWindow, that account's logins are refused until the
// window has passed. In memory: a restart forgets (and so does another
// gateway process); the argon2 cost still bounds the guesses per second.
type loginLock struct {
	mu       sync.Mutex
	failures map[string][]time.Time
}

const (
	maxFailures = 10
	lockWindow  = 15 * time.Minute
)

func (l *loginLock) locked(id string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recent(id, now)) >= maxFailures
}

func (l *loginLock) fail(id string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failures == nil {
		l.failures = map[string][]time.Time{}
	}
	l.failures[id] = append(l.recent(id, now), now)
}

func (l *loginLock) clear(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.failures, id)
}

// recent drops the failures older than lockWindow (mu held).
func (l *loginLock) recent(id string, now time.Time) []time.Time {
	f := l.failures[id]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= lockWindow {
		i++
	}
	if i == len(f) {
		delete(l.failures, id)
		return nil
	}
	f = f[i:]
	l.failures[id] = f
	return f
}

// sessionTTL is how long a desk login lasts.
const sessionTTL = 8 * time.Hour

type loginRequest struct {
	Staff    string `json:"staff"`
	Password string `json:"password"`
}

// login opens a desk session for a staff member's password.
func (g *Gateway) login(c *fiber.Ctx) error {
	var req loginRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	now := g.cfg.Now()
	refused := func() error {
		g.logins.fail(req.Staff, now)
		return g.logRefusal(c, store.LogEntry{ActorKind: store.ActorStaff, ActorID: logID(req.Staff), Action: "login", Outcome: store.Denied, Detail: "wrong staff id or password"},
			unauthorized("wrong staff id or password"))
	}
	if g.logins.locked(req.Staff, now) {
		return errf(fiber.StatusTooManyRequests, "throttled", "too many failed logins for this account; try again in %d minutes", int(lockWindow.Minutes()))
	}
	a, err := g.cfg.Store.StaffAccount(c.UserContext(), req.Staff)
	if errors.Is(err, store.ErrNotFound) {
		checkPassword(dummyPassword, req.Password) // the same cost as a known account
		return refused()
	}
	if err != nil {
		return err
	}
	if a.Disabled || !checkPassword(a.PasswordHash, req.Password) {
		return refused()
	}
	g.logins.clear(req.Staff)
	tok, err := NewToken()
	if err != nil {
		return err
	}
	exp := now.Add(sessionTTL)
	if err := g.cfg.Store.PutStaffSession(c.UserContext(), sha256.Sum256([]byte(tok)), a.ID, exp); err != nil {
		return storeError(err)
	}
	if err := g.appendLog(c, store.LogEntry{ActorKind: store.ActorStaff, ActorID: a.ID, Action: "login", Outcome: store.Allowed}); err != nil {
		return err
	}
	return c.JSON(fiber.Map{"token": tok, "expires": exp.Unix(), "staff": a.ID, "name": a.Name, "role": a.Role})
}

// dummyPassword is checked against for unknown accounts.
var dummyPassword = func() string {
	h, err := hashPassword("an account that does not exist")
	if err != nil {
		panic(err)
	}
	return h
}()

// logID bounds an id someone typed before it goes to the log.
func logID(s string) string {
	if err := store.ValidID(s); err != nil {
		return "(not an id)"
	}
	return s
}

// logout ends the desk session of its bearer token.
func (g *Gateway) logout(c *fiber.Ctx) error {
	tok, _ := bearer(c)
	if err := g.cfg.Store.DeleteStaffSession(c.UserContext(), sha256.Sum256([]byte(tok))); err != nil {
		return storeError(err)
	}
	return c.JSON(fiber.Map{"status": "logged out"})
}

// me says who the token belongs to.
func (g *Gateway) me(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"staff": staffID(c), "role": staffRole(c)})
}

type staffRequest struct {
	ID       string          `json:"id"`
	Name     string          `json:"name"`
	Role     store.StaffRole `json:"role"`
	Password string          `json:"password,omitempty"`
	Token    bool            `json:"token,omitempty"` // issue an API token (shown once)
}

func checkNewPassword(pw string) error {
	if len(pw) < minPassword {
		return badRequest("a password has at least %d characters", minPassword)
	}
	return nil
}

// addStaff creates a staff account (admins only). The API token, if asked
// for, is in the answer once and never again.
func (g *Gateway) addStaff(c *fiber.Ctx) error {
	var req staffRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	if !req.Role.Valid() {
		return badRequest("role must be %q or %q", store.RoleClerk, store.RoleAdmin)
	}
	if req.Password == "" && !req.Token {
		return badRequest("give the account a password (for the desk page) or a token (for the command line), or both")
	}
	a := store.StaffAccount{ID: req.ID, Name: req.Name, Role: req.Role, Created: g.cfg.Now()}
	if req.Password != "" {
		if err := checkNewPassword(req.Password); err != nil {
			return err
		}
		h, err := hashPassword(req.Password)
		if err != nil {
			return err
		}
		a.PasswordHash = h
	}
	var tok string
	if req.Token {
		var err error
		if tok, err = NewToken(); err != nil {
			return err
		}
		a.TokenHash = sha256.Sum256([]byte(tok))
	}
	entry := store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "staff-add", Outcome: store.Allowed, Detail: fmt.Sprintf("%s as %s", logID(req.ID), req.Role)}
	if err := g.cfg.Store.AddStaff(c.UserContext(), a, entry); err != nil {
		return storeError(err)
	}
	out := fiber.Map{"id": a.ID, "name": a.Name, "role": a.Role}
	if tok != "" {
		out["token"] = tok
	}
	return c.Status(fiber.StatusCreated).JSON(out)
}

// listStaff lists the accounts (admins only), never a hash.
func (g *Gateway) listStaff(c *fiber.Ctx) error {
	all, err := g.cfg.Store.ListStaff(c.UserContext())
	if err != nil {
		return storeError(err)
	}
	out := make([]fiber.Map, len(all))
	for i, a := range all {
		out[i] = fiber.Map{"id": a.ID, "name": a.Name, "role": a.Role, "disabled": a.Disabled,
			"password": a.PasswordHash != "", "token": a.TokenHash != ([32]byte{}), "created": a.Created.Unix()}
	}
	return c.JSON(fiber.Map{"staff": out})
}

type staffChangeRequest struct {
	Role     *store.StaffRole `json:"role,omitempty"`
	Password *string          `json:"password,omitempty"`
	Token    bool             `json:"newToken,omitempty"` // replace the API token (shown once)
	Disabled *bool            `json:"disabled,omitempty"`
}

// changeStaff changes a role, a password, the token, or disables an
// account (admins only; an admin cannot disable or demote itself).
func (g *Gateway) changeStaff(c *fiber.Ctx) error {
	id := c.Params("id")
	var req staffChangeRequest
	if err := decodeStrict(c.Body(), &req); err != nil {
		return err
	}
	var ch store.StaffChange
	var what []string
	if req.Role != nil {
		if !req.Role.Valid() {
			return badRequest("role must be %q or %q", store.RoleClerk, store.RoleAdmin)
		}
		if id == staffID(c) && *req.Role != store.RoleAdmin {
			return errf(fiber.StatusConflict, "conflict", "an admin cannot demote itself")
		}
		ch.Role, what = req.Role, append(what, "role "+string(*req.Role))
	}
	if req.Password != nil {
		if err := checkNewPassword(*req.Password); err != nil {
			return err
		}
		h, err := hashPassword(*req.Password)
		if err != nil {
			return err
		}
		ch.PasswordHash, what = &h, append(what, "password")
	}
	var tok string
	if req.Token {
		var err error
		if tok, err = NewToken(); err != nil {
			return err
		}
		h := sha256.Sum256([]byte(tok))
		ch.TokenHash, what = &h, append(what, "new token")
	}
	if req.Disabled != nil {
		if id == staffID(c) && *req.Disabled {
			return errf(fiber.StatusConflict, "conflict", "an admin cannot disable itself")
		}
		ch.Disabled, what = req.Disabled, append(what, fmt.Sprintf("disabled %v", *req.Disabled))
	}
	if len(what) == 0 {
		return badRequest("nothing to change")
	}
	entry := store.LogEntry{ActorKind: store.ActorStaff, ActorID: staffID(c), Action: "staff-change", Outcome: store.Allowed, Detail: logID(id) + ": " + strings.Join(what, ", ")}
	if err := g.cfg.Store.UpdateStaff(c.UserContext(), id, ch, entry); err != nil {
		return storeError(err)
	}
	out := fiber.Map{"id": id, "changed": what}
	if tok != "" {
		out["token"] = tok
	}
	return c.JSON(out)
}
