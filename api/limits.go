package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/security"
)

// Defaults of Limits.
const (
	// DefaultSourceFailures is generous on purpose: carrier-grade NAT puts
	// thousands of phones behind one address, and every end-user secret is
	// also bounded per subject (5 passwords, 3 PINs, 5 tries per code).
	DefaultSourceFailures       = 100
	DefaultClientSecretFailures = 20
	DefaultFailureWindow        = 15 * time.Minute
	// maxTracked bounds the memory of each limiter: beyond it, addresses not
	// seen yet are not tracked until a sweep frees room (and a warning is
	// logged). Only addresses that failed recently take room.
	maxTracked = 1 << 16
)

// Limits bound secret guessing per source address and per partner client.
// With a database the budgets are shared by every instance (table
// failure_limits): a failure anywhere counts everywhere, and an instance
// refuses a source limited by another within DefaultLimitsRefresh. Without
// one (or while it fails) each instance counts on its own, so a source
// spread over N instances gets up to N budgets. The bounds per subject
// (sign-in locks, PIN blocks, burnt codes) are decided from the event log.
type Limits struct {
	// SourceFailures is how many failed secrets (wrong password, PIN, SMS
	// or car-key code, client secret, unknown session or access token) one
	// address may send per Window before every request from it is refused
	// with 429 until its budget is whole again. Zero means
	// DefaultSourceFailures; negative disables the limit.
	SourceFailures int
	// ClientSecretFailures is how many wrong secrets one partner client id
	// may receive per Window, from any address, before its authentication
	// at /oauth2/* is refused with 429. Zero means the default; negative
	// disables it.
	ClientSecretFailures int
	// Window is the time a spent budget takes to come back whole. Zero
	// means DefaultFailureWindow.
	Window time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed: the
	// source is the nearest address in the header that is not one of them.
	// Empty means the TCP peer is the source and the header is ignored.
	TrustedProxies []netip.Prefix

	now func() time.Time // tests move time; nil is the wall clock
	// refresh is how stale an instance's view of the limits other
	// instances set may be; zero means DefaultLimitsRefresh.
	refresh time.Duration
}

// DefaultLimitsRefresh is how often an instance reads the limits that
// other instances set.
const DefaultLimitsRefresh = 2 * time.Second

// ParseTrustedProxies reads a comma-separated list of addresses and CIDR
// prefixes (LEDGER_TRUSTED_PROXIES).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q is neither an address nor a CIDR prefix", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// The secret a failure was about, named in the events and logs.
const (
	kindPassword        = "password"
	kindActivationToken = "activation-token"
	kindSessionToken    = "session-token"
	kindPIN             = "pin"
	kindSMSCode         = "sms-code"
	kindCarKeyCode      = "carkey-code"
	kindClientSecret    = "client-secret"
	kindAccessToken     = "access-token"
	kindAdminToken      = "admin-token"
	kindAuditorKey      = "auditor-key"
)

// failedSecretCodes are the answers that mean "this secret was wrong" (or
// its subject is locked because of wrong ones), by the secret they are
// about. Each counts against the source's budget.
var failedSecretCodes = map[string]string{
	"invalid_credentials":       kindPassword,
	"too_many_sign_in_attempts": kindPassword,
	"invalid_activation_token":  kindActivationToken,
	"invalid_session":           kindSessionToken,
	"pin_wrong":                 kindPIN,
	"sms_code_wrong":            kindSMSCode,
	"sms_code_burnt":            kindSMSCode,
	"carkey_code_wrong":         kindCarKeyCode,
	"carkey_code_burnt":         kindCarKeyCode,
	"invalid_token":             kindAccessToken,
	codeAdminTokenInvalid:       kindAdminToken,
	"auditor_key_invalid":       kindAuditorKey,
}

// bearerCodes count only when a credential was sent: a request without an
// Authorization header guesses nothing.
var bearerCodes = map[string]bool{"invalid_session": true, "invalid_token": true, codeAdminTokenInvalid: true, "auditor_key_invalid": true}

