package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ethereum/go-ethereum"
	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/accounts/keystore"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"github.com/urfave/cli/v2"

	"github.com/medrec-zk/medrec/chain"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/devnet"
)

// medrec governance: the AgentRegistry's proposals and votes, signed with a
// provider's authority key. The registry decides; every authority's mirror
// (`provider serve`, `network watch`) then votes Clique's signer set to
// match. The key comes from a local network's directory (--dir, --provider:
// its keystore file and the directory's dev password) or from a go-ethereum
// keystore file whose password is read from a file, standard input or a
// prompt — never from the command line.

var (
	govProviderFlag = &cli.IntFlag{Name: "provider", Usage: "with --dir: sign as this `P`rovider's authority (the network's node P)"}
	govRPCFlag      = &cli.StringFlag{Name: "rpc", Usage: "your node's JSON-RPC `URL` (instead of --dir)"}
	govDeployFlag   = &cli.StringFlag{Name: "deployment", Usage: "the network's deployment record `FILE` (deployment.json; with --rpc)"}
	govKeyFlag      = &cli.StringFlag{Name: "authority-key", Usage: "your authority's go-ethereum keystore `FILE` (with --rpc); its password from --password-file or a prompt"}
	govTimeoutFlag  = &cli.DurationFlag{Name: timeoutFlag.Name, Value: timeoutFlag.Value, Usage: "give up waiting for the transaction after this long"}
)

func govFlags(sign bool, more ...cli.Flag) []cli.Flag {
	fs := []cli.Flag{networkDirFlag, govRPCFlag, govDeployFlag}
	if sign {
		fs = append(fs, govProviderFlag, govKeyFlag, passwordFileFlag, govTimeoutFlag)
	}
	return append(append(fs, jsonFlag), more...)
}

var governanceCommand = &cli.Command{
	Name:  "governance",
	Usage: "propose and vote providers in and out through the AgentRegistry; Clique's signers follow it",
	Description: `A proposal executes once a strict majority of the registry's active providers
voted for it (the proposer's vote counts; 2 of 3, 3 of 4, 3 of 5). The
authorities' mirrors then vote clique_propose until Clique's signer set is the
registry's: a provider added starts sealing, one removed stops.

Where: --dir DIR for a local network (medrec network up), with --provider P
to sign as its node P's authority; or --rpc URL --deployment FILE for your own
node, with --authority-key FILE (a go-ethereum keystore) to sign.`,
	Subcommands: []*cli.Command{
		{
			Name:  "propose-add",
			Usage: "propose a new provider (your vote counts)",
			Flags: govFlags(true,
				&cli.StringFlag{Name: "authority", Usage: "the new provider's authority (Clique signer) `ADDRESS`"},
				&cli.StringFlag{Name: "gateway", Usage: "its gateway account `ADDRESS`"},
				&cli.StringFlag{Name: "name", Usage: "its name"},
				&cli.StringFlag{Name: "gateway-url", Usage: "its gateway's `URL`"},
			),
			Before: required("authority", "gateway", "name", "gateway-url"),
			Action: func(ctx *cli.Context) error { return govPropose(ctx, newSecretReader(os.Stdin), false) },
		},
		{
			Name:      "propose-remove",
			Usage:     "propose removing an active provider, by registry id or authority address (your vote counts)",
			ArgsUsage: "ID|AUTHORITY",
			Flags:     govFlags(true),
			Action:    func(ctx *cli.Context) error { return govPropose(ctx, newSecretReader(os.Stdin), true) },
		},
		{
			Name:      "vote",
			Usage:     "vote for an open proposal; the vote that makes a majority carries it out",
			ArgsUsage: "PROPOSAL",
			Flags:     govFlags(true),
			Action:    func(ctx *cli.Context) error { return govVote(ctx, newSecretReader(os.Stdin), false) },
		},
		{
			Name:      "execute",
			Usage:     "carry out a proposal that has a majority of the members left after a removal (its last vote came when more were needed)",
			ArgsUsage: "PROPOSAL",
			Flags:     govFlags(true),
			Action:    func(ctx *cli.Context) error { return govVote(ctx, newSecretReader(os.Stdin), true) },
		},
		{
			Name:   "list",
			Usage:  "the registry's members, its open proposals with their votes, and Clique's signers (a mismatch is flagged)",
			Flags:  govFlags(false),
			Action: govList,
		},
	},
}

