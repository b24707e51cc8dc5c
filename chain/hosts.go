package chain

import (
	"fmt"
	"net"
	"strconv"
)

// Host puts a provider's node somewhere other than this machine's
// loopback: in a network namespace of its own, reached at an address of
// that namespace. The fault tests use it to cut and slow the links between
// providers as a real network would (internal/faultnet); a network without
// Hosts runs on loopback.
type Host struct {
	// NetNS is the network namespace geth runs in (`ip netns exec`, so it
	// needs root); "" runs it in this one.
	NetNS string
	// IP is the address the node listens on (P2P, HTTP and WebSocket RPC)
	// and is reached at.
	IP string
	// Advertise is the host:port the other nodes dial to reach this one —
	// a proxy in front of it, say; default IP and its P2P port.
	Advertise string
}

// listenIP is the address the node binds: its host's, or loopback.
func (ns *NodeState) listenIP() string {
	if ns.IP != "" {
		return ns.IP
	}
	return "127.0.0.1"
}

// netRestrict is the CIDR peers may come from (--netrestrict): the hosts'
// network, or loopback.
func (st *State) netRestrict() string {
	if st.Net != "" {
		return st.Net
	}
	return "127.0.0.0/8"
}

// applyHost sets where node ns runs and how it is reached.
func applyHost(ns *NodeState, h Host) error {
	if h.IP == "" {
		return fmt.Errorf("provider %d: a host needs an IP", ns.Provider)
	}
	if net.ParseIP(h.IP) == nil {
		return fmt.Errorf("provider %d: host IP %q is not an IP address", ns.Provider, h.IP)
	}
	ns.NetNS, ns.IP = h.NetNS, h.IP
	ns.RPC = "http://" + net.JoinHostPort(h.IP, strconv.Itoa(ns.HTTPPort))
	return nil
}
