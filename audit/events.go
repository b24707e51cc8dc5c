package audit

import (
	"fmt"
	"sync"

	"github.com/ethereum/go-ethereum/accounts/abi"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"

	"github.com/medrec-zk/medrec/contracts/bindings"
)

// abis holds the parsed ABIs of the MedRec-ZK contracts, from the bindings.
type abis struct {
	agents, patients, rels, anchors *abi.ABI
	// event topics
	providerAdded, providerRemoved, gatewayChanged, proposed, voted, executed common.Hash
	enrolled, opened, rotated, granted, revoked, anchored                     common.Hash
	// the only Relationships methods a transaction may call
	relMethods map[[4]byte]string
}

var contractABIs = sync.OnceValues(func() (*abis, error) {
	parse := func(md *bind.MetaData) *abi.ABI {
		a, err := md.ParseABI()
		if err != nil {
			panic(err) // generated ABIs always parse
		}
		return a
	}
	a := &abis{
		agents: parse(&bindings.AgentRegistryMetaData), patients: parse(&bindings.PatientRegistryMetaData),
		rels: parse(&bindings.RelationshipsMetaData), anchors: parse(&bindings.AnchorsMetaData),
		relMethods: map[[4]byte]string{},
	}
	var err error
	ev := func(x *abi.ABI, name string) common.Hash {
		e, ok := x.Events[name]
		if !ok && err == nil {
			err = fmt.Errorf("audit: the bindings have no event %s", name)
		}
		return e.ID
	}
	a.providerAdded, a.providerRemoved, a.gatewayChanged = ev(a.agents, "ProviderAdded"), ev(a.agents, "ProviderRemoved"), ev(a.agents, "GatewayChanged")
	a.proposed, a.voted, a.executed = ev(a.agents, "Proposed"), ev(a.agents, "Voted"), ev(a.agents, "Executed")
	a.enrolled = ev(a.patients, "Enrolled")
	a.opened, a.rotated, a.granted, a.revoked = ev(a.rels, "Opened"), ev(a.rels, "Rotated"), ev(a.rels, "Granted"), ev(a.rels, "Revoked")
	a.anchored = ev(a.anchors, "Anchored")
	for _, name := range []string{"open", "rotate", "grant", "revoke"} {
		m, ok := a.rels.Methods[name]
		if !ok {
			return nil, fmt.Errorf("audit: the bindings have no method Relationships.%s", name)
		}
		a.relMethods[[4]byte(m.ID)] = name
	}
	return a, err
})

// The hot events are decoded by hand: fixed layouts, strict ABI checks (a
// narrow type's high bytes must be zero), no reflection. TestDecodeMatchesBindings
// checks them against the bindings on logs of a real chain.

// words splits log data into 32-byte words, requiring exactly n.
func words(l *types.Log, topics, n int) ([][]byte, error) {
	if len(l.Topics) != topics {
		return nil, fmt.Errorf("%w: %d topics, want %d", ErrChainData, len(l.Topics), topics)
	}
	if len(l.Data) != 32*n {
		return nil, fmt.Errorf("%w: %d data bytes, want %d", ErrChainData, len(l.Data), 32*n)
	}
	w := make([][]byte, n)
	for i := range w {
		w[i] = l.Data[32*i : 32*i+32]
	}
	return w, nil
}

func zeroPrefix(w []byte, n int) bool {
	for _, b := range w[:n] {
		if b != 0 {
			return false
		}
	}
	return true
}

func asAddress(w []byte) (common.Address, error) {
	if !zeroPrefix(w, 12) {
		return common.Address{}, fmt.Errorf("%w: address word %x", ErrChainData, w)
	}
	return common.BytesToAddress(w[12:]), nil
}

func asUint(w []byte, bits int) (uint64, error) {
	if !zeroPrefix(w, 32-bits/8) {
		return 0, fmt.Errorf("%w: uint%d word %x", ErrChainData, bits, w)
	}
	var x uint64
	for _, b := range w[24:] {
		x = x<<8 | uint64(b)
	}
	return x, nil
}

