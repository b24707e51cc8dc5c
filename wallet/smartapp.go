package wallet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/smartauth"
	"github.com/medrec-zk/medrec/zkhash"
)

// Apps (SMART App Launch): a provider's gateway sends the patient's
// browser here with an app's request to read their records at that
// provider; on yes the wallet signs an approval with the relationship's
// owner delegate (package smartauth) and the browser takes it back to the
// gateway. The approval names that provider's tag only: nothing of the
// patient's other relationships leaves, and no key does.

// ErrAppRequest: the parameters are not a link to an app request a
// gateway sends.
var ErrAppRequest = errors.New("wallet: not a valid app request")

// AppRequest is an app's request to read the patient's records at one
// provider, as that provider's gateway (at the URL the chain names)
// describes it.
type AppRequest struct {
	Gateway     string // the provider's gateway, as the chain names it
	Provider    uint32
	Nonce       [32]byte
	ClientID    string
	AppName     string
	RedirectURI string
	Granted     smartauth.Granted // the scopes the gateway would grant
	Expires     time.Time         // the expiry the gateway proposes
	Return      string            // where the answer goes: the gateway's callback
}

// ParseAppLink reads the provider and the request's nonce from the
// parameters of the gateway's redirect (the link's only parameters this
// wallet uses: anything else a link says could be forged).
func ParseAppLink(q url.Values) (uint32, [32]byte, error) {
	var nonce [32]byte
	bad := func(what string) (uint32, [32]byte, error) {
		return 0, nonce, fmt.Errorf("%w: %s", ErrAppRequest, what)
	}
	for _, k := range []string{smartauth.ParamProvider, smartauth.ParamRequest} {
		if len(q[k]) != 1 {
			return bad(k + " given once")
		}
	}
	p, err := strconv.ParseUint(q.Get(smartauth.ParamProvider), 10, 32)
	if err != nil || p == 0 {
		return bad("provider")
	}
	n, err := hexutil.Decode(q.Get(smartauth.ParamRequest))
	if err != nil || len(n) != 32 {
		return bad("request")
	}
	copy(nonce[:], n)
	return uint32(p), nonce, nil
}

// FetchAppRequest asks provider p's gateway, at the URL the chain's
// registry names, what its pending authorize request nonce is.
func (w *Wallet) FetchAppRequest(ctx context.Context, p uint32, nonce [32]byte) (AppRequest, error) {
	if err := w.view.Sync(ctx); err != nil {
		return AppRequest{}, err
	}
	prov, ok := w.view.Provider(p)
	if !ok || !prov.Active {
		return AppRequest{}, fmt.Errorf("wallet: provider %d is not an active provider of the registry", p)
	}
	base := strings.TrimRight(prov.GatewayURL, "/")
	req, err := http.NewRequest("GET", base+smartauth.RequestPath+"?"+url.Values{smartauth.ParamRequest: {hexutil.Encode(nonce[:])}}.Encode(), nil)
	if err != nil {
		return AppRequest{}, err
	}
	var sr smartauth.Request
	if _, err := w.do(ctx, prov, req, &sr); err != nil {
		return AppRequest{}, err
	}
	if sr.Provider != p || sr.ClientID == "" || sr.RedirectURI == "" {
		return AppRequest{}, fmt.Errorf("%w: %s described another request", ErrAppRequest, prov.Name)
	}
	granted, err := smartauth.Grant(sr.Scope, access.AllTypes)
	if err != nil {
		return AppRequest{}, fmt.Errorf("%w: scope: %v", ErrAppRequest, err)
	}
	r := AppRequest{Gateway: base, Provider: p, Nonce: nonce, ClientID: sr.ClientID, AppName: sr.AppName, RedirectURI: sr.RedirectURI,
		Granted: granted, Expires: time.Unix(sr.Expires, 0), Return: base + smartauth.ApprovedPath}
	if r.AppName == "" {
		r.AppName = r.ClientID
	}
	return r, nil
}

// Query returns the link's parameters again (to carry the request in a form).
func (r AppRequest) Query() url.Values {
	return url.Values{smartauth.ParamProvider: {strconv.FormatUint(uint64(r.Provider), 10)}, smartauth.ParamRequest: {hexutil.Encode(r.Nonce[:])}}
}

