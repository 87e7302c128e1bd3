package esdbtest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/consentledger/ledger/eventstore/esdbtest"
)

func newClient(t *testing.T, srv *esdbtest.Server) *esdb.Client {
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
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func events(n int, typ string) []esdb.EventData {
	out := make([]esdb.EventData, n)
	for i := range out {
		out[i] = esdb.EventData{
			EventID:     uuid.New(),
			EventType:   typ,
			ContentType: esdb.ContentTypeJson,
			Data:        []byte(fmt.Sprintf(`{"n":%d}`, i)),
			Metadata:    []byte(`{"actor":"test"}`),
		}
	}
	return out
}

func appendOK(t *testing.T, c *esdb.Client, stream string, exp esdb.ExpectedRevision, evs ...esdb.EventData) *esdb.WriteResult {
	t.Helper()
	res, err := c.AppendToStream(testContext(t), stream, esdb.AppendToStreamOptions{ExpectedRevision: exp}, evs...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

func errorCode(err error) esdb.ErrorCode {
	var e *esdb.Error
	if errors.As(err, &e) {
		return e.Code()
	}
	return -1
}

func readStream(t *testing.T, c *esdb.Client, stream string, opts esdb.ReadStreamOptions, count uint64) ([]*esdb.RecordedEvent, error) {
	t.Helper()
	rs, err := c.ReadStream(testContext(t), stream, opts, count)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, ev.Event)
	}
}

func readAll(t *testing.T, c *esdb.Client, opts esdb.ReadAllOptions, count uint64) []*esdb.RecordedEvent {
	t.Helper()
	rs, err := c.ReadAll(testContext(t), opts, count)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	var out []*esdb.RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev.Event)
	}
}

func revisions(evs []*esdb.RecordedEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.EventNumber
	}
	return out
}

func TestAppendAndReadStream(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)

	in := events(3, "Granted")
	res := appendOK(t, c, "consent-1", esdb.NoStream{}, in...)
	if res.NextExpectedVersion != 2 || res.CommitPosition != 3 || res.PreparePosition != 3 {
		t.Fatalf("write result = %+v, want revision 2 at position 3/3", res)
	}

	got, err := readStream(t, c, "consent-1", esdb.ReadStreamOptions{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(revisions(got)) != "[0 1 2]" {
		t.Fatalf("forwards revisions = %v", revisions(got))
	}
	for i, e := range got {
		if e.EventID != in[i].EventID || e.EventType != "Granted" || string(e.Data) != string(in[i].Data) ||
			string(e.UserMetadata) != `{"actor":"test"}` || e.ContentType != "application/json" || e.CreatedDate.IsZero() {
			t.Fatalf("event %d = %+v", i, e)
		}
		if e.Position.Commit != uint64(i+1) || e.Position.Prepare != uint64(i+1) {
			t.Fatalf("event %d position = %+v", i, e.Position)
		}
	}

	got, _ = readStream(t, c, "consent-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 2)
	if fmt.Sprint(revisions(got)) != "[2 1]" {
		t.Fatalf("backwards from end revisions = %v", revisions(got))
	}
	got, _ = readStream(t, c, "consent-1", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.Revision(1)}, 10)
	if fmt.Sprint(revisions(got)) != "[1 0]" {
		t.Fatalf("backwards from 1 revisions = %v", revisions(got))
	}
	got, _ = readStream(t, c, "consent-1", esdb.ReadStreamOptions{From: esdb.Revision(1)}, 1)
	if fmt.Sprint(revisions(got)) != "[1]" {
		t.Fatalf("forwards from 1 count 1 revisions = %v", revisions(got))
	}
	got, _ = readStream(t, c, "consent-1", esdb.ReadStreamOptions{From: esdb.Revision(7)}, 10)
	if len(got) != 0 {
		t.Fatalf("read past the end = %v", revisions(got))
	}

	_, err = readStream(t, c, "missing", esdb.ReadStreamOptions{}, 10)
	if errorCode(err) != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("read of a missing stream: %v", err)
	}
}

