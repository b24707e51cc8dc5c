package chainview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/rpc"
)

// HeadSource is a node that pushes its new heads: an ethclient.Client over
// WebSocket or IPC, or the simulated backend's client (in-process RPC). Over
// HTTP SubscribeNewHead fails with rpc.ErrNotificationsUnsupported: a node
// cannot push over plain HTTP.
type HeadSource interface {
	SubscribeNewHead(ctx context.Context, ch chan<- *types.Header) (ethereum.Subscription, error)
}

// ErrNoSubscriptions is returned by Heads.Run when the source cannot push
// heads at all (an HTTP endpoint): following them needs polling instead.
var ErrNoSubscriptions = errors.New("chainview: the node cannot push new heads on this connection")

// Heads follows a node's new heads by subscription. It keeps no chain state
// of its own: it counts what the node announced, so that whoever decides on
// a View can tell whether the node has announced anything since the view was
// last brought up to date (HeadState.Seq), and wakes those waiting for a new
// head. A node's head changes without an announcement only when it is
// rewound by hand (debug_setHead); users of Heads keep a slower poll for
// that.
type Heads struct {
	src   HeadSource
	retry time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	st      HeadState
	changed chan struct{} // closed, and replaced, at every change of st
}

// HeadState is what a Heads knows now.
type HeadState struct {
	// Live: subscribed now. While not live, heads are not followed and
	// nothing can be concluded from Seq staying the same.
	Live bool
	// Seq counts every announced head and every change of Live: if it is
	// the same as when a view sync began, the node announced nothing since.
	Seq uint64
	// Latest is the last announced head (nil before the first), and At when
	// it arrived.
	Latest *types.Header
	At     time.Time
	// Err is why the subscription is down (nil while live or before Run).
	Err error
}

// NewHeads returns a follower of src's heads, to be started with Run;
// retry is the pause between attempts to subscribe again after the
// connection or the node went away (default 1 s).
func NewHeads(src HeadSource, retry time.Duration, log *slog.Logger) *Heads {
	if retry <= 0 {
		retry = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Heads{src: src, retry: retry, log: log, changed: make(chan struct{})}
}

// State returns what the follower knows now.
func (h *Heads) State() HeadState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

// Changed returns a channel closed at the next change of State.
func (h *Heads) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *Heads) update(f func(*HeadState)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.st)
	h.st.Seq++
	close(h.changed)
	h.changed = make(chan struct{})
}

// Run subscribes and follows heads until ctx ends, subscribing again after
// every loss (a restarted node, a dropped connection). It returns ctx's
// error, or ErrNoSubscriptions at once when the source cannot push heads.
func (h *Heads) Run(ctx context.Context) error {
	warned := false // one warning per outage, not one per retry
	for {
		subscribed, err := h.follow(ctx)
		if ctx.Err() != nil {
			h.update(func(s *HeadState) { s.Live, s.Err = false, ctx.Err() })
			return ctx.Err()
		}
		if errors.Is(err, rpc.ErrNotificationsUnsupported) {
			h.update(func(s *HeadState) { s.Live, s.Err = false, ErrNoSubscriptions })
			return fmt.Errorf("%w: %v", ErrNoSubscriptions, err)
		}
		h.update(func(s *HeadState) { s.Live, s.Err = false, err })
		if subscribed {
			warned = false
		}
		if !warned {
			h.log.Warn("New heads not followed; polling until subscribed again", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(h.retry):
		}
	}
}

// follow holds one subscription until it fails or ctx ends; subscribed
// says whether it got one.
func (h *Heads) follow(ctx context.Context) (subscribed bool, _ error) {
	ch := make(chan *types.Header, 64)
	sub, err := h.src.SubscribeNewHead(ctx, ch)
	if err != nil {
		return false, err
	}
	defer sub.Unsubscribe()
	// Live from here: heads the node sealed while we were not subscribed
	// were not announced to us, and the changed Seq says so to every user.
	h.update(func(s *HeadState) { s.Live, s.Err = true, nil })
	h.log.Info("Following new heads by subscription")
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-sub.Err():
			if err == nil {
				err = errors.New("subscription ended")
			}
			return true, err
		case hd := <-ch:
			now := time.Now()
			h.update(func(s *HeadState) { s.Latest, s.At = hd, now })
		}
	}
}
