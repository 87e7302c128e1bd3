package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

type env struct {
	pool  *pgxpool.Pool
	store *eventstore.Postgres
}

func newEnv(t *testing.T) env {
	t.Helper()
	pool := dbtest.Pool(t)
	store, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{BatchSize: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	// A projection that records which transaction applied each event, and
	// can be told to fail on one event type.
	_, err = pool.Exec(context.Background(), `CREATE TABLE seen (event_id uuid PRIMARY KEY, type text NOT NULL, txid bigint NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	return env{pool: pool, store: store}
}

type seen struct{ failOn atomic.Value }

func (*seen) Name() string     { return "seen" }
func (*seen) Tables() []string { return []string{"seen"} }
func (s *seen) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if f, _ := s.failOn.Load().(string); f != "" && f == ev.Type {
		return errors.New("refusing " + ev.Type)
	}
	_, err := tx.Exec(ctx, `INSERT INTO seen VALUES ($1, $2, txid_current())`, ev.ID, ev.Type)
	return err
}

var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func event(typ string, payload any) eventstore.EventData {
	data, _ := json.Marshal(payload)
	return eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{Actor: "test", OccurredAt: at}}
}

// register appends n accounts, every other one activated, and returns the
// position of the last append.
func register(t *testing.T, s eventstore.Store, n int) eventstore.Position {
	t.Helper()
	var last eventstore.Position
	for i := range n {
		id := uuid.New()
		evs := []eventstore.EventData{event(account.TypeRegistered, account.Registered{AccountID: id, Email: fmt.Sprintf("u%d@example.com", i)})}
		if i%2 == 0 {
			evs = append(evs, event(account.TypeActivated, account.Activated{AccountID: id}))
		}
		res, err := s.Append(context.Background(), account.Stream(id), eventstore.NoStream, evs...)
		if err != nil {
			t.Fatal(err)
		}
		last = res.Position
	}
	return last
}

func start(t *testing.T, e env, ps ...projections.Projection) (*projections.Runner, context.CancelFunc) {
	t.Helper()
	r := projections.NewRunner(e.pool, e.store, nil, nil, ps...)
	r.RetryBackoff = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return r, stop
}

func waitFor(t *testing.T, r *projections.Runner, pos eventstore.Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.WaitFor(ctx, pos); err != nil {
		t.Fatalf("projections did not reach %s: %v", pos, err)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestCatchUpInBatchesThenLive(t *testing.T) {
	e := newEnv(t)
	register(t, e.store, 300) // 450 events before the runner starts
	r, _ := start(t, e, projections.Accounts{}, &seen{})
	pos := register(t, e.store, 10) // live
	waitFor(t, r, pos)

	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 310 {
		t.Fatalf("%d accounts, want 310", n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM accounts WHERE status = 'active'`); n != 155 {
		t.Fatalf("%d active accounts, want 155", n)
	}
	// 465 events caught up in batches of at most 200: a handful of
	// transactions, not one per event.
	if n := count(t, e.pool, `SELECT count(DISTINCT txid) FROM seen`); n > 20 {
		t.Fatalf("%d transactions applied 465 events", n)
	}
	// Rows carry the event's time, never the projecting machine's clock.
	if n := count(t, e.pool, `SELECT count(*) FROM accounts WHERE created_at <> '2026-03-01 12:00:00+00'`); n != 0 {
		t.Fatalf("%d rows carry another time than the event's", n)
	}
}

func TestRestartNeitherSkipsNorRepeats(t *testing.T) {
	e := newEnv(t)
	r, stop := start(t, e, projections.Accounts{}, &seen{})
	waitFor(t, r, register(t, e.store, 40))
	stop()
	register(t, e.store, 40) // appended while no runner runs
	r, _ = start(t, e, projections.Accounts{}, &seen{})
	waitFor(t, r, register(t, e.store, 40))

	total := count(t, e.pool, `SELECT count(*) FROM events`)
	if n := count(t, e.pool, `SELECT count(*) FROM seen`); n != total {
		t.Fatalf("seen %d events of %d", n, total)
	}
	if n := count(t, e.pool, `SELECT events_applied FROM projection_checkpoints WHERE name = 'seen'`); n != total {
		t.Fatalf("checkpoint counts %d events applied, log has %d", n, total)
	}
}

func TestFailingEventStopsOnlyThatProjectionUntilFixed(t *testing.T) {
	e := newEnv(t)
	failing := &seen{}
	failing.failOn.Store(account.TypeActivated)
	r, _ := start(t, e, projections.Accounts{}, failing)
	pos := register(t, e.store, 6)

	// accounts goes live; seen stops at the first activation and says so.
	waitFor(t, r, pos)
	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 6 {
		t.Fatalf("accounts projection has %d rows, want 6", n)
	}
	st, err := projections.ListStatus(context.Background(), e.pool, e.store, []string{"accounts", "seen"})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].State != "live" {
		t.Fatalf("accounts state %q, want live", st[0].State)
	}
	if st[1].State != "stopped" || st[1].Error == nil || st[1].Error.EventType == nil || *st[1].Error.EventType != account.TypeActivated {
		t.Fatalf("seen status %+v, want stopped on an activation", st[1])
	}
	if n := count(t, e.pool, `SELECT count(*) FROM seen`); n != 0 {
		t.Fatalf("the failing batch left %d rows", n)
	}

	// The fix: the next retry applies everything, nothing skipped.
	failing.failOn.Store("")
	deadline := time.Now().Add(20 * time.Second)
	for count(t, e.pool, `SELECT count(*) FROM seen`) != 9 {
		if time.Now().After(deadline) {
			t.Fatal("the projection did not resume after the fix")
		}
		time.Sleep(20 * time.Millisecond)
	}
	st, _ = projections.ListStatus(context.Background(), e.pool, e.store, []string{"seen"})
	if st[0].State != "live" || st[0].Error != nil {
		t.Fatalf("status after the fix: %+v", st[0])
	}
}

