package api_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/commands"
)

func TestPortalListsAndRevokesConnectedApps(t *testing.T) {
	l := newLedger(t, nil)
	clientID := uuid.MustParse(l.registerClient(map[string]any{"name": "Fleet App", "redirectUris": []string{"https://fleet.example/cb"},
		"scopes": []string{"account:profile", "vehicle:status"}}).want(t, 201, "").body["clientId"].(string))
	l.signIn("portal@example.com", "p")
	d := l.device("portal@example.com", "p")
	accountID := uuid.MustParse(d.rest("GET", "/v1/me", "", 200, "").body["accountId"].(string))
	if _, err := l.cmds.DecideConsent(context.Background(), commands.ConsentDecision{AccountID: accountID, ClientID: clientID, Accept: true,
		Scopes: []string{"account:profile"}, NoticeVersion: "1", CollectionMethod: "hosted-consent-prompt"}); err != nil {
		t.Fatal(err)
	}

	b := l.browser().get("/account/apps").shows("Sign in to see which apps")
	b.submitTo("/account/apps", map[string]string{"action": "signin", "email": "portal@example.com", "password": "Wrong-Password-1"}).
		shows("email or password is wrong")
	b.submitTo("/account/apps", map[string]string{"action": "signin", "email": "portal@example.com", "password": pw})
	if b.status != 303 {
		t.Fatalf("sign-in: HTTP %d", b.status)
	}
	b.get("/account/apps").shows("Fleet App").shows("Your account profile").shows("Revoke access")

	// A forged revocation (no CSRF value) is refused and changes nothing.
	forged := url.Values{"action": {"revoke"}, "clientId": {clientID.String()}}
	if f := b.load(b.client.PostForm(l.url+"/account/apps", forged)); f.status != 403 {
		t.Fatalf("forged revocation: HTTP %d", f.status)
	}
	b.get("/account/apps")
	b.submitTo("/account/apps", map[string]string{"action": "revoke", "clientId": clientID.String()})
	if b.status != 303 {
		t.Fatalf("revoke: HTTP %d", b.status)
	}
	b.get("/account/apps").shows("Access revoked")
	if strings.Contains(b.page, "Revoke access") {
		t.Fatal("a revoked app still offers revocation")
	}
	if g := d.rest("GET", "/v1/me/consents", "", 200, "").body["consents"].([]any)[0].(map[string]any); g["status"] != "revoked" {
		t.Fatalf("after the portal's revocation: %v", g)
	}
	b.submitTo("/account/apps", map[string]string{"action": "signout"})
	b.get("/account/apps").shows("Sign in to see which apps")
}
