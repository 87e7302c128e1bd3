package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// fuzzLedger is the ledger as `ledger serve` mounts it, for fuzz targets:
// one per fuzzing process (testing.F), with a signed-in device and a
// registered partner client whose id and secret the inputs can name as
// $CLIENT and $SECRET, so that mutations start from requests that go deep.
type fuzzLedger struct {
	handler http.Handler
	pool    *pgxpool.Pool
	token   string // the device's session token
	device  string
	client  string
	secret  string
}

func newFuzzLedger(tb testing.TB) *fuzzLedger {
	tb.Helper()
	ctx := context.Background()
	pool := dbtest.Pool(tb)
	store, err := eventstore.OpenPostgres(ctx, pool, eventstore.PostgresOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = store.Close() })
	runner := projections.NewRunner(pool, store, nil, nil, projections.Accounts{}, projections.Enrollment{}, projections.Vehicles{},
		projections.Steps{}, projections.Clients{}, projections.Consents{}, projections.OAuthTokens{})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(runCtx) }()
	tb.Cleanup(func() { cancel(); <-done })
	outbox := commands.NewMemoryOutbox(1000)
	cmds := commands.New(commands.Deps{Store: store, Outbox: outbox, Consistency: runner, PublicURL: "https://ledger.example",
		PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}})
	s := api.New(api.Config{Dev: true, AdminToken: adminToken, PublicURL: "https://ledger.example",
		OAuthSecret: []byte("a fuzzing secret that is long enough to key the HMAC")}, api.Deps{Pool: pool})
	api.Mount(s, api.App{Commands: cmds, Pool: pool, Store: store, Runner: runner, DevOutbox: outbox})

	l := &fuzzLedger{handler: s.Handler(), pool: pool, device: "fuzz-device"}
	reg, err := cmds.RegisterAccount(ctx, commands.RegisterAccount{Email: "fuzz@example.com", Password: pw})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := cmds.ActivateAccount(ctx, commands.ActivateAccount{Token: outbox.List("fuzz@example.com")[0].Code}); err != nil {
		tb.Fatal(err)
	}
	sess, err := cmds.OpenSession(ctx, commands.OpenSession{Email: "fuzz@example.com", Password: pw, DeviceID: l.device})
	if err != nil {
		tb.Fatal(err)
	}
	l.token = sess.SessionToken
	id, secret, err := cmds.RegisterClient(ctx, commands.RegisterClient{Name: "fuzz", RedirectURIs: []string{"https://fuzz.example/cb"},
		Scopes: []string{consent.ScopeProfile, consent.ScopeVehicleStatus}, GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"}})
	if err != nil {
		tb.Fatal(err)
	}
	l.client, l.secret = id.String(), secret
	if _, err := cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: reg.AccountID, ClientID: id, Accept: true,
		Scopes: []string{consent.ScopeProfile}, NoticeVersion: api.NoticeVersion, CollectionMethod: "hosted-consent-prompt"}); err != nil {
		tb.Fatal(err)
	}
	return l
}

// expand puts the real client id and secret where an input names them.
func (l *fuzzLedger) expand(s string) string {
	return strings.NewReplacer("$CLIENT", l.client, "$SECRET", l.secret).Replace(s)
}

func (l *fuzzLedger) events(t *testing.T) int {
	t.Helper()
	var n int
	if err := l.pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// serve sends one request and fails on a 5xx; the handler's own recovery
// turns a panic into a 500, so a panic fails here too.
func (l *fuzzLedger) serve(t *testing.T, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	l.handler.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		body, _ := io.ReadAll(rec.Body)
		t.Fatalf("%s %s: HTTP %d: %s", req.Method, req.URL, rec.Code, body)
	}
	return rec
}

// sdkRefusals are the SDK codes of input the gateway refuses before any
// decision: such an answer must append nothing.
var sdkRefusals = map[float64]bool{2300: true, 2301: true, 2302: true, 2303: true, 2304: true, 2305: true}

