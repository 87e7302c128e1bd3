package commands

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/audit"
	"github.com/consentledger/ledger/eventstore"
)

var auditArea = area{decode: audit.Decode, typeOf: audit.TypeOf}

// IssueAuditorKey records a new auditor and returns its key, which is shown
// this once: the log keeps only its hash.
func (h *Handler) IssueAuditorKey(ctx context.Context, name string) (id uuid.UUID, key string, err error) {
	id = h.newID(ctx, "auditor")
	key, issued, err := audit.NewKey(id, name)
	if err != nil {
		return uuid.Nil, "", err
	}
	if _, err := h.appendEvents(ctx, audit.Stream(id), eventstore.NoStream, typed{audit.TypeAuditorIssued, issued}); err != nil {
		return uuid.Nil, "", err
	}
	// No read model answers from auditor streams: keys are checked on the
	// stream itself, so there is nothing to wait for.
	return id, key, nil
}

// AuthenticateAuditor checks an auditor key by reading the auditor's stream,
// so a revocation takes effect at once.
func (h *Handler) AuthenticateAuditor(ctx context.Context, key string) (*audit.Auditor, error) {
	id, secret, err := audit.ParseKey(key)
	if err != nil {
		return nil, err
	}
	a := &audit.Auditor{}
	if _, err := h.fold(ctx, audit.Stream(id), audit.Decode, a.Apply); err != nil {
		return nil, err
	}
	if err := a.Authenticate(secret); err != nil {
		return nil, err
	}
	return a, nil
}

// RevokeAuditor ends an auditor's key.
func (h *Handler) RevokeAuditor(ctx context.Context, id uuid.UUID) error {
	return decide(ctx, h, audit.Stream(id), auditArea, func() *audit.Auditor { return &audit.Auditor{} },
		func(a *audit.Auditor, _ time.Time) ([]any, error) { return a.Revoke() })
}
