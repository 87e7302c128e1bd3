package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/eventstore"
)

// Subjects is the subject index: for each account, every stream that
// concerns it (its account and enrollment streams, its e-mail reservation,
// sessions, the cars it owned, their steps, its grants and OAuth token
// families) with the first and last revision (and time) of the events that
// concern it. Stream revisions, not log positions: they are the same on
// every log, so the index rebuilds identically after a move to EventStoreDB.
// Auditors find a subject's history through it, then read the log itself:
// the index says where to look, never what happened.
//
// An event concerns an account when its stream is named after the account
// ("account-<id>", "enrollment-<id>") or its payload names it
// ("accountId"). An event that names no account (a wrong car-key code, a
// refresh rotation) concerns the account its stream last named.
type Subjects struct{}

func (Subjects) Name() string { return "subjects" }
func (Subjects) Tables() []string {
	return []string{"subject_streams", "subject_stream_owners", "subject_client_grants"}
}

// subjectFields are the fields of a payload the index reads; payloads are
// not decoded by area, so a new event type is indexed without a change here.
type subjectFields struct {
	AccountID *uuid.UUID `json:"accountId"`
	ClientID  *uuid.UUID `json:"clientId"`
}

func (Subjects) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if !subjectArea(ev.StreamID) {
		return nil // a partner's registration, an auditor: no end user
	}
	var f subjectFields
	if err := json.Unmarshal(ev.Data, &f); err != nil {
		return fmt.Errorf("subject of %s: %w", ev.Type, err)
	}
	subject, named := streamSubject(ev.StreamID)
	if !named && f.AccountID != nil && *f.AccountID != uuid.Nil {
		subject, named = *f.AccountID, true
	}
	if named {
		if _, err := tx.Exec(ctx, `
			INSERT INTO subject_stream_owners (stream, account_id) VALUES ($1, $2)
			ON CONFLICT (stream) DO UPDATE SET account_id = $2`, ev.StreamID, subject); err != nil {
			return err
		}
	} else {
		err := tx.QueryRow(ctx, `SELECT account_id FROM subject_stream_owners WHERE stream = $1`, ev.StreamID).Scan(&subject)
		if err == pgx.ErrNoRows {
			return nil // a client-credentials token family: no end user
		}
		if err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO subject_streams (account_id, stream, first_revision, last_revision, first_at, last_at, events)
		VALUES ($1, $2, $3, $3, $4, $4, 1)
		ON CONFLICT (account_id, stream) DO UPDATE SET last_revision = $3, last_at = $4,
			events = subject_streams.events + 1`, subject, ev.StreamID, int64(ev.Revision), ev.Metadata.OccurredAt); err != nil {
		return err
	}
	if strings.HasPrefix(ev.StreamID, "grant-") && f.ClientID != nil {
		if _, err := tx.Exec(ctx, `
			INSERT INTO subject_client_grants (client_id, stream, account_id) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, *f.ClientID, ev.StreamID, subject); err != nil {
			return err
		}
	}
	return nil
}

// subjectStreamPrefixes are the areas whose streams can concern an end
// user; the others (clients, auditors) are not even decoded.
var subjectStreamPrefixes = []string{"account-", "email-", "session-", "enrollment-", "vehicle-", "steps-", "grant-", "oauth-"}

func subjectArea(stream string) bool {
	for _, p := range subjectStreamPrefixes {
		if strings.HasPrefix(stream, p) {
			return true
		}
	}
	return false
}

// streamSubject reads the account out of the streams named after it.
func streamSubject(stream string) (uuid.UUID, bool) {
	for _, prefix := range []string{"account-", "enrollment-"} {
		if rest, ok := strings.CutPrefix(stream, prefix); ok {
			id, err := uuid.Parse(rest)
			return id, err == nil
		}
	}
	return uuid.Nil, false
}

// Querier is what the index's readers need: a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// SubjectStream is one stream of a subject: the revisions, first and
// last, of its events that concern the subject, and their times.
type SubjectStream struct {
	Stream                      string
	FirstRevision, LastRevision uint64
	FirstAt, LastAt             time.Time
	Events                      int64
}

// SubjectStreamRanges lists every stream that concerns an account, in the
// order of their first event's time. An unknown account has none.
func SubjectStreamRanges(ctx context.Context, db Querier, accountID uuid.UUID) ([]SubjectStream, error) {
	rows, err := db.Query(ctx, `
		SELECT stream, first_revision, last_revision, first_at, last_at, events
		FROM subject_streams WHERE account_id = $1
		ORDER BY first_at, stream`, accountID)
	if err != nil {
		return nil, fmt.Errorf("subject streams: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SubjectStream, error) {
		var s SubjectStream
		var first, last int64
		err := r.Scan(&s.Stream, &first, &last, &s.FirstAt, &s.LastAt, &s.Events)
		s.FirstRevision, s.LastRevision = uint64(first), uint64(last)
		return s, err
	})
}

// SubjectStreams lists the names of every stream that concerns an account,
// in the order of their first event's time.
func SubjectStreams(ctx context.Context, db Querier, accountID uuid.UUID) ([]string, error) {
	ranges, err := SubjectStreamRanges(ctx, db, accountID)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ranges))
	for i, r := range ranges {
		out[i] = r.Stream
	}
	return out, nil
}

// ClientGrantStreams lists the grant streams of one client, one per
// account that ever answered it, in stream order.
func ClientGrantStreams(ctx context.Context, db Querier, clientID uuid.UUID) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT stream FROM subject_client_grants WHERE client_id = $1 ORDER BY stream`, clientID)
	if err != nil {
		return nil, fmt.Errorf("client grant streams: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// SubjectClients lists the clients an account ever answered.
func SubjectClients(ctx context.Context, db Querier, accountID uuid.UUID) ([]uuid.UUID, error) {
	rows, err := db.Query(ctx, `SELECT client_id FROM subject_client_grants WHERE account_id = $1 ORDER BY client_id`, accountID)
	if err != nil {
		return nil, fmt.Errorf("subject clients: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}