// FuzzSDKGateway sends /pims/get and /pims/set calls with any api name and
// any parameters from a signed-in device: never a 5xx, always the envelope
// (HTTP 200) or a problem (4xx), and nothing appended for a 4xx or for a
// refused parameter.
func FuzzSDKGateway(f *testing.F) {
	seeds := []struct {
		set    bool
		api    string
		params string
	}{
		{false, "pims.authentication.account", `{"actionType":"strong","type":"isDeviceActivated"}`},
		{false, "pims.authentication.account", `{"actionType":"strong","type":"isAccountBlocked"}`},
		{false, "pims.authentication.trustedphonenumber", `{}`},
		{false, "pims.authentication.smscode", `{"type":"phoneNumberCertification","phoneNumber":"0612345678"}`},
		{false, "pims.authentication.smscode", `{"type":"enrollment"}`},
		{true, "pims.authentication.smscode", `{"type":"addPhoneNumber","smsCode":"123456","phoneNumber":"0612345678"}`},
		{true, "pims.authentication.smscode", `{"action":"enrollment","smsCode":"123456"}`},
		{true, "pims.authentication.enrollment", `{"action":"enrollWithPhoneNumber","pinCode":"1234","smsCode":"123456","phoneNumber":"0612345678"}`},
		{true, "pims.authentication.enrollment", `{"action":"enroll","pinCode":"1234"}`},
		{true, "pims.authentication.pincode", `{"action":"update","oldPIN":"1234","newPIN":"5678"}`},
		{true, "pims.authentication.pincode", `{"action":"reset","pinCode":"1234","smsCode":"123456"}`},
		{true, "pims.subscription.vehicle", `{"action":"removeProperty","vin":"WVWZZZ1JZXW000001"}`},
		{false, "pims.subscription.steps", `{"carAssociationID":"8c6e0f0e-7d5b-4b8e-9a51-2f8f8f0e0e0e","resetSteps":true,"stepsStatus":"todo"}`},
		{false, "pims.subscription.steps", `{"stepsID":132324}`},
		{false, "pims.subscription.step", `{"stepsID":"132324"}`},
		{true, "pims.authentication.otp", `{"type":"withPIN","pinCode":"1234"}`},
		{false, "pims.authentication.smscode", `{"type":1,"phoneNumber":["0612345678"]}`},
		{true, "nope", `null`},
	}
	for _, s := range seeds {
		f.Add(s.set, s.api, s.params)
	}
	l := newFuzzLedger(f)
	f.Fuzz(func(t *testing.T, set bool, apiName, params string) {
		path := "/pims/get"
		if set {
			path = "/pims/set"
		}
		name, _ := json.Marshal(apiName)
		body := `{"api":` + string(name) + `,"parameters":` + params + `}`
		before := l.events(t)
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+l.token)
		req.Header.Set("X-Device-Id", l.device)
		rec := l.serve(t, req)
		var answer struct {
			Status string `json:"status"`
			Error  struct {
				Code float64 `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &answer)
		switch {
		case rec.Code == 200 && (answer.Status == "SUCCEEDED" || answer.Status == "FAILED"):
			if answer.Status == "FAILED" && sdkRefusals[answer.Error.Code] {
				if after := l.events(t); after != before {
					t.Fatalf("refused call (%v) appended %d events: %s", answer.Error.Code, after-before, body)
				}
			}
		case rec.Code >= 400 && rec.Code < 500:
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, api.ContentTypeProblem) {
				t.Fatalf("HTTP %d without a problem (%s): %s", rec.Code, ct, body)
			}
			if after := l.events(t); after != before {
				t.Fatalf("HTTP %d appended %d events: %s", rec.Code, after-before, body)
			}
		default:
			t.Fatalf("HTTP %d, status %q: %s -> %s", rec.Code, answer.Status, body, rec.Body)
		}
	})
}

// FuzzOAuthAuthorize opens the consent prompt with any query: never a 5xx,
// and nothing appended (the prompt only records once the user decides).
func FuzzOAuthAuthorize(f *testing.F) {
	for _, q := range []string{
		"client_id=$CLIENT&redirect_uri=https%3A%2F%2Ffuzz.example%2Fcb&response_type=code&scope=account%3Aprofile&state=state-123&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
		"client_id=$CLIENT&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&response_type=code&scope=account%3Aprofile&state=s",
		"client_id=$CLIENT&response_type=token&scope=account%3Aprofile+vehicle%3Astatus&state=s",
		"client_id=not-a-uuid&response_type=code",
		"client_id=$CLIENT&client_id=$CLIENT&response_type=code&response_type=token",
		"response_type=code%00&scope=%ff%fe&state=" + strings.Repeat("a", 300),
		"",
	} {
		f.Add(q)
	}
	l := newFuzzLedger(f)
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "/oauth2/authorize", nil)
		req.URL.RawQuery = l.expand(query) // as sent, however malformed
		before := l.events(t)
		l.serve(t, req)
		if after := l.events(t); after != before {
			t.Fatalf("authorize appended %d events: %s", after-before, query)
		}
	})
}

// FuzzOAuthToken posts any form to the token endpoint, with or without the
// client's real credentials: never a 5xx, and a refused request (4xx)
// appends nothing.
func FuzzOAuthToken(f *testing.F) {
	for _, s := range []struct{ form, user, pass string }{
		{"grant_type=client_credentials", "$CLIENT", "$SECRET"},
		{"grant_type=client_credentials&scope=account%3Aprofile", "$CLIENT", "$SECRET"},
		{"grant_type=client_credentials", "$CLIENT", "wrong"},
		{"grant_type=authorization_code&code=abc.def&redirect_uri=https%3A%2F%2Ffuzz.example%2Fcb&code_verifier=" + strings.Repeat("v", 43), "$CLIENT", "$SECRET"},
		{"grant_type=refresh_token&refresh_token=abc.def", "$CLIENT", "$SECRET"},
		{"grant_type=password&username=a&password=b", "$CLIENT", "$SECRET"},
		{"grant_type=client_credentials&client_id=$CLIENT&client_secret=$SECRET", "", ""},
		{"grant_type=%zz", "", ""},
		{"", "%00", "%ff"},
	} {
		f.Add(s.form, s.user, s.pass)
	}
	l := newFuzzLedger(f)
	f.Fuzz(func(t *testing.T, form, user, pass string) {
		before := l.events(t)
		req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(l.expand(form)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" || pass != "" {
			req.SetBasicAuth(url.QueryEscape(l.expand(user)), url.QueryEscape(l.expand(pass)))
		}
		rec := l.serve(t, req)
		if rec.Code >= 400 {
			if after := l.events(t); after != before {
				t.Fatalf("HTTP %d appended %d events: %q", rec.Code, after-before, form)
			}
		}
	})
}
