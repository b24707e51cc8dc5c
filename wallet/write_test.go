package wallet

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/access"
)

// lossyRelay passes requests through to the gateways, but for relays
// (grant, revoke) it either answers 502 after the gateway did the work
// (lose: the answer is lost on the way back) or refuses them before they
// reach the gateway (drop).
type lossyRelay struct {
	next       http.RoundTripper
	lose, drop bool
}

func (l lossyRelay) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/relay/") {
		return l.next.RoundTrip(req)
	}
	bad := &http.Response{StatusCode: http.StatusBadGateway, Body: io.NopCloser(strings.NewReader("bad gateway")), Header: http.Header{}, Request: req}
	if l.drop {
		return bad, nil
	}
	res, err := l.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return bad, nil
}

// TestWriteChecksTheChain: a grant whose gateway did the work but whose
// answer was lost is reported as done — the wallet looks at the chain
// before it reports a failure — and its progress goes sent → in block → in
// force, in order; a grant the gateway never got is reported as failed,
// after the chain shows nothing.
func TestWriteChecksTheChain(t *testing.T) {
	ctx := context.Background()
	n := newNet(t, 1)
	w := connected(t, n)
	obs, _ := access.NewScope("Observation")
	doctor := common.HexToAddress("0x00000000000000000000000000000000000d0c70")

	w.http.Transport = lossyRelay{next: http.DefaultTransport, lose: true}
	var mu sync.Mutex
	var stages []Stage
	pctx := WithProgress(ctx, func(s Stage, block uint64) {
		mu.Lock()
		defer mu.Unlock()
		stages = append(stages, s)
		if s == StageInBlock && block == 0 {
			t.Error("in block, but which?")
		}
	})
	if err := w.ShareWithAddress(pctx, 1, doctor, obs, access.Treatment, time.Now().Add(48*time.Hour)); err != nil {
		t.Fatalf("a grant in force on chain was reported as failed: %v", err)
	}
	r, err := w.Relationship(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := w.View().Grant(r.Tag, access.AddressGrantee, AddressRef(doctor).Grantee); !ok || !g.Active(uint64(time.Now().Unix())) {
		t.Fatal("the grant is not in force")
	}
	mu.Lock()
	if len(stages) != 3 || stages[0] != StageSent || stages[1] != StageInBlock || stages[2] != StageInForce {
		t.Fatalf("progress %v; want sent, in block, in force", stages)
	}
	mu.Unlock()

	// Revoking with the answer lost: done as well.
	if err := w.Revoke(ctx, 1, access.AddressGrantee, AddressRef(doctor).Grantee); err != nil {
		t.Fatalf("a revocation in force was reported as failed: %v", err)
	}

	// A grant the gateway never received: a failure, and nothing on chain.
	w.http.Transport = lossyRelay{next: http.DefaultTransport, drop: true}
	defer func(d time.Duration) { refusalWait = d }(refusalWait)
	refusalWait = 2 * time.Second
	other := common.HexToAddress("0x0000000000000000000000000000000000000bad")
	start := time.Now()
	err = w.ShareWithAddress(ctx, 1, other, obs, access.Treatment, time.Now().Add(48*time.Hour))
	var ge *GatewayError
	if err == nil || !errors.As(err, &ge) || strings.Contains(err.Error(), "502") {
		t.Fatalf("a grant never sent: %v (want the gateway's failure, in words)", err)
	}
	if time.Since(start) < refusalWait/2 {
		t.Fatalf("reported a failure after %s without watching the chain", time.Since(start))
	}
	if _, ok := w.View().Grant(r.Tag, access.AddressGrantee, AddressRef(other).Grantee); ok {
		t.Fatal("a refused grant is on chain")
	}
}
