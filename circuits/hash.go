package circuits

import (
	"fmt"

	"github.com/consensys/gnark/frontend"
	"github.com/consensys/gnark/std/permutation/poseidon2"

	"github.com/medrec-zk/medrec/zkhash"
)

// hasher is the in-circuit twin of zkhash.Hash: the same sponge over the same
// Poseidon2 permutation, with the domain tag as a constant in lane 0.
type hasher struct {
	api  frontend.API
	perm *poseidon2.Permutation
}

func newHasher(api frontend.API) (*hasher, error) {
	perm, err := poseidon2.NewPoseidon2FromParameters(api, zkhash.Width, zkhash.FullRounds, zkhash.PartialRounds)
	if err != nil {
		return nil, fmt.Errorf("circuits: poseidon2: %w", err)
	}
	return &hasher{api: api, perm: perm}, nil
}

func (h *hasher) hash(d zkhash.Domain, inputs ...frontend.Variable) frontend.Variable {
	if len(inputs) != d.Arity() {
		panic(fmt.Sprintf("circuits: domain %q takes %d inputs, got %d", d.Name(), d.Arity(), len(inputs)))
	}
	state := []frontend.Variable{zkhash.Big(d.Tag()), 0, 0}
	for i := 0; i < len(inputs); i += 2 {
		state[1] = h.api.Add(state[1], inputs[i])
		if i+1 < len(inputs) {
			state[2] = h.api.Add(state[2], inputs[i+1])
		}
		if err := h.perm.Permutation(state); err != nil {
			panic(fmt.Sprintf("circuits: permutation: %v", err)) // width is fixed at 3
		}
	}
	return state[1]
}

// merkleRoot returns the root reached from leaf by the path with the given
// siblings; index is decomposed into exactly len(siblings) bits (merkle.Depth
// in the circuits), which also proves index < 2^len(siblings).
func (h *hasher) merkleRoot(leaf, index frontend.Variable, siblings []frontend.Variable) frontend.Variable {
	bits := h.api.ToBinary(index, len(siblings))
	node := leaf
	for level, sibling := range siblings {
		// With b the path bit: left = node + b·(sibling − node), right = sibling − b·(sibling − node).
		// One multiplication per level instead of two selects.
		d := h.api.Mul(bits[level], h.api.Sub(sibling, node))
		left := h.api.Add(node, d)
		right := h.api.Sub(sibling, d)
		node = h.hash(zkhash.DomainNode, left, right)
	}
	return node
}
