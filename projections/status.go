package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/consentledger/ledger/eventstore"
)

// Status is what operators see of one projection.
type Status struct {
	Name          string              `json:"name"`
	State         string              `json:"state"` // live, catching_up, stopped
	Position      eventstore.Position `json:"position"`
	Head          eventstore.Position `json:"head"`
	EventsApplied int64               `json:"eventsApplied"`
	LastEventAt   *time.Time          `json:"lastEventAt,omitempty"`
	Error         *StatusError        `json:"error,omitempty"`
}

// StatusError is the failing event of a stopped projection.
type StatusError struct {
	Message   string     `json:"message"`
	EventID   *uuid.UUID `json:"eventId,omitempty"`
	EventType *string    `json:"eventType,omitempty"`
	Position  *int64     `json:"position,omitempty"`
	At        *time.Time `json:"at,omitempty"`
}

// ListStatus reads the status of the named projections from the database,
// so it answers the same on every instance.
func ListStatus(ctx context.Context, pool *pgxpool.Pool, store eventstore.Store, names []string) ([]Status, error) {
	head, err := store.Head(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(names))
	for _, name := range names {
		s := Status{Name: name, Head: head, State: "catching_up"}
		var commit, prepare int64
		var msg *string
		var e StatusError
		err := pool.QueryRow(ctx, `
			SELECT commit_position, prepare_position, events_applied, last_event_at,
			       error, error_event_id, error_event_type, error_position, error_at
			FROM projection_checkpoints WHERE name = $1`, name).
			Scan(&commit, &prepare, &s.EventsApplied, &s.LastEventAt, &msg, &e.EventID, &e.EventType, &e.Position, &e.At)
		if err != nil && err != pgx.ErrNoRows {
			return nil, fmt.Errorf("status of %s: %w", name, err)
		}
		s.Position = eventstore.Position{Commit: uint64(commit), Prepare: uint64(prepare)}
		switch {
		case msg != nil:
			e.Message = *msg
			s.State, s.Error = "stopped", &e
		case !s.Position.Less(head):
			s.State = "live"
		}
		out = append(out, s)
	}
	return out, nil
}
