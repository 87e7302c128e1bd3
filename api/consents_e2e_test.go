package api_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
	"github.com/consentledger/ledger/projections"
)

func (l *ledger) registerClient(body map[string]any) answer {
	l.t.Helper()
	return l.do("POST", "/v1/admin/clients", js(body), "Authorization", "Bearer "+adminToken)
}

func TestAdminRegistersClients(t *testing.T) {
	l := newLedger(t, nil)
	bad := []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"name": "", "redirectUris": []string{"https://app.example/cb"}}, "invalid_client_metadata"},
		{map[string]any{"name": "A", "redirectUris": []string{"http://app.example/cb"}}, "invalid_redirect_uri"},
		{map[string]any{"name": "A", "redirectUris": []string{"https://app.example/cb#x"}}, "invalid_redirect_uri"},
		{map[string]any{"name": "A", "redirectUris": []string{"https://app.example/cb"}, "scopes": []string{"everything"}}, "invalid_client_metadata"},
		{map[string]any{"name": "A", "public": true, "grantTypes": []string{"client_credentials"}}, "invalid_client_metadata"},
		{map[string]any{"name": "A", "redirectUris": []string{"https://app.example/cb"}, "scopes": []string{"accounts:create"}}, "invalid_client_metadata"},
	}
	for _, b := range bad {
		l.registerClient(b.body).want(t, 400, b.code)
	}
	l.do("POST", "/v1/admin/clients", js(map[string]any{"name": "A"})).want(t, 401, "admin_token_invalid")

	a := l.registerClient(map[string]any{"name": "Fleet App", "redirectUris": []string{"https://fleet.example/cb", "http://localhost:3000/cb"},
		"scopes": []string{"account:profile", "vehicle:status"}}).want(t, 201, "")
	secret, _ := a.body["clientSecret"].(string)
	if len(secret) < 43 || a.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("registration answer: %s", a.raw)
	}
	clientID := a.body["clientId"].(string)
	rotated := l.do("POST", "/v1/admin/clients/"+clientID+"/secret", "", "Authorization", "Bearer "+adminToken).want(t, 200, "")
	if rotated.body["clientSecret"] == secret {
		t.Fatal("rotation kept the secret")
	}
	if pub := l.registerClient(map[string]any{"name": "Mobile", "public": true, "redirectUris": []string{"https://m.example/cb"},
		"scopes": []string{"account:profile"}}).want(t, 201, ""); pub.body["clientSecret"] != nil {
		t.Fatal("a public client got a secret")
	}
	// Secrets are kept only as hashes: nowhere in the log or the read models.
	var dump string
	if err := l.pool.QueryRow(context.Background(), `SELECT string_agg(data::text, ' ') FROM events`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	var clients string
	_ = l.pool.QueryRow(context.Background(), `SELECT string_agg(to_jsonb(c)::text, ' ') FROM clients c`).Scan(&clients)
	for _, s := range []string{secret, rotated.body["clientSecret"].(string)} {
		if strings.Contains(dump, s) || strings.Contains(clients, s) {
			t.Fatal("a client secret is stored in clear")
		}
	}
}

func TestUserSeesAndRevokesConsents(t *testing.T) { userSeesAndRevokesConsents(t, nil) }

