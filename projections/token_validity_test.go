package projections_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
)

// The token model calls OnErased for every account.erased.v1 before a
// WaitFor up to that event returns: a command that waited for an instance
// knows the instance has dropped the erased account's key.
func TestTokenValidityReportsErasuresBeforeWaitForReturns(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	m := projections.NewTokenValidity(nil, e.store, slog.New(slog.DiscardHandler))
	var mu sync.Mutex
	var erased []uuid.UUID
	m.OnErased = func(id uuid.UUID) {
		mu.Lock()
		erased = append(erased, id)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = m.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	alice, bob := uuid.New(), uuid.New()
	for _, id := range []uuid.UUID{alice, bob} {
		if _, err := e.store.Append(ctx, account.Stream(id), eventstore.NoStream,
			event(account.TypeRegistered, account.Registered{AccountID: id})); err != nil {
			t.Fatal(err)
		}
	}
	res, err := e.store.Append(ctx, account.Stream(alice), eventstore.Any, event(account.TypeErased, account.Erased{AccountID: alice}))
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := m.WaitFor(wctx, res.Position); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(erased) != 1 || erased[0] != alice {
		t.Fatalf("OnErased saw %v, want only %s", erased, alice)
	}
}
