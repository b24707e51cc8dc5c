package gatewayauth

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/common/math"
	"github.com/ethereum/go-ethereum/crypto"
	"github.com/ethereum/go-ethereum/signer/core/apitypes"
)

var chainID = big.NewInt(1515)

// domain is the test deployment: chain 1515, this registry.
var domain = Domain{ChainID: chainID, Registry: common.HexToAddress("0x5FbDB2315678afecb367f032d93F642f64180aa3")}

func signed(t *testing.T, req Request, now time.Time) http.Header {
	t.Helper()
	key, _ := crypto.ToECDSA(crypto.Keccak256([]byte("gatewayauth test key")))
	h := http.Header{}
	if err := Sign(h, req, key, domain, now); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestCheck(t *testing.T) {
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
	v1 := func() *Verifier { return &Verifier{Domain: domain, Audience: 1} }
	cases := []tc{
		{"valid", good, "GET", base.Path, base.Query, body, v1(), now, nil},
		{"other provider", good, "GET", base.Path, base.Query, body, &Verifier{Domain: domain, Audience: 2}, now, ErrSignature},
		{"other chain", good, "GET", base.Path, base.Query, body, &Verifier{Domain: Domain{ChainID: big.NewInt(1), Registry: domain.Registry}, Audience: 1}, now, ErrSignature},
		// Same chain id, another deployment: a request signed for one
		// network's gateways does not replay at another's.
		{"other deployment", good, "GET", base.Path, base.Query, body, &Verifier{Domain: Domain{ChainID: chainID, Registry: common.HexToAddress("0x1")}, Audience: 1}, now, ErrSignature},
		{"zero-padded tag", mod(func(h http.Header) { h.Set(HeaderTag, "0x"+strings.Repeat("0", 62)+"4d") }), "GET", base.Path, base.Query, body, v1(), now, nil},
		{"tag not a field element", mod(func(h http.Header) { h.Set(HeaderTag, "0x"+strings.Repeat("f", 64)) }), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
		{"tag with a sign", mod(func(h http.Header) { h.Set(HeaderTag, "0x-4d") }), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
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
		{"zero tag", mod(func(h http.Header) { h.Set(HeaderTag, "0x0") }), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
		{"zero-padded zero tag", mod(func(h http.Header) { h.Set(HeaderTag, "0x"+strings.Repeat("0", 64)) }), "GET", base.Path, base.Query, body, v1(), now, ErrMalformed},
		{"unsigned", func() http.Header { return http.Header{} }, "GET", base.Path, base.Query, body, v1(), now, ErrMissing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.v.Check(c.header(), c.method, c.path, c.query, c.body, c.at)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil && (got.Tag.Int64() != 77 || got.Signer == [20]byte{}) {
				t.Fatalf("signed %+v", got)
			}
		})
	}
}

// TestCheckTagless: a request signed without a tag verifies with a nil Tag
// (the gateway's group routes take only those); the same signature with a
// tag header added fails, and with a zero tag header is malformed, so a
// tag-less request has one encoding and cannot be turned into a tagged one.
func TestCheckTagless(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	req := Request{Method: "GET", Path: "/fhir/Group/research/$export", BodyHash: BodyHash(nil), Audience: 1}
	v := &Verifier{Domain: domain, Audience: 1}
	for _, c := range []struct {
		name string
		tag  string // the X-Medrec-Tag header set after signing; "" none
		want error
	}{
		{"tag-less", "", nil},
		{"a tag added", "0x4d", ErrSignature},
		{"zero tag added", "0x0", ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := signed(t, req, now)
			if h.Get(HeaderTag) != "" {
				t.Fatalf("Sign wrote a tag header for a tag-less request: %q", h.Get(HeaderTag))
			}
			if c.tag != "" {
				h.Set(HeaderTag, c.tag)
			}
			got, err := v.Check(h, req.Method, req.Path, req.Query, nil, now)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want == nil && (got.Tag != nil || got.Signer == (common.Address{})) {
				t.Fatalf("signed %+v", got)
			}
		})
	}
}

// TestDigestMatchesGoEthereum computes the digest with go-ethereum's EIP-712.
func TestDigestMatchesGoEthereum(t *testing.T) {
	r := Request{Method: "POST", Path: "/fhir/Patient/$everything", Query: "a=b&c", BodyHash: BodyHash([]byte("x")), Tag: big.NewInt(123456789), Audience: 3, Nonce: [32]byte{9, 31: 1}, Expiry: 1_800_000_060}
	td := apitypes.TypedData{
		Types: apitypes.Types{
			"EIP712Domain": {{Name: "name", Type: "string"}, {Name: "version", Type: "string"}, {Name: "chainId", Type: "uint256"}, {Name: "verifyingContract", Type: "address"}},
			"Request": {
				{Name: "method", Type: "string"}, {Name: "path", Type: "string"}, {Name: "query", Type: "string"},
				{Name: "bodyHash", Type: "bytes32"}, {Name: "tag", Type: "uint256"}, {Name: "audience", Type: "uint32"},
				{Name: "nonce", Type: "bytes32"}, {Name: "expiry", Type: "uint64"},
			},
		},
		PrimaryType: "Request",
		Domain:      apitypes.TypedDataDomain{Name: domainName, Version: domainVersion, ChainId: (*math.HexOrDecimal256)(chainID), VerifyingContract: domain.Registry.Hex()},
		Message: apitypes.TypedDataMessage{
			"method": r.Method, "path": r.Path, "query": r.Query, "bodyHash": hexutil.Encode(r.BodyHash[:]),
			"tag": r.Tag.String(), "audience": "3", "nonce": hexutil.Encode(r.Nonce[:]), "expiry": fmt.Sprint(r.Expiry),
		},
	}
	want, _, err := apitypes.TypedDataAndHash(td)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Digest(domain); !bytes.Equal(got[:], want) {
		t.Fatalf("digest %x, go-ethereum %x", got, want)
	}
}
