// Package storetest is the contract suite of the event log port. Every
// adapter runs it: what passes here is what commands and projections may rely
// on, whichever log holds the events.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/eventstore"
)

// Config tells the suite how to get a store.
type Config struct {
	// New returns a store over an empty log, closed by the test's cleanup.
	New func(t *testing.T) eventstore.Store
	// BeginAppend, when set, starts appending ev to stream in a transaction
	// it leaves open and returns the function that commits it. Logs whose
	// appends commit out of order (PostgreSQL) set it to prove that tailing
	// readers neither skip nor reorder a late commit.
	BeginAppend func(t *testing.T, s eventstore.Store, stream string, ev eventstore.EventData) (commit func())
	// IDsCheckedOnlyAtExpectedPlace is set by logs that recognise known
	// event ids only where the append expects to write (EventStoreDB): they
	// write ids that stand earlier in the stream again.
	IDsCheckedOnlyAtExpectedPlace bool
}

// Run runs every case of the contract.
func Run(t *testing.T, cfg Config) {
	cases := []struct {
		name string
		run  func(*testing.T, Config)
	}{
		{"AppendToNewStream", appendToNewStream},
		{"ExpectedRevisionRules", expectedRevisionRules},
		{"IdempotentRetry", idempotentRetry},
		{"SameIDsElsewhereConflict", sameIDsElsewhereConflict},
		{"InvalidEventsAppendNothing", invalidEventsAppendNothing},
		{"ReadStreamBothDirections", readStreamBothDirections},
		{"ReadMissingStream", readMissingStream},
		{"ReadAllPagesInOrder", readAllPagesInOrder},
		{"MetadataRoundTrip", metadataRoundTrip},
		{"ConcurrentAppendsAny", concurrentAppendsAny},
		{"ConcurrentAppendsExactOneWins", concurrentAppendsExactOneWins},
		{"SubscribeCatchUpThenLive", subscribeCatchUpThenLive},
		{"SubscribeFromPosition", subscribeFromPosition},
		{"Head", head},
		{"LateCommitDeliveredOnceInOrder", lateCommit},
	}
	cases = append(cases, chainCases...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, cfg) })
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var occurred = time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

// Event makes an event with a fresh id and a small JSON payload.
func Event(typ string, n int) eventstore.EventData {
	return eventstore.EventData{
		ID:   uuid.New(),
		Type: typ,
		Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n)),
		Metadata: eventstore.Metadata{
			CorrelationID: "corr-1", CausationID: "cause-1", Actor: "test", OccurredAt: occurred,
		},
	}
}

func events(typ string, n int) []eventstore.EventData {
	out := make([]eventstore.EventData, n)
	for i := range out {
		out[i] = Event(typ, i)
	}
	return out
}

func streamName(t *testing.T) string { return "test-" + uuid.NewString()[:8] }

func mustAppend(t *testing.T, s eventstore.Store, stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) eventstore.AppendResult {
	t.Helper()
	res, err := s.Append(ctxFor(t), stream, exp, evs...)
	if err != nil {
		t.Fatalf("append to %s (%s): %v", stream, exp, err)
	}
	return res
}

func readAll(t *testing.T, s eventstore.Store, stream string) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := eventstore.ReadWholeStream(ctxFor(t), s, stream)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func wantConflict(t *testing.T, err error, wantActual int64) {
	t.Helper()
	if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("got %v, want wrong expected revision", err)
	}
	var w *eventstore.WrongExpectedRevisionError
	if errors.As(err, &w) && w.Actual != wantActual {
		t.Fatalf("actual revision %d, want %d", w.Actual, wantActual)
	}
}

func appendToNewStream(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	first := mustAppend(t, s, stream, eventstore.NoStream, events("a", 3)...)
	if first.NextRevision != 2 {
		t.Fatalf("next revision %d, want 2", first.NextRevision)
	}
	second := mustAppend(t, s, stream, eventstore.Exact(2), Event("b", 0))
	if second.NextRevision != 3 {
		t.Fatalf("next revision %d, want 3", second.NextRevision)
	}
	if !first.Position.Less(second.Position) {
		t.Fatalf("positions do not grow: %v then %v", first.Position, second.Position)
	}
	got := readAll(t, s, stream)
	if len(got) != 4 {
		t.Fatalf("%d events, want 4", len(got))
	}
	for i, e := range got {
		if e.Revision != uint64(i) || e.StreamID != stream {
			t.Fatalf("event %d: stream %q revision %d", i, e.StreamID, e.Revision)
		}
	}
	if got[3].Position != second.Position {
		t.Fatalf("read position %v, append said %v", got[3].Position, second.Position)
	}
}

