package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines decodes the JSON log lines.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

type testEnv struct {
	srv  *Server
	pool *pgxpool.Pool
	logs *syncBuffer
	reg  *prometheus.Registry
}

type envOption func(*Config, *Deps)

func withDB(t *testing.T) envOption {
	return func(_ *Config, d *Deps) { d.Pool = dbtest.Pool(t) }
}

func withReady(checks ...ReadyCheck) envOption {
	return func(_ *Config, d *Deps) { d.Ready = checks }
}

func withConfig(f func(*Config)) envOption {
	return func(c *Config, _ *Deps) { f(c) }
}

func newEnv(t *testing.T, opts ...envOption) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	cfg := Config{Addr: "127.0.0.1:0"}
	deps := Deps{
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(),
	}
	for _, o := range opts {
		o(&cfg, &deps)
	}
	return &testEnv{srv: New(cfg, deps), pool: deps.Pool, logs: logs, reg: deps.Registry}
}

type request struct {
	method  string
	target  string
	body    io.Reader
	header  map[string]string
	headers http.Header // for repeated values
	ctx     context.Context
}

func (e *testEnv) do(t *testing.T, r request) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(r.method, r.target, r.body)
	if r.ctx != nil {
		req = req.WithContext(r.ctx)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	for k, vs := range r.headers {
		req.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec
}

func jsonRequest(method, target, body string, header ...string) request {
	h := map[string]string{"Content-Type": "application/json"}
	for i := 0; i+1 < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	return request{method: method, target: target, body: strings.NewReader(body), header: h}
}

// decodeProblem checks the problem+json envelope and returns it.
func decodeProblem(t *testing.T, rec *httptest.ResponseRecorder, wantStatus int, wantCode string) ProblemDetails {
	t.Helper()
	if rec.Code != wantStatus {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, wantStatus, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != ContentTypeProblem {
		t.Fatalf("Content-Type = %q, want %q", ct, ContentTypeProblem)
	}
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
	}
	for _, field := range []string{"type", "title", "status", "detail", "code", "requestId"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("problem lacks %q: %s", field, rec.Body)
		}
	}
	var p ProblemDetails
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("decode problem: %v", err)
	}
	if p.Status != wantStatus || p.Code != wantCode {
		t.Fatalf("problem status/code = %d/%q, want %d/%q; body %s", p.Status, p.Code, wantStatus, wantCode, rec.Body)
	}
	if p.Type != "/problems/"+wantCode {
		t.Errorf("type = %q, want %q", p.Type, "/problems/"+wantCode)
	}
	if p.Title != http.StatusText(wantStatus) {
		t.Errorf("title = %q, want %q", p.Title, http.StatusText(wantStatus))
	}
	if p.Detail == "" {
		t.Errorf("detail is empty")
	}
	if p.RequestID == "" || p.RequestID != rec.Header().Get(HeaderRequestID) {
		t.Errorf("requestId = %q, X-Request-Id = %q", p.RequestID, rec.Header().Get(HeaderRequestID))
	}
	return p
}
