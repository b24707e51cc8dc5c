package contracts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/ethereum/go-ethereum/common"

	"github.com/medrec-zk/medrec/internal/atomicfile"
)

// DeploymentFile is the name of the deployment record in a network directory.
const DeploymentFile = "deployment.json"

// ErrNotDeployed says a chain has no MedRec-ZK contracts where a deployment
// record says they are.
var ErrNotDeployed = errors.New("contracts: not deployed")

// Save writes the deployment record atomically.
func (d *Deployment) Save(path string) error {
	raw, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(raw, '\n'), 0o644)
}

// LoadDeployment reads a deployment record.
func LoadDeployment(path string) (*Deployment, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("contracts: deployment record: %w", err)
	}
	var d Deployment
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("contracts: %s: %w", path, err)
	}
	if d.ChainID == nil || d.AgentRegistry == (common.Address{}) || d.Relationships == (common.Address{}) {
		return nil, fmt.Errorf("contracts: %s: incomplete deployment record", path)
	}
	return &d, nil
}

// Check confirms that the chain behind b is the deployment's chain and has
// code at every recorded address.
func (d *Deployment) Check(ctx context.Context, b Backend) error {
	id, err := b.ChainID(ctx)
	if err != nil {
		return fmt.Errorf("contracts: chain id: %w", err)
	}
	if id.Cmp(d.ChainID) != 0 {
		return fmt.Errorf("contracts: the chain has id %v, the deployment was made on chain %v", id, d.ChainID)
	}
	for name, a := range d.addresses() {
		code, err := b.CodeAt(ctx, a, nil)
		if err != nil {
			return fmt.Errorf("contracts: code of %s: %w", name, err)
		}
		if len(code) == 0 {
			return fmt.Errorf("%w: no %s code at %s", ErrNotDeployed, name, a)
		}
	}
	return nil
}

func (d *Deployment) addresses() map[string]common.Address {
	a := map[string]common.Address{
		"AgentRegistry": d.AgentRegistry, "PatientRegistry": d.PatientRegistry, "Relationships": d.Relationships,
		"Anchors": d.Anchors, "OwnershipVerifier": d.OwnershipVerifier, "EntitlementVerifier": d.EntitlementVerifier,
	}
	if d.InsertionVerifier != (common.Address{}) {
		a["InsertionVerifier"] = d.InsertionVerifier
	}
	return a
}
