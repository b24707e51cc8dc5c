package bucketpath

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"

	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/internal/testnet"
	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// TestFetch: against a real gateway over a registry of 4,096 + 1,000
// commitments (one full bucket, one partial), paths fetched by bucket are
// the ones the whole tree gives, under the chain's root; a server that
// changes a leaf, a top or the announced root, or cuts a body, is refused.
func TestFetch(t *testing.T) {
	n := testnet.New(t, 1)
	const total = merkle.BucketSize + 1000
	var leaves []fr.Element
	for len(leaves) < total {
		batch := make([]*big.Int, min(contracts.MaxEnrolBatch, total-len(leaves)))
		for i := range batch {
			var c fr.Element
			c.SetUint64(uint64(len(leaves) + 1))
			c = zkhash.Commitment(c)
			leaves = append(leaves, c)
			batch[i] = zkhash.Big(c)
		}
		tx, err := n.Chain.Client.Enrol(context.Background(), n.Chain.Auth(n.Chain.Providers[0].Gateway), batch...)
		if err == nil {
			_, err = n.Chain.Client.Wait(context.Background(), tx)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tree, err := merkle.New(leaves)
	if err != nil {
		t.Fatal(err)
	}
	gw := n.Sites[0].URL
	for _, i := range []int{0, 4095, 4096, total - 1} {
		p, root, err := Fetch(t.Context(), http.DefaultClient, gw, i)
		if err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
		want, _ := tree.Proof(i)
		if p != want || root != tree.Root() {
			t.Fatalf("leaf %d: the fetched path is not the tree's", i)
		}
	}
	if _, _, err := Fetch(t.Context(), http.DefaultClient, gw, total); err == nil || !strings.Contains(err.Error(), "not enrolled yet") {
		t.Fatalf("a leaf beyond the tree: %v", err)
	}
	if res, err := http.Get(gw + BucketsPath + "0"); err != nil || !strings.Contains(res.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("a full bucket is not cacheable: %v %v", err, res.Header)
	}
	if res, err := http.Get(gw + BucketsPath + "x"); err != nil || res.StatusCode != 400 {
		t.Fatalf("a bad bucket number: %v %v", err, res.StatusCode)
	}
	if res, err := http.Get(gw + BucketsPath + "9"); err != nil || res.StatusCode != 404 {
		t.Fatalf("a bucket beyond the tree: %v %v", err, res.StatusCode)
	}

	// A server in the middle that changes what the gateway says.
	for _, tc := range []struct {
		name   string
		change func(path string, h http.Header, body []byte) []byte
	}{
		{"a leaf of the bucket", func(p string, _ http.Header, b []byte) []byte {
			if strings.HasPrefix(p, BucketsPath) {
				b[40] ^= 1
			}
			return b
		}},
		{"a top", func(p string, _ http.Header, b []byte) []byte {
			if p == TopsPath {
				b[63] ^= 1
			}
			return b
		}},
		{"the announced root", func(p string, h http.Header, b []byte) []byte {
			if p == TopsPath {
				h.Set(HeaderRoot, zkhash.Hex(leaves[0]))
			}
			return b
		}},
		{"a cut body", func(p string, _ http.Header, b []byte) []byte {
			if strings.HasPrefix(p, BucketsPath) {
				return b[:len(b)-5]
			}
			return b
		}},
		{"a short bucket", func(p string, _ http.Header, b []byte) []byte {
			if strings.HasPrefix(p, BucketsPath) {
				return b[:len(b)-32]
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mitm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				res, err := http.Get(gw + r.URL.Path)
				if err != nil {
					t.Error(err)
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				for k, v := range res.Header {
					w.Header()[k] = v
				}
				body = tc.change(r.URL.Path, w.Header(), body)
				w.Header().Del("Content-Length")
				w.WriteHeader(res.StatusCode)
				io.Copy(w, bytes.NewReader(body))
			}))
			defer mitm.Close()
			if _, _, err := Fetch(t.Context(), http.DefaultClient, mitm.URL, 10); !errors.Is(err, ErrServer) {
				t.Fatalf("changed %s: %v", tc.name, err)
			}
		})
	}
}
