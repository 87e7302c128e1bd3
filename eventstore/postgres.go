package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// notifyChannel is the LISTEN/NOTIFY channel that wakes subscribers in other
// processes. It carries no payload: it only says "read again".
const notifyChannel = "ledger_events"

// PostgresOptions tune the PostgreSQL log. Zero values pick the defaults.
type PostgresOptions struct {
	// PollInterval bounds how long a subscriber waits without a
	// notification before reading again (default 1s).
	PollInterval time.Duration
	// BatchSize is the most events a subscription returns at once (default 500).
	BatchSize int
	Logger    *slog.Logger
}

// Postgres is the event log in one append-only PostgreSQL table (see
// migrations/0001_event_log.sql).
//
// Tailing the log is commit-order safe: positions come from an identity
// column, so a transaction that took position 10 can commit after one that
// took 11. Readers therefore order by (transaction id, position) and only read
// events of transactions older than the snapshot's xmin, i.e. transactions
// that can no longer commit anything new. A reader that checkpoints the last
// (tx_id, position) it saw can never skip an event.
//
// Appends do not NOTIFY inside their own transaction: PostgreSQL serializes the
// commits of notifying transactions on a global lock, which would defeat group
// commit under concurrent writers. Instead a background goroutine sends one
// coalesced NOTIFY after appends commit, and subscribers in this process are
// woken directly.
type Postgres struct {
	pool   *pgxpool.Pool
	opts   PostgresOptions
	wake   *Broadcast
	notify chan struct{}
	cancel context.CancelFunc
	done   sync.WaitGroup
}

var _ Store = (*Postgres)(nil)

// OpenPostgres starts the log over pool (already migrated). The pool stays
// owned by the caller; Close stops the background listener and notifier.
func OpenPostgres(ctx context.Context, pool *pgxpool.Pool, opts PostgresOptions) (*Postgres, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &Postgres{pool: pool, opts: opts, wake: NewBroadcast(), notify: make(chan struct{}, 1), cancel: cancel}
	p.done.Add(2)
	go p.notifier(bg)
	go p.listener(bg)
	return p, nil
}

// Close stops the background goroutines. It does not close the pool.
func (p *Postgres) Close() error {
	p.cancel()
	p.done.Wait()
	return nil
}

// Ping checks the database answers.
func (p *Postgres) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// The chain hash of each event (chain.go) is computed inside the append
// statement, where the stream's last hash and the data as jsonb stores it
// are at hand. The parts that do not depend on them come as parameters,
// already encoded: $8 lp(version), $9 lp(stream), $10 lp(id) || lp(type)
// per event, $11 lp(SHA-256 of the metadata fields) per event. Only the
// SHA-256 of the stored data text and the link to the previous hash are
// computed by the server.
const (
	// appendLast is the stream's last revision and hash (-1 and empty for a
	// new stream): what the next event's revision and hash follow from.
	appendLast = `
    SELECT coalesce(last.revision, -1) AS rev, coalesce(last.hash, ''::bytea) AS hash
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (SELECT revision, hash FROM events WHERE stream_id = $1 ORDER BY revision DESC LIMIT 1) last ON true`
	appendCondition = `
    WHERE CASE $6::text
        WHEN 'any' THEN true
        WHEN 'no_stream' THEN cur.rev = -1
        WHEN 'exists' THEN cur.rev >= 0
        ELSE cur.rev = $7::bigint
    END`

	// appendOneSQL appends one event, the common case, in the smallest
	// plan: scalar parameters, no CTE, no aggregate. At this size starting
	// the executor is a good share of the statement's cost, and every node
	// of the plan adds to it. No row back means the expectation did not
	// hold. $10 and $11 are one event's, not arrays.
	appendOneSQL = `
INSERT INTO events (stream_id, revision, event_id, type, data, metadata, prev_hash, hash)
SELECT $1, cur.rev + 1, $2, $3, $4, $5, cur.hash,
       sha256($8::bytea || int4send(length(cur.hash)) || cur.hash || $9::bytea || int8send(cur.rev + 1)
              || $10::bytea || '\x00000020'::bytea || sha256(convert_to($4::jsonb::text, 'UTF8')) || $11::bytea)
FROM (` + appendLast + `
) cur` + appendCondition + `
RETURNING revision, position, tx_id::text::bigint`

	// appendManySQL chains the events of a batch one after the other. The
	// recursion reads its inputs by subscript: joining the batch at each
	// step would scan it once per event. A count of 0 means the expectation
	// did not hold.
	appendManySQL = `
WITH RECURSIVE cur AS MATERIALIZED (` + appendLast + `
), chain AS (
    SELECT 0::bigint AS ord, cur.rev, cur.hash FROM cur
    UNION ALL
    SELECT chain.ord + 1, chain.rev + 1,
           sha256($8::bytea || int4send(length(chain.hash)) || chain.hash || $9::bytea || int8send(chain.rev + 1)
                  || ($10::bytea[])[chain.ord + 1] || '\x00000020'::bytea
                  || sha256(convert_to((($4::jsonb[])[chain.ord + 1])::text, 'UTF8')) || ($11::bytea[])[chain.ord + 1])
    FROM chain WHERE chain.ord < cardinality($2::uuid[])
), ins AS (
    INSERT INTO events (stream_id, revision, event_id, type, data, metadata, prev_hash, hash)
    SELECT $1, c.rev, e.id, e.type, e.data, e.meta, p.hash, c.hash
    FROM cur, unnest($2::uuid[], $3::text[], $4::jsonb[], $5::jsonb[]) WITH ORDINALITY AS e(id, type, data, meta, ord)
    JOIN chain c ON c.ord = e.ord
    JOIN chain p ON p.ord = e.ord - 1` + appendCondition + `
    ORDER BY e.ord
    RETURNING position, revision, tx_id
)
SELECT count(*), coalesce(max(revision), -1), coalesce(max(position), 0), coalesce(max(tx_id::text::bigint), 0)
FROM ins`
)

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Append implements Store. The happy path is one statement and one round
// trip; conflicts take a second look to tell an idempotent retry from a real
// conflict.
func (p *Postgres) Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	args, err := appendArgs(stream, expected, events)
	if err != nil {
		return AppendResult{}, err
	}
	for attempt := 0; ; attempt++ {
		res, err := p.appendOnce(ctx, p.pool, stream, expected, events, args)
		if errors.Is(err, errRaced) && attempt < 100 {
			continue // another writer took the revision first; Any/StreamExists try again
		}
		if err == nil {
			p.committed()
		}
		return res, err
	}
}

