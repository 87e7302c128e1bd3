package consent_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/consent"
)

func TestGrantDecisions(t *testing.T) {
	account, client := uuid.New(), uuid.New()
	id := consent.GrantID(account, client)
	if id != consent.GrantID(account, client) || id == consent.GrantID(client, account) {
		t.Fatal("grant ids must be stable per account and client")
	}
	rec := consent.Granted{GrantID: id, AccountID: account, ClientID: client, Scopes: []string{"account:profile"}, NoticeVersion: "1"}
	g := &consent.Grant{}
	if len(g.Revoke(id, account, client, "user")) != 0 {
		t.Fatal("revoking nothing appends something")
	}
	evs := g.Decide(true, rec)
	if len(evs) != 1 {
		t.Fatalf("grant: %v", evs)
	}
	g.Apply(evs[0], time.Now())
	if len(g.Decide(true, rec)) != 0 {
		t.Fatal("granting the same scopes again appends something")
	}
	wider := rec
	wider.Scopes = []string{"account:profile", "vehicle:status"}
	if len(g.Decide(true, wider)) != 1 {
		t.Fatal("granting other scopes appends nothing")
	}
	if _, ok := g.Decide(false, rec)[0].(*consent.Denied); !ok {
		t.Fatal("a refusal is not recorded")
	}
	evs = g.Revoke(id, account, client, "user")
	g.Apply(evs[0], time.Now())
	if g.Active() {
		t.Fatal("still active after revocation")
	}
}

func TestRequestedScopes(t *testing.T) {
	allowed := []string{"account:profile", "vehicle:status", "accounts:create"}
	for _, c := range []struct {
		requested []string
		ok        bool
	}{
		{[]string{"account:profile"}, true},
		{[]string{"account:profile", "vehicle:status"}, true},
		{[]string{}, false},
		{[]string{"vehicle:remote"}, false},  // not allowed for this client
		{[]string{"accounts:create"}, false}, // never granted by a user
	} {
		if err := consent.CheckRequestedScopes(c.requested, allowed); (err == nil) != c.ok {
			t.Fatalf("%v: %v", c.requested, err)
		}
	}
}
