package eventstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/eventstore/storetest"
)

func openESDB(t *testing.T, srv *esdbtest.Server, opts eventstore.ESDBOptions) *eventstore.ESDB {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := eventstore.OpenESDB(ctx, srv.URL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestESDBContract(t *testing.T) {
	storetest.Run(t, storetest.Config{
		New: func(t *testing.T) eventstore.Store {
			return openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{})
		},
		IDsCheckedOnlyAtExpectedPlace: true,
	})
}

// TestESDBContractOnRealServer runs the contract suite against the
// EventStoreDB at LEDGER_TEST_ESDB_URL, so that what the double claims is
// checked against the server itself, for example the 24.10 node of
// docker-compose.yml:
//
//	LEDGER_TEST_ESDB_URL='esdb://127.0.0.1:2113?tls=false' go test -run RealServer ./eventstore
//
// The suite expects every case to start on an empty log, and a real server
// keeps what earlier cases and runs wrote. Each case therefore sees the
// server through freshView: only the suite's streams, from the head at the
// start of the case on. The server's own events are left out by the adapter
// as always. Use a server that no other test run writes "test-" streams to
// at the same time.
func TestESDBContractOnRealServer(t *testing.T) {
	url := os.Getenv("LEDGER_TEST_ESDB_URL")
	if url == "" {
		t.Skip("LEDGER_TEST_ESDB_URL is not set: no real EventStoreDB to test against")
	}
	storetest.Run(t, storetest.Config{
		New: func(t *testing.T) eventstore.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s, err := eventstore.OpenESDB(ctx, url, eventstore.ESDBOptions{
				StreamPrefixes: []string{"test-"},
				Logger:         slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			origin, err := s.Head(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return freshView{Store: s, origin: origin}
		},
		IDsCheckedOnlyAtExpectedPlace: true,
	})
}

// freshView shows a log as if it began after origin: reading or
// subscribing from Start begins after origin, and a head at origin is
// Start. Positions past origin are the server's own, unchanged.
type freshView struct {
	eventstore.Store
	origin eventstore.Position
}

func (v freshView) ReadAll(ctx context.Context, after eventstore.Position, max int) ([]eventstore.RecordedEvent, error) {
	if after.Less(v.origin) {
		after = v.origin
	}
	return v.Store.ReadAll(ctx, after, max)
}

func (v freshView) SubscribeAll(ctx context.Context, after eventstore.Position) (eventstore.Subscription, error) {
	if after.Less(v.origin) {
		after = v.origin
	}
	return v.Store.SubscribeAll(ctx, after)
}

func (v freshView) Head(ctx context.Context) (eventstore.Position, error) {
	h, err := v.Store.Head(ctx)
	if err != nil || v.origin.Less(h) {
		return h, err
	}
	return eventstore.Start, nil
}

func esdbCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func esdbEvent(typ string) eventstore.EventData {
	return eventstore.EventData{
		ID:       uuid.New(),
		Type:     typ,
		Data:     json.RawMessage(`{}`),
		Metadata: eventstore.Metadata{Actor: "test", OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
}

func esdbAppend(t *testing.T, s eventstore.Store, stream string, evs ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(esdbCtx(t), stream, eventstore.Any, evs...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

// rawAppend writes through the client library directly, for events the
// port would refuse, such as system events.
func rawAppend(t *testing.T, srv *esdbtest.Server, stream, typ string) {
	t.Helper()
	cfg, err := esdb.ParseConnectionString(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.AppendToStream(esdbCtx(t), stream, esdb.AppendToStreamOptions{ExpectedRevision: esdb.Any{}}, esdb.EventData{
		EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeJson, Data: []byte(`{}`),
	})
	if err != nil {
		t.Fatal(err)
	}
}

func streamsOf(evs []eventstore.RecordedEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%s@%d", e.StreamID, e.Revision)
	}
	return out
}

// next waits for the subscription's next batch.
func next(t *testing.T, sub eventstore.Subscription) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := sub.Next(esdbCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// collectUntil reads batches until the event with id last arrives and
// returns everything delivered up to it.
func collectUntil(t *testing.T, sub eventstore.Subscription, last uuid.UUID) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	for {
		for _, e := range next(t, sub) {
			out = append(out, e)
			if e.ID == last {
				return out
			}
		}
	}
}

func TestESDBViewOfAllLeavesOutSystemAndForeignStreams(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{StreamPrefixes: []string{"consent-", "account-"}})

	esdbAppend(t, s, "consent-1", esdbEvent("Granted"))
	rawAppend(t, srv, "$stats", "$statsCollected")
	esdbAppend(t, s, "other-1", esdbEvent("Unrelated"), esdbEvent("Unrelated"))
	esdbAppend(t, s, "account-1", esdbEvent("Opened"))
	rawAppend(t, srv, "consent-1", "$metadata-like")
	last := esdbAppend(t, s, "consent-2", esdbEvent("Granted"))
	esdbAppend(t, s, "other-2", esdbEvent("Unrelated"))
	rawAppend(t, srv, "$stats", "$statsCollected")

	want := []string{"consent-1@0", "account-1@0", "consent-2@0"}
	all, err := s.ReadAll(esdbCtx(t), eventstore.Start, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := streamsOf(all); !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadAll = %v, want %v", got, want)
	}

	// Paging one event at a time crosses the foreign and system records.
	var paged []eventstore.RecordedEvent
	after := eventstore.Start
	for {
		page, err := s.ReadAll(esdbCtx(t), after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Position
	}
	if got := streamsOf(paged); !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadAll page by page = %v, want %v", got, want)
	}

	head, err := s.Head(esdbCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if head != last.Position {
		t.Fatalf("head %v, want the last ledger event at %v", head, last.Position)
	}

	sub, err := s.SubscribeAll(esdbCtx(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	final := esdbEvent("Opened")
	esdbAppend(t, s, "other-3", esdbEvent("Unrelated"))
	esdbAppend(t, s, "account-2", final)
	got := streamsOf(collectUntil(t, sub, final.ID))
	if w := append(want, "account-2@0"); !reflect.DeepEqual(got, w) {
		t.Fatalf("subscription delivered %v, want %v", got, w)
	}
}

func TestESDBUnfilteredSkipsSystemEvents(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{})
	esdbAppend(t, s, "a", esdbEvent("E"))
	rawAppend(t, srv, "$stats", "$statsCollected")
	last := esdbAppend(t, s, "b", esdbEvent("E"))
	rawAppend(t, srv, "$stats", "$statsCollected")

	all, err := s.ReadAll(esdbCtx(t), eventstore.Start, 10)
	if err != nil {
		t.Fatal(err)
	}
	if got := streamsOf(all); !reflect.DeepEqual(got, []string{"a@0", "b@0"}) {
		t.Fatalf("ReadAll = %v", got)
	}
	if head, err := s.Head(esdbCtx(t)); err != nil || head != last.Position {
		t.Fatalf("head %v (err %v), want %v", head, err, last.Position)
	}
}

func TestESDBSubscriptionBatches(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{BatchSize: 3})
	var evs []eventstore.EventData
	for range 7 {
		evs = append(evs, esdbEvent("E"))
	}
	esdbAppend(t, s, "s", evs...)

	sub, err := s.SubscribeAll(esdbCtx(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var got []eventstore.RecordedEvent
	for len(got) < len(evs) {
		batch := next(t, sub)
		if len(batch) == 0 || len(batch) > 3 {
			t.Fatalf("batch of %d events, want 1 to 3", len(batch))
		}
		got = append(got, batch...)
	}
	for i, e := range got {
		if e.ID != evs[i].ID || e.Revision != uint64(i) {
			t.Fatalf("event %d: %s@%d", i, e.ID, e.Revision)
		}
	}
}

func TestESDBSubscriptionSurvivesDroppedConnections(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{BatchSize: 2})

	var history []eventstore.EventData
	for range 5 {
		history = append(history, esdbEvent("Old"))
	}
	esdbAppend(t, s, "s", history...)
	start := esdbAppend(t, s, "s", esdbEvent("Start"))

	// From a position in the middle, so that resuming after a drop must
	// not fall back to the original starting point.
	sub, err := s.SubscribeAll(esdbCtx(t), start.Position)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	// Each round appends after the previous round's drop took effect, so its
	// events can only arrive through a subscription the adapter reopened.
	var want []uuid.UUID
	var got []eventstore.RecordedEvent
	for round := range 4 {
		var batch []eventstore.EventData
		for range 3 {
			batch = append(batch, esdbEvent("New"))
		}
		esdbAppend(t, s, fmt.Sprintf("round-%d", round), batch...)
		for _, e := range batch {
			want = append(want, e.ID)
		}
		got = append(got, collectUntil(t, sub, batch[len(batch)-1].ID)...)

		srv.DropConnections()
	}
	final := esdbEvent("Final")
	esdbAppend(t, s, "final", final)
	want = append(want, final.ID)
	got = append(got, collectUntil(t, sub, final.ID)...)

	ids := make([]uuid.UUID, len(got))
	for i, e := range got {
		ids[i] = e.ID
	}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("delivered %d events, want each of the %d appended once, in order", len(ids), len(want))
	}
	// Every dropped server subscription was replaced by exactly one.
	deadline := time.Now().Add(10 * time.Second)
	for srv.Subscriptions() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d server subscriptions open, want 1", srv.Subscriptions())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestESDBSubscriptionEnds(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{})
	esdbAppend(t, s, "s", esdbEvent("E"))

	sub, err := s.SubscribeAll(esdbCtx(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	next(t, sub)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Next(esdbCtx(t)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	ctx, cancel := context.WithCancel(esdbCtx(t))
	sub, err = s.SubscribeAll(ctx, eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	next(t, sub)
	cancel()
	if _, err := sub.Next(esdbCtx(t)); !errors.Is(err, eventstore.ErrClosed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Next after the context ended: %v, want ErrClosed and context.Canceled", err)
	}

	// Next's own context bounds only the wait.
	sub, err = s.SubscribeAll(esdbCtx(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	next(t, sub)
	short, stop := context.WithCancel(esdbCtx(t))
	stop()
	if _, err := sub.Next(short); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with an ended context: %v", err)
	}
	final := esdbEvent("E")
	esdbAppend(t, s, "s", final)
	if got := next(t, sub); len(got) != 1 || got[0].ID != final.ID {
		t.Fatalf("after an abandoned Next: %v", streamsOf(got))
	}

	// Closing the store ends its subscriptions.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Next(esdbCtx(t)); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next after the store closed: %v, want ErrClosed", err)
	}
	if _, err := s.ReadAll(esdbCtx(t), eventstore.Start, 1); !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("ReadAll after Close: %v, want ErrClosed", err)
	}
}

func TestESDBWrongExpectedRevisionError(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{})
	esdbAppend(t, s, "s", esdbEvent("E"), esdbEvent("E"))

	_, err := s.Append(esdbCtx(t), "s", eventstore.Exact(0), esdbEvent("E"))
	var w *eventstore.WrongExpectedRevisionError
	if !errors.As(err, &w) || w.Stream != "s" || w.Actual != 1 || w.Expected != eventstore.Exact(0) {
		t.Fatalf("got %#v", err)
	}
	_, err = s.Append(esdbCtx(t), "missing", eventstore.StreamExists, esdbEvent("E"))
	if !errors.As(err, &w) || w.Actual != -1 {
		t.Fatalf("got %#v", err)
	}
}

func TestESDBPing(t *testing.T) {
	srv := esdbtest.Start(t)
	s := openESDB(t, srv, eventstore.ESDBOptions{})
	if err := s.Ping(esdbCtx(t)); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := s.Ping(esdbCtx(t)); err == nil {
		t.Fatal("ping succeeded with the server stopped")
	}
}

func TestESDBOpenFailsWhenUnreachable(t *testing.T) {
	srv := esdbtest.Start(t)
	url := srv.URL() + "&maxDiscoverAttempts=1&discoveryInterval=1"
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := eventstore.OpenESDB(ctx, url, eventstore.ESDBOptions{Logger: slog.New(slog.DiscardHandler)}); err == nil {
		_ = s.Close()
		t.Fatal("opened a store on a stopped server")
	}
	if _, err := eventstore.OpenESDB(ctx, "http://localhost:2113", eventstore.ESDBOptions{}); err == nil {
		t.Fatal("accepted a connection string that is not esdb://")
	}
}
