package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The admin page: a browser signs in with the admin token once and then
// sees each projection's status and lag, with a rebuild button per
// projection. It is server-rendered and needs no script.
//
// The session is stateless and derived from the admin token: the cookie
// holds an expiry, a random nonce and their HMAC under a key derived from
// the token, so every instance accepts it without shared storage and
// changing LEDGER_ADMIN_TOKEN ends every session at once. The cookie is
// HttpOnly and SameSite=Strict (a page of another site can neither read it
// nor make the browser send it), and every form carries a CSRF value
// derived from the session as well, checked in constant time.
//
// The page is a client of the admin API: it reads GET /v1/admin/projections
// and starts rebuilds through POST /v1/admin/projections/{name}/rebuild, in
// process and with the admin token, so it shows what the API shows and
// follows the API's rules (404 for an unknown projection, 409 while one
// runs) without a second implementation.

const (
	adminCookie     = "ledger_admin"
	adminSessionTTL = 8 * time.Hour
)

func (h *handlers) mountAdminPage() {
	e := h.server.Echo()
	e.GET("/admin", h.adminPage)
	e.POST("/admin/login", h.adminLogin)
	e.POST("/admin/logout", h.adminLogout)
	e.POST("/admin/projections/:name/rebuild", h.adminPageRebuild)
}

// adminSessionKey derives the page's MAC key from the admin token, so the
// token itself never signs anything a browser holds.
func (h *handlers) adminSessionKey() []byte {
	sum := sha256.Sum256([]byte(h.server.cfg.AdminToken))
	mac := hmac.New(sha256.New, sum[:])
	mac.Write([]byte("ledger admin page session v1"))
	return mac.Sum(nil)
}

func (h *handlers) adminMAC(parts ...string) string {
	mac := hmac.New(sha256.New, h.adminSessionKey())
	mac.Write([]byte(strings.Join(parts, "\x00")))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// newAdminSession is "<expiry unix>.<nonce>.<mac>".
func (h *handlers) newAdminSession(now time.Time) string {
	nonce := rand.Text()
	exp := strconv.FormatInt(now.Add(adminSessionTTL).Unix(), 10)
	return exp + "." + nonce + "." + h.adminMAC("session", exp, nonce)
}

// adminSession returns the browser's session cookie when it is genuine and
// unexpired, else "".
func (h *handlers) adminSession(c echo.Context) string {
	if h.server.cfg.AdminToken == "" {
		return ""
	}
	cookie, err := c.Cookie(adminCookie)
	if err != nil {
		return ""
	}
	exp, rest, ok := strings.Cut(cookie.Value, ".")
	nonce, mac, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return ""
	}
	if subtle.ConstantTimeCompare([]byte(mac), []byte(h.adminMAC("session", exp, nonce))) != 1 {
		return ""
	}
	if unix, err := strconv.ParseInt(exp, 10, 64); err != nil || time.Now().Unix() >= unix {
		return ""
	}
	return cookie.Value
}

func (h *handlers) adminCSRF(session string) string { return h.adminMAC("csrf", session) }

// adminFormSession checks a POST of the page: a genuine session, its CSRF
// value, and, when the browser says where the form came from, this origin.
func (h *handlers) adminFormSession(c echo.Context) (string, bool) {
	session := h.adminSession(c)
	if session == "" || !sameOrigin(c) {
		return "", false
	}
	return session, subtle.ConstantTimeCompare([]byte(c.FormValue("csrf")), []byte(h.adminCSRF(session))) == 1
}

// sameOrigin refuses a form whose Origin header names another site. Browsers
// send Origin with every POST; its absence (other clients) is left to the
// CSRF value.
func sameOrigin(c echo.Context) bool {
	origin := c.Request().Header.Get(echo.HeaderOrigin)
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == c.Request().Host
}

func (h *handlers) setAdminCookie(c echo.Context, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: adminCookie, Value: value, Path: "/admin", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https", MaxAge: maxAge})
}