func expectedRevisionRules(t *testing.T, cfg Config) {
	s := cfg.New(t)
	ctx := ctxFor(t)
	missing, existing := streamName(t), streamName(t)
	mustAppend(t, s, existing, eventstore.NoStream, events("a", 2)...) // revisions 0, 1

	cases := []struct {
		stream     string
		exp        eventstore.ExpectedRevision
		ok         bool
		wantActual int64
	}{
		{existing, eventstore.NoStream, false, 1},
		{missing, eventstore.StreamExists, false, -1},
		{missing, eventstore.Exact(0), false, -1},
		{existing, eventstore.Exact(0), false, 1},
		{existing, eventstore.Exact(5), false, 1},
		{existing, eventstore.Exact(1), true, 0},
		{existing, eventstore.StreamExists, true, 0},
		{existing, eventstore.Any, true, 0},
		{missing, eventstore.Any, true, 0},
	}
	for _, c := range cases {
		before := len(readAll(t, s, c.stream))
		_, err := s.Append(ctx, c.stream, c.exp, Event("x", 0))
		if c.ok {
			if err != nil {
				t.Fatalf("%s on %s: %v", c.exp, c.stream, err)
			}
			continue
		}
		wantConflict(t, err, c.wantActual)
		if after := len(readAll(t, s, c.stream)); after != before {
			t.Fatalf("%s on %s: refused append wrote %d events", c.exp, c.stream, after-before)
		}
	}
}

func idempotentRetry(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	batch := events("a", 3)
	first := mustAppend(t, s, stream, eventstore.NoStream, batch...)
	again := mustAppend(t, s, stream, eventstore.NoStream, batch...)
	if again.NextRevision != first.NextRevision {
		t.Fatalf("retry answered revision %d, first %d", again.NextRevision, first.NextRevision)
	}
	next := Event("b", 0)
	r1 := mustAppend(t, s, stream, eventstore.Exact(2), next)
	r2 := mustAppend(t, s, stream, eventstore.Exact(2), next)
	if r1.NextRevision != r2.NextRevision || r1.NextRevision != 3 {
		t.Fatalf("exact retry: %d then %d, want 3", r1.NextRevision, r2.NextRevision)
	}
	// With Any, a retry of events already at the end is also a no-op.
	mustAppend(t, s, stream, eventstore.Any, next)
	if n := len(readAll(t, s, stream)); n != 4 {
		t.Fatalf("%d events after retries, want 4", n)
	}
}

func sameIDsElsewhereConflict(t *testing.T, cfg Config) {
	if cfg.IDsCheckedOnlyAtExpectedPlace {
		t.Skip("this log checks ids only at the expected place")
	}
	s := cfg.New(t)
	stream := streamName(t)
	batch := events("a", 2)
	mustAppend(t, s, stream, eventstore.NoStream, batch...)
	mustAppend(t, s, stream, eventstore.Exact(1), Event("b", 0)) // revision 2
	// The same ids, now claimed to follow revision 2: not a retry.
	_, err := s.Append(ctxFor(t), stream, eventstore.Exact(2), batch...)
	if !errors.Is(err, eventstore.ErrWrongExpectedRevision) && !errors.Is(err, eventstore.ErrDuplicateEvent) {
		t.Fatalf("got %v, want a conflict", err)
	}
	if n := len(readAll(t, s, stream)); n != 3 {
		t.Fatalf("%d events, want 3", n)
	}
}

func invalidEventsAppendNothing(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	noID := Event("a", 0)
	noID.ID = uuid.Nil
	noType := Event("a", 0)
	noType.Type = ""
	badJSON := Event("a", 0)
	badJSON.Data = json.RawMessage(`{"n":`)
	for name, batch := range map[string][]eventstore.EventData{
		"none":     nil,
		"no id":    {Event("a", 0), noID},
		"no type":  {noType},
		"bad json": {Event("a", 0), badJSON},
	} {
		_, err := s.Append(ctxFor(t), stream, eventstore.Any, batch...)
		if !errors.Is(err, eventstore.ErrInvalidEvent) {
			t.Fatalf("%s: got %v, want ErrInvalidEvent", name, err)
		}
	}
	if n := len(readAll(t, s, stream)); n != 0 {
		t.Fatalf("invalid appends wrote %d events", n)
	}
}

