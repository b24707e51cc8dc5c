package dbmanager

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/limiter"

	"github.com/medrec-zk/medrec/chainview"
	"github.com/medrec-zk/medrec/contracts"
	"github.com/medrec-zk/medrec/dbmanager/fhirval"
	"github.com/medrec-zk/medrec/dbmanager/ingest"
	"github.com/medrec-zk/medrec/dbmanager/store"
	"github.com/medrec-zk/medrec/gatewayauth"
	"github.com/medrec-zk/medrec/prover"
)

// Config is everything a gateway needs.
type Config struct {
	Provider uint32             // this provider's id in AgentRegistry
	Store    store.Store        // the provider's records
	View     *chainview.View    // permissions, followed from the chain
	Chain    *contracts.Client  // relaying
	Relayer  *bind.TransactOpts // the gateway's account (AgentRegistry's gateway of Provider)
	Prover   *prover.Prover     // verifying keys (no proving key needed)
	// PseudonymKey keys the pseudonyms that replace resource ids in
	// research reads (HMAC-SHA256 over the reader and the id): each research
	// reader sees stable ids of its own, which neither reveal the provider's
	// ids (a patient id is often a record number) nor match another
	// reader's. Keep it secret and stable; nil draws a random key, so
	// pseudonyms change when the gateway restarts.
	PseudonymKey []byte
	// StaffTokens maps the SHA-256 (hex) of each staff bearer token to the
	// staff member's id. Without tokens the admin API refuses everyone.
	StaffTokens map[string]string
	// FHIR validates resources on ingest (default: a new fhirval.Validator).
	FHIR *fhirval.Validator

	SyncInterval time.Duration // how stale the chain view may be at a decision (default 500 ms)
	SessionTTL   time.Duration // anonymous viewer sessions (default 10 min)
	BodyLimit    int           // bytes (default 4 MiB)
	RateLimit    int           // requests per minute per client IP on public routes (default 600)
	Now          func() time.Time
	Log          *slog.Logger
}

// Gateway is one provider's gateway.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	app     *fiber.App
	sigs    *gatewayauth.Verifier
	chainID *big.Int

	syncMu   sync.Mutex
	lastSync time.Time

	ingest *ingest.Ingester

	anchorMu sync.Mutex
	anchors  anchorState

	pruneMu sync.Mutex
	pruned  time.Time // when expired nonces and claim codes were last pruned

	tagPatients sync.Map // store.Tag → patient id, once mapped (never changes)

	// Short-lived, in memory only: lost on a restart (re-authenticating is cheap).
	// unchecked, when set, replaces the permission check of reads by a
	// fixed reader. Only this package's benchmarks set it, to measure what
	// the check costs; nothing else can (it is unexported).
	unchecked atomic.Pointer[reader]

	mu         sync.Mutex
	challenges map[string]time.Time // anonymous-viewer challenges → expiry
	sessions   map[string]*session  // token hash → session
}

