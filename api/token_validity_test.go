package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/hmac"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/projections"
)

// waitServing waits until the in-memory token model answers: it caught up
// with the log and published its first heartbeat.
func waitServing(t testing.TB, m *projections.TokenValidity) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !m.Serving() {
		if time.Now().After(deadline) {
			t.Fatal("the token-validity model never started answering")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signature is fosite's signature of a token: the part after the dot,
// which is how the ledger keys codes and tokens.
func signature(token string) string {
	_, sig, _ := strings.Cut(token, ".")
	return sig
}

// inMemory reports what the model of m says about token, failing when the
// model cannot answer for it.
func inMemory(t *testing.T, m *projections.TokenValidity, token string) (status string, found bool) {
	t.Helper()
	// A model that fell behind the log for a moment (the machine is busy)
	// answers nothing until it caught up again, and then holds everything
	// up to the head it saw: wait for that.
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, found, served := m.Token(signature(token))
		if served {
			return tok.Status, found
		}
		if time.Now().After(deadline) {
			t.Fatalf("the in-memory model cannot answer for the token (serving: %v)", m.Serving())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// activeInMemory: the model holds the token, active, its grant standing.
func activeInMemory(t *testing.T, m *projections.TokenValidity, token string) bool {
	t.Helper()
	status, found := inMemory(t, m, token)
	return found && status == "active"
}

// blockAccount blocks acct the way the SDK does it: three wrong PINs.
func (l *oauthLedger) blockAccount(acct uuid.UUID, phone string) {
	l.t.Helper()
	ctx := context.Background()
	if err := l.cmds.RequestSmsCode(ctx, acct, "d1", "phoneNumberCertification", phone); err != nil {
		l.t.Fatal(err)
	}
	if err := l.cmds.EnrollWithPhoneNumber(ctx, acct, "d1", phone, l.outbox.List(phone)[0].Code, "1234"); err != nil {
		l.t.Fatal(err)
	}
	if err := l.cmds.RequestSmsCode(ctx, acct, "d2", "enrollment", ""); err != nil {
		l.t.Fatal(err)
	}
	if _, err := l.cmds.VerifyEnrollmentCode(ctx, acct, "d2", l.outbox.List(phone)[0].Code); err != nil {
		l.t.Fatal(err)
	}
	for range 3 {
		_ = l.cmds.Enroll(ctx, acct, "d2", "9999")
	}
}

// Every cause that ends a token is in the in-memory model when its command
// returns — the model itself says so, not a database fallback — and
// introspection and refresh follow it.
func TestTokenValidityRevocationAtOnce(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	ctx := context.Background()
	issue := func(acct uuid.UUID) oauthAnswer {
		t.Helper()
		code, verifier := l.code(app, acct, consent.ScopeProfile)
		tok := l.exchange(app, code, verifier).want(t, 200, "")
		if !activeInMemory(t, l.tokens, tok.str("access_token")) || !l.active(rs, tok.str("access_token")) {
			t.Fatal("a fresh token is not active in memory")
		}
		return tok
	}
	ended := func(cause string, tok oauthAnswer) {
		t.Helper()
		for _, k := range []string{"access_token", "refresh_token"} {
			if activeInMemory(t, l.tokens, tok.str(k)) {
				t.Fatalf("%s: the %s is still active in memory when the command returned", cause, k)
			}
			if l.active(rs, tok.str(k)) {
				t.Fatalf("%s: introspection says the %s is active", cause, k)
			}
		}
		l.refresh(app, tok.str("refresh_token")).want(t, 400, "invalid_grant")
	}

	// The partner's logout (RFC 7009).
	tok := issue(l.user(app, consent.ScopeProfile))
	l.post("/oauth2/revoke", url.Values{"token": {tok.str("access_token")}}, app.id, app.secret).want(t, 200, "")
	ended("client revocation", tok)

	// The user's revocation (DELETE /v1/me/consents/{clientId}).
	acct := l.user(app, consent.ScopeProfile)
	tok = issue(acct)
	if err := l.cmds.RevokeAccess(ctx, acct, uuid.MustParse(app.id), "user"); err != nil {
		t.Fatal(err)
	}
	ended("user revocation", tok)

	// RemoveProperty of the only car the grant covers.
	acct = uuid.New()
	const vin = "WVWZZZ1JZXW000009"
	if _, _, err := l.cmds.AssociateVehicle(ctx, acct, vin); err != nil {
		t.Fatal(err)
	}
	if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: acct, ClientID: uuid.MustParse(app.id), Accept: true,
		Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}, VINs: []string{vin}, NoticeVersion: NoticeVersion,
		CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	tok = issue(acct)
	h := &handlers{App: App{Commands: l.cmds, Pool: l.pool, Store: l.store}}
	if err := h.removeProperty(ctx, acct, vin); err != nil {
		t.Fatal(err)
	}
	ended("RemoveProperty", tok)

	// The account's block.
	acct = l.user(app, consent.ScopeProfile)
	tok = issue(acct)
	l.blockAccount(acct, "0600000019")
	ended("account block", tok)
	if err := l.cmds.RemoveAllEnrollments(ctx, acct); err != nil {
		t.Fatal(err)
	}
	if !activeInMemory(t, l.tokens, tok.str("access_token")) {
		t.Fatal("lifting the block did not bring the token back in memory")
	}
}

// mintToken makes an access token the server recognises — signed with its
// key — and records it as issued with the given times, as the token
// endpoint would have: the way to reach the end of a token's life without
// waiting for it.
func (l *oauthLedger) mintToken(client oauthClientReg, requestedAt, expiresAt time.Time) string {
	l.t.Helper()
	cfg := newOAuthProvider(Config{OAuthSecret: []byte(oauthTestSecret)}, App{}, slog.New(slog.DiscardHandler)).config
	token, sig, err := oauth2.NewHMACSHAStrategyUnPrefixed(&hmac.HMACStrategy{Config: cfg}, cfg).GenerateAccessToken(context.Background(), nil)
	if err != nil {
		l.t.Fatal(err)
	}
	family := uuid.NewString()
	err = l.cmds.RecordOAuth(context.Background(), family, []any{&consent.TokenIssued{Signature: sig, Kind: consent.KindAccessToken,
		TokenGrant: consent.TokenGrant{RequestID: family, ClientID: uuid.MustParse(client.id), GrantType: "client_credentials",
			RequestedScopes: []string{}, GrantedScopes: []string{}, RequestedAt: requestedAt, ExpiresAt: expiresAt}}})
	if err != nil {
		l.t.Fatal(err)
	}
	return token
}

// A token's end of life is the expiry its issue event recorded, compared
// with the clock when it is presented.
func TestTokenValidityExpiry(t *testing.T) {
	l := newOAuthLedger(t, nil)
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	now := time.Now().UTC()
	expired := l.mintToken(rs, now.Add(-2*time.Hour), now.Add(-time.Hour))
	live := l.mintToken(rs, now.Add(-time.Minute), now.Add(time.Hour))
	if !activeInMemory(t, l.tokens, expired) || !activeInMemory(t, l.tokens, live) {
		t.Fatal("the model does not hold the issued tokens")
	}
	got, _, _ := l.tokens.Token(signature(expired))
	if !got.ExpiresAt.Equal(now.Add(-time.Hour)) {
		t.Fatalf("expiry %s, want the event's %s", got.ExpiresAt, now.Add(-time.Hour))
	}
	if l.active(rs, expired) {
		t.Fatal("an expired token is active")
	}
	a := l.introspect(rs, live)
	if a.body["active"] != true || a.body["exp"] != float64(now.Add(time.Hour).Unix()) {
		t.Fatalf("a live token: %v", a.body)
	}
}

// A model started on an existing log holds what the database read models
// hold: every code and token reads the same from either.
func TestTokenValidityRebuiltOnStartEqualsDatabase(t *testing.T) {
	l := newOAuthLedger(t, nil)
	app := l.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	ctx := context.Background()
	var accounts []uuid.UUID
	for i := range 4 {
		acct := l.user(app, consent.ScopeProfile)
		accounts = append(accounts, acct)
		code, verifier := l.code(app, acct, consent.ScopeProfile)
		tok := l.exchange(app, code, verifier).want(t, 200, "")
		switch i {
		case 1:
			l.refresh(app, tok.str("refresh_token")).want(t, 200, "")
		case 2:
			l.post("/oauth2/revoke", url.Values{"token": {tok.str("refresh_token")}}, app.id, app.secret).want(t, 200, "")
		case 3:
			if err := l.cmds.RevokeAccess(ctx, acct, uuid.MustParse(app.id), "user"); err != nil {
				t.Fatal(err)
			}
		}
	}
	l.code(app, accounts[0], consent.ScopeProfile) // a code never redeemed
	l.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {consent.ScopeAccountsCreate}}, rs.id, rs.secret)
	if _, err := l.cmds.RotateClientSecret(ctx, uuid.MustParse(app.id)); err != nil {
		t.Fatal(err)
	}

	fresh := projections.NewTokenValidity(nil, l.store, slog.New(slog.DiscardHandler))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = fresh.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	head, err := l.store.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithTimeout(ctx, 10*time.Second)
	defer stop()
	if err := fresh.WaitFor(wctx, head); err != nil {
		t.Fatal(err)
	}
	waitServing(t, fresh)

	db := &oauthStore{pool: l.pool}
	memory := &oauthStore{pool: l.pool, tokens: fresh}
	rows, err := l.pool.Query(ctx, `SELECT signature, kind FROM oauth_tokens ORDER BY signature`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ sig, kind string }
	var all []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.sig, &r.kind); err != nil {
			t.Fatal(err)
		}
		all = append(all, r)
	}
	if rows.Err() != nil || len(all) < 12 {
		t.Fatalf("%d tokens in the read model (%v)", len(all), rows.Err())
	}
	for _, r := range all {
		if _, _, served := fresh.Token(r.sig); !served {
			t.Fatalf("the rebuilt model does not hold %s %s", r.kind, r.sig)
		}
		want, wantErr := db.load(ctx, r.sig, r.kind)
		got, gotErr := memory.load(ctx, r.sig, r.kind)
		if !errors.Is(gotErr, fosite.ErrNotFound) != !errors.Is(wantErr, fosite.ErrNotFound) || (wantErr != nil && !errors.Is(wantErr, fosite.ErrNotFound)) {
			t.Fatalf("%s: memory %v, database %v", r.kind, gotErr, wantErr)
		}
		if wantErr != nil {
			continue
		}
		if d := diffTokenRows(got, want); d != "" {
			t.Fatalf("%s %s differs: %s", r.kind, r.sig, d)
		}
	}
	for _, id := range []string{app.id, rs.id} {
		got, _ := memory.GetClient(ctx, id)
		want, _ := db.GetClient(ctx, id)
		if d := diffClients(got.(*oauthClient), want.(*oauthClient)); d != "" {
			t.Fatalf("client %s differs: %s", id, d)
		}
	}
}