// AppendTx appends inside the caller's transaction: the events become
// readable (and subscribers are woken) only when tx commits. Call Committed
// after the commit to wake subscribers without waiting for a poll.
func (p *Postgres) AppendTx(ctx context.Context, tx pgx.Tx, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error) {
	args, err := appendArgs(stream, expected, events)
	if err != nil {
		return AppendResult{}, err
	}
	// A savepoint keeps the caller's transaction usable after a conflict.
	sp, err := tx.Begin(ctx)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	res, err := p.appendOnce(ctx, sp, stream, expected, events, args)
	if err != nil {
		_ = sp.Rollback(ctx)
		return res, err
	}
	return res, sp.Commit(ctx)
}

// Committed wakes subscribers after a transaction that used AppendTx committed.
func (p *Postgres) Committed() { p.committed() }

var errRaced = errors.New("raced")

func (p *Postgres) appendOnce(ctx context.Context, q querier, stream string, expected ExpectedRevision, events []EventData, args []any) (AppendResult, error) {
	var count, lastRev, lastPos, txID int64
	var err error
	if len(events) == 1 {
		count = 1
		err = q.QueryRow(ctx, appendOneSQL, args...).Scan(&lastRev, &lastPos, &txID)
		if errors.Is(err, pgx.ErrNoRows) {
			count, err = 0, nil
		}
	} else {
		err = q.QueryRow(ctx, appendManySQL, args...).Scan(&count, &lastRev, &lastPos, &txID)
	}
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		// A unique violation: the revision was taken by a concurrent writer,
		// or an event id already exists (a retry, or a real duplicate).
		if pgErr.ConstraintName == "events_stream_revision" && (expected.IsAny() || expected.IsStreamExists()) {
			return AppendResult{}, errRaced
		}
		return p.resolveConflict(ctx, stream, expected, events)
	case err != nil:
		return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	case count == 0:
		return p.resolveConflict(ctx, stream, expected, events)
	}
	return AppendResult{
		NextRevision: uint64(lastRev),
		Position:     Position{Commit: uint64(txID), Prepare: uint64(lastPos)},
	}, nil
}

