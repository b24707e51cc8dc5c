package chain

import (
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	n := newTestNetwork(t, 3)
	start := time.Now()
	if err := n.Up(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Logf("up in %s", time.Since(start))
	s, err := n.Status(t.Context())
	t.Logf("%+v %v", s, err)
	if err := n.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
}
