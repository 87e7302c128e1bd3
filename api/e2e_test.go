package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

const adminToken = "admin-token-for-tests-0123456789"

// ledger is the whole service over HTTP, as `ledger serve` wires it.
type ledger struct {
	t      *testing.T
	url    string
	store  eventstore.Store
	pool   *pgxpool.Pool
	cmds   *commands.Handler
	outbox *commands.MemoryOutbox
	count  func() int // events in the log
}

// storeFactory opens the event log of a test; the PostgreSQL log by default.
type storeFactory func(t *testing.T) eventstore.Store

func newLedger(t *testing.T, open storeFactory) *ledger { return newLedgerWith(t, open, nil) }

// newLedgerWith lets a test change what is mounted (e.g. the protocol the
// consent prompt answers through).
func newLedgerWith(t *testing.T, open storeFactory, configure func(*api.App)) *ledger {
	t.Helper()
	return newLedgerServer(t, open, configure, nil)
}

// newLedgerServer also lets a test change the server's configuration and
// dependencies (limits, logger) before it is built.
func newLedgerServer(t *testing.T, open storeFactory, configure func(*api.App), server func(*api.Config, *api.Deps)) *ledger {
	t.Helper()
	pool := dbtest.Pool(t)
	var store eventstore.Store
	if open != nil {
		store = open(t)
	}
	if store == nil {
		pg, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Close() })
		store = sealed(t, pool, pg)
	}
	runner := projections.NewRunner(pool, store, nil, nil, projections.Accounts{}, projections.Enrollment{}, projections.Vehicles{}, projections.Steps{}, projections.Clients{}, projections.Consents{}, projections.OAuthTokens{},
		projections.Subjects{}, projections.SecurityEvents{}, projections.AuditCheckpoints{Every: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	outbox := commands.NewMemoryOutbox(1000)
	h := commands.New(commands.Deps{
		Store: store, Outbox: outbox, Consistency: runner, PublicURL: "http://ledger.test",
		PasswordParams: account.PasswordParams{Memory: 1024, Time: 1, Threads: 1},
	})
	cfg, deps := api.Config{Dev: true, AdminToken: adminToken}, api.Deps{Pool: pool}
	if server != nil {
		server(&cfg, &deps)
	}
	s := api.New(cfg, deps)
	app := api.App{Commands: h, Pool: pool, Store: store, Runner: runner, DevOutbox: outbox, AuditKey: testAuditKey}
	if configure != nil {
		configure(&app)
	}
	api.Mount(s, app)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &ledger{t: t, url: srv.URL, store: store, pool: pool, cmds: h, outbox: outbox, count: func() int {
		n := 0
		after := eventstore.Start
		for {
			evs, err := store.ReadAll(context.Background(), after, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				return n
			}
			n += len(evs)
			after = evs[len(evs)-1].Position
		}
	}}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (l *ledger) do(method, path, body string, headers ...string) answer {
	l.t.Helper()
	req, err := http.NewRequest(method, l.url+path, strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

func (a answer) want(t *testing.T, status int, code string) answer {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.raw)
	}
	if code != "" {
		if a.body["code"] != code || !strings.HasPrefix(a.header.Get("Content-Type"), "application/problem+json") {
			t.Fatalf("want problem %q, got %s (%s)", code, a.raw, a.header.Get("Content-Type"))
		}
	}
	return a
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

const pw = "Correct-Horse-9"

// activationToken reads the token of the last activation message to email.
func (l *ledger) activationToken(email string) string {
	l.t.Helper()
	a := l.do("GET", "/v1/dev/outbox?to="+email, "").want(l.t, 200, "")
	msgs := a.body["messages"].([]any)
	if len(msgs) == 0 {
		l.t.Fatalf("no message to %s", email)
	}
	return msgs[0].(map[string]any)["code"].(string)
}

// signIn signs up, activates and opens a session; it returns the token.
func (l *ledger) signIn(email, device string) string {
	l.t.Helper()
	l.do("POST", "/v1/accounts", js(map[string]string{"email": email, "password": pw})).want(l.t, 201, "")
	l.do("POST", "/v1/accounts/activate", js(map[string]string{"token": l.activationToken(email)})).want(l.t, 200, "")
	a := l.do("POST", "/v1/sessions", js(map[string]string{"email": email, "password": pw, "deviceId": device})).want(l.t, 201, "")
	return a.body["sessionToken"].(string)
}

func TestAccountsJourney(t *testing.T) { accountsJourney(t, nil) }

func accountsJourney(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	a := l.do("POST", "/v1/accounts", js(map[string]string{"email": "ada@example.com", "password": pw})).want(t, 201, "")
	if a.body["status"] != "pending_activation" || a.body["accountId"] == "" {
		t.Fatalf("sign-up answered %s", a.raw)
	}
	accountID := a.body["accountId"].(string)
	signIn := js(map[string]string{"email": "ada@example.com", "password": pw, "deviceId": "phone-1"})
	l.do("POST", "/v1/sessions", signIn).want(t, 403, "account_not_activated")

	l.do("POST", "/v1/accounts/activate", js(map[string]string{"token": "nonsense"})).want(t, 400, "invalid_activation_token")
	l.do("POST", "/v1/accounts/activate", js(map[string]string{"token": l.activationToken("ada@example.com")})).want(t, 200, "")

	s := l.do("POST", "/v1/sessions", signIn).want(t, 201, "")
	token := s.body["sessionToken"].(string)
	if s.body["accountId"] != accountID {
		t.Fatalf("session for %v, want %s", s.body["accountId"], accountID)
	}
	auth := []string{"Authorization", "Bearer " + token, "X-Device-Id", "phone-1"}
	me := l.do("GET", "/v1/me", "", auth...).want(t, 200, "")
	if me.body["status"] != "active" || me.body["email"] != "ada@example.com" {
		t.Fatalf("profile right after activation: %s", me.raw)
	}
	l.do("GET", "/v1/me", "", "Authorization", "Bearer "+token, "X-Device-Id", "phone-2").want(t, 401, "device_mismatch")
	l.do("GET", "/v1/me", "").want(t, 401, "invalid_session")

	l.do("DELETE", "/v1/sessions/current", "", auth...).want(t, 204, "")
	l.do("GET", "/v1/me", "", auth...).want(t, 401, "invalid_session")
}

func TestBadInputIsRefusedAndAppendsNothing(t *testing.T) {
	l := newLedger(t, nil)
	cases := []struct {
		body   string
		status int
		code   string
	}{
		{`{"email": "a@example.com", "password": `, 400, "malformed_json"},
		{`{"email": 42, "password": "x"}`, 400, "invalid_field"},
		{`{"email": "a@example.com", "password": "Correct-Horse-9", "admin": true}`, 400, "unknown_field"},
		{`{"email": "not an email", "password": "Correct-Horse-9"}`, 400, "invalid_email"},
		{`{"email": "a@example.com", "password": "short"}`, 400, "weak_password"},
		{``, 400, "empty_body"},
	}
	for _, c := range cases {
		l.do("POST", "/v1/accounts", c.body).want(t, c.status, c.code)
	}
	big := `{"email":"` + strings.Repeat("a", 1<<20) + `@example.com","password":"x"}`
	l.do("POST", "/v1/accounts", big).want(t, 413, "body_too_large")
	l.do("POST", "/v1/sessions", `{"email":"a@example.com","password":"x","deviceId":"bad device id"}`).want(t, 400, "invalid_device_id")
	if n := l.count(); n != 0 {
		t.Fatalf("refused requests appended %d events", n)
	}
}

func TestTwentyFourSignUpsOneEmail(t *testing.T) { twentyFourSignUpsOneEmail(t, nil) }

// twentyFourSignUpsOneEmail races 24 sign-ups for one address: exactly one
// wins, the others are told the address is taken.
func twentyFourSignUpsOneEmail(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	body := js(map[string]string{"email": "race@example.com", "password": pw})
	counts := l.parallel(24, func(int) *http.Request {
		req, _ := http.NewRequest("POST", l.url+"/v1/accounts", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return req
	})
	if counts[201] != 1 || counts[409] != 23 {
		t.Fatalf("statuses %v, want one 201 and 23 × 409", counts)
	}
}

// parallel sends n requests at once and counts the answers by status.
func (l *ledger) parallel(n int, request func(i int) *http.Request) map[int]int {
	l.t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		req := request(i)
		wg.Go(func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				l.t.Error(err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()
	counts := map[int]int{}
	for _, s := range statuses {
		counts[s]++
	}
	return counts
}

func TestIdempotencyKeyReplaysAndAppendsNothing(t *testing.T) {
	l := newLedger(t, nil)
	body := js(map[string]string{"email": "once@example.com", "password": pw})
	first := l.do("POST", "/v1/accounts", body, "Idempotency-Key", "k-1").want(t, 201, "")
	n := l.count()
	again := l.do("POST", "/v1/accounts", body, "Idempotency-Key", "k-1").want(t, 201, "")
	if again.raw != first.raw || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay %s differs from %s", again.raw, first.raw)
	}
	if l.count() != n {
		t.Fatal("the replay appended events")
	}
	other := js(map[string]string{"email": "other@example.com", "password": pw})
	l.do("POST", "/v1/accounts", other, "Idempotency-Key", "k-1").want(t, 422, "idempotency_key_reused")
	if len(l.outbox.List("once@example.com")) != 1 {
		t.Fatal("the replay sent the activation e-mail again")
	}
}

func TestWrongPasswordsAnswer429WithRetryAfter(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("eve@example.com", "d1")
	wrong := js(map[string]string{"email": "eve@example.com", "password": "Wrong-Password-1", "deviceId": "d1"})
	for range account.MaxFailuresInRow - 1 {
		l.do("POST", "/v1/sessions", wrong).want(t, 401, "invalid_credentials")
	}
	a := l.do("POST", "/v1/sessions", wrong).want(t, 429, "too_many_sign_in_attempts")
	if a.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	right := js(map[string]string{"email": "eve@example.com", "password": pw, "deviceId": "d1"})
	l.do("POST", "/v1/sessions", right).want(t, 429, "too_many_sign_in_attempts")
}

func TestAdminProjections(t *testing.T) {
	l := newLedger(t, nil)
	l.signIn("op@example.com", "d1")
	l.do("GET", "/v1/admin/projections", "").want(t, 401, "admin_token_invalid")
	admin := []string{"Authorization", "Bearer " + adminToken}
	a := l.do("GET", "/v1/admin/projections", "", admin...).want(t, 200, "")
	states := map[string]any{}
	for _, p := range a.body["projections"].([]any) {
		states[p.(map[string]any)["name"].(string)] = p.(map[string]any)["state"]
	}
	if states["accounts"] != "live" || states["enrollment"] != "live" {
		t.Fatalf("projections: %s", a.raw)
	}
	l.do("POST", "/v1/admin/projections/nope/rebuild", "", admin...).want(t, 404, "unknown_projection")
	l.do("POST", "/v1/admin/projections/accounts/rebuild", "", admin...).want(t, 202, "")
}
