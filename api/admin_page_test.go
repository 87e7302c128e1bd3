package api_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// gatedProjection is a read model with no tables whose Apply waits while
// the gate is closed, so a test can hold a rebuild in the middle.
type gatedProjection struct {
	closed atomic.Bool
	open   chan struct{}
}

func (*gatedProjection) Name() string     { return "gated" }
func (*gatedProjection) Tables() []string { return nil }
func (g *gatedProjection) Apply(ctx context.Context, _ pgx.Tx, _ eventstore.RecordedEvent) error {
	if g.closed.Load() {
		select {
		case <-g.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// newAdminLedger is the whole service plus the gated projection, run by a
// runner of its own next to the ledger's.
func newAdminLedger(t *testing.T) (*ledger, *gatedProjection) {
	gated := &gatedProjection{open: make(chan struct{})}
	l := newLedgerWith(t, nil, func(app *api.App) {
		runner := projections.NewRunner(app.Pool, app.Store, nil, nil, append(app.Runner.Projections(), gated)...)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = runner.Run(ctx) }()
		t.Cleanup(func() { gated.release(); cancel(); <-done })
		app.Runner = runner
	})
	l.do("POST", "/v1/accounts", js(map[string]string{"email": "admin-page@example.com", "password": pw})).want(t, 201, "")
	return l, gated
}

func (g *gatedProjection) release() {
	if g.closed.CompareAndSwap(true, false) {
		close(g.open)
	}
}

// TestAdminPageSession checks the page's session and forms without a
// browser: the cookie's attributes, a wrong token, forged and foreign
// forms, a tampered cookie, sign-out.
func TestAdminPageSession(t *testing.T) {
	l, _ := newAdminLedger(t)
	b := l.browser().get("/admin").shows(`name="token"`)
	if strings.Contains(b.page, "data-projection") {
		t.Fatal("the page shows projections before sign-in")
	}
	b.submitTo("/admin/login", map[string]string{"token": "not-the-admin-token-000"})
	if b.status != 401 || !strings.Contains(b.page, "not the admin token") {
		t.Fatalf("wrong token: HTTP %d", b.status)
	}

	resp, err := b.client.PostForm(l.url+"/admin/login", url.Values{"token": {adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookie := resp.Header.Get("Set-Cookie")
	if resp.StatusCode != 303 || !strings.Contains(cookie, "ledger_admin=") || !strings.Contains(cookie, "HttpOnly") ||
		!strings.Contains(cookie, "SameSite=Strict") || !strings.Contains(cookie, "Path=/admin") || strings.Contains(cookie, adminToken) {
		t.Fatalf("sign-in: HTTP %d, Set-Cookie %q", resp.StatusCode, cookie)
	}
	b.get("/admin").shows(`data-projection="accounts"`).shows(`data-projection="gated"`)

	// Forms without the CSRF value, or from another origin, start nothing.
	if f := b.load(b.client.PostForm(l.url+"/admin/projections/accounts/rebuild", url.Values{})); f.status != 403 {
		t.Fatalf("rebuild without CSRF: HTTP %d", f.status)
	}
	b.get("/admin")
	csrf := csrfField.FindStringSubmatch(b.page)[1]
	req, _ := http.NewRequest("POST", l.url+"/admin/projections/accounts/rebuild", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if f := b.load(b.client.Do(req)); f.status != 403 {
		t.Fatalf("rebuild from another origin: HTTP %d", f.status)
	}
	// Another browser without the session gets nothing with the CSRF value.
	other := l.browser()
	if f := other.load(other.client.PostForm(l.url+"/admin/projections/accounts/rebuild", url.Values{"csrf": {csrf}})); f.status != 403 {
		t.Fatalf("rebuild without a session: HTTP %d", f.status)
	}
	// A tampered cookie is no session.
	u, _ := url.Parse(l.url + "/admin")
	for _, c := range b.client.Jar.Cookies(u) {
		forged := *c
		forged.Value = c.Value[:len(c.Value)-2] + "AA"
		other.client.Jar.SetCookies(u, []*http.Cookie{&forged})
	}
	other.get("/admin").shows(`name="token"`)

	b.get("/admin").submitTo("/admin/projections/accounts/rebuild", nil)
	if b.status != 303 || !strings.Contains(b.loc, "outcome=started") {
		t.Fatalf("rebuild: HTTP %d to %q", b.status, b.loc)
	}
	b.get(b.loc).shows("Rebuild of accounts started.")
	b.submitTo("/admin/logout", nil)
	b.get("/admin").shows(`name="token"`)
}

// TestAdminPageInABrowser signs in in headless Chromium, sees every
// projection, clicks a rebuild button and sees the projection rebuilding,
// then live again once the rebuild is let through.
func TestAdminPageInABrowser(t *testing.T) {
	browserCtx := headless(t)
	l, gated := newAdminLedger(t)
	row := `tr[data-projection="gated"] `

	var alert string
	if err := chromedp.Run(browserCtx,
		chromedp.EmulateViewport(1280, 800),
		chromedp.Navigate(l.url+"/admin"),
		chromedp.WaitVisible(`#token`, chromedp.ByQuery),
		chromedp.SendKeys(`#token`, "wrong-token-0123456789", chromedp.ByQuery),
		chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
		chromedp.Text(`[role=alert]`, &alert, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(alert, "not the admin token") {
		t.Fatalf("alert %q", alert)
	}

	var accounts string
	if err := chromedp.Run(browserCtx,
		chromedp.SendKeys(`#token`, adminToken, chromedp.ByQuery),
		chromedp.Click(`button[type=submit]`, chromedp.ByQuery),
		chromedp.WaitVisible(row+`.state-live`, chromedp.ByQuery), // the page refreshes itself until then
		chromedp.Text(`tr[data-projection="accounts"] .state`, &accounts, chromedp.ByQuery),
	); err != nil {
		t.Fatal(err)
	}
	if accounts != "live" {
		t.Fatalf("accounts is %q", accounts)
	}

	gated.closed.Store(true)
	var notice string
	var shot []byte
	if err := chromedp.Run(browserCtx,
		chromedp.Click(row+`button`, chromedp.ByQuery),
		chromedp.WaitVisible(row+`.state-rebuilding`, chromedp.ByQuery),
		chromedp.Text(`[role=status]`, &notice, chromedp.ByQuery),
		chromedp.FullScreenshot(&shot, 100),
	); err != nil {
		t.Fatal(err)
	}
	if notice != "Rebuild of gated started." {
		t.Fatalf("notice %q", notice)
	}
	if err := os.MkdirAll(docsDir(t), 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(docsDir(t), "admin-page.png"), shot, 0o644)
	}

	gated.release()
	ctx, cancel := context.WithTimeout(browserCtx, 20*time.Second)
	defer cancel()
	if err := chromedp.Run(ctx, chromedp.WaitVisible(row+`.state-live`, chromedp.ByQuery)); err != nil {
		t.Fatalf("the rebuilt projection never showed live again: %v", err)
	}
}
