package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/wallet"
)

// confirmWords are the positions (1-based) the user retypes after creation.
var confirmWords = []int{3, 7, 11}

func (a *App) index(c *fiber.Ctx) error {
	next := c.Query("next")
	if a.signedIn(c) {
		return c.Redirect(localPath(next), fiber.StatusSeeOther)
	}
	msg := ""
	if c.Query("locked") != "" {
		msg = "Locked. Nothing of your records is left in this window."
	}
	return a.onboarding(c, fiber.StatusOK, "", msg, next)
}

// onboarding renders the start page: unlock when this computer has keys
// (also after a failed restore: the way back stays), create or restore.
func (a *App) onboarding(c *fiber.Ctx, status int, problem, note, next string) error {
	_, err := os.Stat(a.cfg.Keystore)
	c.Status(status)
	return a.render(c, "onboarding", fiber.Map{"HasKeystore": err == nil, "Error": problem, "Note": note, "Next": next})
}

func (a *App) scrypt() (int, int) {
	if a.cfg.TestKeystores {
		return keystore.LightScryptN, keystore.LightScryptP
	}
	return keystore.StandardScryptN, keystore.StandardScryptP
}

func checkPassword(pw, again string) error {
	if pw == "" {
		return userErr("choose a password (at least 8 characters): it protects your keys on this computer")
	}
	if len(pw) < 8 {
		return userErr("choose a password of at least 8 characters")
	}
	if pw != again {
		return userErr("the two passwords differ")
	}
	return nil
}

// create shows a fresh mnemonic once and asks for some of its words back.
func (a *App) create(c *fiber.Ctx) error {
	if _, err := os.Stat(a.cfg.Keystore); err == nil {
		return a.onboarding(c, fiber.StatusBadRequest, "This computer already has keys: unlock them with your password.", "", "")
	}
	m, err := delegate.NewMnemonic()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.pending = m
	a.mu.Unlock()
	return c.Redirect("/create/words", fiber.StatusSeeOther)
}

// words shows the words made by create until they are confirmed: a reload
// shows the same words, never new ones. They are held in memory only and
// never in a URL.
func (a *App) words(c *fiber.Ctx) error {
	a.mu.Lock()
	m := a.pending
	a.mu.Unlock()
	if m == "" {
		return c.Redirect("/", fiber.StatusSeeOther)
	}
	return a.render(c, "words", fiber.Map{"Words": strings.Fields(m), "Confirm": confirmWords})
}

func (a *App) confirm(c *fiber.Ctx) error {
	a.mu.Lock()
	m := a.pending
	a.mu.Unlock()
	if m == "" {
		return a.onboarding(c, fiber.StatusBadRequest, "Start again: the words shown were not kept (the app was locked or restarted).", "", "")
	}
	words := strings.Fields(m)
	for _, i := range confirmWords {
		if strings.ToLower(trim(c.FormValue(fmt.Sprintf("w%d", i)))) != words[i-1] {
			return a.render(c, "words", fiber.Map{"Words": words, "Confirm": confirmWords, "Error": fmt.Sprintf("word %d is not right — check your copy of the words", i)})
		}
	}
	if err := checkPassword(c.FormValue("password"), c.FormValue("password2")); err != nil {
		return a.render(c, "words", fiber.Map{"Words": words, "Confirm": confirmWords, "Error": capital(err.Error())})
	}
	return a.save(c, m, c.FormValue("password"), true)
}

// save writes the keystore for mnemonic and opens it; fresh says the words
// were just made here (not restored).
func (a *App) save(c *fiber.Ctx, mnemonic, password string, fresh bool) error {
	n, p := a.scrypt()
	if err := delegate.WriteKeystore(a.cfg.Keystore, delegate.Keystore{Mnemonic: mnemonic}, password, n, p); err != nil {
		a.cfg.Log.Error("Cannot write the keystore", "err", err)
		return errors.New("your keys could not be saved on this computer (see the app's log); nothing was changed")
	}
	keys, err := delegate.FromMnemonic(mnemonic, "")
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.pending = ""
	a.mu.Unlock()
	if err := a.open(c, keys, fresh); err != nil {
		return err
	}
	return c.Redirect("/home", fiber.StatusSeeOther)
}

func (a *App) restore(c *fiber.Ctx) error {
	if trim(c.FormValue("words")) == "" {
		return a.onboarding(c, fiber.StatusBadRequest, "Type your 12 recovery words to restore.", "", "")
	}
	m, err := delegate.NormalizeMnemonic(c.FormValue("words"))
	if err != nil {
		return a.onboarding(c, fiber.StatusBadRequest, wordsError(err), "", "")
	}
	if err := checkPassword(c.FormValue("password"), c.FormValue("password2")); err != nil {
		return a.onboarding(c, fiber.StatusBadRequest, capital(err.Error())+".", "", "")
	}
	if _, err := os.Stat(a.cfg.Keystore); err == nil {
		return a.onboarding(c, fiber.StatusBadRequest, "This computer already has keys: unlock them with your password instead.", "", "")
	}
	return a.save(c, m, c.FormValue("password"), false)
}

