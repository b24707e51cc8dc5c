package wallet

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/medrec-zk/medrec/smartauth"
)

// TestParseAppLink: a gateway's link gives the provider and the request's
// nonce, once each; anything else is refused (and the rest of a link is
// never read: the gateway describes the request).
func TestParseAppLink(t *testing.T) {
	good := url.Values{smartauth.ParamProvider: {"3"}, smartauth.ParamRequest: {"0x" + strings.Repeat("ab", 32)}, "app": {"Forged Name"}}
	p, nonce, err := ParseAppLink(good)
	if err != nil || p != 3 || nonce[0] != 0xab || nonce[31] != 0xab {
		t.Fatalf("%d %x %v", p, nonce, err)
	}
	if q := (AppRequest{Provider: p, Nonce: nonce}).Query(); len(q) != 2 || q.Get(smartauth.ParamRequest) != good.Get(smartauth.ParamRequest) {
		t.Fatalf("query %v", q)
	}
	for name, change := range map[string]func(url.Values){
		"no provider":           func(q url.Values) { q.Del(smartauth.ParamProvider) },
		"provider 0":            func(q url.Values) { q.Set(smartauth.ParamProvider, "0") },
		"provider out of range": func(q url.Values) { q.Set(smartauth.ParamProvider, "4294967296") },
		"no request":            func(q url.Values) { q.Del(smartauth.ParamRequest) },
		"short request":         func(q url.Values) { q.Set(smartauth.ParamRequest, "0xabcd") },
		"request twice":         func(q url.Values) { q.Add(smartauth.ParamRequest, "0x"+strings.Repeat("cd", 32)) },
		"provider twice":        func(q url.Values) { q.Add(smartauth.ParamProvider, "4") },
	} {
		q := url.Values{}
		for k, v := range good {
			q[k] = append([]string(nil), v...)
		}
		change(q)
		if _, _, err := ParseAppLink(q); !errors.Is(err, ErrAppRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
