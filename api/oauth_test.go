package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// oauthLedger is the ledger over HTTP as `ledger serve` mounts it, with one
// test-only route standing for the consent prompt's last step:
// GET /test/authorize answers an authorization request for the account in
// X-Test-Account (which must have granted the scopes), through a provider
// configured like the mounted one — the protocol keeps no state of its own.
// GET /test/authorize-expired does the same with codes that are born
// expired, which is how the tests reach the end of a code's ten minutes.
type oauthLedger struct {
	t      testing.TB
	url    string
	pool   *pgxpool.Pool
	store  eventstore.Store
	cmds   *commands.Handler
	outbox *commands.MemoryOutbox
	tokens *projections.TokenValidity
	// handler is the server's handler, for calls that skip the network;
	// server and app are what it was mounted with.
	handler http.Handler
	server  *Server
	app     App
	// secrets collects every token, code and client secret handed out, so
	// that a test can check none of them is stored anywhere.
	mu      sync.Mutex
	secrets []string
}

const oauthIssuer = "https://ledger.example"

// oauthTestSecret keys the test servers' codes and tokens; every instance
// of a test shares it, as instances behind one load balancer do.
const oauthTestSecret = "a test secret that is long enough to key the HMAC"

// newOAuthLedger runs on the log open returns; nil means the PostgreSQL log.
func newOAuthLedger(t testing.TB, open func(testing.TB) eventstore.Store) *oauthLedger {
	t.Helper()
	pool := dbtest.Pool(t)
	var store eventstore.Store
	if open != nil {
		store = open(t)
	} else {
		pg, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Close() })
		store = pg
	}
	runner := projections.NewRunner(pool, store, nil, nil, projections.Accounts{}, projections.Enrollment{}, projections.Clients{}, projections.Consents{}, projections.OAuthTokens{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	tokens := projections.NewTokenValidity(pool, store, slog.New(slog.DiscardHandler))
	tokensDone := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(ctx) }()
	go func() { defer close(tokensDone); _ = tokens.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; <-tokensDone })

	outbox := commands.NewMemoryOutbox(100)
	cmds := commands.New(commands.Deps{Store: store, Consistency: projections.Consistency{runner, tokens}, Outbox: outbox,
		PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{PublicURL: oauthIssuer, OAuthSecret: []byte(oauthTestSecret)}
	s := New(cfg, Deps{Pool: pool, Logger: log})
	app := App{Commands: cmds, Pool: pool, Store: store, Runner: runner, Tokens: tokens}
	Mount(s, app)

	finish := func(o *oauthProvider) echo.HandlerFunc {
		return func(c echo.Context) error {
			return o.Finish(c, c.QueryParams(), uuid.MustParse(c.Request().Header.Get("X-Test-Account")))
		}
	}
	s.Echo().GET("/test/authorize", finish(newOAuthProvider(s.Config(), app, log)))
	expiring := newOAuthProvider(s.Config(), app, log)
	expiring.config.AuthorizeCodeLifespan = -time.Second
	s.Echo().GET("/test/authorize-expired", finish(expiring))

	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	l := &oauthLedger{t: t, url: srv.URL, pool: pool, store: store, cmds: cmds, outbox: outbox, tokens: tokens, handler: s.Handler(), server: s, app: app}
	waitServing(t, tokens)
	return l
}

// oauthOnESDB opens the EventStoreDB log (the in-process double) as
// `ledger serve` configures it.
func oauthOnESDB(t testing.TB) eventstore.Store {
	t.Helper()
	srv := esdbtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := eventstore.OpenESDB(ctx, srv.URL(), eventstore.ESDBOptions{StreamPrefixes: domain.StreamPrefixes, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

type oauthClientReg struct {
	id     string
	secret string
	cb     string
}

// client registers a partner client with redirect URI https://<name>.example/cb.
func (l *oauthLedger) client(name string, cmd commands.RegisterClient) oauthClientReg {
	l.t.Helper()
	cmd.Name = name
	cb := "https://" + name + ".example/cb"
	if cmd.RedirectURIs == nil && !(len(cmd.GrantTypes) == 1 && cmd.GrantTypes[0] == "client_credentials") {
		cmd.RedirectURIs = []string{cb}
	}
	id, secret, err := l.cmds.RegisterClient(context.Background(), cmd)
	if err != nil {
		l.t.Fatal(err)
	}
	l.keep(secret)
	return oauthClientReg{id: id.String(), secret: secret, cb: cb}
}

func (l *oauthLedger) keep(secrets ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			l.secrets = append(l.secrets, s)
		}
	}
}

// user is an account that granted scopes to client.
func (l *oauthLedger) user(client oauthClientReg, scopes ...string) uuid.UUID {
	l.t.Helper()
	acct := uuid.New()
	l.grant(client, acct, scopes...)
	return acct
}

// grant records acct's grant of scopes to client, as the prompt does.
func (l *oauthLedger) grant(client oauthClientReg, acct uuid.UUID, scopes ...string) {
	l.t.Helper()
	_, err := l.cmds.DecideConsent(context.Background(), commands.ConsentDecision{AccountID: acct, ClientID: uuid.MustParse(client.id),
		Accept: true, Scopes: scopes, NoticeVersion: NoticeVersion, CollectionMethod: "hosted-consent-prompt"})
	if err != nil {
		l.t.Fatal(err)
	}
}

// pkcePair is a verifier and its S256 challenge.
func pkcePair() (verifier, challenge string) {
	verifier = account.NewSecret() + "-v"
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authorize answers an authorization request for acct; it returns the
// status and the redirect's parameters (query, or fragment for tokens).
func (l *oauthLedger) authorize(path string, q url.Values, acct uuid.UUID) (int, *url.URL, url.Values) {
	l.t.Helper()
	req, _ := http.NewRequest("GET", l.url+path+"?"+q.Encode(), nil)
	req.Header.Set("X-Test-Account", acct.String())
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	params := loc.Query()
	if loc.Fragment != "" {
		params, _ = url.ParseQuery(loc.Fragment)
	}
	l.keep(params.Get("code"), params.Get("access_token"))
	return resp.StatusCode, loc, params
}

// code runs the authorize step for a code with an S256 challenge.
func (l *oauthLedger) code(client oauthClientReg, acct uuid.UUID, scope string) (code, verifier string) {
	l.t.Helper()
	verifier, challenge := pkcePair()
	status, loc, p := l.authorize("/test/authorize", url.Values{"client_id": {client.id}, "redirect_uri": {client.cb}, "response_type": {"code"},
		"scope": {scope}, "state": {"state-123"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}, acct)
	if status != http.StatusSeeOther || p.Get("code") == "" || p.Get("state") != "state-123" || !strings.HasPrefix(loc.String(), client.cb+"?") {
		l.t.Fatalf("authorize: HTTP %d to %s", status, loc)
	}
	return p.Get("code"), verifier
}

type oauthAnswer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// post sends a form, with HTTP Basic when client has a secret (or
// client_id in the form for a public client).
func (l *oauthLedger) post(path string, form url.Values, id, secret string) oauthAnswer {
	l.t.Helper()
	req, _ := http.NewRequest("POST", l.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	} else if id != "" {
		form.Set("client_id", id)
		req.Body = io.NopCloser(strings.NewReader(form.Encode()))
		req.ContentLength = int64(len(form.Encode()))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := oauthAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	for _, k := range []string{"access_token", "refresh_token"} {
		if s, ok := a.body[k].(string); ok {
			l.keep(s)
		}
	}
	return a
}

func (a oauthAnswer) want(t testing.TB, status int, oauthError string) oauthAnswer {
	t.Helper()
	if a.status != status {
		t.Fatalf("HTTP %d, want %d: %s", a.status, status, a.raw)
	}
	if oauthError != "" && a.body["error"] != oauthError {
		t.Fatalf("error %v, want %s: %s", a.body["error"], oauthError, a.raw)
	}
	return a
}

func (a oauthAnswer) str(k string) string { s, _ := a.body[k].(string); return s }

// exchange redeems a code.
func (l *oauthLedger) exchange(client oauthClientReg, code, verifier string) oauthAnswer {
	l.t.Helper()
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {client.cb}}
	if verifier != "" {
		form.Set("code_verifier", verifier)
	}
	return l.post("/oauth2/token", form, client.id, client.secret)
}

func (l *oauthLedger) refresh(client oauthClientReg, token string) oauthAnswer {
	l.t.Helper()
	return l.post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}, client.id, client.secret)
}

// introspect asks as the resource-server client rs.
func (l *oauthLedger) introspect(rs oauthClientReg, token string) oauthAnswer {
	l.t.Helper()
	return l.post("/oauth2/introspect", url.Values{"token": {token}}, rs.id, rs.secret).want(l.t, 200, "")
}

func (l *oauthLedger) active(rs oauthClientReg, token string) bool {
	l.t.Helper()
	return l.introspect(rs, token).body["active"] == true
}

// events reads the whole log.
func (l *oauthLedger) events() []eventstore.RecordedEvent {
	l.t.Helper()
	var out []eventstore.RecordedEvent
	for after := eventstore.Start; ; {
		evs, err := l.store.ReadAll(context.Background(), after, 1000)
		if err != nil {
			l.t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Position
	}
}

// eventTypes counts the log's events by type.
func (l *oauthLedger) eventTypes() map[string]int {
	l.t.Helper()
	out := map[string]int{}
	for _, e := range l.events() {
		out[e.Type]++
	}
	return out
}

// noSecretsStored scans the whole log and the token read model for every
// token, code and client secret handed out so far.
func (l *oauthLedger) noSecretsStored() {
	l.t.Helper()
	var dump strings.Builder
	for _, e := range l.events() {
		meta, _ := json.Marshal(e.Metadata)
		dump.Write(e.Data)
		dump.Write(meta)
	}
	var tokens string
	err := l.pool.QueryRow(context.Background(), `SELECT coalesce(string_agg(to_jsonb(t)::text, ' '), '') FROM oauth_tokens t`).Scan(&tokens)
	if err != nil {
		l.t.Fatal(err)
	}
	dump.WriteString(tokens)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.secrets) == 0 || len(tokens) == 0 {
		l.t.Fatal("nothing to scan")
	}
	for _, s := range l.secrets {
		if strings.Contains(dump.String(), s) {
			l.t.Fatalf("a token, code or client secret is stored in clear (%d characters)", len(s))
		}
	}
}

// rebuildGivesTheSameTokens rebuilds the token read model from the log and
// compares it row for row.
func (l *oauthLedger) rebuildGivesTheSameTokens(store eventstore.Store) {
	l.t.Helper()
	ctx := context.Background()
	live, err := projections.Dump(ctx, l.pool, "oauth_tokens")
	if err != nil {
		l.t.Fatal(err)
	}
	if err := projections.Rebuild(ctx, l.pool, store, projections.OAuthTokens{}, nil); err != nil {
		l.t.Fatal(err)
	}
	rebuilt, _ := projections.Dump(ctx, l.pool, "oauth_tokens")
	if len(live) == 0 || !reflect.DeepEqual(live, rebuilt) {
		l.t.Fatalf("rebuilt %d token rows differ from the %d live rows", len(rebuilt), len(live))
	}
}

func TestOAuthAuthorizationCodeWithPKCE(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("mobile", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)

	code, verifier := l.code(app, acct, consent.ScopeProfile)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	if tok.str("access_token") == "" || tok.str("refresh_token") == "" || tok.body["expires_in"] != float64(86400) ||
		tok.str("token_type") != "bearer" || tok.str("scope") != consent.ScopeProfile {
		t.Fatalf("token answer: %s", tok.raw)
	}
	if tok.header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(tok.header.Get("Content-Type"), "application/json") {
		t.Fatalf("token answer headers: %v", tok.header)
	}
	in := l.introspect(rs, tok.str("access_token"))
	if in.body["active"] != true || in.str("sub") != acct.String() || in.str("client_id") != app.id {
		t.Fatalf("introspection of a fresh token: %s", in.raw)
	}

	// A wrong verifier, or none, is refused; the code still works with the
	// right one (its ten minutes are the bound).
	code, verifier = l.code(app, acct, consent.ScopeProfile)
	wrong, _ := pkcePair()
	l.exchange(app, code, wrong).want(t, 400, "invalid_grant")
	l.exchange(app, code, "").want(t, 400, "invalid_grant")
	l.exchange(app, code, verifier).want(t, 200, "")

	// A public client must send an S256 challenge: none, or plain, is an
	// error sent back to the client with its state.
	base := url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"}, "scope": {consent.ScopeProfile}, "state": {"state-456"}}
	for name, extra := range map[string]url.Values{
		"no challenge":    {},
		"plain":           {"code_challenge": {strings.Repeat("a", 43)}, "code_challenge_method": {"plain"}},
		"implicit plain":  {"code_challenge": {strings.Repeat("a", 43)}},
		"method, no code": {"code_challenge_method": {"S256"}},
	} {
		q := url.Values{}
		for k, v := range base {
			q[k] = v
		}
		for k, v := range extra {
			q[k] = v
		}
		status, loc, p := l.authorize("/test/authorize", q, acct)
		if status != 303 || p.Get("error") != "invalid_request" || p.Get("state") != "state-456" || p.Get("code") != "" || !strings.HasPrefix(loc.String(), app.cb) {
			t.Fatalf("%s: HTTP %d to %s", name, status, loc)
		}
	}

	// With PKCE, state may be left out; without, it must be unguessable.
	verifier, challenge := pkcePair()
	noState := url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"}, "scope": {consent.ScopeProfile},
		"code_challenge": {challenge}, "code_challenge_method": {"S256"}}
	status, loc, p := l.authorize("/test/authorize", noState, acct)
	if status != 303 || p.Get("code") == "" || p.Has("state") {
		t.Fatalf("no state, with PKCE: HTTP %d to %s", status, loc)
	}
	l.exchange(app, p.Get("code"), verifier).want(t, 200, "")
	noState.Set("state", "short")
	if _, _, p := l.authorize("/test/authorize", noState, acct); p.Get("error") != "invalid_state" {
		t.Fatalf("a short state: %v", p)
	}

	// Scopes the user did not grant are not issued; accounts:create never
	// through a user.
	q := url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"}, "scope": {consent.ScopeVehicleStatus}, "state": {"state-789"}}
	q.Set("code_challenge", challenge)
	q.Set("code_challenge_method", "S256")
	if _, _, p := l.authorize("/test/authorize", q, acct); p.Get("error") != "access_denied" || p.Get("code") != "" {
		t.Fatalf("ungranted scope: %v", p)
	}
	q.Set("scope", consent.ScopeAccountsCreate)
	if _, _, p := l.authorize("/test/authorize", q, acct); p.Get("error") != "invalid_scope" {
		t.Fatalf("accounts:create through a user: %v", p)
	}

	// An unregistered redirect URI is never followed.
	q.Set("scope", consent.ScopeProfile)
	q.Set("redirect_uri", "https://evil.example/cb")
	if status, loc, _ := l.authorize("/test/authorize", q, acct); status != 400 || loc.String() != "" {
		t.Fatalf("unregistered redirect URI: HTTP %d to %q", status, loc)
	}
	l.noSecretsStored()
}

func TestOAuthCodeIsBoundToClientAndRedirectURI(t *testing.T) {
	l := newOAuthLedger(t, nil)
	a := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}, RedirectURIs: []string{"https://fleet.example/cb", "https://fleet.example/other"}})
	a.cb = "https://fleet.example/cb"
	b := l.client("other", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	acct := l.user(a, consent.ScopeProfile)
	code, verifier := l.code(a, acct, consent.ScopeProfile)

	stolen := oauthClientReg{id: b.id, secret: b.secret, cb: a.cb}
	l.exchange(stolen, code, verifier).want(t, 400, "invalid_grant")
	elsewhere := a
	elsewhere.cb = "https://fleet.example/other"
	l.exchange(elsewhere, code, verifier).want(t, 400, "invalid_grant")
	badSecret := a
	badSecret.secret = "not-the-secret"
	l.exchange(badSecret, code, verifier).want(t, 401, "invalid_client")
	l.exchange(a, code, verifier).want(t, 200, "")
}

