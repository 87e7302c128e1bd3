package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/consentledger/ledger/api"
	"github.com/consentledger/ledger/eventstore"
)

// auditLedger is a ledger with a signing key, an auditor and one signed-up
// account.
func auditLedger(t *testing.T) (l *ledger, key ed25519.PrivateKey, auditor, accountID string) {
	return auditLedgerOn(t, nil)
}

func auditLedgerOn(t *testing.T, open storeFactory) (l *ledger, key ed25519.PrivateKey, auditor, accountID string) {
	t.Helper()
	_, key, _ = ed25519.GenerateKey(rand.Reader)
	l = newLedgerWith(t, open, func(app *api.App) { app.AuditKey = key })
	_, auditor = l.issueAuditor("Regulator")
	session := l.signIn("grace@example.com", "device-1")
	me := l.do("GET", "/v1/me", "", "Authorization", "Bearer "+session, "X-Device-Id", "device-1").want(t, 200, "")
	l.signIn("other@example.com", "device-2")
	return l, key, auditor, me.body["accountId"].(string)
}

func (l *ledger) auditGet(path string, auditor string) answer {
	l.t.Helper()
	return l.do("GET", path, "", "Authorization", "Bearer "+auditor)
}

// tamper runs sql on the log with its append-only guard off, as someone
// with direct database access could.
func (l *ledger) tamper(sql string, args ...any) {
	l.t.Helper()
	ctx := context.Background()
	tx, err := l.pool.Begin(ctx)
	if err != nil {
		l.t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		l.t.Fatal(err)
	}
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil || tag.RowsAffected() != 1 {
		l.t.Fatalf("tamper: %v (%d rows)", err, tag.RowsAffected())
	}
	if err := tx.Commit(ctx); err != nil {
		l.t.Fatal(err)
	}
}

func (l *ledger) positionOf(stream string, revision int) map[string]any {
	l.t.Helper()
	var commit, prepare int64
	if err := l.pool.QueryRow(context.Background(), `SELECT tx_id::text::bigint, position FROM events WHERE stream_id = $1 AND revision = $2`,
		stream, revision).Scan(&commit, &prepare); err != nil {
		l.t.Fatal(err)
	}
	return map[string]any{"commit": float64(commit), "prepare": float64(prepare)}
}

func wantValid(t *testing.T, a answer) {
	t.Helper()
	if a.body["valid"] != true || a.body["checked"].(float64) < 1 || a.body["firstInvalidPosition"] != nil {
		t.Fatalf("want a valid chain: %s", a.raw)
	}
}

func TestAuditVerifyDetectsAnEditInTheDatabase(t *testing.T) {
	l, _, auditor, account := auditLedger(t)
	l.auditGet("/v1/audit/verify?accountId="+account, "").want(t, 401, "auditor_key_invalid")
	l.auditGet("/v1/audit/verify?accountId=nope", auditor).want(t, 400, "invalid_account_id")
	l.auditGet("/v1/audit/verify?accountId=00000000-0000-0000-0000-000000000001", auditor).want(t, 404, "unknown_account")

	wantValid(t, l.auditGet("/v1/audit/verify?accountId="+account, auditor).want(t, 200, ""))
	whole := l.auditGet("/v1/audit/verify", auditor).want(t, 200, "")
	wantValid(t, whole)
	if whole.body["checkpoints"].(float64) < 1 {
		t.Fatalf("no checkpoint compared: %s", whole.raw)
	}

	stream := "account-" + account
	l.tamper(`UPDATE events SET data = data || '{"status":"vip"}' WHERE stream_id = $1 AND revision = 0`, stream)
	for _, path := range []string{"/v1/audit/verify?accountId=" + account, "/v1/audit/verify"} {
		a := l.auditGet(path, auditor).want(t, 200, "")
		if a.body["valid"] != false || a.body["reason"] != eventstore.ReasonHash || a.body["stream"] != stream ||
			fmt.Sprint(a.body["firstInvalidPosition"]) != fmt.Sprint(l.positionOf(stream, 0)) {
			t.Fatalf("%s: %s", path, a.raw)
		}
	}
}

