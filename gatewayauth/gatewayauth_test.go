package gatewayauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

var chainID = big.NewInt(1515)

func signed(t *testing.T, req Request, now time.Time) http.Header {
	t.Helper()
	key, _ := crypto.ToECDSA(crypto.Keccak256([]byte("gatewayauth test key")))
	h := http.Header{}
	if err := Sign(h, req, key, chainID, now); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"x":1}`)
	base := Request{Method: "GET", Path: "/fhir/Observation", Query: "_count=10", BodyHash: BodyHash(body), Tag: big.NewInt(77), Audience: 1}
	type tc struct {
		name   string
		header func() http.Header
		method string
		path   string
		query  string
		body   []byte
		v      *Verifier
		at     time.Time
		want   error
	}
	good := func() http.Header { return signed(t, base, now) }
	mod := func(f func(h http.Header)) func() http.Header {
		return func() http.Header { h := good(); f(h); return h }
	}
	v1 := func() *Verifier { return &Verifier{ChainID: chainID, Audience: 1} }
	cases := []tc{
		{"valid", good, "GET", base.Path, base.Query, body, v1(), now, nil},
		{"other provider", good, "GET", base.Path, base.Query, body, &Verifier{ChainID: chainID, Audience: 2}, now, ErrSignature},
		{"other chain", good, "GET", base.Path, base.Query, body, &Verifier{ChainID: big.NewInt(1), Audience: 1}, now, ErrSignature},
		{"method", good, "DELETE", base.Path, base.Query, body, v1(), now, ErrSignature},
		{"path", good, "GET", "/fhir/Patient", base.Query, body, v1(), now, ErrSignature},
		{"query", good, "GET", base.Path, "_count=1000", body, v1(), now, ErrSignature},
		{"body", good, "GET", base.Path, base.Query, []byte(`{"x":2}`), v1(), now, ErrSignature},
		{"tag", mod(func(h http.Header) { h.Set(HeaderTag, "0x4e") }), "GET", base.Path, base.Query, body, v1(), now, ErrSignature},
		{"expiry", mod(func(h http.Header) { h.Set(HeaderExpiry, fmt.Sprint(now.Unix()+30)) }), "GET", base.Path, base.Query, body, v1(), now, ErrSignature},
		{"claimed signer", mod(func(h http.Header) { h.Set(HeaderSigner, "0x000000000000000000000000000000000000dEaD") }), "GET", base.Path, base.Query, body, v1(), now, ErrSignature},
		{"expired", good, "GET", base.Path, base.Query, body, v1(), now.Add(2 * time.Minute), ErrExpired},
		{"expiry too far", func() http.Header { r := base; r.Expiry = uint64(now.Add(time.Hour).Unix()); return signed(t, r, now) }, "GET", base.Path, base.Query, body, v1(), now, ErrTooLong},
		{"high s", mod(func(h http.Header) {
			sig, _ := hexutil.Decode(h.Get(HeaderSignature))
			s := new(big.Int).Sub(crypto.S256().Params().N, new(big.Int).SetBytes(sig[32:64]))
			s.FillBytes(sig[32:64])
			sig[64] = 55 - sig[64] // 27 <-> 28
			h.Set(HeaderSignature, hexutil.Encode(sig))
		}), "GET", base.Path, base.Query, body, v1(), now, ErrSignature},
		{"v 29", mod(func(h http.Header) {
			sig, _ := hexutil.Decode(h.Get(HeaderSignature))
			sig[64] = 29
			h.Set(HeaderSignature, hexutil.Encode(sig))
		}), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
		{"short nonce", mod(func(h http.Header) { h.Set(HeaderNonce, "0x01") }), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
		{"unsigned", func() http.Header { return http.Header{} }, "GET", base.Path, base.Query, body, v1(), now, ErrMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.v.Verify(context.Background(), c.header(), c.method, c.path, c.query, c.body, c.at)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil && (got.Tag.Int64() != 77 || got.Signer == [20]byte{}) {
				t.Fatalf("signed %+v", got)
			}
		})
	}
	// Replay: the same headers twice at the same gateway.
	ctx := context.Background()
	v := v1()
	h := good()
	if _, err := v.Verify(ctx, h, "GET", base.Path, base.Query, body, now); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, h, "GET", base.Path, base.Query, body, now.Add(time.Second)); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
}

// TestNonceStore: a Verifier uses the NonceStore it is given, so a store
// that outlives it (a database) refuses a replay at a new Verifier, as after
// a gateway restart; with its own in-memory store a new Verifier cannot
// know. A store that fails refuses the request as unavailable.
func TestNonceStore(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	base := Request{Method: "GET", Path: "/fhir/Observation/o1", BodyHash: BodyHash(nil), Tag: big.NewInt(77), Audience: 1}
	h := signed(t, base, now)
	verify := func(v *Verifier) error {
		_, err := v.Verify(ctx, h, "GET", base.Path, "", nil, now)
		return err
	}
	shared := new(MemoryNonces)
	if err := verify(&Verifier{ChainID: chainID, Audience: 1, Nonces: shared}); err != nil {
		t.Fatal(err)
	}
	if err := verify(&Verifier{ChainID: chainID, Audience: 1, Nonces: shared}); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay at a new verifier on the same store: %v", err)
	}
	if err := verify(&Verifier{ChainID: chainID, Audience: 1}); err != nil {
		t.Fatalf("a new verifier with its own memory: %v", err)
	}
	broken := errors.New("database is down")
	err := verify(&Verifier{ChainID: chainID, Audience: 1, Nonces: failingNonces{broken}})
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, broken) || errors.Is(err, ErrReplay) {
		t.Fatalf("failing store: %v", err)
	}
	// A store's ErrReplay wrapped with context is still a replay.
	err = verify(&Verifier{ChainID: chainID, Audience: 1, Nonces: failingNonces{fmt.Errorf("db: %w", ErrReplay)}})
	if !errors.Is(err, ErrReplay) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("wrapped replay: %v", err)
	}
	// An invalid signature never reaches the store.
	bad := h.Clone()
	bad.Set(HeaderSigner, "0x000000000000000000000000000000000000dEaD")
	if _, err := (&Verifier{ChainID: chainID, Audience: 1, Nonces: failingNonces{broken}}).Verify(ctx, bad, "GET", base.Path, "", nil, now); !errors.Is(err, ErrSignature) {
		t.Fatalf("bad signature: %v", err)
	}
}

type failingNonces struct{ err error }

func (f failingNonces) UseNonce(context.Context, [32]byte, time.Time, time.Time) error { return f.err }

// TestMemoryNonces: one winner among concurrent uses of a nonce; expired
// nonces are forgotten once a minute, live ones never.
func TestMemoryNonces(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	var m MemoryNonces
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if err := m.UseNonce(ctx, [32]byte{1}, now.Add(time.Minute), now); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, ErrReplay) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
	if err := m.UseNonce(ctx, [32]byte{2}, now.Add(5*time.Minute), now); err != nil {
		t.Fatal(err)
	}
	later := now.Add(2 * time.Minute) // nonce 1 expired, nonce 2 alive
	if err := m.UseNonce(ctx, [32]byte{3}, later.Add(time.Minute), later); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.nonces[[32]byte{1}]; ok {
		t.Fatal("expired nonce kept after a sweep")
	}
	if err := m.UseNonce(ctx, [32]byte{2}, later.Add(time.Minute), later); !errors.Is(err, ErrReplay) {
		t.Fatalf("live nonce forgotten: %v", err)
	}
}

// TestDigestMatchesGoEthereum computes the digest with go-ethereum's EIP-712.
func TestDigestMatchesGoEthereum(t *testing.T) {
	r := Request{Method: "POST", Path: "/fhir/Patient/$everything", Query: "a=b&c", BodyHash: BodyHash([]byte("x")), Tag: big.NewInt(123456789), Audience: 3, Nonce: [32]byte{9, 31: 1}, Expiry: 1_800_000_060}
	td := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "chainId", Type: "uint256"}},
			"Request": {
				{Name: "method", Type: "string"}, {Name: "path", Type: "string"}, {Name: "query", Type: "string"},
				{Name: "bodyHash", Type: "bytes32"}, {Name: "tag", Type: "uint256"}, {Name: "audience", Type: "uint32"},
				{Name: "nonce", Type: "bytes32"}, {Name: "expiry", Type: "uint64"},
			},
		},
		PrimaryType: "Request",
		Domain:      apitypes.TypedDataDomain{Name: domainName, Version: domainVersion, ChainId: (*math.HexOrDecimal256)(chainID)},
		Message: apitypes.TypedDataMessage{
			"method": r.Method, "path": r.Path, "query": r.Query, "bodyHash": hexutil.Encode(r.BodyHash[:]),
			"tag": r.Tag.String(), "audience": "3", "nonce": hexutil.Encode(r.Nonce[:]), "expiry": fmt.Sprint(r.Expiry),
		},
	}
	want, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Digest(chainID); !bytes.Equal(got[:], want) {
		t.Fatalf("digest %x, go-ethereum %x", got, want)
	}
}
