package circuits

import (
	"fmt"
	"math/big"

	"github.com/consensys/gnark-crypto/ecc/bn254/fr"
	"github.com/consensys/gnark/frontend"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/zkhash"
)

// The batch-insertion statement (ADR 0002, decision 3): a patient registry
// deployed with an insertion verifier keeps only its root, and a gateway
// proves each batch of enrolments (PatientRegistry.enrolProven,
// dbmanager's enrolment queue). This is the circuit and its Go twin.

// InsertionBits is log2 of InsertionSize.
const InsertionBits = 7

// InsertionSize is the most leaves one Insertion proof inserts.
const InsertionSize = 1 << InsertionBits

// subtreeDepth is the height of the tree above an aligned subtree of
// InsertionSize leaves.
const subtreeDepth = merkle.Depth - InsertionBits

// Insertion proves that NewRoot is the root of the registry's tree after
// Count leaves (1 to InsertionSize) are inserted at index Start of the
// tree whose root is OldRoot and which held Start leaves, and that these
// leaves are the list L the contract was sent: E = Σ L_i·X^i, with X the
// contract's keccak of (Start, OldRoot, NewRoot, L) reduced mod r.
//
// The leaves span at most two aligned subtrees of InsertionSize: the one
// holding Start (index Start>>InsertionBits) and the next. Sub holds both
// after the insertion; the first's leaves before Start are the tree's
// (its old root must lead to OldRoot), the second was empty.
//
// Binding the witnessed leaves to the contract's: NewRoot is a Poseidon2
// tree over Sub, and X hashes NewRoot with L, so a prover who puts other
// leaves in the tree than the list the contract emits fixes both lists
// before X is known; two different lists agree at a random X with
// probability at most InsertionSize/r (Schwartz–Zippel). The contract must
// reject X = 0 (the circuit does too) and check Start against its count.
type Insertion struct {
	// Secret inputs.
	Sub      [2][InsertionSize]frontend.Variable
	Siblings [2][subtreeDepth]frontend.Variable

	// Public inputs, in the verifier's order.
	OldRoot frontend.Variable `gnark:",public"`
	NewRoot frontend.Variable `gnark:",public"`
	Start   frontend.Variable `gnark:",public"`
	Count   frontend.Variable `gnark:",public"`
	X       frontend.Variable `gnark:",public"`
	E       frontend.Variable `gnark:",public"`
}

// Define declares the circuit's constraints.
func (c *Insertion) Define(api frontend.API) error {
	h, err := newHasher(api)
	if err != nil {
		return err
	}
	const n = 2 * InsertionSize
	bits := api.ToBinary(c.Start, merkle.Depth) // Start < 2^Depth
	off := api.FromBinary(bits[:InsertionBits]...)
	first := api.FromBinary(bits[InsertionBits:]...)
	end := api.Add(off, c.Count)

	// Count is 1 … InsertionSize: exactly one of those values.
	var isCount frontend.Variable = 0
	for j := 1; j <= InsertionSize; j++ {
		isCount = api.Add(isCount, api.IsZero(api.Sub(c.Count, j)))
	}
	api.AssertIsEqual(isCount, 1)

	// at[p]: position p (of the 2·InsertionSize) is at or after Start;
	// before[p]: it is before Start + Count.
	var at, before [n]frontend.Variable
	var seenOff, seenEnd frontend.Variable = 0, 0
	for p := range n {
		if p < InsertionSize {
			seenOff = api.Add(seenOff, api.IsZero(api.Sub(off, p)))
		}
		at[p] = seenOff // 1 from p = off on (off < InsertionSize: it is seen)
		seenEnd = api.Add(seenEnd, api.IsZero(api.Sub(end, p)))
		before[p] = api.Sub(1, seenEnd)
	}

	// X ≠ 0, and its powers.
	api.AssertIsDifferent(c.X, 0)
	var pow [n]frontend.Variable
	pow[0] = 1
	for p := 1; p < n; p++ {
		pow[p] = api.Mul(pow[p-1], c.X)
	}
	// X^off, from off's bits.
	var xOff frontend.Variable = 1
	sq := c.X
	for i := range InsertionBits {
		xOff = api.Mul(xOff, api.Add(1, api.Mul(bits[i], api.Sub(sq, 1))))
		if i+1 < InsertionBits {
			sq = api.Mul(sq, sq)
		}
	}

	// The inserted leaves evaluate to E; nothing after them; the first
	// subtree's old leaves are its leaves before Start, then empty.
	var sum frontend.Variable = 0
	var old [InsertionSize]frontend.Variable
	for p := range n {
		v := c.Sub[p/InsertionSize][p%InsertionSize]
		inserted := api.Mul(at[p], before[p])
		sum = api.Add(sum, api.Mul(api.Mul(inserted, v), pow[p]))
		api.AssertIsEqual(api.Mul(api.Sub(1, before[p]), v), 0)
		if p < InsertionSize {
			old[p] = api.Mul(api.Sub(1, at[p]), v)
		}
	}
	api.AssertIsEqual(sum, api.Mul(c.E, xOff))

	// The first subtree: old root to OldRoot, new root to an intermediate
	// root; the second: empty in the intermediate tree, then filled.
	second := api.Add(first, 1) // < 2^subtreeDepth: merkleRoot decomposes it
	api.AssertIsEqual(h.merkleRoot(subtreeRoot(h, old[:]), first, c.Siblings[0][:]), c.OldRoot)
	mid := h.merkleRoot(subtreeRoot(h, c.Sub[0][:]), first, c.Siblings[0][:])
	api.AssertIsEqual(h.merkleRoot(zkhash.Big(merkle.Zero(InsertionBits)), second, c.Siblings[1][:]), mid)
	api.AssertIsEqual(h.merkleRoot(subtreeRoot(h, c.Sub[1][:]), second, c.Siblings[1][:]), c.NewRoot)
	return nil
}

