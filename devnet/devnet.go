// Package devnet is MedRec-ZK's local development network: a chain.Network
// (real geth Clique nodes) with the contracts deployed on it, recorded in
// the network directory's deployment.json, and the accessors the other
// commands need (keys, chain clients, each provider's gateway settings).
//
// Everything here uses the network directory's dev password, and either the
// dev ceremony's keys or the network's own keys from a ceremony run on one
// machine (RunCeremony, `medrec run`): it is for development and tests,
// never for production.
package devnet

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/ethclient"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/prover"
)

// DeploymentPath is where a network directory records its deployment.
func DeploymentPath(dir string) string { return filepath.Join(dir, contracts.DeploymentFile) }

// Key decrypts a keystore file of the network directory with its dev password.
func Key(n *chain.Network, rel string) (*ecdsa.PrivateKey, error) {
	st := n.State()
	pw, err := os.ReadFile(n.Path(st.PasswordFile))
	if err != nil {
		return nil, fmt.Errorf("devnet: password: %w", err)
	}
	raw, err := os.ReadFile(n.Path(rel))
	if err != nil {
		return nil, fmt.Errorf("devnet: key %s: %w", rel, err)
	}
	k, err := keystore.DecryptKey(raw, strings.TrimRight(string(pw), "\r\n"))
	if err != nil {
		return nil, fmt.Errorf("devnet: key %s: %w", rel, err)
	}
	return k.PrivateKey, nil
}

// GatewayKey returns provider p's gateway key.
func GatewayKey(n *chain.Network, p int) (*ecdsa.PrivateKey, error) {
	for _, ns := range n.State().Nodes {
		if ns.Provider == p {
			return Key(n, ns.GatewayKey)
		}
	}
	return nil, fmt.Errorf("devnet: no provider %d", p)
}

// Dial connects to provider p's node.
func Dial(ctx context.Context, n *chain.Network, p int) (*ethclient.Client, error) {
	for _, ns := range n.State().Nodes {
		if ns.Provider == p {
			c, err := ethclient.DialContext(ctx, ns.RPC)
			if err != nil {
				return nil, fmt.Errorf("devnet: dial %s: %w", ns.RPC, err)
			}
			return c, nil
		}
	}
	return nil, fmt.Errorf("devnet: no provider %d", p)
}

// dialWS connects to provider p's node over WebSocket (chain.NodeState.WS).
func dialWS(ctx context.Context, n *chain.Network, p int) (*ethclient.Client, error) {
	for _, ns := range n.State().Nodes {
		if ns.Provider == p {
			c, err := ethclient.DialContext(ctx, ns.WS())
			if err != nil {
				return nil, fmt.Errorf("devnet: dial %s: %w", ns.WS(), err)
			}
			return c, nil
		}
	}
	return nil, fmt.Errorf("devnet: no provider %d", p)
}

// LoadDeployment reads the network's deployment record.
func LoadDeployment(dir string) (*contracts.Deployment, error) {
	return contracts.LoadDeployment(DeploymentPath(dir))
}

// Deploy deploys the contracts on a running network, once, with ks: the
// registry records ks' hash and v must be the verifiers compiled from ks
// (Verifiers). When the directory already records a deployment, it is
// checked against the chain — code at every address, the registry
// recording ks' hash — and returned; v is not used then and may be empty.
// Each provider's gateway URL is a free loopback port.
func Deploy(ctx context.Context, n *chain.Network, ks *prover.KeySet, v contracts.Verifiers) (*contracts.Deployment, error) {
	st := n.State()
	if len(st.Nodes) == 0 {
		return nil, errors.New("devnet: the network has no nodes")
	}
	client, err := Dial(ctx, n, st.Nodes[0].Provider)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	if d, err := LoadDeployment(n.Dir()); err == nil {
		if err := d.Check(ctx, client); err != nil {
			return nil, fmt.Errorf("devnet: %s does not match the chain: %w", DeploymentPath(n.Dir()), err)
		}
		if err := CheckKeys(ctx, client, d, ks); err != nil {
			return nil, err
		}
		return d, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	deployer, err := Key(n, st.DeployerKey)
	if err != nil {
		return nil, err
	}
	var providers []contracts.Provider
	for _, ns := range st.Nodes {
		if !ns.Signer {
			continue // only the founding providers; others join by vote
		}
		port, err := gatewayPort()
		if err != nil {
			return nil, err
		}
		providers = append(providers, contracts.Provider{
			Authority: ns.Authority, Gateway: ns.Gateway,
			Name: fmt.Sprintf("Provider %d", ns.Provider), GatewayURL: fmt.Sprintf("http://127.0.0.1:%d", port),
		})
	}
	id, err := client.ChainID(ctx)
	if err != nil {
		return nil, fmt.Errorf("devnet: chain id: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d, txs, err := contracts.Deploy(ctx, client, bind.NewKeyedTransactor(deployer, id), providers, ks.RegistryHash(), v)
	if err != nil {
		return nil, err
	}
	if err := d.Wait(ctx, client, txs); err != nil {
		return nil, err
	}
	// Deployed once every running node has it: a gateway opened on another
	// provider's node right away checks the code there.
	for _, ns := range st.Nodes[1:] {
		if err := waitDeployed(ctx, n, ns.Provider, d); err != nil {
			return nil, err
		}
	}
	if err := d.Save(DeploymentPath(n.Dir())); err != nil {
		return nil, err
	}
	return d, nil
}

// waitDeployed waits until provider p's node has imported the deployment's
// blocks. A node that does not answer is not waited for.
func waitDeployed(ctx context.Context, n *chain.Network, p int, d *contracts.Deployment) error {
	c, err := Dial(ctx, n, p)
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		err := d.Check(ctx, c)
		if !errors.Is(err, contracts.ErrNotDeployed) {
			return nil // there, or the node does not answer (it catches up when it does)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devnet: provider %d's node has not imported the deployment: %w", p, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// gatewayPort picks the port of a provider's gateway URL (chain.FreePort:
// not one the kernel hands out for port 0, so it stays free until the
// gateway listens, perhaps minutes later).
func gatewayPort() (int, error) {
	port, err := chain.FreePort()
	if err != nil {
		return 0, fmt.Errorf("devnet: a port for a gateway: %w", err)
	}
	return port, nil
}
