package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain"
)

// The kinds of credential every route is called with, in the order of a
// matrix row.
const (
	credNone     = iota // no Authorization header
	credUser            // the end user's session (the owner of the data named in paths)
	credOther           // another end user's session
	credPartnerA        // partner A: client-credentials token (HTTP Basic at /oauth2/*); A holds the user's grant
	credPartnerB        // partner B: the same for a partner the user never granted
	credAuditor         // an auditor key
	credAdmin           // the admin token
	credExpired         // the user's session, expired
	credRevoked         // the user's session, closed (logout)
	credKinds
)

var credNames = [credKinds]string{"none", "user", "other user", "partner A", "partner B", "auditor", "admin", "expired", "revoked"}

// The order cells of a row are run in: the owner of the data last, so that
// a route that changes it (logout, RemoveProperty) changes it after every
// other credential was tried.
var credOrder = []int{credNone, credExpired, credRevoked, credPartnerB, credPartnerA, credAuditor, credAdmin, credOther, credUser}

// expect is the answer of one cell: an exact status ("404") or a class
// ("2xx").
type expect string

func (e expect) matches(status int) bool {
	s := strconv.Itoa(status)
	if strings.HasSuffix(string(e), "xx") {
		return s[:1] == string(e)[:1]
	}
	return s == string(e)
}

// matrixRow is one route: how to call it and the answer for each
// credential, in the order of the cred* constants.
type matrixRow struct {
	path string                // with its parameters filled in (and a query, if any)
	body func(cred int) string // nil: no body
	form bool                  // the body is a form, not JSON
	want [credKinds]expect     // none, user, other, partner A, partner B, auditor, admin, expired, revoked
	last bool                  // changes what later rows need: run after the others
	// signsIn: the body carries the user's own credential, so every caller
	// gets the user's answer.
	signsIn bool
	note    string // why, when the row is not obvious
}

// Shorthands for the most common rows.
var (
	// onlyUser: an end-user route: each user gets their own answer.
	onlyUser = [credKinds]expect{"401", "2xx", "2xx", "401", "401", "401", "401", "401", "401"}
	// onlyAdmin: an admin route.
	onlyAdmin = [credKinds]expect{"401", "401", "401", "401", "401", "401", "2xx", "401", "401"}
	// onlyAuditor: an auditor route; every other credential, the admin
	// token included, is refused.
	onlyAuditor = [credKinds]expect{"401", "401", "401", "401", "401", "200", "401", "401", "401"}
	// public: the same answer for every caller.
	public = func(e expect) [credKinds]expect {
		var w [credKinds]expect
		for i := range w {
			w[i] = e
		}
		return w
	}
)

// switchClock is the command side's clock: the wall clock moved by an
// offset, so that a session can be opened in the past.
type switchClock struct{ offset atomic.Int64 }

func (c *switchClock) Now() time.Time {
	return domain.SystemClock{}.Now().Add(time.Duration(c.offset.Load()))
}