// govConn is what a governance command works with.
type govConn struct {
	node   *chain.Node // the node it talks to (clique_getSigners too)
	client *contracts.Client
	auth   *bind.TransactOpts // nil unless the command signs
	net    *chain.Network     // --dir only
}

func (g *govConn) Close() { g.node.Close() }

// openGov connects as the flags say and, when sign, loads the authority key.
func openGov(ctx *cli.Context, c context.Context, sr *secretReader, sign bool) (*govConn, error) {
	dir, rpcURL := ctx.String(networkDirFlag.Name), ctx.String(govRPCFlag.Name)
	switch {
	case dir != "" && (rpcURL != "" || ctx.IsSet(govDeployFlag.Name) || ctx.IsSet(govKeyFlag.Name)):
		return nil, usage("--dir or --rpc (with --deployment, --authority-key), not both")
	case dir != "" && ctx.IsSet(passwordFileFlag.Name):
		return nil, usage("--password-file is for --authority-key: a local network's keys open with its directory's password")
	case dir == "" && ctx.IsSet(govProviderFlag.Name):
		return nil, usage("--provider is for --dir: with --rpc, --authority-key says who signs")
	case dir == "" && rpcURL == "":
		return nil, usage("missing --dir (a local network) or --rpc and --deployment (your node)")
	case dir == "" && !ctx.IsSet(govDeployFlag.Name):
		return nil, usage("missing --deployment: --rpc needs the network's deployment record")
	case sign && dir != "" && !ctx.IsSet(govProviderFlag.Name):
		return nil, usage("missing --provider: which of the network's authorities signs")
	case sign && dir == "" && !ctx.IsSet(govKeyFlag.Name):
		return nil, usage("missing --authority-key: your authority's keystore file signs")
	}
	g := &govConn{}
	var d *contracts.Deployment
	var key *ecdsa.PrivateKey
	var err error
	if dir != "" {
		if g.net, err = chain.Open(dir, nil, nil); err != nil {
			return nil, err
		}
		if d, err = devnet.LoadDeployment(dir); err != nil {
			return nil, fmt.Errorf("%w (is the network up? `medrec network up` deploys the contracts)", err)
		}
		p := ctx.Int(govProviderFlag.Name)
		if sign {
			if key, err = devnet.AuthorityKey(g.net, p); err != nil {
				return nil, usage("--provider %d: %v", p, err)
			}
		}
		ec, ns, err := devnet.DialRunning(c, g.net, p)
		if err != nil {
			return nil, err
		}
		ec.Close()
		rpcURL = ns.RPC
	} else {
		if u, err := url.Parse(rpcURL); err != nil || u.Host == "" {
			return nil, usage("--rpc %q: not a node URL (http://HOST:PORT or ws://…)", rpcURL)
		} else if u.User != nil || u.RawQuery != "" {
			return nil, usage("--rpc: credentials in the URL (user:password@, a query) show in the process list; use a node without them")
		}
		if d, err = contracts.LoadDeployment(ctx.String(govDeployFlag.Name)); err != nil {
			return nil, err
		}
		if sign {
			if key, err = readAuthorityKey(ctx, sr); err != nil {
				return nil, err
			}
		}
	}
	if g.node, err = chain.Dial(c, rpcURL); err != nil {
		return nil, err
	}
	if err := d.Check(c, g.node.Eth()); err != nil {
		g.Close()
		return nil, err
	}
	g.client = contracts.NewClient(g.node.Eth(), d)
	if key != nil {
		g.auth = bind.NewKeyedTransactor(key, d.ChainID)
	}
	return g, nil
}

// readAuthorityKey decrypts --authority-key with the password of
// --password-file or the terminal.
func readAuthorityKey(ctx *cli.Context, sr *secretReader) (*ecdsa.PrivateKey, error) {
	path := ctx.String(govKeyFlag.Name)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("authority key: %w", err)
	}
	pw, err := sr.password(ctx, false)
	if err != nil {
		return nil, err
	}
	k, err := keystore.DecryptKey(raw, pw)
	if errors.Is(err, keystore.ErrDecrypt) {
		return nil, fmt.Errorf("authority key %s: wrong password", path)
	}
	if err != nil {
		return nil, fmt.Errorf("authority key %s: %w", path, err)
	}
	return k.PrivateKey, nil
}

