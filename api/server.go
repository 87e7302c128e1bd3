// Package api is the ledger's HTTP surface: Echo handlers, their DTOs and
// the one map from domain error kinds to HTTP answers. Every answer passes
// the same middleware chain:
//
//	request id → access log and metrics → panic recovery → body limit → idempotency → route
//
// Route files register on Server.Echo(); cmd/ builds the Server, registers
// the routes and calls Run.
package api

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// DefaultAddr is the listen address when Config.Addr is empty.
	DefaultAddr = ":8080"
	// DefaultBodyLimit caps request bodies when Config.BodyLimit is not set.
	DefaultBodyLimit int64 = 1 << 20
	// DefaultShutdownTimeout bounds a graceful shutdown when
	// Config.ShutdownTimeout is not set.
	DefaultShutdownTimeout = 15 * time.Second
)

// Config is what cmd/ reads from the environment for the HTTP server.
type Config struct {
	// Addr is the listen address; empty means DefaultAddr.
	Addr string
	// Dev enables development-only routes (e.g. /v1/dev/outbox). Route files
	// read it through Server.Config and register those routes only when set.
	Dev bool
	// AdminToken is the bearer token RequireAdmin accepts. Empty refuses
	// every admin call.
	AdminToken string
	// BodyLimit caps request bodies in bytes; zero or negative means
	// DefaultBodyLimit (1 MiB).
	BodyLimit int64
	// ShutdownTimeout bounds how long Run waits for in-flight requests once
	// its context is cancelled; zero or negative means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// PublicURL is the base URL partners reach the service at, without a
	// trailing slash: the OAuth2 issuer and the base of the endpoints in its
	// metadata. Empty means the scheme and host of each request.
	PublicURL string
	// OAuthSecret keys the HMAC-SHA512/256 signatures of OAuth2 codes and
	// tokens (any length; it is hashed to a 256-bit key). Empty means a
	// random key made by New: then no code or token survives a restart, and
	// instances behind one load balancer do not accept each other's tokens.
	OAuthSecret []byte
	// Limits bound secret guessing per source address and per partner
	// client (see Limits); the zero value means the defaults.
	Limits Limits
}

// Deps are the collaborators the server needs.
type Deps struct {
	// Pool stores idempotent answers. When nil, the Idempotency-Key header is
	// ignored and a warning is logged at construction: only tests that do not
	// exercise idempotency should leave it out.
	Pool *pgxpool.Pool
	// Logger receives the access and error logs (cmd/ gives it a JSON
	// handler); nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the HTTP metrics and is served at /metrics; nil
	// means a fresh registry holding only this server's series.
	Registry *prometheus.Registry
	// Ready are the checks /readyz runs (database, event store, migrations).
	Ready []ReadyCheck
}

// ReadyCheck is one dependency /readyz probes. Check must honour its
// context: it gets ReadyTimeout, and a check still running then counts as
// failed.
type ReadyCheck struct {
	Name  string
	Check func(context.Context) error
}

// Server is the ledger's HTTP server: an Echo instance with the ledger's
// middleware, error handler, health routes and idempotency store.
type Server struct {
	cfg      Config
	echo     *echo.Echo
	log      *slog.Logger
	registry *prometheus.Registry
	ready    []ReadyCheck
	metrics  *httpMetrics
	idem     *idempotency
	pool     *pgxpool.Pool // nil in tests that need no database
	guard    *guard        // set by Mount

	// onListen, when set, learns the bound address (tests listen on :0).
	onListen func(net.Addr)
}

// New builds the server and registers /healthz, /readyz and /metrics. It
// registers the HTTP metrics on deps.Registry, sharing them with any server
// that registered them there before.
func New(cfg Config, deps Deps) *Server {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.OAuthSecret) == 0 {
		cfg.OAuthSecret = make([]byte, 32)
		_, _ = rand.Read(cfg.OAuthSecret)
		if !cfg.Dev {
			log.Warn("no OAuth secret configured: OAuth2 codes and tokens will not survive a restart")
		}
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		cfg:      cfg,
		echo:     echo.New(),
		log:      log,
		registry: reg,
		ready:    deps.Ready,
		metrics:  newHTTPMetrics(reg),
	}
	s.pool = deps.Pool
	if deps.Pool != nil {
		s.idem = newIdempotency(deps.Pool)
	} else {
		log.Warn("no database pool: Idempotency-Key headers will be ignored")
	}

	e := s.echo
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.Use(requestID, s.observe, recoverPanic, bodyLimit(cfg.BodyLimit), s.idempotent)
	s.registerHealth()
	return s
}

// Echo returns the Echo instance so route files can register their routes.
// Middleware added with Use runs after the ledger's own chain.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Config returns the configuration with defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Handler returns the server as an http.Handler, for httptest.
func (s *Server) Handler() http.Handler { return s.echo }

// Run listens on Config.Addr, logs the URL it serves and answers requests
// until ctx is cancelled. It then stops accepting connections and waits up
// to Config.ShutdownTimeout for in-flight requests; requests still running
// after that are cut off and Run reports the timeout. Requests do not
// inherit ctx, so cancelling it does not abort their work half-way. It
// returns nil after a clean shutdown and an error when it cannot listen or
// the server fails. Signal handling belongs to the caller.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api: listen on %s: %w", s.cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.echo,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("serving HTTP", slog.String("url", serveURL(ln.Addr())))
	if s.onListen != nil {
		s.onListen(ln.Addr())
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}

	s.log.Info("shutting down HTTP server", slog.Duration("timeout", s.cfg.ShutdownTimeout))
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		closeErr := srv.Close()
		return errors.Join(fmt.Errorf("api: graceful shutdown: %w", err), closeErr)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serve: %w", err)
	}
	return nil
}

// serveURL is the URL to print for a bound address; a wildcard host is shown
// as localhost, which is where a developer reading the log will point curl.
func serveURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