func (h *handlers) adminLogin(c echo.Context) error {
	want := sha256.Sum256([]byte(h.server.cfg.AdminToken))
	got := sha256.Sum256([]byte(c.FormValue("token")))
	if h.server.cfg.AdminToken == "" || !sameOrigin(c) || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return h.adminRender(c, http.StatusUnauthorized, adminPageView{Error: "That is not the admin token."})
	}
	h.setAdminCookie(c, h.newAdminSession(time.Now()), int(adminSessionTTL.Seconds()))
	return c.Redirect(http.StatusSeeOther, "/admin")
}

func (h *handlers) adminLogout(c echo.Context) error {
	if _, ok := h.adminFormSession(c); !ok {
		return h.adminRender(c, http.StatusForbidden, adminPageView{Error: "This form has expired: reload the page."})
	}
	h.setAdminCookie(c, "", -1)
	return c.Redirect(http.StatusSeeOther, "/admin")
}

// adminPageRebuild is a rebuild button: it asks the admin API and comes
// back to the page with the outcome (post/redirect/get, so a reload never
// starts another rebuild).
func (h *handlers) adminPageRebuild(c echo.Context) error {
	if _, ok := h.adminFormSession(c); !ok {
		return h.adminRender(c, http.StatusForbidden, adminPageView{Error: "This form has expired: reload the page."})
	}
	name := c.Param("name")
	status, body, err := h.adminAPI(c, http.MethodPost, "/v1/admin/projections/"+url.PathEscape(name)+"/rebuild")
	if err != nil {
		return err
	}
	q := url.Values{"projection": {name}}
	switch {
	case status < 300:
		q.Set("outcome", "started")
	default:
		var p ProblemDetails
		_ = json.Unmarshal(body, &p)
		q.Set("outcome", p.Code)
	}
	return c.Redirect(http.StatusSeeOther, "/admin?"+q.Encode())
}

// adminOutcomes are the notices a rebuild button can come back with.
var adminOutcomes = map[string]string{
	"started":             "Rebuild of %s started.",
	"rebuild_in_progress": "A rebuild of %s is already running.",
	"unknown_projection":  "There is no projection named %s.",
}

func (h *handlers) adminPage(c echo.Context) error {
	session := h.adminSession(c)
	if session == "" {
		return h.adminRender(c, http.StatusOK, adminPageView{})
	}
	v := adminPageView{SignedIn: true, CSRF: h.adminCSRF(session)}
	if format, ok := adminOutcomes[c.QueryParam("outcome")]; ok {
		v.Notice = fmt.Sprintf(format, c.QueryParam("projection"))
	} else if c.QueryParam("outcome") != "" {
		v.Error = "The rebuild of " + c.QueryParam("projection") + " could not start."
	}
	status, body, err := h.adminAPI(c, http.MethodGet, "/v1/admin/projections")
	if err != nil {
		return err
	}
	var list struct {
		Projections []map[string]any `json:"projections"`
	}
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		v.Error = "The projections' status is unavailable right now."
	}
	for _, p := range list.Projections {
		row := adminRow(p)
		v.Busy = v.Busy || row.State != "live" && row.State != "stopped"
		v.Rows = append(v.Rows, row)
	}
	return h.adminRender(c, http.StatusOK, v)
}

// adminAPI serves one admin API request in process, with the admin token,
// through the whole middleware chain (metrics, logs, the admin check).
func (h *handlers) adminAPI(c echo.Context, method, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(context.WithoutCancel(c.Request().Context()), method, path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+h.server.cfg.AdminToken)
	req.Header.Set(HeaderRequestID, RequestID(c))
	req.RemoteAddr = c.Request().RemoteAddr
	w := &bufferedResponse{header: http.Header{}}
	h.server.Echo().ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.status, w.body.Bytes(), nil
}

