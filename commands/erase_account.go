package commands

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/consent"
	"github.com/consentledger/ledger/eventstore"
)

// EraseAccount is GDPR erasure (Art. 17) by crypto-shredding. Sessions and
// Clients are what the subject index lists for the account: the sessions to
// end and the partners whose grants to revoke.
type EraseAccount struct {
	AccountID uuid.UUID
	Sessions  []uuid.UUID
	Clients   []uuid.UUID
}

// ReasonAccountErased ends grants and sessions of an erased account.
const ReasonAccountErased = "account-erased"

var errNoSealedLog = domain.New(domain.KindUnavailable, "erasure_unavailable", "erasure needs the sealed event log (LEDGER_DATA_KEY)")

// EraseAccount records the erasure (account.erased.v1, which holds no
// personal data), revokes every grant and ends every session of the
// account, then destroys its data key: every e-mail, name and phone number
// sealed with it, in every event, becomes unreadable at once, while the
// facts (and the log's hashes, computed over the sealed form) stay. The read
// models scrub what they showed when they apply the erasure, and every
// instance forgets the key once it applies account.erased.v1 (which this
// command waits for, as for any append), and drops the account's messages
// from its outboxes. Erasing twice changes nothing; a retry after a
// failure finishes the job.
func (h *Handler) EraseAccount(ctx context.Context, cmd EraseAccount) error {
	keys, ok := eventstore.KeyringOf(h.Store)
	if !ok {
		return errNoSealedLog
	}
	err := decide(ctx, h, account.Stream(cmd.AccountID), accountArea, func() *timedAccount { return &timedAccount{} },
		func(a *timedAccount, _ time.Time) ([]any, error) { return a.Erase() })
	if err != nil {
		return err
	}
	for _, client := range cmd.Clients {
		if err := h.RevokeAccess(ctx, cmd.AccountID, client, ReasonAccountErased); err != nil && !errors.Is(err, consent.ErrNoGrant) {
			return fmt.Errorf("erase %s: revoke grant: %w", cmd.AccountID, err)
		}
	}
	for _, id := range cmd.Sessions {
		if err := h.endSession(ctx, id, ReasonAccountErased); err != nil {
			return fmt.Errorf("erase %s: end session: %w", cmd.AccountID, err)
		}
	}
	if err := keys.Destroy(ctx, cmd.AccountID); err != nil {
		return err
	}
	if f, ok := h.Outbox.(Forgetter); ok {
		f.Forget(cmd.AccountID) // every instance does too, when it applies account.erased.v1
	}
	h.Logger.Info("account erased", "account_id", cmd.AccountID, "grants", len(cmd.Clients), "sessions", len(cmd.Sessions))
	return nil
}

// endSession closes a session for reason; nothing when it is closed.
func (h *Handler) endSession(ctx context.Context, id uuid.UUID, reason string) error {
	return decide(ctx, h, account.SessionStream(id), accountArea, func() *timedSession { return &timedSession{} },
		func(s *timedSession, _ time.Time) ([]any, error) {
			if ev := s.Close(reason); ev != nil {
				return []any{ev}, nil
			}
			return nil, nil
		})
}

type timedSession struct{ account.Session }

func (s *timedSession) Apply(event any, _ time.Time) { s.Session.Apply(event) }
