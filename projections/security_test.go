package projections_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/security"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// TestSecurityIndexListsSecurityEventsInLogOrder appends source limits and
// client locks among other events and checks what the index lists (all of
// them, one client's, from an instant, page by page), live and rebuilt.
func TestSecurityIndexListsSecurityEventsInLogOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.SecurityEvents{})
	clientA, clientB := uuid.New(), uuid.New()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var last eventstore.Position
	write := func(stream, typ string, payload any, when time.Time) {
		t.Helper()
		ev := event(typ, payload)
		ev.Metadata.OccurredAt = when
		res, err := e.store.Append(ctx, stream, eventstore.Any, ev)
		if err != nil {
			t.Fatal(err)
		}
		last = res.Position
	}
	limited := func(src, kind string, when time.Time) {
		write(security.SourceStream(src), security.TypeSourceLimited,
			security.SourceLimited{Source: src, Kind: kind, Failures: 100, LimitedUntil: when.Add(15 * time.Minute)}, when)
	}
	locked := func(client uuid.UUID, when time.Time) {
		write(security.ClientStream(client), security.TypeClientAuthLocked,
			security.ClientAuthLocked{ClientID: client, Failures: 20, LockedUntil: when.Add(15 * time.Minute)}, when)
	}
	limited("203.0.113.7", "password", t0)
	locked(clientA, t0.Add(time.Minute))
	id := uuid.New()
	write(account.Stream(id), account.TypeRegistered, account.Registered{AccountID: id}, t0.Add(2*time.Minute))
	locked(clientB, t0.Add(3*time.Minute))
	limited("203.0.113.7", "pin", t0.Add(20*time.Minute))
	limited("2001:db8::/64", "client-secret", t0.Add(21*time.Minute))
	locked(clientA, t0.Add(22*time.Minute))
	waitFor(t, r, last)

	list := func(q projections.SecurityQuery) []string {
		t.Helper()
		if q.Limit == 0 {
			q.Limit = 100
		}
		refs, err := projections.SecurityEventRefs(ctx, e.pool, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ref := range refs {
			out = append(out, fmt.Sprintf("%s@%d", ref.Stream, ref.Revision))
		}
		return out
	}
	src4, src6 := security.SourceStream("203.0.113.7"), security.SourceStream("2001:db8::/64")
	a, b := security.ClientStream(clientA), security.ClientStream(clientB)
	want := []string{src4 + "@0", a + "@0", b + "@0", src4 + "@1", src6 + "@0", a + "@1"}
	if got := list(projections.SecurityQuery{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("all:\n got %v\nwant %v", got, want)
	}
	if got := list(projections.SecurityQuery{Client: &clientA}); !reflect.DeepEqual(got, []string{a + "@0", a + "@1"}) {
		t.Fatalf("client A: %v", got)
	}
	if got := list(projections.SecurityQuery{Since: t0.Add(20 * time.Minute)}); !reflect.DeepEqual(got, want[3:]) {
		t.Fatalf("since: %v", got)
	}
	other := uuid.New()
	if got := list(projections.SecurityQuery{Client: &other}); len(got) != 0 {
		t.Fatalf("a client never locked: %v", got)
	}
	// Pages follow each other without a gap or a repeat.
	var paged []string
	q := projections.SecurityQuery{Limit: 4}
	for {
		refs, err := projections.SecurityEventRefs(ctx, e.pool, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(refs) == 0 {
			break
		}
		for _, ref := range refs {
			paged = append(paged, fmt.Sprintf("%s@%d", ref.Stream, ref.Revision))
		}
		q.After = refs[len(refs)-1].Seq
	}
	if !reflect.DeepEqual(paged, want) {
		t.Fatalf("paged: %v", paged)
	}

	live := dumpAll(t, e, projections.SecurityEvents{})
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.SecurityEvents{}, nil); err != nil {
		t.Fatal(err)
	}
	if rebuilt := dumpAll(t, e, projections.SecurityEvents{}); !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("rebuild differs:\n live %v\n rebuilt %v", live, rebuilt)
	}
}