func TestOAuthCodeReplayRevokesWhatItIssued(t *testing.T) { codeReplayRevokesWhatItIssued(t, nil) }
func TestOAuthCodeReplayRevokesWhatItIssuedOnEventStoreDB(t *testing.T) {
	codeReplayRevokesWhatItIssued(t, oauthOnESDB)
}

func codeReplayRevokesWhatItIssued(t *testing.T, open func(testing.TB) eventstore.Store) {
	l := newOAuthLedger(t, open)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	if !l.active(rs, tok.str("access_token")) || !l.active(rs, tok.str("refresh_token")) {
		t.Fatal("fresh tokens are inactive")
	}

	l.exchange(app, code, verifier).want(t, 400, "invalid_grant")
	if l.active(rs, tok.str("access_token")) || l.active(rs, tok.str("refresh_token")) {
		t.Fatal("a replayed code left its tokens active")
	}
	l.refresh(app, tok.str("refresh_token")).want(t, 400, "invalid_grant")
	types := l.eventTypes()
	if types[consent.TypeCodeReplayDetected] != 1 || types[consent.TypeTokenRevoked] != 2 || types[consent.TypeCodeUsed] != 1 {
		t.Fatalf("events: %v", types)
	}
	l.noSecretsStored()
}

func TestOAuthConcurrentRedemptionsOfOneCode(t *testing.T) { concurrentRedemptionsOfOneCode(t, nil) }
func TestOAuthConcurrentRedemptionsOfOneCodeOnEventStoreDB(t *testing.T) {
	concurrentRedemptionsOfOneCode(t, oauthOnESDB)
}

