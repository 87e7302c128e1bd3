package projections_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// esdbEnv is the runner's setting on EventStoreDB: the log on an in-process
// double of the server, the read models in a PostgreSQL database.
type esdbEnv struct {
	pool  *pgxpool.Pool
	srv   *esdbtest.Server
	store *eventstore.ESDB
}

// ledgerPrefixes are the streams the ledger writes; the log is filtered to
// them, as `ledger serve` configures it.
var ledgerPrefixes = []string{"account-", "email-", "session-", "enrollment-"}

func newESDBEnv(t *testing.T, batchSize int) esdbEnv {
	t.Helper()
	pool := dbtest.Pool(t)
	_, err := pool.Exec(context.Background(), `CREATE TABLE seen (event_id uuid PRIMARY KEY, type text NOT NULL, txid bigint NOT NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	srv := esdbtest.Start(t)
	return esdbEnv{pool: pool, srv: srv, store: openESDB(t, srv, batchSize)}
}

// openESDB opens an adapter on srv, closed when the test ends.
func openESDB(t *testing.T, srv *esdbtest.Server, batchSize int) *eventstore.ESDB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := eventstore.OpenESDB(ctx, srv.URL(), eventstore.ESDBOptions{
		StreamPrefixes: ledgerPrefixes,
		BatchSize:      batchSize,
		Logger:         slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// startOn runs a runner over store; stop ends it and waits (also at cleanup).
func startOn(t *testing.T, pool *pgxpool.Pool, store eventstore.Store, ps ...projections.Projection) (*projections.Runner, func()) {
	t.Helper()
	r := projections.NewRunner(pool, store, nil, nil, ps...)
	r.RetryBackoff = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return r, stop
}

// logIDs reads the ids of every event in the ledger's view of the log.
func logIDs(t *testing.T, s eventstore.Store) []uuid.UUID {
	t.Helper()
	var ids []uuid.UUID
	after := eventstore.Start
	for {
		evs, err := s.ReadAll(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return ids
		}
		for _, e := range evs {
			ids = append(ids, e.ID)
		}
		after = evs[len(evs)-1].Position
	}
}

// seenExactlyTheLog checks that the seen projection holds one row for every
// event of the log and nothing else. The table's key already makes a second
// apply of one event fail; this also catches skipped and foreign events.
func seenExactlyTheLog(t *testing.T, pool *pgxpool.Pool, s eventstore.Store) int {
	t.Helper()
	want := logIDs(t, s)
	inLog := make(map[uuid.UUID]bool, len(want))
	for _, id := range want {
		if inLog[id] {
			t.Fatalf("event %s stands twice in the log", id)
		}
		inLog[id] = true
	}
	rows, err := pool.Query(context.Background(), `SELECT event_id FROM seen`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := make(map[uuid.UUID]bool, len(want))
	for rows.Next() {
		var id uuid.UUID
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if !inLog[id] {
			t.Fatalf("seen holds %s, which is not in the log", id)
		}
		got[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		missing := 0
		for _, id := range want {
			if !got[id] {
				missing++
			}
		}
		t.Fatalf("seen holds %d of the %d events in the log (%d missing)", len(got), len(want), missing)
	}
	if n := count(t, pool, `SELECT events_applied FROM projection_checkpoints WHERE name = 'seen'`); n != len(want) {
		t.Fatalf("checkpoint counts %d events applied, log has %d", n, len(want))
	}
	return len(want)
}

// allLive checks that every named projection is live at the head of the log
// and records no failure.
func allLive(t *testing.T, pool *pgxpool.Pool, s eventstore.Store, names ...string) {
	t.Helper()
	st, err := projections.ListStatus(context.Background(), pool, s, names)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st {
		if p.State != "live" || p.Error != nil || p.Position != p.Head {
			t.Fatalf("projection %s: state %q at %s, head %s, error %+v; want live at the head", p.Name, p.State, p.Position, p.Head, p.Error)
		}
	}
}

func TestESDBCatchUpThenLive(t *testing.T) {
	e := newESDBEnv(t, 64)
	register(t, e.store, 300) // 450 events before the runner starts
	r, _ := startOn(t, e.pool, e.store, projections.Accounts{}, &seen{})
	pos := register(t, e.store, 10) // live
	waitFor(t, r, pos)

	if head, err := e.store.Head(context.Background()); err != nil || head != pos {
		t.Fatalf("head %s (%v), want the last append at %s", head, err, pos)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 310 {
		t.Fatalf("%d accounts, want 310", n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM accounts WHERE status = 'active'`); n != 155 {
		t.Fatalf("%d active accounts, want 155", n)
	}
	if n := seenExactlyTheLog(t, e.pool, e.store); n != 465 {
		t.Fatalf("the log holds %d events, want 465", n)
	}
	allLive(t, e.pool, e.store, "accounts", "seen")
}

// appender writes a mix of the ledger's streams and another application's
// stream, the way a shared cluster holds them.
type appender struct {
	store    eventstore.Store
	done     atomic.Int64 // appends finished
	events   atomic.Int64 // events written to the ledger's streams
	accounts atomic.Int64 // accounts registered
}

