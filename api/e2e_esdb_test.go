package api_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
)

// openESDB is a storeFactory for the EventStoreDB log: an in-process double
// of the server, with the adapter configured as `ledger serve` configures it.
func openESDB(t *testing.T) eventstore.Store {
	t.Helper()
	srv := esdbtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := eventstore.OpenESDB(ctx, srv.URL(), eventstore.ESDBOptions{
		StreamPrefixes: domain.StreamPrefixes,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

func TestAccountsJourneyOnEventStoreDB(t *testing.T) { accountsJourney(t, openESDB) }

func TestTwentyFourSignUpsOneEmailOnEventStoreDB(t *testing.T) {
	twentyFourSignUpsOneEmail(t, openESDB)
}

func TestSeed001ShortcutOnEventStoreDB(t *testing.T) { seed001Shortcut(t, openESDB) }

func TestSeed001FullMethodOnEventStoreDB(t *testing.T) { seed001Full(t, openESDB) }

func TestSeed002StepsOnEventStoreDB(t *testing.T) { seed002Steps(t, openESDB) }

func TestConsentsOnEventStoreDB(t *testing.T) { userSeesAndRevokesConsents(t, openESDB) }

func TestRemovePropertyEndsPartnerAccessOnEventStoreDB(t *testing.T) {
	removePropertyEndsPartnerAccess(t, openESDB)
}

func TestConsentPromptJourneyOnEventStoreDB(t *testing.T) { consentPromptJourney(t, openESDB) }