// subtreeRoot hashes leaves (a power of two of them) up to their root.
func subtreeRoot(h *hasher, leaves []frontend.Variable) frontend.Variable {
	level := append([]frontend.Variable(nil), leaves...)
	for len(level) > 1 {
		up := make([]frontend.Variable, len(level)/2)
		for i := range up {
			up[i] = h.hash(zkhash.DomainNode, level[2*i], level[2*i+1])
		}
		level = up
	}
	return level[0]
}

// InsertionPublic holds the Insertion circuit's public inputs.
type InsertionPublic struct {
	OldRoot, NewRoot, Start, Count, X, E fr.Element
}

// Inputs returns the public inputs in the verifier's order.
func (p InsertionPublic) Inputs() []fr.Element {
	return []fr.Element{p.OldRoot, p.NewRoot, p.Start, p.Count, p.X, p.E}
}

// InsertionChallenge is X as the contract would compute it: keccak256 of
// (start, old root, new root, leaves), each a 32-byte big-endian word,
// reduced mod r.
func InsertionChallenge(start uint64, oldRoot, newRoot fr.Element, leaves []fr.Element) fr.Element {
	words := make([]byte, 0, 32*(3+len(leaves)))
	var w [32]byte
	new(big.Int).SetUint64(start).FillBytes(w[:])
	words = append(words, w[:]...)
	for _, e := range append([]fr.Element{oldRoot, newRoot}, leaves...) {
		b := e.Bytes()
		words = append(words, b[:]...)
	}
	var x fr.Element
	x.SetBigInt(new(big.Int).SetBytes(crypto.Keccak256(words)))
	return x
}

// InsertionEvaluation is E = Σ leaves_i·x^i, as the contract would compute
// it (Horner's rule).
func InsertionEvaluation(leaves []fr.Element, x fr.Element) fr.Element {
	var e fr.Element
	for i := len(leaves) - 1; i >= 0; i-- {
		e.Mul(&e, &x)
		e.Add(&e, &leaves[i])
	}
	return e
}

// InsertionWitness builds the Insertion assignment for inserting leaves
// after old, a tree's whole list of leaves.
func InsertionWitness(old, leaves []fr.Element) (*Insertion, InsertionPublic, error) {
	t, err := merkle.New(old)
	if err != nil {
		return nil, InsertionPublic{}, fmt.Errorf("%w: %v", ErrWitness, err)
	}
	return InsertionWitnessTree(t, leaves)
}

