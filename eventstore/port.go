// Package eventstore is the ledger's event log: one port (Store) and its
// adapters. The PostgreSQL log is the embedded default; EventStoreDB serves
// production clusters. Both pass the contract suite in eventstore/storetest.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Store is the port every adapter implements.
//
// Append is atomic per call: either every event is written, contiguously and
// in order, or none is. Reads of a stream that does not exist return no events
// and no error: in this ledger a stream exists exactly when it has events.
type Store interface {
	// Append writes events at the end of stream if the stream's current
	// revision satisfies expected. Retrying an append whose events (by id)
	// already stand at that place succeeds and writes nothing. The
	// PostgreSQL log also refuses ids that stand anywhere else
	// (ErrDuplicateEvent); EventStoreDB checks ids only at the expected
	// place, so commands derive retry-stable ids from the expected revision.
	Append(ctx context.Context, stream string, expected ExpectedRevision, events ...EventData) (AppendResult, error)

	// ReadStream reads up to max events of one stream from revision from
	// (inclusive) in the given direction. FromEnd reads the newest first.
	ReadStream(ctx context.Context, stream string, opts ReadStreamOptions) ([]RecordedEvent, error)

	// ReadAll reads up to max events of the whole log strictly after
	// position, in log order. An event is returned only once every event that
	// will ever sort before it is readable too, so a reader that checkpoints
	// the last position it saw never skips an event. An event may therefore
	// become readable a moment after its append returned: in the PostgreSQL
	// log, once every transaction of the server that was already writing
	// has ended.
	ReadAll(ctx context.Context, after Position, max int) ([]RecordedEvent, error)

	// SubscribeAll starts a catch-up subscription after position: it delivers
	// history in log order, then turns live. Cancel ctx or call Close to end it.
	SubscribeAll(ctx context.Context, after Position) (Subscription, error)

	// Head is the position of the newest readable event (Start when the log
	// is empty). Used for lag and progress, never for correctness.
	Head(ctx context.Context) (Position, error)

	// Ping reports whether the log is reachable.
	Ping(ctx context.Context) error

	Close() error
}

// Subscription delivers the log in order, in batches of whatever is ready.
type Subscription interface {
	// Next blocks until at least one event is available and returns the
	// events ready now, in log order (at most the adapter's batch size).
	Next(ctx context.Context) ([]RecordedEvent, error)
	Close() error
}

// Position is a place in the whole log. Events are ordered by (Commit,
// Prepare), the way EventStoreDB orders $all. In the PostgreSQL log Commit is
// the id of the transaction that wrote the event and Prepare its global
// sequence number, which is what makes reading in commit order possible.
type Position struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
}

// Start is the position before the first event.
var Start = Position{}

// Less reports whether p sorts before q in the log.
func (p Position) Less(q Position) bool {
	if p.Commit != q.Commit {
		return p.Commit < q.Commit
	}
	return p.Prepare < q.Prepare
}

func (p Position) String() string { return fmt.Sprintf("%d/%d", p.Commit, p.Prepare) }

// ExpectedRevision is the optimistic-concurrency condition of an append.
type ExpectedRevision struct {
	kind     expectedKind
	revision uint64
}

type expectedKind uint8

const (
	expectAny expectedKind = iota
	expectNoStream
	expectStreamExists
	expectExact
)

var (
	// Any appends whatever the stream's state.
	Any = ExpectedRevision{kind: expectAny}
	// NoStream appends only if the stream has no events.
	NoStream = ExpectedRevision{kind: expectNoStream}
	// StreamExists appends only if the stream has at least one event.
	StreamExists = ExpectedRevision{kind: expectStreamExists}
)

// Exact appends only if the stream's last event has revision rev.
func Exact(rev uint64) ExpectedRevision { return ExpectedRevision{kind: expectExact, revision: rev} }

// ExpectRevisionOf is the condition a command uses after folding events: the
// stream must still end where the fold ended (NoStream if it read nothing).
func ExpectRevisionOf(events []RecordedEvent) ExpectedRevision {
	if len(events) == 0 {
		return NoStream
	}
	return Exact(events[len(events)-1].Revision)
}

// IsAny, IsNoStream, IsStreamExists and Revision let adapters map the
// condition onto their own client types.
func (e ExpectedRevision) IsAny() bool          { return e.kind == expectAny }
func (e ExpectedRevision) IsNoStream() bool     { return e.kind == expectNoStream }
func (e ExpectedRevision) IsStreamExists() bool { return e.kind == expectStreamExists }

// Revision returns the exact revision and true for an Exact condition.
func (e ExpectedRevision) Revision() (uint64, bool) { return e.revision, e.kind == expectExact }

