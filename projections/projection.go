// Package projections builds the read models from the event log. Each read
// model is one Projection with a name that keys its checkpoint; the Runner
// feeds every projection from the log through a Watermill router, one batch
// of events per message and one transaction per batch, writing the rows and
// the checkpoint together so that a restart neither skips nor repeats.
package projections

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/eventstore"
)

// Projection is one read model.
//
// Apply must be deterministic: it may read and write only its own tables
// through tx and use the event's time (ev.Metadata.OccurredAt), never the
// clock, so that a rebuild gives the same rows byte for byte. Events it does
// not care about are ignored, not errors. An error stops this projection at
// that event until a retry succeeds; it is never skipped.
type Projection interface {
	Name() string
	Tables() []string
	Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error
}

// BatchApplier is a Projection that can apply a run of events at once: a
// rebuild uses it while it fills the shadow tables, where one multi-row
// statement or COPY replaces a statement per event.
//
// FoldBatch reads the events into a BatchWrite without touching the
// database, so that a rebuild folds a batch while it writes the one before;
// the BatchWrite then writes them in the batch's transaction. Together they
// must leave the tables exactly as Apply event by event would. Where they
// cannot tell (an event they do not expect, a row already there), they
// return an error, and the rebuild rolls the batch back and applies it event
// by event, which names the failing event if there is one. The BatchWrite's
// tx may be pipelined like Apply's (see pipeTx). A type that embeds a
// BatchApplier and changes Apply must change FoldBatch too.
type BatchApplier interface {
	Projection
	FoldBatch(evs []eventstore.RecordedEvent) (BatchWrite, error)
}

// BatchWrite writes what FoldBatch folded.
type BatchWrite func(ctx context.Context, tx pgx.Tx) error

// LateIndexer is a Projection some of whose indexes serve only the queries,
// never Apply's statements: a rebuild creates them once the shadow tables
// are filled instead of maintaining them entry by entry. Unique indexes and
// those of primary keys may not be listed (ON CONFLICT and the handlers'
// lookups rely on them while applying).
type LateIndexer interface {
	Projection
	LateIndexes() []string
}

// lock serializes everything that writes one projection's tables or
// checkpoint: live batches, rebuilds, and (later) other instances. Advisory
// locks take no transaction id, so waiting for one does not hold back the
// log's readers.
func lock(ctx context.Context, tx pgx.Tx, name string) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryKey("projection", name)); err != nil {
		return fmt.Errorf("lock projection %s: %w", name, err)
	}
	return nil
}

// errBusy says a live batch found its projection locked (by a rebuild's
// swap): it rolls back, giving its pool connection back, and is retried.
var errBusy = errors.New("projection locked by a rebuild")

// tryLock is lock for live batches: they never wait for the lock holding
// a pool connection, since the swap holding it may need one to read the log.
func tryLock(ctx context.Context, tx pgx.Tx, name string) error {
	var ok bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, advisoryKey("projection", name)).Scan(&ok); err != nil {
		return fmt.Errorf("lock projection %s: %w", name, err)
	}
	if !ok {
		return errBusy
	}
	return nil
}

type checkpoint struct {
	pos      eventstore.Position
	applied  int64
	hasError bool
}

func readCheckpoint(ctx context.Context, q pgx.Tx, name string) (checkpoint, error) {
	var c checkpoint
	var commit, prepare int64
	err := q.QueryRow(ctx, `
		SELECT commit_position, prepare_position, events_applied, error IS NOT NULL
		FROM projection_checkpoints WHERE name = $1`, name).Scan(&commit, &prepare, &c.applied, &c.hasError)
	if errors.Is(err, pgx.ErrNoRows) {
		_, err = q.Exec(ctx, `INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING`, name)
		return c, err
	}
	if err != nil {
		return c, fmt.Errorf("checkpoint of %s: %w", name, err)
	}
	c.pos = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
	return c, nil
}

