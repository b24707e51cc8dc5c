package zkhash

import (
	"fmt"
	"math/big"
	"sync"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark-crypto/ecc/bn254/fr/poseidon2"
	"golang.org/x/crypto/sha3"
)

// Permutation parameters of H. Changing any of them changes every commitment,
// tag and tree root, the circuits and the Solidity contracts.
const (
	Width         = 3
	FullRounds    = 8
	PartialRounds = 56
	SBoxDegree    = 5
)

// Domain is a domain-separation tag together with the number of inputs hashed
// under it.
type Domain struct {
	name  string
	arity int
	tag   fr.Element
}

// The domains of every use of H. See the package documentation.
var (
	DomainCommit = newDomain("commit", 1)
	DomainTag    = newDomain("tag", 2)
	DomainViewer = newDomain("viewer", 1)
	DomainGrant  = newDomain("grant", 3)
	DomainNode   = newDomain("node", 2)
)

// Domains lists every domain, in a fixed order (used by vector files).
func Domains() []Domain {
	return []Domain{DomainCommit, DomainTag, DomainViewer, DomainGrant, DomainNode}
}

func newDomain(name string, arity int) Domain {
	h := sha3.NewLegacyKeccak256()
	h.Write([]byte("medrec-zk/v1/" + name))
	var t fr.Element
	t.SetBigInt(new(big.Int).SetBytes(h.Sum(nil))) // SetBigInt reduces modulo r
	return Domain{name: name, arity: arity, tag: t}
}

// Name returns the domain's short name ("commit", "tag", ...).
func (d Domain) Name() string { return d.name }

// Arity returns how many field elements are hashed under the domain.
func (d Domain) Arity() int { return d.arity }

// Tag returns the domain-separation constant D placed in the capacity lane.
func (d Domain) Tag() fr.Element { return d.tag }

var permutation = sync.OnceValue(func() *poseidon2.Permutation {
	return poseidon2.NewPermutation(Width, FullRounds, PartialRounds)
})

// RoundKeys returns the permutation's round constants, as gnark-crypto derives
// them: one slice per round, Width elements for full rounds and one for
// partial rounds. The Solidity generator inlines them.
func RoundKeys() [][]fr.Element {
	p := poseidon2.NewParameters(Width, FullRounds, PartialRounds)
	return p.RoundKeys
}

// Permute applies the Poseidon2 permutation to state in place.
func Permute(state *[Width]fr.Element) {
	if err := permutation().Permutation(state[:]); err != nil {
		// Only returned for a state of the wrong width, which the array type rules out.
		panic(fmt.Sprintf("zkhash: permutation: %v", err))
	}
}

// Hash computes H(d; inputs...). It panics when len(inputs) differs from the
// domain's arity: that is a programming error, never a data error.
func Hash(d Domain, inputs ...fr.Element) fr.Element {
	if len(inputs) != d.arity {
		panic(fmt.Sprintf("zkhash: domain %q takes %d inputs, got %d", d.name, d.arity, len(inputs)))
	}
	state := [Width]fr.Element{d.tag}
	for i := 0; i < len(inputs); i += 2 {
		state[1].Add(&state[1], &inputs[i])
		if i+1 < len(inputs) {
			state[2].Add(&state[2], &inputs[i+1])
		}
		Permute(&state)
	}
	return state[1]
}

// Commitment returns the identity commitment C = H(D_commit; s).
func Commitment(s fr.Element) fr.Element { return Hash(DomainCommit, s) }

// Tag returns the relationship tag of identity secret s at provider p:
// tag_p = H(D_tag; s, p).
func Tag(s fr.Element, provider uint32) fr.Element {
	return Hash(DomainTag, s, FromUint64(uint64(provider)))
}

// ViewerCommitment returns Cv = H(D_viewer; v) for viewer secret v.
func ViewerCommitment(v fr.Element) fr.Element { return Hash(DomainViewer, v) }

// Grant returns the anonymous grant identifier g = H(D_grant; Cv, tag, k).
func Grant(viewerCommitment, tag, k fr.Element) fr.Element {
	return Hash(DomainGrant, viewerCommitment, tag, k)
}

// Node returns the Merkle tree node H(D_node; left, right).
func Node(left, right fr.Element) fr.Element { return Hash(DomainNode, left, right) }
