package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ESDBOptions tunes the EventStoreDB adapter.
type ESDBOptions struct {
	// StreamPrefixes limits ReadAll, SubscribeAll and Head to streams whose
	// names start with one of these prefixes, so the ledger can share a
	// cluster with other applications. Empty means every stream. System
	// events (types starting with "$") are always left out.
	StreamPrefixes []string
	// BatchSize is the most events one Subscription.Next returns, and how
	// many a subscription reads ahead of its consumer. Default 512.
	BatchSize int
	// Logger receives reconnects and the client library's own messages.
	// Event data is never logged. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultESDBBatchSize = 512
	// esdbReadPage is how many records ReadAll and Head fetch per request.
	esdbReadPage = 1000
	// unknownPosition is what the server sends for a position it does not
	// know, such as the position of an event read from a stream on servers
	// that serve stream reads from the index alone.
	unknownPosition = math.MaxUint64
)

// ESDB is the Store over EventStoreDB, for production clusters.
//
// Positions are EventStoreDB's own commit/prepare positions in $all.
// EventStoreDB checks idempotency per stream only: the same event ids
// appended to a different stream are written again, so this adapter never
// returns ErrDuplicateEvent.
type ESDB struct {
	cfg  *esdb.Configuration
	opts ESDBOptions
	log  *slog.Logger

	mu     sync.Mutex
	client *esdb.Client
	closed bool
	subs   map[*esdbSubscription]struct{}
}

var _ Store = (*ESDB)(nil)

// OpenESDB connects to EventStoreDB. connString is an esdb:// or
// esdb+discover:// connection string; TLS, credentials and cluster seeds are
// taken from it as the client library documents. OpenESDB fails when the
// server cannot be reached, so that a misconfigured service stops at start.
func OpenESDB(ctx context.Context, connString string, opts ESDBOptions) (*ESDB, error) {
	cfg, err := esdb.ParseConnectionString(connString)
	if err != nil {
		return nil, fmt.Errorf("eventstore: esdb connection string: %w", err)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = defaultESDBBatchSize
	}
	opts.StreamPrefixes = append([]string(nil), opts.StreamPrefixes...)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg.Logger = clientLogger(log)
	client, err := esdb.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("eventstore: esdb client: %w", err)
	}
	s := &ESDB{cfg: cfg, opts: opts, log: log, client: client, subs: make(map[*esdbSubscription]struct{})}
	if err := s.Ping(ctx); err != nil {
		_ = client.Close()
		return nil, err
	}
	return s, nil
}

// clientLogger routes the client library's messages to slog. The library
// reports every subscription it ends, including ones closed on purpose, as
// an error, and its discovery chatter as info; those are demoted to warn and
// debug so that a healthy service does not log errors.
func clientLogger(log *slog.Logger) esdb.LoggingFunc {
	return func(level esdb.LogLevel, format string, args ...any) {
		lvl := slog.LevelDebug
		switch level {
		case esdb.LogWarn, esdb.LogError:
			lvl = slog.LevelWarn
		}
		if !log.Enabled(context.Background(), lvl) {
			return
		}
		log.Log(context.Background(), lvl, fmt.Sprintf(format, args...), "component", "esdb-client")
	}
}

// conn returns the current client.
func (s *ESDB) conn() (*esdb.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return s.client, nil
}

// observe replaces a client that has given up. The client library closes
// itself for good when node discovery fails, for instance when the server
// is down for longer than its discovery attempts last; a new client starts
// discovery afresh on its next call.
func (s *ESDB) observe(c *esdb.Client, err error) {
	var e *esdb.Error
	if !errors.As(err, &e) || e.Code() != esdb.ErrorCodeConnectionClosed {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.client != c {
		return
	}
	fresh, nerr := esdb.NewClient(s.cfg)
	if nerr != nil {
		return
	}
	_ = c.Close()
	s.client = fresh
	s.log.Warn("eventstore: esdb client closed itself; reconnecting", "err", err)
}

// Append writes events to stream if the stream satisfies expected.
//
// Each event's chain hashes travel in its metadata (esdbMetadata). To chain
// the first event to the stream's last one, the adapter reads that event
// (one backwards read of one event; of the batch's length for Any and
// StreamExists) and appends with the exact revision it read, so no other
// writer can slip in between: Any and StreamExists then retry on a
// conflict, as the PostgreSQL log does.
func (s *ESDB) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	if len(events) == 0 {
		return AppendResult{}, fmt.Errorf("%w: append to %q without events", ErrInvalidEvent, stream)
	}
	for _, e := range events {
		if err := e.Validate(); err != nil {
			return AppendResult{}, err
		}
	}
	c, err := s.conn()
	if err != nil {
		return AppendResult{}, err
	}
	for attempt := 0; ; attempt++ {
		res, err := s.appendOnce(ctx, c, stream, expected, events)
		if errors.Is(err, errRaced) && attempt < 100 {
			continue
		}
		return res, err
	}
}

