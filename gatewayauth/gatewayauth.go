// Package gatewayauth owns how readers authenticate to a provider's gateway
// with an Ethereum key: the owner delegate of a relationship, or an address a
// patient granted access to. Every request is signed as EIP-712 typed data
// (so an ordinary wallet can sign it too) over the method, path, query, a
// hash of the body, the relationship's tag, the audience (the provider's id,
// so a signature for provider A fails at provider B), a random nonce and an
// expiry. The gateway recovers the signer, refuses expired or future-dated
// requests and remembers nonces until they expire, so a request cannot be
// replayed. Where nonces are remembered is a NonceStore: in memory by
// default (forgotten when the process ends), or a database, so that a replay
// fails after a restart too.
//
// Which relationship the signer may read, and what, is not decided here: the
// gateway checks the recovered address against the chain (owner or grantee).
package gatewayauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"
)

// Headers carrying a signed request.
const (
	HeaderSigner    = "X-Medrec-Signer"
	HeaderTag       = "X-Medrec-Tag"
	HeaderNonce     = "X-Medrec-Nonce"
	HeaderExpiry    = "X-Medrec-Expiry"
	HeaderSignature = "X-Medrec-Signature"
)

// MaxLifetime bounds how far in the future a request's expiry may be; it is
// also how long nonces are remembered.
const MaxLifetime = 5 * time.Minute

const (
	domainName    = "MedRec-ZK Gateway"
	domainVersion = "1"
	domainType    = "EIP712Domain(string name,string version,uint256 chainId)"
	requestType   = "Request(string method,string path,string query,bytes32 bodyHash,uint256 tag,uint32 audience,bytes32 nonce,uint64 expiry)"
)

// Errors a verification returns; the gateway maps them to 401.
var (
	ErrMissing   = errors.New("gatewayauth: request is not signed")
	ErrMalformed = errors.New("gatewayauth: malformed signature headers")
	ErrExpired   = errors.New("gatewayauth: request expired")
	ErrTooLong   = errors.New("gatewayauth: expiry too far in the future")
	ErrSignature = errors.New("gatewayauth: signature does not match the signer")
	ErrReplay    = errors.New("gatewayauth: nonce already used")
	// ErrUnavailable: the NonceStore could not say whether the nonce was
	// used, so the request is refused; the gateway maps it to 503.
	ErrUnavailable = errors.New("gatewayauth: nonce store unavailable")
)

// Request is what a reader signs.
type Request struct {
	Method   string
	Path     string
	Query    string // the raw query string, as sent
	BodyHash common.Hash
	Tag      *big.Int
	Audience uint32 // provider id
	Nonce    [32]byte
	Expiry   uint64 // unix seconds
}

// The EIP-712 type and domain hashes that do not depend on the request.
var (
	domainTypeHash  = crypto.Keccak256([]byte(domainType))
	domainNameHash  = crypto.Keccak256([]byte(domainName))
	domainVerHash   = crypto.Keccak256([]byte(domainVersion))
	requestTypeHash = crypto.Keccak256([]byte(requestType))
)

// Digest returns the EIP-712 digest of r on chain chainID.
func (r Request) Digest(chainID *big.Int) common.Hash {
	domain := crypto.Keccak256(domainTypeHash, domainNameHash, domainVerHash, common.LeftPadBytes(chainID.Bytes(), 32))
	tag := new(big.Int)
	if r.Tag != nil {
		tag = r.Tag
	}
	structHash := crypto.Keccak256(
		requestTypeHash,
		crypto.Keccak256([]byte(r.Method)),
		crypto.Keccak256([]byte(r.Path)),
		crypto.Keccak256([]byte(r.Query)),
		r.BodyHash[:],
		common.LeftPadBytes(tag.Bytes(), 32),
		common.LeftPadBytes(new(big.Int).SetUint64(uint64(r.Audience)).Bytes(), 32),
		r.Nonce[:],
		common.LeftPadBytes(new(big.Int).SetUint64(r.Expiry).Bytes(), 32),
	)
	return crypto.Keccak256Hash([]byte{0x19, 0x01}, domain, structHash)
}

// BodyHash is keccak256 of the request body (of nothing for an empty body).
func BodyHash(body []byte) common.Hash { return crypto.Keccak256Hash(body) }

// Sign signs req with key and sets the headers on h. A zero nonce is replaced
// by a random one; a zero expiry by now + one minute.
func Sign(h http.Header, req Request, key *ecdsa.PrivateKey, chainID *big.Int, now time.Time) error {
	if req.Nonce == ([32]byte{}) {
		if _, err := rand.Read(req.Nonce[:]); err != nil {
			return fmt.Errorf("gatewayauth: nonce: %w", err)
		}
	}
	if req.Expiry == 0 {
		req.Expiry = uint64(now.Add(time.Minute).Unix())
	}
	d := req.Digest(chainID)
	sig, err := crypto.Sign(d[:], key)
	if err != nil {
		return fmt.Errorf("gatewayauth: sign: %w", err)
	}
	sig[64] += 27
	h.Set(HeaderSigner, crypto.PubkeyToAddress(key.PublicKey).Hex())
	if req.Tag != nil {
		h.Set(HeaderTag, hexutil.EncodeBig(req.Tag))
	}
	h.Set(HeaderNonce, hexutil.Encode(req.Nonce[:]))
	h.Set(HeaderExpiry, strconv.FormatUint(req.Expiry, 10))
	h.Set(HeaderSignature, hexutil.Encode(sig))
	return nil
}