// InsertionWitnessTree builds the Insertion assignment for inserting leaves
// into t after its last leaf; t is read, not changed (a gateway's stored
// tree: the leaves of one aligned subtree and one path are read).
func InsertionWitnessTree(t *merkle.Tree, leaves []fr.Element) (*Insertion, InsertionPublic, error) {
	start := t.Len()
	switch {
	case len(leaves) == 0 || len(leaves) > InsertionSize:
		return nil, InsertionPublic{}, fmt.Errorf("%w: a batch of %d leaves (1 to %d)", ErrWitness, len(leaves), InsertionSize)
	case start+2*InsertionSize > merkle.Capacity:
		return nil, InsertionPublic{}, fmt.Errorf("%w: a batch at %d reaches past the tree's last whole subtree", ErrWitness, start)
	}
	first := start >> InsertionBits
	second := first + 1
	base := first << InsertionBits
	before, err := t.Leaves(base, start-base)
	if err != nil {
		return nil, InsertionPublic{}, fmt.Errorf("%w: %v", ErrWitness, err)
	}
	sib0, err := t.Siblings(InsertionBits, first)
	if err != nil {
		return nil, InsertionPublic{}, fmt.Errorf("%w: %v", ErrWitness, err)
	}
	var sub [2][InsertionSize]fr.Element
	for p, v := range append(before, leaves...) {
		sub[p/InsertionSize][p%InsertionSize] = v
	}
	var oldSub [InsertionSize]fr.Element
	copy(oldSub[:], before)
	up := func(node fr.Element, index int, siblings []fr.Element) fr.Element {
		for j, s := range siblings {
			if (index>>j)&1 == 1 {
				node = zkhash.Node(s, node)
			} else {
				node = zkhash.Node(node, s)
			}
		}
		return node
	}
	oldRoot := t.Root()
	if up(subtreeRootOf(oldSub[:]), first, sib0) != oldRoot {
		return nil, InsertionPublic{}, fmt.Errorf("%w: the tree's stored nodes do not lead to its root", ErrWitness)
	}
	// The second subtree's siblings once the first is filled: empty to its
	// right below the level where the two join, the first subtree's new
	// ancestor at that level, the first's own siblings above.
	sub0 := subtreeRootOf(sub[0][:])
	var sib1 [subtreeDepth]fr.Element
	for j := range sib1 {
		a, b := first>>j, second>>j
		switch {
		case a == b:
			sib1[j] = sib0[j]
		case b&1 == 1: // a is b's left sibling
			sib1[j] = up(sub0, first, sib0[:j])
		default:
			sib1[j] = merkle.Zero(InsertionBits + j)
		}
	}
	a := &Insertion{}
	for k := range sub {
		for p := range sub[k] {
			a.Sub[k][p] = sub[k][p]
		}
	}
	for j := range sib1 {
		a.Siblings[0][j], a.Siblings[1][j] = sib0[j], sib1[j]
	}
	pub := InsertionPublic{
		OldRoot: oldRoot, NewRoot: up(subtreeRootOf(sub[1][:]), second, sib1[:]),
		Start: zkhash.FromUint64(uint64(start)), Count: zkhash.FromUint64(uint64(len(leaves))),
	}
	pub.X = InsertionChallenge(uint64(start), pub.OldRoot, pub.NewRoot, leaves)
	if pub.X.IsZero() {
		return nil, InsertionPublic{}, fmt.Errorf("%w: the challenge is zero", ErrWitness)
	}
	pub.E = InsertionEvaluation(leaves, pub.X)
	a.OldRoot, a.NewRoot, a.Start, a.Count, a.X, a.E = pub.OldRoot, pub.NewRoot, pub.Start, pub.Count, pub.X, pub.E
	return a, pub, nil
}

// subtreeRootOf hashes leaves (a power of two of them) up to their root.
func subtreeRootOf(leaves []fr.Element) fr.Element {
	level := append([]fr.Element(nil), leaves...)
	for len(level) > 1 {
		for i := range len(level) / 2 {
			level[i] = zkhash.Node(level[2*i], level[2*i+1])
		}
		level = level[:len(level)/2]
	}
	return level[0]
}
