package dbmanager

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/ethereum/go-ethereum/accounts/abi/bind/v2"
	"github.com/ethereum/go-ethereum/common"
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
	// Inserter proves enrolment batches where the patient registry takes
	// proven ones (the deployment has an insertion verifier): a prover
	// whose key set holds the insertion circuit's proving key. Unused, and
	// may be nil, where the registry inserts by its frontier.
	Inserter *prover.Prover
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

	// Heads pushes the new heads of the node View reads (the same node: a
	// WebSocket connection to it, or the simulated backend's client). With
	// it, Listen (or FollowHeads) follows heads and the view is brought up
	// to date before any decision taken after a head arrived (heads.go);
	// without it, or while it cannot subscribe, SyncInterval alone bounds
	// the view's age.
	Heads        chainview.HeadSource
	SyncInterval time.Duration // how stale the chain view may be at a decision (default 500 ms)
	// EnrolLinger is how long the enrolment queue waits before it sends a
	// batch, for bigger batches (enrolment.go; 0: at once — batches then
	// form from what arrives while one is being mined).
	EnrolLinger time.Duration
	SessionTTL  time.Duration // anonymous viewer sessions (default 10 min)
	// BodyLimit bounds every request body (default 4 MiB) but the bulk
	// NDJSON import's (POST /admin/import/ndjson), which is streamed.
	BodyLimit int
	// SpoolDir is where bulk NDJSON imports spool their input (default
	// os.TempDir()): about the size of the input, removed when the import ends.
	SpoolDir string
	// RateLimit is requests per minute per client IP on the routes that
	// authenticate nobody (claims, relays, challenges; default 600). The
	// readers' routes allow ten times that per IP — a clinic or a mobile
	// carrier puts many readers behind one address — and ReaderRateLimit
	// per authenticated reader.
	RateLimit int
	// ReaderRateLimit is requests per minute per authenticated reader: an
	// owner delegate, an address grantee, an anonymous viewer's grant
	// (default 1200). One reader's flood slows that reader only.
	ReaderRateLimit int
	// SMARTApps are the apps the provider lets its patients approve (SMART
	// App Launch, smart.go): public clients, each with its exact redirect
	// URIs. Registration is the provider's: the staff who run the gateway
	// list the apps they vouch for in its configuration.
	SMARTApps []SMARTApp
	// PatientApp is the patient's client, where the authorize step sends
	// the patient's browser to approve an app: each patient runs their
	// own, on their own computer's loopback (default http://127.0.0.1:7600,
	// the address `medrec run` serves it on).
	PatientApp string
	// AppTokenTTL is how long an app's access token lasts (default 10 min;
	// never past the patient's approval).
	AppTokenTTL time.Duration
	// BackendClients are the provider's systems that write records in
	// FHIR (SMART Backend Services, backend.go): each with the public keys
	// it signs its token requests with, registered by the provider.
	BackendClients []BackendClient
	// BackendTokenTTL is how long a backend client's access token lasts
	// (default 5 min).
	BackendTokenTTL time.Duration
	// PublicURL is the gateway's own base URL, as its registry entry names
	// it (http(s)://host:port, no path): the FHIR base an app's aud must
	// name, the base of the endpoints and links it announces, and the
	// audience a backend client's assertion must name (+ "/smart/token"),
	// whatever Host the request says — so an assertion made for another
	// gateway (one that registered the same client, and could replay what it
	// received with its own Host), or an app's aud for another server, is
	// refused here. Empty: the request's base URL (tests, one-host setups).
	PublicURL string
	Now       func() time.Time
	Log       *slog.Logger
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
	heads    headFollow // guarded by syncMu but its follower (heads.go)

	exports exportRuns    // the bulk exports this process runs (exportjobs.go)
	bulk    chan struct{} // held by the bulk NDJSON import running (bulkimport.go)
	smart   smartState    // SMART App Launch's requests, codes and tokens (smart.go)
	backend backendState  // SMART Backend Services' tokens (backend.go)

	// txMu serialises signing and sending the gateway account's
	// transactions (relays, enrolments, anchors), so each takes the next
	// account nonce; waiting for them to be mined is not serialised.
	txMu sync.Mutex

	ingest *ingest.Ingester
	enrols enrolQueue // enrolments on their way to the chain, in batches (enrolment.go)

	anchorMu sync.Mutex
	anchors  anchorState

	limits *readerLimits // requests per minute per authenticated reader
	logins loginLock     // failed desk logins per account

	tagPatients sync.Map        // store.Tag → cachedPatient (see patientOf)
	corsOrigins map[string]bool // the registered apps' web origins (cors.go)

	// Short-lived, in memory only: lost on a restart (re-authenticating is cheap).
	mu              sync.Mutex
	challengeKey    []byte                 // MACs the challenges this process issues (auth.go)
	usedChallenges  map[[32]byte]time.Time // challenges used by a valid proof → their expiry
	challengesSwept time.Time
	sessions        map[string]*session // token hash → session
}

