package contracts

import (
	"crypto/ecdsa"
	"fmt"
	"math/big"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/contracts/bindings"
)

// The EIP-712 domain and types of Relationships. They must match
// Relationships.sol; TestEIP712MatchesGoEthereum checks them against
// go-ethereum's independent implementation and the contract itself.
const (
	DomainName    = "MedRec-ZK Relationships"
	DomainVersion = "1"
	grantType     = "Grant(uint256 tag,uint8 granteeKind,bytes32 grantee,uint64 scope,uint8 purpose,uint64 expiry,uint32 nonce,uint64 deadline)"
	revokeType    = "Revoke(uint256 tag,uint8 granteeKind,bytes32 grantee,uint32 nonce,uint64 deadline)"
	domainType    = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)

// GrantRequest and RevokeRequest are the messages a relationship's owner
// signs; GrantState is a grant as the chain records it.
type (
	GrantRequest  = bindings.RelationshipsGrantRequest
	RevokeRequest = bindings.RelationshipsRevokeRequest
	GrantState    = bindings.RelationshipsGrant
)

func word(x *big.Int) []byte { return common.LeftPadBytes(x.Bytes(), 32) }
func u64(x uint64) []byte    { return word(new(big.Int).SetUint64(x)) }

// DomainSeparator returns the EIP-712 domain separator of the Relationships
// contract at addr on chain chainID.
func DomainSeparator(chainID *big.Int, addr common.Address) common.Hash {
	return crypto.Keccak256Hash(
		crypto.Keccak256([]byte(domainType)),
		crypto.Keccak256([]byte(DomainName)),
		crypto.Keccak256([]byte(DomainVersion)),
		word(chainID),
		common.LeftPadBytes(addr[:], 32),
	)
}

func typedDigest(domain common.Hash, structHash []byte) common.Hash {
	return crypto.Keccak256Hash([]byte{0x19, 0x01}, domain[:], structHash)
}

// GrantDigest returns the EIP-712 digest the owner signs to grant g.
func GrantDigest(domain common.Hash, g GrantRequest) common.Hash {
	return typedDigest(domain, crypto.Keccak256(
		crypto.Keccak256([]byte(grantType)),
		word(g.Tag), u64(uint64(g.GranteeKind)), g.Grantee[:], u64(g.Scope),
		u64(uint64(g.Purpose)), u64(g.Expiry), u64(uint64(g.Nonce)), u64(g.Deadline),
	))
}

// RevokeDigest returns the EIP-712 digest the owner signs to revoke.
func RevokeDigest(domain common.Hash, r RevokeRequest) common.Hash {
	return typedDigest(domain, crypto.Keccak256(
		crypto.Keccak256([]byte(revokeType)),
		word(r.Tag), u64(uint64(r.GranteeKind)), r.Grantee[:], u64(uint64(r.Nonce)), u64(r.Deadline),
	))
}

// Sign signs an EIP-712 digest: 65 bytes r ‖ s ‖ v with v ∈ {27, 28} and a
// low s, the only form the contract accepts.
func Sign(key *ecdsa.PrivateKey, digest common.Hash) ([]byte, error) {
	sig, err := crypto.Sign(digest[:], key)
	if err != nil {
		return nil, fmt.Errorf("contracts: sign: %w", err)
	}
	sig[64] += 27
	return sig, nil
}

// AddressGrantee encodes an address as a grantee id (left-padded).
func AddressGrantee(a common.Address) [32]byte { return common.BytesToHash(a[:]) }