// NonceStore remembers the nonces of accepted requests.
type NonceStore interface {
	// UseNonce records nonce as used until expires, the request's expiry.
	// If the nonce is recorded already it returns an error wrapping
	// ErrReplay; of concurrent calls with one nonce exactly one succeeds.
	// Any other error means the store could not tell, and Verify refuses the
	// request. now is the verifier's clock: Verify never asks about a
	// request that expired at or before now, so a store may forget such
	// nonces.
	UseNonce(ctx context.Context, nonce [32]byte, expires, now time.Time) error
}

// MemoryNonces is a NonceStore in memory: whatever it holds is lost when the
// process ends, so a request signed before a restart can be replayed after
// it (until it expires). The zero value is ready to use.
type MemoryNonces struct {
	mu     sync.Mutex
	nonces map[[32]byte]time.Time // nonce → expiry
	swept  time.Time
}

var _ NonceStore = (*MemoryNonces)(nil)

// UseNonce implements NonceStore. Expired nonces are forgotten once a minute.
func (m *MemoryNonces) UseNonce(_ context.Context, n [32]byte, expires, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nonces == nil {
		m.nonces = map[[32]byte]time.Time{}
	}
	if !now.Before(m.swept.Add(time.Minute)) {
		for k, exp := range m.nonces {
			if !exp.After(now) {
				delete(m.nonces, k)
			}
		}
		m.swept = now
	}
	if _, used := m.nonces[n]; used {
		return ErrReplay
	}
	m.nonces[n] = expires
	return nil
}

// Verifier checks signed requests for one provider and remembers nonces.
type Verifier struct {
	ChainID  *big.Int
	Audience uint32
	// Nonces remembers used nonces; nil means a MemoryNonces of the
	// Verifier's own, forgotten on restart.
	Nonces NonceStore

	once sync.Once
	mem  *MemoryNonces
}

func (v *Verifier) nonces() NonceStore {
	if v.Nonces != nil {
		return v.Nonces
	}
	v.once.Do(func() { v.mem = new(MemoryNonces) })
	return v.mem
}

// Signed is a verified request: who signed it, for which relationship.
type Signed struct {
	Signer  common.Address
	Tag     *big.Int
	Nonce   [32]byte
	Expires time.Time // the request's expiry: its nonce must be remembered until then
}

// Verify checks the headers of a request against its method, path, raw
// query and body at time now, and then consumes the nonce: a nonce already
// used is ErrReplay, a NonceStore failure ErrUnavailable. With ErrReplay the
// signature was valid, and the returned Signed names whose request was
// replayed (for the access log; it authorizes nothing).
func (v *Verifier) Verify(ctx context.Context, h http.Header, method, path, query string, body []byte, now time.Time) (Signed, error) {
	signed, err := v.Check(h, method, path, query, body, now)
	if err != nil {
		return Signed{}, err
	}
	if err := v.nonces().UseNonce(ctx, signed.Nonce, signed.Expires, now); err != nil {
		if errors.Is(err, ErrReplay) {
			return signed, err // the signature is genuine: say whose request was replayed
		}
		return Signed{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return signed, nil
}

// Check is Verify without the nonce: it checks the headers, expiry and
// signature but does not consume the nonce. A caller that serves a request
// after Check alone must itself record the nonce as used, once, before it
// answers (the gateway does so in the same commit as the access-log entry).
func (v *Verifier) Check(h http.Header, method, path, query string, body []byte, now time.Time) (Signed, error) {
	signer, nonceHex, expHex, sigHex := h.Get(HeaderSigner), h.Get(HeaderNonce), h.Get(HeaderExpiry), h.Get(HeaderSignature)
	if signer == "" && sigHex == "" {
		return Signed{}, ErrMissing
	}
	if !common.IsHexAddress(signer) {
		return Signed{}, fmt.Errorf("%w: signer", ErrMalformed)
	}
	var req Request
	req.Method, req.Path, req.Query, req.BodyHash, req.Audience = method, path, query, BodyHash(body), v.Audience
	if t := h.Get(HeaderTag); t != "" {
		tag, err := hexutil.DecodeBig(t)
		if err != nil {
			return Signed{}, fmt.Errorf("%w: tag: %v", ErrMalformed, err)
		}
		req.Tag = tag
	}
	nb, err := hexutil.Decode(nonceHex)
	if err != nil || len(nb) != 32 {
		return Signed{}, fmt.Errorf("%w: nonce", ErrMalformed)
	}
	copy(req.Nonce[:], nb)
	req.Expiry, err = strconv.ParseUint(expHex, 10, 64)
	if err != nil {
		return Signed{}, fmt.Errorf("%w: expiry", ErrMalformed)
	}
	sig, err := hexutil.Decode(sigHex)
	if err != nil || len(sig) != 65 {
		return Signed{}, fmt.Errorf("%w: signature", ErrMalformed)
	}
	unix := uint64(now.Unix())
	if req.Expiry <= unix {
		return Signed{}, ErrExpired
	}
	if req.Expiry > unix+uint64(MaxLifetime/time.Second) {
		return Signed{}, ErrTooLong
	}
	// Only the canonical low-s form with v ∈ {27, 28}: no malleable twins.
	if sig[64] != 27 && sig[64] != 28 {
		return Signed{}, fmt.Errorf("%w: v", ErrMalformed)
	}
	rs := make([]byte, 65)
	copy(rs, sig)
	rs[64] -= 27
	if !crypto.ValidateSignatureValues(rs[64], new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:64]), true) {
		return Signed{}, ErrSignature
	}
	d := req.Digest(v.ChainID)
	pub, err := crypto.SigToPub(d[:], rs)
	if err != nil {
		return Signed{}, ErrSignature
	}
	addr := crypto.PubkeyToAddress(*pub)
	if addr != common.HexToAddress(signer) {
		return Signed{}, ErrSignature
	}
	return Signed{Signer: addr, Tag: req.Tag, Nonce: req.Nonce, Expires: time.Unix(int64(req.Expiry), 0)}, nil
}