func (s *ESDB) appendOnce(ctx context.Context, c *esdb.Client, stream string, expected ExpectedRevision, events []EventData) (AppendResult, error) {
	start, done, err := s.chainStart(ctx, c, stream, expected, events)
	if err != nil || done != nil {
		if done != nil {
			return *done, nil
		}
		return AppendResult{}, err
	}
	data := make([]esdb.EventData, len(events))
	prev := start.prev
	for i, e := range events {
		h := HashEvent(prev, stream, start.next+uint64(i), e.ID, e.Type, e.Data, e.Metadata)
		md, err := json.Marshal(esdbMetadata{Metadata: e.Metadata, PrevHash: prev, Hash: h})
		if err != nil {
			return AppendResult{}, fmt.Errorf("%w: %s: metadata: %w", ErrInvalidEvent, e.Type, err)
		}
		data[i] = esdb.EventData{
			EventID:     e.ID,
			EventType:   e.Type,
			ContentType: esdb.ContentTypeJson,
			Data:        e.Data,
			Metadata:    md,
		}
		prev = h
	}
	res, err := c.AppendToStream(ctx, stream, esdb.AppendToStreamOptions{ExpectedRevision: toESDBExpected(start.cond)}, data...)
	if err != nil {
		var e *esdb.Error
		if errors.As(err, &e) && e.Code() == esdb.ErrorCodeWrongExpectedVersion {
			if expected.IsAny() || expected.IsStreamExists() {
				return AppendResult{}, errRaced
			}
			return AppendResult{}, &WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: s.actualRevision(ctx, c, stream, e)}
		}
		s.observe(c, err)
		return AppendResult{}, fmt.Errorf("eventstore: append to %q: %w", stream, err)
	}
	out := AppendResult{NextRevision: res.NextExpectedVersion, Position: Position{Commit: res.CommitPosition, Prepare: res.PreparePosition}}
	if out.Position.Commit == unknownPosition || out.Position == Start {
		// Some servers answer a retried (idempotent) append without a
		// position; the last event's own position is the same answer.
		if evs, err := s.ReadStream(ctx, stream, ReadStreamOptions{Direction: Backwards, From: out.NextRevision, Max: 1}); err == nil && len(evs) == 1 {
			out.Position = evs[0].Position
		}
	}
	return out, nil
}

// esdbMetadata is the metadata an event carries in EventStoreDB: ours, and
// its chain hashes.
type esdbMetadata struct {
	Metadata
	PrevHash []byte `json:"prevHash,omitempty"`
	Hash     []byte `json:"hash,omitempty"`
}

// chainAt is where an append's chain starts: the hash to link to, the
// revision of the first new event and the condition the server checks.
type chainAt struct {
	prev []byte
	next uint64
	cond ExpectedRevision
}

