// Package wallet is what a patient's (or a viewer's) device does with its
// 12 words: find every relationship again from the chain, connect to a
// provider (prove Ownership, send the claim to its gateway), read records
// from every gateway in parallel and merge them, share and revoke, verify
// the access log and the record set against the provider's anchors, and
// read what others shared as an anonymous viewer.
//
// Keys never leave the process: requests are signed here, proofs made here,
// and only public values (tags, delegate addresses, proofs, signatures) are
// sent to gateways.
package wallet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/circuits"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/delegate"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/prover"
	"github.com/medrec-zk/medrec/tagcode"
	"github.com/medrec-zk/medrec/zkhash"
)

// Wallet is one person's keys on one network.
type Wallet struct {
	keys   *delegate.Keys
	view   *chainview.View
	d      *contracts.Deployment
	prover *prover.Prover
	http   *http.Client
	now    func() time.Time
	// enrolWait is how long a proof waits for the commitment to appear in
	// the wallet's view: the node it reads may be a block or two behind the
	// desk that just enrolled it.
	enrolWait time.Duration
	// buckets, when set, is where the wallet's membership path comes from
	// instead of its view's tree (bucketpaths.go).
	buckets *bucketPaths

	mu    sync.Mutex
	cache map[recordsKey]cachedRecords // the last records read at each provider

	signMu sync.Mutex // one owner-signed grant or revocation at a time (share.go)

	mem memories // what this device verified before (verify.go)

	namesMu sync.Mutex // names, seen-state, saved shares (names.go); derivations (derived.go)
	der     derived
	logs    map[logKey][]keptEntry // the verified prefix of each access log read this session (derived.go)
}

// recordsKey names one relationship's records at one gateway.
type recordsKey struct {
	provider uint32
	tag, url string
}

// cachedRecords are a provider's records as read when its change sequence
// was at most seq.
type cachedRecords struct {
	seq  uint64
	recs []Record
}

// New returns a wallet. The view must follow the deployment d.
func New(keys *delegate.Keys, view *chainview.View, d *contracts.Deployment, p *prover.Prover) *Wallet {
	return &Wallet{keys: keys, view: view, d: d, prover: p, http: &http.Client{Timeout: 20 * time.Second}, now: time.Now, enrolWait: 15 * time.Second, cache: map[recordsKey]cachedRecords{},
		der: derived{tags: map[uint32]fr.Element{}, delegates: map[[2]uint32]*delegate.Account{}}, logs: map[logKey][]keptEntry{}}
}

// Keys returns the wallet's keys.
func (w *Wallet) Keys() *delegate.Keys { return w.keys }

// View returns the chain view the wallet reads.
func (w *Wallet) View() *chainview.View { return w.view }

// Commitment returns the identity commitment to show at the first
// provider's desk, to be enrolled. Once enrolled, the chain's Enrolled
// event names the provider that enrolled it, so showing it at another desk
// would tell that desk where the patient enrolled: use DeskCode there.
func (w *Wallet) Commitment() (string, error) {
	c, err := w.keys.Commitment()
	if err != nil {
		return "", err
	}
	return zkhash.Hex(c), nil
}

// Enrolled reports whether the identity commitment is in the patient
// registry: as of the view's last sync, or in bucket mode (UseBucketPaths)
// as of the chain's head.
func (w *Wallet) Enrolled() (bool, error) {
	c, err := w.keys.Commitment()
	if err != nil {
		return false, err
	}
	if w.buckets != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		i, err := w.buckets.findLeaf(ctx, w, c)
		return i >= 0, err
	}
	_, err = w.view.MerkleProof(c)
	return err == nil, nil
}

// DeskCode returns the desk code of the patient's tag at provider p: what
// the patient shows at p's desk — and only there — so that the claim code
// staff issue opens the relationship for this tag alone.
func (w *Wallet) DeskCode(p uint32) (tagcode.Code, error) {
	t, err := w.tag(p)
	if err != nil {
		return "", err
	}
	return tagcode.Of(zkhash.Big(t))
}