// bufferedResponse keeps an in-process answer.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *bufferedResponse) Header() http.Header { return w.header }
func (w *bufferedResponse) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}
func (w *bufferedResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

type adminPageView struct {
	SignedIn bool
	CSRF     string
	Error    string
	Notice   string
	Busy     bool // a projection is rebuilding or catching up: refresh by itself
	Rows     []adminProjectionRow
}

type adminProjectionRow struct {
	Name, State, RunningOn, Position, Head, Applied, LastEventAt, Error string
	// Lag is "12 events, 340 ms"; Rate the events applied per second;
	// Rebuild the running rebuild's phase, progress and ETA, or how the
	// last one failed. Each is empty when the API does not give it.
	Lag, Rate, Rebuild string
	// Extra shows any other field the API gives, as it comes.
	Extra []adminField
}

type adminField struct{ Name, Value string }

// adminRowFields are the status fields the page lays out itself.
var adminRowFields = map[string]bool{"name": true, "state": true, "runningOn": true, "position": true, "head": true,
	"lagEvents": true, "lagCapped": true, "lagMs": true, "eventsPerSecond": true, "eventsApplied": true,
	"lastEventAt": true, "updatedAt": true, "error": true, "rebuild": true}

// adminRow turns one projection of the admin API into a row of the page.
func adminRow(p map[string]any) adminProjectionRow {
	r := adminProjectionRow{
		Name: text(p["name"]), State: text(p["state"]), RunningOn: text(p["runningOn"]),
		Position: position(p["position"]), Head: position(p["head"]),
		Applied: text(p["eventsApplied"]), LastEventAt: text(p["lastEventAt"]),
	}
	if at, err := time.Parse(time.RFC3339Nano, r.LastEventAt); err == nil {
		r.LastEventAt = at.UTC().Format("2006-01-02 15:04:05Z")
	}
	if e, ok := p["error"].(map[string]any); ok {
		r.Error = text(e["message"])
		if t := text(e["eventType"]); t != "" {
			r.Error += " (event " + t + " at position " + text(e["position"]) + ")"
		}
	}
	if n, ok := p["lagEvents"].(float64); ok {
		r.Lag = strconv.FormatFloat(n, 'f', 0, 64) + " events"
		if capped, _ := p["lagCapped"].(bool); capped {
			r.Lag = "≥ " + r.Lag
		}
		if ms, ok := p["lagMs"].(float64); ok {
			r.Lag += ", " + (time.Duration(ms) * time.Millisecond).String()
		}
	}
	if rate, ok := p["eventsPerSecond"].(float64); ok {
		r.Rate = strconv.FormatFloat(rate, 'f', 1, 64)
	}
	if rb, ok := p["rebuild"].(map[string]any); ok {
		switch running, _ := rb["running"].(bool); {
		case running:
			r.Rebuild = text(rb["phase"])
			if pct, ok := rb["percent"].(float64); ok {
				r.Rebuild += " " + strconv.FormatFloat(pct, 'f', 0, 64) + "%"
			}
			if eta, ok := rb["etaSeconds"].(float64); ok {
				r.Rebuild += ", ETA " + (time.Duration(eta) * time.Second).String()
			}
		case rb["error"] != nil:
			r.Rebuild = "last rebuild failed: " + text(rb["error"])
		}
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		if !adminRowFields[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		r.Extra = append(r.Extra, adminField{Name: k, Value: text(p[k])})
	}
	return r
}

// position shows a log position as commit/prepare, the order of the log
// (for the PostgreSQL log: the writing transaction and the event's number).
func position(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return text(v)
	}
	return text(m["commit"]) + "/" + text(m["prepare"])
}

func text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func (h *handlers) adminRender(c echo.Context, status int, v adminPageView) error {
	return renderPage(c, status, adminTemplate, v)
}

// renderPage answers a server-rendered page of the ledger's own: never
// cached, never framed, no script, forms posting only to this origin.
func renderPage(c echo.Context, status int, t *template.Template, data any) error {
	hdr := c.Response().Header()
	hdr.Set(echo.HeaderCacheControl, "no-store")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	hdr.Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	c.Response().WriteHeader(status)
	return t.Execute(c.Response(), data)
}

var adminTemplate = template.Must(template.New("admin").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Busy}}<meta http-equiv="refresh" content="2">{{end}}
<title>Consent Ledger admin</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1b1d21}
main{max-width:76rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.35rem}
label{display:block;margin:.75rem 0 .25rem;font-weight:600}
input[type=password]{width:100%;max-width:28rem;box-sizing:border-box;padding:.6rem;font-size:1rem;border:1px solid #8a8f98;border-radius:.4rem}
button{font-size:.95rem;padding:.45rem .9rem;border-radius:.4rem;border:0;background:#1f4fd1;color:#fff;min-height:36px}
button.secondary{background:#e3e6eb;color:#1b1d21}
.error{background:#fde8e8;border-left:4px solid #c81e1e;padding:.6rem .8rem}
.notice{background:#e6f4ea;border-left:4px solid #1f6f3f;padding:.6rem .8rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d5d9e0;padding:.35rem .5rem;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.num,td.lag,td.at{white-space:nowrap}
.state-live{color:#1f6f3f;font-weight:600}.state-stopped{color:#c81e1e;font-weight:600}.state-rebuilding,.state-catching_up{color:#8a5a00;font-weight:600}
.muted{color:#5b616b;font-size:.85rem}
</style>
</head>
<body>
<main>
<h1>Consent Ledger admin</h1>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
{{if .Notice}}<p class="notice" role="status">{{.Notice}}</p>{{end}}
{{if not .SignedIn}}
  <form method="post" action="/admin/login">
    <label for="token">Admin token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required>
    <p><button type="submit">Sign in</button></p>
  </form>
{{else}}
  <h2>Projections</h2>
  <table>
  <thead><tr><th>projection</th><th>state</th><th>lag</th><th>events/s</th><th>position <span class="muted">(commit/prepare)</span></th><th>log head</th><th>events applied</th><th>last event</th><th></th></tr></thead>
  <tbody>
  {{range .Rows}}
  <tr data-projection="{{.Name}}">
    <td><strong>{{.Name}}</strong>{{if .RunningOn}}<div class="muted">on {{.RunningOn}}</div>{{end}}{{if .Error}}<div class="error">{{.Error}}</div>{{end}}{{range .Extra}}<div class="muted">{{.Name}}: {{.Value}}</div>{{end}}</td>
    <td><span class="state state-{{.State}}">{{.State}}</span>{{if .Rebuild}}<div class="rebuild muted">{{.Rebuild}}</div>{{end}}</td>
    <td class="lag">{{if .Lag}}{{.Lag}}{{else}}<span class="muted">—</span>{{end}}</td>
    <td class="num">{{if .Rate}}{{.Rate}}{{else}}<span class="muted">—</span>{{end}}</td>
    <td class="num">{{.Position}}</td>
    <td class="num">{{.Head}}</td>
    <td class="num">{{.Applied}}</td>
    <td class="at">{{.LastEventAt}}</td>
    <td><form method="post" action="/admin/projections/{{.Name}}/rebuild">
      <input type="hidden" name="csrf" value="{{$.CSRF}}">
      <button type="submit" aria-label="Rebuild {{.Name}}">Rebuild</button>
    </form></td>
  </tr>
  {{end}}
  </tbody>
  </table>
  <p class="muted">{{if .Busy}}This page refreshes itself while a projection rebuilds or catches up. {{end}}<a href="/admin">Refresh</a> · <a href="/docs">API reference</a></p>
  <form method="post" action="/admin/logout">
    <input type="hidden" name="csrf" value="{{.CSRF}}">
    <button type="submit" class="secondary">Sign out</button>
  </form>
{{end}}
</main>
</body>
</html>
`))
