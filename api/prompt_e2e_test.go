package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/api"
)

// fakeProtocol stands for the OAuth2 protocol at the prompt's seam: it
// accepts one client and one redirect URI, and answers with a redirect that
// names the account.
type fakeProtocol struct {
	client   uuid.UUID
	name     string
	redirect string
}

func (f *fakeProtocol) Parse(_ echo.Context, q url.Values) (api.PromptRequest, error) {
	if q.Get("client_id") != f.client.String() || q.Get("redirect_uri") != f.redirect {
		return api.PromptRequest{}, fmt.Errorf("unknown client or redirect URI")
	}
	return api.PromptRequest{ClientID: f.client, ClientName: f.name, Scopes: strings.Fields(q.Get("scope"))}, nil
}

func (f *fakeProtocol) Fail(c echo.Context, _ url.Values, err error) error {
	return c.String(http.StatusBadRequest, "invalid request: "+err.Error())
}

func (f *fakeProtocol) Deny(c echo.Context, q url.Values) error {
	return c.Redirect(http.StatusSeeOther, f.redirect+"?error=access_denied&state="+url.QueryEscape(q.Get("state")))
}

func (f *fakeProtocol) Finish(c echo.Context, q url.Values, account uuid.UUID) error {
	return c.Redirect(http.StatusSeeOther, f.redirect+"?code=for-"+account.String()+"&state="+url.QueryEscape(q.Get("state")))
}

// browser is a person at the prompt: cookies kept, redirects not followed.
type browser struct {
	t      *testing.T
	l      *ledger
	client *http.Client
	page   string
	status int
	loc    string
}

func (l *ledger) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: l.t, l: l, client: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *browser) load(resp *http.Response, err error) *browser {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	b.page, b.status, b.loc = string(raw), resp.StatusCode, resp.Header.Get("Location")
	return b
}

func (b *browser) get(path string) *browser { return b.load(b.client.Get(b.l.url + path)) }

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// submit posts a form of the current prompt page with its CSRF value.
func (b *browser) submit(fields map[string]string) *browser {
	b.t.Helper()
	return b.submitTo("/oauth2/prompt", fields)
}

// submitTo posts a form of the current page to path with its CSRF value.
func (b *browser) submitTo(path string, fields map[string]string) *browser {
	b.t.Helper()
	form := url.Values{}
	if m := csrfField.FindStringSubmatch(b.page); m != nil {
		form.Set("csrf", m[1])
	}
	for k, v := range fields {
		form.Set(k, v)
	}
	return b.load(b.client.PostForm(b.l.url+path, form))
}

func (b *browser) shows(want string) *browser {
	b.t.Helper()
	if !strings.Contains(b.page, want) {
		b.t.Fatalf("page (HTTP %d) does not show %q:\n%s", b.status, want, b.page)
	}
	return b
}

func TestConsentPromptJourney(t *testing.T) { consentPromptJourney(t, nil) }

