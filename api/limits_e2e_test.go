package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/domain/security"
	"github.com/consentledger/ledger/eventstore"
)

// testClock is the limits' clock; tests move it past a window.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const testWindow = 10 * time.Minute

// newLimitedLedger runs the ledger with small budgets: sourceFailures per
// address, clientFailures per partner client, per testWindow. Loopback is a
// trusted proxy, so X-Forwarded-For names the source of each request.
func newLimitedLedger(t *testing.T, sourceFailures, clientFailures int) (*ledger, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
	l := newLedgerServer(t, nil, nil, func(c *api.Config, _ *api.Deps) {
		c.Limits = api.Limits{SourceFailures: sourceFailures, ClientSecretFailures: clientFailures, Window: testWindow,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
		api.WithLimitsClock(&c.Limits, clock.Now)
	})
	return l, clock
}

// from sends a request on behalf of the source address src.
func (l *ledger) from(src, method, path, body string, headers ...string) answer {
	l.t.Helper()
	return l.do(method, path, body, append(headers, "X-Forwarded-For", src)...)
}

// sdkFrom sends an SDK call of device d from src and returns the answer
// as is (HTTP status and envelope).
func (d *device) sdkFrom(src, path, api string, params map[string]any) answer {
	d.l.t.Helper()
	return d.l.from(src, "POST", path, js(map[string]any{"api": api, "parameters": params}),
		"Authorization", "Bearer "+d.token, "X-Device-Id", d.id)
}

func sdkCode(a answer) float64 {
	e, _ := a.body["error"].(map[string]any)
	c, _ := e["code"].(float64)
	return c
}

// wantLimited checks a 429 of the source limit with a Retry-After within
// the window.
func wantLimited(t *testing.T, a answer, code string) {
	t.Helper()
	a.want(t, 429, code)
	secs, err := strconv.Atoi(a.header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > int(testWindow.Seconds()) {
		t.Fatalf("Retry-After %q, want 1..%d seconds", a.header.Get("Retry-After"), int(testWindow.Seconds()))
	}
}

// securityEvents reads a security stream.
func (l *ledger) securityEvents(stream string) []eventstore.RecordedEvent {
	l.t.Helper()
	evs, err := eventstore.ReadWholeStream(context.Background(), l.store, stream)
	if err != nil {
		l.t.Fatal(err)
	}
	return evs
}

// wantSourceLimitedOnce checks the auditor's trace of a source limit: one
// event, whatever the number of refused requests.
func (l *ledger) wantSourceLimitedOnce(src, kind string, failures int) {
	l.t.Helper()
	evs := l.securityEvents(security.SourceStream(src))
	if len(evs) != 1 || evs[0].Type != security.TypeSourceLimited {
		l.t.Fatalf("stream of %s: %d events, want one %s", src, len(evs), security.TypeSourceLimited)
	}
	var e security.SourceLimited
	if err := json.Unmarshal(evs[0].Data, &e); err != nil {
		l.t.Fatal(err)
	}
	if e.Source != src || e.Kind != kind || e.Failures != failures || e.LimitedUntil.IsZero() {
		l.t.Fatalf("source limited %+v, want source %s kind %s after %d failures", e, src, kind, failures)
	}
}

// sourceLimitCase is one kind of secret: guess sends one guess from src
// (wrong or right) and checks the answer of a wrong one that was not
// limited.
type sourceLimitCase struct {
	kind  string
	setup func(t *testing.T, l *ledger) (guess func(src string, right bool) answer, wantWrong func(answer))
}

// TestSourceLimitPerSecretKind: for each kind of secret, failures from one
// address spend its budget; the failure that empties it is recorded once,
// then every request from that address (even with the right secret) is a
// 429 with Retry-After, while another address still gets through. After the
// window the address is served again.
func TestSourceLimitPerSecretKind(t *testing.T) {
	const budget = 2
	cases := []sourceLimitCase{
		{"password", setupPasswordGuess},
		{"pin", setupPINGuess},
		{"sms-code", setupSMSCodeGuess},
		{"carkey-code", setupCarKeyGuess},
		{"client-secret", setupClientSecretGuess},
		{"session-token", setupSessionTokenGuess},
		{"password", setupPortalPasswordGuess},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(i, "-", tc.kind), func(t *testing.T) {
			l, clock := newLimitedLedger(t, budget, -1)
			guess, wantWrong := tc.setup(t, l)
			const src = "203.0.113.7"
			for range budget {
				wantWrong(guess(src, false))
			}
			before := l.count()
			for range 3 {
				a := guess(src, true)
				if a.status == 200 && a.body["status"] != nil {
					t.Fatalf("the SDK answered an envelope to a limited source: %s", a.raw)
				}
				wantLimited(t, a, "too_many_failed_attempts")
			}
			if l.count() != before {
				t.Fatal("refused requests appended events")
			}
			l.wantSourceLimitedOnce(src, tc.kind, budget)
			// Another address is not limited.
			wantWrong(guess("198.51.100.9", false))
			// The whole window later, the address is served again.
			clock.add(testWindow)
			wantWrong(guess(src, false))
		})
	}
}

func setupPasswordGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	l.signIn("pw@example.com", "d1")
	return func(src string, right bool) answer {
			p := "Wrong-Password-1"
			if right {
				p = pw
			}
			// A new account each time would not change the count: the budget is the address's.
			return l.from(src, "POST", "/v1/sessions", js(map[string]string{"email": "pw@example.com", "password": p, "deviceId": "d1"}))
		}, func(a answer) {
			a.want(t, 401, "invalid_credentials")
		}
}

func setupPINGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	l.signIn("pin@example.com", "d1")
	d := l.device("pin@example.com", "d1")
	d.shortcut("0600000011", "1357")
	return func(src string, right bool) answer {
			old := "9999"
			if right {
				old = "1357"
			}
			return d.sdkFrom(src, "/pims/set", pinAPI, map[string]any{"action": "update", "oldPIN": old, "newPIN": "2468"})
		}, func(a answer) {
			// 2317 once the account's own bound (3 in a row) is met.
			if a.status != 200 || (sdkCode(a) != 2312 && sdkCode(a) != 2317) {
				t.Fatalf("wrong PIN: %d %s", a.status, a.raw)
			}
		}
}

func setupSMSCodeGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	l.signIn("sms@example.com", "d1")
	d := l.device("sms@example.com", "d1")
	d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0600000012"})
	code := l.lastCode("0600000012")
	return func(src string, right bool) answer {
			c := wrongOf(code)
			if right {
				c = code
			}
			return d.sdkFrom(src, "/pims/set", smsAPI, map[string]any{"type": "addPhoneNumber", "smsCode": c, "phoneNumber": "0600000012"})
		}, func(a answer) {
			if a.status != 200 || sdkCode(a) != 2312 {
				t.Fatalf("wrong SMS code: %d %s", a.status, a.raw)
			}
		}
}

func setupCarKeyGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	l.signIn("key@example.com", "d1")
	d := l.device("key@example.com", "d1")
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey/challenge", "", 202, "")
	code := l.outbox.List(vin)[0].Code
	return func(src string, right bool) answer {
			c := wrongOf(code)
			if right {
				c = code
			}
			return l.from(src, "POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": c}),
				"Authorization", "Bearer "+d.token, "X-Device-Id", d.id)
		}, func(a answer) {
			a.want(t, 400, "carkey_code_wrong")
		}
}

func setupClientSecretGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	id, secret := l.partnerClient("guessed")
	return func(src string, right bool) answer {
			s := "not-the-secret"
			if right {
				s = secret
			}
			return l.tokenRequest(src, id, s)
		}, func(a answer) {
			if a.status != 401 || a.body["error"] != "invalid_client" {
				t.Fatalf("wrong client secret: %d %s", a.status, a.raw)
			}
		}
}

func setupSessionTokenGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	token := l.signIn("tok@example.com", "d1")
	return func(src string, right bool) answer {
			tk := "guessed-" + uuid.NewString()
			if right {
				tk = token
			}
			return l.from(src, "GET", "/v1/me", "", "Authorization", "Bearer "+tk, "X-Device-Id", "d1")
		}, func(a answer) {
			a.want(t, 401, "invalid_session")
		}
}

// setupPortalPasswordGuess guesses through the end-user portal's HTML
// sign-in form, whose wrong answers are pages, not errors.
func setupPortalPasswordGuess(t *testing.T, l *ledger) (func(string, bool) answer, func(answer)) {
	l.signIn("portal-pw@example.com", "d1")
	return func(src string, right bool) answer {
			p := "Wrong-Password-1"
			if right {
				p = pw
			}
			jar, _ := cookiejar.New(nil)
			client := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			send := func(method, body string) answer {
				req, _ := http.NewRequest(method, l.url+"/account/apps", strings.NewReader(body))
				req.Header.Set("X-Forwarded-For", src)
				if body != "" {
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
				_ = json.Unmarshal(raw, &a.body)
				return a
			}
			page := send("GET", "")
			m := csrfField.FindStringSubmatch(page.raw)
			if page.status != 200 || m == nil {
				return page // limited: the page itself is refused
			}
			return send("POST", url.Values{"csrf": {m[1]}, "action": {"signin"}, "email": {"portal-pw@example.com"}, "password": {p}}.Encode())
		}, func(a answer) {
			if a.status != 200 || !strings.Contains(a.raw, "email or password is wrong") {
				t.Fatalf("wrong password at the portal: %d %.300s", a.status, a.raw)
			}
		}
}

// wrongOf is a 6-digit code that is not code.
func wrongOf(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

// partnerClient registers a client-credentials client through the admin
// API and returns its id and secret.
func (l *ledger) partnerClient(name string) (id, secret string) {
	l.t.Helper()
	a := l.do("POST", "/v1/admin/clients", js(map[string]any{"name": name, "grantTypes": []string{"client_credentials"},
		"scopes": []string{"accounts:create"}}), "Authorization", "Bearer "+adminToken).want(l.t, 201, "")
	return a.body["clientId"].(string), a.body["clientSecret"].(string)
}

// tokenRequest asks for a client-credentials token from src.
func (l *ledger) tokenRequest(src, id, secret string) answer {
	l.t.Helper()
	req := "grant_type=client_credentials&client_id=" + id + "&client_secret=" + secret
	return l.from(src, "POST", "/oauth2/token", req, "Content-Type", "application/x-www-form-urlencoded")
}

// TestSubjectBoundsHoldAcrossSources: a guesser spreading wrong secrets over
// many addresses still meets each subject's own bound (5 passwords lock
// sign-in, 3 PINs block the account, 5 tries burn an SMS or car-key code,
// wrong client secrets lock the client's authentication), and each lock is a
// fact an auditor can read.
func TestSubjectBoundsHoldAcrossSources(t *testing.T) {
	const clientBudget = 3
	l, clock := newLimitedLedger(t, 1000, clientBudget)
	n := 0
	next := func() string { n++; return "192.0.2." + strconv.Itoa(n) }

	t.Run("password", func(t *testing.T) {
		l.signIn("spread-pw@example.com", "d1")
		wrong := js(map[string]string{"email": "spread-pw@example.com", "password": "Wrong-Password-1", "deviceId": "d1"})
		for range 4 {
			l.from(next(), "POST", "/v1/sessions", wrong).want(t, 401, "invalid_credentials")
		}
		if a := l.from(next(), "POST", "/v1/sessions", wrong).want(t, 429, "too_many_sign_in_attempts"); a.header.Get("Retry-After") == "" {
			t.Fatal("sign-in lock without Retry-After")
		}
	})
	t.Run("pin", func(t *testing.T) {
		l.signIn("spread-pin@example.com", "d1")
		d := l.device("spread-pin@example.com", "d1")
		d.shortcut("0600000021", "1357")
		wrong := map[string]any{"action": "update", "oldPIN": "9999", "newPIN": "2468"}
		for range 2 {
			if a := d.sdkFrom(next(), "/pims/set", pinAPI, wrong); sdkCode(a) != 2312 {
				t.Fatalf("wrong PIN: %s", a.raw)
			}
		}
		if a := d.sdkFrom(next(), "/pims/set", pinAPI, wrong); sdkCode(a) != 2317 {
			t.Fatalf("third wrong PIN: %s, want 2317", a.raw)
		}
	})
	t.Run("sms-code", func(t *testing.T) {
		l.signIn("spread-sms@example.com", "d1")
		d := l.device("spread-sms@example.com", "d1")
		d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": "0600000022"})
		code := l.lastCode("0600000022")
		guess := func(c string) answer {
			return d.sdkFrom(next(), "/pims/set", smsAPI, map[string]any{"type": "addPhoneNumber", "smsCode": c, "phoneNumber": "0600000022"})
		}
		for range 4 {
			if a := guess(wrongOf(code)); sdkCode(a) != 2312 {
				t.Fatalf("wrong SMS code: %s", a.raw)
			}
		}
		if a := guess(wrongOf(code)); sdkCode(a) != 2314 {
			t.Fatalf("fifth wrong SMS code: %s, want 2314 (burnt)", a.raw)
		}
		if a := guess(code); sdkCode(a) != 2314 && sdkCode(a) != 2315 {
			t.Fatalf("the right code after it burnt: %s", a.raw)
		}
	})
	t.Run("carkey-code", func(t *testing.T) {
		l.signIn("spread-key@example.com", "d1")
		d := l.device("spread-key@example.com", "d1")
		const car = "VR1AB12C3D4567891"
		d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": car}), 201, "")
		d.rest("POST", "/v1/vehicles/"+car+"/carkey/challenge", "", 202, "")
		code := l.outbox.List(car)[0].Code
		guess := func(c string) answer {
			return l.from(next(), "POST", "/v1/vehicles/"+car+"/carkey", js(map[string]string{"code": c}),
				"Authorization", "Bearer "+d.token, "X-Device-Id", d.id)
		}
		for range 4 {
			guess(wrongOf(code)).want(t, 400, "carkey_code_wrong")
		}
		guess(wrongOf(code)).want(t, 400, "carkey_code_burnt")
		if a := guess(code); a.status == 200 {
			t.Fatal("a burnt car-key code was accepted")
		}
	})
	t.Run("client-secret", func(t *testing.T) {
		id, secret := l.partnerClient("spread")
		for range clientBudget {
			if a := l.tokenRequest(next(), id, "not-the-secret"); a.status != 401 {
				t.Fatalf("wrong secret: %d %s", a.status, a.raw)
			}
		}
		before := l.count()
		wantLimited(t, l.tokenRequest(next(), id, secret), "client_auth_locked")
		if l.count() != before {
			t.Fatal("a refused token request appended events")
		}
		evs := l.securityEvents(security.ClientStream(uuid.MustParse(id)))
		var e security.ClientAuthLocked
		if len(evs) != 1 || evs[0].Type != security.TypeClientAuthLocked || json.Unmarshal(evs[0].Data, &e) != nil ||
			e.ClientID.String() != id || e.Failures != clientBudget {
			t.Fatalf("client stream: %+v", evs)
		}
		// Another client is not locked; the window over, this one works.
		other, otherSecret := l.partnerClient("bystander")
		l.tokenRequest(next(), other, otherSecret).want(t, 200, "")
		clock.add(testWindow)
		l.tokenRequest(next(), id, secret).want(t, 200, "")
	})
}