// writeCheckpoint moves the checkpoint, records the throughput (events per
// second) and clears any recorded failure.
func writeCheckpoint(ctx context.Context, tx pgx.Tx, name string, pos eventstore.Position, applied int64, lastEventAt time.Time, perSecond float64) error {
	_, err := tx.Exec(ctx, `
		UPDATE projection_checkpoints SET
			commit_position = $2, prepare_position = $3, events_applied = $4,
			last_event_at = coalesce($5, last_event_at), events_per_second = $6,
			error = NULL, error_event_id = NULL, error_event_type = NULL, error_position = NULL, error_at = NULL,
			updated_at = now()
		WHERE name = $1`, name, int64(pos.Commit), int64(pos.Prepare), applied, nullTime(lastEventAt), perSecond)
	if err != nil {
		return fmt.Errorf("checkpoint of %s: %w", name, err)
	}
	return nil
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// ApplyError names the event a projection failed on.
type ApplyError struct {
	Projection string
	Event      eventstore.RecordedEvent
	Err        error
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("projection %s: event %s (%s) at %s: %v", e.Projection, e.Event.ID, e.Event.Type, e.Event.Position, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// applyBatch applies the events after the checkpoint and moves it, in tx.
// It reports gap=true, applying nothing, when the checkpoint is behind from:
// something (a rebuild) moved it back, and the caller must re-read from it.
// rate (may be nil) turns the running count of applied events into events
// per second.
func applyBatch(ctx context.Context, tx pgx.Tx, p Projection, from eventstore.Position, evs []eventstore.RecordedEvent, rate *rateWindow) (cp eventstore.Position, gap bool, err error) {
	if err := tryLock(ctx, tx, p.Name()); err != nil {
		return cp, false, err
	}
	c, err := readCheckpoint(ctx, tx, p.Name())
	if err != nil {
		return cp, false, err
	}
	if c.pos.Less(from) {
		return c.pos, true, nil
	}
	cp = c.pos
	var last time.Time
	applied := c.applied
	for _, ev := range evs {
		if !cp.Less(ev.Position) {
			continue // already in the read model
		}
		if err := applySafely(ctx, tx, p, ev); err != nil {
			return c.pos, false, &ApplyError{Projection: p.Name(), Event: ev, Err: err}
		}
		cp, last = ev.Position, ev.Metadata.OccurredAt
		applied++
	}
	if applied != c.applied || c.hasError {
		if err := writeCheckpoint(ctx, tx, p.Name(), cp, applied, last, rate.observe(time.Now(), applied)); err != nil {
			return c.pos, false, err
		}
	}
	return cp, false, nil
}

// rateWindow measures a projection's throughput over the last few seconds
// from the running count of events it applied.
type rateWindow struct {
	mu      sync.Mutex
	samples []rateSample
}

type rateSample struct {
	at      time.Time
	applied int64
}

// RateWindow is how far back the throughput looks.
const RateWindow = 10 * time.Second

// observe records the count at now and returns the events per second since
// the oldest sample within RateWindow (0 with a single sample).
func (w *rateWindow) observe(now time.Time, applied int64) float64 {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, rateSample{now, applied})
	i := 0
	for i < len(w.samples)-1 && now.Sub(w.samples[i+1].at) >= RateWindow {
		i++
	}
	w.samples = w.samples[i:]
	first := w.samples[0]
	secs := now.Sub(first.at).Seconds()
	if secs <= 0 || applied < first.applied {
		return 0
	}
	return float64(applied-first.applied) / secs
}

// applySafely turns a panic in Apply into the event's error, so that the
// projection stops on that event and its status names it, as for any other
// error (the router's recoverer alone would retry the batch for ever
// without a status).
func applySafely(ctx context.Context, tx pgx.Tx, p Projection, ev eventstore.RecordedEvent) error {
	return unpanicked(func() error { return p.Apply(ctx, tx, ev) })
}

// unpanicked runs do and turns a panic in it into its error: a projection's
// code that panics stops that projection on the event, as an error does,
// not the process.
func unpanicked(do func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return do()
}
