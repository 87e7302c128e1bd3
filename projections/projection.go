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
	"hash/fnv"
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

// lock serializes everything that writes one projection's tables or
// checkpoint: live batches, rebuilds, and (later) other instances. Advisory
// locks take no transaction id, so waiting for one does not hold back the
// log's readers.
func lock(ctx context.Context, tx pgx.Tx, name string) error {
	h := fnv.New64a()
	h.Write([]byte("projection:" + name))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(h.Sum64())); err != nil {
		return fmt.Errorf("lock projection %s: %w", name, err)
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

// writeCheckpoint moves the checkpoint and clears any recorded failure.
func writeCheckpoint(ctx context.Context, tx pgx.Tx, name string, pos eventstore.Position, applied int64, lastEventAt time.Time) error {
	_, err := tx.Exec(ctx, `
		UPDATE projection_checkpoints SET
			commit_position = $2, prepare_position = $3, events_applied = $4,
			last_event_at = coalesce($5, last_event_at),
			error = NULL, error_event_id = NULL, error_event_type = NULL, error_position = NULL, error_at = NULL,
			updated_at = now()
		WHERE name = $1`, name, int64(pos.Commit), int64(pos.Prepare), applied, nullTime(lastEventAt))
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
func applyBatch(ctx context.Context, tx pgx.Tx, p Projection, from eventstore.Position, evs []eventstore.RecordedEvent) (cp eventstore.Position, gap bool, err error) {
	if err := lock(ctx, tx, p.Name()); err != nil {
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
		if err := writeCheckpoint(ctx, tx, p.Name(), cp, applied, last); err != nil {
			return c.pos, false, err
		}
	}
	return cp, false, nil
}

// applySafely turns a panic in Apply into the event's error, so that the
// projection stops on that event and its status names it, as for any other
// error (the router's recoverer alone would retry the batch for ever
// without a status).
func applySafely(ctx context.Context, tx pgx.Tx, p Projection, ev eventstore.RecordedEvent) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return p.Apply(ctx, tx, ev)
}