// resolveConflict decides what a refused append was: the retry of an append
// that already succeeded (same ids, same stream, same place: success, nothing
// written), a duplicate of events stored elsewhere, or a stale expectation.
func (p *Postgres) resolveConflict(ctx context.Context, stream string, expected ExpectedRevision, events []EventData) (AppendResult, error) {
	ids := make([]uuid.UUID, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	rows, err := p.pool.Query(ctx, `
		SELECT event_id, stream_id, revision, position, tx_id::text::bigint
		FROM events WHERE event_id = ANY($1) ORDER BY position`, ids)
	if err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	type found struct {
		stream        string
		revision, pos int64
		tx            int64
	}
	existing := map[uuid.UUID]found{}
	for rows.Next() {
		var id uuid.UUID
		var f found
		if err := rows.Scan(&id, &f.stream, &f.revision, &f.pos, &f.tx); err != nil {
			rows.Close()
			return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
		}
		existing[id] = f
	}
	if err := rows.Err(); err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}

	if len(existing) == len(events) {
		first := existing[events[0].ID]
		retry := true
		for i, e := range events {
			f := existing[e.ID]
			if f.stream != stream || f.revision != first.revision+int64(i) {
				retry = false
				break
			}
		}
		if want, exact := expected.Revision(); retry && exact && first.revision != int64(want)+1 {
			retry = false
		}
		if retry && expected.IsNoStream() && first.revision != 0 {
			retry = false
		}
		if retry {
			last := existing[events[len(events)-1].ID]
			return AppendResult{NextRevision: uint64(last.revision), Position: Position{Commit: uint64(last.tx), Prepare: uint64(last.pos)}}, nil
		}
	}
	for _, f := range existing {
		if f.stream != stream {
			return AppendResult{}, fmt.Errorf("%w: stream %q", ErrDuplicateEvent, f.stream)
		}
	}
	var current int64
	if err := p.pool.QueryRow(ctx, `SELECT coalesce(max(revision), -1) FROM events WHERE stream_id = $1`, stream).Scan(&current); err != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", stream, err)
	}
	if len(existing) > 0 && expected.Satisfied(current) {
		// The expectation holds but some ids are already in this stream at
		// other places: appending them again would duplicate them.
		return AppendResult{}, fmt.Errorf("%w: stream %q", ErrDuplicateEvent, stream)
	}
	return AppendResult{}, &WrongExpectedRevisionError{Stream: stream, Expected: expected, Actual: current}
}

func appendArgs(stream string, expected ExpectedRevision, events []EventData) ([]any, error) {
	if stream == "" {
		return nil, fmt.Errorf("%w: empty stream name", ErrInvalidEvent)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: nothing to append", ErrInvalidEvent)
	}
	ids := make([]pgtype.UUID, len(events)) // binary encoding: uuid.UUID goes through a slow text fallback
	types := make([]string, len(events))
	data := make([]string, len(events))
	meta := make([]string, len(events))
	tails := make([][]byte, len(events))
	metaHashes := make([][]byte, len(events))
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return nil, err
		}
		m, err := json.Marshal(e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("%w: metadata: %v", ErrInvalidEvent, err)
		}
		ids[i], types[i], data[i], meta[i] = pgtype.UUID{Bytes: e.ID, Valid: true}, e.Type, string(e.Data), string(m)
		tails[i], metaHashes[i] = chainIDType(e.ID, e.Type), chainMetadata(e.Metadata)
	}
	kind, rev := "any", int64(0)
	switch {
	case expected.IsNoStream():
		kind = "no_stream"
	case expected.IsStreamExists():
		kind = "exists"
	default:
		if r, ok := expected.Revision(); ok {
			kind, rev = "exact", int64(r)
		}
	}
	if len(events) == 1 { // appendOneSQL takes the one event's values, not arrays of one
		return []any{stream, ids[0], types[0], data[0], meta[0], kind, rev, chainHead, lp(nil, []byte(stream)), tails[0], metaHashes[0]}, nil
	}
	return []any{stream, ids, types, data, meta, kind, rev, chainHead, lp(nil, []byte(stream)), tails, metaHashes}, nil
}

const selectEvent = `SELECT event_id, stream_id, revision, position, tx_id::text::bigint, type, data, metadata, prev_hash, hash FROM events `

