package chain

import (
	"context"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Status: what `medrec network status` reports.

// NodeStatus is one node as seen now.
type NodeStatus struct {
	Provider  int            `json:"provider"`
	Authority common.Address `json:"authority"`
	Gateway   common.Address `json:"gateway"`
	PID       int            `json:"pid"`
	RPC       string         `json:"rpc"`
	Up        bool           `json:"up"`     // process alive and RPC answering
	Signer    bool           `json:"signer"` // in the chain's signer set
	Peers     int            `json:"peers"`
	Height    uint64         `json:"height"`
	Error     string         `json:"error,omitempty"`
}

// Status is the network as seen now.
type Status struct {
	Dir         string           `json:"dir"`
	ChainID     uint64           `json:"chain_id"`
	GenesisHash common.Hash      `json:"genesis_hash"`
	Height      uint64           `json:"height"`  // highest head among the nodes
	Signers     []common.Address `json:"signers"` // Clique signers at that head
	Nodes       []NodeStatus     `json:"nodes"`
	// Drift of the chain's signers from network.json's wanted set.
	Drift Drift `json:"drift"`
}

// Status asks every node for its head, peers and signers.
func (n *Network) Status(ctx context.Context) (Status, error) {
	st := n.State()
	if fresh, err := LoadState(n.dir); err == nil {
		st = fresh
	}
	s := Status{Dir: n.dir, ChainID: st.ChainID, GenesisHash: st.GenesisHash, Signers: []common.Address{}}
	var best *Node
	var bestHeight uint64
	for _, ns := range st.Nodes {
		nst := NodeStatus{Provider: ns.Provider, Authority: ns.Authority, Gateway: ns.Gateway, RPC: ns.RPC}
		if alive(ns.PID, n.datadir(&ns)) {
			nst.PID = ns.PID
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := Dial(cctx, ns.RPC)
			if err == nil {
				nst.Height, err = c.Height(cctx)
			}
			if err == nil {
				nst.Peers, err = c.Peers(cctx)
			}
			cancel()
			if err != nil {
				nst.Error = err.Error()
			} else {
				nst.Up = true
			}
			if c != nil {
				if nst.Up && (best == nil || nst.Height > bestHeight) {
					if best != nil {
						best.Close()
					}
					best, bestHeight = c, nst.Height
				} else {
					c.Close()
				}
			}
		}
		s.Nodes = append(s.Nodes, nst)
	}
	if best != nil {
		defer best.Close()
		signers, err := best.Signers(ctx)
		if err != nil {
			return s, err
		}
		s.Height, s.Signers = bestHeight, sortAddrs(signers)
		for i := range s.Nodes {
			for _, a := range signers {
				if a == s.Nodes[i].Authority {
					s.Nodes[i].Signer = true
				}
			}
		}
	}
	s.Drift = Compare(st.Signers(), s.Signers)
	if best == nil { // nothing answers: drift unknown, not "everything missing"
		s.Drift = Compare(nil, nil)
	}
	return s, nil
}