// Satisfied reports whether a stream whose last revision is current (-1: no
// stream) meets the condition.
func (e ExpectedRevision) Satisfied(current int64) bool {
	switch e.kind {
	case expectNoStream:
		return current < 0
	case expectStreamExists:
		return current >= 0
	case expectExact:
		return current == int64(e.revision)
	default:
		return true
	}
}

func (e ExpectedRevision) String() string {
	switch e.kind {
	case expectNoStream:
		return "no stream"
	case expectStreamExists:
		return "stream exists"
	case expectExact:
		return fmt.Sprintf("revision %d", e.revision)
	default:
		return "any"
	}
}

// Metadata travels with every event. OccurredAt is the event's time: read
// models use it, never the clock of the machine that projects.
type Metadata struct {
	CorrelationID string    `json:"correlationId,omitempty"`
	CausationID   string    `json:"causationId,omitempty"`
	Actor         string    `json:"actor,omitempty"`
	OccurredAt    time.Time `json:"occurredAt"`
}

// EventData is an event to append. ID makes retries idempotent: commands
// that can be retried derive it deterministically.
type EventData struct {
	ID       uuid.UUID
	Type     string
	Data     json.RawMessage
	Metadata Metadata
}

// RecordedEvent is an event as the log holds it.
type RecordedEvent struct {
	ID       uuid.UUID       `json:"id"`
	StreamID string          `json:"stream"`
	Revision uint64          `json:"revision"`
	Position Position        `json:"position"`
	Type     string          `json:"type"`
	Data     json.RawMessage `json:"data"`
	Metadata Metadata        `json:"metadata"`
	// PrevHash is the Hash of the event before this one in its stream
	// (empty for revision 0); Hash chains this event to it (see chain.go).
	PrevHash []byte `json:"prevHash,omitempty"`
	Hash     []byte `json:"hash,omitempty"`
}

// AppendResult tells where the last appended event stands.
type AppendResult struct {
	NextRevision uint64   // revision of the last event now in the stream
	Position     Position // log position of the last appended event
}

// Direction of a stream read.
type Direction uint8

const (
	Forwards Direction = iota
	Backwards
)

// ReadStreamOptions selects a slice of a stream. From is inclusive; with
// Backwards and FromEnd set, the read starts at the newest event. Max <= 0
// means no limit.
type ReadStreamOptions struct {
	Direction Direction
	From      uint64
	FromEnd   bool
	Max       int
}

var (
	// ErrWrongExpectedRevision: the stream is not where the caller expected.
	ErrWrongExpectedRevision = errors.New("eventstore: wrong expected revision")
	// ErrDuplicateEvent: an event id already stands elsewhere in the log.
	ErrDuplicateEvent = errors.New("eventstore: event id already appended elsewhere")
	// ErrInvalidEvent: an event is missing its id, type or JSON data.
	ErrInvalidEvent = errors.New("eventstore: invalid event")
	// ErrClosed: the subscription or store was closed.
	ErrClosed = errors.New("eventstore: closed")
)

// WrongExpectedRevisionError carries the context of a conflict. It matches
// ErrWrongExpectedRevision with errors.Is.
type WrongExpectedRevisionError struct {
	Stream   string
	Expected ExpectedRevision
	Actual   int64 // -1 when the stream does not exist
}

func (e *WrongExpectedRevisionError) Error() string {
	return fmt.Sprintf("eventstore: stream %q: expected %s, actual revision %d", e.Stream, e.Expected, e.Actual)
}

func (e *WrongExpectedRevisionError) Is(target error) bool { return target == ErrWrongExpectedRevision }

// Validate checks what every adapter requires of an event before writing.
func (e EventData) Validate() error {
	if e.ID == uuid.Nil {
		return fmt.Errorf("%w: missing id", ErrInvalidEvent)
	}
	if e.Type == "" {
		return fmt.Errorf("%w: missing type", ErrInvalidEvent)
	}
	if !json.Valid(e.Data) {
		return fmt.Errorf("%w: %s: data is not JSON", ErrInvalidEvent, e.Type)
	}
	return nil
}

// ReadWholeStream reads every event of a stream forwards, page by page.
func ReadWholeStream(ctx context.Context, s Store, stream string) ([]RecordedEvent, error) {
	const page = 1000
	var out []RecordedEvent
	var from uint64
	for {
		evs, err := s.ReadStream(ctx, stream, ReadStreamOptions{From: from, Max: page})
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		if len(evs) < page {
			return out, nil
		}
		from = evs[len(evs)-1].Revision + 1
	}
}
