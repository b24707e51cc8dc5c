package devnet

import (
	"context"
	"fmt"
	"net/http"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/desk"
)

// The demo's desk accounts: each provider's desk page has an admin, "admin",
// whose password make run prints (a demo: anyone at this computer may sign
// in; a real desk's admin is added with `medrec desk staff add`).
const (
	DemoDeskStaff    = "admin"
	DemoDeskPassword = "demo-desk-admin"
)

// SeedDeskAdmin adds the demo desk admin at provider p's gateway unless it
// exists, with the provider's staff token.
func SeedDeskAdmin(ctx context.Context, n *chain.Network, p int, gatewayURL string) error {
	sc, err := newStaffClient(n, p, gatewayURL)
	if err != nil {
		return err
	}
	c, err := desk.NewClient(gatewayURL, sc.token)
	if err != nil {
		return err
	}
	_, err = c.AddStaff(ctx, desk.NewStaff{ID: DemoDeskStaff, Name: fmt.Sprintf("Demo admin of provider %d", p), Role: "admin", Password: DemoDeskPassword})
	if desk.Status(err) == http.StatusConflict {
		return nil
	}
	return err
}
