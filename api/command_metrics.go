package api

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentledger/ledger/domain"
)

// Command outcomes: ledger_command_outcomes_total{command, outcome} counts
// every command the JSON API and the SDK gateway ran, by its type and how
// it ended: "ok", or the kind of its error (invalid, unauthenticated,
// forbidden, not_found, conflict, too_many_attempts, unavailable), or
// "error" for anything unexpected (a 500).
//
// The command type of a REST command is its method and route template
// ("POST /v1/vehicles/:vin/services"); of an SDK call, the gateway and the
// api ("/pims/set pims.authentication.enrollment"), whose domain failures
// answer HTTP 200 and are counted by kind all the same. Reads (GET and
// POST /oauth2/introspect) are not commands. Neither are the HTML forms
// (the consent prompt, the portal, the admin page), which answer a refusal
// with a page rather than a status; the admin page's rebuild buttons are
// counted where they land, as POST /v1/admin/projections/:name/rebuild. An
// answer replayed for a retried Idempotency-Key ran no command and is not
// counted again.

const ctxKeyCommandOutcome = "ledger.commandOutcome"

type commandOutcome struct {
	command string
	err     error
}

func newCommandOutcomes(reg prometheus.Registerer) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ledger_command_outcomes_total",
		Help: "Commands run, by command type and outcome (ok or the error kind).",
	}, []string{"command", "outcome"}))
}

// notCommands are routes that take POST without running a command, or that
// answer refusals with an HTML page.
var notCommands = map[string]bool{
	"/oauth2/introspect": true,
	"/oauth2/prompt":     true,
	"/account/apps":      true,
}

// countOutcomes records the outcome of each command request on outcomes
// once the route has answered.
func countOutcomes(outcomes *prometheus.CounterVec) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			err := next(c)
			switch c.Request().Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			default:
				return err
			}
			route := c.Path()
			if unmatched(c) || notCommands[route] || route == "/admin" || strings.HasPrefix(route, "/admin/") {
				return err
			}
			command, cause := c.Request().Method+" "+route, err
			if o, ok := c.Get(ctxKeyCommandOutcome).(commandOutcome); ok {
				command = o.command
				if err == nil {
					cause = o.err
				}
			}
			outcomes.WithLabelValues(command, outcomeOf(c, cause)).Inc()
			return err
		}
	}
}

// setCommandOutcome names the command a route ran and how it ended, for a
// route that answers failures without returning them (the SDK gateway).
func setCommandOutcome(c echo.Context, command string, err error) {
	c.Set(ctxKeyCommandOutcome, commandOutcome{command: command, err: err})
}

var kindOfStatus = func() map[int]string {
	m := map[int]string{}
	for kind, status := range statusOfKind {
		m[status] = string(kind)
	}
	return m
}()

// outcomeOf is "ok", the error's kind, or, for an answer written without an
// error (the OAuth2 endpoints write RFC 6749 errors themselves), the kind
// its status stands for.
func outcomeOf(c echo.Context, err error) string {
	if err == nil {
		status := c.Response().Status
		switch {
		case status < 400:
			return "ok"
		case status >= 500:
			return "error"
		case kindOfStatus[status] != "":
			return kindOfStatus[status]
		default:
			return string(domain.KindInvalid)
		}
	}
	if kind := domain.KindOf(err); kind != "" {
		if _, known := statusOfKind[kind]; known {
			return string(kind)
		}
		return "error"
	}
	p := resolve(err)
	if p.status < 500 && kindOfStatus[p.status] != "" {
		return kindOfStatus[p.status]
	}
	if p.status == http.StatusServiceUnavailable {
		return string(domain.KindUnavailable)
	}
	if p.status >= 500 {
		return "error"
	}
	return string(domain.KindInvalid)
}

// sdkCommand is the command type of an SDK call; apis the gateway does not
// know share one, so callers cannot invent series.
func sdkCommand(gateway, api string, known bool) string {
	if !known {
		api = "unknown"
	}
	return gateway + " " + api
}