// parseAddress reads a flag or argument holding an address; a malformed one
// is a usage error.
func parseAddress(what, s string) (common.Address, error) {
	if !common.IsHexAddress(s) {
		return common.Address{}, usage("%s %q is not an address (0x and 40 hex digits)", what, s)
	}
	a := common.HexToAddress(s)
	if a == (common.Address{}) {
		return a, usage("%s: the zero address", what)
	}
	return a, nil
}

// flagsFirst refuses flags given after the positional argument, which
// the command line parser would take for more arguments.
func flagsFirst(ctx *cli.Context, what string) error {
	for _, a := range ctx.Args().Tail() {
		if strings.HasPrefix(a, "-") {
			return usage("%s: flags go before the %s (medrec governance %s --dir DIR --provider P %s)", a, what, ctx.Command.Name, strings.ToUpper(strings.ReplaceAll(what, " ", "-")))
		}
	}
	return nil
}

// govResult is what propose-* and vote print.
type govResult struct {
	Proposal uint64      `json:"proposal"`
	Tx       common.Hash `json:"tx"`
	Votes    uint32      `json:"votes"`
	Needed   uint32      `json:"needed"`
	Executed bool        `json:"executed"`
	Provider uint32      `json:"provider,omitempty"` // executed: the provider added or removed
	Kind     string      `json:"kind"`
}

func govPropose(ctx *cli.Context, sr *secretReader, remove bool) error {
	var (
		authority, gateway common.Address
		target             uint64
		byAuthority        common.Address
		err                error
	)
	if remove {
		if err := flagsFirst(ctx, "provider"); err != nil {
			return err
		}
		if ctx.NArg() != 1 {
			return usage("propose-remove takes one provider: its registry id or authority address")
		}
		arg := ctx.Args().First()
		if strings.HasPrefix(arg, "0x") || strings.HasPrefix(arg, "0X") {
			if byAuthority, err = parseAddress("provider", arg); err != nil {
				return err
			}
		} else if target, err = strconv.ParseUint(arg, 10, 32); err != nil || target == 0 {
			return usage("provider %q: a registry id (1, 2, …) or an authority address", arg)
		}
	} else {
		if authority, err = parseAddress("--authority", ctx.String("authority")); err != nil {
			return err
		}
		if gateway, err = parseAddress("--gateway", ctx.String("gateway")); err != nil {
			return err
		}
		if strings.TrimSpace(ctx.String("name")) == "" {
			return usage("--name must not be empty")
		}
		if u, err := url.Parse(ctx.String("gateway-url")); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return usage("--gateway-url %q: an http(s)://HOST[:PORT] URL without credentials", ctx.String("gateway-url"))
		}
	}
	c, cancel := runContext(ctx)
	defer cancel()
	g, err := openGov(ctx, c, sr, true)
	if err != nil {
		return err
	}
	defer g.Close()
	if byAuthority != (common.Address{}) {
		id, err := g.client.ProviderOfAuthority(c, byAuthority)
		if err != nil {
			return fmt.Errorf("look up %s: %w", byAuthority, err)
		}
		if id == 0 {
			return fmt.Errorf("%s is not the authority of an active provider", byAuthority.Hex())
		}
		target = uint64(id)
	}
	if remove {
		return govSend(ctx, c, g, func() (*types.Transaction, error) {
			return g.client.ProposeRemove(c, g.auth, uint32(target))
		})
	}
	return govSend(ctx, c, g, func() (*types.Transaction, error) {
		return g.client.ProposeAdd(c, g.auth, authority, gateway, strings.TrimSpace(ctx.String("name")), ctx.String("gateway-url"))
	})
}

// govVote votes for a proposal, or with execute carries it out.
func govVote(ctx *cli.Context, sr *secretReader, execute bool) error {
	if err := flagsFirst(ctx, "proposal id"); err != nil {
		return err
	}
	if ctx.NArg() != 1 {
		return usage("%s takes one proposal id (see `medrec governance list`)", ctx.Command.Name)
	}
	id, err := strconv.ParseUint(ctx.Args().First(), 10, 64)
	if err != nil || id == 0 {
		return usage("proposal %q: a proposal id (1, 2, …)", ctx.Args().First())
	}
	c, cancel := runContext(ctx)
	defer cancel()
	g, err := openGov(ctx, c, sr, true)
	if err != nil {
		return err
	}
	defer g.Close()
	return govSend(ctx, c, g, func() (*types.Transaction, error) {
		if execute {
			return g.client.Execute(c, g.auth, new(big.Int).SetUint64(id))
		}
		return g.client.Vote(c, g.auth, new(big.Int).SetUint64(id))
	})
}