func userSeesAndRevokesConsents(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	clientID := uuid.MustParse(l.registerClient(map[string]any{"name": "Fleet App", "redirectUris": []string{"https://fleet.example/cb"},
		"scopes": []string{"account:profile", "vehicle:status", "vehicle:remote"}}).want(t, 201, "").body["clientId"].(string))
	l.signIn("user@example.com", "p")
	d := l.device("user@example.com", "p")
	me := d.rest("GET", "/v1/me", "", 200, "").body["accountId"].(string)
	accountID := uuid.MustParse(me)
	ctx := context.Background()

	if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: accountID, ClientID: clientID, Accept: true,
		Scopes: []string{"accounts:create"}, NoticeVersion: "2026-01"}); err == nil {
		t.Fatal("accounts:create was granted by a user")
	}
	if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: accountID, ClientID: clientID, Accept: true,
		Scopes: []string{"account:profile", "vehicle:status"}, VINs: []string{vin}, NoticeVersion: "2026-01", CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	list := d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)
	if len(list) != 1 {
		t.Fatalf("consents: %v", list)
	}
	g := list[0].(map[string]any)
	if g["status"] != "granted" || g["clientName"] != "Fleet App" || g["grantedAt"] == nil || len(g["scopes"].([]any)) != 2 {
		t.Fatalf("grant: %v", g)
	}
	// Another user sees none of it and cannot revoke it.
	l.signIn("other@example.com", "q")
	o := l.device("other@example.com", "q")
	if n := len(o.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)); n != 0 {
		t.Fatalf("another user sees %d consents", n)
	}
	o.rest("DELETE", "/v1/me/consents/"+clientID.String(), "", 404, "no_grant")

	// RevokeAccess: visible at once.
	d.rest("DELETE", "/v1/me/consents/"+clientID.String(), "", 204, "")
	g = d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)[0].(map[string]any)
	if g["status"] != "revoked" || g["revokedAt"] == nil {
		t.Fatalf("after revocation: %v", g)
	}
	d.rest("DELETE", "/v1/me/consents/"+clientID.String(), "", 404, "no_grant")

	// Declining shows as denied.
	if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: accountID, ClientID: clientID, Accept: false,
		Scopes: []string{"account:profile"}, NoticeVersion: "2026-01", CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}
	if g := d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)[0].(map[string]any); g["status"] != "denied" {
		t.Fatalf("after a refusal: %v", g)
	}
	l.rebuildGivesTheSameRows(projections.Consents{}, projections.Clients{})
}

// RemoveProperty of the only car a grant covers ends the grant; a grant
// that still covers another car of the account stays.
func TestRemovePropertyEndsPartnerAccess(t *testing.T) { removePropertyEndsPartnerAccess(t, nil) }

func removePropertyEndsPartnerAccess(t *testing.T, open storeFactory) {
	l := newLedger(t, open)
	clientA := uuid.MustParse(l.registerClient(map[string]any{"name": "A", "redirectUris": []string{"https://a.example/cb"},
		"scopes": []string{"vehicle:status"}}).want(t, 201, "").body["clientId"].(string))
	clientB := uuid.MustParse(l.registerClient(map[string]any{"name": "B", "redirectUris": []string{"https://b.example/cb"},
		"scopes": []string{"vehicle:status"}}).want(t, 201, "").body["clientId"].(string))
	l.signIn("sold@example.com", "p")
	d := l.device("sold@example.com", "p")
	accountID := uuid.MustParse(d.rest("GET", "/v1/me", "", 200, "").body["accountId"].(string))
	const second = "WVWZZZ1JZXW000001"
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": vin}), 201, "")
	d.rest("POST", "/v1/vehicles", js(map[string]string{"vin": second}), 201, "")
	ctx := context.Background()
	for client, vins := range map[uuid.UUID][]string{clientA: {vin}, clientB: {vin, second}} {
		if _, err := l.cmds.DecideConsent(ctx, commands.ConsentDecision{AccountID: accountID, ClientID: client, Accept: true,
			Scopes: []string{"vehicle:status"}, VINs: vins, NoticeVersion: "1", CollectionMethod: "hosted-consent-prompt"}); err != nil {
			t.Fatal(err)
		}
	}
	d.ok("/pims/set", vehicleAPI, map[string]any{"action": "removeProperty", "vin": vin})
	status := map[string]any{}
	for _, g := range d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any) {
		status[g.(map[string]any)["clientName"].(string)] = g.(map[string]any)["status"]
	}
	if status["A"] != "revoked" || status["B"] != "granted" {
		t.Fatalf("after RemoveProperty: %v", status)
	}
	d.rest("DELETE", "/v1/vehicles/"+second, "", 204, "")
	for _, g := range d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any) {
		if g.(map[string]any)["status"] != "revoked" {
			t.Fatalf("a grant outlived every car it covered: %v", g)
		}
	}
}
