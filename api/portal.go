package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"html/template"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/consent"
)

// The end-user portal's page of connected apps: a person signs in in the
// browser, sees which partners they let in, with which scopes and since
// when, and revokes any of them (RevokeAccess). The page is server-rendered
// like the consent prompt; its session is a random id in an HttpOnly,
// SameSite=Strict cookie, and every form carries the session's CSRF value.

const (
	portalCookie = "ledger_portal"
	portalTTL    = 30 * time.Minute
)

type portalSession struct {
	hash    []byte
	csrf    string
	account uuid.UUID
}

func (h *handlers) mountPortal() {
	e := h.server.Echo()
	e.GET("/account/apps", h.portalShow)
	e.POST("/account/apps", h.portalPost)
}

// portalSessionOf finds the browser's session, or starts a signed-out one.
func (h *handlers) portalSessionOf(c echo.Context) (*portalSession, error) {
	ctx := c.Request().Context()
	if cookie, err := c.Cookie(portalCookie); err == nil {
		sum := sha256.Sum256([]byte(cookie.Value))
		s := &portalSession{hash: sum[:]}
		var acct *uuid.UUID
		err := h.Pool.QueryRow(ctx, `SELECT csrf, account_id FROM portal_sessions WHERE session_hash = $1 AND expires_at > now()`,
			s.hash).Scan(&s.csrf, &acct)
		if err == nil {
			if acct != nil {
				s.account = *acct
			}
			return s, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
	}
	id, hash := newFlowID()
	csrf, _ := newFlowID()
	if _, err := h.Pool.Exec(ctx, `INSERT INTO portal_sessions (session_hash, csrf, expires_at) VALUES ($1, $2, now() + $3::interval)`,
		hash, csrf, portalTTL.String()); err != nil {
		return nil, err
	}
	c.SetCookie(&http.Cookie{Name: portalCookie, Value: id, Path: "/account", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https", MaxAge: int(portalTTL.Seconds())})
	return &portalSession{hash: hash, csrf: csrf}, nil
}

type portalApp struct {
	ClientID  uuid.UUID
	Client    string
	Status    string
	Scopes    []string
	GrantedAt *time.Time
	RevokedAt *time.Time
}

type portalPage struct {
	CSRF     string
	SignedIn bool
	Error    string
	Notice   string
	Email    string
	Apps     []portalApp
}

func (h *handlers) portalShow(c echo.Context) error {
	s, err := h.portalSessionOf(c)
	if err != nil {
		return err
	}
	return h.portalRender(c, s, portalPage{})
}

func (h *handlers) portalPost(c echo.Context) error {
	s, err := h.portalSessionOf(c)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(c.FormValue("csrf")), []byte(s.csrf)) != 1 {
		c.Response().Status = http.StatusForbidden
		return h.portalRender(c, s, portalPage{Error: "This form has expired: try again."})
	}
	ctx := c.Request().Context()
	switch c.FormValue("action") {
	case "signin":
		id, err := h.Commands.SignInToPrompt(ctx, c.FormValue("email"), c.FormValue("password"))
		if err != nil {
			if domain.KindOf(err) == "" || domain.KindOf(err) == domain.KindUnavailable {
				return err
			}
			noteFailedSecret(c, domainCode(err))
			return h.portalRender(c, s, portalPage{Error: message(err), Email: c.FormValue("email")})
		}
		if _, err := h.Pool.Exec(ctx, `UPDATE portal_sessions SET account_id = $2 WHERE session_hash = $1`, s.hash, id); err != nil {
			return err
		}
	case "revoke":
		if s.account == uuid.Nil {
			break
		}
		client, err := uuid.Parse(c.FormValue("clientId"))
		if err != nil {
			return h.portalRender(c, s, portalPage{Error: message(consent.ErrNoGrant)})
		}
		if err := h.Commands.RevokeAccess(ctx, s.account, client, "user"); err != nil {
			if domain.KindOf(err) == "" || domain.KindOf(err) == domain.KindUnavailable {
				return err
			}
			return h.portalRender(c, s, portalPage{Error: message(err)})
		}
	case "signout":
		if _, err := h.Pool.Exec(ctx, `DELETE FROM portal_sessions WHERE session_hash = $1`, s.hash); err != nil {
			return err
		}
		c.SetCookie(&http.Cookie{Name: portalCookie, Value: "", Path: "/account", MaxAge: -1, HttpOnly: true})
	}
	// Post/redirect/get: a reload never repeats a revocation.
	return c.Redirect(http.StatusSeeOther, "/account/apps")
}

func (h *handlers) portalApps(ctx context.Context, account uuid.UUID) ([]portalApp, error) {
	rows, err := h.Pool.Query(ctx, `
		SELECT g.client_id, coalesce(cl.name, ''), g.status, g.scopes, g.granted_at, g.revoked_at
		FROM consents g LEFT JOIN clients cl ON cl.client_id = g.client_id
		WHERE g.account_id = $1 AND g.status <> 'denied' ORDER BY g.status = 'granted' DESC, cl.name`, account)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (portalApp, error) {
		var a portalApp
		var scopes []string
		err := r.Scan(&a.ClientID, &a.Client, &a.Status, &scopes, &a.GrantedAt, &a.RevokedAt)
		for _, sc := range scopes {
			a.Scopes = append(a.Scopes, scopeWords[sc])
		}
		return a, err
	})
}

func (h *handlers) portalRender(c echo.Context, s *portalSession, p portalPage) error {
	p.CSRF, p.SignedIn = s.csrf, s.account != uuid.Nil
	if p.SignedIn {
		apps, err := h.portalApps(c.Request().Context(), s.account)
		if err != nil {
			return err
		}
		p.Apps = apps
	}
	status := c.Response().Status
	if status == 0 || status == http.StatusOK {
		status = http.StatusOK
	}
	return renderPage(c, status, portalTemplate, p)
}

var portalTemplate = template.Must(template.New("portal").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Connected apps</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:32rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.35rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.7rem;font-size:1rem;border:1px solid #8a8f98;border-radius:.4rem}
button{font-size:1rem;padding:.6rem 1rem;border-radius:.4rem;border:0;background:#1f4fd1;color:#fff;min-height:44px}
button.danger{background:#c81e1e}
button.secondary{background:#e3e6eb;color:#1b1d21}
.error{background:#fde8e8;border-left:4px solid #c81e1e;padding:.6rem .8rem}
.app{background:#fff;border:1px solid #d5d9e0;border-radius:.5rem;padding:.8rem 1rem;margin:.8rem 0}
.muted{color:#5b616b}
</style>
</head>
<body>
<main>
<h1>Connected apps</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
{{if not .SignedIn}}
  <p>Sign in to see which apps can access your account and vehicles.</p>
  <form method="post" action="/account/apps">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="signin">
    <label for="email">E-mail</label>
    <input id="email" name="email" type="email" autocomplete="username" required value="{{.Email}}">
    <label for="password">Password</label>
    <input id="password" name="password" type="password" autocomplete="current-password" required>
    <p><button type="submit">Sign in</button></p>
  </form>
{{else}}
  {{if not .Apps}}<p>No app has access to your account.</p>{{end}}
  {{range .Apps}}
  <section class="app" aria-label="{{.Client}}">
    <h2>{{.Client}}</h2>
    {{if eq .Status "granted"}}
      <p class="muted">Access since {{if .GrantedAt}}{{.GrantedAt.Format "2 January 2006"}}{{end}}:</p>
      <ul>{{range .Scopes}}<li>{{.}}</li>{{end}}</ul>
      <form method="post" action="/account/apps">
        <input type="hidden" name="csrf" value="{{$.CSRF}}">
        <input type="hidden" name="action" value="revoke">
        <input type="hidden" name="clientId" value="{{.ClientID}}">
        <button type="submit" class="danger">Revoke access</button>
      </form>
    {{else}}
      <p class="muted">Access revoked{{if .RevokedAt}} on {{.RevokedAt.Format "2 January 2006"}}{{end}}.</p>
    {{end}}
  </section>
  {{end}}
  <form method="post" action="/account/apps">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <input type="hidden" name="action" value="signout">
    <button type="submit" class="secondary">Sign out</button>
  </form>
{{end}}
</main>
</body>
</html>
`))