type openedEvent struct {
	tag      [32]byte
	provider uint32
	owner    common.Address
	root     [32]byte
}

func decodeOpened(l *types.Log) (openedEvent, error) {
	w, err := words(l, 3, 2)
	if err != nil {
		return openedEvent{}, err
	}
	p, err := asUint(l.Topics[2][:], 32)
	if err != nil {
		return openedEvent{}, err
	}
	owner, err := asAddress(w[0])
	if err != nil {
		return openedEvent{}, err
	}
	return openedEvent{tag: l.Topics[1], provider: uint32(p), owner: owner, root: [32]byte(w[1])}, nil
}

type rotatedEvent struct {
	tag      [32]byte
	owner    common.Address
	rotation uint32
}

func decodeRotated(l *types.Log) (rotatedEvent, error) {
	w, err := words(l, 2, 2)
	if err != nil {
		return rotatedEvent{}, err
	}
	owner, err := asAddress(w[0])
	if err != nil {
		return rotatedEvent{}, err
	}
	r, err := asUint(w[1], 32)
	if err != nil {
		return rotatedEvent{}, err
	}
	return rotatedEvent{tag: l.Topics[1], owner: owner, rotation: uint32(r)}, nil
}

type grantedEvent struct {
	tag     [32]byte
	kind    uint8
	grantee [32]byte
	expiry  uint64 // Granted only
	epoch   uint32 // Granted only
}

// decodeGranted decodes Granted (scope and purpose are checked, not kept)
// and Revoked (revoke true), which share their indexed layout.
func decodeGranted(l *types.Log, revoke bool) (e grantedEvent, err error) {
	n := 5
	if revoke {
		n = 1
	}
	w, err := words(l, 3, n)
	if err != nil {
		return e, err
	}
	k, err := asUint(w[0], 8)
	if err != nil {
		return e, err
	}
	e = grantedEvent{tag: l.Topics[1], kind: uint8(k), grantee: l.Topics[2]}
	if !revoke {
		var v [4]uint64
		for i, bits := range []int{64, 8, 64, 32} {
			if v[i], err = asUint(w[1+i], bits); err != nil {
				return e, err
			}
		}
		e.expiry, e.epoch = v[2], uint32(v[3])
	}
	return e, nil
}

type enrolledEvent struct {
	provider    uint32
	start       uint32
	root        [32]byte
	commitments [][32]byte
}

// decodeEnrolled decodes a batch's Enrolled(uint32 indexed provider,
// uint32 start, uint256 root, uint256[] commitments): data is start, root,
// the array's offset (96), its length n, then n words.
func decodeEnrolled(l *types.Log) (e enrolledEvent, err error) {
	if len(l.Topics) != 2 {
		return e, fmt.Errorf("%w: %d topics, want 2", ErrChainData, len(l.Topics))
	}
	if len(l.Data) < 128 || len(l.Data)%32 != 0 {
		return e, fmt.Errorf("%w: %d data bytes of an enrolment batch", ErrChainData, len(l.Data))
	}
	w := func(i int) []byte { return l.Data[32*i : 32*i+32] }
	start, err := asUint(w(0), 32)
	if err != nil {
		return e, err
	}
	off, err := asUint(w(2), 64)
	if err != nil || off != 96 {
		return e, fmt.Errorf("%w: enrolment batch's array at offset %x", ErrChainData, w(2))
	}
	n, err := asUint(w(3), 64)
	if err != nil || n == 0 || n != uint64(len(l.Data)/32-4) {
		return e, fmt.Errorf("%w: enrolment batch of %x commitments in %d data bytes", ErrChainData, w(3), len(l.Data))
	}
	p, err := asUint(l.Topics[1][:], 32)
	if err != nil {
		return e, err
	}
	e = enrolledEvent{provider: uint32(p), start: uint32(start), root: [32]byte(w(1)), commitments: make([][32]byte, n)}
	for i := range e.commitments {
		e.commitments[i] = [32]byte(w(4 + i))
	}
	return e, nil
}