func diffTokenRows(a, b *tokenRow) string {
	times := func(r *tokenRow) [2]time.Time {
		return [2]time.Time{r.requestedAt.UTC().Truncate(time.Microsecond), r.expiresAt.UTC().Truncate(time.Microsecond)}
	}
	switch {
	case a.kind != b.kind || a.requestID != b.requestID || a.grantType != b.grantType || a.status != b.status:
		return "kind, family, grant type or status"
	case a.client != b.client || (a.account == nil) != (b.account == nil) || (a.account != nil && *a.account != *b.account):
		return "client or account"
	case strings.Join(a.requestedScopes, " ") != strings.Join(b.requestedScopes, " ") || strings.Join(a.grantedScopes, " ") != strings.Join(b.grantedScopes, " "):
		return "scopes"
	case a.redirectURI != b.redirectURI || a.challenge != b.challenge || a.method != b.method:
		return "redirect URI or PKCE"
	case times(a) != times(b):
		return "times"
	}
	return diffClients(a.clientRow, b.clientRow)
}

func diffClients(a, b *oauthClient) string {
	if a.id != b.id || a.name != b.name || a.secretHash != b.secretHash || a.public != b.public || a.implicit != b.implicit ||
		strings.Join(a.redirectURIs, " ") != strings.Join(b.redirectURIs, " ") || strings.Join(a.scopes, " ") != strings.Join(b.scopes, " ") ||
		strings.Join(a.grantTypes, " ") != strings.Join(b.grantTypes, " ") {
		return "client"
	}
	return ""
}

