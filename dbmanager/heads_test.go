package dbmanager

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/simchain"
)

// setSyncInterval changes a running gateway's SyncInterval (tests only).
func (g *Gateway) setSyncInterval(d time.Duration) {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	g.cfg.SyncInterval = d
}

// revokeOnChain revokes grantee's grant with the owner's signature,
// relayed by provider 2's gateway account: not through the gateway under
// test, so nothing but the chain tells it.
func (w *world) revokeOnChain(kind uint8, grantee [32]byte) {
	w.t.Helper()
	ctx := context.Background()
	rel, err := w.chain.Client.Relationship(ctx, w.tag)
	if err != nil {
		w.t.Fatal(err)
	}
	rv := contracts.RevokeRequest{Tag: w.tag, GranteeKind: kind, Grantee: grantee, Nonce: rel.Nonce, Deadline: w.chain.Now(w.t) + 600}
	sig, err := contracts.Sign(w.owner, contracts.RevokeDigest(contracts.DomainSeparator(w.chain.ChainID, w.chain.D.Relationships), rv))
	if err != nil {
		w.t.Fatal(err)
	}
	tx, err := w.chain.Client.Revoke(ctx, w.chain.Auth(w.chain.Providers[1].Gateway), rv, sig)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := w.chain.Client.Wait(ctx, tx); err != nil {
		w.t.Fatal(err)
	}
}

// TestRevokeInForceWhenItsBlockArrives: a revocation mined by someone else
// reaches the gateway only through the chain. With SyncInterval an hour,
// polling serves the revoked doctor for that hour (the documented window of
// a gateway without a head source); following heads, the revocation is
// enforced as soon as its block is announced, and from then on.
func TestRevokeInForceWhenItsBlockArrives(t *testing.T) {
	for _, tc := range []struct {
		name        string
		follow      bool
		wantRefused bool
	}{
		{"following heads", true, true},
		{"polling only", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := simchain.New(t, 2, nil)
			w := newWorldOnChain(t, c, filepath.Join(t.TempDir(), "records.db"), func(cfg *Config) {
				if tc.follow {
					cfg.Heads = c.Sim.Client()
				}
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.follow {
				go w.gw.FollowHeads(ctx)
				waitFor(t, 5*time.Second, "subscribed", func() bool { return w.gw.heads.follower.State().Live })
			}
			w.open()
			doctor := simchain.Key("doctor")
			grantee := contracts.AddressGrantee(simchain.Addr(doctor))
			if r := w.grant(1, grantee, access.AllTypes, access.Treatment); r.status != 200 {
				t.Fatalf("grant: %d %s", r.status, r.body)
			}
			if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
				t.Fatalf("doctor before the revocation: %d %s", r.status, r.body)
			}
			w.gw.setSyncInterval(time.Hour)
			w.revokeOnChain(1, grantee)

			if !tc.wantRefused {
				if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
					t.Fatalf("polling gateway refused before its next sync: %d %s", r.status, r.body)
				}
				return
			}
			waitFor(t, 5*time.Second, "the revocation enforced", func() bool {
				return w.get(doctor, "/fhir/Observation/o1").status == 403
			})
			for i := 0; i < 5; i++ {
				if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 || !bytes.Contains(r.body, []byte("revoked")) {
					t.Fatalf("read %d after the revocation was enforced: %d %s", i, r.status, r.body)
				}
			}
		})
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// flakySource is a head source whose subscriptions the test breaks at will.
type flakySource struct {
	inner chainview.HeadSource
	subs  chan *flakySub
	fail  error // returned by SubscribeNewHead when set
}

type flakySub struct {
	ethereum.Subscription
	errc chan error
}

func (s *flakySub) Err() <-chan error { return s.errc }

func (f *flakySource) SubscribeNewHead(ctx context.Context, ch chan<- *types.Header) (ethereum.Subscription, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	sub, err := f.inner.SubscribeNewHead(ctx, ch)
	if err != nil {
		return nil, err
	}
	fs := &flakySub{Subscription: sub, errc: make(chan error, 1)}
	f.subs <- fs
	return fs, nil
}

// TestHeadsFallBackToPolling: a node that cannot push heads (HTTP) leaves
// the gateway on SyncInterval; a subscription lost while the node restarts
// does too, until subscribed again, and the first decision after that syncs.
func TestHeadsFallBackToPolling(t *testing.T) {
	t.Run("no subscriptions", func(t *testing.T) {
		c := simchain.New(t, 2, nil)
		src := &flakySource{inner: c.Sim.Client(), fail: rpc.ErrNotificationsUnsupported}
		w := newWorldOnChain(t, c, filepath.Join(t.TempDir(), "records.db"), func(cfg *Config) { cfg.Heads = src })
		if err := w.gw.FollowHeads(context.Background()); !errors.Is(err, chainview.ErrNoSubscriptions) {
			t.Fatalf("FollowHeads on an HTTP-like node: %v", err)
		}
		// The gateway still decides, by SyncInterval (1 ns here): it works.
		w.open()
		if r := w.get(w.owner, "/fhir/Observation/o1"); r.status != 200 {
			t.Fatalf("owner read: %d %s", r.status, r.body)
		}
	})
	t.Run("lost and found again", func(t *testing.T) {
		c := simchain.New(t, 2, nil)
		src := &flakySource{inner: c.Sim.Client(), subs: make(chan *flakySub, 4)}
		w := newWorldOnChain(t, c, filepath.Join(t.TempDir(), "records.db"), func(cfg *Config) { cfg.Heads = src })
		w.gw.heads.follower = chainview.NewHeads(src, 20*time.Millisecond, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go w.gw.FollowHeads(ctx)
		first := <-src.subs
		w.open()
		doctor := simchain.Key("doctor")
		grantee := contracts.AddressGrantee(simchain.Addr(doctor))
		if r := w.grant(1, grantee, access.AllTypes, access.Treatment); r.status != 200 {
			t.Fatalf("grant: %d %s", r.status, r.body)
		}
		if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 200 {
			t.Fatalf("doctor: %d %s", r.status, r.body)
		}
		w.gw.setSyncInterval(time.Hour)
		// The subscription drops; the node mines the revocation meanwhile.
		first.errc <- errors.New("connection reset")
		waitFor(t, 5*time.Second, "not live", func() bool { return !w.gw.heads.follower.State().Live })
		w.revokeOnChain(1, grantee)
		// Subscribed again: no head was announced for the revocation's
		// block, yet the first decision syncs.
		<-src.subs
		waitFor(t, 5*time.Second, "live again", func() bool { return w.gw.heads.follower.State().Live })
		if r := w.get(doctor, "/fhir/Observation/o1"); r.status != 403 {
			t.Fatalf("doctor after re-subscribing: %d %s", r.status, r.body)
		}
	})
}