// ReadStream implements Store. Stream reads see every committed event: they
// serve command decisions, not tailing.
func (p *Postgres) ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error) {
	var limit any
	if opts.Max > 0 {
		limit = opts.Max
	}
	var sql string
	var args []any
	switch {
	case opts.Direction == Backwards && opts.FromEnd:
		sql, args = selectEvent+`WHERE stream_id = $1 ORDER BY revision DESC LIMIT $2`, []any{stream, limit}
	case opts.Direction == Backwards:
		sql, args = selectEvent+`WHERE stream_id = $1 AND revision <= $2 ORDER BY revision DESC LIMIT $3`, []any{stream, int64(opts.From), limit}
	case opts.FromEnd:
		return nil, nil // forwards from the end: nothing is after the end
	default:
		sql, args = selectEvent+`WHERE stream_id = $1 AND revision >= $2 ORDER BY revision LIMIT $3`, []any{stream, int64(opts.From), limit}
	}
	return p.query(ctx, p.pool, sql, args...)
}

// ReadAll implements Store: commit-order safe, see the type's doc.
func (p *Postgres) ReadAll(ctx context.Context, after Position, max int) ([]RecordedEvent, error) {
	if max <= 0 {
		max = p.opts.BatchSize
	}
	return p.query(ctx, p.pool, selectEvent+`
		WHERE (tx_id, position) > ($1::text::xid8, $2::bigint)
		  AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY events.tx_id, events.position
		LIMIT $3`, fmt.Sprint(after.Commit), int64(after.Prepare), max)
}

// Head implements Store.
func (p *Postgres) Head(ctx context.Context) (Position, error) {
	var commit, prepare int64
	err := p.pool.QueryRow(ctx, `
		SELECT tx_id::text::bigint, position FROM events
		WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
		ORDER BY events.tx_id DESC, events.position DESC LIMIT 1`).Scan(&commit, &prepare)
	if errors.Is(err, pgx.ErrNoRows) {
		return Start, nil
	}
	if err != nil {
		return Start, fmt.Errorf("head of the log: %w", err)
	}
	return Position{Commit: uint64(commit), Prepare: uint64(prepare)}, nil
}