// run makes n appends as worker w in round r: every fourth one goes to
// another application's stream, which the ledger's view of the log leaves
// out.
func (a *appender) run(ctx context.Context, w, r, n int) error {
	for i := range n {
		var (
			stream string
			evs    []eventstore.EventData
			ours   = true
			email  = fmt.Sprintf("w%d-r%d-%d@example.com", w, r, i)
		)
		switch i % 4 {
		case 0:
			id := uuid.New()
			stream = account.Stream(id)
			evs = []eventstore.EventData{
				event(account.TypeRegistered, account.Registered{AccountID: id, Email: email}),
				event(account.TypeActivated, account.Activated{AccountID: id}),
			}
		case 1:
			stream = account.EmailStream(email)
			evs = []eventstore.EventData{event(account.TypeEmailReserved, account.EmailReserved{AccountID: uuid.New()})}
		case 2:
			stream = account.SessionStream(uuid.New())
			evs = []eventstore.EventData{event(account.TypeSessionOpened, map[string]int{"n": i})}
		case 3:
			stream, ours = fmt.Sprintf("billing-%d", w), false
			evs = []eventstore.EventData{event("billing.invoiced.v1", map[string]int{"n": i}), event("billing.paid.v1", map[string]int{"n": i})}
		}
		if _, err := a.store.Append(ctx, stream, eventstore.Any, evs...); err != nil {
			return fmt.Errorf("worker %d: append %d to %s: %w", w, i, stream, err)
		}
		if ours {
			a.events.Add(int64(len(evs)))
		}
		if i%4 == 0 {
			a.accounts.Add(1)
		}
		a.done.Add(1)
	}
	return nil
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestESDBResumeAfterDroppedConnections(t *testing.T) {
	// A small batch keeps the adapter's reader blocked on a full buffer, so
	// drops land in the middle of delivery, not only while it waits.
	e := newESDBEnv(t, 8)
	register(t, e.store, 100) // history, so the first drop hits the catch-up
	r, _ := startOn(t, e.pool, e.store, projections.Accounts{}, &seen{})
	waitUntil(t, "both projections are subscribed", func() bool { return e.srv.Subscriptions() >= 2 })

	// Each round, four workers append concurrently and every open call is
	// dropped halfway through. A marker appended after the drop can only
	// arrive through subscriptions the adapter reopened, so waiting for it
	// makes sure each drop hits live subscriptions of both projections.
	const rounds, workers, perWorker = 6, 4, 16
	a := &appender{store: e.store}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last eventstore.Position
	for round := range rounds {
		before := a.done.Load()
		errs := make(chan error, workers)
		for w := range workers {
			go func() { errs <- a.run(ctx, w, round, perWorker) }()
		}
		waitUntil(t, "the round's appends are halfway", func() bool { return a.done.Load() >= before+workers*perWorker/2 })
		e.srv.DropConnections()
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		last = register(t, e.store, 1)
		waitFor(t, r, last)
	}

	if head, err := e.store.Head(context.Background()); err != nil || head != last {
		t.Fatalf("head %s (%v), want the last append at %s", head, err, last)
	}
	// 150 events of history, and a registration and an activation per
	// marker.
	wantEvents := 150 + 2*rounds + int(a.events.Load())
	if n := seenExactlyTheLog(t, e.pool, e.store); n != wantEvents {
		t.Fatalf("the log holds %d events, want %d", n, wantEvents)
	}
	if n, want := count(t, e.pool, `SELECT count(*) FROM accounts`), 100+rounds+int(a.accounts.Load()); n != want {
		t.Fatalf("%d accounts, want %d", n, want)
	}
	allLive(t, e.pool, e.store, "accounts", "seen")
}

// recordingStore remembers where each subscription of the log starts.
type recordingStore struct {
	eventstore.Store
	mu     sync.Mutex
	starts []eventstore.Position
}

func (s *recordingStore) SubscribeAll(ctx context.Context, after eventstore.Position) (eventstore.Subscription, error) {
	s.mu.Lock()
	s.starts = append(s.starts, after)
	s.mu.Unlock()
	return s.Store.SubscribeAll(ctx, after)
}

func (s *recordingStore) subscribedAfter() []eventstore.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]eventstore.Position(nil), s.starts...)
}

func TestESDBRestartResumesFromCheckpoint(t *testing.T) {
	e := newESDBEnv(t, 64)
	r, stop := startOn(t, e.pool, e.store, projections.Accounts{}, &seen{})
	first := register(t, e.store, 40)
	waitFor(t, r, first)
	stop()
	// The process goes away with its connection.
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}

	reopened := openESDB(t, e.srv, 64)
	register(t, reopened, 40) // appended while no runner runs

	// A new process: a new connection and a new runner, which must start
	// from the checkpoints the first one stored, not from the beginning.
	rec := &recordingStore{Store: reopened}
	r, _ = startOn(t, e.pool, rec, projections.Accounts{}, &seen{})
	waitFor(t, r, register(t, reopened, 40))

	starts := rec.subscribedAfter()
	if len(starts) != 2 || starts[0] != first || starts[1] != first {
		t.Fatalf("the restarted runner subscribed after %v, want twice after the stored checkpoint %s", starts, first)
	}
	if n := seenExactlyTheLog(t, e.pool, reopened); n != 180 {
		t.Fatalf("the log holds %d events, want 180", n)
	}
	if n := count(t, e.pool, `SELECT count(*) FROM accounts`); n != 120 {
		t.Fatalf("%d accounts, want 120", n)
	}
	allLive(t, e.pool, reopened, "accounts", "seen")
}