func TestExpectedRevisionRules(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	ctx := testContext(t)

	wrong := func(stream string, exp esdb.ExpectedRevision, want string) {
		t.Helper()
		_, err := c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: exp}, events(1, "E")...)
		if errorCode(err) != esdb.ErrorCodeWrongExpectedVersion {
			t.Fatalf("append %T to %s: %v, want wrong expected version", exp, stream, err)
		}
		if got := errors.Unwrap(err).Error(); got != want {
			t.Fatalf("append %T to %s: %q, want %q", exp, stream, got, want)
		}
	}

	wrong("s", esdb.StreamExists{}, "wrong expected version: expecting 'stream_exists' but got 'no_stream'")
	wrong("s", esdb.Revision(0), "wrong expected version: expecting '0' but got 'no_stream'")
	appendOK(t, c, "s", esdb.NoStream{}, events(2, "E")...)
	wrong("s", esdb.NoStream{}, "wrong expected version: expecting 'no_stream' but got '1'")
	wrong("s", esdb.Revision(0), "wrong expected version: expecting '0' but got '1'")
	wrong("s", esdb.Revision(5), "wrong expected version: expecting '5' but got '1'")
	if res := appendOK(t, c, "s", esdb.Revision(1), events(1, "E")...); res.NextExpectedVersion != 2 {
		t.Fatalf("exact append: %+v", res)
	}
	if res := appendOK(t, c, "s", esdb.StreamExists{}, events(1, "E")...); res.NextExpectedVersion != 3 {
		t.Fatalf("stream-exists append: %+v", res)
	}
	if res := appendOK(t, c, "s", esdb.Any{}, events(1, "E")...); res.NextExpectedVersion != 4 {
		t.Fatalf("any append: %+v", res)
	}
	if res := appendOK(t, c, "other", esdb.Any{}, events(1, "E")...); res.NextExpectedVersion != 0 || res.CommitPosition != 6 {
		t.Fatalf("any append to a new stream: %+v", res)
	}
}

func TestIdempotentRetry(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)

	batch := events(2, "E")
	first := appendOK(t, c, "s", esdb.NoStream{}, batch...)
	again := appendOK(t, c, "s", esdb.NoStream{}, batch...)
	if *again != *first {
		t.Fatalf("retry result %+v, first %+v", again, first)
	}
	next := events(1, "E")
	appendOK(t, c, "s", esdb.Revision(1), next...)
	if res := appendOK(t, c, "s", esdb.Revision(1), next...); res.NextExpectedVersion != 2 || res.CommitPosition != 3 {
		t.Fatalf("exact retry: %+v", res)
	}
	if res := appendOK(t, c, "s", esdb.Any{}, batch...); res.NextExpectedVersion != 1 || res.CommitPosition != 2 {
		t.Fatalf("any retry: %+v", res)
	}
	if srv.Head() != 3 {
		t.Fatalf("retries wrote: head = %d", srv.Head())
	}

	// Part of the ids match, the rest differ: a conflict, not a retry.
	mixed := []esdb.EventData{batch[0], events(1, "E")[0]}
	_, err := c.AppendToStream(testContext(t), "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.NoStream{}}, mixed...)
	if errorCode(err) != esdb.ErrorCodeWrongExpectedVersion {
		t.Fatalf("partial retry: %v", err)
	}
	_, err = c.AppendToStream(testContext(t), "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Any{}}, mixed...)
	if errorCode(err) != esdb.ErrorCodeWrongExpectedVersion {
		t.Fatalf("partial retry with any: %v", err)
	}
	// The same ids at another place in the stream: also a conflict.
	_, err = c.AppendToStream(testContext(t), "s", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Revision(0)}, next...)
	if errorCode(err) != esdb.ErrorCodeWrongExpectedVersion {
		t.Fatalf("ids at another revision: %v", err)
	}
}

