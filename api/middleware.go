package api

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
)

// HeaderRequestID carries the id that ties an answer to its log lines.
const HeaderRequestID = "X-Request-Id"

const (
	ctxKeyRequestID = "ledger.requestId"
	maxRequestIDLen = 128

	// routeUnmatched labels requests no registered route serves (404 for an
	// unknown path, 405 for a known path with another method, and the
	// automatic OPTIONS answer), so scanners cannot blow up metric cardinality.
	routeUnmatched = "unmatched"
)

// RequestID returns the id of the request c serves: the caller's
// X-Request-Id when it was safe to reuse, else a generated one. It is empty
// only outside the server's middleware chain.
func RequestID(c echo.Context) string {
	id, _ := c.Get(ctxKeyRequestID).(string)
	return id
}

// requestID adopts the caller's X-Request-Id when it is 1..128 characters of
// [A-Za-z0-9._-], so ids can be followed across services, and generates a
// random one otherwise: anything else could smuggle control characters or
// personal data into our logs. The id is echoed on every answer.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = rand.Text()
		}
		c.Set(ctxKeyRequestID, id)
		c.Response().Header().Set(HeaderRequestID, id)
		return next(c)
	}
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '.', b == '_', b == '-':
		default:
			return false
		}
	}
	return true
}

// panicError is a recovered panic on its way to the error handler, which
// logs the stack and answers 500.
type panicError struct {
	value any
	stack []byte
}

func (p *panicError) Error() string { return fmt.Sprintf("panic: %v", p.value) }

// Unwrap exposes the panic value when it is an error, so its type is logged.
func (p *panicError) Unwrap() error {
	err, _ := p.value.(error)
	return err
}

// recoverPanic turns a panic in a handler into a 500 problem. It re-panics
// http.ErrAbortHandler, whose whole point is to abort the connection.
func recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			err = &panicError{value: r, stack: debug.Stack()}
		}()
		return next(c)
	}
}

// bodyLimit refuses bodies larger than limit bytes with 413 body_too_large:
// at once when Content-Length announces it, and otherwise as soon as a
// reader (Bind, the idempotency middleware) reads past the limit, which
// surfaces as *http.MaxBytesError.
func bodyLimit(limit int64) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.ContentLength > limit {
				return bodyTooLarge(limit)
			}
			if req.Body != nil && req.Body != http.NoBody {
				req.Body = http.MaxBytesReader(c.Response().Writer, req.Body, limit)
			}
			return next(c)
		}
	}
}

// routeLabel is the route template that served c (e.g. /v1/vehicles/:vin),
// or "unmatched". It never contains the actual path, whose ids would make
// one metric series per account.
func routeLabel(c echo.Context) string {
	if unmatched(c) {
		return routeUnmatched
	}
	return c.Path()
}

// unmatched reports whether the router found no route for the request. It
// is known before the handler runs: the router hands an unknown path to
// echo.NotFoundHandler and sets the Allow list for a path that only other
// methods serve. The handler is recognised by its code pointer, the only
// identity a Go func value has; it is the very value the router stored.
func unmatched(c echo.Context) bool {
	if c.Get(echo.ContextKeyHeaderAllow) != nil {
		return true
	}
	h := c.Handler()
	return h == nil || reflect.ValueOf(h).Pointer() == reflect.ValueOf(echo.NotFoundHandler).Pointer()
}

// statusLabels spell the status codes once: observe labels every answer.
var statusLabels = func() (labels [600]string) {
	for code := range labels {
		labels[code] = strconv.Itoa(code)
	}
	return labels
}()

// statusLabel is strconv.Itoa(status), without allocating for a status
// code.
func statusLabel(status int) string {
	if status >= 0 && status < len(statusLabels) {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
}

// methodLabel keeps the method label to the standard methods, so invented
// methods cannot add series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// httpMetrics are the server's Prometheus series.
type httpMetrics struct {
	duration *prometheus.HistogramVec
	total    *prometheus.CounterVec
}

// newHTTPMetrics registers the series on reg. When a previous Server already
// registered them on the same registry (tests, or two servers in one
// process), the existing collectors are shared instead of failing. Any other
// registration error is a programming error and panics.
func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	labels := []string{"method", "route", "status"}
	m := &httpMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ledger_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method, route template and status.",
			Buckets: prometheus.DefBuckets,
		}, labels),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ledger_http_requests_total",
			Help: "HTTP requests answered, by method, route template and status.",
		}, labels),
	}
	m.duration = register(reg, m.duration)
	m.total = register(reg, m.total)
	return m
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("api: register metrics: %v", err))
	}
	return c
}

// quietRoutes are probed every few seconds, or, for introspection, by
// partners' resource servers on every call they serve (thousands a
// second); their access lines go to debug. Their metrics count every call.
var quietRoutes = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, "/oauth2/introspect": true}

// observe answers any error through the error handler (so the final status
// is known), then records the metrics and one access-log line. The line
// holds the method, route template, status, duration, response size and
// request id: never the path or query (they may carry ids or tokens), the
// Authorization header or a body.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		elapsed := time.Since(start)
		res := c.Response()
		status := res.Status
		if !res.Committed && status == 0 {
			status = http.StatusOK
		}
		method := methodLabel(c.Request().Method)
		route := routeLabel(c)
		statusText := statusLabel(status)
		s.metrics.duration.WithLabelValues(method, route, statusText).Observe(elapsed.Seconds())
		s.metrics.total.WithLabelValues(method, route, statusText).Inc()

		level := slog.LevelInfo
		switch {
		case status >= 500:
			level = slog.LevelWarn
		case quietRoutes[route]:
			level = slog.LevelDebug
		}
		s.log.LogAttrs(c.Request().Context(), level, "http request",
			slog.String("request_id", RequestID(c)),
			slog.String("method", method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
			slog.Int64("bytes", res.Size),
		)
		return nil
	}
}

// RequireAdmin guards /v1/admin/* routes: the caller must send
// "Authorization: Bearer <Config.AdminToken>". Tokens are compared through
// their SHA-256 digests in constant time, so neither the content nor the
// length leaks through timing. With no admin token configured every call is
// refused: an empty token must never open the admin API. Use it as group
// middleware: s.Echo().Group("/v1/admin", s.RequireAdmin).
func (s *Server) RequireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	want := sha256.Sum256([]byte(s.cfg.AdminToken))
	return func(c echo.Context) error {
		token, ok := bearerToken(c.Request())
		got := sha256.Sum256([]byte(token))
		if !ok || s.cfg.AdminToken == "" || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			return &problemError{
				status: http.StatusUnauthorized,
				code:   codeAdminTokenInvalid,
				detail: "This endpoint needs the admin bearer token.",
				header: http.Header{"Www-Authenticate": {`Bearer realm="ledger-admin"`}},
			}
		}
		return next(c)
	}
}

// bearerToken extracts the token of an "Authorization: Bearer …" header.
// The scheme is case-insensitive (RFC 9110 §11.1).
func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get(echo.HeaderAuthorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