// Codes of the limits' answers.
const (
	codeTooManyFailedAttempts = "too_many_failed_attempts"
	codeClientAuthLocked      = "client_auth_locked"
)

const failedSecretKey = "ledger.failed-secret"

// noteFailedSecret tells the guard that the request failed a secret although
// its answer does not show it as an error (an SDK FAILED envelope, an HTML
// form shown again). code is the domain code of the refusal; codes that are
// not about a secret are ignored.
func noteFailedSecret(c echo.Context, code string) {
	if _, ok := failedSecretCodes[code]; ok {
		c.Set(failedSecretKey, code)
	}
}

// guard enforces Limits on every route but the health probes.
type guard struct {
	sources  *failureLimiter // nil when disabled
	clients  *failureLimiter // nil when disabled
	record   securityRecorder
	log      *slog.Logger
	instance string
}

// securityRecorder appends the transitions; commands.Handler is one.
type securityRecorder interface {
	RecordSourceLimited(context.Context, security.SourceLimited) error
	RecordClientAuthLocked(context.Context, security.ClientAuthLocked) error
}

func newGuard(l Limits, db *pgxpool.Pool, record securityRecorder, log *slog.Logger) *guard {
	window := l.Window
	if window <= 0 {
		window = DefaultFailureWindow
	}
	g := &guard{record: record, log: log}
	g.instance, _ = os.Hostname()
	refresh := l.refresh
	if refresh == 0 {
		refresh = DefaultLimitsRefresh
	}
	if n := orDefault(l.SourceFailures, DefaultSourceFailures); n > 0 {
		g.sources = newFailureLimiter(n, window, l.now).shared(db, "source", refresh, log)
	}
	if n := orDefault(l.ClientSecretFailures, DefaultClientSecretFailures); n > 0 {
		g.clients = newFailureLimiter(n, window, l.now).shared(db, "client", refresh, log)
	}
	return g
}

func orDefault(n, def int) int {
	if n == 0 {
		return def
	}
	return n
}

// ipExtractor reads the source address: the TCP peer, or with trusted
// proxies the nearest untrusted address of X-Forwarded-For. Echo's default
// would believe X-Forwarded-For and X-Real-IP from anyone.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// sourceKey is the address a budget belongs to. IPv6 addresses count by
// their /64, the smallest block a subscriber is usually given.
func sourceKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	if !strings.Contains(ip, ":") {
		return ip // dotted decimal, which ParseAddr takes only as String spells it
	}
	return a.String()
}

func exemptFromLimits(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// middleware refuses limited sources and clients before the route runs, and
// counts the route's failed secrets after it.
func (g *guard) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if exemptFromLimits(c.Path()) || (g.sources == nil && g.clients == nil) {
			return next(c)
		}
		src := sourceKey(c.RealIP())
		if wait, limited := g.sources.blocked(c.Request().Context(), src); limited {
			return tooManyFailures(codeTooManyFailedAttempts,
				"Too many failed secrets came from this address: try again later.", wait)
		}
		client := clientOf(c)
		if client != "" {
			if wait, limited := g.clients.blocked(c.Request().Context(), client); limited {
				return tooManyFailures(codeClientAuthLocked,
					"This client's authentication is locked after too many wrong secrets: try again later.", wait)
			}
		}
		err := next(c)
		if kind := failureKind(c, err); kind != "" {
			g.failed(c, src, kind)
			if kind == kindClientSecret && client != "" {
				g.clientFailed(c, client)
			}
		}
		return err
	}
}

func tooManyFailures(code, detail string, wait time.Duration) error {
	secs := int64(math.Ceil(wait.Seconds()))
	return &problemError{status: http.StatusTooManyRequests, code: code, detail: detail,
		header: http.Header{"Retry-After": {strconv.FormatInt(max(secs, 1), 10)}}}
}

