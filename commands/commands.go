// Package commands decides and appends. Each command reads the streams it
// decides from, folds them, checks the rules of its domain area, and appends
// with the expected revision it read at, so that a concurrent change makes
// it fail or retry instead of deciding on stale state. A command that
// changes nothing appends nothing.
package commands

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
)

// Consistency is what commands wait on before they return, so that the
// caller's next query reflects its own write (the projection runner).
type Consistency interface {
	WaitFor(ctx context.Context, pos eventstore.Position) error
}

// Deps are the command side's collaborators, wired by hand in cmd/.
type Deps struct {
	Store          eventstore.Store
	Clock          domain.Clock
	Outbox         Outbox
	Consistency    Consistency // optional
	Logger         *slog.Logger
	PasswordParams account.PasswordParams
	// Enrollment is the policy of SMS codes, PINs and devices.
	Enrollment enrollment.Policy
	// PublicURL prefixes links sent to users (activation).
	PublicURL string
	// ConsistencyTimeout bounds the wait for read models (default 3s).
	ConsistencyTimeout time.Duration
}

// Handler runs the commands.
type Handler struct{ Deps }

// New checks the dependencies and fills defaults.
func New(d Deps) *Handler {
	if d.Clock == nil {
		d.Clock = domain.SystemClock{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.PasswordParams == (account.PasswordParams{}) {
		d.PasswordParams = account.DefaultPasswordParams
	}
	if d.Enrollment == (enrollment.Policy{}) {
		d.Enrollment = enrollment.DefaultPolicy
	}
	if d.ConsistencyTimeout <= 0 {
		d.ConsistencyTimeout = 3 * time.Second
	}
	if d.Outbox == nil {
		d.Outbox = DiscardOutbox{}
	}
	return &Handler{Deps: d}
}

// Meta is the causal context of a command: who asks, within which request,
// and under which Idempotency-Key.
type Meta struct {
	CorrelationID  string
	CausationID    string
	Actor          string
	IdempotencyKey string
}

type metaKey struct{}

// WithMeta attaches the command context to ctx.
func WithMeta(ctx context.Context, m Meta) context.Context {
	return context.WithValue(ctx, metaKey{}, m)
}

// WithActor names who asks, keeping the rest of the command context.
func WithActor(ctx context.Context, actor string) context.Context {
	m, _ := ctx.Value(metaKey{}).(Meta)
	m.Actor = actor
	return WithMeta(ctx, m)
}

func metaFrom(ctx context.Context) Meta {
	m, _ := ctx.Value(metaKey{}).(Meta)
	if m.Actor == "" {
		m.Actor = "anonymous"
	}
	return m
}

// idNamespace roots the deterministic ids of commands sent with an
// Idempotency-Key.
var idNamespace = uuid.MustParse("6f1d8a8e-3b0a-4d3c-9a57-2f4b1c9e7d10")

// newID returns a fresh id, or, when the command carries an Idempotency-Key,
// an id derived from it: a retried command then appends the same events
// with the same ids, which the log treats as a no-op.
func (h *Handler) newID(ctx context.Context, purpose string) uuid.UUID {
	if k := metaFrom(ctx).IdempotencyKey; k != "" {
		return uuid.NewSHA1(idNamespace, []byte(k+"\x00"+purpose))
	}
	// Time-ordered ids keep the log's unique index on event ids compact.
	return uuid.Must(uuid.NewV7())
}

// event builds an event with its metadata.
func (h *Handler) event(ctx context.Context, stream string, n int, typ string, payload any) (eventstore.EventData, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return eventstore.EventData{}, fmt.Errorf("encode %s: %w", typ, err)
	}
	m := metaFrom(ctx)
	return eventstore.EventData{
		ID:   h.newID(ctx, fmt.Sprintf("event\x00%s\x00%d\x00%s", stream, n, typ)),
		Type: typ,
		Data: data,
		Metadata: eventstore.Metadata{
			CorrelationID: m.CorrelationID, CausationID: m.CausationID, Actor: m.Actor,
			OccurredAt: h.Clock.Now(),
		},
	}, nil
}

// appendEvents appends payloads (type, payload pairs) to stream.
func (h *Handler) appendEvents(ctx context.Context, stream string, expected eventstore.ExpectedRevision, evs ...typed) (eventstore.AppendResult, error) {
	data := make([]eventstore.EventData, len(evs))
	base := 0
	if rev, ok := expected.Revision(); ok {
		base = int(rev) + 1
	}
	for i, e := range evs {
		d, err := h.event(ctx, stream, base+i, e.typ, e.payload)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		data[i] = d
	}
	return h.Store.Append(ctx, stream, expected, data...)
}

type typed struct {
	typ     string
	payload any
}

// settle waits until the read models include pos; a slow projection delays
// the answer a little, never fails the command (it committed).
func (h *Handler) settle(ctx context.Context, pos eventstore.Position) {
	if h.Consistency == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.ConsistencyTimeout)
	defer cancel()
	if err := h.Consistency.WaitFor(ctx, pos); err != nil {
		h.Logger.Warn("read models lag behind a command", "position", pos.String(), "error", err)
	}
}

// fold reads a whole stream, decodes each event and hands it to apply with
// its time; it returns the condition under which a decision taken on that
// state may be appended.
func (h *Handler) fold(ctx context.Context, stream string, decode func(string, []byte) (any, error), apply func(payload any, at time.Time)) (eventstore.ExpectedRevision, error) {
	evs, err := eventstore.ReadWholeStream(ctx, h.Store, stream)
	if err != nil {
		return eventstore.Any, err
	}
	for _, e := range evs {
		payload, err := decode(e.Type, e.Data)
		if err != nil {
			return eventstore.Any, fmt.Errorf("%s: %w", stream, err)
		}
		apply(payload, e.Metadata.OccurredAt)
	}
	return eventstore.ExpectRevisionOf(evs), nil
}

// loadAccount folds an account stream.
func (h *Handler) loadAccount(ctx context.Context, id uuid.UUID) (*account.Account, eventstore.ExpectedRevision, error) {
	a := &account.Account{}
	expected, err := h.fold(ctx, account.Stream(id), account.Decode, func(p any, _ time.Time) { a.Apply(p) })
	return a, expected, err
}

// lookupEmail returns the account an address is reserved for, the time of
// the reservation and the reservation stream's revision.
func (h *Handler) lookupEmail(ctx context.Context, email string) (id uuid.UUID, at time.Time, expected eventstore.ExpectedRevision, err error) {
	evs, err := h.Store.ReadStream(ctx, account.EmailStream(email), eventstore.ReadStreamOptions{Direction: eventstore.Backwards, FromEnd: true, Max: 1})
	if err != nil || len(evs) == 0 {
		return uuid.Nil, time.Time{}, eventstore.NoStream, err
	}
	payload, err := account.Decode(evs[0].Type, evs[0].Data)
	if err != nil {
		return uuid.Nil, time.Time{}, eventstore.NoStream, err
	}
	r, ok := payload.(*account.EmailReserved)
	if !ok {
		return uuid.Nil, time.Time{}, eventstore.NoStream, fmt.Errorf("email stream holds %s", evs[0].Type)
	}
	return r.AccountID, evs[0].Metadata.OccurredAt, eventstore.Exact(evs[0].Revision), nil
}
