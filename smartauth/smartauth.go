// Package smartauth owns what the patient's client and a provider's gateway
// must read identically for SMART App Launch: the approval the patient's
// client signs when the patient lets an app read their records at one
// provider, the parameters that carry the request to the client and the
// answer back, and the SMART v2 scopes (what an app asks for, what this
// project can grant, and how that maps onto access.Scope).
//
// An approval is EIP-712 typed data signed by the relationship's owner
// delegate. It names the provider (its registry id: an approval for one
// provider fails at another), the relationship's tag (and nothing of the
// patient's other relationships), the app's client id and redirect URI,
// the scopes granted, the approval's expiry, whether the app may keep
// reading offline (refresh tokens), and the gateway's nonce for the one
// authorize request it answers. The domain names the chain and the
// deployment (its AgentRegistry), as gatewayauth's does, under its own name,
// so a signed request can never pass for an approval or the reverse.
package smartauth

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"
)

// Errors an approval's check returns.
var (
	ErrSignature = errors.New("smartauth: the approval's signature is malformed or does not verify")
)

// The gateway sends the browser to the patient's client's ApprovePath with
// two parameters, the provider and the request's nonce. The client does not
// trust anything else a link could carry: it asks that provider's gateway,
// at the URL the chain's registry names, what the request is (RequestPath,
// answered with a Request), and sends its answer there (ApprovedPath), so
// a forged link can neither show the patient a made-up app nor collect the
// patient's tag or approval.
const (
	ApprovePath  = "/smart/approve"  // the client's landing page
	RequestPath  = "/smart/request"  // the gateway: what a pending request is
	ApprovedPath = "/smart/approved" // the gateway: the client's answer

	ParamProvider = "provider" // the provider's registry id
	ParamRequest  = "request"  // the gateway's nonce for this authorize request (0x, 32 bytes)

	ParamTag       = "tag"       // answer: the relationship's tag (0x hex)
	ParamExpiry    = "expiry"    // answer: the approval's expiry (unix seconds)
	ParamOffline   = "offline"   // answer: "1" if offline access was approved
	ParamSignature = "signature" // answer: the owner delegate's signature (0x, 65 bytes)
	ParamGrant     = "grant"     // answer of an anonymous viewer: its grant id g (0x hex)
	ParamProof     = "proof"     // answer of an anonymous viewer: its Entitlement proof bound to Challenge(nonce)
	ParamError     = "error"     // answer: "access_denied" when the patient said no
)

// Request is a pending authorize request as the gateway describes it to
// the patient's client (GET RequestPath?request=0x…).
type Request struct {
	Provider    uint32 `json:"provider"`
	ClientID    string `json:"clientId"`
	AppName     string `json:"appName"`     // the name the provider registered the app under
	RedirectURI string `json:"redirectUri"` // where the app gets its code
	Scope       string `json:"scope"`       // what the gateway can grant of what the app asked
	Expires     int64  `json:"expires"`     // the expiry the gateway proposes (unix seconds)
}

// Challenge is the Entitlement proof's challenge that answers the authorize
// request with this nonce: an anonymous viewer, who holds no owner key,
// approves an app by proving its Entitlement bound to it. The nonce's first
// byte is cleared, so the value is below the field's modulus.
func Challenge(nonce [32]byte) [32]byte {
	nonce[0] = 0
	return nonce
}

// ErrorDenied is the answer's error when the patient refused.
const ErrorDenied = "access_denied"

// Domain is where an approval is valid: one chain, one deployment (named by
// its AgentRegistry).
type Domain struct {
	ChainID  *big.Int
	Registry common.Address
}

const (
	domainName    = "MedRec-ZK App Approval"
	domainVersion = "1"
	domainType    = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
	approvalType  = "Approval(uint32 provider,uint256 tag,string clientId,string redirectUri,string scope,uint64 expiry,bool offline,bytes32 nonce)"
)

var (
	domainTypeHash   = crypto.Keccak256([]byte(domainType))
	domainNameHash   = crypto.Keccak256([]byte(domainName))
	domainVerHash    = crypto.Keccak256([]byte(domainVersion))
	approvalTypeHash = crypto.Keccak256([]byte(approvalType))
)

func (d Domain) separator() []byte {
	chainID := d.ChainID
	if chainID == nil {
		chainID = new(big.Int)
	}
	return crypto.Keccak256(domainTypeHash, domainNameHash, domainVerHash, common.LeftPadBytes(chainID.Bytes(), 32), common.LeftPadBytes(d.Registry[:], 32))
}

// Approval is what the patient's client signs when the patient lets an app
// read their records at one provider.
type Approval struct {
	Provider    uint32   // the provider's registry id (the gateway's audience)
	Tag         *big.Int // the relationship at that provider
	ClientID    string   // the app
	RedirectURI string   // where the app receives its code
	Scope       string   // the SMART scopes granted, space-separated
	Expiry      uint64   // unix seconds: no token outlives it
	Offline     bool     // the app may keep reading without the patient (refresh tokens)
	Nonce       [32]byte // the gateway's authorize request this answers
}

// Digest returns the EIP-712 digest of a in domain d.
func (a Approval) Digest(d Domain) common.Hash {
	tag := new(big.Int)
	if a.Tag != nil {
		tag = a.Tag
	}
	var offline [32]byte
	if a.Offline {
		offline[31] = 1
	}
	structHash := crypto.Keccak256(
		approvalTypeHash,
		common.LeftPadBytes(new(big.Int).SetUint64(uint64(a.Provider)).Bytes(), 32),
		common.LeftPadBytes(tag.Bytes(), 32),
		crypto.Keccak256([]byte(a.ClientID)),
		crypto.Keccak256([]byte(a.RedirectURI)),
		crypto.Keccak256([]byte(a.Scope)),
		common.LeftPadBytes(new(big.Int).SetUint64(a.Expiry).Bytes(), 32),
		offline[:],
		a.Nonce[:],
	)
	return crypto.Keccak256Hash([]byte{0x19, 0x01}, d.separator(), structHash)
}

// Sign signs a with key in domain d: 65 bytes, v ∈ {27, 28}.
func (a Approval) Sign(key *ecdsa.PrivateKey, d Domain) ([]byte, error) {
	digest := a.Digest(d)
	sig, err := crypto.Sign(digest[:], key)
	if err != nil {
		return nil, fmt.Errorf("smartauth: sign: %w", err)
	}
	sig[64] += 27
	return sig, nil
}

// Signer recovers who signed a in domain d. Only the canonical low-s form
// with v ∈ {27, 28} is accepted: no malleable twins.
func (a Approval) Signer(sig []byte, d Domain) (common.Address, error) {
	if len(sig) != 65 || (sig[64] != 27 && sig[64] != 28) {
		return common.Address{}, ErrSignature
	}
	rs := make([]byte, 65)
	copy(rs, sig)
	rs[64] -= 27
	if !crypto.ValidateSignatureValues(rs[64], new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:64]), true) {
		return common.Address{}, ErrSignature
	}
	digest := a.Digest(d)
	pub, err := crypto.SigToPub(digest[:], rs)
	if err != nil {
		return common.Address{}, ErrSignature
	}
	return crypto.PubkeyToAddress(*pub), nil
}
