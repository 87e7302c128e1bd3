package api

import (
	"errors"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/audit"
)

const auditorKey = "ledger.auditor"

// mountAuditors registers the admin routes that issue and revoke auditor
// keys, and returns the /v1/audit group every auditor route hangs on.
func (h *handlers) mountAuditors(admin *echo.Group) *echo.Group {
	admin.POST("/auditors", h.issueAuditor)
	admin.DELETE("/auditors/:auditorId", h.revokeAuditor)
	return h.server.Echo().Group("/v1/audit", h.RequireAuditor)
}

// RequireAuditor guards /v1/audit/*: the caller must send "Authorization:
// Bearer aud_<id>.<secret>", checked against the auditor's stream (a
// revocation takes effect at once) in constant time. Every other credential
// (the admin token, a user session, a partner access token) is refused with
// 401 auditor_key_invalid: none of them can read a subject's history.
func (h *handlers) RequireAuditor(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		token, _ := bearerToken(c.Request())
		a, err := h.Commands.AuthenticateAuditor(c.Request().Context(), token)
		if err != nil {
			if errors.Is(err, audit.ErrInvalidKey) {
				return &problemError{
					status: http.StatusUnauthorized,
					code:   audit.ErrInvalidKey.Code,
					detail: "This endpoint needs an auditor key issued by an admin.",
					header: http.Header{"Www-Authenticate": {`Bearer realm="ledger-audit"`}},
				}
			}
			return err
		}
		c.Set(auditorKey, a)
		ctx := commands.WithActor(c.Request().Context(), "auditor:"+a.ID().String())
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// issueAuditor answers the key once; only its hash is kept.
func (h *handlers) issueAuditor(c echo.Context) error {
	var req struct {
		Name string `json:"name"`
	}
	if err := Bind(c, &req); err != nil {
		return err
	}
	id, key, err := h.Commands.IssueAuditorKey(c.Request().Context(), req.Name)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, map[string]any{"auditorId": id, "name": req.Name, "key": key})
}

func (h *handlers) revokeAuditor(c echo.Context) error {
	id, err := uuid.Parse(c.Param("auditorId"))
	if err != nil {
		return Problem(http.StatusNotFound, "unknown_auditor", "no auditor has this id")
	}
	if err := h.Commands.RevokeAuditor(c.Request().Context(), id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// mountAudit registers the auditor routes on the /v1/audit group.
func (h *handlers) mountAudit(auditor *echo.Group) {
	auditor.GET("/whoami", h.auditorWhoami)
	h.mountChain(auditor)
	h.mountSecurity(auditor)
}

// auditorWhoami names the auditor a key belongs to, so a key can be tried.
func (h *handlers) auditorWhoami(c echo.Context) error {
	a := c.Get(auditorKey).(*audit.Auditor)
	return c.JSON(http.StatusOK, map[string]any{"auditorId": a.ID(), "name": a.Name()})
}