func consentPromptJourney(t *testing.T, open storeFactory) {
	fake := &fakeProtocol{name: "Fleet App", redirect: "https://fleet.example/cb"}
	l := newLedgerWith(t, open, func(app *api.App) { app.Authorize = fake })
	fake.client = uuid.MustParse(l.registerClient(map[string]any{"name": "Fleet App", "redirectUris": []string{fake.redirect},
		"scopes": []string{"account:profile", "vehicle:status"}}).want(t, 201, "").body["clientId"].(string))
	authorize := "/oauth2/authorize?" + url.Values{"client_id": {fake.client.String()}, "redirect_uri": {fake.redirect},
		"response_type": {"code"}, "scope": {"account:profile vehicle:status"}, "state": {"s-1"}}.Encode()

	// An unregistered redirect URI is never followed.
	if b := l.browser().get("/oauth2/authorize?client_id=" + fake.client.String() + "&redirect_uri=https://evil.example/cb"); b.status != 400 || b.loc != "" {
		t.Fatalf("bad redirect URI: HTTP %d to %q", b.status, b.loc)
	}

	// Sign up inside the prompt: activation required.
	b := l.browser().get(authorize)
	if b.status != 303 || b.loc != "/oauth2/prompt" {
		t.Fatalf("authorize: HTTP %d to %q", b.status, b.loc)
	}
	b.get("/oauth2/prompt").shows("Sign in").shows("never shared with Fleet App")
	b.submit(map[string]string{"action": "show-signup"}).shows("Create your account")
	b.submit(map[string]string{"action": "signup", "email": "drive@example.com", "password": "short"}).shows("password must be")
	b.submit(map[string]string{"action": "signup", "email": "drive@example.com", "password": pw}).shows("Activation required")
	// Signing in before activating says so again.
	b = l.browser().get(authorize).get("/oauth2/prompt")
	b.submit(map[string]string{"action": "signin", "email": "drive@example.com", "password": pw}).shows("Activation required")
	l.do("POST", "/v1/accounts/activate", js(map[string]string{"token": l.activationToken("drive@example.com")})).want(t, 200, "")

	// A wrong password, then the right one: no vehicle yet.
	b = l.browser().get(authorize).get("/oauth2/prompt")
	b.submit(map[string]string{"action": "signin", "email": "drive@example.com", "password": "Wrong-Password-1"}).shows("email or password is wrong")
	b.submit(map[string]string{"action": "signin", "email": "drive@example.com", "password": pw}).shows("Add your vehicle first")

	// The app adds the car; the prompt asks to activate the service, then
	// lists the certification steps until they are done.
	d := l.device("drive@example.com", "phone-1")
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	b.get("/oauth2/prompt").shows("Activate vehicle services").shows("Vehicle status")
	b.submit(map[string]string{"action": "activate"}).shows("Certify your vehicle").shows("trusted phone").shows("safety code").shows("Pair your phone")
	if !strings.Contains(d.rest("GET", "/v1/vehicles", "", 200, "").raw, "vehicleStatus") {
		t.Fatal("the service was not subscribed")
	}
	// Not certified: consent is refused even when posted directly.
	b.submit(map[string]string{"action": "consent", "decision": "accept"}).shows("Certify your vehicle")
	d.shortcut("0611223344", "2580")
	b.submit(map[string]string{"action": "check"}).shows("Allow Fleet App?").shows("Your vehicle&#39;s status").shows(vin)

	// A forged form (no CSRF value) is refused.
	forged := url.Values{"action": {"consent"}, "decision": {"accept"}}
	if f := b.load(b.client.PostForm(l.url+"/oauth2/prompt", forged)); f.status != 403 {
		t.Fatalf("forged form: HTTP %d", f.status)
	}
	b.get("/oauth2/prompt")
	b.submit(map[string]string{"action": "consent", "decision": "accept"})
	if b.status != 303 || !strings.HasPrefix(b.loc, fake.redirect+"?code=for-") || !strings.HasSuffix(b.loc, "state=s-1") {
		t.Fatalf("accept: HTTP %d to %q", b.status, b.loc)
	}
	if g := d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)[0].(map[string]any); g["status"] != "granted" || g["noticeVersion"] != api.NoticeVersion {
		t.Fatalf("grant: %v", g)
	}
	// The flow is over: its cookie opens nothing any more.
	b.get("/oauth2/prompt")
	if b.status != 403 {
		t.Fatalf("finished flow: HTTP %d", b.status)
	}

	// Asked again later: what was done is not asked again.
	b = l.browser().get(authorize).get("/oauth2/prompt")
	b.submit(map[string]string{"action": "signin", "email": "drive@example.com", "password": pw}).shows("Allow Fleet App?")
	b.submit(map[string]string{"action": "consent", "decision": "deny"})
	if b.status != 303 || b.loc != fake.redirect+"?error=access_denied&state=s-1" {
		t.Fatalf("decline: HTTP %d to %q", b.status, b.loc)
	}

	// A flow expires after 10 minutes.
	b = l.browser().get(authorize)
	if _, err := l.pool.Exec(context.Background(), `UPDATE prompt_flows SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	b.get("/oauth2/prompt").shows("expired")
}