func TestRebuildGivesTheLiveTablesRowForRow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Accounts{})
	waitFor(t, r, register(t, e.store, 120))
	live, err := projections.Dump(ctx, e.pool, "accounts")
	if err != nil {
		t.Fatal(err)
	}

	var reports int
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, func(projections.Progress) { reports++ }); err != nil {
		t.Fatal(err)
	}
	rebuilt, _ := projections.Dump(ctx, e.pool, "accounts")
	if !reflect.DeepEqual(live, rebuilt) || len(live) != 120 {
		t.Fatalf("rebuilt %d rows differ from the %d live rows", len(rebuilt), len(live))
	}
	if reports == 0 {
		t.Fatal("rebuild reported no progress")
	}
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil); err != nil {
		t.Fatal(err)
	}
	again, _ := projections.Dump(ctx, e.pool, "accounts")
	if !reflect.DeepEqual(rebuilt, again) {
		t.Fatal("two rebuilds differ")
	}

	// The live runner continues after the rebuild without a gap or a repeat.
	waitFor(t, r, register(t, e.store, 5))
	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 125 {
		t.Fatalf("%d accounts after rebuild and more sign-ups, want 125", n)
	}
}

func TestRebuildWhileAppending(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, _ := start(t, e, projections.Accounts{})
	register(t, e.store, 50)
	done := make(chan eventstore.Position)
	go func() { done <- register(t, e.store, 100) }()
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, r, <-done)
	live, _ := projections.Dump(ctx, e.pool, "accounts")
	if err := projections.Rebuild(ctx, e.pool, e.store, projections.Accounts{}, nil); err != nil {
		t.Fatal(err)
	}
	rebuilt, _ := projections.Dump(ctx, e.pool, "accounts")
	if len(live) != 150 || !reflect.DeepEqual(live, rebuilt) {
		t.Fatalf("live %d rows, rebuilt %d: they differ", len(live), len(rebuilt))
	}
}