// govSend sends one governance transaction (refused ones send nothing: the
// gas estimate reverts first), waits for it and prints what it did.
func govSend(ctx *cli.Context, c context.Context, g *govConn, send func() (*types.Transaction, error)) error {
	sent, err := send()
	if err != nil {
		return explainRevert(err)
	}
	r, err := waitReceipt(c, g.node.Eth(), sent.Hash())
	if err != nil {
		return err
	}
	out, err := g.client.GovernanceOutcome(r)
	if err != nil {
		return err
	}
	st, err := g.client.Governance(c)
	if err != nil {
		return err
	}
	res := govResult{Proposal: out.Proposal, Tx: sent.Hash(), Executed: out.Executed, Provider: out.Provider, Needed: st.Needed}
	for _, p := range st.Proposals {
		if p.ID == out.Proposal {
			res.Votes, res.Kind = p.Votes, p.Kind
		}
	}
	if res.Executed {
		res.Votes, res.Kind = res.Needed, contracts.KindName(out.Kind)
		if g.net != nil {
			// network.json records the wanted set too: keep it the registry's.
			if err := devnet.SyncSignerFlags(g.net, st.Signers); err != nil {
				return err
			}
		}
	}
	return output(ctx, res, func(w io.Writer, r govResult) {
		if !r.Executed {
			fmt.Fprintf(w, "Proposal %d (%s): %d of %d votes needed.\n", r.Proposal, r.Kind, r.Votes, r.Needed)
			return
		}
		fmt.Fprintf(w, "Proposal %d carried: provider %d is now %s the registry.\n", r.Proposal, r.Provider,
			map[bool]string{true: "in", false: "out of"}[out.Kind == contracts.KindAdd])
		fmt.Fprintln(w, "The authorities' mirrors (`medrec provider serve`, `medrec network watch`) now vote Clique's signers to match; `medrec governance list` shows when they do.")
	})
}

