package client

import (
	"errors"
	"net/url"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/medrec-zk/medrec/wallet"
)

// Apps (SMART App Launch): a provider's gateway sends the browser to
// smartauth.ApprovePath with the provider's id and its request's nonce.
// That first page is reached from another site, so it shows nothing and
// changes nothing: it moves on to this app's own review page (a same-origin
// navigation, which carries the session cookie). The review page asks the
// provider's gateway, at the URL the chain names, what the request is —
// never trusting a link's other parameters — and the patient approves or
// refuses; the answer (the wallet's signed approval or proof, or a refusal)
// goes back to that gateway through the browser. The keys never leave this
// app.

// appLink reads the provider and the request's nonce from a query string.
func appLink(raw string) (uint32, [32]byte, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, [32]byte{}, fiber.NewError(fiber.StatusBadRequest, "this link is not a valid app request")
	}
	p, nonce, err := wallet.ParseAppLink(q)
	if err != nil {
		return 0, [32]byte{}, fiber.NewError(fiber.StatusBadRequest, "this link is not a valid app request: "+err.Error())
	}
	return p, nonce, nil
}

// appRequest asks the provider's gateway, at the URL the chain names, what
// the request in the query string is.
func (a *App) appRequest(c *fiber.Ctx, raw string) (wallet.AppRequest, error) {
	p, nonce, err := appLink(raw)
	if err != nil {
		return wallet.AppRequest{}, err
	}
	r, err := a.wallet().FetchAppRequest(c.UserContext(), p, nonce)
	if err != nil {
		a.cfg.Log.Warn("Cannot read an app request from its gateway", "provider", p, "err", err)
		return wallet.AppRequest{}, fiber.NewError(fiber.StatusBadRequest, "the provider does not know this app request (it expired, was answered, or the link was not theirs); start again from the app: "+err.Error())
	}
	return r, nil
}

// smartLanding is where the gateway sends the browser.
func (a *App) smartLanding(c *fiber.Ctx) error {
	p, nonce, err := appLink(string(c.Request().URI().QueryString()))
	if err != nil {
		return err
	}
	next := "/smart/review?" + wallet.AppRequest{Provider: p, Nonce: nonce}.Query().Encode()
	return a.render(c, "smartland", fiber.Map{"Next": next, "Refresh": "0;url=" + next})
}

// smartReview shows the app's request.
func (a *App) smartReview(c *fiber.Ctx) error {
	r, err := a.appRequest(c, string(c.Request().URI().QueryString()))
	if err != nil {
		return err
	}
	return a.renderSmartReview(c, r)
}

func (a *App) renderSmartReview(c *fiber.Ctx, r wallet.AppRequest) error {
	w := a.wallet()
	data := fiber.Map{"Req": r, "Raw": r.Query().Encode()}
	if rel, err := w.Relationship(c.UserContext(), r.Provider); err == nil {
		data["Provider"] = rel.Provider.Name
	} else {
		// Not the patient there: a viewer approves with a share it holds.
		shares, err := a.viewerShares(c, r.Provider)
		if err != nil {
			return err
		}
		if len(shares) == 0 {
			a.cfg.Log.Warn("No relationship or share to approve an app for", "provider", r.Provider)
			return fiber.NewError(fiber.StatusBadRequest, "you are not connected to the provider this app asks about, and hold no share of it; connect there (or save the share you were given) first, then start again from the app")
		}
		data["Provider"], data["Shares"] = shares[0].Provider.Name, receivedRows(shares)
	}
	return a.render(c, "smartreview", data)
}

// viewerShares are the anonymous shares of provider p this app holds that
// are in force.
func (a *App) viewerShares(c *fiber.Ctx, p uint32) ([]wallet.Received, error) {
	list, err := a.wallet().Received(c.UserContext())
	if err != nil {
		return nil, err
	}
	var out []wallet.Received
	for _, r := range list {
		if r.Bundle != nil && r.OnChain && r.Provider.ID == p && grantStatus(r.Grant, time.Now()) == "active" {
			out = append(out, r)
		}
	}
	return out, nil
}

// approveAsViewer approves r with the share id this app holds.
func (a *App) approveAsViewer(c *fiber.Ctx, r wallet.AppRequest, id string) (string, error) {
	shares, err := a.viewerShares(c, r.Provider)
	if err != nil {
		return "", err
	}
	for _, s := range shares {
		if s.ID == id {
			return a.wallet().ApproveAppAsViewer(r, *s.Bundle, r.Expires)
		}
	}
	return "", errors.New("that share is not held here or no longer in force")
}

// smartAnswer signs the approval (or not) and sends the browser back to
// the gateway. The expiry is the one the page showed.
func (a *App) smartAnswer(c *fiber.Ctx) error {
	r, err := a.appRequest(c, c.FormValue("request"))
	if err != nil {
		return err
	}
	approved := c.FormValue("decision") == "approve"
	next := wallet.DenyApp(r)
	if approved {
		if !r.Expires.After(time.Now()) {
			return fiber.NewError(fiber.StatusBadRequest, "this request has expired: start again from the app")
		}
		if id := c.FormValue("share"); id != "" {
			next, err = a.approveAsViewer(c, r, id)
		} else {
			next, err = a.wallet().ApproveApp(c.UserContext(), r, r.Expires, c.FormValue("offline") == "1")
		}
		if err != nil {
			a.cfg.Log.Warn("Approving an app failed", "app", r.ClientID, "err", err)
			return fiber.NewError(fiber.StatusBadRequest, "the approval could not be made: "+err.Error())
		}
	}
	a.cfg.Log.Info("App request answered", "app", r.ClientID, "provider", r.Provider, "approved", approved)
	return a.render(c, "smartdone", fiber.Map{"Approved": approved, "Next": next, "Refresh": "0;url=" + next})
}