func concurrentRedemptionsOfOneCode(t *testing.T, open func(testing.TB) eventstore.Store) {
	l := newOAuthLedger(t, open)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)

	answers := make([]oauthAnswer, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = l.exchange(app, code, verifier) })
	}
	wg.Wait()
	var won []oauthAnswer
	for _, a := range answers {
		switch {
		case a.status == 200:
			won = append(won, a)
		case a.status != 400 || a.body["error"] != "invalid_grant":
			t.Fatalf("a losing redemption answered HTTP %d: %s", a.status, a.raw)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d redemptions of one code succeeded", len(won))
	}
	// The others were replays: what the code issued is revoked.
	if l.active(rs, won[0].str("access_token")) {
		t.Fatal("the code was replayed, yet its access token is active")
	}
}

func TestOAuthCodeExpiresAfterItsLifespan(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	acct := l.user(app, consent.ScopeProfile)
	verifier, challenge := pkcePair()
	_, _, p := l.authorize("/test/authorize-expired", url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"},
		"scope": {consent.ScopeProfile}, "state": {"state-123"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}, acct)
	if p.Get("code") == "" {
		t.Fatalf("no code: %v", p)
	}
	l.exchange(app, p.Get("code"), verifier).want(t, 400, "invalid_grant")
	if authorizeCodeLifespan != 10*time.Minute {
		t.Fatalf("codes live %s", authorizeCodeLifespan)
	}
}