// New builds a gateway; serve it with Listen or test it through App().Test.
func New(cfg Config) (*Gateway, error) {
	if cfg.Store == nil || cfg.View == nil || cfg.Chain == nil || cfg.Prover == nil || cfg.Provider == 0 {
		return nil, errors.New("dbmanager: store, view, chain client, prover and provider id are required")
	}
	if cfg.FHIR == nil {
		v, err := fhirval.New()
		if err != nil {
			return nil, err
		}
		cfg.FHIR = v
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = 500 * time.Millisecond
	}
	if cfg.SessionTTL == 0 {
		cfg.SessionTTL = 10 * time.Minute
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = 4 << 20
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 600
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PseudonymKey == nil {
		cfg.PseudonymKey = make([]byte, 32)
		if _, err := rand.Read(cfg.PseudonymKey); err != nil {
			return nil, err
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg: cfg, log: cfg.Log, ingest: ingest.New(cfg.Store, cfg.FHIR),
		chainID:    cfg.Chain.Deployment().ChainID,
		challenges: map[string]time.Time{},
		sessions:   map[string]*session{},
	}
	// Nonces are not the Verifier's: the access log records them (persist.go).
	g.sigs = &gatewayauth.Verifier{ChainID: g.chainID, Audience: cfg.Provider}
	g.app = fiber.New(fiber.Config{
		AppName: "medrec-dbmanager",
		// The hard limit fasthttp enforces (with a bare 413) is twice ours;
		// bodies between the two get a proper OperationOutcome below.
		BodyLimit:             2 * cfg.BodyLimit,
		ReadTimeout:           15 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           60 * time.Second,
		DisableStartupMessage: true,
		ErrorHandler:          g.errorHandler,
	})
	g.routes()
	return g, nil
}

// App returns the fiber app (for tests: App().Test(req)).
func (g *Gateway) App() *fiber.App { return g.app }

// Listen serves on addr until ctx ends, then shuts down gracefully.
func (g *Gateway) Listen(ctx context.Context, addr string) error {
	errc := make(chan error, 1)
	go func() { errc <- g.app.Listen(addr) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return g.app.ShutdownWithTimeout(10 * time.Second)
	}
}

func (g *Gateway) routes() {
	app := g.app
	// CORS stays closed: no Access-Control-Allow-* headers are ever sent, and
	// preflight requests are refused, so no other web origin can read.
	app.Use(func(c *fiber.Ctx) error {
		if c.Method() == fiber.MethodOptions {
			return errf(fiber.StatusForbidden, "forbidden", "cross-origin requests are not allowed")
		}
		if len(c.Body()) > g.cfg.BodyLimit {
			return errf(fiber.StatusRequestEntityTooLarge, "too-costly", "request body larger than %d bytes", g.cfg.BodyLimit)
		}
		secureHeaders(c)
		return c.Next()
	})
	public := limiter.New(limiter.Config{
		Max:        g.cfg.RateLimit,
		Expiration: time.Minute,
		LimitReached: func(*fiber.Ctx) error {
			return errf(fiber.StatusTooManyRequests, "throttled", "too many requests; slow down")
		},
	})
	app.Get("/fhir/metadata", g.metadata)

	fhir := app.Group("/fhir", public, g.recordNonce)
	fhir.Get("/Patient/$everything", g.everything)
	fhir.Get("/:type/:id", g.read)
	fhir.Get("/:type", g.search)

	auth := app.Group("/auth", public)
	auth.Post("/challenge", g.challenge)
	auth.Post("/entitlement", g.entitlement)

	app.Post("/claims", public, g.claimWithCode)

	me := app.Group("/patient", public, g.recordNonce)
	me.Get("/changes", g.changes)
	me.Get("/log", g.patientLog)
	me.Get("/state", g.patientState)

	relay := app.Group("/relay", public)
	relay.Post("/grant", g.relayGrant)
	relay.Post("/revoke", g.relayRevoke)
	relay.Post("/rotate", g.relayRotate)

	admin := app.Group("/admin", g.staffOnly)
	admin.Post("/patients", g.createPatient)
	admin.Post("/patients/:id/enrol", g.enrol)
	admin.Post("/patients/:id/claim", g.claimByStaff)
	admin.Post("/patients/:id/claim-code", g.newClaimCode)
	admin.Post("/patients/:id/resources", g.addResources)
	admin.Post("/import", g.importBundle)

	app.Use(func(c *fiber.Ctx) error { return notFound("no route %s %s", c.Method(), c.Path()) })
}

// secureHeaders are set on every answer.
func secureHeaders(c *fiber.Ctx) {
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("Cache-Control", "no-store")
}

// discardAnswer drops the answer a handler built (status, headers, body),
// keeping the headers every answer carries, so an error can replace it.
func discardAnswer(c *fiber.Ctx) {
	c.Response().Reset()
	secureHeaders(c)
}

// decodeStrict decodes a JSON body: unknown fields and trailing data are errors.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("trailing data after the JSON body")
	}
	return nil
}

// syncChain brings the chain view up to date unless it is fresher than
// SyncInterval.
func (g *Gateway) syncChain(ctx context.Context) error {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	now := time.Now()
	if now.Sub(g.lastSync) < g.cfg.SyncInterval {
		return nil
	}
	if err := g.cfg.View.Sync(ctx); err != nil {
		return errf(fiber.StatusServiceUnavailable, "transient", "the chain is unreachable: %v", err)
	}
	g.lastSync = now
	return nil
}

// TokenHash is how the gateway keeps a bearer token: SHA-256, hex.
func TokenHash(token string) string { return tokenHash(token) }

// NewToken returns a fresh random bearer token.
func NewToken() (string, error) { return randomHex(32) }

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// staffOnly admits requests with a configured staff bearer token.
func (g *Gateway) staffOnly(c *fiber.Ctx) error {
	const prefix = "Bearer "
	h := c.Get(fiber.HeaderAuthorization)
	if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
		return unauthorized("staff bearer token required")
	}
	staff, ok := g.cfg.StaffTokens[tokenHash(h[len(prefix):])]
	if !ok {
		return unauthorized("unknown staff token")
	}
	c.Locals("staff", staff)
	return c.Next()
}
