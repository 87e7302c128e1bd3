package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/consentledger/ledger/migrations/dbtest"
)

// The personal data of the erasure tests: an e-mail address and a trusted
// phone (which the ledger may store without its leading 0).
const erasedEmail, erasedPhone = "erase.me@example.com", "0699887766"

// holdsPersonalData reports whether an answer shows the test's e-mail or
// phone number.
func holdsPersonalData(s string) bool {
	return strings.Contains(s, erasedEmail) || strings.Contains(s, strings.TrimPrefix(erasedPhone, "0"))
}

// call sends one request to a served ledger and fails the test unless it
// answers want; it returns the body.
func call(t *testing.T, p *process, method, path, body string, want int, header ...string) string {
	t.Helper()
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: HTTP %d, want %d: %.300s", method, path, resp.StatusCode, want, raw)
	}
	return string(raw)
}

// field decodes one string field of a JSON answer.
func field(t *testing.T, raw, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	s, _ := m[name].(string)
	if s == "" {
		t.Fatalf("no %s in %s", name, raw)
	}
	return s
}

// devCode reads the newest code sent to to from p's dev outbox (each
// process has its own).
func devCode(t *testing.T, p *process, to string) string {
	t.Helper()
	var out struct {
		Messages []struct {
			Code string `json:"code"`
		} `json:"messages"`
	}
	raw := call(t, p, "GET", "/v1/dev/outbox?to="+url.QueryEscape(to), "", 200)
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out.Messages) == 0 {
		t.Fatalf("no message to %s: %s", to, raw)
	}
	return out.Messages[0].Code
}

// devMessages counts the messages to `to` in p's dev outbox.
func devMessages(t *testing.T, p *process, to string) int {
	t.Helper()
	var out struct {
		Messages []json.RawMessage `json:"messages"`
	}
	raw := call(t, p, "GET", "/v1/dev/outbox?to="+url.QueryEscape(to), "", 200)
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("dev outbox: %v: %s", err, raw)
	}
	return len(out.Messages)
}

// erasureSubject signs the test's person up through p, with a session and
// a trusted phone, and returns the account id and the session's headers.
func erasureSubject(t *testing.T, p *process) (account string, session []string) {
	t.Helper()
	const pw = "Correct-Horse-9"
	account = field(t, call(t, p, "POST", "/v1/accounts", `{"email":"`+erasedEmail+`","password":"`+pw+`"}`, 201), "accountId")
	call(t, p, "POST", "/v1/accounts/activate", `{"token":"`+devCode(t, p, erasedEmail)+`"}`, 200)
	token := field(t, call(t, p, "POST", "/v1/sessions", `{"email":"`+erasedEmail+`","password":"`+pw+`","deviceId":"phone-1"}`, 201), "sessionToken")
	session = []string{"Authorization", "Bearer " + token, "X-Device-Id", "phone-1"}
	sdk := func(path, api string, params map[string]any) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"api": api, "parameters": params})
		if raw := call(t, p, "POST", path, string(body), 200, session...); field(t, raw, "status") != "SUCCEEDED" {
			t.Fatalf("%s: %s", api, raw)
		}
	}
	sdk("/pims/get", "pims.authentication.smscode", map[string]any{"type": "phoneNumberCertification", "phoneNumber": erasedPhone})
	sdk("/pims/set", "pims.authentication.enrollment", map[string]any{"action": "enrollWithPhoneNumber", "pinCode": "1234",
		"smsCode": devCode(t, p, erasedPhone), "phoneNumber": erasedPhone})
	return account, session
}

// adminToken is the admin token p generated and printed (dev mode).
func adminToken(t *testing.T, p *process) string {
	t.Helper()
	m := adminTokenLine.FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("no dev admin token in the server's output:\n%s", p.stdout)
	}
	return m[1]
}

// auditorKey issues an auditor key through p; it is valid on every
// instance (only its hash is kept, in the log).
func auditorKey(t *testing.T, p *process) string {
	t.Helper()
	return field(t, call(t, p, "POST", "/v1/admin/auditors", `{"name":"Compliance"}`, 201, "Authorization", "Bearer "+adminToken(t, p)), "key")
}

func history(t *testing.T, p *process, key, account string) string {
	t.Helper()
	return call(t, p, "GET", "/v1/audit/accounts/"+account+"/events", "", 200, "Authorization", "Bearer "+key)
}