func (a *App) unlock(c *fiber.Ctx) error {
	read := delegate.ReadKeystore
	if a.cfg.TestKeystores {
		read = delegate.ReadTestKeystore
	}
	next := c.FormValue("next")
	if c.FormValue("password") == "" {
		return a.onboarding(c, fiber.StatusBadRequest, "Type your password to unlock.", "", next)
	}
	ks, err := read(a.cfg.Keystore, c.FormValue("password"))
	if errors.Is(err, delegate.ErrWrongPassword) {
		return a.onboarding(c, fiber.StatusBadRequest, "That password is not the one for this computer's keys. Try again.", "", next)
	}
	if errors.Is(err, delegate.ErrTestKeystore) {
		return a.onboarding(c, fiber.StatusBadRequest, "These keys were made for tests: their password protection is too weak for real records. Restore your 12 words into new keys (after moving the test keys away).", "", next)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return a.onboarding(c, fiber.StatusBadRequest, "This computer has no keys yet: create new ones, or restore yours from your 12 words.", "", "")
	}
	if err != nil {
		a.cfg.Log.Error("Cannot read the keystore", "err", err)
		return a.onboarding(c, fiber.StatusBadRequest, "This computer's keys cannot be read (the file is damaged). Restore from your 12 words after moving it away.", "", next)
	}
	keys, err := ks.Keys()
	if err != nil {
		return err
	}
	if err := a.open(c, keys, false); err != nil {
		return a.onboarding(c, fiber.StatusServiceUnavailable, plain(err), "", next)
	}
	return c.Redirect(localPath(next), fiber.StatusSeeOther)
}

type providerRow struct {
	chainview.Provider
	Rel *wallet.Relationship
	New int // records added since last seen
	Err string
}

func (a *App) home(c *fiber.Ctx) error {
	w := a.wallet()
	ctx := c.UserContext()
	rels, err := w.Relationships(ctx)
	if err != nil {
		return err
	}
	seen, err := w.Seen()
	if err != nil {
		return err
	}
	var rows []providerRow
	for _, p := range w.View().Providers() {
		if !p.Active {
			continue
		}
		row := providerRow{Provider: p}
		for i := range rels {
			if rels[i].Provider.ID == p.ID {
				row.Rel = &rels[i]
			}
		}
		rows = append(rows, row)
	}
	// New-record badges, from every gateway at once: a slow one delays the
	// page by its own time only, never by the sum. What was seen is kept on
	// the device, so a restart changes no badge.
	var wg sync.WaitGroup
	for i := range rows {
		row := &rows[i]
		if row.Rel == nil || !row.Rel.OwnedHere {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, gatewayWait)
			defer cancel()
			if ch, err := w.Changes(ctx, row.ID, seen[row.ID]); err == nil {
				row.New = len(ch)
			} else {
				row.Err = plain(err)
			}
		}()
	}
	wg.Wait()
	grants, err := a.grantRows(w, rels, true)
	if err != nil {
		return err
	}
	data := fiber.Map{"Providers": rows, "Flash": flash(c.Query("done")), "Grants": grants}
	// The enrolment code only until enrolled: afterwards the chain names
	// the provider that enrolled it, and another desk must not see it.
	enrolled, err := w.Enrolled()
	if err != nil {
		return err
	}
	data["Enrolled"] = enrolled
	if !enrolled {
		cm, err := w.Commitment()
		if err != nil {
			return err
		}
		qr, err := qrSVG(cm, "QR code of your enrolment code")
		if err != nil {
			return err
		}
		data["Commitment"], data["QR"] = cm, qr
	}
	return a.render(c, "home", data)
}

// flash is the words of a finished action named in a redirect's ?done=.
func flash(done string) string {
	switch done {
	case "connected":
		return "Connected. Your records there now show under Records."
	case "shared":
		return "Shared."
	case "revoked":
		return "Stopped sharing: that person can no longer read these records."
	}
	return ""
}

func providerParam(s string) (uint32, error) {
	p, err := strconv.ParseUint(trim(s), 10, 32)
	if err != nil || p == 0 {
		return 0, userErr("choose a provider")
	}
	return uint32(p), nil
}

// connectPage shows the desk code of one provider — only that provider's,
// under its name — and takes the claim code its desk gives back.
func (a *App) connectPage(c *fiber.Ctx) error {
	p, err := providerParam(c.Query("provider"))
	if err != nil {
		return err
	}
	return a.renderConnect(c, p, "", "")
}

func (a *App) renderConnect(c *fiber.Ctx, p uint32, code, problem string) error {
	w := a.wallet()
	prov, ok := w.View().Provider(p)
	if !ok || !prov.Active {
		return userErr("there is no active provider %d", p)
	}
	desk, err := w.DeskCode(p)
	if err != nil {
		return err
	}
	qr, err := qrSVG(desk.String(), "QR code of your code for "+prov.Name)
	if err != nil {
		return err
	}
	enrolled, err := w.Enrolled()
	if err != nil {
		return err
	}
	return a.render(c, "connect", fiber.Map{"Provider": prov, "DeskCode": desk, "QR": qr, "Enrolled": enrolled, "Code": code, "Error": problem})
}

func (a *App) connect(c *fiber.Ctx) error {
	p, err := providerParam(c.FormValue("provider"))
	if err != nil {
		return err
	}
	code := trim(c.FormValue("code"))
	if code == "" {
		return a.renderConnect(c, p, "", "Enter the claim code the provider's desk gave you.")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 90*time.Second)
	defer cancel()
	if err := a.wallet().Connect(ctx, p, code); err != nil {
		c.Status(fiber.StatusBadRequest)
		return a.renderConnect(c, p, code, "Could not connect: "+plain(err))
	}
	return c.Redirect("/home?done=connected", fiber.StatusSeeOther)
}

// gatewayWait bounds how long a page waits for one gateway's badge.
const gatewayWait = 5 * time.Second