func TestReadAll(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	appendOK(t, c, "a", esdb.NoStream{}, events(2, "E")...)
	appendOK(t, c, "b", esdb.NoStream{}, events(2, "E")...)

	pos := func(evs []*esdb.RecordedEvent) []uint64 {
		out := make([]uint64, len(evs))
		for i, e := range evs {
			out[i] = e.Position.Commit
		}
		return out
	}
	if got := pos(readAll(t, c, esdb.ReadAllOptions{}, 100)); fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("forwards from start: %v", got)
	}
	if got := pos(readAll(t, c, esdb.ReadAllOptions{From: esdb.Position{Commit: 2, Prepare: 2}}, 2)); fmt.Sprint(got) != "[2 3]" {
		t.Fatalf("forwards from 2 (inclusive): %v", got)
	}
	if got := pos(readAll(t, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 3)); fmt.Sprint(got) != "[4 3 2]" {
		t.Fatalf("backwards from end: %v", got)
	}
	if got := pos(readAll(t, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.Position{Commit: 3, Prepare: 3}}, 10)); fmt.Sprint(got) != "[2 1]" {
		t.Fatalf("backwards from 3 (exclusive): %v", got)
	}
	if got := readAll(t, c, esdb.ReadAllOptions{From: esdb.End{}}, 10); len(got) != 0 {
		t.Fatalf("forwards from end: %v", pos(got))
	}
}

// recv reads the next subscription message, failing the test if none comes
// in time.
func recv(t *testing.T, sub *esdb.Subscription) *esdb.SubscriptionEvent {
	t.Helper()
	ch := make(chan *esdb.SubscriptionEvent, 1)
	go func() { ch <- sub.Recv() }()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no subscription message")
		return nil
	}
}

// describe names a subscription message compactly: "s@0", "caught-up",
// "checkpoint@5" or "dropped".
func describe(ev *esdb.SubscriptionEvent) string {
	switch {
	case ev.EventAppeared != nil:
		e := ev.EventAppeared.Event
		return fmt.Sprintf("%s@%d", e.StreamID, e.EventNumber)
	case ev.CaughtUp != nil:
		return "caught-up"
	case ev.CheckPointReached != nil:
		return fmt.Sprintf("checkpoint@%d", ev.CheckPointReached.Commit)
	case ev.SubscriptionDropped != nil:
		return "dropped"
	}
	return "?"
}

func expectMessages(t *testing.T, sub *esdb.Subscription, want ...string) {
	t.Helper()
	for _, w := range want {
		if got := describe(recv(t, sub)); got != w {
			t.Fatalf("subscription message %q, want %q", got, w)
		}
	}
}

