package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyTimeout bounds each readiness check, so one hanging dependency makes
// /readyz answer 503 in time for the orchestrator's probe instead of never.
const ReadyTimeout = 2 * time.Second

// readyResponse is the body of /readyz. Checks maps each check name to "ok"
// or to the failure message.
type readyResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// PoolCheck is a ReadyCheck that pings the database.
func PoolCheck(name string, pool *pgxpool.Pool) ReadyCheck {
	return ReadyCheck{Name: name, Check: func(ctx context.Context) error {
		if err := pool.Ping(ctx); err != nil {
			return fmt.Errorf("ping: %w", err)
		}
		return nil
	}}
}

func (s *Server) registerHealth() {
	s.echo.GET("/healthz", healthz)
	s.echo.GET("/readyz", s.readyz)
	s.echo.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		Registry:          s.registry, // also counts scrape errors
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		EnableOpenMetrics: true,
	})))
}

// healthz answers 200 while the process can serve HTTP at all. It checks no
// dependency: a database outage must not make the orchestrator restart every
// instance; that is what /readyz is for.
func healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz runs every ReadyCheck concurrently, each under ReadyTimeout, and
// answers 200 {"status":"ready"} when all pass, else 503
// {"status":"unavailable"}; checks maps each name to "ok" or its failure
// message. A check that ignores its context is abandoned at the timeout and
// reported as timed out; a check that panics is reported as failed.
func (s *Server) readyz(c echo.Context) error {
	results := make(map[string]string, len(s.ready))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, rc := range s.ready {
		wg.Go(func() {
			err := runCheck(c.Request().Context(), rc)
			msg := "ok"
			if err != nil {
				msg = err.Error()
				s.log.Warn("readiness check failed",
					slog.String("request_id", RequestID(c)),
					slog.String("check", rc.Name),
					slog.String("error", msg))
			}
			mu.Lock()
			results[rc.Name] = msg
			mu.Unlock()
		})
	}
	wg.Wait()

	for _, msg := range results {
		if msg != "ok" {
			return c.JSON(http.StatusServiceUnavailable, readyResponse{Status: "unavailable", Checks: results})
		}
	}
	return c.JSON(http.StatusOK, readyResponse{Status: "ready", Checks: results})
}

var errCheckTimeout = errors.New("timed out")

// runCheck runs one check under ReadyTimeout. The check runs in its own
// goroutine so that one ignoring its context cannot hold /readyz past the
// timeout; it is left to finish on its own.
func runCheck(parent context.Context, rc ReadyCheck) error {
	ctx, cancel := context.WithTimeout(parent, ReadyTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("check panicked: %v", r)
			}
		}()
		done <- rc.Check(ctx)
	}()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("%w after %s: %w", errCheckTimeout, ReadyTimeout, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w after %s", errCheckTimeout, ReadyTimeout)
	}
}
