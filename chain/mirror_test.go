package chain

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
)

// fakeClique is the clique namespace of a node that never seals: votes are
// only recorded.
type fakeClique struct {
	signers   []common.Address
	proposals map[common.Address]bool
	calls     []string
}

func (f *fakeClique) GetSigners(*rpc.BlockNumber) []common.Address { return f.signers }
func (f *fakeClique) Proposals() map[common.Address]bool           { return f.proposals }
func (f *fakeClique) Propose(a common.Address, auth bool) {
	f.proposals[a] = auth
	f.calls = append(f.calls, map[bool]string{true: "propose+", false: "propose-"}[auth]+name(a))
}
func (f *fakeClique) Discard(a common.Address) {
	delete(f.proposals, a)
	f.calls = append(f.calls, "discard"+name(a))
}

// Signers are named A, B, C… as in go-ethereum's clique snapshot tests.
var addrs = map[string]common.Address{"A": {0xa}, "B": {0xb}, "C": {0xc}, "D": {0xd}}

func name(a common.Address) string {
	for n, x := range addrs {
		if x == a {
			return n
		}
	}
	return a.Hex()
}

func set(names string) []common.Address {
	var out []common.Address
	for _, r := range names {
		out = append(out, addrs[string(r)])
	}
	return out
}

func fakeNode(t *testing.T, f *fakeClique) *Node {
	srv := rpc.NewServer()
	if err := srv.RegisterName("clique", f); err != nil {
		t.Fatal(err)
	}
	c := rpc.DialInProc(srv)
	t.Cleanup(func() { c.Close(); srv.Stop() })
	return &Node{URL: "inproc", rpc: c}
}

func TestMirrorStep(t *testing.T) {
	tests := []struct {
		name          string
		want, have    string
		proposals     map[string]bool
		calls         []string
		missing, extr string
	}{
		{name: "in sync", want: "ABC", have: "ABC"},
		{name: "vote D in", want: "ABCD", have: "ABC", calls: []string{"propose+D"}, missing: "D"},
		{name: "already voting D in", want: "ABCD", have: "ABC", proposals: map[string]bool{"D": true}, missing: "D"},
		{name: "vote C out", want: "AB", have: "ABC", calls: []string{"propose-C"}, extr: "C"},
		{name: "D in and C out", want: "ABD", have: "ABC", calls: []string{"propose+D", "propose-C"}, missing: "D", extr: "C"},
		{name: "D is in: discard the vote", want: "ABCD", have: "ABCD", proposals: map[string]bool{"D": true}, calls: []string{"discardD"}},
		{name: "C is out: discard the vote", want: "AB", have: "AB", proposals: map[string]bool{"C": false}, calls: []string{"discardC"}},
		{name: "source dropped D: withdraw", want: "ABC", have: "ABC", proposals: map[string]bool{"D": true}, calls: []string{"discardD"}},
		{name: "source flipped C: revote", want: "AB", have: "ABC", proposals: map[string]bool{"C": true}, calls: []string{"discardC", "propose-C"}, extr: "C"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeClique{signers: set(tt.have), proposals: map[common.Address]bool{}}
			for n, auth := range tt.proposals {
				f.proposals[addrs[n]] = auth
			}
			m := NewMirror(NewSignerSet(set(tt.want)...), fakeNode(t, f), nil)
			d, err := m.Step(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.calls, tt.calls) {
				t.Errorf("calls %v, want %v", f.calls, tt.calls)
			}
			if want := Compare(set(tt.want), set(tt.have)); !slices.Equal(d.Missing, want.Missing) || !slices.Equal(d.Extra, want.Extra) ||
				!slices.Equal(d.Missing, sortAddrs(set(tt.missing))) || !slices.Equal(d.Extra, sortAddrs(set(tt.extr))) {
				t.Errorf("drift %v", d)
			}
			if m.Drift().String() != d.String() {
				t.Errorf("Drift() %v, Step returned %v", m.Drift(), d)
			}
			// A second step changes nothing more.
			before := slices.Clone(f.calls)
			props := maps.Clone(f.proposals)
			if _, err := m.Step(t.Context()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(f.calls, before) || !maps.Equal(f.proposals, props) {
				t.Errorf("second step: calls %v", f.calls[len(before):])
			}
		})
	}
}

type failingSource struct{}

func (failingSource) ActiveSigners(context.Context) ([]common.Address, error) {
	return nil, errors.New("registry unavailable")
}

func TestMirrorRefuses(t *testing.T) {
	f := &fakeClique{signers: set("ABC"), proposals: map[common.Address]bool{}}
	// An empty source would vote every authority out: refuse.
	if _, err := NewMirror(NewSignerSet(), fakeNode(t, f), nil).Step(t.Context()); !errors.Is(err, ErrNoSigners) {
		t.Fatalf("empty source: %v", err)
	}
	if _, err := NewMirror(failingSource{}, fakeNode(t, f), nil).Step(t.Context()); err == nil {
		t.Fatal("failing source: no error")
	}
	if len(f.calls) != 0 {
		t.Fatalf("voted anyway: %v", f.calls)
	}
}

func TestMirrorRun(t *testing.T) {
	f := &fakeClique{signers: set("AB"), proposals: map[common.Address]bool{}}
	m := NewMirror(NewSignerSet(set("ABC")...), fakeNode(t, f), nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := m.Run(ctx, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	if !slices.Equal(f.calls, []string{"propose+C"}) || m.Drift().None() {
		t.Fatalf("calls %v, drift %v", f.calls, m.Drift())
	}
}