// TestServeErasesAnAccount erases through `ledger serve` as it is wired
// (its log instrumented for metrics around the sealed one): the erasure
// answers 200, the history shows the facts without the e-mail or the phone,
// and the chain still verifies.
func TestServeErasesAnAccount(t *testing.T) {
	p := startServe(t, buildLedger(t), dbtest.URL(t), freeAddr(t))
	account, session := erasureSubject(t, p)
	key := auditorKey(t, p)
	if h := history(t, p, key, account); !holdsPersonalData(h) {
		t.Fatalf("the history before erasure shows no personal data: %s", h)
	}
	verify := func() {
		t.Helper()
		raw := call(t, p, "GET", "/v1/audit/verify?accountId="+account, "", 200, "Authorization", "Bearer "+key)
		if !strings.Contains(raw, `"valid":true`) {
			t.Fatalf("the account's chain does not verify: %s", raw)
		}
	}
	verify()

	erased := call(t, p, "POST", "/v1/admin/accounts/"+account+"/erase", "", 200, "Authorization", "Bearer "+adminToken(t, p))
	if field(t, erased, "status") != "erased" {
		t.Fatalf("erase: %s", erased)
	}
	h := history(t, p, key, account)
	if !strings.Contains(h, `"account.erased.v1"`) || !strings.Contains(h, `"account.registered.v1"`) {
		t.Fatalf("the history after erasure lacks the facts: %s", h)
	}
	if holdsPersonalData(h) {
		t.Fatalf("the history after erasure shows personal data: %s", h)
	}
	verify()
	call(t, p, "GET", "/v1/me", "", 401, session...)
}

// TestErasureTakesEffectOnEveryInstance runs two `ledger serve` on one
// database. The person is served by B, which has opened (and so cached)
// the account's data key; the erasure goes through A. Once A has answered,
// B shows neither the e-mail nor the phone: in the auditor's history, in
// the profile, or by signing in.
func TestErasureTakesEffectOnEveryInstance(t *testing.T) {
	bin := buildLedger(t)
	dbURL := dbtest.URL(t)
	a := startServe(t, bin, dbURL, freeAddr(t))
	b := startServe(t, bin, dbURL, freeAddr(t))

	account, session := erasureSubject(t, b)
	key := auditorKey(t, a)
	if me := call(t, b, "GET", "/v1/me", "", 200, session...); !holdsPersonalData(me) {
		t.Fatalf("the profile on B shows no e-mail: %s", me)
	}
	if h := history(t, b, key, account); !holdsPersonalData(h) {
		t.Fatalf("the history on B before erasure shows no personal data: %s", h)
	}

	call(t, a, "POST", "/v1/admin/accounts/"+account+"/erase", "", 200, "Authorization", "Bearer "+adminToken(t, a))
	for name, p := range map[string]*process{"A": a, "B": b} {
		h := history(t, p, key, account)
		if !strings.Contains(h, `"account.erased.v1"`) {
			t.Fatalf("the history on %s lacks the erasure: %s", name, h)
		}
		if holdsPersonalData(h) {
			t.Fatalf("the history on %s after erasure through A shows personal data: %s", name, h)
		}
	}
	// B sent the subject's activation e-mail and SMS code: its outbox
	// dropped them when it applied the erasure that ran on A.
	for _, to := range []string{erasedEmail, erasedPhone} {
		if n := devMessages(t, b, to); n != 0 {
			t.Fatalf("B's outbox still holds %d messages to %s after the erasure through A", n, to)
		}
	}
	call(t, b, "GET", "/v1/me", "", 401, session...)
	call(t, b, "POST", "/v1/sessions", `{"email":"`+erasedEmail+`","password":"Correct-Horse-9","deviceId":"phone-1"}`, 401)
	// Whatever B answers from now on, the key it had cached stays unused:
	// the sign-up of a new account with the freed address is sealed with a
	// new key, and the old account's history still opens nothing.
	call(t, b, "POST", "/v1/accounts", `{"email":"`+erasedEmail+`","password":"Correct-Horse-9"}`, 201)
	// The outbox forgot an account, not an address: the new account's
	// activation e-mail is there.
	if n := devMessages(t, b, erasedEmail); n != 1 {
		t.Fatalf("B's outbox holds %d messages to the freed address after a new sign-up, want the new account's 1", n)
	}
	if h := history(t, b, key, account); holdsPersonalData(h) {
		t.Fatalf("the history on B shows personal data again: %s", h)
	}
}
