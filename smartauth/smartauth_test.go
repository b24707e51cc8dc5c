package smartauth

import (
	"errors"
	"math/big"
	"testing"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/access"
)

func TestGrant(t *testing.T) {
	obs, _ := access.NewScope("Observation")
	obsCond, _ := access.NewScope("Condition", "Observation")
	for _, c := range []struct {
		name, requested string
		allowed         access.Scope
		want            string
		err             error
	}{
		{"v2 read and search", "launch/patient patient/Observation.rs", access.AllTypes, "launch/patient patient/Observation.rs", nil},
		{"wildcard", "patient/*.rs offline_access", access.AllTypes, "patient/*.rs offline_access", nil},
		{"wildcard narrowed to the registration", "patient/*.rs", obsCond, "patient/Condition.rs patient/Observation.rs", nil},
		{"writes dropped", "patient/Observation.cruds patient/Condition.cud", access.AllTypes, "patient/Observation.rs", nil},
		{"v1 read", "patient/Observation.read patient/Condition.*", access.AllTypes, "patient/Condition.rs patient/Observation.rs", nil},
		{"read only", "patient/Observation.r", access.AllTypes, "patient/Observation.r", nil},
		{"search only", "patient/Observation.s", access.AllTypes, "patient/Observation.s", nil},
		{"user, system, openid dropped", "openid fhirUser user/*.rs system/*.rs patient/Observation.rs", access.AllTypes, "patient/Observation.rs", nil},
		{"granular dropped", "patient/Observation.rs?category=laboratory patient/Condition.rs", access.AllTypes, "patient/Condition.rs", nil},
		{"outside the registration", "patient/Condition.rs", obs, "", ErrNoScope},
		{"unknown type", "patient/Spaceship.rs", access.AllTypes, "", ErrNoScope},
		{"out of order", "patient/Observation.sr", access.AllTypes, "", ErrNoScope},
		{"repeated letter", "patient/Observation.rr", access.AllTypes, "", ErrNoScope},
		{"write only", "patient/Observation.cud", access.AllTypes, "", ErrNoScope},
		{"nothing", "", access.AllTypes, "", ErrNoScope},
		{"control byte", "patient/Observation.rs\x00", access.AllTypes, "", ErrMalformedScope},
		{"quote", `patient/"Observation".rs`, access.AllTypes, "", ErrMalformedScope},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := Grant(c.requested, c.allowed)
			if !errors.Is(err, c.err) && err != c.err {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if g.Scope != c.want {
				t.Fatalf("granted %q, want %q", g.Scope, c.want)
			}
		})
	}
	g, _ := Grant("patient/Observation.rs offline_access", access.AllTypes)
	if got := g.WithoutOffline().Scope; got != "patient/Observation.rs" {
		t.Fatalf("without offline: %q", got)
	}
}

// TestGrantSystem: a backend service gets exactly the create and update
// scopes it asked for, within its registration, or a refusal that says
// why; nothing asked for is dropped silently.
func TestGrantSystem(t *testing.T) {
	obs, _ := access.NewScope("Observation")
	obsCond, _ := access.NewScope("Condition", "Observation")
	for _, c := range []struct {
		name, requested string
		allowed         access.Scope
		want            string
		err             error
	}{
		{"wildcard", "system/*.cu", access.AllTypes, "system/*.cu", nil},
		{"wildcard narrowed to the registration", "system/*.cu", obsCond, "system/Condition.cu system/Observation.cu", nil},
		{"create only", "system/Observation.c", access.AllTypes, "system/Observation.c", nil},
		{"create and update apart", "system/Observation.c system/Observation.u system/Patient.u", access.AllTypes, "system/Observation.cu system/Patient.u", nil},
		{"v1 write", "system/Observation.write", access.AllTypes, "system/Observation.cu", nil},
		{"read asked", "system/Observation.cru", access.AllTypes, "", ErrReadScope},
		{"search asked", "system/*.s", access.AllTypes, "", ErrReadScope},
		{"delete asked", "system/*.cud", access.AllTypes, "", ErrReadScope},
		{"v1 read", "system/*.read", access.AllTypes, "", ErrReadScope},
		{"out of order", "system/Observation.uc", access.AllTypes, "", ErrReadScope},
		{"outside the registration", "system/Condition.cu", obs, "", ErrNoScope},
		{"unknown type", "system/Spaceship.cu", access.AllTypes, "", ErrNoScope},
		{"patient scope", "patient/Observation.cu", access.AllTypes, "", ErrNoScope},
		{"granular", "system/Observation.cu?category=laboratory", access.AllTypes, "", ErrNoScope},
		{"nothing", "", access.AllTypes, "", ErrNoScope},
		{"control byte", "system/*.cu\x00", access.AllTypes, "", ErrMalformedScope},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, err := GrantSystem(c.requested, c.allowed)
			if !errors.Is(err, c.err) && err != c.err {
				t.Fatalf("error %v, want %v", err, c.err)
			}
			if g.Scope != c.want {
				t.Fatalf("granted %q, want %q", g.Scope, c.want)
			}
		})
	}
	g, _ := GrantSystem("system/Observation.c system/Condition.u", access.AllTypes)
	if !g.Allows("POST", "Observation") || g.Allows("PUT", "Observation") || !g.Allows("PUT", "Condition") || g.Allows("POST", "Condition") || g.Allows("POST", "Patient") {
		t.Fatalf("allows: %+v", g)
	}
}

