package dbmanager

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/medrec-zk/medrec/dbmanager/store"
)

// Rate limits by who, not only where. The routes that authenticate nobody
// are limited per client address (fiber's limiter, Config.RateLimit); the
// readers' routes per address only loosely (ten times that: it bounds the
// signature checks one address can ask for), and per authenticated reader
// once the request is authorised: a grantee reading in a loop is slowed,
// the patient and the other readers behind the same address are not.

// readerLimits is one token bucket per reader (kind and id): perMinute
// requests a minute, bursts of up to a tenth of a minute's worth.
type readerLimits struct {
	perMinute int

	mu      sync.Mutex
	buckets map[readerKey]*rate.Limiter
}

type readerKey struct {
	kind store.ActorKind
	id   string
}

func newReaderLimits(perMinute int) *readerLimits {
	return &readerLimits{perMinute: perMinute, buckets: map[readerKey]*rate.Limiter{}}
}

func (l *readerLimits) burst() int { return max(1, l.perMinute/10) }

// allow takes one token of the reader's bucket, if there is one.
func (l *readerLimits) allow(kind store.ActorKind, id string) bool {
	k := readerKey{kind, id}
	l.mu.Lock()
	b, ok := l.buckets[k]
	if !ok {
		b = rate.NewLimiter(rate.Limit(float64(l.perMinute)/60), l.burst())
		l.buckets[k] = b
	}
	l.mu.Unlock()
	return b.Allow()
}

// forgetIdle drops the buckets that are full again at now: their readers
// have been quiet long enough that a new bucket is the same.
func (l *readerLimits) forgetIdle(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst()) {
			delete(l.buckets, k)
		}
	}
}