// chainStart finds where an append chains on. An append with Any or
// StreamExists whose events already end the stream is a retry: done holds
// its answer and nothing is written.
func (s *ESDB) chainStart(ctx context.Context, c *esdb.Client, stream string, expected ExpectedRevision, events []EventData) (at chainAt, done *AppendResult, err error) {
	if expected.IsNoStream() {
		return chainAt{cond: NoStream}, nil, nil
	}
	if rev, ok := expected.Revision(); ok {
		evs, err := s.readStream(ctx, c, stream, ReadStreamOptions{Direction: Backwards, From: rev, Max: 1})
		if err != nil {
			s.observe(c, err)
			return at, nil, fmt.Errorf("eventstore: append to %q: %w", stream, err)
		}
		at = chainAt{next: rev + 1, cond: expected}
		if len(evs) == 1 && evs[0].Revision == rev {
			at.prev = evs[0].Hash
		}
		return at, nil, nil // a stream that does not reach rev: the server refuses
	}
	tail, err := s.readStream(ctx, c, stream, ReadStreamOptions{Direction: Backwards, FromEnd: true, Max: len(events)})
	if err != nil {
		s.observe(c, err)
		return at, nil, fmt.Errorf("eventstore: append to %q: %w", stream, err)
	}
	if len(tail) == 0 {
		if expected.IsStreamExists() {
			return at, nil, &WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: -1}
		}
		return chainAt{cond: NoStream}, nil, nil
	}
	if len(tail) == len(events) {
		retry := true
		for i, e := range events {
			if tail[len(tail)-1-i].ID != e.ID {
				retry = false
				break
			}
		}
		if retry {
			return at, &AppendResult{NextRevision: tail[0].Revision, Position: tail[0].Position}, nil
		}
	}
	return chainAt{prev: tail[0].Hash, next: tail[0].Revision + 1, cond: Exact(tail[0].Revision)}, nil, nil
}

func toESDBExpected(e ExpectedRevision) esdb.ExpectedRevision {
	switch {
	case e.IsNoStream():
		return esdb.NoStream{}
	case e.IsStreamExists():
		return esdb.StreamExists{}
	}
	if rev, ok := e.Revision(); ok {
		return esdb.Revision(rev)
	}
	return esdb.Any{}
}

// wrongVersionActual matches the current revision in the client's
// wrong-expected-version message, the only place the client exposes it.
var wrongVersionActual = regexp.MustCompile(`but got '([^']*)'`)

// actualRevision is the stream's revision at the time of a conflict: taken
// from the server's answer, or read afresh if the message cannot be parsed.
func (s *ESDB) actualRevision(ctx context.Context, c *esdb.Client, stream string, e *esdb.Error) int64 {
	if e.Err() != nil {
		if m := wrongVersionActual.FindStringSubmatch(e.Err().Error()); m != nil {
			if m[1] == "no_stream" {
				return -1
			}
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				return n
			}
		}
	}
	evs, err := s.readStream(ctx, c, stream, ReadStreamOptions{Direction: Backwards, FromEnd: true, Max: 1})
	if err != nil || len(evs) == 0 {
		return -1
	}
	return int64(evs[0].Revision)
}

// ReadStream reads a slice of one stream. A stream that does not exist, or
// was deleted, reads as empty.
func (s *ESDB) ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error) {
	c, err := s.conn()
	if err != nil {
		return nil, err
	}
	evs, err := s.readStream(ctx, c, stream, opts)
	if err != nil {
		s.observe(c, err)
		return nil, fmt.Errorf("eventstore: read %q: %w", stream, err)
	}
	return evs, nil
}

func (s *ESDB) readStream(ctx context.Context, c *esdb.Client, stream string, opts ReadStreamOptions) ([]RecordedEvent, error) {
	ro := esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(opts.From)}
	if opts.Direction == Backwards {
		ro.Direction = esdb.Backwards
	}
	if opts.FromEnd {
		ro.From = esdb.End{}
	}
	count := uint64(math.MaxInt64)
	if opts.Max > 0 {
		count = uint64(opts.Max)
	}
	rs, err := c.ReadStream(ctx, stream, ro, count)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []RecordedEvent
	for {
		ev, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			var e *esdb.Error
			if errors.As(err, &e) && (e.Code() == esdb.ErrorCodeResourceNotFound || e.Code() == esdb.ErrorCodeStreamDeleted) {
				return nil, nil
			}
			return nil, err
		}
		re, err := fromESDB(ev.OriginalEvent())
		if err != nil {
			return nil, err
		}
		out = append(out, re)
	}
}