func (p *Postgres) query(ctx context.Context, q querier, sql string, args ...any) ([]RecordedEvent, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []RecordedEvent
	// Scanned as bytes: the id binary (uuid.UUID would go through its text
	// form), data as it is stored (json.RawMessage would be validated by
	// encoding/json again, though the column is jsonb), metadata by
	// decodeMetadata.
	var id pgtype.UUID
	var data, meta []byte
	var rev, pos, tx int64
	for rows.Next() {
		var e RecordedEvent
		if err := rows.Scan(&id, &e.StreamID, &rev, &pos, &tx, &e.Type, &data, &meta, &e.PrevHash, &e.Hash); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.ID, e.Data = id.Bytes, data
		if err := decodeMetadata(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("read events: metadata of %s: %w", e.ID, err)
		}
		e.Revision, e.Position = uint64(rev), Position{Commit: uint64(tx), Prepare: uint64(pos)}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// committed wakes local subscribers and asks the notifier for one NOTIFY.
func (p *Postgres) committed() {
	p.wake.Signal()
	select {
	case p.notify <- struct{}{}:
	default: // a NOTIFY is already due; it covers this append too
	}
}

// notifyPace is the least time between two NOTIFYs: appends committed in
// between share one.
const notifyPace = 5 * time.Millisecond

// notifier sends the coalesced NOTIFY. Its transaction commits with
// synchronous_commit off: it only announces appends that are already
// durable, so waiting for its own flush would cost a disk sync for nothing.
func (p *Postgres) notifier(ctx context.Context) {
	defer p.done.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.notify:
		}
		_, err := p.pool.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')`, notifyChannel)
		if err != nil && ctx.Err() == nil {
			p.opts.Logger.Warn("event log notify failed; subscribers fall back to polling", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(notifyPace):
		}
	}
}

// listener holds a LISTEN connection and wakes local subscribers on every
// notification, reconnecting with a backoff. Subscribers also poll, so a lost
// notification costs latency, never an event.
func (p *Postgres) listener(ctx context.Context) {
	defer p.done.Done()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := p.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		p.opts.Logger.Warn("event log listener lost its connection", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *Postgres) listenOnce(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool: LISTEN state must not leak to others.
	raw := conn.Hijack()
	defer raw.Close(context.Background())
	if _, err := raw.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	p.wake.Signal() // anything appended while we were not listening
	for {
		if _, err := raw.WaitForNotification(ctx); err != nil {
			return err
		}
		p.wake.Signal()
	}
}

// SubscribeAll implements Store.
func (p *Postgres) SubscribeAll(ctx context.Context, after Position) (Subscription, error) {
	return &pgSubscription{store: p, after: after, closed: make(chan struct{})}, nil
}

type pgSubscription struct {
	store     *Postgres
	after     Position
	closed    chan struct{}
	closeOnce sync.Once
}

// Next reads what is ready after the last delivered position. When nothing
// is, it waits for a wake-up or the poll interval. A wake-up with nothing
// readable means a committed event is held back behind an older transaction
// still in flight (possibly not an append at all), so it re-reads with a
// short, growing backoff until that transaction ends.
func (s *pgSubscription) Next(ctx context.Context) ([]RecordedEvent, error) {
	pending := false
	backoff := time.Millisecond
	for {
		select {
		case <-s.closed:
			return nil, ErrClosed
		default:
		}
		woken := s.store.wake.Wait() // taken before reading: no lost wake-up
		evs, err := s.store.ReadAll(ctx, s.after, s.store.opts.BatchSize)
		if err != nil {
			return nil, err
		}
		if len(evs) > 0 {
			s.after = evs[len(evs)-1].Position
			return evs, nil
		}
		wait := s.store.opts.PollInterval
		if pending {
			wait = backoff
			backoff *= 2
			if backoff > 100*time.Millisecond {
				pending = false
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-s.closed:
			timer.Stop()
			return nil, ErrClosed
		case <-woken:
			timer.Stop()
			pending, backoff = true, time.Millisecond
		case <-timer.C:
		}
	}
}

func (s *pgSubscription) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

// Broadcast wakes every waiter at once: Wait returns a channel that the next
// Signal closes. Take the channel before checking the condition waited for,
// so that a Signal between the check and the wait is not lost.
type Broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func NewBroadcast() *Broadcast { return &Broadcast{ch: make(chan struct{})} }

func (b *Broadcast) Wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *Broadcast) Signal() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// Pool is the pool the log writes through.
func (p *Postgres) Pool() *pgxpool.Pool { return p.pool }

// ConnString is the connection string of the log's database.
func (p *Postgres) ConnString() string { return p.pool.Config().ConnString() }

// decodeMetadata is json.Unmarshal(b, m) with a fast path for what the log
// holds: a flat object of string values without escapes, as jsonb prints the
// metadata the appends write. Anything else (escapes, non-ASCII, other value
// kinds, keys that differ from the field names, a time that does not parse)
// goes to encoding/json, so the result and the errors are always its own.
// Reading the log, encoding/json's generic decoding was most of the client's
// time per event.
func decodeMetadata(b []byte, m *Metadata) error {
	if decodeFlatMetadata(b, m) {
		return nil
	}
	*m = Metadata{}
	return json.Unmarshal(b, m)
}

func decodeFlatMetadata(b []byte, m *Metadata) bool {
	var out Metadata
	ok := ScanFlatObject(b, func(key, val []byte) bool {
		switch string(key) {
		case "correlationId":
			out.CorrelationID = string(val)
		case "causationId":
			out.CausationID = string(val)
		case "actor":
			out.Actor = string(val)
		case "occurredAt":
			return out.OccurredAt.UnmarshalText(val) == nil
		default:
			return false
		}
		return true
	})
	if ok {
		*m = out
	}
	return ok
}

// ScanFlatObject calls member for each member of b in order, if b is a JSON
// object whose values are all strings, with neither escapes nor bytes
// outside printable ASCII in keys or values: what jsonb prints for the
// metadata and most payloads the log holds. It returns false when b is not
// such an object or member returned false (having perhaps called member
// for some of the members): the caller then decodes b with encoding/json,
// which gives the result or the error for everything else. The views key
// and val are valid only during the call.
func ScanFlatObject(b []byte, member func(key, val []byte) bool) bool {
	i := 0
	space := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	str := func() ([]byte, bool) {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		i++
		start := i
		for ; i < len(b); i++ {
			c := b[i]
			if c == '"' {
				i++
				return b[start : i-1], true
			}
			if c == '\\' || c < 0x20 || c >= 0x80 {
				return nil, false
			}
		}
		return nil, false
	}
	space()
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i++
	space()
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			space()
			key, ok := str()
			if !ok {
				return false
			}
			space()
			if i >= len(b) || b[i] != ':' {
				return false
			}
			i++
			space()
			val, ok := str()
			if !ok || !member(key, val) {
				return false
			}
			space()
			if i < len(b) && b[i] == ',' {
				i++
				continue
			}
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			return false
		}
	}
	space()
	return i == len(b)
}