// TestApprovalSignature: the signer is recovered from a valid signature,
// and changing any one field, the domain, or the signature's form gives
// another signer or an error.
func TestApprovalSignature(t *testing.T) {
	key, _ := crypto.GenerateKey()
	owner := crypto.PubkeyToAddress(key.PublicKey)
	d := Domain{ChainID: big.NewInt(1337), Registry: common.HexToAddress("0x1234")}
	a := Approval{Provider: 1, Tag: big.NewInt(99), ClientID: "app", RedirectURI: "https://app/cb", Scope: "patient/*.rs", Expiry: 1e9, Offline: true, Nonce: [32]byte{7}}
	sig, err := a.Sign(key, d)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Signer(sig, d); err != nil || got != owner {
		t.Fatalf("signer %v %v, want %v", got, err, owner)
	}
	for name, change := range map[string]func(*Approval, *Domain){
		"provider": func(a *Approval, _ *Domain) { a.Provider = 2 },
		"tag":      func(a *Approval, _ *Domain) { a.Tag = big.NewInt(98) },
		"client":   func(a *Approval, _ *Domain) { a.ClientID = "other" },
		"redirect": func(a *Approval, _ *Domain) { a.RedirectURI = "https://evil/cb" },
		"scope":    func(a *Approval, _ *Domain) { a.Scope = "patient/Observation.rs" },
		"expiry":   func(a *Approval, _ *Domain) { a.Expiry++ },
		"offline":  func(a *Approval, _ *Domain) { a.Offline = false },
		"nonce":    func(a *Approval, _ *Domain) { a.Nonce[0] = 8 },
		"chain":    func(_ *Approval, d *Domain) { d.ChainID = big.NewInt(1) },
		"registry": func(_ *Approval, d *Domain) { d.Registry[0] = 1 },
	} {
		b, dd := a, d
		change(&b, &dd)
		if got, err := b.Signer(sig, dd); err == nil && got == owner {
			t.Errorf("%s changed, still recovers the owner", name)
		}
	}
	bad := append([]byte(nil), sig...)
	bad[64] = 1
	if _, err := a.Signer(bad, d); err != ErrSignature {
		t.Errorf("v=1: %v", err)
	}
	if _, err := a.Signer(sig[:64], d); err != ErrSignature {
		t.Errorf("short: %v", err)
	}
	// The high-s twin of a valid signature is refused.
	n := crypto.S256().Params().N
	s := new(big.Int).SetBytes(sig[32:64])
	twin := append([]byte(nil), sig...)
	new(big.Int).Sub(n, s).FillBytes(twin[32:64])
	twin[64] ^= 1
	if _, err := a.Signer(twin, d); err != ErrSignature {
		t.Errorf("high-s twin: %v", err)
	}
}

// FuzzGrant: whatever an app asks for, what is granted is within what was
// allowed, reads and searches only, in a form that grants itself again.
func FuzzGrant(f *testing.F) {
	f.Add("launch/patient patient/Observation.rs offline_access", uint64(access.AllTypes))
	f.Add("patient/*.cruds user/*.rs", uint64(1<<21))
	f.Add("patient/Observation.read patient/Condition.*", uint64(0))
	f.Fuzz(func(t *testing.T, requested string, allowed uint64) {
		al := access.Scope(allowed) & access.AllTypes
		g, err := Grant(requested, al)
		if err != nil {
			return
		}
		if (g.Read|g.Search)&^al != 0 || g.Read|g.Search == 0 {
			t.Fatalf("granted %v/%v of %v", g.Read, g.Search, al)
		}
		again, err := Grant(g.Scope, al)
		if err != nil || again != g {
			t.Fatalf("%q grants %+v, %v; not itself %+v", g.Scope, again, err, g)
		}
	})
}