func TestOAuthRefreshRotationAndReuseDetection(t *testing.T) {
	refreshRotationAndReuseDetection(t, nil)
}
func TestOAuthRefreshRotationAndReuseDetectionOnEventStoreDB(t *testing.T) {
	refreshRotationAndReuseDetection(t, oauthOnESDB)
}

func refreshRotationAndReuseDetection(t *testing.T, open func(testing.TB) eventstore.Store) {
	l := newOAuthLedger(t, open)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)
	first := l.exchange(app, code, verifier).want(t, 200, "")

	second := l.refresh(app, first.str("refresh_token")).want(t, 200, "")
	if second.str("refresh_token") == first.str("refresh_token") || second.body["expires_in"] != float64(86400) || second.str("scope") != consent.ScopeProfile {
		t.Fatalf("refresh answer: %s", second.raw)
	}
	if l.active(rs, first.str("access_token")) || l.active(rs, first.str("refresh_token")) {
		t.Fatal("the rotated pair is still active")
	}
	if in := l.introspect(rs, second.str("access_token")); in.body["active"] != true || in.str("sub") != acct.String() {
		t.Fatalf("the new access token: %s", in.raw)
	}
	third := l.refresh(app, second.str("refresh_token")).want(t, 200, "")

	// The first refresh token again: someone holds a copy. The whole
	// family ends, including the pair issued since.
	l.refresh(app, first.str("refresh_token")).want(t, 400, "invalid_grant")
	if l.active(rs, third.str("access_token")) || l.active(rs, third.str("refresh_token")) {
		t.Fatal("reuse left the family active")
	}
	l.refresh(app, third.str("refresh_token")).want(t, 400, "invalid_grant")
	types := l.eventTypes()
	if types[consent.TypeRefreshReuseDetected] != 1 || types[consent.TypeRefreshTokenRotated] != 2 {
		t.Fatalf("events: %v", types)
	}
	// Another client cannot use the refresh token.
	other := l.client("other", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	code, verifier = l.code(app, acct, consent.ScopeProfile)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	l.refresh(other, tok.str("refresh_token")).want(t, 400, "invalid_grant")
	l.refresh(app, tok.str("refresh_token")).want(t, 200, "")
	l.noSecretsStored()
}