// secondInstance is another `ledger serve` on the same database and log:
// its own token-validity model, commands and HTTP server (the projections
// are the first instance's).
type secondInstance struct {
	url    string
	cmds   *commands.Handler
	tokens *projections.TokenValidity
	stop   func()
}

func (l *oauthLedger) secondInstance() *secondInstance {
	l.t.Helper()
	tokens := projections.NewTokenValidity(l.pool, l.store, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = tokens.Run(ctx) }()
	cmds := commands.New(commands.Deps{Store: l.store, Consistency: projections.Consistency{tokens}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(Config{PublicURL: oauthIssuer, OAuthSecret: []byte(oauthTestSecret)}, Deps{Pool: l.pool, Logger: log})
	Mount(s, App{Commands: cmds, Pool: l.pool, Store: l.store, Tokens: tokens})
	srv := httptest.NewServer(s.Handler())
	var stopped bool
	stop := func() {
		if !stopped {
			stopped = true
			srv.Close()
			cancel()
			<-done
		}
	}
	l.t.Cleanup(stop)
	waitServing(l.t, tokens)
	return &secondInstance{url: srv.URL, cmds: cmds, tokens: tokens, stop: stop}
}

// Two instances on one database: what one revokes, the other's model has
// when the revoking call returns — both ways — and an instance that stops
// is no longer waited for.
func TestTokenValidityAcrossInstances(t *testing.T) {
	a := newOAuthLedger(t, nil)
	b := a.secondInstance()
	app := a.client("fleet", commands.RegisterClient{Scopes: []string{consent.ScopeProfile}})
	rs := a.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	onB := func(token string) bool {
		t.Helper()
		saved := a.url
		a.url = b.url
		defer func() { a.url = saved }()
		return a.active(rs, token)
	}

	acct := a.user(app, consent.ScopeProfile)
	code, verifier := a.code(app, acct, consent.ScopeProfile)
	tok := a.exchange(app, code, verifier).want(t, 200, "")
	if !onB(tok.str("access_token")) {
		t.Fatal("instance B does not accept a token A issued")
	}
	// Revoked on A (the partner's logout): B's model has it on return.
	a.post("/oauth2/revoke", url.Values{"token": {tok.str("access_token")}}, app.id, app.secret).want(t, 200, "")
	if activeInMemory(t, b.tokens, tok.str("access_token")) || onB(tok.str("access_token")) {
		t.Fatal("instance B still answers for a token A revoked")
	}

	// Revoked through B's commands (the user's revocation): A's model has it.
	code, verifier = a.code(app, acct, consent.ScopeProfile)
	tok = a.exchange(app, code, verifier).want(t, 200, "")
	if !activeInMemory(t, b.tokens, tok.str("access_token")) && !onB(tok.str("access_token")) {
		t.Fatal("instance B does not accept a new token")
	}
	if err := b.cmds.RevokeAccess(context.Background(), acct, uuid.MustParse(app.id), "user"); err != nil {
		t.Fatal(err)
	}
	if activeInMemory(t, a.tokens, tok.str("access_token")) || a.active(rs, tok.str("access_token")) {
		t.Fatal("instance A still answers for a token whose grant B revoked")
	}

	// B stops: it answers nothing from memory, and A's commands stop
	// waiting for it at once.
	b.stop()
	if b.tokens.Serving() {
		t.Fatal("a stopped instance still answers from memory")
	}
	var n int
	if err := a.pool.QueryRow(context.Background(), `SELECT count(*) FROM token_cache_instances`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d instances registered (%v), want 1", n, err)
	}
	started := time.Now()
	a.grant(app, uuid.New(), consent.ScopeProfile)
	if d := time.Since(started); d > 2*time.Second {
		t.Fatalf("a command took %s after the other instance stopped", d)
	}
}
