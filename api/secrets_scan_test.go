package api_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/eventstore"
)

// logCapture collects every log line the server writes.
type logCapture struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *logCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// secretSet is every secret a test handed to the ledger or got from it.
type secretSet struct {
	t    *testing.T
	long map[string]string // secret → what it is
	// short are numeric secrets (PINs, SMS and car-key codes): matched as a
	// whole number inside a string, never as a JSON number, so that an
	// event position or a transaction id that happens to be equal is not
	// taken for a leak.
	short map[string]string
}

func (s *secretSet) add(what string, secrets ...string) {
	s.t.Helper()
	for _, v := range secrets {
		switch {
		case v == "":
			s.t.Fatalf("empty secret: %s", what)
		case regexp.MustCompile(`^[0-9]{4,8}$`).MatchString(v):
			s.short[v] = what
		case len(v) < 10:
			s.t.Fatalf("secret %s is too short to scan for: %q", what, v)
		default:
			s.long[v] = what
		}
	}
}

// find reports each secret found in text, named by where.
func (s *secretSet) find(where, text string) []string {
	var found []string
	for v, what := range s.long {
		needles := []string{v, hex.EncodeToString([]byte(v)), base64.StdEncoding.EncodeToString([]byte(v))}
		if q := url.QueryEscape(v); q != v {
			needles = append(needles, q)
		}
		for _, n := range needles {
			if i := strings.Index(text, n); i >= 0 {
				found = append(found, fmt.Sprintf("%s (%s) in %s: …%s…", what, v, where, excerpt(text, i, len(n))))
			}
		}
	}
	for v, what := range s.short {
		re := regexp.MustCompile(`(^|[^0-9A-Za-z._-])` + v + `([^0-9A-Za-z._-]|$)`)
		for _, m := range re.FindAllStringIndex(text, -1) {
			if jsonNumber(text, m[0], m[1]) {
				continue
			}
			found = append(found, fmt.Sprintf("%s (%s) in %s: …%s…", what, v, where, excerpt(text, m[0], m[1]-m[0])))
		}
	}
	return found
}

// jsonNumber: the match [from, to) (with one delimiter each side) is a bare
// JSON number: after ':', ',' or '[' and before ',', '}' or ']'.
func jsonNumber(text string, from, to int) bool {
	isDigit := func(b byte) bool { return b >= '0' && b <= '9' }
	if isDigit(text[from]) || isDigit(text[to-1]) {
		return false // at the very start or end of the text: no delimiter
	}
	before := strings.TrimRight(text[:from+1], " ")
	after := strings.TrimLeft(text[to-1:], " ")
	return before != "" && strings.ContainsAny(before[len(before)-1:], ":,[") &&
		after != "" && strings.ContainsAny(after[:1], ",}]")
}

func excerpt(text string, i, n int) string {
	return text[max(0, i-40):min(len(text), i+n+40)]
}

