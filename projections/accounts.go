package projections

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
)

// Accounts is the read model of accounts: e-mail, status and dates, for
// profile and admin queries. Sign-in never reads it (it reads the streams).
type Accounts struct{}

func (Accounts) Name() string     { return "accounts" }
func (Accounts) Tables() []string { return []string{"accounts"} }

func (Accounts) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	switch ev.Type {
	case account.TypeRegistered, account.TypeActivated, account.TypeProvisioned, account.TypeNoticeGiven, account.TypeErased:
	default:
		return nil
	}
	payload, err := account.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *account.Registered:
		_, err = tx.Exec(ctx, `
			INSERT INTO accounts (account_id, email, status, created_at, updated_at)
			VALUES ($1, NULLIF($2, ''), 'pending_activation', $3, $3)`, e.AccountID, e.Email, at)
	case *account.Activated:
		var tag interface{ RowsAffected() int64 }
		tag, err = tx.Exec(ctx, `
			UPDATE accounts SET status = 'active', activated_at = $2, updated_at = $2
			WHERE account_id = $1`, e.AccountID, at)
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("activation of unknown account %s", e.AccountID)
		}
	case *account.Provisioned:
		_, err = tx.Exec(ctx, `UPDATE accounts SET provisioned_by = $2, notice_pending = true, updated_at = $3
			WHERE account_id = $1`, e.AccountID, e.ClientID, at)
	case *account.Erased:
		// The address goes; the row stays, so the account's id keeps
		// answering "erased" rather than "unknown".
		_, err = tx.Exec(ctx, `UPDATE accounts SET email = NULL, status = 'erased', updated_at = $2 WHERE account_id = $1`, e.AccountID, at)
	case *account.NoticeGiven:
		_, err = tx.Exec(ctx, `UPDATE accounts SET notice_pending = false, updated_at = $2 WHERE account_id = $1`, e.AccountID, at)
	}
	return err
}