// Types lists what the app would read, for the patient: "all your
// records", or the resource types.
func (r AppRequest) Types() string {
	all := r.Granted.Read | r.Granted.Search
	if all == access.AllTypes {
		return "all your records"
	}
	return strings.Join(all.Types(), ", ")
}

// ApproveApp signs the patient's approval of r with the owner delegate of
// the relationship at r's provider, until expires, with offline access if
// the app asked for it and offline is set. It returns where to send the
// browser: the gateway's callback with the approval.
func (w *Wallet) ApproveApp(ctx context.Context, r AppRequest, expires time.Time, offline bool) (string, error) {
	rel, err := w.Relationship(ctx, r.Provider)
	if err != nil {
		return "", err
	}
	if !expires.After(w.now()) {
		return "", errors.New("wallet: the approval would end before it starts")
	}
	granted := r.Granted
	offline = offline && granted.Offline
	if !offline {
		granted = granted.WithoutOffline()
	}
	a := smartauth.Approval{Provider: r.Provider, Tag: rel.Tag, ClientID: r.ClientID, RedirectURI: r.RedirectURI,
		Scope: granted.Scope, Expiry: uint64(expires.Unix()), Offline: offline, Nonce: r.Nonce}
	sig, err := a.Sign(rel.Delegate.PrivateKey(), smartauth.Domain{ChainID: w.d.ChainID, Registry: w.d.AgentRegistry})
	if err != nil {
		return "", err
	}
	off := "0"
	if offline {
		off = "1"
	}
	return r.Return + "?" + url.Values{
		smartauth.ParamRequest: {hexutil.Encode(r.Nonce[:])}, smartauth.ParamTag: {hexutil.EncodeBig(rel.Tag)},
		smartauth.ParamExpiry: {strconv.FormatUint(a.Expiry, 10)}, smartauth.ParamOffline: {off},
		smartauth.ParamSignature: {hexutil.Encode(sig)},
	}.Encode(), nil
}

// DenyApp returns where to send the browser when the patient says no.
func DenyApp(r AppRequest) string {
	return r.Return + "?" + url.Values{smartauth.ParamRequest: {hexutil.Encode(r.Nonce[:])}, smartauth.ParamError: {smartauth.ErrorDenied}}.Encode()
}

// ApproveAppAsViewer approves r as the anonymous viewer of share b: an
// Entitlement proof (the viewer secret and b's grant secret) bound to r's
// nonce, until expires (the gateway cuts it to the grant's expiry). The
// gateway learns the grant id g, as when the viewer reads; no key leaves.
// It returns where to send the browser.
func (w *Wallet) ApproveAppAsViewer(r AppRequest, b ShareBundle, expires time.Time) (string, error) {
	if b.Provider != r.Provider {
		return "", fmt.Errorf("wallet: the share is of provider %d, the app asks about provider %d", b.Provider, r.Provider)
	}
	if !expires.After(w.now()) {
		return "", errors.New("wallet: the approval would end before it starts")
	}
	v, err := w.keys.Viewer(0)
	if err != nil {
		return "", err
	}
	tag, err := zkhash.ParseHex(b.Tag)
	if err != nil {
		return "", fmt.Errorf("wallet: share bundle tag: %w", err)
	}
	k, err := zkhash.ParseHex(b.K)
	if err != nil {
		return "", fmt.Errorf("wallet: share bundle secret: %w", err)
	}
	c := smartauth.Challenge(r.Nonce)
	ch, err := zkhash.ParseHex(hexutil.Encode(c[:]))
	if err != nil {
		return "", err
	}
	proof, pub, err := w.prover.ProveEntitlement(circuits.EntitlementWitness{ViewerSecret: v.Element(), GrantSecret: k, Tag: tag, Challenge: ch})
	if err != nil {
		return "", err
	}
	return r.Return + "?" + url.Values{
		smartauth.ParamRequest: {hexutil.Encode(r.Nonce[:])}, smartauth.ParamTag: {zkhash.Hex(pub.Tag)}, smartauth.ParamGrant: {zkhash.Hex(pub.Grant)},
		smartauth.ParamProof: {proof.String()}, smartauth.ParamExpiry: {strconv.FormatInt(expires.Unix(), 10)},
	}.Encode(), nil
}
