package consent_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

// FoldRecord decodes only what the answer depends on; on any sequence of a
// grant stream's events it answers as Apply on every one of them does.
func TestFoldRecordAnswersAsTheWholeFold(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, c := uuid.New(), uuid.New()
	g := consent.GrantID(a, c)
	rng := rand.New(rand.NewPCG(1, 2))
	scopes := [][]string{{"vehicle:status"}, {"account:profile", "vehicle:remote"}}
	vins := [][]string{nil, {"WVWZZZ1JZXW000001"}}
	for round := range 2000 {
		n := rng.IntN(9)
		var facts []consent.Fact
		var whole consent.GrantRecord
		for i := range n {
			var ev any
			var typ string
			switch rng.IntN(4) {
			case 0:
				typ, ev = consent.TypeGranted, &consent.Granted{GrantID: g, AccountID: a, ClientID: c, Controller: "partner",
					Scopes: scopes[rng.IntN(2)], VINs: vins[rng.IntN(2)], NoticeVersion: fmt.Sprint("v", i), CollectionMethod: "prompt"}
			case 1:
				typ, ev = consent.TypeDenied, &consent.Denied{GrantID: g, AccountID: a, ClientID: c,
					Scopes: scopes[rng.IntN(2)], NoticeVersion: fmt.Sprint("d", i), CollectionMethod: "prompt"}
			case 2:
				typ, ev = consent.TypeRevoked, &consent.Revoked{GrantID: g, AccountID: a, ClientID: c, Reason: fmt.Sprint("r", i)}
			default:
				typ = "oauth.token-issued.v1"
			}
			data, _ := json.Marshal(ev)
			f := consent.Fact{Type: typ, Data: data, ID: uuid.New(), At: t0.Add(time.Duration(i) * time.Minute)}
			facts = append(facts, f)
			if ev != nil {
				decoded, err := consent.Decode(typ, data)
				if err != nil {
					t.Fatal(err)
				}
				whole.Apply(decoded, f.ID, f.At)
			}
		}
		got, err := consent.FoldRecord(facts)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(whole)
		have, _ := json.Marshal(got)
		if string(want) != string(have) {
			t.Fatalf("round %d, %d facts:\nwhole fold %s\nFoldRecord %s", round, n, want, have)
		}
	}
}