func TestAuditVerifyDetectsRecomputedHashesAndRemovedEvents(t *testing.T) {
	l, _, auditor, account := auditLedger(t)
	stream := "account-" + account
	// Whoever edits an event and recomputes its hash breaks the link of the
	// next one.
	l.tamper(`UPDATE events SET data = data || '{"x":1}', hash = ledger_link(prev_hash, ledger_event_body(stream_id, revision, event_id, type, data || '{"x":1}', metadata))
		WHERE stream_id = $1 AND revision = 0`, stream)
	a := l.auditGet("/v1/audit/verify?accountId="+account, auditor).want(t, 200, "")
	if a.body["valid"] != false || a.body["reason"] != eventstore.ReasonLink || a.body["revision"] != float64(1) {
		t.Fatalf("recomputed hash: %s", a.raw)
	}

	// The last event of a stream, removed, leaves a valid stream behind:
	// the checkpoints over the whole log find it.
	l2, _, auditor2, account2 := auditLedger(t)
	stream2 := "account-" + account2
	var last int
	_ = l2.pool.QueryRow(context.Background(), `SELECT max(revision) FROM events WHERE stream_id = $1`, stream2).Scan(&last)
	wantValid(t, l2.auditGet("/v1/audit/verify", auditor2).want(t, 200, ""))
	l2.tamper(`DELETE FROM events WHERE stream_id = $1 AND revision = $2`, stream2, last)
	wantValid(t, l2.auditGet("/v1/audit/verify?accountId="+account2, auditor2).want(t, 200, ""))
	if w := l2.auditGet("/v1/audit/verify", auditor2).want(t, 200, ""); w.body["valid"] != false || w.body["reason"] != eventstore.ReasonCheckpoint {
		t.Fatalf("whole log after a removal: %s", w.raw)
	}
}

func TestAuditCheckpointsAreSignedWithThePublishedKey(t *testing.T) {
	l, key, auditor, _ := auditLedger(t)
	l.do("GET", "/v1/audit/checkpoints", "", "Authorization", "Bearer "+adminToken).want(t, 401, "auditor_key_invalid")
	l.auditGet("/v1/audit/checkpoints?limit=0", auditor).want(t, 400, "invalid_limit")
	l.auditGet("/v1/audit/checkpoints?before=x", auditor).want(t, 400, "invalid_before")

	pk := l.auditGet("/v1/audit/public-key", auditor).want(t, 200, "")
	pub, _ := base64.StdEncoding.DecodeString(pk.body["publicKey"].(string))
	if !ed25519.PublicKey(pub).Equal(key.Public()) || pk.body["algorithm"] != "Ed25519" {
		t.Fatalf("public key: %s", pk.raw)
	}
	a := l.auditGet("/v1/audit/checkpoints?limit=2", auditor).want(t, 200, "")
	cps := a.body["checkpoints"].([]any)
	if len(cps) != 2 {
		t.Fatalf("checkpoints: %s", a.raw)
	}
	newest := cps[0].(map[string]any)
	if cps[1].(map[string]any)["count"].(float64) >= newest["count"].(float64) {
		t.Fatalf("not newest first: %s", a.raw)
	}
	older := l.auditGet(fmt.Sprintf("/v1/audit/checkpoints?before=%v&limit=1", newest["count"]), auditor).want(t, 200, "")
	if older.body["checkpoints"].([]any)[0].(map[string]any)["count"] != cps[1].(map[string]any)["count"] {
		t.Fatalf("paging: %s", older.raw)
	}
	for _, c := range cps {
		c := c.(map[string]any)
		b64 := func(k string) []byte { v, _ := base64.StdEncoding.DecodeString(c[k].(string)); return v }
		pos := c["position"].(map[string]any)
		var at = c["lastEventAt"].(string)
		msg := checkpointMessage(t, uint64(pos["commit"].(float64)), uint64(pos["prepare"].(float64)), uint64(c["count"].(float64)), b64("rollingHash"), at)
		if !ed25519.Verify(pub, msg, b64("signature")) {
			t.Fatalf("signature of %v does not verify", c)
		}
	}
}

func checkpointMessage(t *testing.T, commit, prepare, count uint64, rolling []byte, at string) []byte {
	t.Helper()
	when, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		t.Fatal(err)
	}
	return eventstore.CheckpointMessage(eventstore.Position{Commit: commit, Prepare: prepare}, count, rolling, when)
}

// TestAuditVerifyStaysValidAfterErasure: erasure destroys the subject's key,
// not a byte of the log, so the chain and the checkpoints still verify.
func TestAuditVerifyStaysValidAfterErasure(t *testing.T) {
	l, _, auditor, account := auditLedger(t)
	l.do("POST", "/v1/admin/accounts/"+account+"/erase", "", "Authorization", "Bearer "+adminToken).want(t, 200, "")
	wantValid(t, l.auditGet("/v1/audit/verify?accountId="+account, auditor).want(t, 200, ""))
	wantValid(t, l.auditGet("/v1/audit/verify", auditor).want(t, 200, ""))
}

// TestAuditVerifyOnEventStoreDB: the chain travels in EventStoreDB metadata
// and verifies the same way, checkpoints included.
func TestAuditVerifyOnEventStoreDB(t *testing.T) {
	l, _, auditor, account := auditLedgerOn(t, openESDB)
	wantValid(t, l.auditGet("/v1/audit/verify?accountId="+account, auditor).want(t, 200, ""))
	whole := l.auditGet("/v1/audit/verify", auditor).want(t, 200, "")
	wantValid(t, whole)
	if whole.body["checkpoints"].(float64) < 1 {
		t.Fatalf("no checkpoint compared: %s", whole.raw)
	}
}
