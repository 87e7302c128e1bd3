package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
)

// registerProbeRoutes adds the routes the infrastructure tests exercise.
func registerProbeRoutes(s *Server) {
	e := s.Echo()
	e.GET("/t/domain/:kind", func(c echo.Context) error {
		err := domain.New(domain.Kind(c.Param("kind")), "probe_"+c.Param("kind"), "probe message")
		if err.Kind == domain.KindTooManyAttempts {
			err.RetryAfter = 1500 * time.Millisecond
		}
		return fmt.Errorf("probe handler: %w", err)
	})
	e.GET("/t/vehicles/:vin", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"vin": c.Param("vin")})
	})
	e.GET("/t/panic", func(echo.Context) error { panic("probe panic") })
	e.GET("/t/internal", func(echo.Context) error {
		return fmt.Errorf("load account: %w", errors.New("connection to 10.0.0.7 refused"))
	})
	e.GET("/t/problem", func(echo.Context) error {
		return Problem(http.StatusConflict, "probe_conflict", "probe detail")
	})
}

func TestProblemForEachDomainKind(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	tests := []struct {
		kind       domain.Kind
		status     int
		retryAfter string
	}{
		{domain.KindInvalid, http.StatusBadRequest, ""},
		{domain.KindUnauthenticated, http.StatusUnauthorized, ""},
		{domain.KindForbidden, http.StatusForbidden, ""},
		{domain.KindNotFound, http.StatusNotFound, ""},
		{domain.KindConflict, http.StatusConflict, ""},
		{domain.KindTooManyAttempts, http.StatusTooManyRequests, "2"},
		{domain.KindUnavailable, http.StatusServiceUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			rec := env.do(t, request{method: http.MethodGet, target: "/t/domain/" + string(tt.kind) + "?token=hidden"})
			p := decodeProblem(t, rec, tt.status, "probe_"+string(tt.kind))
			if p.Detail != "probe message" {
				t.Errorf("detail = %q, want the domain message", p.Detail)
			}
			if p.Instance != "/t/domain/"+string(tt.kind) {
				t.Errorf("instance = %q, want the path without query", p.Instance)
			}
			if got := rec.Header().Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
		})
	}

	t.Run("unknown kind is internal", func(t *testing.T) {
		rec := env.do(t, request{method: http.MethodGet, target: "/t/domain/bogus"})
		p := decodeProblem(t, rec, http.StatusInternalServerError, codeInternal)
		if strings.Contains(p.Detail, "probe") {
			t.Errorf("detail leaks the error: %q", p.Detail)
		}
	})
	t.Run("Problem helper", func(t *testing.T) {
		rec := env.do(t, request{method: http.MethodGet, target: "/t/problem"})
		if p := decodeProblem(t, rec, http.StatusConflict, "probe_conflict"); p.Detail != "probe detail" {
			t.Errorf("detail = %q", p.Detail)
		}
	})
}