// ReadAll reads up to max events of the log strictly after position,
// leaving out system events and streams outside StreamPrefixes. max <= 0
// means no limit. EventStoreDB reads $all forwards from a position
// inclusively, so the event at after itself is dropped here.
func (s *ESDB) ReadAll(ctx context.Context, after Position, max int) ([]RecordedEvent, error) {
	c, err := s.conn()
	if err != nil {
		return nil, err
	}
	page := uint64(esdbReadPage)
	if max > 0 && max < esdbReadPage {
		// One more than asked for: the first record may be after itself.
		page = uint64(max) + 1
	}
	var from esdb.AllPosition = esdb.Start{}
	if after != Start {
		from = esdb.Position{Commit: after.Commit, Prepare: after.Prepare}
	}
	last, haveLast := after, after != Start
	var out []RecordedEvent
	for {
		rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Forwards, From: from}, page)
		if err != nil {
			s.observe(c, err)
			return nil, fmt.Errorf("eventstore: read $all after %s: %w", after, err)
		}
		var n uint64
		full := false
		err = func() error {
			defer rs.Close()
			for {
				ev, err := rs.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				n++
				rec := ev.OriginalEvent()
				pos := Position{Commit: rec.Position.Commit, Prepare: rec.Position.Prepare}
				if haveLast && !last.Less(pos) {
					continue
				}
				last, haveLast = pos, true
				if !s.wanted(rec.StreamID, rec.EventType) {
					continue
				}
				re, err := fromESDB(rec)
				if err != nil {
					return err
				}
				out = append(out, re)
				if max > 0 && len(out) == max {
					full = true
					return nil
				}
			}
		}()
		if err != nil {
			s.observe(c, err)
			return nil, fmt.Errorf("eventstore: read $all after %s: %w", after, err)
		}
		if full || n < page || !haveLast {
			return out, nil
		}
		from = esdb.Position{Commit: last.Commit, Prepare: last.Prepare}
	}
}

// wanted reports whether an event belongs to the ledger's view of $all.
func (s *ESDB) wanted(stream, eventType string) bool {
	if strings.HasPrefix(eventType, "$") {
		return false
	}
	if len(s.opts.StreamPrefixes) == 0 {
		return true
	}
	for _, p := range s.opts.StreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// Head is the position of the newest event ReadAll would return, found by
// reading $all backwards past system events and other applications'
// streams.
func (s *ESDB) Head(ctx context.Context) (Position, error) {
	c, err := s.conn()
	if err != nil {
		return Position{}, err
	}
	var from esdb.AllPosition = esdb.End{}
	page := uint64(32)
	for {
		rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Backwards, From: from}, page)
		if err != nil {
			s.observe(c, err)
			return Position{}, fmt.Errorf("eventstore: head: %w", err)
		}
		var (
			n     uint64
			found *Position
			next  esdb.Position
		)
		for {
			ev, rerr := rs.Recv()
			if errors.Is(rerr, io.EOF) {
				break
			}
			if rerr != nil {
				err = rerr
				break
			}
			n++
			rec := ev.OriginalEvent()
			next = rec.Position
			if s.wanted(rec.StreamID, rec.EventType) {
				found = &Position{Commit: rec.Position.Commit, Prepare: rec.Position.Prepare}
				break
			}
		}
		rs.Close()
		switch {
		case err != nil:
			s.observe(c, err)
			return Position{}, fmt.Errorf("eventstore: head: %w", err)
		case found != nil:
			return *found, nil
		case n < page:
			return Start, nil
		}
		// Reading backwards from a position returns the records before it.
		from = next
		page = esdbReadPage
	}
}

// Ping reads one record of $all: cheap, and it fails when the server is
// unreachable or refuses the credentials. It honours ctx even while the
// client library is still discovering the node, which it does without one.
func (s *ESDB) Ping(ctx context.Context) error {
	c, err := s.conn()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
		if err == nil {
			_, err = rs.Recv()
			rs.Close()
			if errors.Is(err, io.EOF) {
				err = nil
			}
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		s.observe(c, err)
		return fmt.Errorf("eventstore: esdb ping: %w", err)
	}
	return nil
}

// Close ends every subscription and the connection.
func (s *ESDB) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := make([]*esdbSubscription, 0, len(s.subs))
	for sub := range s.subs {
		subs = append(subs, sub)
	}
	client := s.client
	s.mu.Unlock()
	for _, sub := range subs {
		_ = sub.Close()
	}
	return client.Close()
}

