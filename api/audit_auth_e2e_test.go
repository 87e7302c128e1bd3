package api_test

import (
	"context"
	"strings"
	"testing"
)

// issueAuditor has the admin issue an auditor key and returns it.
func (l *ledger) issueAuditor(name string) (id, key string) {
	l.t.Helper()
	a := l.do("POST", "/v1/admin/auditors", js(map[string]string{"name": name}), "Authorization", "Bearer "+adminToken).want(l.t, 201, "")
	return a.body["auditorId"].(string), a.body["key"].(string)
}

func TestAuditorKeysAreTheOnlyCredentialOfAuditRoutes(t *testing.T) {
	l := newLedger(t, nil)
	l.do("POST", "/v1/admin/auditors", js(map[string]string{"name": "x"})).want(t, 401, "admin_token_invalid")
	before := l.count()
	l.do("POST", "/v1/admin/auditors", js(map[string]string{"name": " "}), "Authorization", "Bearer "+adminToken).want(t, 400, "invalid_auditor_name")
	l.do("POST", "/v1/admin/auditors", `{"name":"x","extra":1}`, "Authorization", "Bearer "+adminToken).want(t, 400, "unknown_field")
	if l.count() != before {
		t.Fatal("bad input appended events")
	}

	id, key := l.issueAuditor("Data protection office")
	if !strings.HasPrefix(key, "aud_"+id+".") || len(key) < len("aud_")+36+1+43 {
		t.Fatalf("key %q of auditor %s", key, id)
	}
	who := l.do("GET", "/v1/audit/whoami", "", "Authorization", "Bearer "+key).want(t, 200, "")
	if who.body["auditorId"] != id || who.body["name"] != "Data protection office" {
		t.Fatalf("whoami: %s", who.raw)
	}

	session := l.signIn("ada@example.com", "device-1")
	for name, credential := range map[string]string{
		"none":          "",
		"admin token":   "Bearer " + adminToken,
		"user session":  "Bearer " + session,
		"partner token": "Bearer ory_at_" + strings.Repeat("x", 43) + "." + strings.Repeat("y", 43),
		"wrong secret":  "Bearer " + key[:len(key)-2] + "AA",
		"unknown id":    "Bearer aud_00000000-0000-0000-0000-000000000000." + key[strings.Index(key, ".")+1:],
		"basic":         "Basic " + key,
	} {
		a := l.do("GET", "/v1/audit/whoami", "", "Authorization", credential, "X-Device-Id", "device-1")
		if a.status != 401 || a.body["code"] != "auditor_key_invalid" || a.header.Get("Www-Authenticate") == "" {
			t.Errorf("%s: %d %s", name, a.status, a.raw)
		}
	}

	// The key is shown once: the log holds its hash only.
	var dump string
	if err := l.pool.QueryRow(context.Background(), `SELECT string_agg(data::text || metadata::text, ' ') FROM events`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(dump, key[strings.Index(key, ".")+1:]) {
		t.Fatal("the auditor secret is in the log")
	}

	// A revoked key stops at once.
	l.do("DELETE", "/v1/admin/auditors/"+id, "", "Authorization", "Bearer "+adminToken).want(t, 204, "")
	l.do("GET", "/v1/audit/whoami", "", "Authorization", "Bearer "+key).want(t, 401, "auditor_key_invalid")
	l.do("DELETE", "/v1/admin/auditors/"+id, "", "Authorization", "Bearer "+adminToken).want(t, 204, "")
	l.do("DELETE", "/v1/admin/auditors/not-an-id", "", "Authorization", "Bearer "+adminToken).want(t, 404, "unknown_auditor")
}
