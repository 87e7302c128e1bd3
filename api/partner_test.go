package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/projections"
)

// partnerClient registers a partner that creates accounts (seed 003): the
// client-credentials grant with accounts:create, and the code grant for the
// user scopes it asks of the people it creates accounts for.
func (l *oauthLedger) partnerClient(name string, userScopes ...string) oauthClientReg {
	l.t.Helper()
	return l.client(name, commands.RegisterClient{GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"},
		Scopes: append([]string{consent.ScopeAccountsCreate}, userScopes...)})
}

// ccToken is a client-credentials access token of client with scope.
func (l *oauthLedger) ccToken(client oauthClientReg, scope string) string {
	l.t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	return l.post("/oauth2/token", form, client.id, client.secret).want(l.t, 200, "").str("access_token")
}

// partner calls the partner API with a bearer token; body is JSON or "".
func (l *oauthLedger) partner(method, path, token, body string) oauthAnswer {
	l.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, l.url+path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := oauthAnswer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// problem checks a problem+json answer with its status and code.
func (a oauthAnswer) problem(t *testing.T, status int, code string) oauthAnswer {
	t.Helper()
	if a.status != status || a.body["code"] != code || !strings.HasPrefix(a.header.Get("Content-Type"), ContentTypeProblem) {
		t.Fatalf("HTTP %d (%s), want %d %s: %s", a.status, a.header.Get("Content-Type"), status, code, a.raw)
	}
	return a
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// createAccount is the seed's account creation request; it answers the
// account id and the code.
func (l *oauthLedger) createAccount(token, email string) (uuid.UUID, string) {
	l.t.Helper()
	a := l.partner("POST", "/v1/partner/accounts", token, js(map[string]string{"firstName": "Doc", "lastName": "Test",
		"email": email, "username": "doctest", "password": "Doc-Test-Password-1"}))
	if a.status != http.StatusCreated {
		l.t.Fatalf("create account: HTTP %d: %s", a.status, a.raw)
	}
	acct := a.body["account"].(map[string]any)
	code := acct["accessToken"].(map[string]any)["code"].(string)
	l.keep(code)
	return uuid.MustParse(acct["id"].(string)), code
}

func consentsOf(t *testing.T, a oauthAnswer) []map[string]any {
	t.Helper()
	a.want(t, 200, "")
	var out []map[string]any
	for _, c := range a.body["consents"].([]any) {
		out = append(out, c.(map[string]any))
	}
	return out
}

// TestPartnerSeed003Scenario1 is the seed's whole first scenario: a
// client-credentials token creates the account, the answer's code redeems
// at the token endpoint, the token stands for the new account and reads its
// grant, and the partner confirms it told the person.
func TestPartnerSeed003Scenario1(t *testing.T) {
	l := newOAuthLedger(t, nil)
	partner := l.partnerClient("carapp", consent.ScopeProfile, consent.ScopeVehicleStatus)
	rs := l.client("resource", commands.RegisterClient{GrantTypes: []string{"client_credentials"}})
	cc := l.ccToken(partner, consent.ScopeAccountsCreate)

	created := l.partner("POST", "/v1/partner/accounts", cc,
		`{"firstName": "Doc","lastName": "Test","email": "Matt@Example.com","username": "doctest","password": "Doc-Test-Password-1"}`)
	if created.status != 201 || created.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: HTTP %d: %s", created.status, created.raw)
	}
	var shape struct {
		Account      map[string]json.RawMessage `json:"account"`
		TotalRecords int                        `json:"totalRecords"`
	}
	if err := json.Unmarshal([]byte(created.raw), &shape); err != nil || len(created.body) != 2 || shape.TotalRecords != 1 {
		t.Fatalf("answer: %s", created.raw)
	}
	var keys []string
	for k := range shape.Account {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"accessToken", "dateCreated", "email", "firstName", "id", "lastName", "phone", "preferredContact", "timeZone", "username", "zipcode"}; !slices.Equal(keys, want) {
		t.Fatalf("account fields %v, want the seed's %v", keys, want)
	}
	for k, want := range map[string]string{"firstName": `"Doc"`, "lastName": `"Test"`, "username": `"doctest"`, "email": `"matt@example.com"`,
		"zipcode": "null", "phone": "null", "timeZone": "null", "preferredContact": "null"} {
		if string(shape.Account[k]) != want {
			t.Errorf("%s = %s, want %s", k, shape.Account[k], want)
		}
	}
	if !regexp.MustCompile(`^"\d{8}T\d{6}\+0000"$`).Match(shape.Account["dateCreated"]) {
		t.Errorf("dateCreated %s is not the seed's form", shape.Account["dateCreated"])
	}
	acct := created.body["account"].(map[string]any)
	id := uuid.MustParse(acct["id"].(string))
	code := acct["accessToken"].(map[string]any)["code"].(string)
	l.keep(code)

	// The code redeems with the client's credentials and its redirect URI,
	// without PKCE, once.
	tok := l.exchange(partner, code, "").want(t, 200, "")
	if tok.body["expires_in"] != float64(86400) || tok.str("refresh_token") == "" || tok.str("scope") != consent.ScopeProfile+" "+consent.ScopeVehicleStatus {
		t.Fatalf("token answer: %s", tok.raw)
	}
	l.exchange(partner, code, "").want(t, 400, "invalid_grant")
	// The replay revoked what the code issued: take a fresh code the same
	// way for the rest of the journey.
	in := l.introspect(rs, tok.str("access_token"))
	if in.body["active"] != false {
		t.Fatalf("token active after its code was replayed: %s", in.raw)
	}
	id2, code2 := l.createAccount(cc, "second@example.com")
	tok = l.exchange(partner, code2, "").want(t, 200, "")
	in = l.introspect(rs, tok.str("access_token"))
	if in.body["active"] != true || in.str("sub") != id2.String() || in.str("client_id") != partner.id {
		t.Fatalf("introspection: %s", in.raw)
	}
	user := tok.str("access_token")

	// The account's token reads its grant, and only that one.
	list := consentsOf(t, l.partner("GET", "/v1/partner/consents?accountId="+id2.String(), user, ""))
	if len(list) != 1 || list[0]["accountId"] != id2.String() || list[0]["status"] != "granted" || list[0]["noticeVersion"] != NoticeVersion ||
		list[0]["collectionMethod"] != partnerCollectionMethod || list[0]["grantedAt"] == nil || list[0]["revokedAt"] != nil ||
		js(list[0]["scopes"]) != js([]string{consent.ScopeProfile, consent.ScopeVehicleStatus}) {
		t.Fatalf("consents: %v", list)
	}
	if list := consentsOf(t, l.partner("GET", "/v1/partner/consents", user, "")); len(list) != 1 || list[0]["accountId"] != id2.String() {
		t.Fatalf("an account's token sees %v", list)
	}
	if list := consentsOf(t, l.partner("GET", "/v1/partner/consents?accountId="+id.String(), user, "")); len(list) != 0 {
		t.Fatalf("an account's token sees another account's grant: %v", list)
	}
	// The client's own token sees both, paged.
	page := l.partner("GET", "/v1/partner/consents?limit=1", cc, "")
	first := consentsOf(t, page)
	next, _ := page.body["next"].(string)
	second := consentsOf(t, l.partner("GET", "/v1/partner/consents?limit=1&after="+next, cc, ""))
	if len(first) != 1 || len(second) != 1 || first[0]["accountId"] == second[0]["accountId"] || next != first[0]["accountId"] {
		t.Fatalf("pages %v then %v", first, second)
	}

	// Notice: the client's token confirms; the account's token may not.
	pending := func(id uuid.UUID) bool {
		var p bool
		if err := l.pool.QueryRow(context.Background(), `SELECT notice_pending FROM accounts WHERE account_id = $1`, id).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if !pending(id2) {
		t.Fatal("a partner-created account is not notice pending")
	}
	l.partner("POST", "/v1/partner/accounts/"+id2.String()+"/notice", user, "").problem(t, 403, "insufficient_scope")
	if a := l.partner("POST", "/v1/partner/accounts/"+id2.String()+"/notice", cc, ""); a.status != 204 {
		t.Fatalf("notice: HTTP %d: %s", a.status, a.raw)
	}
	if pending(id2) {
		t.Fatal("notice still pending after the confirmation")
	}
	l.partner("POST", "/v1/partner/accounts/"+id2.String()+"/notice", cc, "").want(t, 204, "")
	l.partner("POST", "/v1/partner/accounts/"+uuid.NewString()+"/notice", cc, "").problem(t, 404, "unknown_account")

	// Strict binding and a taken address.
	l.partner("POST", "/v1/partner/accounts", cc, `{"email":"x@example.com","password":"Doc-Test-Password-1","zipcode":"1"}`).problem(t, 400, "unknown_field")
	l.partner("POST", "/v1/partner/accounts", cc, js(map[string]string{"email": "MATT@example.com", "password": "Doc-Test-Password-1"})).problem(t, 409, "email_taken")

	types := l.eventTypes()
	if types[consent.TypeGranted] != 2 || types[consent.TypeCodeIssued] != 2 {
		t.Fatalf("events: %v", types)
	}
	l.noSecretsStored()
}

// TestPartnerScopes: creating accounts needs a client-credentials token
// granted accounts:create, and a client able to receive codes.
func TestPartnerScopes(t *testing.T) {
	l := newOAuthLedger(t, nil)
	partner := l.partnerClient("carapp", consent.ScopeProfile)
	body := js(map[string]string{"email": "p@example.com", "password": "Doc-Test-Password-1"})

	a := l.partner("POST", "/v1/partner/accounts", l.ccToken(partner, ""), body).problem(t, 403, "insufficient_scope")
	if h := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="insufficient_scope"`) || !strings.Contains(h, consent.ScopeAccountsCreate) {
		t.Fatalf("WWW-Authenticate: %q", h)
	}
	// A token standing for an account never creates accounts.
	acct := l.user(partner, consent.ScopeProfile)
	code, verifier := l.code(partner, acct, consent.ScopeProfile)
	user := l.exchange(partner, code, verifier).want(t, 200, "").str("access_token")
	l.partner("POST", "/v1/partner/accounts", user, body).problem(t, 403, "insufficient_scope")

	// A client that cannot redeem codes is refused before anything is
	// recorded.
	ccOnly := l.client("ccOnly", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeAccountsCreate}})
	l.partner("POST", "/v1/partner/accounts", l.ccToken(ccOnly, consent.ScopeAccountsCreate), body).problem(t, 403, "unauthorized_client")
	var n int
	if err := l.pool.QueryRow(context.Background(), `SELECT count(*) FROM accounts`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d accounts after refusals (%v)", n, err)
	}
}

// TestPartnerBearer: only an active access token of the provider opens the
// partner API; revocation and expiry hold at once.
func TestPartnerBearer(t *testing.T) {
	l := newOAuthLedger(t, nil)
	partner := l.partnerClient("carapp", consent.ScopeProfile)
	path := "/v1/partner/consents"

	a := l.partner("GET", path, "", "").problem(t, 401, "unauthenticated")
	if a.header.Get("WWW-Authenticate") != `Bearer realm="ledger-partner"` {
		t.Fatalf("WWW-Authenticate: %q", a.header.Get("WWW-Authenticate"))
	}
	for name, token := range map[string]string{"unknown": "nonsense.token", "session-like": uuid.NewString()} {
		a := l.partner("GET", path, token, "").problem(t, 401, "invalid_token")
		if h := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer ") || !strings.Contains(h, `error="invalid_token"`) {
			t.Fatalf("%s: WWW-Authenticate %q", name, h)
		}
	}

	// Revoked: refused by the very next request.
	cc := l.ccToken(partner, consent.ScopeAccountsCreate)
	l.partner("GET", path, cc, "").want(t, 200, "")
	l.post("/oauth2/revoke", url.Values{"token": {cc}}, partner.id, partner.secret).want(t, 200, "")
	l.partner("GET", path, cc, "").problem(t, 401, "invalid_token")

	// A refresh token is no bearer credential.
	acct := l.user(partner, consent.ScopeProfile)
	code, verifier := l.code(partner, acct, consent.ScopeProfile)
	tok := l.exchange(partner, code, verifier).want(t, 200, "")
	l.partner("GET", path, tok.str("access_token"), "").want(t, 200, "")
	l.partner("GET", path, tok.str("refresh_token"), "").problem(t, 401, "invalid_token")
	// The user's revocation of the grant ends the account's token.
	if err := l.cmds.RevokeAccess(context.Background(), acct, uuid.MustParse(partner.id), "user"); err != nil {
		t.Fatal(err)
	}
	l.partner("GET", path, tok.str("access_token"), "").problem(t, 401, "invalid_token")

	// Expired: a token issued by a provider like the mounted one whose
	// access tokens are born expired.
	log := slog.New(slog.DiscardHandler)
	expiring := newOAuthProvider(Config{PublicURL: oauthIssuer, OAuthSecret: []byte("a test secret that is long enough to key the HMAC")},
		App{Commands: l.cmds, Pool: l.pool, Store: l.store}, log)
	expiring.config.AccessTokenLifespan = -time.Second
	e := echo.New()
	e.POST("/oauth2/token", expiring.token)
	srv := httptest.NewServer(e)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL+"/oauth2/token", strings.NewReader("grant_type=client_credentials&scope=accounts%3Acreate"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(partner.id, partner.secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var expired struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&expired)
	resp.Body.Close()
	if resp.StatusCode != 200 || expired.AccessToken == "" {
		t.Fatalf("expiring token: HTTP %d", resp.StatusCode)
	}
	l.keep(expired.AccessToken)
	l.partner("GET", path, expired.AccessToken, "").problem(t, 401, "invalid_token")
	l.noSecretsStored()
}

// TestPartnerClientIsolation: a client sees its own grants and accounts
// only, and an account it may not see answers like one that does not exist.
func TestPartnerClientIsolation(t *testing.T) {
	l := newOAuthLedger(t, nil)
	a := l.partnerClient("alpha", consent.ScopeProfile, consent.ScopeVehicleStatus)
	b := l.partnerClient("beta", consent.ScopeProfile, consent.ScopeVehicleStatus)
	ccA, ccB := l.ccToken(a, consent.ScopeAccountsCreate), l.ccToken(b, consent.ScopeAccountsCreate)
	acctA, _ := l.createAccount(ccA, "a@example.com")
	acctB, _ := l.createAccount(ccB, "b@example.com")

	for _, c := range []struct {
		token string
		own   uuid.UUID
		other uuid.UUID
	}{{ccA, acctA, acctB}, {ccB, acctB, acctA}} {
		if list := consentsOf(t, l.partner("GET", "/v1/partner/consents", c.token, "")); len(list) != 1 || list[0]["accountId"] != c.own.String() {
			t.Fatalf("own grants: %v", list)
		}
		if list := consentsOf(t, l.partner("GET", "/v1/partner/consents?accountId="+c.other.String(), c.token, "")); len(list) != 0 {
			t.Fatalf("another client's grant: %v", list)
		}
		steps := "/steps?carAssociationID=" + uuid.NewString()
		other := l.partner("GET", "/v1/partner/accounts/"+c.other.String()+steps, c.token, "").problem(t, 404, "unknown_account")
		none := l.partner("GET", "/v1/partner/accounts/"+uuid.NewString()+steps, c.token, "").problem(t, 404, "unknown_account")
		if other.body["detail"] != none.body["detail"] {
			t.Fatalf("another client's account answers differently from none: %s / %s", other.raw, none.raw)
		}
		l.partner("POST", "/v1/partner/accounts/"+c.other.String()+"/notice", c.token, "").problem(t, 404, "unknown_account")
	}
	l.partner("GET", "/v1/partner/consents?accountId=nope", ccA, "").problem(t, 400, "invalid_parameter")
}

// TestPartnerSteps: the steps of a car association, from the ledger's
// facts, for a client granted a vehicle scope; a profile-only grant sees
// nothing.
func TestPartnerSteps(t *testing.T) {
	l := newOAuthLedger(t, nil)
	ctx := context.Background()
	// The harness projects accounts, clients, consents and tokens; the
	// steps' facts need the vehicles and steps projections too.
	runner := projections.NewRunner(l.pool, l.store, slog.New(slog.DiscardHandler), nil, projections.Vehicles{}, projections.Steps{})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	settled := func() {
		t.Helper()
		evs := l.events()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := runner.WaitFor(wctx, evs[len(evs)-1].Position); err != nil {
			t.Fatal(err)
		}
	}

	fleet := l.partnerClient("fleet", consent.ScopeProfile, consent.ScopeVehicleRemote)
	cc := l.ccToken(fleet, consent.ScopeAccountsCreate)
	acct, code := l.createAccount(cc, "driver@example.com")
	const vin = "VR1AB12C3D4567890"
	if _, _, err := l.cmds.AssociateVehicle(ctx, acct, vin); err != nil {
		t.Fatal(err)
	}
	car, _, err := l.cmds.SubscribeService(ctx, acct, vin, "remoteCommands")
	if err != nil {
		t.Fatal(err)
	}
	settled()
	path := "/v1/partner/accounts/" + acct.String() + "/steps?carAssociationID=" + car.String()
	step := func(body map[string]any, name, status string, order float64) {
		t.Helper()
		s, ok := body[name].(map[string]any)
		if !ok || s["name"] != name || s["status"] != status || s["order"] != order {
			t.Fatalf("step %s: %v, want %s order %v", name, body[name], status, order)
		}
	}
	all := l.partner("GET", path, cc, "").want(t, 200, "").body
	step(all, "trusterPhoneNumber", "todo", 1)
	step(all, "deviceActivation", "todo", 2)
	step(all, "mediumCarKey", "todo", 3)
	if all["carAssociationID"] != car.String() || all["service"] != "remoteCommands" {
		t.Fatalf("steps: %v", all)
	}

	// The car key proven: mediumCarKey is done, whichever device proved it.
	if err := l.cmds.ChallengeCarKey(ctx, acct, "phone-1", vin); err != nil {
		t.Fatal(err)
	}
	shown := l.outbox.List(vin)
	if err := l.cmds.ProveCarKey(ctx, acct, "phone-1", vin, shown[len(shown)-1].Code); err != nil {
		t.Fatal(err)
	}
	settled()
	todo := l.partner("GET", path+"&status=todo", cc, "").want(t, 200, "").body
	step(todo, "trusterPhoneNumber", "todo", 1)
	step(todo, "deviceActivation", "todo", 2)
	if _, ok := todo["mediumCarKey"]; ok {
		t.Fatalf("todo lists a done step: %v", todo)
	}
	doneSteps := l.partner("GET", path+"&status=alreadyDone", cc, "").want(t, 200, "").body
	step(doneSteps, "mediumCarKey", "alreadyDone", 3)
	if _, ok := doneSteps["trusterPhoneNumber"]; ok {
		t.Fatalf("alreadyDone lists a todo step: %v", doneSteps)
	}
	// A device enrolled with a trusted phone: every step is done.
	if err := l.cmds.RequestSmsCode(ctx, acct, "phone-1", "phoneNumberCertification", "0612345678"); err != nil {
		t.Fatal(err)
	}
	sms := l.outbox.List("0612345678")
	if err := l.cmds.EnrollWithPhoneNumber(ctx, acct, "phone-1", "0612345678", sms[len(sms)-1].Code, "424242"); err != nil {
		t.Fatal(err)
	}
	settled()
	if todo := l.partner("GET", path+"&status=todo", cc, "").want(t, 200, "").body; len(todo) != 2 {
		t.Fatalf("steps left: %v", todo)
	}
	step(l.partner("GET", path, cc, "").want(t, 200, "").body, "deviceActivation", "alreadyDone", 2)

	// The account's own token reads them too; not another account's.
	user := l.exchange(fleet, code, "").want(t, 200, "").str("access_token")
	l.partner("GET", path, user, "").want(t, 200, "")
	other, _ := l.createAccount(cc, "other@example.com")
	l.partner("GET", "/v1/partner/accounts/"+other.String()+"/steps?carAssociationID="+car.String(), user, "").problem(t, 404, "unknown_account")
	// The client's token, for its other account: the car is not that
	// account's.
	l.partner("GET", "/v1/partner/accounts/"+other.String()+"/steps?carAssociationID="+car.String(), cc, "").problem(t, 404, "unknown_car_association")
	l.partner("GET", path+"&status=some", cc, "").problem(t, 400, "invalid_parameter")
	l.partner("GET", "/v1/partner/accounts/"+acct.String()+"/steps", cc, "").problem(t, 400, "invalid_parameter")

	// A client the account granted only its profile sees no steps, exactly
	// as if the account did not exist.
	profile := l.client("profile", commands.RegisterClient{GrantTypes: []string{"client_credentials"}, Scopes: []string{consent.ScopeProfile}})
	l.grant(profile, acct, consent.ScopeProfile)
	l.partner("GET", path, l.ccToken(profile, ""), "").problem(t, 404, "unknown_account")

	// The grant revoked: no more steps (and the account's token is over).
	if err := l.cmds.RevokeAccess(ctx, acct, uuid.MustParse(fleet.id), "user"); err != nil {
		t.Fatal(err)
	}
	l.partner("GET", path, cc, "").problem(t, 404, "unknown_account")
	l.partner("GET", path, user, "").problem(t, 401, "invalid_token")
}
