package gatewayauth

import (
	"bytes"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/zkhash"
)

// fuzzNow is the verifier's clock in FuzzCheck: fixed, so that the signed
// seeds under testdata/fuzz stay valid.
var fuzzNow = time.Unix(1_800_000_000, 0)

// fuzzSeed is a request signed by the test key, valid at fuzzNow: the key,
// nonce and expiry are fixed and ECDSA signing is deterministic (RFC 6979),
// so its headers are always the same.
func fuzzSeed(tb testing.TB, method, path, query string, body []byte, tag *big.Int) http.Header {
	tb.Helper()
	key, _ := crypto.ToECDSA(crypto.Keccak256([]byte("gatewayauth test key")))
	h := http.Header{}
	req := Request{Method: method, Path: path, Query: query, BodyHash: BodyHash(body), Tag: tag, Audience: 1,
		Nonce: [32]byte{0: 0xfe, 31: 1}, Expiry: uint64(fuzzNow.Unix()) + 60}
	if err := Sign(h, req, key, domain, fuzzNow); err != nil {
		tb.Fatal(err)
	}
	return h
}

// FuzzCheck feeds Check arbitrary signature headers, method, path, query,
// body and clock. It never panics; whatever it refuses, it refuses with one
// of the package's errors; and whatever it accepts is exactly the test key's
// signature over exactly this request, at this provider, within its
// lifetime, with the nonce and expiry the caller must record.
func FuzzCheck(f *testing.F) {
	key, _ := crypto.ToECDSA(crypto.Keccak256([]byte("gatewayauth test key")))
	addr := crypto.PubkeyToAddress(key.PublicKey)
	add := func(h http.Header, method, path, query string, body []byte, at int64) {
		f.Add(h.Get(HeaderSigner), h.Get(HeaderTag), h.Get(HeaderNonce), h.Get(HeaderExpiry), h.Get(HeaderSignature), method, path, query, body, at)
	}
	body := []byte(`{"x":1}`)
	good := fuzzSeed(f, "GET", "/fhir/Observation", "_count=10", body, big.NewInt(77))
	add(good, "GET", "/fhir/Observation", "_count=10", body, 0)                                                        // valid
	add(good, "GET", "/fhir/Observation", "_count=10", body, 59)                                                       // valid, about to expire
	add(good, "GET", "/fhir/Observation", "_count=10", body, 60)                                                       // expired
	add(good, "GET", "/fhir/Observation", "_count=10", body, -300)                                                     // too far in the future
	add(good, "GET", "/fhir/Observation", "_count=10&_count=10", body, 0)                                              // another query
	add(good, "GET", "/fhir/Observation", "_count=10", append(body, ' '), 0)                                           // another body
	add(good, "POST", "/fhir/Observation", "_count=10", body, 0)                                                       // another method
	add(good, "GET", "/fhir/Observation/", "_count=10", body, 0)                                                       // another path
	add(fuzzSeed(f, "GET", "/fhir/Patient/$everything", "", nil, nil), "GET", "/fhir/Patient/$everything", "", nil, 0) // no tag
	mod := func(k, v string) http.Header { h := good.Clone(); h.Set(k, v); return h }
	for _, h := range []http.Header{
		mod(HeaderTag, "0x4e"), mod(HeaderTag, "0x004d"), mod(HeaderTag, "0x"+string(bytes.Repeat([]byte("f"), 65))), mod(HeaderTag, "-0x4d"), mod(HeaderTag, "77"),
		mod(HeaderSigner, "0x000000000000000000000000000000000000dEaD"), mod(HeaderSigner, addr.Hex()[2:]), mod(HeaderSigner, ""),
		mod(HeaderNonce, "0x01"), mod(HeaderNonce, "0x"+string(bytes.Repeat([]byte("0"), 64))), mod(HeaderNonce, ""),
		mod(HeaderExpiry, "18446744073709551615"), mod(HeaderExpiry, "18446744073709551616"), mod(HeaderExpiry, "-1"), mod(HeaderExpiry, "0"), mod(HeaderExpiry, "1800000060 "),
		mod(HeaderExpiry, "001800000060"), mod(HeaderSignature, good.Get(HeaderSignature)[:130]), mod(HeaderSignature, good.Get(HeaderSignature)+"00"),
		mod(HeaderSignature, "0x"+string(bytes.Repeat([]byte("0"), 130))), mod(HeaderSignature, "0x\xff"),
		{},
	} {
		add(h, "GET", "/fhir/Observation", "_count=10", body, 0)
	}
	if _, err := (&Verifier{Domain: domain, Audience: 1}).Check(good, "GET", "/fhir/Observation", "_count=10", body, fuzzNow); err != nil {
		f.Fatalf("the signed seed does not verify: %v", err)
	}
	known := []error{ErrMissing, ErrMalformed, ErrExpired, ErrTooLong, ErrSignature}
	f.Fuzz(func(t *testing.T, signer, tag, nonce, expiry, sig, method, path, query string, body []byte, at int64) {
		h := http.Header{}
		for k, v := range map[string]string{HeaderSigner: signer, HeaderTag: tag, HeaderNonce: nonce, HeaderExpiry: expiry, HeaderSignature: sig} {
			if v != "" {
				h.Set(k, v)
			}
		}
		now := fuzzNow.Add(time.Duration(at) * time.Second)
		if at > 1<<32 || at < -1<<32 {
			now = time.Unix(at, 0)
		}
		v := &Verifier{Domain: domain, Audience: 1}
		got, err := v.Check(h, method, path, query, body, now)
		if err != nil {
			ok := false
			for _, k := range known {
				ok = ok || errors.Is(err, k)
			}
			if !ok {
				t.Fatalf("refused with an unknown error: %v", err)
			}
			if got != (Signed{}) {
				t.Fatalf("refused (%v), yet returned %+v", err, got)
			}
			return
		}
		// Accepted: it must be the test key's own signature of this request.
		exp, perr := strconv.ParseUint(expiry, 10, 64)
		if perr != nil || exp <= uint64(now.Unix()) || exp > uint64(now.Unix())+uint64(MaxLifetime/time.Second) {
			t.Fatalf("accepted expiry %q at %d", expiry, now.Unix())
		}
		if got.Signer != addr {
			t.Fatalf("accepted a signature of %s", got.Signer)
		}
		req := Request{Method: method, Path: path, Query: query, BodyHash: BodyHash(body), Tag: got.Tag, Audience: 1, Nonce: got.Nonce, Expiry: exp}
		d := req.Digest(domain)
		want, serr := crypto.Sign(d[:], key)
		if serr != nil {
			t.Fatal(serr)
		}
		want[64] += 27
		if gotSig, _ := hexutil.Decode(sig); !bytes.Equal(gotSig, want) {
			t.Fatalf("accepted signature %s; the key's signature of this request is %x", sig, want)
		}
		// The tag header is read in either form, minimal or zero-padded.
		if tagEl, terr := zkhash.ParseHex(tag); (tag == "") != (got.Tag == nil) || got.Tag != nil && (terr != nil || zkhash.Big(tagEl).Cmp(got.Tag) != 0) {
			t.Fatalf("tag header %q verified as %v", tag, got.Tag)
		}
		// What the caller records: this nonce, until this expiry.
		if n, _ := hexutil.Decode(nonce); !bytes.Equal(n, got.Nonce[:]) || got.Expires.Unix() != int64(exp) {
			t.Fatalf("nonce %s, expiry %d checked as %x, %v", nonce, exp, got.Nonce, got.Expires)
		}
	})
}
