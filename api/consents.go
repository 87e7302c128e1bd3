package api

import (
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
)

func (h *handlers) mountConsents(user, admin *echo.Group) {
	admin.POST("/clients", h.registerClient)
	admin.POST("/clients/:clientId/secret", h.rotateClientSecret)
	user.GET("/v1/me/consents", h.myConsents)
	user.DELETE("/v1/me/consents/:clientId", h.revokeMyConsent)
}

type clientRequest struct {
	Name            string   `json:"name"`
	RedirectURIs    []string `json:"redirectUris"`
	Scopes          []string `json:"scopes"`
	GrantTypes      []string `json:"grantTypes"`
	ImplicitAllowed bool     `json:"implicitAllowed"`
	Public          bool     `json:"public"`
	WebhookURL      string   `json:"webhookUrl"`
}

// registerClient answers the client secret once; only its hash is kept.
func (h *handlers) registerClient(c echo.Context) error {
	var req clientRequest
	if err := Bind(c, &req); err != nil {
		return err
	}
	id, secret, err := h.Commands.RegisterClient(c.Request().Context(), commands.RegisterClient(req))
	if err != nil {
		return err
	}
	out := map[string]any{"clientId": id, "name": req.Name, "redirectUris": req.RedirectURIs, "scopes": req.Scopes,
		"public": req.Public, "implicitAllowed": req.ImplicitAllowed, "webhookUrl": req.WebhookURL}
	if secret != "" {
		out["clientSecret"] = secret
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusCreated, out)
}

func (h *handlers) rotateClientSecret(c echo.Context) error {
	id, err := uuid.Parse(c.Param("clientId"))
	if err != nil {
		return consent.ErrUnknownClient
	}
	secret, err := h.Commands.RotateClientSecret(c.Request().Context(), id)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, map[string]any{"clientId": id, "clientSecret": secret})
}

type consentView struct {
	ClientID      uuid.UUID  `json:"clientId"`
	ClientName    string     `json:"clientName"`
	Status        string     `json:"status"`
	Scopes        []string   `json:"scopes"`
	VINs          []string   `json:"vins"`
	NoticeVersion string     `json:"noticeVersion"`
	GrantedAt     *time.Time `json:"grantedAt,omitempty"`
	RevokedAt     *time.Time `json:"revokedAt,omitempty"`
}

// myConsents lists the account's answers to partners, from the consents
// read model (commands wait for it, so a revocation shows at once).
func (h *handlers) myConsents(c echo.Context) error {
	rows, err := h.Pool.Query(c.Request().Context(), `
		SELECT g.client_id, coalesce(cl.name, ''), g.status, g.scopes, g.vins, g.notice_version, g.granted_at, g.revoked_at
		FROM consents g LEFT JOIN clients cl ON cl.client_id = g.client_id
		WHERE g.account_id = $1 ORDER BY cl.name, g.client_id`, session(c).AccountID())
	if err != nil {
		return err
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (consentView, error) {
		var v consentView
		return v, r.Scan(&v.ClientID, &v.ClientName, &v.Status, &v.Scopes, &v.VINs, &v.NoticeVersion, &v.GrantedAt, &v.RevokedAt)
	})
	if err != nil {
		return err
	}
	if list == nil {
		list = []consentView{}
	}
	return c.JSON(http.StatusOK, map[string]any{"consents": list})
}

// revokeMyConsent is RevokeAccess by the user.
func (h *handlers) revokeMyConsent(c echo.Context) error {
	id, err := uuid.Parse(c.Param("clientId"))
	if err != nil {
		return consent.ErrNoGrant
	}
	if err := h.Commands.RevokeAccess(c.Request().Context(), session(c).AccountID(), id, "user"); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
