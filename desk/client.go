// Package desk is a provider's desk: the staff's web page (server-rendered,
// on 127.0.0.1, like the patient's app) and the client of the gateway's
// staff API that both it and `medrec desk` use. The gateway decides who may
// do what (clerk or admin) and logs it; the desk only asks.
package desk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls one gateway's staff API with a staff token (an API token or
// a login session's).
type Client struct {
	Base  string // the gateway's URL
	Token string
	HTTP  *http.Client
}

// NewClient returns a client of the gateway at base.
func NewClient(base, token string) (*Client, error) {
	base = strings.TrimRight(base, "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("desk: the gateway %q is not an http(s) URL", base)
	}
	return &Client{Base: base, Token: token, HTTP: &http.Client{Timeout: 2 * time.Minute}}, nil
}

// Error is the gateway's refusal: its status and message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("the gateway refused (%d): %s", e.Status, e.Message)
}

// Status returns the HTTP status of a refusal, 0 for any other error.
func Status(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Do sends a request (body as JSON unless it is a json.RawMessage, which
// goes as it is) and decodes the JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("the gateway %s is unreachable: %w", c.Base, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return err
	}
	if res.StatusCode >= 300 {
		var oo struct {
			Issue []struct {
				Diagnostics string `json:"diagnostics"`
			} `json:"issue"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &oo) == nil && len(oo.Issue) > 0 {
			msg = oo.Issue[0].Diagnostics
		}
		return &Error{Status: res.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("the gateway's answer: %w", err)
		}
	}
	return nil
}

// Session is a desk login.
type Session struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"-"`
	Staff   string    `json:"staff"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
}

// Login opens a session with a staff member's password.
func (c *Client) Login(ctx context.Context, staff, password string) (Session, error) {
	var out struct {
		Session
		Expires int64 `json:"expires"`
	}
	if err := c.Do(ctx, "POST", "/admin/login", map[string]string{"staff": staff, "password": password}, &out); err != nil {
		return Session{}, err
	}
	s := out.Session
	s.Expires = time.Unix(out.Expires, 0)
	return s, nil
}

// Logout ends the client's session.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, "POST", "/admin/logout", nil, nil)
}

// Me is who the token belongs to.
type Me struct {
	Staff string `json:"staff"`
	Role  string `json:"role"`
}

// Me says who the client's token belongs to.
func (c *Client) Me(ctx context.Context) (Me, error) {
	var m Me
	return m, c.Do(ctx, "GET", "/admin/me", nil, &m)
}

// Patient is what the desk knows of a patient (never a record).
type Patient struct {
	ID           string `json:"id"`
	Records      int    `json:"records"`
	Anchored     bool   `json:"anchored"`
	Relationship struct {
		State         string `json:"state"`
		Tag           string `json:"tag"`
		DeskCode      string `json:"deskCode"`
		Owner         string `json:"owner"`
		Rotations     int    `json:"rotations"`
		GrantsInForce int    `json:"grantsInForce"`
	} `json:"relationship"`
}

// Found is a patient a search found.
type Found struct {
	ID          string   `json:"id"`
	Names       []string `json:"names"`
	BirthDate   string   `json:"birthDate"`
	Identifiers []string `json:"identifiers"`
}

// Query is a desk search: all the criteria given must hold.
type Query struct {
	Name       string // a part of any of the patient's names
	BirthDate  string // YYYY, YYYY-MM or YYYY-MM-DD
	Identifier string // a record number, exactly
}

// Find searches the patients; more says the answer was cut.
func (c *Client) Find(ctx context.Context, q Query) ([]Found, bool, error) {
	v := url.Values{}
	for k, x := range map[string]string{"name": q.Name, "birthdate": q.BirthDate, "identifier": q.Identifier} {
		if x != "" {
			v.Set(k, x)
		}
	}
	var out struct {
		Patients []Found `json:"patients"`
		More     bool    `json:"more"`
	}
	err := c.Do(ctx, "GET", "/admin/patients?"+v.Encode(), nil, &out)
	return out.Patients, out.More, err
}

// Patient returns what the desk knows of patient id.
func (c *Client) Patient(ctx context.Context, id string) (Patient, error) {
	var p Patient
	return p, c.Do(ctx, "GET", "/admin/patients/"+url.PathEscape(id), nil, &p)
}

// CreatePatient adds a patient with the provider's id for them.
func (c *Client) CreatePatient(ctx context.Context, id string) error {
	return c.Do(ctx, "POST", "/admin/patients", map[string]string{"id": id}, nil)
}

// Enrol enrols a patient's identity commitment and returns its block.
func (c *Client) Enrol(ctx context.Context, patient, commitment string) (uint64, error) {
	var out struct {
		Block uint64 `json:"block"`
	}
	err := c.Do(ctx, "POST", "/admin/patients/"+url.PathEscape(patient)+"/enrol", map[string]string{"commitment": strings.TrimSpace(commitment)}, &out)
	return out.Block, err
}

// ClaimCode is a one-time code bound to a desk code.
type ClaimCode struct {
	Code     string    `json:"code"`
	DeskCode string    `json:"tagCode"`
	Expires  time.Time `json:"-"`
}

// NewClaimCode issues a claim code for patient, bound to deskCode.
func (c *Client) NewClaimCode(ctx context.Context, patient, deskCode string) (ClaimCode, error) {
	var out struct {
		ClaimCode
		Expires int64 `json:"expires"`
	}
	if err := c.Do(ctx, "POST", "/admin/patients/"+url.PathEscape(patient)+"/claim-code", map[string]string{"tagCode": deskCode}, &out); err != nil {
		return ClaimCode{}, err
	}
	cc := out.ClaimCode
	cc.Expires = time.Unix(out.Expires, 0)
	return cc, nil
}

// Unmap undoes a wrong mapping of patient (tag "" for the patient's).
func (c *Client) Unmap(ctx context.Context, patient, tag, reason string) (string, error) {
	body := map[string]string{"reason": reason}
	if tag != "" {
		body["tag"] = tag
	}
	var out struct {
		Tag string `json:"tag"`
	}
	err := c.Do(ctx, "POST", "/admin/patients/"+url.PathEscape(patient)+"/unmap", body, &out)
	return out.Tag, err
}

// ImportReport is what an import did.
type ImportReport struct {
	Patient   string `json:"patient"`
	Entries   int    `json:"entries"`
	Created   int    `json:"created"`
	Updated   int    `json:"updated"`
	Unchanged int    `json:"unchanged"`
}

// Import imports a patient's FHIR Bundle, all or nothing.
func (c *Client) Import(ctx context.Context, bundle []byte) (ImportReport, error) {
	var r ImportReport
	if !json.Valid(bundle) {
		return r, errors.New("desk: the bundle is not JSON")
	}
	return r, c.Do(ctx, "POST", "/admin/import", json.RawMessage(bundle), &r)
}

// GatewayStatus is the gateway's log and anchoring status.
type GatewayStatus struct {
	Provider  uint32 `json:"provider"`
	ChainHead uint64 `json:"chainHead"`
	Log       struct {
		Entries uint64 `json:"entries"`
	} `json:"log"`
	Anchor struct {
		Batch             *uint64 `json:"batch"`
		Time              string  `json:"time"`
		Published         bool    `json:"published"`
		UnanchoredEntries uint64  `json:"unanchoredEntries"`
	} `json:"anchor"`
}

// Status returns the gateway's status.
func (c *Client) Status(ctx context.Context) (GatewayStatus, error) {
	var s GatewayStatus
	return s, c.Do(ctx, "GET", "/admin/status", nil, &s)
}

// StaffMember is one account as the gateway lists it.
type StaffMember struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Role     string `json:"role"`
	Disabled bool   `json:"disabled"`
	Password bool   `json:"password"`
	Token    bool   `json:"token"`
}

// Staff lists the accounts (admins only).
func (c *Client) Staff(ctx context.Context) ([]StaffMember, error) {
	var out struct {
		Staff []StaffMember `json:"staff"`
	}
	return out.Staff, c.Do(ctx, "GET", "/admin/staff", nil, &out)
}

// NewStaff is an account to add; Token asks for an API token.
type NewStaff struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password,omitempty"`
	Token    bool   `json:"token,omitempty"`
}

// AddStaff adds an account and returns its API token, if one was asked
// for (shown this once).
func (c *Client) AddStaff(ctx context.Context, s NewStaff) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	err := c.Do(ctx, "POST", "/admin/staff", s, &out)
	return out.Token, err
}

// StaffChange is a change of an account; nil fields stay.
type StaffChange struct {
	Role     *string `json:"role,omitempty"`
	Password *string `json:"password,omitempty"`
	NewToken bool    `json:"newToken,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// ChangeStaff changes an account and returns what changed and its new API
// token, if one was asked for.
func (c *Client) ChangeStaff(ctx context.Context, id string, ch StaffChange) ([]string, string, error) {
	var out struct {
		Changed []string `json:"changed"`
		Token   string   `json:"token"`
	}
	err := c.Do(ctx, "POST", "/admin/staff/"+url.PathEscape(id), ch, &out)
	return out.Changed, out.Token, err
}
