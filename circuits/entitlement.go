package circuits

import (
	"github.com/consensys/gnark/frontend"

	"github.com/medrec-zk/medrec/zkhash"
)

// Entitlement proves that the prover holds a viewer secret v and a grant
// secret k with Grant = H(D_grant; H(D_viewer; v), Tag, k), and binds the
// gateway's fresh Challenge. A gateway checks on chain that Grant is an
// unexpired, unrevoked grant of relationship Tag; the proof shows the reader is
// the viewer it was granted to. Without k, knowing the viewer's public
// commitment Cv does not reveal which relationships were granted to it;
// without v, a leaked share bundle (provider, Tag, k) is useless.
//
// Soundness guards: Challenge enters a multiplication constraint; the domain
// tags are constants.
type Entitlement struct {
	// Secret inputs.
	ViewerSecret frontend.Variable
	GrantSecret  frontend.Variable

	// Public inputs, in the verifier's order.
	Grant     frontend.Variable `gnark:",public"`
	Tag       frontend.Variable `gnark:",public"`
	Challenge frontend.Variable `gnark:",public"`
}

// Define declares the circuit's constraints.
func (c *Entitlement) Define(api frontend.API) error {
	h, err := newHasher(api)
	if err != nil {
		return err
	}
	cv := h.hash(zkhash.DomainViewer, c.ViewerSecret)
	api.AssertIsEqual(h.hash(zkhash.DomainGrant, cv, c.Tag, c.GrantSecret), c.Grant)
	bindSignal(api, c.Challenge)
	return nil
}
