package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
)

// Accounts is the read model of accounts: e-mail, status and dates, for
// profile and admin queries. Sign-in never reads it (it reads the streams).
type Accounts struct{}

func (Accounts) Name() string     { return "accounts" }
func (Accounts) Tables() []string { return []string{"accounts"} }

// LateIndexes implements LateIndexer: the e-mail index serves the queries;
// Apply writes by account id.
func (Accounts) LateIndexes() []string { return []string{"accounts_email"} }

var (
	_ BatchApplier = Accounts{}
	_ LateIndexer  = Accounts{}
)

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

// accountRow is a row of accounts as the events of one batch leave it.
type accountRow struct {
	id            uuid.UUID
	email         *string
	status        string
	createdAt     time.Time
	activatedAt   *time.Time
	provisionedBy pgtype.UUID
	noticePending bool
	updatedAt     time.Time
}

// errNotFolded says ApplyBatch leaves a batch to Apply, event by event.
var errNotFolded = errors.New("accounts: batch left to Apply")

// FoldBatch implements BatchApplier. The accounts registered in the batch
// are folded in memory, with every later event of theirs, the way Apply's
// statements would change their rows, and written with one COPY. Events of
// accounts registered before the batch go to Apply after the COPY: they
// touch other rows, so the order between the two does not matter. A
// registration of an account the batch already registered, or whose earlier
// events of the batch went to Apply, is left to the event-by-event replay.
func (a Accounts) FoldBatch(evs []eventstore.RecordedEvent) (BatchWrite, error) {
	rows := make(map[uuid.UUID]*accountRow, len(evs))
	var order []*accountRow
	var rest []eventstore.RecordedEvent
	elsewhere := map[uuid.UUID]bool{}
	for _, ev := range evs {
		switch ev.Type {
		case account.TypeRegistered, account.TypeActivated, account.TypeProvisioned, account.TypeNoticeGiven, account.TypeErased:
		default:
			continue
		}
		payload, err := decodeAccount(ev.Type, ev.Data)
		if err != nil {
			return nil, err
		}
		at := ev.Metadata.OccurredAt
		if e, ok := payload.(*account.Registered); ok {
			if rows[e.AccountID] != nil || elsewhere[e.AccountID] {
				return nil, errNotFolded
			}
			r := &accountRow{id: e.AccountID, status: "pending_activation", createdAt: at, updatedAt: at}
			if e.Email != "" {
				r.email = &e.Email
			}
			rows[e.AccountID] = r
			order = append(order, r)
			continue
		}
		var id uuid.UUID
		switch e := payload.(type) {
		case *account.Activated:
			id = e.AccountID
		case *account.Provisioned:
			id = e.AccountID
		case *account.Erased:
			id = e.AccountID
		case *account.NoticeGiven:
			id = e.AccountID
		}
		r := rows[id]
		if r == nil {
			rest = append(rest, ev)
			elsewhere[id] = true
			continue
		}
		switch e := payload.(type) {
		case *account.Activated:
			r.status, r.activatedAt, r.updatedAt = "active", &at, at
		case *account.Provisioned:
			r.provisionedBy, r.noticePending, r.updatedAt = pgtype.UUID{Bytes: e.ClientID, Valid: true}, true, at
		case *account.Erased:
			r.email, r.status, r.updatedAt = nil, "erased", at
		case *account.NoticeGiven:
			r.noticePending, r.updatedAt = false, at
		}
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		if len(order) > 0 {
			_, err := tx.CopyFrom(ctx, pgx.Identifier{"accounts"},
				[]string{"account_id", "email", "status", "created_at", "activated_at", "provisioned_by", "notice_pending", "updated_at"},
				pgx.CopyFromSlice(len(order), func(i int) ([]any, error) {
					r := order[i]
					return []any{pgtype.UUID{Bytes: r.id, Valid: true}, r.email, r.status, r.createdAt, r.activatedAt, r.provisionedBy, r.noticePending, r.updatedAt}, nil
				}))
			if err != nil {
				return err
			}
		}
		for _, ev := range rest {
			if err := a.Apply(ctx, tx, ev); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

// decodeAccount is account.Decode with a fast path for registrations and
// activations stored as flat objects of plain strings (eventstore.
// ScanFlatObject), the bulk of a large log: each member is decoded as
// encoding/json decodes it into the payload's field (a uuid or a time by
// its UnmarshalText), members of other names are ignored as it ignores
// them, and anything it would treat otherwise (a name matching a field only
// case-insensitively, a value that does not parse) goes to account.Decode,
// so that the payloads and the errors are always its own.
func decodeAccount(typ string, data []byte) (any, error) {
	switch typ {
	case account.TypeRegistered:
		var e account.Registered
		if eventstore.ScanFlatObject(data, func(key, val []byte) bool {
			switch string(key) {
			case "accountId":
				return e.AccountID.UnmarshalText(val) == nil
			case "email":
				e.Email = string(val)
			case "passwordHash":
				e.PasswordHash = string(val)
			case "activationSecretHash":
				e.ActivationSecretHash = string(val)
			case "activationExpiresAt":
				return e.ActivationExpiresAt.UnmarshalText(val) == nil
			default:
				return !foldsTo(key, "accountId", "email", "passwordHash", "activationSecretHash", "activationExpiresAt")
			}
			return true
		}) {
			return &e, nil
		}
	case account.TypeActivated:
		var e account.Activated
		if eventstore.ScanFlatObject(data, func(key, val []byte) bool {
			if string(key) == "accountId" {
				return e.AccountID.UnmarshalText(val) == nil
			}
			return !foldsTo(key, "accountId")
		}) {
			return &e, nil
		}
	}
	return account.Decode(typ, data)
}

// foldsTo reports whether encoding/json would decode the member key into a
// field of one of these names, though not equal to any of them.
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if strings.EqualFold(string(key), n) {
			return true
		}
	}
	return false
}
