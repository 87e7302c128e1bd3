package projections_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/projections"
	"github.com/consentledger/ledger/projections/projectiontest"
)

// brokenAccounts is the accounts projection with a fault on one event: an
// error or a panic, until the test repairs it.
type brokenAccounts struct {
	projections.Accounts
	on    atomic.Value // uuid.UUID of the event that fails
	panic bool
}

func (b *brokenAccounts) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if id, _ := b.on.Load().(uuid.UUID); id == ev.ID {
		if b.panic {
			panic("accounts: broken on " + ev.ID.String())
		}
		return errors.New("accounts: broken on " + ev.ID.String())
	}
	return b.Accounts.Apply(ctx, tx, ev)
}

// TestHandlerFailingMidBatch breaks the accounts projection on an event in
// the middle of its first batch: the batch is rolled back (no row of it is
// visible), the status names the event, and once repaired the projection
// resumes and ends exactly where a rebuild does: no event skipped, none
// applied twice.
func TestHandlerFailingMidBatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		panic bool
	}{{"error", false}, {"panic", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			register(t, e.store, 40) // 60 events, one batch of up to 200
			// Appends become readable once no older transaction of the
			// server can still commit: wait for all 60.
			var evs []eventstore.RecordedEvent
			var err error
			for deadline := time.Now().Add(20 * time.Second); len(evs) != 60; time.Sleep(20 * time.Millisecond) {
				if evs, err = e.store.ReadAll(ctx, eventstore.Start, 100); err != nil || time.Now().After(deadline) {
					t.Fatalf("read %d events of 60: %v", len(evs), err)
				}
			}
			bad := evs[29]
			broken := &brokenAccounts{panic: tc.panic}
			broken.on.Store(bad.ID)
			r, _ := start(t, e, broken)

			deadline := time.Now().Add(20 * time.Second)
			var st []projections.Status
			for {
				st, err = projections.ListStatus(ctx, e.pool, e.store, []string{"accounts"})
				if err != nil {
					t.Fatal(err)
				}
				if st[0].State == "stopped" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the projection did not stop on the broken event: %+v", st[0])
				}
				time.Sleep(20 * time.Millisecond)
			}
			if se := st[0].Error; se.EventID == nil || *se.EventID != bad.ID || se.Position == nil || *se.EventType != bad.Type {
				t.Fatalf("status names %+v, want event %s (%s)", se, bad.ID, bad.Type)
			}
			if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 0 {
				t.Fatalf("the failed batch left %d rows", n)
			}
			time.Sleep(200 * time.Millisecond) // a few retries, all failing
			if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 0 {
				t.Fatalf("a retry of the failed batch left %d rows", n)
			}

			broken.on.Store(uuid.Nil)
			waitFor(t, r, register(t, e.store, 5))
			projectiontest.AgreeWithRebuild(t, e.pool, e.store, 20*time.Second, projections.Accounts{})
			if n := count(t, e.pool, `SELECT events_applied FROM projection_checkpoints WHERE name = 'accounts'`); n != 60+8 {
				t.Fatalf("%d events applied after the repair, want 68", n)
			}
		})
	}
}
