package consent_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/consent"
)

func TestGrantRecordFoldsLikeTheReadModel(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, c := uuid.New(), uuid.New()
	g := consent.GrantID(a, c)
	var r consent.GrantRecord
	if r.Exists() {
		t.Fatal("empty record exists")
	}
	r.Apply(&consent.Denied{GrantID: g, AccountID: a, ClientID: c, Scopes: []string{"vehicle:status"}, NoticeVersion: "v1"}, uuid.New(), t0)
	if r.Status != "denied" {
		t.Fatalf("after a refusal: %+v", r)
	}
	grantEvent := uuid.New()
	r.Apply(&consent.Granted{GrantID: g, AccountID: a, ClientID: c, Scopes: []string{"vehicle:status"}, NoticeVersion: "v2"}, grantEvent, t0.Add(time.Hour))
	r.Apply(&consent.Denied{GrantID: g, AccountID: a, ClientID: c, Scopes: []string{"vehicle:remote"}}, uuid.New(), t0.Add(2*time.Hour))
	if r.Status != "granted" || r.NoticeVersion != "v2" || *r.GrantEventID != grantEvent || r.DeniedAt == nil {
		t.Fatalf("a refusal changed an active grant: %+v", r)
	}
	r.Apply(&consent.Revoked{GrantID: g, AccountID: a, ClientID: c, Reason: "user"}, uuid.New(), t0.Add(3*time.Hour))
	if r.Status != "revoked" || r.RevokedReason != "user" || !r.RevokedAt.Equal(t0.Add(3*time.Hour)) || !r.GrantedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("after revocation: %+v", r)
	}
}
