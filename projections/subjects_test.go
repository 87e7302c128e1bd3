package projections_test

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/domain/vehicle"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// TestSubjectIndexFindsEveryStreamOfAnAccount appends the life of two
// accounts across every kind of stream, a car sold from one to the other
// among them, and checks what the index lists for each, live and rebuilt.
func TestSubjectIndexFindsEveryStreamOfAnAccount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Subjects{})
	alice, bob, client := uuid.New(), uuid.New(), uuid.New()
	session := uuid.New()
	const vin = "WVWZZZ1JZXW000001"
	write := func(stream string, evs ...eventstore.EventData) eventstore.Position {
		t.Helper()
		res, err := e.store.Append(ctx, stream, eventstore.Any, evs...)
		if err != nil {
			t.Fatal(err)
		}
		return res.Position
	}
	write(consent.ClientStream(client), event(consent.TypeClientRegistered, consent.ClientRegistered{ClientID: client, Name: "Partner"}))
	write(account.EmailStream("alice@example.com"), event(account.TypeEmailReserved, account.EmailReserved{AccountID: alice}))
	write(account.Stream(alice), event(account.TypeRegistered, account.Registered{AccountID: alice}))
	write(account.SessionStream(session), event(account.TypeSessionOpened, account.SessionOpened{SessionID: session, AccountID: alice}))
	write(enrollment.Stream(alice), event(enrollment.TypePhoneRegistered, enrollment.PhoneRegistered{Phone: "+33600000000"}))
	write(vehicle.Stream(vin), event(vehicle.TypeAssociated, vehicle.Associated{VIN: vin, AccountID: alice}),
		event(vehicle.TypeCarKeyFailed, vehicle.CarKeyFailed{CodeID: uuid.New(), Failures: 1}))
	write(consent.GrantStream(alice, client), event(consent.TypeGranted, consent.Granted{GrantID: consent.GrantID(alice, client), AccountID: alice, ClientID: client}))
	write(consent.TokenStream("req-1"), event(consent.TypeCodeIssued, consent.CodeIssued{TokenGrant: consent.TokenGrant{RequestID: "req-1", ClientID: client, AccountID: &alice}}),
		event(consent.TypeCodeUsed, consent.CodeUsed{RequestID: "req-1"}))
	write(consent.TokenStream("cc-1"), event(consent.TypeTokenIssued, consent.TokenIssued{TokenGrant: consent.TokenGrant{RequestID: "cc-1", ClientID: client}}))
	write(vehicle.Stream(vin), event(vehicle.TypePropertyRemoved, vehicle.PropertyRemoved{VIN: vin, AccountID: alice}))
	last := write(vehicle.Stream(vin), event(vehicle.TypeAssociated, vehicle.Associated{VIN: vin, AccountID: bob}),
		event(vehicle.TypeCarKeyFailed, vehicle.CarKeyFailed{CodeID: uuid.New(), Failures: 1}))
	waitFor(t, r, last)

	got, err := projections.SubjectStreams(ctx, e.pool, alice)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{account.EmailStream("alice@example.com"), account.Stream(alice), account.SessionStream(session),
		enrollment.Stream(alice), vehicle.Stream(vin), consent.GrantStream(alice, client), consent.TokenStream("req-1")}
	slices.Sort(want) // every event of the test has the same time: ties go by name
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("alice's streams:\n got %v\nwant %v", got, want)
	}
	ranges, _ := projections.SubjectStreamRanges(ctx, e.pool, alice)
	for _, s := range ranges {
		if s.Stream == vehicle.Stream(vin) && s.Events != 3 {
			t.Fatalf("alice's car: %d events, want 3 (associated, wrong code, removed)", s.Events)
		}
		if s.Stream == consent.TokenStream("req-1") && s.Events != 2 {
			t.Fatalf("token family: %d events, want 2", s.Events)
		}
	}
	bobs, _ := projections.SubjectStreamRanges(ctx, e.pool, bob)
	if len(bobs) != 1 || bobs[0].Stream != vehicle.Stream(vin) || bobs[0].Events != 2 {
		t.Fatalf("bob's streams: %+v, want the car's two events after the sale", bobs)
	}
	grants, _ := projections.ClientGrantStreams(ctx, e.pool, client)
	if !slices.Equal(grants, []string{consent.GrantStream(alice, client)}) {
		t.Fatalf("client's grant streams: %v", grants)
	}
	none, _ := projections.SubjectStreams(ctx, e.pool, uuid.New())
	if len(none) != 0 {
		t.Fatalf("unknown account: %v", none)
	}

	live := dumpAll(t, e, projections.Subjects{})
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Subjects{}, nil); err != nil {
		t.Fatal(err)
	}
	if rebuilt := dumpAll(t, e, projections.Subjects{}); !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("rebuild differs:\n live %v\n rebuilt %v", live, rebuilt)
	}
}

func dumpAll(t *testing.T, e env, p projections.Projection) [][]string {
	t.Helper()
	var out [][]string
	for _, table := range p.Tables() {
		rows, err := projections.Dump(context.Background(), e.pool, table)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rows)
	}
	return out
}
