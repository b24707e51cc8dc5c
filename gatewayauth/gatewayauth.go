// Package gatewayauth owns how readers authenticate to a provider's gateway
// with an Ethereum key: the owner delegate of a relationship, or an address a
// patient granted access to. Every request is signed as EIP-712 typed data
// (so an ordinary wallet can sign it too) over the method, path, query, a
// hash of the body, the relationship's tag, the audience (the provider's id,
// so a signature for provider A fails at provider B), a random nonce and an
// expiry, in a domain that names the chain and the deployment (its
// AgentRegistry, as verifyingContract), so a signature for one deployment
// fails at another on the same chain id. The gateway recovers the signer,
// refuses expired or future-dated requests, and records each nonce until
// its request expires (in its records database, with the request's
// access-log entry), so a request cannot be replayed.
//
// Which relationship the signer may read, and what, is not decided here: the
// gateway checks the recovered address against the chain (owner or grantee).
//
// A request without a tag (no X-Medrec-Tag header; tag 0 in the signed
// struct) names no relationship: it speaks for the signer's address alone,
// and the gateway accepts it only on the routes that serve an address
// across relationships (a research grantee's group export), never on a
// relationship's route — and a tagged request never on those. The path is
// signed, so a signature cannot move between the two kinds of route; the
// gateway's check of the kind is a second lock. Zero is never a tag (tags
// are hashes), and an explicit zero tag header is refused as malformed, so
// a tag-less request has one encoding: no header.
package gatewayauth

import (
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/zkhash"
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
	domainVersion = "2"
	domainType    = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
	requestType   = "Request(string method,string path,string query,bytes32 bodyHash,uint256 tag,uint32 audience,bytes32 nonce,uint64 expiry)"
)

// Errors a verification returns; the gateway maps them to 401.
var (
	ErrMissing   = errors.New("gatewayauth: request is not signed")
	ErrMalformed = errors.New("gatewayauth: malformed signature headers")
	ErrExpired   = errors.New("gatewayauth: request expired")
	ErrTooLong   = errors.New("gatewayauth: expiry too far in the future")
	ErrSignature = errors.New("gatewayauth: signature does not match the signer")
	// ErrReplay: the nonce was used already (the caller finds it taken
	// where it records nonces).
	ErrReplay = errors.New("gatewayauth: nonce already used")
)

// Domain is where a signature is valid: one chain, one deployment. The
// deployment is named by its AgentRegistry, the registry of the providers
// whose ids are the audience.
type Domain struct {
	ChainID  *big.Int
	Registry common.Address
}

// separator is the EIP-712 domain separator.
func (d Domain) separator() []byte {
	chainID := d.ChainID
	if chainID == nil {
		chainID = new(big.Int)
	}
	return crypto.Keccak256(domainTypeHash, domainNameHash, domainVerHash, common.LeftPadBytes(chainID.Bytes(), 32), common.LeftPadBytes(d.Registry[:], 32))
}

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

// Digest returns the EIP-712 digest of r in domain d.
func (r Request) Digest(d Domain) common.Hash {
	domain := d.separator()
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

// Sign signs req with key for domain d and sets the headers on h. A zero
// nonce is replaced by a random one; a zero expiry by now + one minute.
func Sign(h http.Header, req Request, key *ecdsa.PrivateKey, d Domain, now time.Time) error {
	if req.Nonce == ([32]byte{}) {
		if _, err := rand.Read(req.Nonce[:]); err != nil {
			return fmt.Errorf("gatewayauth: nonce: %w", err)
		}
	}
	if req.Expiry == 0 {
		req.Expiry = uint64(now.Add(time.Minute).Unix())
	}
	digest := req.Digest(d)
	sig, err := crypto.Sign(digest[:], key)
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

// Verifier checks signed requests for one provider. It does not remember
// nonces: the caller records each request's nonce as used, once, before it
// answers, and refuses a nonce it finds taken (ErrReplay) — the gateway
// does so in the same commit as the request's access-log entry.
type Verifier struct {
	Domain   Domain
	Audience uint32
}

// Signed is a verified request: who signed it, for which relationship.
type Signed struct {
	Signer common.Address
	// Tag names the relationship; nil for a tag-less request, which speaks
	// for the signer's address alone (see the package comment).
	Tag     *big.Int
	Nonce   [32]byte
	Expires time.Time // the request's expiry: its nonce must be remembered until then
}

// Check checks the headers of a request against its method, path, raw
// query and body at time now: the signature, the audience, the expiry. It
// does not record the nonce: a caller that serves the request must record
// it as used, once, before it answers.
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
		// Either form: minimal (as Sign writes it) or zero-padded (as the
		// CLI and the audit print tags).
		tag, err := zkhash.ParseHex(t)
		if err != nil {
			return Signed{}, fmt.Errorf("%w: tag: %v", ErrMalformed, err)
		}
		req.Tag = zkhash.Big(tag)
		if req.Tag.Sign() == 0 {
			return Signed{}, fmt.Errorf("%w: a zero tag names no relationship; a tag-less request sends no %s header", ErrMalformed, HeaderTag)
		}
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
	d := req.Digest(v.Domain)
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