func readStreamBothDirections(t *testing.T, cfg Config) {
	s := cfg.New(t)
	ctx := ctxFor(t)
	stream := streamName(t)
	mustAppend(t, s, stream, eventstore.NoStream, events("a", 10)...)
	revs := func(evs []eventstore.RecordedEvent) []uint64 {
		out := []uint64{}
		for _, e := range evs {
			out = append(out, e.Revision)
		}
		return out
	}
	cases := []struct {
		name string
		opts eventstore.ReadStreamOptions
		want []uint64
	}{
		{"forwards from 0, max 3", eventstore.ReadStreamOptions{Max: 3}, []uint64{0, 1, 2}},
		{"forwards from 7", eventstore.ReadStreamOptions{From: 7}, []uint64{7, 8, 9}},
		{"forwards past the end", eventstore.ReadStreamOptions{From: 10}, []uint64{}},
		{"backwards from end, max 2", eventstore.ReadStreamOptions{Direction: eventstore.Backwards, FromEnd: true, Max: 2}, []uint64{9, 8}},
		{"backwards from 2", eventstore.ReadStreamOptions{Direction: eventstore.Backwards, From: 2}, []uint64{2, 1, 0}},
	}
	for _, c := range cases {
		got, err := s.ReadStream(ctx, stream, c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !reflect.DeepEqual(revs(got), c.want) {
			t.Fatalf("%s: revisions %v, want %v", c.name, revs(got), c.want)
		}
	}
}

func readMissingStream(t *testing.T, cfg Config) {
	s := cfg.New(t)
	for _, opts := range []eventstore.ReadStreamOptions{{}, {Direction: eventstore.Backwards, FromEnd: true}} {
		got, err := s.ReadStream(ctxFor(t), streamName(t), opts)
		if err != nil || len(got) != 0 {
			t.Fatalf("missing stream: %d events, err %v; want none, nil", len(got), err)
		}
	}
}

// waitHead waits until the log's head reaches pos: readers see an append a
// moment after it returns (see Store.ReadAll).
func waitHead(t *testing.T, s eventstore.Store, pos eventstore.Position) eventstore.Position {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := s.Head(ctxFor(t))
		if err != nil {
			t.Fatal(err)
		}
		if !h.Less(pos) || time.Now().After(deadline) {
			return h
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readAllPagesInOrder(t *testing.T, cfg Config) {
	s := cfg.New(t)
	ctx := ctxFor(t)
	streams := []string{streamName(t), streamName(t), streamName(t)}
	var want []uuid.UUID
	var last eventstore.AppendResult
	for round := 0; round < 7; round++ {
		for _, st := range streams {
			batch := events("a", 1+round%3)
			last = mustAppend(t, s, st, eventstore.Any, batch...)
			for _, e := range batch {
				want = append(want, e.ID)
			}
		}
	}
	waitHead(t, s, last.Position)
	var got []uuid.UUID
	after := eventstore.Start
	lastRev := map[string]int64{}
	for page := 0; page < 100; page++ {
		evs, err := s.ReadAll(ctx, after, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 4 {
			t.Fatalf("page of %d events, max 4", len(evs))
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			if !after.Less(e.Position) {
				t.Fatalf("position %v does not follow %v", e.Position, after)
			}
			after = e.Position
			if prev, seen := lastRev[e.StreamID]; seen && int64(e.Revision) != prev+1 {
				t.Fatalf("stream %s: revision %d after %d", e.StreamID, e.Revision, prev)
			}
			lastRev[e.StreamID] = int64(e.Revision)
			got = append(got, e.ID)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read %d events in log order, want the %d appended in append order", len(got), len(want))
	}
}

func metadataRoundTrip(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	ev := Event("thing.happened.v1", 0)
	ev.Data = json.RawMessage(`{"name":"Zoë","nested":{"list":[1,2.5,"x"],"ok":true}}`)
	ev.Metadata = eventstore.Metadata{CorrelationID: "c", CausationID: "k", Actor: "account:42", OccurredAt: occurred}
	mustAppend(t, s, stream, eventstore.NoStream, ev)
	got := readAll(t, s, stream)[0]
	if got.ID != ev.ID || got.Type != ev.Type || got.Metadata != ev.Metadata {
		t.Fatalf("got %+v, want id %s type %s metadata %+v", got, ev.ID, ev.Type, ev.Metadata)
	}
	var a, b any
	_ = json.Unmarshal(got.Data, &a)
	_ = json.Unmarshal(ev.Data, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("data %s, want %s", got.Data, ev.Data)
	}
}

func concurrentAppendsAny(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctxFor(t), stream, eventstore.Any, Event("a", i))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, s, stream)
	if len(got) != writers {
		t.Fatalf("%d events, want %d", len(got), writers)
	}
	for i, e := range got {
		if e.Revision != uint64(i) {
			t.Fatalf("revision %d at index %d", e.Revision, i)
		}
	}
}

func concurrentAppendsExactOneWins(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	mustAppend(t, s, stream, eventstore.NoStream, Event("a", 0))
	const writers = 12
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctxFor(t), stream, eventstore.Exact(0), Event("b", i))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, eventstore.ErrWrongExpectedRevision):
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != writers-1 {
		t.Fatalf("%d wins, %d conflicts; want 1 and %d", wins, conflicts, writers-1)
	}
}

// collect reads from sub until n events arrived.
func collect(t *testing.T, sub eventstore.Subscription, n int) []eventstore.RecordedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []eventstore.RecordedEvent
	for len(out) < n {
		evs, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, evs...)
	}
	if len(out) != n {
		t.Fatalf("got %d events, want %d", len(out), n)
	}
	return out
}