// Relationship is one of the patient's relationships, found from the chain.
type Relationship struct {
	Provider chainview.Provider
	Tag      *big.Int
	Rotation uint32
	Delegate *delegate.Account // this device's delegate for the relationship
	// OwnedHere: the chain's owner is this seed's delegate at the current
	// rotation (false: rotated with a key this seed does not derive).
	OwnedHere bool
	Grants    []chainview.Grant
}

// Relationships finds the patient's relationships at every provider from
// the chain alone: tag_p = H(D_tag; s, p) for each registered provider p.
func (w *Wallet) Relationships(ctx context.Context) ([]Relationship, error) {
	if err := w.view.Sync(ctx); err != nil {
		return nil, err
	}
	var out []Relationship
	for _, p := range w.view.Providers() {
		tagEl, err := w.tag(p.ID)
		if err != nil {
			return nil, err
		}
		tag := zkhash.Big(tagEl)
		rel, ok := w.view.Relationship(tag)
		if !ok {
			continue
		}
		d, err := w.delegateAccount(p.ID, rel.Rotation)
		if err != nil {
			return nil, err
		}
		out = append(out, Relationship{Provider: p, Tag: tag, Rotation: rel.Rotation, Delegate: d, OwnedHere: d.Address == rel.Owner, Grants: w.view.GrantsOf(tag)})
	}
	return out, nil
}

// Relationship returns the relationship at provider p.
func (w *Wallet) Relationship(ctx context.Context, p uint32) (Relationship, error) {
	rels, err := w.Relationships(ctx)
	if err != nil {
		return Relationship{}, err
	}
	for _, r := range rels {
		if r.Provider.ID == p {
			if !r.OwnedHere {
				return r, fmt.Errorf("wallet: the relationship at %s is owned by a delegate this seed does not derive", r.Provider.Name)
			}
			return r, nil
		}
	}
	return Relationship{}, fmt.Errorf("wallet: no relationship at provider %d yet", p)
}

// UnreachableError says a provider's gateway did not answer.
type UnreachableError struct {
	Provider string
	Err      error // what the connection said (for logs)
}

