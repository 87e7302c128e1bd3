package api_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/consentledger/ledger/domain/security"
)

// auditUntil asks an auditor route until its history holds n lines: the
// security index follows the log a moment behind the request that
// recorded the event.
func (l *ledger) auditUntil(path string, n int) []map[string]any {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a := l.audit(path)
		var lines []map[string]any
		if strings.TrimSpace(a.raw) != "" {
			lines = historyLines(l.t, a)
		} else if a.status != 200 {
			l.t.Fatalf("%s: %d %s", path, a.status, a.raw)
		}
		if len(lines) >= n || time.Now().After(deadline) {
			if len(lines) != n {
				l.t.Fatalf("%s: %d lines, want %d: %v", path, len(lines), n, lines)
			}
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuditorSeesSecurityEvents: a source limited and partner clients
// locked through the real endpoints are facts an auditor reads, in log
// order, the whole security history or one client's, within from/to
// bounds; no other credential reads them.
func TestAuditorSeesSecurityEvents(t *testing.T) {
	const sourceBudget, clientBudget = 2, 3
	l, _ := newLimitedLedger(t, sourceBudget, clientBudget)
	n := 0
	next := func() string { n++; return "192.0.2." + strconv.Itoa(n) }
	pause := func() time.Time {
		time.Sleep(5 * time.Millisecond)
		at := time.Now()
		time.Sleep(5 * time.Millisecond)
		return at
	}

	// A source limited by wrong passwords.
	l.signIn("guessed@example.com", "d1")
	wrong := js(map[string]string{"email": "guessed@example.com", "password": "Wrong-Password-1", "deviceId": "d1"})
	const guesser = "203.0.113.7"
	for range sourceBudget {
		l.from(guesser, "POST", "/v1/sessions", wrong).want(t, 401, "invalid_credentials")
	}
	wantLimited(t, l.from(guesser, "POST", "/v1/sessions", wrong), "too_many_failed_attempts")
	mid := pause()

	// Client A locked by wrong secrets from many addresses, client B too.
	a, _ := l.partnerClient("locked A")
	b, _ := l.partnerClient("locked B")
	for _, client := range []string{a, b} {
		for range clientBudget {
			if r := l.tokenRequest(next(), client, "not-the-secret"); r.status != 401 {
				t.Fatalf("wrong secret: %d %s", r.status, r.raw)
			}
		}
		wantLimited(t, l.tokenRequest(next(), client, "not-the-secret"), "client_auth_locked")
	}
	// A source limited by wrong secrets of client C: a source limit names
	// no client, so it is not in C's security history.
	c, _ := l.partnerClient("guessed C")
	for range sourceBudget {
		l.tokenRequest("198.51.100.4", c, "not-the-secret")
	}

	lines := l.auditUntil("/v1/audit/security/events", 4)
	want := []struct{ stream, typ string }{
		{security.SourceStream(guesser), security.TypeSourceLimited},
		{"security-client-" + a, security.TypeClientAuthLocked},
		{"security-client-" + b, security.TypeClientAuthLocked},
		{security.SourceStream("198.51.100.4"), security.TypeSourceLimited},
	}
	for i, line := range lines {
		if line["stream"] != want[i].stream || line["type"] != want[i].typ {
			t.Fatalf("line %d: %s %s, want %s %s", i, line["stream"], line["type"], want[i].stream, want[i].typ)
		}
		for _, field := range []string{"position", "revision", "id", "time", "actor", "data", "hash"} {
			if _, ok := line[field]; !ok {
				t.Fatalf("line %d lacks %s: %v", i, field, line)
			}
		}
	}
	if d := lines[0]["data"].(map[string]any); d["source"] != guesser || d["kind"] != "password" || d["failures"] != float64(sourceBudget) {
		t.Fatalf("source limit: %v", d)
	}
	if d := lines[3]["data"].(map[string]any); d["kind"] != "client-secret" {
		t.Fatalf("client-secret source limit: %v", d)
	}

	// One client's security history: its locks only.
	mine := l.auditUntil("/v1/audit/clients/"+a+"/security-events", 1)
	if d := mine[0]["data"].(map[string]any); mine[0]["id"] != lines[1]["id"] || d["clientId"] != a || d["failures"] != float64(clientBudget) {
		t.Fatalf("client A: %v", mine)
	}
	l.auditUntil("/v1/audit/clients/"+c+"/security-events", 0)
	l.audit("/v1/audit/clients/not-an-id/security-events").want(t, 404, "unknown_client")

	// Bounds, inclusive, by position or by time.
	pos := func(i int) string {
		p := lines[i]["position"].(map[string]any)
		return fmt.Sprintf("%.0f/%.0f", p["commit"], p["prepare"])
	}
	cut := l.auditUntil("/v1/audit/security/events?from="+pos(1)+"&to="+pos(2), 2)
	if cut[0]["id"] != lines[1]["id"] || cut[1]["id"] != lines[2]["id"] {
		t.Fatalf("from/to by position: %v", cut)
	}
	at := mid.UTC().Format(time.RFC3339Nano)
	if since := l.auditUntil("/v1/audit/security/events?from="+at, 3); since[0]["id"] != lines[1]["id"] {
		t.Fatalf("from by time: %v", since)
	}
	if until := l.auditUntil("/v1/audit/security/events?to="+at, 1); until[0]["id"] != lines[0]["id"] {
		t.Fatalf("to by time: %v", until)
	}
	if since := l.auditUntil("/v1/audit/clients/"+a+"/security-events?from="+pos(2), 0); len(since) != 0 {
		t.Fatalf("client A after its lock: %v", since)
	}
	l.audit("/v1/audit/security/events?to=later").want(t, 400, "invalid_bound")

	// No other credential reads them: the admin token, a user session, a
	// partner token (each from an address of its own, since a refused
	// credential draws on the address's budget).
	session := l.signIn("bystander@example.com", "d2")
	d, dSecret := l.partnerClient("partner D")
	token := l.tokenRequest(next(), d, dSecret).want(t, 200, "")
	partner, _ := token.body["access_token"].(string)
	if partner == "" {
		t.Fatalf("client credentials: %s", token.raw)
	}
	for name, credential := range map[string]string{
		"none":         "",
		"admin token":  "Bearer " + adminToken,
		"user session": "Bearer " + session,
		"partner":      "Bearer " + partner,
	} {
		for _, path := range []string{"/v1/audit/security/events", "/v1/audit/clients/" + a + "/security-events"} {
			r := l.from(next(), "GET", path, "", "Authorization", credential, "X-Device-Id", "d2")
			if r.status != 401 || r.body["code"] != "auditor_key_invalid" || strings.Contains(r.raw, guesser) {
				t.Errorf("%s on %s: %d %s", name, path, r.status, r.raw)
			}
		}
	}
}