func ids(evs []eventstore.RecordedEvent) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func dataIDs(evs []eventstore.EventData) []uuid.UUID {
	out := make([]uuid.UUID, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func subscribeCatchUpThenLive(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	history := events("old", 5)
	mustAppend(t, s, stream, eventstore.NoStream, history...)

	sub, err := s.SubscribeAll(ctxFor(t), eventstore.Start)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got := collect(t, sub, 5); !reflect.DeepEqual(ids(got), dataIDs(history)) {
		t.Fatal("catch-up delivered other events than the history")
	}
	// Live: appended after the subscription caught up, from another stream too.
	live := events("new", 3)
	mustAppend(t, s, stream, eventstore.Exact(4), live[0])
	mustAppend(t, s, streamName(t), eventstore.NoStream, live[1:]...)
	if got := collect(t, sub, 3); !reflect.DeepEqual(ids(got), dataIDs(live)) {
		t.Fatal("live delivery differs from what was appended")
	}
}

func subscribeFromPosition(t *testing.T, cfg Config) {
	s := cfg.New(t)
	stream := streamName(t)
	mustAppend(t, s, stream, eventstore.NoStream, events("a", 3)...)
	mid := mustAppend(t, s, stream, eventstore.Exact(2), Event("b", 0))
	rest := events("c", 2)
	mustAppend(t, s, stream, eventstore.Exact(3), rest...)

	sub, err := s.SubscribeAll(ctxFor(t), mid.Position)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got := collect(t, sub, 2); !reflect.DeepEqual(ids(got), dataIDs(rest)) {
		t.Fatal("subscription from a position did not start right after it")
	}
}

func head(t *testing.T, cfg Config) {
	s := cfg.New(t)
	h, err := s.Head(ctxFor(t))
	if err != nil || h != eventstore.Start {
		t.Fatalf("empty log head %v, err %v", h, err)
	}
	res := mustAppend(t, s, streamName(t), eventstore.NoStream, events("a", 2)...)
	if h = waitHead(t, s, res.Position); h != res.Position {
		t.Fatalf("head %v, last append at %v", h, res.Position)
	}
}

// lateCommit: transaction A appends first but commits last; B commits in
// between. A tailing reader must not see B before A is decided (or it would
// checkpoint past A and skip it), and then must see A and B exactly once.
func lateCommit(t *testing.T, cfg Config) {
	if cfg.BeginAppend == nil {
		t.Skip("this log commits appends in order")
	}
	s := cfg.New(t)
	ctx := ctxFor(t)
	before := mustAppend(t, s, streamName(t), eventstore.NoStream, Event("before", 0))

	sub, err := s.SubscribeAll(ctx, before.Position)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	evA, evB := Event("a", 0), Event("b", 0)
	commitA := cfg.BeginAppend(t, s, streamName(t), evA)
	mustAppend(t, s, streamName(t), eventstore.NoStream, evB)

	got, err := s.ReadAll(ctx, before.Position, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("ReadAll returned %d events while an earlier transaction was open", len(got))
	}
	commitA()

	delivered := collect(t, sub, 2)
	if !reflect.DeepEqual(ids(delivered), []uuid.UUID{evA.ID, evB.ID}) {
		t.Fatalf("delivered %v, want A then B", ids(delivered))
	}
	all, err := s.ReadAll(ctx, before.Position, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(all), []uuid.UUID{evA.ID, evB.ID}) {
		t.Fatalf("ReadAll after commit: %v, want A then B", ids(all))
	}
	// Nothing more is delivered: each event exactly once.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if extra, err := sub.Next(short); err == nil {
		t.Fatalf("delivered %d more events", len(extra))
	}
}
