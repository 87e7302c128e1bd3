package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/security"
	"github.com/consentledger/ledger/eventstore"
)

// SecurityEvents is the security index: every security.* event (a source
// address limited, a partner client's authentication locked), numbered in
// the order the log holds them, with its stream, revision, time and the
// client it names. These events have no subject, so the subject index does
// not list them; auditors page through this index and read the events from
// the log. A rank in log order, not a log position: it is the same on every
// log, so the index rebuilds identically after a move to EventStoreDB.
type SecurityEvents struct{}

func (SecurityEvents) Name() string     { return "security_events" }
func (SecurityEvents) Tables() []string { return []string{"security_events"} }

// securityFields are the fields of a payload the index reads.
type securityFields struct {
	ClientID *uuid.UUID `json:"clientId"`
}

func (SecurityEvents) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if !security.Handles(ev.Type) {
		return nil
	}
	var f securityFields
	if err := json.Unmarshal(ev.Data, &f); err != nil {
		return fmt.Errorf("security index of %s: %w", ev.Type, err)
	}
	if f.ClientID != nil && *f.ClientID == uuid.Nil {
		f.ClientID = nil
	}
	// Events are applied one at a time in log order, under the
	// projection's lock: the next rank is the highest one plus one.
	_, err := tx.Exec(ctx, `
		INSERT INTO security_events (seq, stream, revision, occurred_at, client_id)
		SELECT coalesce(max(seq), 0) + 1, $1, $2, $3, $4 FROM security_events`,
		ev.StreamID, int64(ev.Revision), ev.Metadata.OccurredAt, f.ClientID)
	return err
}

// SecurityEventRef is where one security event stands in the log.
type SecurityEventRef struct {
	Seq      int64
	Stream   string
	Revision uint64
}

// SecurityQuery selects a page of the security index.
type SecurityQuery struct {
	After  int64      // rank of the last event already read; 0 from the start
	Client *uuid.UUID // only the events that name this client; nil for all
	Since  time.Time  // only events at or after this time; zero for all
	Limit  int
}

// SecurityEventRefs lists up to q.Limit security events after q.After, in
// log order. Each read is a range scan of an index from q.After on (the
// whole index, or one client's part of it).
func SecurityEventRefs(ctx context.Context, db Querier, q SecurityQuery) ([]SecurityEventRef, error) {
	sql, args := `SELECT seq, stream, revision FROM security_events WHERE seq > $1`, []any{q.After}
	if q.Client != nil {
		args = append(args, *q.Client)
		sql += fmt.Sprintf(` AND client_id = $%d`, len(args))
	}
	if !q.Since.IsZero() {
		args = append(args, q.Since)
		sql += fmt.Sprintf(` AND occurred_at >= $%d`, len(args))
	}
	args = append(args, q.Limit)
	sql += fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args))
	rows, err := db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("security events: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SecurityEventRef, error) {
		var s SecurityEventRef
		var rev int64
		err := r.Scan(&s.Seq, &s.Stream, &rev)
		s.Revision = uint64(rev)
		return s, err
	})
}
