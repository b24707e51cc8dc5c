package dbmanager

import (
	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/anchor"
)

func anchorVerify(root [32]byte, leafData common.Hash, i, n int, proof []common.Hash) error {
	return anchor.Verify(root, anchor.LeafHash(leafData[:]), i, n, proof)
}

func stateLeafHash(tag [32]byte, state common.Hash) common.Hash {
	return anchor.StateLeaf{Tag: tag, State: state}.Hash()
}
