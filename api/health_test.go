package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHealthz(t *testing.T) {
	t.Parallel()
	env := newEnv(t, withReady(ReadyCheck{Name: "db", Check: func(context.Context) error { return errors.New("down") }}))
	rec := env.do(t, request{method: http.MethodGet, target: "/healthz"})
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Fatalf("healthz = %d %s; liveness must not depend on readiness checks", rec.Code, rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	ok := ReadyCheck{Name: "database", Check: func(context.Context) error { return nil }}

	t.Run("all pass", func(t *testing.T) {
		env := newEnv(t, withDB(t))
		env.srv.ready = []ReadyCheck{ok, PoolCheck("pool", env.pool)}
		rec := env.do(t, request{method: http.MethodGet, target: "/readyz"})
		var got readyResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusOK || got.Status != "ready" || got.Checks["database"] != "ok" || got.Checks["pool"] != "ok" {
			t.Fatalf("readyz = %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("no checks", func(t *testing.T) {
		env := newEnv(t)
		rec := env.do(t, request{method: http.MethodGet, target: "/readyz"})
		if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"status":"ready","checks":{}}` {
			t.Fatalf("readyz = %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("one fails", func(t *testing.T) {
		env := newEnv(t, withReady(ok,
			ReadyCheck{Name: "eventstore", Check: func(context.Context) error { return errors.New("connection refused") }},
			ReadyCheck{Name: "migrations", Check: func(context.Context) error { panic("boom") }},
		))
		rec := env.do(t, request{method: http.MethodGet, target: "/readyz"})
		var got readyResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusServiceUnavailable || got.Status != "unavailable" {
			t.Fatalf("readyz = %d %s", rec.Code, rec.Body)
		}
		if got.Checks["database"] != "ok" || got.Checks["eventstore"] != "connection refused" ||
			!strings.Contains(got.Checks["migrations"], "panicked") {
			t.Errorf("checks = %v", got.Checks)
		}
	})

	t.Run("a check gets a deadline", func(t *testing.T) {
		env := newEnv(t, withReady(ReadyCheck{Name: "slow", Check: func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("no deadline")
			}
			return nil
		}}))
		rec := env.do(t, request{method: http.MethodGet, target: "/readyz"})
		if rec.Code != http.StatusOK {
			t.Fatalf("readyz = %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("a check that outlives its context fails", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		err := runCheck(canceledContext(), ReadyCheck{Name: "stuck", Check: func(context.Context) error {
			<-release // ignores its context
			return nil
		}})
		if !errors.Is(err, errCheckTimeout) {
			t.Fatalf("runCheck = %v, want a timeout", err)
		}
	})
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	registerProbeRoutes(env.srv)
	for _, vin := range []string{"VIN1", "VIN2"} {
		if rec := env.do(t, request{method: http.MethodGet, target: "/t/vehicles/" + vin}); rec.Code != http.StatusOK {
			t.Fatalf("GET vehicle: %d", rec.Code)
		}
	}
	env.do(t, request{method: http.MethodGet, target: "/no/such/" + "path"})
	env.do(t, request{method: http.MethodDelete, target: "/t/vehicles/VIN1"})
	env.do(t, request{method: "BREW", target: "/t/vehicles/VIN1"})

	rec := env.do(t, request{method: http.MethodGet, target: "/metrics"})
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics = %d", rec.Code)
	}
	text := rec.Body.String()
	for _, want := range []string{
		`ledger_http_request_duration_seconds_bucket{method="GET",route="/t/vehicles/:vin",status="200",le="+Inf"} 2`,
		`ledger_http_request_duration_seconds_count{method="GET",route="/t/vehicles/:vin",status="200"} 2`,
		`ledger_http_requests_total{method="GET",route="/t/vehicles/:vin",status="200"} 2`,
		`ledger_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`ledger_http_requests_total{method="DELETE",route="unmatched",status="405"} 1`,
		`ledger_http_requests_total{method="OTHER",route="unmatched",status="405"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s\n%s", want, text)
		}
	}
	for _, leak := range []string{"VIN1", "/no/such", "BREW"} {
		if strings.Contains(text, leak) {
			t.Errorf("metrics contain %q", leak)
		}
	}
}

func TestMetricsShareARegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.DiscardHandler)
	a := New(Config{}, Deps{Registry: reg, Logger: quiet})
	b := New(Config{}, Deps{Registry: reg, Logger: quiet})
	if a.metrics.total != b.metrics.total {
		t.Fatal("second server on the same registry did not reuse the collectors")
	}
}