func TestOAuthClientCredentials(t *testing.T) {
	l := newOAuthLedger(t, nil)
	partner := l.client("partner", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeAccountsCreate}})
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {consent.ScopeAccountsCreate}}
	tok := l.post("/oauth2/token", form, partner.id, partner.secret).want(t, 200, "")
	if tok.str("access_token") == "" || tok.body["refresh_token"] != nil || tok.body["expires_in"] != float64(3600) || tok.str("scope") != consent.ScopeAccountsCreate {
		t.Fatalf("client credentials answer: %s", tok.raw)
	}
	in := l.introspect(partner, tok.str("access_token"))
	if in.body["active"] != true || in.str("scope") != consent.ScopeAccountsCreate || in.body["sub"] != nil || in.str("client_id") != partner.id {
		t.Fatalf("introspection: %s", in.raw)
	}

	l.post("/oauth2/token", form, partner.id, "wrong").want(t, 401, "invalid_client")
	l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {consent.ScopeProfile}}, partner.id, partner.secret).want(t, 400, "invalid_scope")
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, app.id, app.secret).want(t, 400, "unauthorized_client")
	mobile := l.client("mobile", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile}})
	l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}}, mobile.id, "").want(t, 400, "invalid_grant")
	l.noSecretsStored()
}

func TestOAuthClientSecretRotation(t *testing.T) {
	l := newOAuthLedger(t, nil)
	partner := l.client("partner", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeAccountsCreate}})
	form := url.Values{"grant_type": {"client_credentials"}}
	l.post("/oauth2/token", form, partner.id, partner.secret).want(t, 200, "")
	fresh, err := l.cmds.RotateClientSecret(context.Background(), uuid.MustParse(partner.id))
	if err != nil {
		t.Fatal(err)
	}
	l.keep(fresh)
	l.post("/oauth2/token", form, partner.id, partner.secret).want(t, 401, "invalid_client")
	l.post("/oauth2/introspect", url.Values{"token": {"x"}}, partner.id, partner.secret).want(t, 401, "invalid_client")
	l.post("/oauth2/token", form, partner.id, fresh).want(t, 200, "")
	l.noSecretsStored()
}

