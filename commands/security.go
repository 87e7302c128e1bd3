package commands

import (
	"context"

	"github.com/consentledger/ledger/domain/security"
	"github.com/consentledger/ledger/eventstore"
)

// RecordSourceLimited records that a source address was cut off for
// guessing secrets. It is called once per transition into the limited
// state, so the stream grows by one event per source and window at most.
// It appends whatever the stream holds (the limit is counted in memory, not
// decided from the stream) and does not wait for the read models: nothing
// reads these events but auditors.
func (h *Handler) RecordSourceLimited(ctx context.Context, e security.SourceLimited) error {
	ctx = withoutIdempotency(ctx)
	_, err := h.appendEvents(ctx, security.SourceStream(e.Source), eventstore.Any,
		typed{security.TypeSourceLimited, e})
	return err
}

// RecordClientAuthLocked records that a partner client's authentication was
// locked after too many wrong secrets.
func (h *Handler) RecordClientAuthLocked(ctx context.Context, e security.ClientAuthLocked) error {
	ctx = withoutIdempotency(ctx)
	_, err := h.appendEvents(ctx, security.ClientStream(e.ClientID), eventstore.Any,
		typed{security.TypeClientAuthLocked, e})
	return err
}

// withoutIdempotency drops the request's Idempotency-Key: a transition is
// a fresh fact even when the request that caused it carried a key, and
// deriving its id from the key would make two transitions one.
func withoutIdempotency(ctx context.Context) context.Context {
	m := metaFrom(ctx)
	m.IdempotencyKey = ""
	return WithMeta(ctx, m)
}
