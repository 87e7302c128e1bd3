package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// App is what the ledger's routes call, wired by hand in cmd/.
type App struct {
	Commands  *commands.Handler
	Pool      *pgxpool.Pool // read models
	Store     eventstore.Store
	Runner    *projections.Runner
	DevOutbox *commands.MemoryOutbox // dev mode only
	// Authorize is the OAuth2 protocol the consent prompt answers through;
	// nil serves no prompt.
	Authorize AuthorizeProtocol
}

type handlers struct {
	App
	server    *Server
	authorize AuthorizeProtocol
}

// Mount registers the ledger's routes on s.
func Mount(s *Server, app App) {
	h := &handlers{App: app, server: s}
	e := s.Echo()
	e.Use(h.commandMeta, countOutcomes(newCommandOutcomes(s.registry)))

	e.POST("/v1/accounts", h.register)
	e.POST("/v1/accounts/activate", h.activate)
	e.POST("/v1/sessions", h.openSession)

	user := e.Group("", h.requireSession)
	user.DELETE("/v1/sessions/current", h.closeSession)
	user.GET("/v1/me", h.me)

	admin := e.Group("/v1/admin", s.RequireAdmin)
	admin.GET("/projections", h.listProjections)
	admin.POST("/projections/:name/rebuild", h.rebuildProjection)

	h.mountSDK()
	h.mountVehicles(user, admin)
	h.mountConsents(user, admin)
	h.mountPortal()
	h.mountDocs()
	h.mountAdminPage()
	if app.Authorize != nil {
		h.authorize = app.Authorize
		h.mountPrompt()
	}
	h.mountPartner(h.mountOAuth())

	if s.Config().Dev && app.DevOutbox != nil {
		e.GET("/v1/dev/outbox", h.devOutbox)
	}
}

// commandMeta gives every command its causal context: the request id
// correlates, the Idempotency-Key's scope (caller, route, path, key and
// body, derived once by the idempotency middleware) makes event ids
// retry-stable, and the actor is refined once the caller is authenticated.
func (h *handlers) commandMeta(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		m := commands.Meta{CorrelationID: RequestID(c), CausationID: RequestID(c), Actor: "anonymous"}
		if scope := idempotencyScope(c); scope != "" {
			m.IdempotencyKey = scope
			m.CausationID = "idempotency:" + scope[:16]
		}
		if strings.HasPrefix(c.Path(), "/v1/admin/") {
			m.Actor = "admin"
		}
		c.SetRequest(req.WithContext(commands.WithMeta(req.Context(), m)))
		return next(c)
	}
}

const sessionKey = "ledger.session"

// requireSession authenticates "Authorization: Bearer <sessionToken>" by
// reading the session's stream (a logout takes effect at once) and checks
// X-Device-Id against the device the session was opened on.
func (h *handlers) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, ok := bearerToken(c.Request())
		if !ok {
			return account.ErrInvalidSession
		}
		s, err := h.Commands.Authenticate(c.Request().Context(), token)
		if err != nil {
			return err
		}
		if device := c.Request().Header.Get("X-Device-Id"); device != s.DeviceID() {
			return Problem(http.StatusUnauthorized, "device_mismatch", "X-Device-Id must name the device the session was opened on")
		}
		c.Set(sessionKey, s)
		ctx := commands.WithActor(c.Request().Context(), "account:"+s.AccountID().String())
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

func session(c echo.Context) *account.Session { return c.Get(sessionKey).(*account.Session) }

type registerRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

func (h *handlers) register(c echo.Context) error {
	var req registerRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	res, err := h.Commands.RegisterAccount(c.Request().Context(), commands.RegisterAccount{Email: req.Email, Password: req.Password})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/me")
	return c.JSON(http.StatusCreated, map[string]any{"accountId": res.AccountID, "status": res.Status})
}

func (h *handlers) activate(c echo.Context) error {
	var req struct {
		Token string `json:"token"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	id, err := h.Commands.ActivateAccount(c.Request().Context(), commands.ActivateAccount{Token: req.Token})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"accountId": id, "status": "active"})
}

func (h *handlers) openSession(c echo.Context) error {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		DeviceID string `json:"deviceId"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	res, err := h.Commands.OpenSession(c.Request().Context(), commands.OpenSession{Email: req.Email, Password: req.Password, DeviceID: req.DeviceID})
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, map[string]any{"sessionToken": res.SessionToken, "accountId": res.AccountID})
}

func (h *handlers) closeSession(c echo.Context) error {
	if err := h.Commands.CloseSession(c.Request().Context(), session(c).ID()); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// me answers from the accounts read model; commands wait for it before they
// return, so it reflects the caller's own last write.
func (h *handlers) me(c echo.Context) error {
	var out struct {
		AccountID   string     `json:"accountId"`
		Email       string     `json:"email"`
		Status      string     `json:"status"`
		CreatedAt   time.Time  `json:"createdAt"`
		ActivatedAt *time.Time `json:"activatedAt,omitempty"`
		// ProvisionedBy is the partner client that created the account.
		ProvisionedBy *string `json:"provisionedBy,omitempty"`
	}
	err := h.Pool.QueryRow(c.Request().Context(), `
		SELECT account_id::text, email, status, created_at, activated_at, provisioned_by::text FROM accounts WHERE account_id = $1`,
		session(c).AccountID()).Scan(&out.AccountID, &out.Email, &out.Status, &out.CreatedAt, &out.ActivatedAt, &out.ProvisionedBy)
	if err != nil {
		return unavailable("the account read model is not ready", err)
	}
	return c.JSON(http.StatusOK, out)
}

func (h *handlers) devOutbox(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"messages": h.DevOutbox.List(c.QueryParam("to"))})
}

func (h *handlers) projectionNames() []string {
	var names []string
	for _, p := range h.Runner.Projections() {
		names = append(names, p.Name())
	}
	return names
}

func (h *handlers) listProjections(c echo.Context) error {
	st, err := projections.ListStatus(c.Request().Context(), h.Pool, h.Store, h.projectionNames())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"projections": st})
}

// rebuildProjection starts a rebuild in the background: 202 at once, 409
// while one of the same projection runs. Progress shows in the list.
func (h *handlers) rebuildProjection(c echo.Context) error {
	name := c.Param("name")
	var p projections.Projection
	for _, candidate := range h.Runner.Projections() {
		if candidate.Name() == name {
			p = candidate
		}
	}
	if p == nil {
		return Problem(http.StatusNotFound, "unknown_projection", "no projection is named "+name)
	}
	// The rebuild lock is taken before answering, so a second request on
	// any instance gets its 409 at once.
	job, err := projections.BeginRebuild(c.Request().Context(), h.Pool, h.Store, p)
	if errors.Is(err, projections.ErrRebuildInProgress) {
		return Problem(http.StatusConflict, "rebuild_in_progress", "a rebuild of "+name+" is already running")
	}
	if err != nil {
		return err
	}
	ctx := context.WithoutCancel(c.Request().Context())
	go func() {
		if err := job.Run(ctx, nil); err != nil {
			h.server.log.Error("rebuild failed", "projection", name, "error", err)
			return
		}
		h.server.log.Info("rebuild done", "projection", name)
	}()
	return c.JSON(http.StatusAccepted, map[string]any{"projection": name, "state": "rebuilding"})
}