// TestNoSecretsAtRestOrInLogs runs the ledger's flows — sign-up, activation,
// sign-in (and a wrong password), SDK enrollment with PIN and SMS codes (and
// a wrong PIN), a one-time token for remote commands, the car-key code, a
// partner's client secret, the OAuth2 code flow with PKCE through the
// hosted prompt, refresh, introspection, a partner-created account and its
// code, the portal's sign-in, revocations and logout — keeping every
// password, PIN, code, token and cookie it used. Then it scans every table
// of the database (each row as text and as JSON), the event log (data and
// metadata) and every log line the server wrote, and finds none of them.
func TestNoSecretsAtRestOrInLogs(t *testing.T) {
	logs := &logCapture{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	previous := slog.Default()
	slog.SetDefault(logger) // the command side, the projections and Watermill log here
	t.Cleanup(func() { slog.SetDefault(previous) })
	l := newLedgerServer(t, nil, nil, func(_ *api.Config, d *api.Deps) { d.Logger = logger })
	s := &secretSet{t: t, long: map[string]string{}, short: map[string]string{}}
	s.add("admin token", adminToken)
	bg := context.Background()

	// Sign up, activate, a wrong password, sign in (with an Idempotency-Key:
	// the stored answer holds the session token).
	alicePW, wrongPW := "Alice-Pass-"+uuid.NewString()[:8], "Wrong-Pass-"+uuid.NewString()[:8]
	s.add("password", alicePW)
	s.add("wrong password", wrongPW)
	l.do("POST", "/v1/accounts", js(map[string]string{"email": "alice@example.com", "password": alicePW})).want(t, 201, "")
	activation := l.activationToken("alice@example.com")
	s.add("activation token", activation)
	l.do("POST", "/v1/accounts/activate", js(map[string]string{"token": activation})).want(t, 200, "")
	l.do("POST", "/v1/sessions", js(map[string]string{"email": "alice@example.com", "password": wrongPW, "deviceId": "phone-1"})).want(t, 401, "invalid_credentials")
	session := l.do("POST", "/v1/sessions", js(map[string]string{"email": "alice@example.com", "password": alicePW, "deviceId": "phone-1"}),
		"Idempotency-Key", "sign-in-1").want(t, 201, "").body["sessionToken"].(string)
	s.add("session token", session)
	_, sessionSecret, _ := strings.Cut(session, ".")
	s.add("session token secret", sessionSecret)
	d := &device{l: l, id: "phone-1", token: session}

	// SDK enrollment: SMS code and PIN at once, then a wrong PIN, a second
	// enrollment code, a one-time token.
	const pin, wrongPIN, phone = "90817263", "55443322", "0611122233"
	s.add("PIN", pin)
	s.add("wrong PIN", wrongPIN)
	d.get(smsAPI, map[string]any{"type": "phoneNumberCertification", "phoneNumber": phone})
	s.add("SMS code", l.lastCode(phone))
	d.set(enrollAPI, map[string]any{"action": "enrollWithPhoneNumber", "pinCode": pin, "smsCode": l.lastCode(phone), "phoneNumber": phone})
	d.failed("/pims/set", pinAPI, map[string]any{"action": "update", "oldPIN": wrongPIN, "newPIN": "12121212"}, 2312)
	d.get(smsAPI, map[string]any{"type": "enrollment"})
	s.add("enrollment SMS code", l.lastCode(phone))
	d.set(smsAPI, map[string]any{"action": "enrollment", "smsCode": l.lastCode(phone)})
	otp := d.set("pims.authentication.otp", map[string]any{"type": "withPIN", "pinCode": pin})["otp"].(string)
	s.add("one-time token", otp)

	// Car key: the code shown in the car.
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	d.rest("POST", "/v1/vehicles/"+vin+"/services", `{"service":"remoteCommands"}`, 201, "")
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey/challenge", "", 202, "")
	carKey := l.outbox.List(vin)[0].Code
	s.add("car-key code", carKey)
	d.rest("POST", "/v1/vehicles/"+vin+"/carkey", js(map[string]string{"code": carKey}), 200, "")

	// A partner: its client secret.
	const redirect = "https://scan.example/cb"
	reg := l.registerClient(map[string]any{"name": "Scan App", "redirectUris": []string{redirect},
		"scopes":     []string{"accounts:create", "account:profile"},
		"grantTypes": []string{"authorization_code", "refresh_token", "client_credentials"}}).want(t, 201, "")
	clientID, clientSecret := reg.body["clientId"].(string), reg.body["clientSecret"].(string)
	s.add("client secret", clientSecret)
	token := func(form url.Values) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("POST", l.url+"/oauth2/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(clientID, clientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if resp.StatusCode != 200 || json.Unmarshal(raw, &out) != nil {
			t.Fatalf("token %v: HTTP %d %s", form.Get("grant_type"), resp.StatusCode, raw)
		}
		for _, k := range []string{"access_token", "refresh_token"} {
			if v, ok := out[k].(string); ok {
				s.add(k, v)
			}
		}
		return out
	}

	// The OAuth2 code flow with PKCE through the hosted prompt.
	verifier := "verifier-" + uuid.NewString() + uuid.NewString()
	s.add("PKCE verifier", verifier)
	sum := sha256.Sum256([]byte(verifier))
	b := l.browser().get("/oauth2/authorize?" + url.Values{"client_id": {clientID}, "redirect_uri": {redirect},
		"response_type": {"code"}, "scope": {"account:profile"}, "state": {"state-scan-1"},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}.Encode())
	b.get("/oauth2/prompt")
	b.submit(map[string]string{"action": "signin", "email": "alice@example.com", "password": alicePW})
	b.submit(map[string]string{"action": "consent", "decision": "accept"})
	back, err := url.Parse(b.loc)
	if b.status != 303 || err != nil || back.Query().Get("code") == "" {
		t.Fatalf("consent: HTTP %d to %q", b.status, b.loc)
	}
	code := back.Query().Get("code")
	s.add("authorization code", code)
	tokens := token(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}})
	refreshed := token(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tokens["refresh_token"].(string)}})
	introspect := url.Values{"token": {refreshed["access_token"].(string)}}
	req, _ := http.NewRequest("POST", l.url+"/oauth2/introspect", strings.NewReader(introspect.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("introspect: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A partner-created account and its code.
	cc := token(url.Values{"grant_type": {"client_credentials"}, "scope": {"accounts:create"}})["access_token"].(string)
	bobPW := "Bob-Pass-" + uuid.NewString()[:8]
	s.add("partner-set password", bobPW)
	created := l.do("POST", "/v1/partner/accounts", js(map[string]string{"firstName": "Bob", "lastName": "Scan",
		"email": "bob@example.com", "username": "bobscan", "password": bobPW}), "Authorization", "Bearer "+cc).want(t, 201, "")
	bobCode := created.body["account"].(map[string]any)["accessToken"].(map[string]any)["code"].(string)
	s.add("partner account code", bobCode)
	bobTokens := token(url.Values{"grant_type": {"authorization_code"}, "code": {bobCode}, "redirect_uri": {redirect}})

	// The portal's sign-in: its session cookie.
	portal := l.browser().get("/account/apps")
	portal.submitTo("/account/apps", map[string]string{"action": "signin", "email": "alice@example.com", "password": alicePW})
	portal.get("/account/apps").shows("Scan App")
	home, _ := url.Parse(l.url)
	for _, jar := range []*browser{b, portal} {
		for _, c := range jar.client.Jar.Cookies(home) {
			s.add("cookie "+c.Name, c.Value)
		}
	}

	// Revocations: the partner revokes a refresh token, the user revokes
	// the grant, then logs out.
	rev := url.Values{"token": {bobTokens["refresh_token"].(string)}, "token_type_hint": {"refresh_token"}}
	req, _ = http.NewRequest("POST", l.url+"/oauth2/revoke", strings.NewReader(rev.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	d.rest("DELETE", "/v1/me/consents/"+clientID, "", 204, "")
	d.rest("DELETE", "/v1/sessions/current", "", 204, "")

	// The scanner finds what it looks for: a PIN in a string and a token
	// (and its secret part), not a number that happens to be equal.
	if got := s.find("control", fmt.Sprintf(`{"pin":"%s","token":"x%sx","n": %s}`, pin, session, pin)); len(got) != 3 {
		t.Fatalf("the scanner's control found %d secrets, want 3: %v", len(got), got)
	}

	// Scan.
	var found []string
	rows, err := l.pool.Query(bg, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if rows.Err() != nil || len(tables) < 10 {
		t.Fatalf("tables %v: %v", tables, rows.Err())
	}
	for _, table := range tables {
		var asText, asJSON string
		q := fmt.Sprintf(`SELECT coalesce(string_agg(t::text, E'\n'), ''), coalesce(string_agg(to_jsonb(t)::text, E'\n'), '') FROM %q t`, table)
		if err := l.pool.QueryRow(bg, q).Scan(&asText, &asJSON); err != nil {
			t.Fatalf("%s: %v", table, err)
		}
		// Numeric secrets are looked for in the typed (JSON) form only.
		long := &secretSet{t: t, long: s.long}
		found = append(found, long.find("table "+table, asText)...)
		found = append(found, s.find("table "+table+" (JSON)", asJSON)...)
	}
	events := 0
	for after := eventstore.Start; ; {
		evs, err := l.store.ReadAll(bg, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			meta, _ := json.Marshal(e.Metadata)
			found = append(found, s.find("event "+e.Type+" data", string(e.Data))...)
			found = append(found, s.find("event "+e.Type+" metadata", string(meta))...)
			events++
		}
		after = evs[len(evs)-1].Position
	}
	logText := logs.String()
	found = append(found, s.find("logs", logText)...)
	for _, f := range found {
		t.Error(f)
	}
	if events < 30 || strings.Count(logText, "\n") < 50 {
		t.Fatalf("the scan saw too little: %d events, %d log lines", events, strings.Count(logText, "\n"))
	}
	t.Logf("scanned %d tables (%s), %d events, %d log lines for %d secrets", len(tables), strings.Join(tables, ", "),
		events, strings.Count(logText, "\n"), len(s.long)+len(s.short))
}
