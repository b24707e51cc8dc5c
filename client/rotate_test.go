package client

import (
	"context"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/zkhash"
)

// post submits a form and follows the redirect, returning the final page,
// its status and its URL path.
func (ba benchApp) post(t *testing.T, path string, form url.Values) (string, int, string) {
	t.Helper()
	form.Set("csrf", ba.app.csrf)
	res, err := ba.hc.Post(ba.url+path, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return string(body), res.StatusCode, res.Request.URL.Path
}

// TestRotatePage walks the rotate flow over HTTP: the confirmation page
// lists the grants in force that will end, none ticked, with the warning;
// one POST rotates and re-issues the ticked grant, then redirects to a page
// a reload shows again without rotating again; a resubmitted form is
// refused and changes nothing.
func TestRotatePage(t *testing.T) {
	ctx := context.Background()
	ba := newBenchApp(t, 1, 2)
	w := ba.app.wallet()
	viewerKeys, err := delegate.FromMnemonic("legal winner thank year wave sausage worth useful legal winner thank yellow", "")
	if err != nil {
		t.Fatal(err)
	}
	doctor, _ := viewerKeys.Wallet()
	cv, _ := viewerKeys.ViewerCommitment(0)
	obs, _ := access.NewScope("Observation")
	if err := w.ShareWithAddress(ctx, 1, doctor.Address, obs, access.Treatment, time.Now().Add(7*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ShareAnonymous(ctx, 1, cv, obs, access.Research, time.Now().Add(3*24*time.Hour)); err != nil {
		t.Fatal(err)
	}

	if home := ba.get(t, "GET", "/home", nil); !strings.Contains(home, `id="rotate-1"`) {
		t.Fatal("home has no rotate button")
	}
	page := ba.get(t, "GET", "/rotate?provider=1", nil)
	for _, want := range []string{"every share made with it ends", "A lost or stolen device may have made some of these shares",
		doctor.Address.Hex()[:8], `class="grant-anonymous"`, `id="keep-0"`, `id="keep-1"`, `name="rotation" value="0"`} {
		if !strings.Contains(page, want) {
			t.Fatalf("the confirmation page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "checked") {
		t.Fatal("a grant is ticked to keep by default")
	}
	// The anonymous grant's keep value, as the page offers it.
	var keepAnon string
	for _, g := range w.View().GrantsOf(mustTag(t, w.Keys(), 1)) {
		if g.Kind == access.AnonymousGrantee {
			keepAnon = grantRef(g)
		}
	}
	if !strings.Contains(page, `value="`+keepAnon+`"`) {
		t.Fatalf("the page does not offer %s", keepAnon)
	}

	// A malformed keep value changes nothing.
	form := url.Values{"provider": {"1"}, "rotation": {"0"}, "keep": {"1:0x12"}}
	if body, status, _ := ba.post(t, "/rotate", form); status != 400 || !strings.Contains(body, "malformed") {
		t.Fatalf("malformed keep: %d %.300s", status, body)
	}
	if r, _ := w.Relationship(ctx, 1); r.Rotation != 0 {
		t.Fatal("a refused form rotated")
	}

	form = url.Values{"provider": {"1"}, "rotation": {"0"}, "keep": {keepAnon}}
	body, status, path := ba.post(t, "/rotate", form)
	if status != 200 || !strings.HasPrefix(path, "/rotate/done/") || !strings.Contains(body, `id="rotated"`) {
		t.Fatalf("rotate: %d at %s: %.500s", status, path, body)
	}
	kept, ended := section(body, `id="kept"`), section(body, `id="ended"`)
	if !strings.Contains(kept, "anonymous viewer") || strings.Contains(kept, "address") || !strings.Contains(ended, "address") || strings.Contains(ended, "anonymous") {
		t.Fatalf("kept %q, ended %q", kept, ended)
	}
	// Reload: the same summary, no second rotation.
	if again := ba.get(t, "GET", path, nil); !strings.Contains(again, "now number 1") {
		t.Fatalf("reloaded summary: %.300s", again)
	}
	// Resubmitting the form is refused: the key moved on.
	if body, status, _ := ba.post(t, "/rotate", form); status != 400 || !strings.Contains(body, "already replaced") {
		t.Fatalf("resubmitted: %d %.300s", status, body)
	}
	if r, _ := w.Relationship(ctx, 1); r.Rotation != 1 {
		t.Fatalf("rotation %d after one confirmation", r.Rotation)
	}
	share := ba.get(t, "GET", "/share", nil)
	if strings.Count(share, "ended (key replaced)") != 1 || strings.Count(share, `class="status">active`) != 1 {
		t.Fatalf("sharing page after the rotation:\n%s", section(share, `id="grants"`))
	}
	// An unknown summary id is a plain message.
	res, err := ba.hc.Get(ba.url + "/rotate/done/nope")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown summary: %d", res.StatusCode)
	}
}

// section returns the table that starts at marker.
func section(page, marker string) string {
	i := strings.Index(page, marker)
	if i < 0 {
		return ""
	}
	rest := page[i:]
	if j := strings.Index(rest, "</table>"); j >= 0 {
		return rest[:j]
	}
	return rest
}

func mustTag(t *testing.T, k *delegate.Keys, p uint32) *big.Int {
	t.Helper()
	tag, err := k.Tag(p)
	if err != nil {
		t.Fatal(err)
	}
	return zkhash.Big(tag)
}
