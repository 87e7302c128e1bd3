package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/eventstore"
)

var errBusy = domain.New(domain.KindUnavailable, "busy", "too many concurrent changes to this stream; try again")

// area is what decide needs to know of a domain area's events.
type area struct {
	decode func(eventType string, data []byte) (any, error)
	typeOf func(payload any) string
}

// decide folds stream into a fresh state, runs the decision and appends the
// events it returns — also when it returns an error, for a failure can be a
// fact worth keeping (a wrong code). When another request appended first,
// it folds again and decides again, so concurrent requests are serialized
// by the log. It returns the decision's error.
func decide[S interface{ Apply(any, time.Time) }](ctx context.Context, h *Handler, stream string, a area, fresh func() S, decision func(S, time.Time) ([]any, error)) error {
	for attempt := 0; attempt < 50; attempt++ {
		state := fresh()
		expected, err := h.fold(ctx, stream, a.decode, state.Apply)
		if err != nil {
			return err
		}
		evs, verdict := decision(state, h.Clock.Now())
		if len(evs) == 0 {
			return verdict
		}
		batch := make([]typed, len(evs))
		for i, ev := range evs {
			batch[i] = typed{a.typeOf(ev), ev}
		}
		res, err := h.appendEvents(ctx, stream, expected, batch...)
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", stream, err)
		}
		h.settle(ctx, res.Position)
		return verdict
	}
	return errBusy
}
