package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/eventstore"
)

// testAuditKey signs the receipts of the tests.
var testAuditKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

// sealed is the log as serve wires it: personal data sealed per subject.
func sealed(t *testing.T, pool *pgxpool.Pool, inner eventstore.Store) eventstore.Store {
	t.Helper()
	keys, err := eventstore.NewKeyring(pool, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.Seal(inner, keys, commands.PersonalData{})
}

// auditorKeys caches one auditor key per test ledger.
var auditorKeys sync.Map // *ledger → string

func (l *ledger) auditorKey() string {
	l.t.Helper()
	if k, ok := auditorKeys.Load(l); ok {
		return k.(string)
	}
	_, key := l.issueAuditor("Compliance")
	auditorKeys.Store(l, key)
	return key
}

func (l *ledger) audit(path string) answer {
	l.t.Helper()
	return l.do("GET", path, "", "Authorization", "Bearer "+l.auditorKey())
}

// historyLines decodes an NDJSON answer.
func historyLines(t *testing.T, a answer) []map[string]any {
	t.Helper()
	if a.status != 200 || a.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("history: %d %s %s", a.status, a.header.Get("Content-Type"), a.raw)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(a.raw), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// auditFixture is one user who granted a client, with the instants before
// the grant, during it and after its revocation.
type auditFixture struct {
	l                      *ledger
	account, client        uuid.UUID
	before, during, after  time.Time
	email, phone, deviceID string
	dev                    *device
}

func newAuditFixture(t *testing.T, email, phone string) *auditFixture {
	l := newLedger(t, nil)
	f := &auditFixture{l: l, email: email, phone: phone, deviceID: "phone-1"}
	f.client = uuid.MustParse(l.registerClient(map[string]any{"name": "Fleet App", "redirectUris": []string{"https://fleet.example/cb"},
		"scopes": []string{"account:profile", "vehicle:status"}}).want(t, 201, "").body["clientId"].(string))
	l.signIn(email, f.deviceID)
	f.dev = l.device(email, f.deviceID)
	f.account = uuid.MustParse(f.dev.rest("GET", "/v1/me", "", 200, "").body["accountId"].(string))
	if phone != "" {
		f.dev.shortcut(phone, "424242")
	}
	pause := func() time.Time {
		time.Sleep(5 * time.Millisecond)
		at := time.Now()
		time.Sleep(5 * time.Millisecond)
		return at
	}
	f.before = pause()
	if _, err := l.cmds.DecideConsent(context.Background(), commands.ConsentDecision{AccountID: f.account, ClientID: f.client, Accept: true,
		Scopes: []string{"account:profile", "vehicle:status"}, NoticeVersion: "2026-01", CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	f.during = pause()
	f.dev.rest("DELETE", "/v1/me/consents/"+f.client.String(), "", 204, "")
	f.after = pause()
	return f
}

func TestAuditConsentsAtAnInstant(t *testing.T) {
	f := newAuditFixture(t, "pit@example.com", "")
	l := f.l
	at := func(path string, when time.Time) []any {
		t.Helper()
		a := l.audit(path+"?asOf="+when.UTC().Format(time.RFC3339Nano)).want(t, 200, "")
		return a.body["grants"].([]any)
	}
	for _, path := range []string{"/v1/audit/accounts/" + f.account.String() + "/consents", "/v1/audit/clients/" + f.client.String() + "/consents"} {
		if g := at(path, f.before); len(g) != 0 {
			t.Fatalf("%s before the grant: %v", path, g)
		}
		g := at(path, f.during)
		if len(g) != 1 {
			t.Fatalf("%s during the grant: %v", path, g)
		}
		during := g[0].(map[string]any)
		if during["status"] != "granted" || during["noticeVersion"] != "2026-01" || len(during["scopes"].([]any)) != 2 ||
			during["accountId"] != f.account.String() || during["clientId"] != f.client.String() || during["revokedAt"] != nil {
			t.Fatalf("%s during the grant: %v", path, during)
		}
		after := at(path, f.after)[0].(map[string]any)
		if after["status"] != "revoked" || after["revokedReason"] != "user" || after["grantedAt"] != during["grantedAt"] || after["revokedAt"] == nil {
			t.Fatalf("%s after revocation: %v", path, after)
		}
	}
	// The answer comes from the log, not the read model: emptying the
	// read model changes nothing.
	if _, err := l.pool.Exec(context.Background(), `DELETE FROM consents`); err != nil {
		t.Fatal(err)
	}
	if g := at("/v1/audit/accounts/"+f.account.String()+"/consents", f.during); len(g) != 1 {
		t.Fatalf("the answer read the read model: %v", g)
	}
	l.audit("/v1/audit/accounts/"+f.account.String()+"/consents?asOf=yesterday").want(t, 400, "invalid_as_of")
	l.audit("/v1/audit/accounts/"+uuid.NewString()+"/consents").want(t, 404, "unknown_account")
	l.do("GET", "/v1/audit/accounts/"+f.account.String()+"/consents", "").want(t, 401, "")
	l.do("GET", "/v1/audit/accounts/"+f.account.String()+"/consents", "", "Authorization", "Bearer "+f.dev.token).want(t, 401, "")
}

func TestAuditHistoryReplay(t *testing.T) {
	f := newAuditFixture(t, "replay@example.com", "0611223344")
	l := f.l
	lines := historyLines(t, l.audit("/v1/audit/accounts/"+f.account.String()+"/events"))
	streams := map[string]int{}
	var prev eventstore.Position
	for i, line := range lines {
		var pos eventstore.Position
		b, _ := json.Marshal(line["position"])
		_ = json.Unmarshal(b, &pos)
		if i > 0 && !prev.Less(pos) {
			t.Fatalf("line %d is not after line %d: %v", i, i-1, lines)
		}
		prev = pos
		for _, field := range []string{"stream", "type", "time", "actor", "data", "id", "revision", "hash"} {
			if _, ok := line[field]; !ok {
				t.Fatalf("line %d lacks %s: %v", i, field, line)
			}
		}
		streams[strings.SplitN(line["stream"].(string), "-", 2)[0]]++
	}
	for _, kind := range []string{"email", "account", "session", "enrollment", "grant"} {
		if streams[kind] == 0 {
			t.Fatalf("no %s event in the history: %v", kind, streams)
		}
	}
	if streams["client"] != 0 {
		t.Fatal("the partner's registration is in the user's history")
	}
	// The history shows the person's data while it exists.
	if !strings.Contains(fmt.Sprint(lines), f.email) {
		t.Fatal("the history hides the e-mail before erasure")
	}

	// Bounds, inclusive, by position or by time.
	pos := func(i int) string {
		p := lines[i]["position"].(map[string]any)
		return fmt.Sprintf("%.0f/%.0f", p["commit"], p["prepare"])
	}
	cut := historyLines(t, l.audit("/v1/audit/accounts/"+f.account.String()+"/events?from="+pos(2)+"&to="+pos(4)))
	if len(cut) != 3 || cut[0]["id"] != lines[2]["id"] || cut[2]["id"] != lines[4]["id"] {
		t.Fatalf("from/to by position: %d lines", len(cut))
	}
	since := historyLines(t, l.audit("/v1/audit/accounts/"+f.account.String()+"/events?from="+f.before.UTC().Format(time.RFC3339Nano)))
	if len(since) != 2 || since[0]["type"] != "consent.granted.v1" || since[1]["type"] != "consent.revoked.v1" {
		t.Fatalf("from by time: %v", since)
	}
	l.audit("/v1/audit/accounts/"+f.account.String()+"/events?from=soon").want(t, 400, "invalid_bound")
	l.audit("/v1/audit/accounts/"+uuid.NewString()+"/events").want(t, 404, "unknown_account")
	l.audit("/v1/audit/accounts/not-an-id/events").want(t, 404, "unknown_account")
}

// verifyReceipt checks a signed receipt the way a third party would: the
// JWS signature with the public key, and the payload against the receipt.
func verifyReceipt(t *testing.T, a answer) map[string]any {
	t.Helper()
	jws, _ := a.body["jws"].(string)
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("jws %q", jws)
	}
	pub, _ := base64.StdEncoding.DecodeString(a.body["publicKey"].(string))
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) || !bytes.Equal(pub, testAuditKey.Public().(ed25519.PublicKey)) {
		t.Fatal("the receipt's signature does not verify with the audit key")
	}
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var signed map[string]any
	_ = json.Unmarshal(payload, &signed)
	if fmt.Sprint(signed) != fmt.Sprint(a.body["receipt"]) {
		t.Fatalf("the signed payload is not the receipt:\n%v\n%v", signed, a.body["receipt"])
	}
	return signed
}

func TestConsentReceipts(t *testing.T) {
	f := newAuditFixture(t, "receipt@example.com", "")
	l := f.l
	mine := f.dev.rest("GET", "/v1/me/consents/"+f.client.String()+"/receipt", "", 200, "")
	r := verifyReceipt(t, mine)
	for _, field := range []string{"version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID", "piiPrincipalId",
		"piiControllers", "noticeVersion", "services", "withdrawalMethod"} {
		if r[field] == nil || r[field] == "" {
			t.Fatalf("receipt lacks %s: %v", field, r)
		}
	}
	if r["piiPrincipalId"] != f.account.String() || r["noticeVersion"] != "2026-01" || r["collectionMethod"] != "hosted-consent-prompt" {
		t.Fatalf("receipt: %v", r)
	}
	audited := l.audit("/v1/audit/accounts/"+f.account.String()+"/consents/"+f.client.String()+"/receipt").want(t, 200, "")
	if audited.raw != mine.raw {
		t.Fatal("the auditor's receipt differs from the user's")
	}
	f.dev.rest("GET", "/v1/me/consents/"+uuid.NewString()+"/receipt", "", 404, "no_grant")
}

// TestErasureLeavesNoPersonalData erases an account with an e-mail and a
// trusted phone, then looks for either everywhere: HTTP answers, every
// table as text, and the logs.
func TestErasureLeavesNoPersonalData(t *testing.T) {
	logs := &bytes.Buffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	const email, phone = "erase.me@example.com", "0699887766"
	f := newAuditFixture(t, email, phone)
	l := f.l
	ctx := context.Background()
	receiptBefore := f.dev.rest("GET", "/v1/me/consents/"+f.client.String()+"/receipt", "", 200, "").raw
	if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: f.account, ClientID: f.client, Accept: true,
		Scopes: []string{"account:profile"}, NoticeVersion: "2026-02"}); err != nil {
		t.Fatal(err)
	}

	admin := "Bearer " + adminToken
	l.do("POST", "/v1/admin/accounts/"+uuid.NewString()+"/erase", "", "Authorization", admin).want(t, 404, "unknown_account")
	l.do("POST", "/v1/admin/accounts/"+f.account.String()+"/erase", "", "Authorization", "Bearer "+l.auditorKey()+"x").want(t, 401, "")
	erased := l.do("POST", "/v1/admin/accounts/"+f.account.String()+"/erase", "", "Authorization", admin).want(t, 200, "")
	if erased.body["status"] != "erased" || erased.body["sessionsEnded"] != float64(2) || erased.body["grantsRevoked"] != float64(1) {
		t.Fatalf("erase: %s", erased.raw)
	}
	events := l.count()
	l.do("POST", "/v1/admin/accounts/"+f.account.String()+"/erase", "", "Authorization", admin).want(t, 200, "")
	if l.count() != events {
		t.Fatal("erasing twice appended events")
	}

	var answers []string
	keep := func(a answer) answer { answers = append(answers, a.raw); return a }
	// The session ended, and the account cannot be signed in to.
	keep(f.dev.rest("GET", "/v1/me", "", 401, "invalid_session"))
	keep(l.do("POST", "/v1/sessions", js(map[string]string{"email": email, "password": pw, "deviceId": "x"})).want(t, 401, ""))
	history := keep(l.audit("/v1/audit/accounts/" + f.account.String() + "/events"))
	lines := historyLines(t, history)
	var sawErasure, sawRegistration bool
	for _, line := range lines {
		switch line["type"] {
		case "account.erased.v1":
			sawErasure = true
		case "account.registered.v1":
			data := line["data"].(map[string]any)
			sawRegistration = data["email"] == nil && data["passwordHash"] != ""
		}
	}
	if !sawErasure || !sawRegistration {
		t.Fatalf("history after erasure lacks the facts: %s", history.raw)
	}
	keep(l.audit("/v1/audit/accounts/"+f.account.String()+"/consents?asOf="+f.during.UTC().Format(time.RFC3339Nano)).want(t, 200, ""))
	receiptAfter := keep(l.audit("/v1/audit/accounts/"+f.account.String()+"/consents/"+f.client.String()+"/receipt").want(t, 200, ""))
	verifyReceipt(t, receiptAfter)
	var before map[string]any
	_ = json.Unmarshal([]byte(receiptBefore), &before)
	if receiptAfter.body["receipt"].(map[string]any)["piiPrincipalId"] != before["receipt"].(map[string]any)["piiPrincipalId"] {
		t.Fatal("the receipt changed subject")
	}
	keep(l.do("GET", "/v1/admin/projections", "", "Authorization", admin).want(t, 200, ""))
	keep(l.do("GET", "/v1/dev/outbox", "").want(t, 200, ""))
	for _, a := range answers {
		if strings.Contains(a, email) || strings.Contains(a, phone) {
			t.Fatalf("an answer after erasure holds personal data: %s", a)
		}
	}

	// Every table, as text.
	rows, _ := l.pool.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(tables) < 10 {
		t.Fatalf("tables: %v %v", tables, err)
	}
	for _, table := range tables {
		var dump string
		if err := l.pool.QueryRow(ctx, `SELECT coalesce(string_agg(t::text, ' '), '') FROM `+pgx.Identifier{table}.Sanitize()+` t`).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(dump, email) || strings.Contains(dump, phone) || strings.Contains(dump, strings.TrimPrefix(phone, "0")) {
			t.Fatalf("table %s holds personal data after erasure", table)
		}
	}
	if strings.Contains(logs.String(), email) || strings.Contains(logs.String(), phone) {
		t.Fatalf("the logs hold personal data:\n%s", logs)
	}

	// The address is free again: its owner may sign up anew.
	l.do("POST", "/v1/accounts", js(map[string]string{"email": email, "password": pw})).want(t, 201, "")
}
