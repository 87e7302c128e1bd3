package eventstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
	"github.com/consentledger/ledger/eventstore/esdbtest"
	"github.com/consentledger/ledger/migrations/dbtest"
	"github.com/consentledger/ledger/projections"
)

// pgSource is a PostgreSQL log of its own, the usual source of a copy.
func pgSource(t *testing.T) (*pgxpool.Pool, *eventstore.Postgres) {
	t.Helper()
	pool := dbtest.Pool(t)
	s, err := eventstore.OpenPostgres(context.Background(), pool, eventstore.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return pool, s
}

func copyCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// history writes a ledger's worth of events to a log: accounts with their
// e-mail reservations, sessions and enrollments, the steps of different
// accounts interleaved the way concurrent users interleave them, some
// appends of several events, and metadata that differs from event to event.
type history struct {
	t          *testing.T
	store      eventstore.Store
	rng        *rand.Rand
	clock      time.Time
	revs       map[string]int64 // last revision written per stream
	ids        []uuid.UUID      // the accounts, in order of creation
	last       eventstore.Position
	lastStream string
	count      int
}

func newHistory(t *testing.T, store eventstore.Store) *history {
	return &history{
		t: t, store: store, rng: rand.New(rand.NewPCG(7, 11)),
		// Odd nanoseconds, so a copy that rounded times would show.
		clock: time.Date(2026, 2, 3, 4, 5, 6, 123456789, time.UTC),
		revs:  map[string]int64{},
	}
}

// add appends payloads to stream at the revision this history left it.
func (h *history) add(stream, actor string, payloads ...any) {
	h.t.Helper()
	correlation := uuid.NewString()
	evs := make([]eventstore.EventData, len(payloads))
	for i, p := range payloads {
		var typ string
		if strings.HasPrefix(stream, "enrollment-") {
			typ = enrollment.TypeOf(p)
		} else {
			typ = account.TypeOf(p)
		}
		data, err := json.Marshal(p)
		if err != nil {
			h.t.Fatal(err)
		}
		h.clock = h.clock.Add(time.Duration(h.rng.IntN(5000)+1) * time.Millisecond)
		evs[i] = eventstore.EventData{ID: uuid.New(), Type: typ, Data: data, Metadata: eventstore.Metadata{
			CorrelationID: correlation, CausationID: uuid.NewString(), Actor: actor, OccurredAt: h.clock,
		}}
	}
	exp := eventstore.NoStream
	if rev, ok := h.revs[stream]; ok {
		exp = eventstore.Exact(uint64(rev))
	}
	res, err := h.store.Append(context.Background(), stream, exp, evs...)
	if err != nil {
		h.t.Fatalf("append to %s: %v", stream, err)
	}
	h.revs[stream] = int64(res.NextRevision)
	h.last, h.lastStream = res.Position, stream
	h.count += len(evs)
}

// accounts adds n accounts and takes each through the same steps, one step
// of every account after the other.
func (h *history) accounts(n int) {
	h.t.Helper()
	start := len(h.ids)
	for i := range n {
		id := uuid.New()
		h.ids = append(h.ids, id)
		email := fmt.Sprintf("user%d@example.com", start+i)
		h.add(account.EmailStream(email), "anonymous", &account.EmailReserved{AccountID: id})
		h.add(account.Stream(id), "anonymous", &account.Registered{
			AccountID: id, Email: email, PasswordHash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
			ActivationSecretHash: "aa11", ActivationExpiresAt: h.clock.Add(24 * time.Hour),
		})
		if i%4 != 3 {
			// Right after its registration: the copy joins the two appends.
			h.add(account.Stream(id), "account:"+id.String(), &account.Activated{AccountID: id})
		}
	}
	for i, id := range h.ids[start:] {
		actor := "account:" + id.String()
		session := uuid.New()
		h.add(account.SessionStream(session), actor, &account.SessionOpened{SessionID: session, AccountID: id, DeviceID: "phone-1", TokenHash: "bb22", ExpiresAt: h.clock.Add(time.Hour)})
		h.add(account.Stream(id), actor, &account.SignedIn{AccountID: id, SessionID: session, DeviceID: "phone-1"})
		if i%3 == 0 {
			continue
		}
		code := uuid.New()
		h.add(enrollment.Stream(id), actor, &enrollment.SmsCodeSent{CodeID: code, Purpose: "enrollment", Phone: "0612345678", DeviceID: "phone-1", CodeHash: "cc33", ExpiresAt: h.clock.Add(5 * time.Minute)})
		h.add(enrollment.Stream(id), actor,
			&enrollment.SmsCodeUsed{CodeID: code},
			&enrollment.PhoneRegistered{Phone: fmt.Sprintf("06%08d", i), Via: "enrollWithPhoneNumber"},
			&enrollment.PinSet{PinHash: "dd44", Reason: "enroll", DeviceID: "phone-1"},
			&enrollment.DeviceEnrolled{DeviceID: "phone-1"})
	}
	for i, id := range h.ids[start:] {
		actor := "account:" + id.String()
		switch i % 6 {
		case 1:
			h.add(enrollment.Stream(id), actor, &enrollment.DeviceEnrolled{DeviceID: "tablet-2"})
		case 2:
			for n := 1; n <= 3; n++ {
				h.add(enrollment.Stream(id), actor, &enrollment.PinFailed{DeviceID: "phone-1", FailuresInRow: n})
			}
			h.add(enrollment.Stream(id), actor, &enrollment.Blocked{State: "PINBlocked", DeviceID: "phone-1"})
		case 4:
			h.add(enrollment.Stream(id), actor, &enrollment.EnrollmentsRemoved{Devices: []string{"phone-1"}})
			h.add(enrollment.Stream(id), actor, &enrollment.PhoneModified{Phone: "0799999999"})
		}
	}
}

// waitReadable waits until h's last append is readable in its log (the
// PostgreSQL log shows an append once older transactions have ended).
func (h *history) waitReadable() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		head, err := h.store.Head(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		if !head.Less(h.last) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("head %v never reached %v", head, h.last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wholeLog reads a log's view of $all from the start.
func wholeLog(t *testing.T, s eventstore.Store) []eventstore.RecordedEvent {
	t.Helper()
	var out []eventstore.RecordedEvent
	after := eventstore.Start
	for {
		evs, err := s.ReadAll(copyCtx(t), after, 700)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Position
	}
}

// sameEvent reports how a copied event differs from its original, if it
// does: everything but the log position must be equal.
func sameEvent(want, got eventstore.RecordedEvent) error {
	switch {
	case got.ID != want.ID:
		return fmt.Errorf("id %s, want %s", got.ID, want.ID)
	case got.StreamID != want.StreamID || got.Revision != want.Revision:
		return fmt.Errorf("at %s@%d, want %s@%d", got.StreamID, got.Revision, want.StreamID, want.Revision)
	case got.Type != want.Type:
		return fmt.Errorf("type %q, want %q", got.Type, want.Type)
	case !bytes.Equal(got.Data, want.Data):
		return fmt.Errorf("data %s, want %s", got.Data, want.Data)
	case got.Metadata != want.Metadata:
		return fmt.Errorf("metadata %+v, want %+v", got.Metadata, want.Metadata)
	}
	return nil
}

// sameLogs checks that target holds exactly source's events: $all in the
// same order, and every stream event for event.
func sameLogs(t *testing.T, source, target eventstore.Store) {
	t.Helper()
	want, got := wholeLog(t, source), wholeLog(t, target)
	if len(got) != len(want) {
		t.Fatalf("target's $all has %d events, source's %d", len(got), len(want))
	}
	streams := map[string]bool{}
	var order []string
	for i := range want {
		if err := sameEvent(want[i], got[i]); err != nil {
			t.Fatalf("$all event %d: %v", i, err)
		}
		if i > 0 && !got[i-1].Position.Less(got[i].Position) {
			t.Fatalf("target positions do not grow: %v then %v", got[i-1].Position, got[i].Position)
		}
		if !streams[want[i].StreamID] {
			streams[want[i].StreamID] = true
			order = append(order, want[i].StreamID)
		}
	}
	for _, stream := range order {
		w, err := eventstore.ReadWholeStream(copyCtx(t), source, stream)
		if err != nil {
			t.Fatal(err)
		}
		g, err := eventstore.ReadWholeStream(copyCtx(t), target, stream)
		if err != nil {
			t.Fatal(err)
		}
		if len(g) != len(w) {
			t.Fatalf("stream %s: %d events in the target, %d in the source", stream, len(g), len(w))
		}
		for i := range w {
			if err := sameEvent(w[i], g[i]); err != nil {
				t.Fatalf("stream %s, event %d: %v", stream, i, err)
			}
		}
	}
}

// countingStore counts a store's appends, and can make one of them fail
// after the store wrote it, as a connection lost before the answer would.
type countingStore struct {
	eventstore.Store
	mu       sync.Mutex
	appends  int
	events   int
	loseAckN int // the append (1-based) whose answer is lost; 0: none
}

var errAckLost = errors.New("connection reset before the answer")

func (c *countingStore) Append(ctx context.Context, stream string, exp eventstore.ExpectedRevision, evs ...eventstore.EventData) (eventstore.AppendResult, error) {
	res, err := c.Store.Append(ctx, stream, exp, evs...)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.appends++
	c.events += len(evs)
	if err == nil && c.appends == c.loseAckN {
		return eventstore.AppendResult{}, errAckLost
	}
	return res, err
}

// runs counts the appends a copy of log needs: one per run of consecutive
// events of one stream.
func runs(log []eventstore.RecordedEvent) int {
	n := 0
	for i, e := range log {
		if i == 0 || e.StreamID != log[i-1].StreamID {
			n++
		}
	}
	return n
}

func TestCopyPostgresLogToESDB(t *testing.T) {
	_, src := pgSource(t)
	h := newHistory(t, src)
	h.accounts(150)
	h.waitReadable()
	source := wholeLog(t, src)
	if len(source) != h.count || len(source) <= 1000 {
		t.Fatalf("source log has %d events (%d appended); the test wants more than one page of 1000", len(source), h.count)
	}

	target := openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{})
	counting := &countingStore{Store: target}
	var calls []int64
	var at eventstore.Position
	n, err := eventstore.Copy(copyCtx(t), src, counting, func(copied int64, pos eventstore.Position) {
		if len(calls) > 0 && (copied <= calls[len(calls)-1] || !at.Less(pos)) {
			t.Errorf("progress went from %d at %v to %d at %v", calls[len(calls)-1], at, copied, pos)
		}
		calls = append(calls, copied)
		at = pos
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(source)) {
		t.Fatalf("copied %d events, the source has %d", n, len(source))
	}
	if len(calls) == 0 {
		t.Fatal("no progress reported")
	}
	if last := source[len(source)-1].Position; calls[len(calls)-1] != n || at != last {
		t.Fatalf("last progress: %d at %v, want %d at %v", calls[len(calls)-1], at, n, last)
	}
	if want := runs(source); counting.appends != want || counting.events != len(source) {
		t.Fatalf("%d appends of %d events; want one append per run of one stream (%d) carrying the %d events",
			counting.appends, counting.events, want, len(source))
	}
	if counting.appends >= h.count {
		t.Fatalf("%d appends for %d events: consecutive events of a stream were not joined", counting.appends, h.count)
	}
	sameLogs(t, src, target)

	// Run again: everything is recognised, nothing is written twice.
	n, err = eventstore.Copy(copyCtx(t), src, target, nil)
	if err != nil || n != int64(len(source)) {
		t.Fatalf("second copy: %d events, %v", n, err)
	}
	sameLogs(t, src, target)
}

func TestCopyResumesAfterInterruption(t *testing.T) {
	_, src := pgSource(t)
	h := newHistory(t, src)
	h.accounts(100)
	h.waitReadable()
	total := int64(h.count)

	target := openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{})

	// Interrupted as Ctrl-C would: the context ends a third of the way in.
	ctx, cancel := context.WithCancel(copyCtx(t))
	n, err := eventstore.Copy(ctx, src, target, func(copied int64, _ eventstore.Position) {
		if copied >= total/3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted copy: %d events, err %v; want context.Canceled", n, err)
	}
	partial := wholeLog(t, target)
	if len(partial) == 0 || int64(len(partial)) >= total {
		t.Fatalf("the interrupted copy left %d of %d events", len(partial), total)
	}
	source := wholeLog(t, src)
	for i, e := range partial {
		if err := sameEvent(source[i], e); err != nil {
			t.Fatalf("after the interruption, target event %d: %v", i, err)
		}
	}

	// Interrupted again, this time after the server wrote an append whose
	// answer never arrived: the fifth append past what the first run
	// copied, so one that writes.
	lossy := &countingStore{Store: target, loseAckN: runs(partial) + 5}
	if _, err := eventstore.Copy(copyCtx(t), src, lossy, nil); !errors.Is(err, errAckLost) {
		t.Fatalf("copy with a lost answer: %v", err)
	}
	if got := len(wholeLog(t, target)); got <= len(partial) {
		t.Fatalf("the second run left %d events, the first %d: the lost answer came before any write", got, len(partial))
	}

	// The source goes on meanwhile; the next run resumes and brings the
	// new events too.
	h.accounts(20)
	h.waitReadable()
	if n, err := eventstore.Copy(copyCtx(t), src, target, nil); err != nil || n != int64(h.count) {
		t.Fatalf("resumed copy: %d of %d events, %v", n, h.count, err)
	}
	sameLogs(t, src, target)

	// More events on the stream the log ends with: the next run joins them
	// to the last copied event of that stream in one batch, which the
	// target holds only in part.
	if !strings.HasPrefix(h.lastStream, "enrollment-") {
		t.Fatalf("the history ends on %s; this step wants an enrollment stream", h.lastStream)
	}
	h.add(h.lastStream, "admin", &enrollment.PhoneModified{Phone: "0611111111"})
	h.add(h.lastStream, "admin", &enrollment.PhoneModified{Phone: "0622222222"})
	h.waitReadable()

	counting := &countingStore{Store: target}
	n, err = eventstore.Copy(copyCtx(t), src, counting, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(h.count) {
		t.Fatalf("copied %d events, the source has %d", n, h.count)
	}
	if want := runs(wholeLog(t, src)) + 1; counting.appends != want {
		t.Fatalf("%d appends; want one per run of a stream plus the one that completes the partial batch (%d)", counting.appends, want)
	}
	sameLogs(t, src, target)
	seen := map[uuid.UUID]bool{}
	for _, e := range wholeLog(t, target) {
		if seen[e.ID] {
			t.Fatalf("event %s stands twice in the target", e.ID)
		}
		seen[e.ID] = true
	}
}

func TestCopyCompletesAPartlyCopiedStream(t *testing.T) {
	_, src := pgSource(t)
	h := newHistory(t, src)
	h.accounts(3)
	h.waitReadable()
	target := openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{})

	// The target holds the first events of the first enrollment stream,
	// which the source wrote in one append of four after one of one.
	var stream string
	for _, e := range wholeLog(t, src) {
		if e.Type == enrollment.TypePhoneRegistered {
			stream = e.StreamID
			break
		}
	}
	evs, err := eventstore.ReadWholeStream(copyCtx(t), src, stream)
	if err != nil || len(evs) < 5 {
		t.Fatalf("stream %s: %d events, %v", stream, len(evs), err)
	}
	var first []eventstore.EventData
	for _, e := range evs[:3] {
		first = append(first, eventstore.EventData{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata})
	}
	if _, err := target.Append(copyCtx(t), stream, eventstore.NoStream, first...); err != nil {
		t.Fatal(err)
	}
	if _, err := eventstore.Copy(copyCtx(t), src, target, nil); err != nil {
		t.Fatal(err)
	}
	got, err := eventstore.ReadWholeStream(copyCtx(t), target, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("stream %s: %d events in the target, %d in the source", stream, len(got), len(evs))
	}
	for i := range evs {
		if err := sameEvent(evs[i], got[i]); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
}

func TestCopyStopsAtAnotherHistory(t *testing.T) {
	_, src := pgSource(t)
	h := newHistory(t, src)
	h.accounts(2)
	h.waitReadable()
	target := openESDB(t, esdbtest.Start(t), eventstore.ESDBOptions{})

	// Another account stream of the same name, written by someone else.
	stream := account.Stream(h.ids[1])
	esdbAppend(t, target, stream, esdbEvent(account.TypeRegistered))
	before := len(wholeLog(t, target))

	n, err := eventstore.Copy(copyCtx(t), src, target, nil)
	if err == nil || !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		t.Fatalf("copy onto a foreign stream: %d events, err %v; want a conflict", n, err)
	}
	got, err := eventstore.ReadWholeStream(copyCtx(t), target, stream)
	if err != nil || len(got) != 1 {
		t.Fatalf("the foreign stream has %d events (%v); want its own one, untouched", len(got), err)
	}
	// Everything before the conflict was copied, nothing after it.
	if after := len(wholeLog(t, target)); int64(after) != int64(before)+n {
		t.Fatalf("target has %d events; %d before plus the %d copied", after, before, n)
	}
}

// TestProjectionsFromTheCopyMatchTheOriginals moves a log the way the README
// tells operators to: copy it to EventStoreDB, then rebuild the read models
// from there. The tables must be the ones the PostgreSQL log built, row for
// row.
func TestProjectionsFromTheCopyMatchTheOriginals(t *testing.T) {
	pool, src := pgSource(t)
	h := newHistory(t, src)
	h.accounts(60)
	h.waitReadable()
	ps := []projections.Projection{projections.Accounts{}, projections.Enrollment{}}

	// The originals, built live by the runner as `ledger serve` does.
	r := projections.NewRunner(pool, src, slog.New(slog.DiscardHandler), nil, ps...)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done })
	if err := r.WaitFor(copyCtx(t), h.last); err != nil {
		t.Fatalf("projections did not reach %v: %v", h.last, err)
	}

	srv := esdbtest.Start(t)
	target := openESDB(t, srv, eventstore.ESDBOptions{})
	if _, err := eventstore.Copy(copyCtx(t), src, target, nil); err != nil {
		t.Fatal(err)
	}

	// The copy as `ledger` opens it, into a database of its own.
	esdb := openESDB(t, srv, eventstore.ESDBOptions{StreamPrefixes: domain.StreamPrefixes})
	other := dbtest.Pool(t)
	for _, p := range ps {
		if err := projections.Rebuild(copyCtx(t), other, esdb, p, nil); err != nil {
			t.Fatalf("rebuild %s from the copy: %v", p.Name(), err)
		}
		for _, table := range p.Tables() {
			want, err := projections.Dump(copyCtx(t), pool, table)
			if err != nil {
				t.Fatal(err)
			}
			got, err := projections.Dump(copyCtx(t), other, table)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				t.Fatalf("%s is empty: the history does not exercise it", table)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d rows from the copy, %d from the PostgreSQL log", table, len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%s row %d:\nfrom the copy   %s\nfrom PostgreSQL %s", table, i, got[i], want[i])
				}
			}
		}
	}
}