// fromESDB converts a recorded event. Metadata that is not ours (not JSON
// of Metadata) is an error rather than silently empty.
func fromESDB(r *esdb.RecordedEvent) (RecordedEvent, error) {
	var md esdbMetadata
	if len(r.UserMetadata) > 0 {
		if err := json.Unmarshal(r.UserMetadata, &md); err != nil {
			return RecordedEvent{}, fmt.Errorf("eventstore: event %s (%q revision %d): metadata: %w", r.EventID, r.StreamID, r.EventNumber, err)
		}
	}
	pos := Position{Commit: r.Position.Commit, Prepare: r.Position.Prepare}
	if pos.Commit == unknownPosition {
		pos = Start
	}
	return RecordedEvent{
		ID:       r.EventID,
		StreamID: r.StreamID,
		Revision: r.EventNumber,
		Position: pos,
		Type:     r.EventType,
		Data:     json.RawMessage(r.Data),
		Metadata: md.Metadata,
		PrevHash: md.PrevHash,
		Hash:     md.Hash,
	}, nil
}

// SubscribeAll starts a catch-up subscription to $all after position. The
// first server subscription is opened here, so an unreachable server or
// refused credentials fail the call; after that, dropped connections are
// retried in the background, resuming after the last event delivered.
func (s *ESDB) SubscribeAll(ctx context.Context, after Position) (Subscription, error) {
	c, err := s.conn()
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	sub := &esdbSubscription{
		store:    s,
		ctx:      sctx,
		cancel:   cancel,
		events:   make(chan RecordedEvent, s.opts.BatchSize),
		done:     make(chan struct{}),
		last:     after,
		haveLast: after != Start,
	}
	inner, err := s.subscribe(sctx, c, sub.last, sub.haveLast)
	if err != nil {
		cancel(errSubscriptionClosed)
		s.observe(c, err)
		return nil, fmt.Errorf("eventstore: subscribe to $all after %s: %w", after, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel(errSubscriptionClosed)
		_ = inner.Close()
		return nil, ErrClosed
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
	go sub.run(inner)
	return sub, nil
}

// subscribe opens one server subscription. The filter runs on the server,
// so a subscription does not download other applications' events; the
// adapter filters again because the server's checkpoints and link events
// are not the ledger's business.
func (s *ESDB) subscribe(ctx context.Context, c *esdb.Client, after Position, haveAfter bool) (*esdb.Subscription, error) {
	opts := esdb.SubscribeToAllOptions{From: esdb.Start{}, Filter: esdb.ExcludeSystemEventsFilter()}
	if haveAfter {
		opts.From = esdb.Position{Commit: after.Commit, Prepare: after.Prepare}
	}
	if len(s.opts.StreamPrefixes) > 0 {
		opts.Filter = &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: s.opts.StreamPrefixes}
	}
	return c.SubscribeToAll(ctx, opts)
}

// Backoff between resubscription attempts: doubling from the first to the
// last value, reset once a subscription delivers anything.
const (
	esdbRetryFirst = 50 * time.Millisecond
	esdbRetryMax   = 5 * time.Second
)

// esdbSubscription feeds a bounded channel from a server subscription that
// it reopens whenever the server drops it.
type esdbSubscription struct {
	store  *ESDB
	ctx    context.Context
	cancel context.CancelCauseFunc
	events chan RecordedEvent
	done   chan struct{}
	err    error // why run ended; written before done is closed

	// Owned by run: the position of the last record received, delivered or
	// filtered out. Resubscribing after it neither skips nor repeats.
	last     Position
	haveLast bool
}

func (sub *esdbSubscription) run(inner *esdb.Subscription) {
	s := sub.store
	defer func() {
		s.mu.Lock()
		delete(s.subs, sub)
		s.mu.Unlock()
		close(sub.done)
	}()
	delay := esdbRetryFirst
	for {
		progressed, err := sub.pump(inner)
		_ = inner.Close()
		if sub.ctx.Err() != nil {
			sub.err = sub.endErr()
			return
		}
		if err != nil && !retryable(err) {
			sub.err = fmt.Errorf("eventstore: subscription to $all: %w", err)
			return
		}
		if progressed {
			delay = esdbRetryFirst
		}
		s.log.Warn("eventstore: subscription to $all dropped; resubscribing", "after", sub.last.String(), "err", err)
		for {
			select {
			case <-time.After(delay):
			case <-sub.ctx.Done():
				sub.err = sub.endErr()
				return
			}
			delay = min(2*delay, esdbRetryMax)
			c, cerr := s.conn()
			if cerr != nil {
				sub.err = cerr
				return
			}
			inner, err = s.subscribe(sub.ctx, c, sub.last, sub.haveLast)
			if err == nil {
				break
			}
			s.observe(c, err)
			if sub.ctx.Err() != nil {
				sub.err = sub.endErr()
				return
			}
			if !retryable(err) {
				sub.err = fmt.Errorf("eventstore: subscription to $all: %w", err)
				return
			}
			s.log.Warn("eventstore: resubscribing to $all failed", "after", sub.last.String(), "retry_in", delay, "err", err)
		}
	}
}

// pump moves events from one server subscription into the channel until
// the subscription drops. progressed reports whether the server sent
// anything at all, which resets the backoff.
func (sub *esdbSubscription) pump(inner *esdb.Subscription) (progressed bool, err error) {
	for {
		msg := inner.Recv()
		if msg.SubscriptionDropped != nil {
			return progressed, msg.SubscriptionDropped.Error
		}
		progressed = true
		if msg.EventAppeared == nil {
			continue // checkpoint, caught up, fell behind
		}
		rec := msg.EventAppeared.OriginalEvent()
		pos := Position{Commit: rec.Position.Commit, Prepare: rec.Position.Prepare}
		if sub.haveLast && !sub.last.Less(pos) {
			continue // already delivered before a reconnect
		}
		if !sub.store.wanted(rec.StreamID, rec.EventType) {
			sub.last, sub.haveLast = pos, true
			continue
		}
		re, err := fromESDB(rec)
		if err != nil {
			return progressed, &terminalError{err}
		}
		select {
		case sub.events <- re:
			sub.last, sub.haveLast = pos, true
		case <-sub.ctx.Done():
			return progressed, sub.ctx.Err()
		}
	}
}

// endErr is the error Next reports once the subscription was closed or its
// context ended: ErrClosed, and the context's error when there is one.
func (sub *esdbSubscription) endErr() error {
	if err := context.Cause(sub.ctx); err != nil && !errors.Is(err, errSubscriptionClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return ErrClosed
}

// errSubscriptionClosed is the cancel cause of Close, told apart from the
// caller's context ending.
var errSubscriptionClosed = errors.New("eventstore: subscription closed")

// terminalError marks a failure that resubscribing cannot fix.
type terminalError struct{ err error }

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

// retryable reports whether a dropped subscription may succeed when
// reopened: anything but refused credentials, a request the server cannot
// serve, or an event the adapter cannot read.
func retryable(err error) bool {
	var t *terminalError
	if errors.As(err, &t) {
		return false
	}
	var e *esdb.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case esdb.ErrorCodeUnauthenticated, esdb.ErrorCodeAccessDenied, esdb.ErrorCodeUnsupportedFeature, esdb.ErrorCodeParsing:
			return false
		}
		if e.Err() != nil {
			err = e.Err()
		}
	}
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented, codes.InvalidArgument:
		return false
	}
	return true
}

// Next waits for at least one event and returns the events ready now, at
// most BatchSize. Once the subscription has ended it returns what is still
// buffered (unless it was closed) and then the reason.
func (sub *esdbSubscription) Next(ctx context.Context) ([]RecordedEvent, error) {
	select {
	case <-sub.done:
		return sub.drainOrErr()
	default:
	}
	select {
	case ev := <-sub.events:
		return sub.drain([]RecordedEvent{ev}), nil
	case <-sub.done:
		return sub.drainOrErr()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (sub *esdbSubscription) drain(batch []RecordedEvent) []RecordedEvent {
	for len(batch) < cap(sub.events) {
		select {
		case ev := <-sub.events:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
	return batch
}

func (sub *esdbSubscription) drainOrErr() ([]RecordedEvent, error) {
	if !errors.Is(sub.err, ErrClosed) {
		if batch := sub.drain(nil); len(batch) > 0 {
			return batch, nil
		}
	}
	return nil, sub.err
}

// Close ends the subscription and waits for its reader to stop.
func (sub *esdbSubscription) Close() error {
	sub.cancel(errSubscriptionClosed)
	<-sub.done
	return nil
}
