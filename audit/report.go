package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ethereum/go-ethereum/common"
)

// Status is a check's outcome.
type Status string

// Check outcomes, from best to worst. Only StatusFail fails an audit.
const (
	StatusPass Status = "pass"
	StatusSkip Status = "skip" // the check could not run on this chain (e.g. not Clique)
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

func (s Status) rank() int {
	switch s {
	case StatusPass:
		return 0
	case StatusSkip:
		return 1
	case StatusWarn:
		return 2
	}
	return 3
}

// Severity is a finding's weight: a failure fails its check, a warning only
// warns, a note informs.
type Severity string

// Finding severities.
const (
	SeverityFail Severity = "fail"
	SeverityWarn Severity = "warn"
	SeverityNote Severity = "note"
)

// Check names, in report order.
const (
	CheckAnonymitySet = "anonymity-set"
	CheckSharedOwner  = "shared-owner"
	CheckDelegateEth  = "delegate-ether"
	CheckRelayer      = "relayer"
	CheckGranteeLinks = "grantee-links"
	CheckCloseOpens   = "close-opens"
	CheckPerPatient   = "per-patient"
	CheckVerifiers    = "verifiers"
	CheckSigners      = "signers"
	CheckGrantTimes   = "grant-times"
)

var checkTitles = map[string]string{
	CheckAnonymitySet: "anonymity set at each open",
	CheckSharedOwner:  "no address owns relationships at two providers",
	CheckDelegateEth:  "no delegate sent a transaction or received ether",
	CheckRelayer:      "every open sent by the provider's gateway",
	CheckGranteeLinks: "no address grantee links providers",
	CheckCloseOpens:   "opens at different providers close in time",
	CheckPerPatient:   "nothing per patient beyond open/rotate/grant/revoke",
	CheckVerifiers:    "verifiers carry the ceremony's verifying keys",
	CheckSigners:      "registry signers equal consensus signers",
	CheckGrantTimes:   "grants at different providers close in time or ending together",
}

// Finding is one observation of a check.
type Finding struct {
	Severity  Severity         `json:"severity"`
	Message   string           `json:"message"`
	Block     uint64           `json:"block,omitempty"`
	Tx        *common.Hash     `json:"tx,omitempty"`
	Addresses []common.Address `json:"addresses,omitempty"`
	Providers []uint32         `json:"providers,omitempty"`
	Tags      []string         `json:"tags,omitempty"` // relationship tags, 0x-hex
}

// Check is one named check's outcome.
type Check struct {
	Name     string    `json:"name"`
	Title    string    `json:"title"`
	Status   Status    `json:"status"`
	Summary  string    `json:"summary"`
	Findings []Finding `json:"findings"`
	// Omitted counts findings beyond Config.MaxFindings that were not listed.
	Omitted int `json:"omitted,omitempty"`
}

// Cluster is a set of relationships linked by shared owners or address
// grantees that spans more than one provider.
type Cluster struct {
	Providers []uint32         `json:"providers"`
	Tags      []string         `json:"tags"`
	Owners    []common.Address `json:"owners,omitempty"`   // owners shared across the cluster's relationships
	Grantees  []common.Address `json:"grantees,omitempty"` // address grantees shared across them
}

// Stats are the audited range's totals.
type Stats struct {
	Blocks       uint64 `json:"blocks"`
	Logs         uint64 `json:"logs"`
	Transactions uint64 `json:"transactions"`
	Providers    int    `json:"providers"`
	Enrolled     uint32 `json:"enrolled"`
	// DuplicateEnrolments are leaves whose commitment an earlier leaf holds
	// (the anonymity set counts each commitment once).
	DuplicateEnrolments uint32 `json:"duplicateEnrolments,omitempty"`
	Relationships       int    `json:"relationships"`
	Opens               int    `json:"opens"`
	Rotations           int    `json:"rotations"`
	AddressGrants       int    `json:"addressGrants"`
	AnonymousGrants     int    `json:"anonymousGrants"`
	Revocations         int    `json:"revocations"`
	Anchors             int    `json:"anchors"`
	Delegates           int    `json:"delegates"`
	// MinAnonymitySet is the smallest anonymity set of an open (0: no opens).
	MinAnonymitySet uint32 `json:"minAnonymitySet"`
}

// Report is an audit's result.
type Report struct {
	ChainID   string            `json:"chainId"`
	Contracts map[string]string `json:"contracts"`
	FromBlock uint64            `json:"fromBlock"`
	ToBlock   uint64            `json:"toBlock"`
	HeadTime  time.Time         `json:"headTime"`
	LogsOnly  bool              `json:"logsOnly,omitempty"`
	Settings  map[string]string `json:"settings"`
	Stats     Stats             `json:"stats"`
	Checks    []Check           `json:"checks"`
	Clusters  []Cluster         `json:"clusters,omitempty"`
	Elapsed   string            `json:"elapsed"`
	Passed    bool              `json:"passed"`
	timeline  *timeline         // for the chart
}

// Check returns the named check.
func (r *Report) Check(name string) (*Check, bool) {
	for i := range r.Checks {
		if r.Checks[i].Name == name {
			return &r.Checks[i], true
		}
	}
	return nil, false
}

// Failed reports whether any check failed (warnings do not fail an audit).
func (r *Report) Failed() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return true
		}
	}
	return false
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for people: a summary table of the checks, then
// up to perCheck findings of every check that did not pass.
func (r *Report) WriteText(w io.Writer, perCheck int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "MedRec-ZK audit of chain %s, blocks %d–%d (head %s)\n", r.ChainID, r.FromBlock, r.ToBlock, r.HeadTime.UTC().Format(time.RFC3339))
	s := r.Stats
	fmt.Fprintf(&b, "%d providers, %d enrolled, %d relationships (%d opens, %d rotations), %d delegates, %d address and %d anonymous grants, %d revocations, %d anchors; %d logs, %d transactions in %s\n\n",
		s.Providers, s.Enrolled, s.Relationships, s.Opens, s.Rotations, s.Delegates, s.AddressGrants, s.AnonymousGrants, s.Revocations, s.Anchors, s.Logs, s.Transactions, r.Elapsed)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tCHECK\tSTATUS\tSUMMARY")
	for i, c := range r.Checks {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i+1, c.Name, strings.ToUpper(string(c.Status)), c.Summary)
	}
	tw.Flush()
	for _, c := range r.Checks {
		if c.Status == StatusPass || len(c.Findings) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s (%s):\n", c.Name, c.Title)
		for i, f := range c.Findings {
			if i == perCheck {
				fmt.Fprintf(&b, "  … %d more (see --json)\n", len(c.Findings)-perCheck+c.Omitted)
				break
			}
			fmt.Fprintf(&b, "  %-4s %s\n", f.Severity, f.Message)
		}
		if len(c.Findings) <= perCheck && c.Omitted > 0 {
			fmt.Fprintf(&b, "  … %d more not listed (raise --max-findings)\n", c.Omitted)
		}
	}
	verdict := "PASSED"
	if r.Failed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "\nAudit %s.\n", verdict)
	_, err := io.WriteString(w, b.String())
	return err
}
