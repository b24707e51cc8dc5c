package wallet

import (
	"encoding/base64"
	"math/big"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/zkhash"
)

// FuzzParseShareBundle: a pasted share bundle either decodes to a complete
// bundle that encodes back to a text decoding to the same bundle, or is
// refused; it never panics, and its printed forms never show the secret k.
func FuzzParseShareBundle(f *testing.F) {
	good := ShareBundle{ChainID: 1515, Provider: 2, Gateway: "http://127.0.0.1:8502", Tag: "0x" + strings.Repeat("1", 64), K: "0x" + strings.Repeat("2", 64)}
	enc := func(s string) string { return bundlePrefix + base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, s := range []string{
		good.Encode(), "  " + good.Encode() + "\n", good.Encode() + "=", bundlePrefix, "", "medrec-share", good.Encode()[len(bundlePrefix):],
		enc(`{"chainId":1,"provider":1,"tag":"t","k":"k"}`),
		enc(`{"chainId":1,"provider":0,"tag":"t","k":"k"}`),
		enc(`{"provider":1,"tag":"t","k":"k","extra":[1,2,3]}`),
		enc(`{"provider":1,"tag":"t","k":"k","provider":0}`),
		enc(`{"PROVIDER":1,"Tag":"t","K":"k"}`),
		enc(`{"provider":4294967296,"tag":"t","k":"k"}`),
		enc(`{"provider":1e3,"tag":"t","k":"k"}`),
		enc(`{"provider":1,"tag":"t","k":"k"} trailing`),
		enc(`{"provider":1,"tag":"\xff","k":"\u0000"}`),
		enc(`null`), enc(`[]`), enc(strings.Repeat(`[`, 10000)),
		bundlePrefix + base64.StdEncoding.EncodeToString([]byte(`{"provider":1,"tag":"t","k":"k"}`)),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseShareBundle(s)
		if err != nil {
			return
		}
		if b.Provider == 0 || b.Tag == "" || b.K == "" {
			t.Fatalf("ParseShareBundle(%q) accepted an incomplete bundle %#v", s, b)
		}
		if back, err := ParseShareBundle(b.Encode()); err != nil || back != b {
			t.Fatalf("ParseShareBundle(%q) = %#v, which encodes to %q, decoding to %#v, %v", s, b, b.Encode(), back, err)
		}
		if strings.Contains(b.String(), b.K) || strings.Contains(b.LogValue().String(), b.K) {
			t.Fatalf("the printed bundle shows k: %q", b.String())
		}
	})
}

// FuzzParseViewerCommitment: a viewer commitment is "0x" and 1 to 64 hex
// digits (zero-padded or minimal), with surrounding space, of a canonical
// field element; it decodes to that element, which prints back to the input
// in lower case, zero-padded. Anything else is refused.
func FuzzParseViewerCommitment(f *testing.F) {
	for _, s := range []string{
		"0x" + strings.Repeat("0", 63) + "1", " 0x" + strings.Repeat("A", 64) + "\n",
		"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000000", // r
		"0x30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001", // r+1
		"0x" + strings.Repeat("f", 64), "0x1", "", "0x" + strings.Repeat("0", 66), "0x" + strings.Repeat("g", 64),
		"0X" + strings.Repeat("1", 64), "\u00a00x" + strings.Repeat("1", 64),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cv, err := ParseViewerCommitment(s)
		in := strings.TrimSpace(s)
		want := len(in) > 2 && len(in) <= 66 && in[:2] == "0x" && strings.Trim(in[2:], "0123456789abcdefABCDEF") == ""
		if want {
			v, _ := new(big.Int).SetString(in[2:], 16)
			want = v.Cmp(zkhash.Modulus()) < 0
		}
		if !want {
			if err == nil {
				t.Fatalf("ParseViewerCommitment(%q) accepted %s", s, zkhash.Hex(cv))
			}
			return
		}
		if err != nil || zkhash.Hex(cv) != "0x"+strings.Repeat("0", 66-len(in))+strings.ToLower(in[2:]) {
			t.Fatalf("ParseViewerCommitment(%q) = %s, %v", s, zkhash.Hex(cv), err)
		}
	})
}