func TestOAuthImplicitOnlyForClientsAllowedIt(t *testing.T) {
	l := newOAuthLedger(t, nil)
	spa := l.client("spa", commands.RegisterClient{Public: true, ImplicitAllowed: true, Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(spa, consent.ScopeProfile)
	q := url.Values{"client_id": {spa.id}, "redirect_uri": {spa.cb}, "response_type": {"token"}, "scope": {consent.ScopeProfile}, "state": {"state-123"}}
	status, loc, p := l.authorize("/test/authorize", q, acct)
	if status != 303 || loc.RawQuery != "" || p.Get("access_token") == "" || p.Get("token_type") != "bearer" || p.Get("refresh_token") != "" || p.Get("state") != "state-123" {
		t.Fatalf("implicit: HTTP %d to %s", status, loc)
	}
	if exp, err := strconv.Atoi(p.Get("expires_in")); err != nil || exp <= 0 || exp > 3600 {
		t.Fatalf("implicit token lives %q s", p.Get("expires_in"))
	}
	if in := l.introspect(rs, p.Get("access_token")); in.body["active"] != true || in.str("sub") != acct.String() {
		t.Fatalf("implicit token: %s", in.raw)
	}

	q.Del("state")
	if _, _, p := l.authorize("/test/authorize", q, acct); p.Get("error") != "invalid_state" || p.Get("access_token") != "" {
		t.Fatalf("implicit without state: %v", p)
	}

	app := l.client("fleet", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile}})
	acct = l.user(app, consent.ScopeProfile)
	q.Set("state", "state-123")
	q.Set("client_id", app.id)
	q.Set("redirect_uri", app.cb)
	if status, _, p := l.authorize("/test/authorize", q, acct); status != 303 || p.Get("error") != "unsupported_response_type" || p.Get("access_token") != "" {
		t.Fatalf("implicit for a client without it: HTTP %d, %v", status, p)
	}
	l.noSecretsStored()
}

func TestOAuthIntrospectionAndRevocation(t *testing.T) { introspectionAndRevocation(t, nil) }
func TestOAuthIntrospectionAndRevocationOnEventStoreDB(t *testing.T) {
	introspectionAndRevocation(t, oauthOnESDB)
}

func introspectionAndRevocation(t *testing.T, open func(testing.TB) eventstore.Store) {
	l := newOAuthLedger(t, open)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile, consent.ScopeVehicleStatus)
	scope := consent.ScopeProfile + " " + consent.ScopeVehicleStatus
	code, verifier := l.code(app, acct, scope)
	tok := l.exchange(app, code, verifier).want(t, 200, "")

	in := l.introspect(rs, tok.str("access_token"))
	exp, iat := in.body["exp"].(float64), in.body["iat"].(float64)
	if in.body["active"] != true || in.str("scope") != scope || in.str("client_id") != app.id || in.str("sub") != acct.String() ||
		in.str("token_type") != "Bearer" || in.str("iss") != oauthIssuer || exp-iat < 86390 || exp-iat > 86410 ||
		in.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("introspection: %s", in.raw)
	}
	if rt := l.introspect(rs, tok.str("refresh_token")); rt.body["active"] != true || rt.str("token_use") != "refresh_token" || rt.body["token_type"] != nil {
		t.Fatalf("refresh token introspection: %s", rt.raw)
	}
	if unknown := l.introspect(rs, "nonsense.token"); unknown.raw != `{"active":false}`+"\n" {
		t.Fatalf("unknown token: %s", unknown.raw)
	}
	a := l.post("/oauth2/introspect", url.Values{"token": {tok.str("access_token")}}, "", "").want(t, 401, "invalid_client")
	if a.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	l.post("/oauth2/introspect", url.Values{"token": {tok.str("access_token")}}, rs.id, "wrong").want(t, 401, "invalid_client")

	// RFC 7009: an unknown token answers 200; another client's token is
	// refused and stays active.
	l.post("/oauth2/revoke", url.Values{"token": {"nonsense.token"}}, app.id, app.secret).want(t, 200, "")
	l.post("/oauth2/revoke", url.Values{"token": {tok.str("access_token")}}, rs.id, rs.secret).want(t, 400, "unauthorized_client")
	if !l.active(rs, tok.str("access_token")) {
		t.Fatal("another client's revocation took effect")
	}
	// Revoking the access token ends the grant's refresh token too, and
	// introspection says so at once.
	r := l.post("/oauth2/revoke", url.Values{"token": {tok.str("access_token")}, "token_type_hint": {"access_token"}}, app.id, app.secret).want(t, 200, "")
	if r.raw != "" {
		t.Fatalf("revocation body: %q", r.raw)
	}
	if l.active(rs, tok.str("access_token")) || l.active(rs, tok.str("refresh_token")) {
		t.Fatal("tokens active after their revocation returned")
	}
	l.refresh(app, tok.str("refresh_token")).want(t, 400, "invalid_grant")
	l.post("/oauth2/revoke", url.Values{"token": {tok.str("refresh_token")}}, app.id, app.secret).want(t, 200, "")

	// Revoking a refresh token works the same way.
	code, verifier = l.code(app, acct, scope)
	tok = l.exchange(app, code, verifier).want(t, 200, "")
	l.post("/oauth2/revoke", url.Values{"token": {tok.str("refresh_token")}}, app.id, app.secret).want(t, 200, "")
	if l.active(rs, tok.str("access_token")) || l.active(rs, tok.str("refresh_token")) {
		t.Fatal("tokens active after the refresh token's revocation returned")
	}
	types := l.eventTypes()
	if types[consent.TypeTokenRevoked] != 4 || types[consent.TypeRefreshReuseDetected] != 0 {
		t.Fatalf("events: %v", types)
	}
	l.noSecretsStored()
}