// TestAuthorizationMatrix calls every route of the router with every kind
// of credential and checks the answer. The route list comes from the
// router: a route without a row fails the test, and so does a row whose
// route is gone. Answers to callers who must not see the user's data never
// carry the user's account id, e-mail or VIN (the problem's instance, which
// repeats the path, aside).
func TestAuthorizationMatrix(t *testing.T) {
	clock := &switchClock{}
	l := newLedgerServer(t, nil, func(app *api.App) { app.Commands.Clock = clock }, func(c *api.Config, _ *api.Deps) {
		c.Limits = api.Limits{SourceFailures: -1, ClientSecretFailures: -1} // the matrix fails credentials on purpose
	})
	bg := context.Background()

	// The user, with a car, a service and an enrolled phone; another user.
	const userEmail, otherVIN = "matrix-user@example.com", "VR1AB12C3D4567892"
	clock.offset.Store(int64(-2 * 30 * 24 * time.Hour)) // sessions live 30 days
	l.signIn(userEmail, "phone-u")
	expired := l.device(userEmail, "phone-u").token
	clock.offset.Store(0)
	revoked := l.device(userEmail, "phone-u").token
	l.do("DELETE", "/v1/sessions/current", "", "Authorization", "Bearer "+revoked, "X-Device-Id", "phone-u").want(t, 204, "")
	signedIn := l.do("POST", "/v1/sessions", js(map[string]string{"email": userEmail, "password": pw, "deviceId": "phone-u"})).want(t, 201, "")
	user := &device{l: l, id: "phone-u", token: signedIn.body["sessionToken"].(string)}
	userID := signedIn.body["accountId"].(string)
	user.shortcut("0600000031", "1357")
	user.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	car := user.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"vehicleStatus"}`, 201, "").body["carAssociationID"].(string)
	l.signIn("matrix-other@example.com", "phone-o")
	other := l.device("matrix-other@example.com", "phone-o")
	other.rest("POST", "/v1/vehicles", js(map[string]string{"vin": otherVIN}), 201, "")

	// Partners A and B (B never granted anything), a third client whose
	// secret the admin row rotates, two auditors (one to revoke).
	partner := func(name string) (id, secret, token string) {
		reg := l.registerClient(map[string]any{"name": name, "redirectUris": []string{"https://" + name + ".example/cb"},
			"scopes":     []string{"accounts:create", "account:profile", "vehicle:status"},
			"grantTypes": []string{"authorization_code", "refresh_token", "client_credentials"}}).want(t, 201, "")
		id, secret = reg.body["clientId"].(string), reg.body["clientSecret"].(string)
		form := url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}}
		req, _ := http.NewRequest("POST", l.url+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
			t.Fatalf("client-credentials token of %s: HTTP %d %v", name, resp.StatusCode, err)
		}
		return id, secret, tok.AccessToken
	}
	aID, aSecret, aToken := partner("partner-a")
	bID, bSecret, bToken := partner("partner-b")
	cID, _, _ := partner("partner-c")
	if _, err := l.cmds.DecideConsent(bg, commands.ConsentDecision{AccountID: uuid.MustParse(userID), ClientID: uuid.MustParse(aID), Accept: true,
		Scopes: []string{"account:profile", "vehicle:status"}, VINs: []string{vin}, NoticeVersion: api.NoticeVersion, CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	_, auditorKey := l.issueAuditor("matrix auditor")
	// A spare account for the erasure row: no other row depends on it.
	l.signIn("matrix-spare@example.com", "phone-s")
	spareID := l.do("POST", "/v1/sessions", js(map[string]string{"email": "matrix-spare@example.com", "password": pw, "deviceId": "phone-s"})).
		want(t, 201, "").body["accountId"].(string)
	spareAuditor, _ := l.issueAuditor("spare auditor")

	// sign applies a credential to a request of path.
	basic := map[int][2]string{credPartnerA: {aID, aSecret}, credPartnerB: {bID, bSecret}}
	bearer := map[int]string{credUser: user.token, credOther: other.token, credPartnerA: aToken, credPartnerB: bToken,
		credAuditor: auditorKey, credAdmin: adminToken, credExpired: expired, credRevoked: revoked}
	device := map[int]string{credUser: "phone-u", credOther: "phone-o", credExpired: "phone-u", credRevoked: "phone-u"}
	sign := func(req *http.Request, cred int) {
		if pair, ok := basic[cred]; ok && strings.HasPrefix(req.URL.Path, "/oauth2/") && req.Method == "POST" && req.URL.Path != "/oauth2/prompt" {
			req.SetBasicAuth(pair[0], pair[1])
		} else if tok, ok := bearer[cred]; ok {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if d, ok := device[cred]; ok {
			req.Header.Set("X-Device-Id", d)
		}
	}

	n := 0
	unique := func(string) string { n++; return fmt.Sprintf("matrix-%d@example.com", n) }
	jsonBody := func(v any) func(int) string { return func(int) string { return js(v) } }
	sdkGet := jsonBody(map[string]any{"api": accountAPI, "parameters": map[string]any{"actionType": "strong", "type": "isDeviceActivated"}})
	sdkSet := jsonBody(map[string]any{"api": enrollAPI, "parameters": map[string]any{"action": "dance"}})
	oauthForm := func(v url.Values) func(int) string { return func(int) string { return v.Encode() } }

	// The matrix: METHOD + route (as the router names it) → row.
	// Columns: none, user, other, partner A, partner B, auditor, admin, expired, revoked.
	matrix := map[string]matrixRow{
		"GET /healthz": {path: "/healthz", want: public("200")},
		"GET /readyz":  {path: "/readyz", want: public("200")},
		"GET /metrics": {path: "/metrics", want: public("200")},
		"GET /.well-known/oauth-authorization-server": {path: "/.well-known/oauth-authorization-server", want: public("200")},
		"GET /v1/dev/outbox":                          {path: "/v1/dev/outbox?to=nobody", want: public("200"), note: "dev mode only: not mounted outside it"},

		"POST /v1/accounts": {path: "/v1/accounts", body: func(c int) string {
			return js(map[string]string{"email": unique(""), "password": pw})
		}, want: public("201")},
		"POST /v1/accounts/activate": {path: "/v1/accounts/activate", body: jsonBody(map[string]string{"token": "not-a-token"}), want: public("400")},
		"POST /v1/sessions": {path: "/v1/sessions", body: jsonBody(map[string]string{"email": userEmail, "password": pw, "deviceId": "phone-x"}),
			want: public("201"), signsIn: true, note: "the credential is in the body"},

		"GET /v1/me":          {path: "/v1/me", want: onlyUser},
		"GET /v1/me/consents": {path: "/v1/me/consents", want: onlyUser},
		"GET /v1/vehicles":    {path: "/v1/vehicles", want: onlyUser},
		"POST /v1/vehicles": {path: "/v1/vehicles", body: jsonBody(map[string]string{"vin": vin}),
			want: [credKinds]expect{"401", "200", "409", "401", "401", "401", "401", "401", "401"}, note: "the car is the user's: another user is refused"},
		"POST /v1/vehicles/:vin/services": {path: "/v1/vehicles/" + vin + "/services", body: jsonBody(map[string]string{"service": "vehicleStatus"}),
			want: [credKinds]expect{"401", "200", "404", "401", "401", "401", "401", "401", "401"}},
		"POST /v1/vehicles/:vin/carkey/challenge": {path: "/v1/vehicles/" + vin + "/carkey/challenge",
			want: [credKinds]expect{"401", "202", "404", "401", "401", "401", "401", "401", "401"}},
		"POST /v1/vehicles/:vin/carkey": {path: "/v1/vehicles/" + vin + "/carkey", body: jsonBody(map[string]string{"code": "000000"}),
			want: [credKinds]expect{"401", "4xx", "404", "401", "401", "401", "401", "401", "401"}, note: "a wrong code for the user"},
		"POST /pims/get": {path: "/pims/get", body: sdkGet, want: onlyUser},
		"POST /pims/set": {path: "/pims/set", body: sdkSet, want: onlyUser, note: "a FAILED envelope (HTTP 200) for users"},
		"DELETE /v1/me/consents/:clientId": {path: "/v1/me/consents/" + aID,
			want: [credKinds]expect{"401", "204", "404", "401", "401", "401", "401", "401", "401"}, last: true},
		"DELETE /v1/vehicles/:vin": {path: "/v1/vehicles/" + vin,
			want: [credKinds]expect{"401", "204", "404", "401", "401", "401", "401", "401", "401"}, last: true},
		"DELETE /v1/sessions/current": {path: "/v1/sessions/current", want: onlyUser, last: true},

		"GET /account/apps":  {path: "/account/apps", want: public("200"), note: "browser page with its own cookie session"},
		"POST /account/apps": {path: "/account/apps", body: func(int) string { return "action=signin" }, form: true, want: public("403"), note: "no portal cookie"},
		"GET /oauth2/authorize": {path: "/oauth2/authorize?response_type=code&client_id=" + aID + "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb",
			want: public("400"), note: "an unregistered redirect URI is never followed, whoever asks"},
		"GET /oauth2/prompt":  {path: "/oauth2/prompt", want: public("403"), note: "no prompt cookie"},
		"POST /oauth2/prompt": {path: "/oauth2/prompt", body: func(int) string { return "action=signin" }, form: true, want: public("403")},
		"POST /oauth2/token": {path: "/oauth2/token", body: oauthForm(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}}), form: true,
			want: [credKinds]expect{"400", "400", "400", "200", "200", "400", "400", "400", "400"},
			note: "client authentication by HTTP Basic; a bearer token is no client credential (invalid_request)"},
		"POST /oauth2/introspect": {path: "/oauth2/introspect", body: oauthForm(url.Values{"token": {aToken}}), form: true,
			want: [credKinds]expect{"401", "401", "401", "200", "200", "401", "401", "401", "401"}},
		"POST /oauth2/revoke": {path: "/oauth2/revoke", body: oauthForm(url.Values{"token": {"not-a-token"}}), form: true,
			want: [credKinds]expect{"400", "400", "400", "200", "200", "400", "400", "400", "400"}},

		"GET /v1/partner/consents": {path: "/v1/partner/consents",
			want: [credKinds]expect{"401", "401", "401", "200", "200", "401", "401", "401", "401"}, note: "each partner sees its own grants only"},
		"GET /v1/partner/accounts/:accountId/steps": {path: "/v1/partner/accounts/" + userID + "/steps?carAssociationID=" + car,
			want: [credKinds]expect{"401", "401", "401", "2xx", "404", "401", "401", "401", "401"}, note: "B was never granted the user"},
		"POST /v1/partner/accounts": {path: "/v1/partner/accounts", body: func(int) string {
			return js(map[string]string{"email": unique(""), "password": pw, "firstName": "M", "lastName": "X"})
		}, want: [credKinds]expect{"401", "401", "401", "201", "201", "401", "401", "401", "401"}},
		"POST /v1/partner/accounts/:accountId/notice": {path: "/v1/partner/accounts/" + userID + "/notice",
			want: [credKinds]expect{"401", "401", "401", "404", "404", "401", "401", "401", "401"}, note: "the user was not created by a partner"},

		"GET /v1/admin/projections":                {path: "/v1/admin/projections", want: onlyAdmin},
		"POST /v1/admin/projections/:name/rebuild": {path: "/v1/admin/projections/no-such-projection/rebuild", want: withAdmin("404")},
		"POST /v1/admin/clients":                   {path: "/v1/admin/clients", body: jsonBody(map[string]any{"name": "matrix", "grantTypes": []string{"client_credentials"}, "scopes": []string{"accounts:create"}}), want: withAdmin("201")},
		"POST /v1/admin/clients/:clientId/secret":  {path: "/v1/admin/clients/" + cID + "/secret", want: withAdmin("200")},
		"POST /v1/admin/steps/:stepsID/reset":      {path: "/v1/admin/steps/999999999/reset", want: withAdmin("404")},
		"POST /v1/admin/steps/reset":               {path: "/v1/admin/steps/reset", want: withAdmin("200")},
		"POST /v1/admin/auditors":                  {path: "/v1/admin/auditors", body: jsonBody(map[string]string{"name": "another"}), want: withAdmin("201")},
		"DELETE /v1/admin/auditors/:auditorId":     {path: "/v1/admin/auditors/" + spareAuditor, want: withAdmin("204"), last: true},
		"POST /v1/admin/accounts/:id/erase": {path: "/v1/admin/accounts/" + spareID + "/erase", want: withAdmin("200"), last: true,
			note: "a spare account: erasing the user would change every later row"},

		"GET /v1/audit/whoami":      {path: "/v1/audit/whoami", want: onlyAuditor},
		"GET /v1/audit/public-key":  {path: "/v1/audit/public-key", want: onlyAuditor},
		"GET /v1/audit/checkpoints": {path: "/v1/audit/checkpoints", want: onlyAuditor},
		"GET /v1/audit/verify":      {path: "/v1/audit/verify?accountId=" + userID, want: onlyAuditor},
		"GET /v1/audit/accounts/:id/events": {path: "/v1/audit/accounts/" + userID + "/events", want: onlyAuditor,
			note: "the subject's history: neither the user, nor a partner, nor the admin token reads it"},
		"GET /v1/audit/accounts/:id/consents":                   {path: "/v1/audit/accounts/" + userID + "/consents", want: onlyAuditor},
		"GET /v1/audit/accounts/:id/consents/:clientId/receipt": {path: "/v1/audit/accounts/" + userID + "/consents/" + aID + "/receipt", want: onlyAuditor},
		"GET /v1/audit/clients/:clientId/consents":              {path: "/v1/audit/clients/" + aID + "/consents", want: onlyAuditor},
		"GET /v1/audit/clients/:clientId/security-events": {path: "/v1/audit/clients/" + aID + "/security-events", want: onlyAuditor,
			note: "partner A's own authentication locks: A's token does not read them either"},
		"GET /v1/audit/security/events": {path: "/v1/audit/security/events", want: onlyAuditor},
		"GET /v1/me/consents/:clientId/receipt": {path: "/v1/me/consents/" + aID + "/receipt",
			want: [credKinds]expect{"401", "200", "404", "401", "401", "401", "401", "401", "401"},
			note: "the receipt of the caller's own grant: another user has none to A"},

		"GET /openapi.json": {path: "/openapi.json", want: public("200")},
		"GET /docs":         {path: "/docs", want: public("200")},
		"GET /admin":        {path: "/admin", want: public("200"), note: "the sign-in form: the page has its own cookie session, a bearer token signs nobody in"},
		"POST /admin/login": {path: "/admin/login", body: func(int) string { return "token=not-the-token" }, form: true, want: public("401"),
			note: "the admin token is the form's field, not a header"},
		"POST /admin/logout": {path: "/admin/logout", body: func(int) string { return "csrf=x" }, form: true, want: public("403"),
			note: "no page session cookie and no CSRF value: even the admin token in a header is refused"},
		"POST /admin/projections/:name/rebuild": {path: "/admin/projections/accounts/rebuild", body: func(int) string { return "csrf=x" }, form: true,
			want: public("403"), note: "no page session cookie and no CSRF value: even the admin token in a header is refused"},
	}

	// Every route has a row, and every row a route.
	routes := routeKeys(t)
	for _, r := range routes {
		if _, ok := matrix[r]; !ok {
			t.Errorf("route %s has no row in the authorization matrix (api/authz_matrix_test.go): add one with the answer "+
				"for each credential (none, user, other user, partner A, partner B, auditor, admin, expired, revoked)", r)
		}
	}
	for r := range matrix {
		if !containsString(routes, r) {
			t.Errorf("the authorization matrix has a row for %s, which the router does not serve: remove it", r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	leaks := []string{userID, userEmail, vin}
	keys := append([]string(nil), routes...)
	sort.SliceStable(keys, func(i, j int) bool { return !matrix[keys[i]].last && matrix[keys[j]].last })
	// Logout last of all: it ends the user's session.
	sort.SliceStable(keys, func(i, j int) bool { return keys[j] == "DELETE /v1/sessions/current" && keys[i] != keys[j] })
	cells := 0
	defer func() { t.Logf("%d routes × %d credentials: %d answers checked", len(keys), credKinds, cells) }()
	for _, key := range keys {
		row := matrix[key]
		method, _, _ := strings.Cut(key, " ")
		for _, cred := range credOrder {
			var body io.Reader
			if row.body != nil {
				body = strings.NewReader(row.body(cred))
			}
			req, _ := http.NewRequest(method, l.url+row.path, body)
			if row.body != nil {
				if row.form {
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				} else {
					req.Header.Set("Content-Type", "application/json")
				}
			}
			sign(req, cred)
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cells++
			if !row.want[cred].matches(resp.StatusCode) {
				t.Errorf("%s as %s: HTTP %d, want %s: %.300s", key, credNames[cred], resp.StatusCode, row.want[cred], raw)
				continue
			}
			if row.signsIn || cred == credUser || cred == credPartnerA || cred == credAuditor || cred == credAdmin {
				continue
			}
			var problem map[string]any
			if json.Unmarshal(raw, &problem) == nil && problem["instance"] != nil {
				delete(problem, "instance")
				raw, _ = json.Marshal(problem)
			}
			for _, leak := range leaks {
				if strings.Contains(string(raw), leak) {
					t.Errorf("%s as %s: the answer names the user's %q: %.300s", key, credNames[cred], leak, raw)
				}
			}
		}
	}
}

// withAdmin: an admin route whose admin answer is e.
func withAdmin(e expect) [credKinds]expect {
	w := onlyAdmin
	w[credAdmin] = e
	return w
}

// routeKeys lists the routes the ledger mounts (as `ledger serve` in dev
// mode does), "METHOD path", without Echo's not-found placeholders.
func routeKeys(t *testing.T) []string {
	t.Helper()
	s := api.New(api.Config{Dev: true, AdminToken: adminToken}, api.Deps{})
	api.Mount(s, api.App{DevOutbox: commands.NewMemoryOutbox(1)})
	var out []string
	for _, r := range s.Echo().Routes() {
		if strings.HasPrefix(r.Method, "echo_") {
			continue
		}
		out = append(out, r.Method+" "+r.Path)
	}
	sort.Strings(out)
	if len(out) < 30 {
		t.Fatalf("only %d routes: %v", len(out), out)
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