// waitReceipt polls for a transaction's receipt every 100 ms (a block
// comes every period; bind.WaitMined polls once a second) and checks that it
// succeeded.
func waitReceipt(ctx context.Context, ec *ethclient.Client, tx common.Hash) (*types.Receipt, error) {
	for {
		r, err := ec.TransactionReceipt(ctx, tx)
		if err == nil {
			if r.Status != types.ReceiptStatusSuccessful {
				return r, fmt.Errorf("transaction %s was mined but failed", tx.Hex())
			}
			return r, nil
		}
		if !errors.Is(err, ethereum.NotFound) {
			return nil, fmt.Errorf("wait for %s: %w", tx.Hex(), err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", tx.Hex(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// explainRevert says in words why the registry refused a transaction; the
// decoded custom error stays wrapped (errors.Is(err, contracts.ErrReverted)).
func explainRevert(err error) error {
	var re *contracts.RevertError
	if !errors.As(contracts.DecodeRevert(err), &re) {
		return err
	}
	arg := func(i int) any {
		if i < len(re.Args) {
			if a, ok := re.Args[i].(common.Address); ok {
				return a.Hex()
			}
			return re.Args[i]
		}
		return "?"
	}
	var msg string
	switch re.Name {
	case "NotActiveProvider", "NotAuthority":
		msg = fmt.Sprintf("%s is not the authority of an active provider: only the registry's members propose and vote", arg(0))
	case "UnknownProposal":
		msg = fmt.Sprintf("no proposal %v (see `medrec governance list`)", arg(0))
	case "AlreadyVoted":
		msg = fmt.Sprintf("provider %v has already voted for proposal %v", arg(1), arg(0))
	case "ProposalExecuted":
		msg = fmt.Sprintf("proposal %v has already been carried out", arg(0))
	case "ProposalExpired":
		msg = fmt.Sprintf("proposal %v expired (proposals are open for 7 days): propose again", arg(0))
	case "NoMajority":
		msg = fmt.Sprintf("proposal %v has %v votes of %v active providers: no majority yet", arg(0), arg(1), arg(2))
	case "NoProviders":
		msg = "that would leave no provider to seal blocks: the registry keeps at least one"
	case "UnknownProvider":
		msg = fmt.Sprintf("no provider %v in the registry", arg(0))
	case "ProviderInactive":
		msg = fmt.Sprintf("provider %v is not active (already removed)", arg(0))
	case "AuthorityTaken":
		msg = fmt.Sprintf("%s is already a provider's authority or gateway", arg(0))
	case "GatewayTaken":
		msg = fmt.Sprintf("%s is already in use (another provider's gateway, or an authority)", arg(0))
	case "ZeroAddress":
		msg = "the zero address cannot be an authority or a gateway"
	case "EmptyName":
		msg = "the provider's name must not be empty"
	default:
		return err
	}
	return fmt.Errorf("refused: %s (%w)", msg, re)
}

// govListing is what `governance list` prints.
type govListing struct {
	*contracts.Governance
	Registry common.Address `json:"registry"`
	// Clique's signers at the node's head, and their drift from the
	// registry's; CliqueError when the node does not serve clique_getSigners.
	Clique      []common.Address `json:"clique_signers"`
	Drift       *chain.Drift     `json:"drift,omitempty"`
	InSync      bool             `json:"in_sync"`
	CliqueError string           `json:"clique_error,omitempty"`
}

func govList(ctx *cli.Context) error {
	c, cancel := runContext(ctx)
	defer cancel()
	g, err := openGov(ctx, c, nil, false)
	if err != nil {
		return err
	}
	defer g.Close()
	st, err := g.client.Governance(c)
	if err != nil {
		return err
	}
	l := govListing{Governance: st, Registry: g.client.Deployment().AgentRegistry, Clique: []common.Address{}}
	if signers, err := g.node.Signers(c); err != nil {
		l.CliqueError = err.Error()
	} else {
		d := chain.Compare(st.Signers, signers)
		l.Clique, l.Drift, l.InSync = signers, &d, d.None()
	}
	return output(ctx, l, printGovListing)
}

func printGovListing(w io.Writer, l govListing) {
	fmt.Fprintf(w, "AgentRegistry %s at block %d: %d members; a proposal carries with %d votes.\n\n", l.Registry.Hex(), l.Block, len(l.Members), l.Needed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tNAME\tAUTHORITY\tGATEWAY\tGATEWAY URL\tCLIQUE SIGNER")
	for _, m := range l.Members {
		signer := "?"
		if l.CliqueError == "" {
			signer = map[bool]string{true: "yes", false: "NO"}[slices.Contains(l.Clique, m.Authority)]
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Name, m.Authority.Hex(), m.Gateway.Hex(), m.GatewayURL, signer)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if len(l.Proposals) == 0 {
		fmt.Fprintln(w, "No open proposals.")
	} else {
		fmt.Fprintln(tw, "PROPOSAL\tKIND\tPROVIDER\tAUTHORITY\tVOTES\tVOTERS\tPROPOSER\tEXPIRES")
		for _, p := range l.Proposals {
			who := p.Name
			if p.Kind == "remove" {
				who = fmt.Sprintf("%d (%s)", p.Provider, p.Name)
			}
			votes := fmt.Sprintf("%d/%d", p.Votes, l.Needed)
			if p.Votes >= l.Needed {
				votes += " (ready: governance execute)"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%v\t%d\t%s\n", p.ID, p.Kind, who, p.Authority.Hex(), votes, p.Voters, p.Proposer, p.Deadline.Format("2006-01-02 15:04 MST"))
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	switch {
	case l.CliqueError != "":
		fmt.Fprintf(w, "Clique signers: unknown (%s).\n", l.CliqueError)
	case l.InSync:
		fmt.Fprintf(w, "Clique signers (%d): the registry's members.\n", len(l.Clique))
	default:
		fmt.Fprintf(w, "MISMATCH: Clique's %d signers are not the registry's: %s.\n", len(l.Clique), l.Drift)
		fmt.Fprintln(w, "The authorities' mirrors (`medrec provider serve`, `medrec network watch`) vote it right within a few blocks; if it stays, they are not running.")
	}
}