func (e *UnreachableError) Error() string {
	return e.Provider + " cannot be reached right now; try again in a moment"
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// GatewayError is a gateway's refusal, with its status and message.
type GatewayError struct {
	Provider string
	Status   int
	Message  string
}

// Error says it in words a person reads; the status is for code.
func (e *GatewayError) Error() string {
	switch {
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		return fmt.Sprintf("%s refused: %s", e.Provider, e.Message)
	case e.Status == http.StatusNotFound:
		return fmt.Sprintf("%s does not have it: %s", e.Provider, e.Message)
	case e.Status == http.StatusTooManyRequests:
		return fmt.Sprintf("%s is busy; try again in a moment", e.Provider)
	case e.Status >= 500:
		return fmt.Sprintf("%s had a problem on its side (%s); try again later", e.Provider, e.Message)
	}
	return fmt.Sprintf("%s could not do it: %s", e.Provider, e.Message)
}

// do sends a request to a gateway and decodes a JSON answer into out.
func (w *Wallet) do(ctx context.Context, p chainview.Provider, req *http.Request, out any) ([]byte, error) {
	req = req.WithContext(ctx)
	res, err := w.http.Do(req)
	if err != nil {
		return nil, &UnreachableError{Provider: p.Name, Err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	if res.StatusCode >= 300 {
		var oo struct {
			Issue []struct {
				Diagnostics string `json:"diagnostics"`
			} `json:"issue"`
			Description string `json:"error_description"` // an OAuth endpoint's (RFC 6749)
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &oo) == nil && len(oo.Issue) > 0 {
			msg = oo.Issue[0].Diagnostics
		} else if oo.Description != "" {
			msg = oo.Description
		}
		return nil, &GatewayError{Provider: p.Name, Status: res.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return nil, fmt.Errorf("%s: malformed answer: %w", p.Name, err)
		}
	}
	return body, nil
}

func (w *Wallet) postJSON(ctx context.Context, p chainview.Provider, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest("POST", strings.TrimRight(p.GatewayURL, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	_, err = w.do(ctx, p, req, out)
	return err
}

// signedGet sends a GET signed by the relationship's delegate.
func (w *Wallet) signedGet(ctx context.Context, r Relationship, target string, out any) ([]byte, error) {
	return signedGet(ctx, w, r.Provider, r.Delegate, r.Tag, target, out)
}

func signedGet(ctx context.Context, w *Wallet, p chainview.Provider, acct *delegate.Account, tag *big.Int, target string, out any) ([]byte, error) {
	req, err := http.NewRequest("GET", strings.TrimRight(p.GatewayURL, "/")+target, nil)
	if err != nil {
		return nil, err
	}
	err = gatewayauth.Sign(req.Header, gatewayauth.Request{
		Method: "GET", Path: req.URL.EscapedPath(), Query: req.URL.RawQuery, BodyHash: gatewayauth.BodyHash(nil),
		Tag: tag, Audience: p.ID,
	}, acct.PrivateKey(), gatewayauth.Domain{ChainID: w.d.ChainID, Registry: w.d.AgentRegistry}, w.now())
	if err != nil {
		return nil, err
	}
	return w.do(ctx, p, req, out)
}

// ownership proves Ownership at provider p binding (action, owner, counter).
func (w *Wallet) ownership(ctx context.Context, p uint32, action circuits.Action, owner common.Address, counter uint64) (prover.Proof, circuits.OwnershipPublic, error) {
	if err := w.view.Sync(ctx); err != nil {
		return prover.Proof{}, circuits.OwnershipPublic{}, err
	}
	c, err := w.keys.Commitment()
	if err != nil {
		return prover.Proof{}, circuits.OwnershipPublic{}, err
	}
	path, err := w.enrolledPath(ctx, c)
	if err != nil {
		return prover.Proof{}, circuits.OwnershipPublic{}, err
	}
	s, err := w.keys.Identity()
	if err != nil {
		return prover.Proof{}, circuits.OwnershipPublic{}, err
	}
	return w.prover.ProveOwnership(circuits.OwnershipWitness{
		Secret: s.Element(), Path: path, Provider: p,
		Signal: circuits.OwnershipSignal(action, owner, counter, w.d.ChainID, w.d.Relationships),
	})
}

// ErrNotEnrolled says the identity commitment is not in the patient
// registry as the wallet's chain node sees it.
var ErrNotEnrolled = errors.New("your enrolment is not on the chain")

// enrolledPath returns c's Merkle path from the view. A commitment a desk
// enrolled a moment ago may not have reached the wallet's node yet: it
// syncs again for up to enrolWait before it says so.
func (w *Wallet) enrolledPath(ctx context.Context, c fr.Element) (merkle.Proof, error) {
	if w.buckets != nil {
		return w.bucketPath(ctx, c)
	}
	deadline := time.Now().Add(w.enrolWait)
	for {
		path, err := w.view.MerkleProof(c)
		if err == nil {
			return path, nil
		}
		if !time.Now().Before(deadline) {
			return merkle.Proof{}, fmt.Errorf("%w (as of block %d, after waiting %s): if a desk enrolled you a moment ago, try again in a minute; otherwise show your enrolment code at a provider's desk first", ErrNotEnrolled, w.view.Head(), w.enrolWait.Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return merkle.Proof{}, fmt.Errorf("%w: %w", ErrNotEnrolled, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
		if err := w.view.Sync(ctx); err != nil {
			return merkle.Proof{}, err
		}
	}
}

// Connect claims the relationship at provider p with the one-time code the
// provider's staff handed over: the code says who the patient is there, the
// proof that this seed holds an enrolled identity; the gateway opens the
// relationship on chain.
func (w *Wallet) Connect(ctx context.Context, p uint32, code string) error {
	if err := w.view.Sync(ctx); err != nil {
		return err
	}
	prov, ok := w.view.Provider(p)
	if !ok || !prov.Active {
		return fmt.Errorf("wallet: provider %d is not an active provider", p)
	}
	d, err := w.keys.Delegate(p, 0)
	if err != nil {
		return err
	}
	proof, pub, err := w.ownership(ctx, p, circuits.ActionOpen, d.Address, 0)
	if err != nil {
		return err
	}
	if err := w.postJSON(ctx, prov, "/claims", map[string]string{
		"code": strings.TrimSpace(code), "tag": zkhash.Hex(pub.Tag), "owner": d.Address.Hex(), "root": zkhash.Hex(pub.Root), "proof": proof.String(),
	}, nil); err != nil {
		return err
	}
	// The gateway answers once its own node mined the opening; this
	// device's node may be a block behind. Connected means connected here:
	// the app's next page must show it.
	tag := zkhash.Big(pub.Tag)
	if err := w.awaitChain(ctx, chainWait, func() bool {
		rel, ok := w.view.Relationship(tag)
		return ok && rel.Owner == d.Address
	}); err != nil {
		return fmt.Errorf("wallet: %s opened the relationship, but this device's chain node has not shown it after %s: look again in a minute", prov.Name, chainWait)
	}
	return nil
}

// ProviderResult says how reading one provider went.
type ProviderResult struct {
	Provider chainview.Provider
	Count    int
	Err      error
	Took     time.Duration
	Cached   bool // unchanged since the last read: the gateway listed no new change
}

// Records reads every relationship's records in parallel ($everything, all
// pages) and merges them newest first. A slow or dead gateway shows in its
// ProviderResult and does not block the others beyond the per-gateway timeout.
func (w *Wallet) Records(ctx context.Context) ([]Record, []ProviderResult, error) {
	rels, err := w.Relationships(ctx)
	if err != nil {
		return nil, nil, err
	}
	results := make([]ProviderResult, len(rels))
	parts := make([][]Record, len(rels))
	var wg sync.WaitGroup
	for i, r := range rels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			if !r.OwnedHere {
				results[i] = ProviderResult{Provider: r.Provider, Err: errors.New("owned by a delegate this seed does not derive")}
				return
			}
			recs, cached, err := w.providerRecords(ctx, r)
			results[i] = ProviderResult{Provider: r.Provider, Count: len(recs), Err: err, Took: time.Since(start), Cached: cached}
			parts[i] = recs
		}()
	}
	wg.Wait()
	return Merge(parts...), results, nil
}

type bundle struct {
	Link []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		// The version is beside the resource, whose bytes are served as
		// stored: the entry's link to the version's URL (…/_history/v);
		// gateways before that wrote it as the entry's response.etag.
		Link []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		} `json:"link"`
		Resource json.RawMessage `json:"resource"`
		Response struct {
			Etag string `json:"etag"`
		} `json:"response"`
	} `json:"entry"`
}

// providerRecords returns the relationship's records at its provider: those
// read before when the gateway lists no change since, read afresh otherwise.
// The change sequence is read before the records, so a write in between
// shows as a change next time and is never missed.
func (w *Wallet) providerRecords(ctx context.Context, r Relationship) ([]Record, bool, error) {
	key := recordsKey{provider: r.Provider.ID, tag: r.Tag.String(), url: r.Provider.GatewayURL}
	w.mu.Lock()
	c, ok := w.cache[key]
	w.mu.Unlock()
	var seq uint64
	if ok {
		ch, err := w.Changes(ctx, r.Provider.ID, c.seq)
		if err != nil {
			return nil, false, err
		}
		if len(ch) == 0 {
			return c.recs, true, nil
		}
		seq = ch[len(ch)-1].Seq
	} else {
		var out struct {
			Latest uint64 `json:"latest"`
		}
		if _, err := w.signedGet(ctx, r, "/patient/changes?since=0&limit=1", &out); err != nil {
			return nil, false, err
		}
		seq = out.Latest
	}
	recs, err := w.everything(ctx, r)
	if err != nil {
		return recs, false, err
	}
	w.mu.Lock()
	w.cache[key] = cachedRecords{seq: seq, recs: recs}
	w.mu.Unlock()
	return recs, false, nil
}

func (w *Wallet) everything(ctx context.Context, r Relationship) ([]Record, error) {
	return readAll(ctx, "/fhir/Patient/$everything?_count=500", r.Provider, func(target string, out any) error {
		_, err := w.signedGet(ctx, r, target, out)
		return err
	})
}

// readAll follows a searchset's next links.
func readAll(ctx context.Context, first string, p chainview.Provider, get func(target string, out any) error) ([]Record, error) {
	var out []Record
	target := first
	for page := 0; target != "" && page < 1000; page++ {
		var b bundle
		if err := get(target, &b); err != nil {
			return out, err
		}
		for _, e := range b.Entry {
			r := NewRecord(p, e.Resource)
			fmt.Sscanf(e.Response.Etag, `W/"%d"`, &r.Version)
			for _, l := range e.Link {
				if _, v, ok := strings.Cut(l.URL, "/_history/"); ok && l.Relation == "latest-version" {
					r.Version, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			out = append(out, r)
		}
		target = ""
		for _, l := range b.Link {
			if l.Relation == "next" {
				u, err := url.Parse(l.URL)
				if err != nil {
					return out, fmt.Errorf("%s: bad next link: %w", p.Name, err)
				}
				target = u.RequestURI()
			}
		}
	}
	return out, nil
}

// Merge merges per-provider records into one timeline, newest first (records
// without a date last), ties broken by provider, type and id.
func Merge(parts ...[]Record) []Record {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]Record, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Date.Equal(b.Date) {
			if a.Date.IsZero() || b.Date.IsZero() {
				return b.Date.IsZero()
			}
			return a.Date.After(b.Date)
		}
		if a.Provider.ID != b.Provider.ID {
			return a.Provider.ID < b.Provider.ID
		}
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		return a.ID < b.ID
	})
	return out
}

// ExportBundle returns every record as one FHIR collection Bundle.
func ExportBundle(recs []Record) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Bundle","type":"collection","entry":[`)
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(',')
		}
		full, _ := json.Marshal(fmt.Sprintf("%s/%s/%s", strings.TrimRight(r.Provider.GatewayURL, "/")+"/fhir", r.Type, r.ID))
		fmt.Fprintf(&b, `{"fullUrl":%s,"resource":`, full)
		var compact bytes.Buffer
		if err := json.Compact(&compact, r.Raw); err != nil {
			return nil, err
		}
		b.Write(compact.Bytes())
		b.WriteByte('}')
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// Scope is re-exported for callers building grants.
type Scope = access.Scope

// Change is a new record version at a provider (from its gateway, never
// from a per-patient chain event: there are none).
type Change struct {
	Seq     uint64 `json:"seq"`
	Type    string `json:"type"`
	ID      string `json:"id"`
	Version int64  `json:"version"`
}

// Changes returns every record change at provider p after sequence since,
// reading the gateway's pages until the last.
func (w *Wallet) Changes(ctx context.Context, p uint32, since uint64) ([]Change, error) {
	r, err := w.Relationship(ctx, p)
	if err != nil {
		return nil, err
	}
	var all []Change
	for {
		var out struct {
			Changes []Change `json:"changes"`
			More    bool     `json:"more"` // another page follows
		}
		if _, err := w.signedGet(ctx, r, fmt.Sprintf("/patient/changes?since=%d", since), &out); err != nil {
			return all, err
		}
		for _, c := range out.Changes {
			if c.Seq <= since {
				return all, fmt.Errorf("%s: change %d out of order", r.Provider.Name, c.Seq)
			}
			since = c.Seq
		}
		all = append(all, out.Changes...)
		if !out.More || len(out.Changes) == 0 {
			return all, nil
		}
	}
}