func TestSubscribeToAllCatchUpThenLive(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	appendOK(t, c, "a", esdb.NoStream{}, events(2, "E")...)

	sub, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectMessages(t, sub, "a@0", "a@1", "caught-up")
	appendOK(t, c, "b", esdb.NoStream{}, events(1, "E")...)
	expectMessages(t, sub, "b@0")

	// From a position the subscription starts after it.
	from, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{From: esdb.Position{Commit: 2, Prepare: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close()
	expectMessages(t, from, "b@0", "caught-up")

	// Without a starting point it starts at the end.
	live, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	expectMessages(t, live, "caught-up")
	appendOK(t, c, "c", esdb.NoStream{}, events(1, "E")...)
	expectMessages(t, live, "c@0")
}

func TestFilteredSubscription(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	appendOK(t, c, "consent-1", esdb.NoStream{}, events(1, "E")...)
	appendOK(t, c, "other-1", esdb.NoStream{}, events(3, "E")...)
	appendOK(t, c, "consent-2", esdb.NoStream{}, events(1, "E")...)
	appendOK(t, c, "$sys", esdb.NoStream{}, events(1, "$internal")...)

	byStream, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{
		From:            esdb.Start{},
		Filter:          &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{"consent-"}},
		MaxSearchWindow: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer byStream.Close()
	// A checkpoint after every two records scanned and one on catching up.
	expectMessages(t, byStream, "consent-1@0", "checkpoint@2", "checkpoint@4", "consent-2@0", "checkpoint@6", "caught-up")
	appendOK(t, c, "consent-3", esdb.NoStream{}, events(1, "E")...)
	expectMessages(t, byStream, "consent-3@0")

	byType, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{
		From:   esdb.Start{},
		Filter: esdb.ExcludeSystemEventsFilter(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer byType.Close()
	expectMessages(t, byType, "consent-1@0", "other-1@0", "other-1@1", "other-1@2", "consent-2@0", "consent-3@0", "checkpoint@7", "caught-up")
}

func TestSubscribeToStream(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	appendOK(t, c, "s", esdb.NoStream{}, events(3, "E")...)
	appendOK(t, c, "t", esdb.NoStream{}, events(1, "E")...)

	sub, err := c.SubscribeToStream(testContext(t), "s", esdb.SubscribeToStreamOptions{From: esdb.Revision(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectMessages(t, sub, "s@1", "s@2", "caught-up")
	appendOK(t, c, "t", esdb.Any{}, events(1, "E")...)
	appendOK(t, c, "s", esdb.Any{}, events(1, "E")...)
	expectMessages(t, sub, "s@3")

	fresh, err := c.SubscribeToStream(testContext(t), "not-yet", esdb.SubscribeToStreamOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	expectMessages(t, fresh, "caught-up")
	appendOK(t, c, "not-yet", esdb.NoStream{}, events(1, "E")...)
	expectMessages(t, fresh, "not-yet@0")
}

func TestDeleteAndTombstone(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	ctx := testContext(t)
	appendOK(t, c, "soft", esdb.NoStream{}, events(2, "E")...)
	appendOK(t, c, "hard", esdb.NoStream{}, events(1, "E")...)

	if _, err := c.DeleteStream(ctx, "soft", esdb.DeleteStreamOptions{ExpectedRevision: esdb.Revision(0)}); err == nil {
		t.Fatal("delete at a wrong revision succeeded")
	}
	if _, err := c.DeleteStream(ctx, "soft", esdb.DeleteStreamOptions{ExpectedRevision: esdb.Revision(1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := readStream(t, c, "soft", esdb.ReadStreamOptions{}, 10); errorCode(err) != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("read of a deleted stream: %v", err)
	}
	md, err := c.GetStreamMetadata(ctx, "soft", esdb.ReadStreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tb := md.TruncateBefore(); tb == nil || *tb != 2 {
		t.Fatalf("truncate before = %v", tb)
	}
	// Writing again recreates the stream; numbering continues.
	if res := appendOK(t, c, "soft", esdb.NoStream{}, events(1, "E")...); res.NextExpectedVersion != 2 {
		t.Fatalf("recreate: %+v", res)
	}
	got, err := readStream(t, c, "soft", esdb.ReadStreamOptions{}, 10)
	if err != nil || fmt.Sprint(revisions(got)) != "[2]" {
		t.Fatalf("recreated stream: %v %v", revisions(got), err)
	}

	if _, err := c.TombstoneStream(ctx, "hard", esdb.TombstoneStreamOptions{ExpectedRevision: esdb.Any{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := readStream(t, c, "hard", esdb.ReadStreamOptions{}, 10); errorCode(err) != esdb.ErrorCodeStreamDeleted {
		t.Fatalf("read of a tombstoned stream: %v", err)
	}
	_, err = c.AppendToStream(ctx, "hard", esdb.AppendToStreamOptions{ExpectedRevision: esdb.Any{}}, events(1, "E")...)
	if errorCode(err) != esdb.ErrorCodeStreamDeleted {
		t.Fatalf("append to a tombstoned stream: %v", err)
	}
	last := readAll(t, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
	if len(last) != 1 || last[0].EventType != "$streamDeleted" || last[0].StreamID != "hard" {
		t.Fatalf("tombstone record: %+v", last)
	}
}

func TestDropConnections(t *testing.T) {
	srv := esdbtest.Start(t)
	c := newClient(t, srv)
	appendOK(t, c, "a", esdb.NoStream{}, events(1, "E")...)

	sub, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{From: esdb.Start{}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	expectMessages(t, sub, "a@0", "caught-up")
	if n := srv.Subscriptions(); n != 1 {
		t.Fatalf("open subscriptions = %d", n)
	}

	srv.DropConnections()
	ev := recv(t, sub)
	if ev.SubscriptionDropped == nil || status.Code(ev.SubscriptionDropped.Error) != codes.Unavailable {
		t.Fatalf("after drop: %s %v", describe(ev), ev.SubscriptionDropped)
	}

	// The connection itself still works.
	again, err := c.SubscribeToAll(testContext(t), esdb.SubscribeToAllOptions{From: esdb.Position{Commit: 1, Prepare: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	expectMessages(t, again, "caught-up")
	appendOK(t, c, "a", esdb.Any{}, events(1, "E")...)
	expectMessages(t, again, "a@1")
}
