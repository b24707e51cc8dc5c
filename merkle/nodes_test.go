package merkle_test

import (
	"testing"

	"github.com/medrec-zk/medrec/merkle"
	"github.com/medrec-zk/medrec/merkle/merkletest"
)

func TestMemNodes(t *testing.T) {
	nodes := merkle.MemNodes()
	merkletest.Run(t, func(*testing.T) merkle.Nodes { return nodes })
}