func TestProblemForRoutingErrors(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)

	rec := env.do(t, request{method: http.MethodGet, target: "/no/such/path"})
	decodeProblem(t, rec, http.StatusNotFound, codeNotFound)

	rec = env.do(t, request{method: http.MethodDelete, target: "/t/vehicles/VIN1"})
	decodeProblem(t, rec, http.StatusMethodNotAllowed, codeMethodNotAllowed)
	if allow := rec.Header().Get("Allow"); !strings.Contains(allow, http.MethodGet) {
		t.Errorf("Allow = %q, want it to list GET", allow)
	}

	rec = env.do(t, request{method: http.MethodHead, target: "/no/such/path"})
	if rec.Code != http.StatusNotFound || rec.Body.Len() != 0 {
		t.Errorf("HEAD 404: status %d, body %q; want 404 without body", rec.Code, rec.Body)
	}
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	env.srv.Echo().POST("/t/bind", func(c echo.Context) error {
		var v map[string]any
		if err := Bind(c, &v); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
	big := bytes.Repeat([]byte("a"), int(DefaultBodyLimit)+1)

	t.Run("announced by Content-Length", func(t *testing.T) {
		rec := env.do(t, request{method: http.MethodPost, target: "/t/bind", body: bytes.NewReader(big),
			header: map[string]string{"Content-Type": "application/json"}})
		decodeProblem(t, rec, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	})
	t.Run("found while reading a chunked body", func(t *testing.T) {
		rec := env.do(t, request{method: http.MethodPost, target: "/t/bind", body: io.MultiReader(bytes.NewReader(big)),
			header: map[string]string{"Content-Type": "application/json"}})
		decodeProblem(t, rec, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	})
	t.Run("configured limit", func(t *testing.T) {
		small := newEnv(t, withConfig(func(c *Config) { c.BodyLimit = 10 }))
		small.srv.Echo().POST("/t/bind", func(c echo.Context) error {
			var v map[string]any
			return Bind(c, &v)
		})
		rec := small.do(t, jsonRequest(http.MethodPost, "/t/bind", `{"a":"0123456789"}`))
		decodeProblem(t, rec, http.StatusRequestEntityTooLarge, codeBodyTooLarge)
	})
}

func TestPanicBecomesInternalProblem(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	rec := env.do(t, request{method: http.MethodGet, target: "/t/panic"})
	p := decodeProblem(t, rec, http.StatusInternalServerError, codeInternal)
	if strings.Contains(p.Detail, "probe panic") {
		t.Errorf("detail leaks the panic: %q", p.Detail)
	}
	var found bool
	for _, l := range env.logs.lines(t) {
		if l["msg"] == "request failed" && l["request_id"] == p.RequestID {
			found = true
			if !strings.Contains(fmt.Sprint(l["error"]), "probe panic") {
				t.Errorf("log error = %v, want the panic value", l["error"])
			}
			if !strings.Contains(fmt.Sprint(l["stack"]), "recoverPanic") {
				t.Errorf("log has no stack: %v", l["stack"])
			}
		}
	}
	if !found {
		t.Fatalf("no error log line with request id %s:\n%s", p.RequestID, env.logs)
	}
}

func TestInternalErrorIsLoggedNotShown(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	rec := env.do(t, request{method: http.MethodGet, target: "/t/internal"})
	p := decodeProblem(t, rec, http.StatusInternalServerError, codeInternal)
	if strings.Contains(rec.Body.String(), "10.0.0.7") {
		t.Errorf("answer leaks the error: %s", rec.Body)
	}
	logs := env.logs.String()
	if !strings.Contains(logs, "10.0.0.7") || !strings.Contains(logs, p.RequestID) {
		t.Errorf("log lacks the error or the request id:\n%s", logs)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	get := func(id string) string {
		h := map[string]string{}
		if id != "" {
			h[HeaderRequestID] = id
		}
		return env.do(t, request{method: http.MethodGet, target: "/t/vehicles/V", header: h}).Header().Get(HeaderRequestID)
	}

	if got := get("abc.DEF_123-x"); got != "abc.DEF_123-x" {
		t.Errorf("valid client id not echoed: %q", got)
	}
	if got := get(strings.Repeat("a", 128)); got != strings.Repeat("a", 128) {
		t.Errorf("128-character id not echoed: %q", got)
	}
	generated := map[string]bool{}
	for _, bad := range []string{"", strings.Repeat("a", 129), "has space", "semi;colon", "ünicode", "new\nline"} {
		got := get(bad)
		if got == "" || got == bad || !validRequestID(got) {
			t.Errorf("id for %q = %q, want a fresh safe one", bad, got)
		}
		if generated[got] {
			t.Errorf("generated id %q twice", got)
		}
		generated[got] = true
	}
}

func TestAccessLogHoldsNoSecrets(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	env.srv.Echo().POST("/t/login", func(c echo.Context) error {
		var v struct {
			Password string `json:"password"`
		}
		if err := Bind(c, &v); err != nil {
			return err
		}
		return c.NoContent(http.StatusNoContent)
	})
	rec := env.do(t, jsonRequest(http.MethodPost, "/t/login?access_token=query-secret",
		`{"password":"body-secret"}`, "Authorization", "Bearer header-secret", HeaderRequestID, "req-1"))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	logs := env.logs.String()
	for _, secret := range []string{"query-secret", "body-secret", "header-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
	var line map[string]any
	for _, l := range env.logs.lines(t) {
		if l["msg"] == "http request" && l["request_id"] == "req-1" {
			line = l
		}
	}
	if line == nil {
		t.Fatalf("no access log line:\n%s", logs)
	}
	want := map[string]any{"method": "POST", "route": "/t/login", "status": float64(204), "bytes": float64(0)}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration_ms"]; !ok {
		t.Errorf("access log lacks duration_ms: %v", line)
	}
}

func TestRequireAdmin(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, configured, auth string
		want                   int
	}{
		{"right token", "admin-secret", "Bearer admin-secret", http.StatusNoContent},
		{"scheme is case-insensitive", "admin-secret", "bearer admin-secret", http.StatusNoContent},
		{"wrong token", "admin-secret", "Bearer admin-secreT", http.StatusUnauthorized},
		{"prefix of the token", "admin-secret", "Bearer admin", http.StatusUnauthorized},
		{"basic scheme", "admin-secret", "Basic admin-secret", http.StatusUnauthorized},
		{"no header", "admin-secret", "", http.StatusUnauthorized},
		{"no token configured", "", "Bearer ", http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := newEnv(t, withConfig(func(c *Config) { c.AdminToken = tt.configured }))
			env.srv.Echo().Group("/v1/admin", env.srv.RequireAdmin).GET("/ping", func(c echo.Context) error {
				return c.NoContent(http.StatusNoContent)
			})
			h := map[string]string{}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			rec := env.do(t, request{method: http.MethodGet, target: "/v1/admin/ping", header: h})
			if tt.want == http.StatusUnauthorized {
				decodeProblem(t, rec, http.StatusUnauthorized, codeAdminTokenInvalid)
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("401 without WWW-Authenticate")
				}
				return
			}
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
		})
	}
}

func TestRunServesAndShutsDown(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	addrs := make(chan net.Addr, 1)
	env.srv.onListen = func(a net.Addr) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- env.srv.Run(ctx) }()

	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatalf("Run returned before listening: %v", err)
	}
	res, err := http.Get("http://" + addr.String() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("healthz = %d %s", res.StatusCode, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if !strings.Contains(env.logs.String(), `"url":"http://`+addr.String()+`"`) {
		t.Errorf("Run did not log its URL:\n%s", env.logs)
	}
}

func TestRunReportsListenError(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withConfig(func(c *Config) { c.Addr = "256.0.0.1:1" }))
	if err := env.srv.Run(context.Background()); err == nil {
		t.Fatal("Run on an impossible address returned nil")
	}
}

func TestServeURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"[::]:8080":      "http://localhost:8080",
		"0.0.0.0:80":     "http://localhost:80",
		"127.0.0.1:9000": "http://127.0.0.1:9000",
	} {
		addr, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := serveURL(addr); got != want {
			t.Errorf("serveURL(%s) = %s, want %s", in, got, want)
		}
	}
}