// New builds a gateway; serve it with Listen or test it through App().Test.
func New(cfg Config) (*Gateway, error) {
	if cfg.Store == nil || cfg.View == nil || cfg.Chain == nil || cfg.Prover == nil || cfg.Provider == 0 {
		return nil, errors.New("dbmanager: store, view, chain client, prover and provider id are required")
	}
	if cfg.Chain.Deployment().InsertionVerifier != (common.Address{}) && !canProveInsertion(cfg.Inserter) {
		return nil, errors.New("dbmanager: this network's patient registry takes proven enrolment batches: the gateway needs the insertion circuit's proving key (Config.Inserter)")
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
	if cfg.ReaderRateLimit == 0 {
		cfg.ReaderRateLimit = 1200
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := checkSMARTApps(cfg.SMARTApps); err != nil {
		return nil, err
	}
	if err := checkBackendClients(cfg.BackendClients, cfg.SMARTApps); err != nil {
		return nil, err
	}
	if cfg.BackendTokenTTL == 0 {
		cfg.BackendTokenTTL = 5 * time.Minute
	}
	if cfg.PatientApp == "" {
		cfg.PatientApp = "http://127.0.0.1:7600"
	}
	if cfg.AppTokenTTL == 0 {
		cfg.AppTokenTTL = 10 * time.Minute
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
		limits: newReaderLimits(cfg.ReaderRateLimit),
		cfg:    cfg, log: cfg.Log, ingest: ingest.New(cfg.Store, cfg.FHIR),
		chainID:        cfg.Chain.Deployment().ChainID,
		corsOrigins:    appOrigins(cfg.SMARTApps),
		challengeKey:   make([]byte, 32),
		usedChallenges: map[[32]byte]time.Time{},
		sessions:       map[string]*session{},
		bulk:           make(chan struct{}, 1),
		smart:          newSMARTState(),
		backend:        backendState{tokens: map[string]*backendToken{}},
	}
	if _, err := rand.Read(g.challengeKey); err != nil {
		return nil, err
	}
	if cfg.Heads != nil {
		g.heads.follower = chainview.NewHeads(cfg.Heads, time.Second, cfg.Log)
	}
	// Nonces are not the Verifier's: the access log records them (persist.go).
	d := cfg.Chain.Deployment()
	g.sigs = &gatewayauth.Verifier{Domain: gatewayauth.Domain{ChainID: d.ChainID, Registry: d.AgentRegistry}, Audience: cfg.Provider}
	g.app = fiber.New(fiber.Config{
		AppName: "medrec-dbmanager",
		// Request bodies are streamed, so that the bulk import can take a
		// body of any size; boundBody reads every other one, up to
		// BodyLimit. (fasthttp reads at most this much before a handler
		// runs, and then streams the rest.)
		BodyLimit:                    2 * cfg.BodyLimit,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		ReadTimeout:                  15 * time.Second,
		WriteTimeout:                 30 * time.Second,
		IdleTimeout:                  60 * time.Second,
		DisableStartupMessage:        true,
		ErrorHandler:                 g.errorHandler,
	})
	g.routes()
	return g, nil
}

// App returns the fiber app (for tests: App().Test(req)).
func (g *Gateway) App() *fiber.App { return g.app }

// Listen serves on addr until ctx ends, then shuts down gracefully. While
// it serves, the gateway's housekeeping runs in the background (Maintain).
func (g *Gateway) Listen(ctx context.Context, addr string) error {
	mctx, stop := context.WithCancel(ctx)
	defer stop()
	go g.maintain(mctx)
	errc := make(chan error, 1)
	go func() { errc <- g.app.Listen(addr) }()
	if g.cfg.Heads != nil {
		go g.FollowHeads(mctx)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		return g.app.ShutdownWithTimeout(10 * time.Second)
	}
}

func (g *Gateway) routes() {
	app := g.app
	// CORS is open on the standard door to registered browser apps' origins
	// only (cors.go); everywhere else, and to every other origin, no
	// Access-Control-Allow-* header is sent and a preflight is refused.
	app.Use(func(c *fiber.Ctx) error {
		if c.Method() == fiber.MethodOptions && !corsPreflight(c, g.corsOrigins) {
			return errf(fiber.StatusForbidden, "forbidden", "cross-origin requests are not allowed here")
		}
		secureHeaders(c)
		if err := g.boundBody(c); err != nil {
			return err
		}
		return c.Next()
	}, corsFor(g.corsOrigins))
	perIP := func(max int) fiber.Handler {
		return limiter.New(limiter.Config{
			Max:        max,
			Expiration: time.Minute,
			LimitReached: func(*fiber.Ctx) error {
				return errf(fiber.StatusTooManyRequests, "throttled", "too many requests from this address; slow down")
			},
		})
	}
	// Readers are limited per reader in begin (ratelimit.go), and per
	// address only loosely; the unauthenticated routes per address.
	public, readers := perIP(g.cfg.RateLimit), perIP(10*g.cfg.RateLimit)
	app.Get("/fhir/metadata", g.metadata)
	app.Get("/.well-known/smart-configuration", g.smartConfiguration)
	app.Get("/fhir/.well-known/smart-configuration", g.smartConfiguration)
	app.Get("/registry/tops", public, g.registryTops)
	app.Get("/registry/buckets/:b", public, g.registryBucket)
	app.Post("/registry/locator", public, g.fileLocator)
	app.Post("/registry/locator/find", public, g.findLocator)
	smart := app.Group("/smart", public)
	smart.Get("/authorize", g.smartAuthorize)
	smart.Get("/request", g.smartRequest)
	smart.Get("/approved", g.smartApproved)
	smart.Post("/token", g.smartToken)

	fhir := app.Group("/fhir", readers, g.recordNonce)
	fhir.Get("/Patient/$everything", g.everything)
	fhir.Get("/Patient/$disclosures", g.disclosures)
	fhir.Get("/Patient/$grants", g.grants)
	fhir.Get("/Patient/$export", g.exportKickOff)
	fhir.Get("/_export/:job", g.exportStatus)
	fhir.Get("/_export/:job/:file", g.exportFile)
	fhir.Delete("/_export/:job", g.exportDelete)
	// A research grantee's group (group.go): tag-less signed requests only,
	// and nowhere else.
	fhir.Get("/Group/:id/$export", g.groupExportKickOff)
	fhir.Get("/Group/:id/_export/:job", g.groupExportStatus)
	fhir.Get("/Group/:id/_export/:job/:file", g.groupExportFile)
	fhir.Delete("/Group/:id/_export/:job", g.groupExportDelete)
	fhir.Get("/Group/:id", g.groupRead)
	fhir.All("/Group/:id", g.groupOther)
	fhir.All("/Group/:id/*", g.groupOther)
	fhir.Get("/AuditEvent", g.auditEvents)
	fhir.Get("/AuditEvent/:id", g.auditEventByID)
	fhir.Get("/Patient/:id/$everything", g.everything)
	fhir.Get("/:type/:id/_history/:vid", g.vread)
	fhir.Get("/:type/:id/_history", g.history)
	fhir.Get("/:type/:id", g.read)
	fhir.Get("/:type", g.search)
	// EHR feeds: a backend client's writes (feed.go).
	fhir.Post("/", g.feedBundle)
	fhir.Post("/:type", g.feedCreate)
	fhir.Put("/:type/:id", g.feedUpdate)
	fhir.Put("/:type", g.feedUpdate)

	auth := app.Group("/auth", public)
	auth.Post("/challenge", g.challenge)
	auth.Post("/entitlement", g.entitlement)

	app.Post("/claims", public, g.claimWithCode)

	me := app.Group("/patient", readers, g.recordNonce)
	me.Get("/changes", g.changes)
	me.Get("/log", g.patientLog)
	me.Get("/state", g.patientState)
	me.Get("/history", g.patientHistory)

	relay := app.Group("/relay", public)
	relay.Post("/grant", g.relayGrant)
	relay.Post("/revoke", g.relayRevoke)
	relay.Post("/rotate", g.relayRotate)

	// The desk: clerks do the daily work for one patient at a time; admins
	// also write records, import, undo mappings and manage staff.
	app.Post("/admin/login", public, g.login)
	admin := app.Group("/admin", g.staffOnly)
	admin.Post("/logout", g.logout)
	admin.Get("/me", g.me)
	admin.Get("/status", g.status)
	admin.Get("/patients", g.findPatients)
	admin.Get("/patients/:id", g.deskPatient)
	admin.Post("/patients", g.createPatient)
	admin.Post("/patients/:id/enrol", g.enrol)
	admin.Post("/patients/:id/claim", g.claimByStaff)
	admin.Post("/patients/:id/claim-code", g.newClaimCode)
	admin.Post("/patients/:id/unmap", g.adminOnly, g.unmapTag)
	admin.Post("/patients/:id/resources", g.adminOnly, g.addResources)
	admin.Post("/import", g.adminOnly, g.importBundle)
	admin.Post("/import/ndjson", g.adminOnly, g.importNDJSON)
	admin.Get("/staff", g.adminOnly, g.listStaff)
	admin.Post("/staff", g.adminOnly, g.addStaff)
	admin.Post("/staff/:id", g.adminOnly, g.changeStaff)

	app.Use(func(c *fiber.Ctx) error { return notFound("no route %s %s", c.Method(), c.Path()) })
}

// boundBody reads the request's body, at most BodyLimit bytes of it, so
// that handlers see it whole (c.Body); a longer one is refused (413). The
// bulk import's body is left to its handler, which streams it.
func (g *Gateway) boundBody(c *fiber.Ctx) error {
	stream := c.Context().RequestBodyStream()
	if stream == nil {
		return nil
	}
	if c.Method() == fiber.MethodPost && c.Path() == ndjsonImportPath {
		// Whatever the handler leaves unread cannot be skipped: the
		// connection is not reused.
		c.Context().SetConnectionClose()
		return nil
	}
	limit := g.cfg.BodyLimit
	tooLarge := func(read int) error {
		// Drain a body up to twice the limit, so that the client reads
		// the answer and the connection lives on; close on a larger one.
		rest := int64(2*limit - read)
		if cl := c.Request().Header.ContentLength(); cl > 2*limit {
			rest = -1
		} else if n, err := io.Copy(io.Discard, io.LimitReader(stream, rest+1)); err != nil || n > rest {
			rest = -1
		}
		if rest < 0 {
			c.Context().SetConnectionClose()
		}
		return errf(fiber.StatusRequestEntityTooLarge, "too-costly", "request body larger than %d bytes", limit)
	}
	if cl := c.Request().Header.ContentLength(); cl > limit {
		return tooLarge(0)
	}
	body, err := io.ReadAll(io.LimitReader(stream, int64(limit)+1))
	if err != nil {
		c.Context().SetConnectionClose()
		return badRequest("reading the request body: %v", err)
	}
	if len(body) > limit {
		return tooLarge(len(body))
	}
	c.Request().SetBody(body)
	return nil
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
