package devnet

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/access"
	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/faultnet"
)

// labNetwork is a real 3-provider network whose nodes each run in a network
// namespace of their own (faultnet), every P2P connection passing through
// the fault proxy in front of the node it reaches.
func labNetwork(t *testing.T) (*chain.Network, *faultnet.Lab, []*faultnet.Proxy) {
	t.Helper()
	faultnet.Require(t)
	path := os.Getenv(chain.GethEnv)
	if path == "" {
		if os.Getenv("MEDREC_REQUIRE_GETH") == "1" {
			t.Fatalf("%s is unset but MEDREC_REQUIRE_GETH=1", chain.GethEnv)
		}
		t.Skipf("%s unset: no geth to run", chain.GethEnv)
	}
	geth, err := chain.FindGeth(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	lab := faultnet.New(t, 3)
	var (
		proxies []*faultnet.Proxy
		hosts   []chain.Host
	)
	for _, h := range lab.Hosts {
		p, err := faultnet.Listen(lab.Gate + ":0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxies = append(proxies, p)
		hosts = append(hosts, chain.Host{NetNS: h.NetNS, IP: h.IP, Advertise: p.Addr()})
	}
	n, err := chain.Create(t.Context(), t.TempDir(), geth, chain.Options{Providers: 3, Period: 1, Hosts: hosts, Net: lab.Net}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the lab's: runs before it, so no geth is left in a
	// namespace being deleted.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Kill(ctx, 1, 2, 3); err != nil {
			t.Logf("kill: %v", err)
		}
	})
	if keep := os.Getenv("MEDREC_KEEP_LOGS"); keep != "" {
		t.Cleanup(func() {
			for _, ns := range n.State().Nodes {
				if raw, err := os.ReadFile(n.Path(ns.Dir + "/geth.log")); err == nil {
					os.MkdirAll(keep+"/"+t.Name(), 0o755)
					os.WriteFile(keep+"/"+t.Name()+"/"+ns.Dir+".log", raw, 0o644)
				}
			}
		})
	}
	for i, ns := range n.State().Nodes {
		proxies[i].SetTarget(fmt.Sprintf("%s:%d", ns.IP, ns.P2PPort))
	}
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	return n, lab, proxies
}