// clientOf is the client id a request to a client-authenticated OAuth2
// endpoint names (HTTP Basic or the client_id form field), or "".
func clientOf(c echo.Context) string {
	switch c.Path() {
	case "/oauth2/token", "/oauth2/introspect", "/oauth2/revoke":
	default:
		return ""
	}
	id, _, ok := c.Request().BasicAuth()
	if !ok {
		id = c.FormValue("client_id")
	}
	parsed, err := uuid.Parse(id)
	if err != nil {
		return "" // an unknown client: only the source's budget counts
	}
	if len(id) == 36 && strings.ToLower(id) == id {
		return id // as String spells it: no need to spell it again
	}
	return parsed.String()
}

// failureKind names the secret the request failed, or "".
func failureKind(c echo.Context, err error) string {
	if code, ok := c.Get(failedSecretKey).(string); ok {
		return failedSecretCodes[code]
	}
	if err != nil {
		code := resolve(err).code
		kind, ok := failedSecretCodes[code]
		if !ok || (bearerCodes[code] && c.Request().Header.Get(echo.HeaderAuthorization) == "") {
			return ""
		}
		return kind
	}
	// The OAuth2 endpoints write the protocol's errors themselves: a 401
	// there is invalid_client.
	if c.Response().Status == http.StatusUnauthorized && strings.HasPrefix(c.Path(), "/oauth2/") {
		return kindClientSecret
	}
	return ""
}

func (g *guard) failed(c echo.Context, src, kind string) {
	tripped, failures, until := g.sources.fail(c.Request().Context(), src)
	if !tripped {
		return
	}
	g.log.Warn("source limited after failed secrets", slog.String("source", src), slog.String("kind", kind),
		slog.Int("failures", failures), slog.Time("until", until), slog.String("request_id", RequestID(c)))
	ctx := context.WithoutCancel(c.Request().Context())
	if err := g.record.RecordSourceLimited(ctx, security.SourceLimited{
		Source: src, Kind: kind, Failures: failures, LimitedUntil: until, Instance: g.instance,
	}); err != nil {
		g.log.Error("recording a source limit failed", slog.String("source", src), slog.String("error", err.Error()))
	}
}

func (g *guard) clientFailed(c echo.Context, client string) {
	tripped, failures, until := g.clients.fail(c.Request().Context(), client)
	if !tripped {
		return
	}
	g.log.Warn("client authentication locked after wrong secrets", slog.String("client_id", client),
		slog.Int("failures", failures), slog.Time("until", until), slog.String("request_id", RequestID(c)))
	ctx := context.WithoutCancel(c.Request().Context())
	if err := g.record.RecordClientAuthLocked(ctx, security.ClientAuthLocked{
		ClientID: uuid.MustParse(client), Failures: failures, LockedUntil: until, Instance: g.instance,
	}); err != nil {
		g.log.Error("recording a client lock failed", slog.String("client_id", client), slog.String("error", err.Error()))
	}
}

// mountLimits installs the guard and the source-address extractor. It runs
// first among the ledger's route middleware, so a limited source is refused
// before any credential is checked.
func (h *handlers) mountLimits() {
	s := h.server
	e := s.Echo()
	e.IPExtractor = ipExtractor(s.cfg.Limits.TrustedProxies)
	var record securityRecorder = discardRecorder{}
	if h.Commands != nil {
		record = h.Commands
	}
	s.guard = newGuard(s.cfg.Limits, s.pool, record, s.log)
	e.Use(s.guard.middleware)
}

type discardRecorder struct{}

func (discardRecorder) RecordSourceLimited(context.Context, security.SourceLimited) error { return nil }
func (discardRecorder) RecordClientAuthLocked(context.Context, security.ClientAuthLocked) error {
	return nil
}

// domainCode is the code of a domain error, or "".
func domainCode(err error) string {
	var de *domain.Error
	if errors.As(err, &de) {
		return de.Code
	}
	return ""
}