func TestOAuthMetadata(t *testing.T) {
	l := newOAuthLedger(t, nil)
	resp, err := http.Get(l.url + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HTTP %d: %v", resp.StatusCode, err)
	}
	want := map[string]any{
		"issuer":                 oauthIssuer,
		"authorization_endpoint": oauthIssuer + "/oauth2/authorize",
		"token_endpoint":         oauthIssuer + "/oauth2/token",
		"introspection_endpoint": oauthIssuer + "/oauth2/introspect",
		"revocation_endpoint":    oauthIssuer + "/oauth2/revoke",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	lists := map[string][]string{
		"code_challenge_methods_supported":      {"S256"},
		"response_types_supported":              {"code", "token"},
		"grant_types_supported":                 {"authorization_code", "refresh_token", "client_credentials", "implicit"},
		"token_endpoint_auth_methods_supported": {"client_secret_basic", "client_secret_post", "none"},
		"scopes_supported":                      consent.Scopes(),
	}
	for k, v := range lists {
		var got []string
		for _, s := range m[k].([]any) {
			got = append(got, s.(string))
		}
		if !reflect.DeepEqual(got, v) {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
}

// TestOAuthTokenFacts checks what the log keeps of a whole journey: facts
// with signatures, never a token; and that the read model rebuilds from
// them byte for byte.
func TestOAuthTokenFacts(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	l.refresh(app, tok.str("refresh_token")).want(t, 200, "")

	var data string
	if err := l.pool.QueryRow(context.Background(), `SELECT data::text FROM events WHERE type = $1`, consent.TypeCodeIssued).Scan(&data); err != nil {
		t.Fatal(err)
	}
	var issued consent.CodeIssued
	if err := json.Unmarshal([]byte(data), &issued); err != nil {
		t.Fatal(err)
	}
	_, challengeOf := pkcePair()
	if issued.Signature == "" || issued.Signature == code || !strings.HasSuffix(code, "."+issued.Signature) || issued.AccountID == nil || *issued.AccountID != acct ||
		issued.ClientID.String() != app.id || issued.CodeChallengeMethod != "S256" || len(issued.CodeChallenge) != len(challengeOf) ||
		issued.RedirectURI != app.cb || issued.ExpiresAt.Sub(issued.RequestedAt).Round(time.Second) != authorizeCodeLifespan {
		t.Fatalf("code issued: %s", data)
	}
	var actor string
	if err := l.pool.QueryRow(context.Background(), `SELECT metadata->>'actor' FROM events WHERE type = $1`, consent.TypeCodeUsed).Scan(&actor); err != nil {
		t.Fatal(err)
	}
	if actor != "client:"+app.id {
		t.Fatalf("the code was used by %q", actor)
	}
	l.noSecretsStored()
	store, err := eventstore.OpenPostgres(context.Background(), l.pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l.rebuildGivesTheSameTokens(store)
}

// TestOAuthThroughTheConsentPrompt answers authorization requests through
// the hosted prompt: sign in, accept, and the client gets a code that
// redeems; decline, and it gets access_denied.
func TestOAuthThroughTheConsentPrompt(t *testing.T) {
	l := newOAuthLedger(t, nil)
	ctx := context.Background()
	app := l.client("fleet", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	const email, password = "driver@example.com", "Correct-Horse-9"
	reg, err := l.cmds.RegisterAccount(ctx, commands.RegisterAccount{Email: email, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.cmds.ActivateAccount(ctx, commands.ActivateAccount{Token: l.outbox.List(email)[0].Code}); err != nil {
		t.Fatal(err)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	var page string
	load := func(resp *http.Response, err error) *http.Response {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		page = string(raw)
		return resp
	}
	submit := func(fields url.Values) *http.Response {
		t.Helper()
		if m := csrf.FindStringSubmatch(page); m != nil {
			fields.Set("csrf", m[1])
		}
		return load(browser.PostForm(l.url+"/oauth2/prompt", fields))
	}
	verifier, challenge := pkcePair()
	authorize := l.url + "/oauth2/authorize?" + url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"},
		"scope": {consent.ScopeProfile}, "state": {"state-123"}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}.Encode()
	start := func() {
		t.Helper()
		if r := load(browser.Get(authorize)); r.StatusCode != 303 {
			t.Fatalf("authorize: HTTP %d: %s", r.StatusCode, page)
		}
		load(browser.Get(l.url + "/oauth2/prompt"))
		submit(url.Values{"action": {"signin"}, "email": {email}, "password": {password}})
	}

	start()
	r := submit(url.Values{"action": {"consent"}, "decision": {"accept"}})
	loc, _ := url.Parse(r.Header.Get("Location"))
	if r.StatusCode != 303 || !strings.HasPrefix(loc.String(), app.cb+"?") || loc.Query().Get("state") != "state-123" || loc.Query().Get("code") == "" {
		t.Fatalf("accept: HTTP %d to %s: %s", r.StatusCode, loc, page)
	}
	l.keep(loc.Query().Get("code"))
	tok := l.exchange(app, loc.Query().Get("code"), verifier).want(t, 200, "")
	if in := l.introspect(rs, tok.str("access_token")); in.body["active"] != true || in.str("sub") != reg.AccountID.String() {
		t.Fatalf("introspection: %s", in.raw)
	}

	start()
	r = submit(url.Values{"action": {"consent"}, "decision": {"deny"}})
	loc, _ = url.Parse(r.Header.Get("Location"))
	if r.StatusCode != 303 || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "state-123" || loc.Query().Get("code") != "" {
		t.Fatalf("decline: HTTP %d to %s", r.StatusCode, loc)
	}

	// A public client without PKCE, or a foreign redirect URI, never
	// reaches the prompt.
	noPKCE := l.url + "/oauth2/authorize?" + url.Values{"client_id": {app.id}, "redirect_uri": {app.cb}, "response_type": {"code"},
		"scope": {consent.ScopeProfile}, "state": {"state-123"}}.Encode()
	r = load(browser.Get(noPKCE))
	if loc, _ := url.Parse(r.Header.Get("Location")); r.StatusCode != 303 || loc.Query().Get("error") != "invalid_request" {
		t.Fatalf("no PKCE: HTTP %d to %s", r.StatusCode, loc)
	}
	r = load(browser.Get(strings.Replace(authorize, url.QueryEscape(app.cb), url.QueryEscape("https://evil.example/cb"), 1)))
	if r.StatusCode != 400 || r.Header.Get("Location") != "" || !strings.Contains(page, "redirect") {
		t.Fatalf("foreign redirect URI: HTTP %d to %q: %s", r.StatusCode, r.Header.Get("Location"), page)
	}
	r = load(browser.Get(strings.Replace(authorize, app.id, uuid.NewString(), 1)))
	if r.StatusCode != 400 || r.Header.Get("Location") != "" {
		t.Fatalf("unknown client: HTTP %d to %q", r.StatusCode, r.Header.Get("Location"))
	}
	l.noSecretsStored()
}

// TestOAuthTokensEndWithTheGrant: the user's revocation of the client's
// access ends its tokens at once; granting again does not revive them.
func TestOAuthTokensEndWithTheGrant(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)
	tok := l.exchange(app, code, verifier).want(t, 200, "")
	pending, pendingVerifier := l.code(app, acct, consent.ScopeProfile)

	if err := l.cmds.RevokeAccess(context.Background(), acct, uuid.MustParse(app.id), "user"); err != nil {
		t.Fatal(err)
	}
	if l.active(rs, tok.str("access_token")) || l.active(rs, tok.str("refresh_token")) {
		t.Fatal("tokens active after the user revoked the grant")
	}
	l.refresh(app, tok.str("refresh_token")).want(t, 400, "invalid_grant")
	l.exchange(app, pending, pendingVerifier).want(t, 400, "invalid_grant")

	l.grant(app, acct, consent.ScopeProfile)
	if l.active(rs, tok.str("access_token")) {
		t.Fatal("granting again revived an old token")
	}
	code, verifier = l.code(app, acct, consent.ScopeProfile)
	fresh := l.exchange(app, code, verifier).want(t, 200, "")
	if !l.active(rs, fresh.str("access_token")) {
		t.Fatal("a token issued under the new grant is inactive")
	}
}

// A blocked account's tokens are inactive at once; lifting the block
// ("remove all enrollments") brings them back, as the grant still stands.
func TestOAuthBlockedAccountTokensAreInactive(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("mobile", commands.RegisterClient{Public: true, Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	acct := l.user(app, consent.ScopeProfile)
	code, verifier := l.code(app, acct, consent.ScopeProfile)
	token := l.exchange(app, code, verifier).want(t, 200, "").str("access_token")
	if !l.active(rs, token) {
		t.Fatal("a fresh token is inactive")
	}

	ctx := context.Background()
	if err := l.cmds.RequestSmsCode(ctx, acct, "d1", "phoneNumberCertification", "0600000009"); err != nil {
		t.Fatal(err)
	}
	if err := l.cmds.EnrollWithPhoneNumber(ctx, acct, "d1", "0600000009", l.outbox.List("0600000009")[0].Code, "1234"); err != nil {
		t.Fatal(err)
	}
	if err := l.cmds.RequestSmsCode(ctx, acct, "d2", "enrollment", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := l.cmds.VerifyEnrollmentCode(ctx, acct, "d2", l.outbox.List("0600000009")[0].Code); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_ = l.cmds.Enroll(ctx, acct, "d2", "9999") // wrong PINs: the third blocks the account
	}
	if l.active(rs, token) {
		t.Fatal("a blocked account's token is still active")
	}
	if err := l.cmds.RemoveAllEnrollments(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if !l.active(rs, token) {
		t.Fatal("the token stayed inactive after the block was lifted")
	}
}