// ipcClient dials provider p's node over its IPC socket, which no cut link
// cuts off.
func ipcClient(t *testing.T, n *chain.Network, p int) *ethclient.Client {
	t.Helper()
	c, err := ethclient.DialContext(t.Context(), n.State().Nodes[p-1].IPC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// deepestReorg is the most blocks one of the nodes' geth logged dropping in
// a reorg ("Chain reorg detected … drop=N").
func deepestReorg(t *testing.T, n *chain.Network) (depth, node int) {
	t.Helper()
	re := regexp.MustCompile(`[Cc]hain reorg detected.*?\bdrop=([0-9,]+)`)
	for _, ns := range n.State().Nodes {
		raw, err := os.ReadFile(n.Path(ns.Dir + "/geth.log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(raw, -1) {
			if d, err := strconv.Atoi(string(m[1])); err == nil && d > depth {
				depth, node = d, ns.Provider
			}
		}
	}
	return depth, node
}

// partitionFor is how long the partition test keeps provider 3 cut off:
// MEDREC_PARTITION_SECONDS (make soak: 60), default 10.
func partitionFor() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("MEDREC_PARTITION_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 10 * time.Second
}

// TestPartitionAndSlowLinks runs three providers, each in its own network
// namespace, and their gateways (each on its own node's IPC socket, as on
// the node's host).
//
// Partition: provider 3's link is cut; the other two seal on. On the
// minority side a revocation is mined in provider 3's one block (a lone
// signer of three can seal only one). Both sides' gateways keep serving
// reads by their own view; provider 3's enforces the revocation. The link
// heals: one chain afterwards, the minority block reorged out (the deepest
// reorg is recorded), and provider 3's gateway never lets the revoked doctor
// back in — the revocation is honoured until it is on the chain again.
//
// Slow links: 200 ms each way and 1 % of chunks held back an RTO between
// the authorities: block time, read latency and a grant's propagation to
// another provider's gateway, against the same figures without faults.
func TestPartitionAndSlowLinks(t *testing.T) {
	ctx := t.Context()
	n, lab, proxies := labNetwork(t)
	w1 := newFaultWorldOf(t, n, 1, "test test test test test test test test test test test junk", gatewaySetup{interval: time.Nanosecond, ipc: true})
	w3 := newFaultWorldOf(t, n, 3, "legal winner thank year wave sausage worth useful legal winner thank yellow", gatewaySetup{interval: time.Nanosecond, ipc: true})
	g1 := w1.gateway(gatewaySetup{heads: true, interval: 500 * time.Millisecond, ipc: true})
	defer g1.close()
	g3 := w3.gateway(gatewaySetup{heads: true, interval: 500 * time.Millisecond, ipc: true})
	defer g3.close()
	c1, c3 := ipcClient(t, n, 1), ipcClient(t, n, 3)

	base := linkFigures(t, w1, g1, w3, g3, c1)
	t.Logf("MEASURED links without faults: %s", base)

	doctor, _ := crypto.GenerateKey()
	w3.minedOn(3, w3.send(1, doctor, false), 30*time.Second)
	eventually(t, 10*time.Second, "the doctor served at provider 3", func() bool { return g3.read(doctor) == 200 })

	// Provider 3 stops sealing until the cut, so that it may seal the
	// minority's block (a signer of three may not seal two in a row).
	if err := n.SetSealing(ctx, 3, false); err != nil {
		t.Fatal(err)
	}
	// A seal it had begun may still land: wait two blocks, then until
	// provider 3's head is sealed by another.
	h, _ := c3.BlockNumber(ctx)
	auth3 := n.State().Nodes[2].Authority
	eventually(t, 30*time.Second, "provider 3's head sealed by another", func() bool {
		b, err := c3.BlockNumber(ctx)
		if err != nil || b < h+2 {
			return false
		}
		var signer common.Address
		err = c3.Client().CallContext(ctx, &signer, "clique_getSigner", hexutil.Uint64(b))
		return err == nil && signer != auth3
	})
	if err := lab.Cut(3); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	t.Logf("provider 3 cut off")
	revoke := w3.send(3, doctor, true)
	if err := n.SetSealing(ctx, 3, true); err != nil {
		t.Fatal(err)
	}
	w3.minedOn(3, revoke, 30*time.Second)
	minority, err := c3.TransactionReceipt(ctx, revoke.Hash())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the minority's revocation enforced at provider 3", func() bool { return g3.read(doctor) == 403 })

	// Both sides serve their own readers by their own view; the majority
	// seals on.
	h1, _ := c1.BlockNumber(ctx)
	for time.Since(cut) < partitionFor() {
		if st := g1.read(w1.owner); st != 200 {
			t.Fatalf("provider 1's patient during the partition: %d", st)
		}
		if st := g3.read(w3.owner); st != 200 {
			t.Fatalf("provider 3's patient during the partition: %d", st)
		}
		if st := g3.read(doctor); st != 403 {
			t.Fatalf("the revoked doctor at provider 3 during the partition: %d", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b1, _ := c1.BlockNumber(ctx)
	b3, _ := c3.BlockNumber(ctx)
	if b1 < h1+3 {
		t.Fatalf("the majority sealed %d blocks in %s", b1-h1, partitionFor())
	}
	t.Logf("partition of %s: majority at %d, provider 3 at %d (its revocation in block %d)", partitionFor(), b1, b3, minority.BlockNumber)

	// Heal. The doctor reads at provider 3 all along: never served.
	var (
		mu     sync.Mutex
		served []time.Duration
		stop   = make(chan struct{})
		done   = make(chan struct{})
	)
	healed := time.Now()
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if g3.read(doctor) == 200 {
				mu.Lock()
				served = append(served, time.Since(healed))
				mu.Unlock()
			}
		}
	}()
	if err := lab.Heal(3); err != nil {
		t.Fatal(err)
	}
	var one time.Duration
	eventually(t, 90*time.Second, "one chain after the heal", func() bool {
		b3, err := c3.BlockNumber(ctx)
		if err != nil {
			return false
		}
		x, err1 := c1.HeaderByNumber(ctx, newBig(b3))
		y, err3 := c3.HeaderByNumber(ctx, newBig(b3))
		if err1 == nil && err3 == nil && x.Hash() == y.Hash() && b3 > minority.BlockNumber.Uint64() {
			one = time.Since(healed)
			return true
		}
		return false
	})
	t.Logf("MEASURED partition of %s healed: one chain %s after the link came back", partitionFor(), one.Round(100*time.Millisecond))
	if hd, err := c3.HeaderByNumber(ctx, minority.BlockNumber); err != nil || hd.Hash() == minority.BlockHash {
		t.Fatalf("the minority's block %d is still canonical at provider 3 (%v)", minority.BlockNumber, err)
	}
	depth, node := deepestReorg(t, n)
	if depth < 1 {
		t.Fatal("no reorg logged, yet the minority's block was replaced")
	}
	t.Logf("MEASURED deepest reorg after the partition: %d block(s), at provider %d", depth, node)

	// The revocation: mined again on the one chain (geth put it back in
	// its pool), or re-submitted as the patient's wallet does.
	rels := contracts.NewClient(c1, w3.d)
	grantee := contracts.AddressGrantee(crypto.PubkeyToAddress(doctor.PublicKey))
	again := "re-mined from the pool"
	if !onChainRevoked(t, rels, w3, grantee, 20*time.Second) {
		again = "re-submitted"
		w3.nonce--
		w3.minedOn(1, w3.send(1, doctor, true), 30*time.Second)
	}
	// Both sides' gateways converge: their views hold the same grant, revoked
	// by the revocation now on the one chain (no longer only remembered).
	eventually(t, 20*time.Second, "both gateways' views agree", func() bool {
		a, okA := g1.view.Grant(w3.tag, access.AddressGrantee, grantee)
		b, okB := g3.view.Grant(w3.tag, access.AddressGrantee, grantee)
		return okA && okB && a.Revoked && b.Revoked && !a.RevokeReorged && !b.RevokeReorged &&
			a.Expiry == b.Expiry && a.Scope == b.Scope && g3.view.Head() >= one64(c1)-1 && g1.view.Head() >= one64(c1)-1
	})
	close(stop)
	<-done
	if len(served) > 0 {
		t.Fatalf("the revoked doctor was served at provider 3 after the heal, at %v", served)
	}
	if st := g3.read(doctor); st != 403 {
		t.Fatalf("the doctor at the end: %d", st)
	}
	t.Logf("the revocation, reorged out, was %s; the doctor was refused throughout", again)

	// Slow links between the authorities.
	for _, p := range proxies {
		p.SetFaults(200*time.Millisecond, 0.01)
	}
	slow := linkFigures(t, w1, g1, w3, g3, c1)
	t.Logf("MEASURED links with 200 ms each way and 1%% chunk loss: %s", slow)
	for _, p := range proxies {
		p.SetFaults(0, 0)
	}
}

func newBig(n uint64) *big.Int { return new(big.Int).SetUint64(n) }

func one64(c *ethclient.Client) uint64 {
	b, _ := c.BlockNumber(context.Background())
	return b
}

// onChainRevoked waits (at most d) until the chain, read through rels,
// holds the doctor's grant at w's relationship as revoked.
func onChainRevoked(t *testing.T, rels *contracts.Client, w *faultWorld, grantee [32]byte, d time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if g, err := rels.GrantOf(t.Context(), w.tag, 1, grantee); err == nil && g.Revoked {
			return true
		}
	}
	return false
}

// figures are what linkFigures measures.
type figures struct {
	block     time.Duration // mean block time over 10 blocks, as provider 1 sees them
	readP50   time.Duration // a signed read through provider 1's gateway
	readP95   time.Duration
	propagate time.Duration // a grant sent to provider 1's node until provider 3's gateway serves it (mean of 3)
}

func (f figures) String() string {
	return fmt.Sprintf("block time %s, signed read p50 %s p95 %s, grant at provider 1 served at provider 3 after %s",
		f.block.Round(10*time.Millisecond), f.readP50.Round(100*time.Microsecond), f.readP95.Round(100*time.Microsecond), f.propagate.Round(10*time.Millisecond))
}

func linkFigures(t *testing.T, w1 *faultWorld, g1 *testGateway, w3 *faultWorld, g3 *testGateway, c1 *ethclient.Client) figures {
	t.Helper()
	ctx := t.Context()
	var f figures
	h0, _ := c1.BlockNumber(ctx)
	eventually(t, 20*time.Second, "a block", func() bool { b, _ := c1.BlockNumber(ctx); return b > h0 })
	start := time.Now()
	h1, _ := c1.BlockNumber(ctx)
	eventually(t, 60*time.Second, "10 blocks", func() bool { b, _ := c1.BlockNumber(ctx); return b >= h1+10 })
	f.block = time.Since(start) / 10

	var lat []time.Duration
	for range 50 {
		s := time.Now()
		if st := g1.read(w1.owner); st != 200 {
			t.Fatalf("owner read: %d", st)
		}
		lat = append(lat, time.Since(s))
	}
	slices.Sort(lat)
	f.readP50, f.readP95 = lat[len(lat)/2], lat[len(lat)*95/100]

	for range 3 {
		reader, _ := crypto.GenerateKey()
		s := time.Now()
		tx := w3.send(1, reader, false)
		eventually(t, 60*time.Second, "the grant served at provider 3", func() bool { return g3.read(reader) == 200 })
		f.propagate += time.Since(s) / 3
		w3.minedOn(1, tx, 10*time.Second)
	}
	return f
}
