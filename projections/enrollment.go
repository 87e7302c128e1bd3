package projections

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/eventstore"
)

// Enrollment is the read model of device enrollment: the trusted phone,
// whether a PIN is set, the block state, and the enrolled devices.
type Enrollment struct{}

func (Enrollment) Name() string     { return "enrollment" }
func (Enrollment) Tables() []string { return []string{"enrollment_accounts", "enrollment_devices"} }

func (Enrollment) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if ev.Type == account.TypeErased {
		// The trusted phone goes with the account's other personal data.
		_, err := tx.Exec(ctx, `UPDATE enrollment_accounts SET phone_number = NULL, updated_at = $2 WHERE account_id = $1`,
			strings.TrimPrefix(ev.StreamID, "account-"), ev.Metadata.OccurredAt)
		return err
	}
	if !strings.HasPrefix(ev.Type, "enrollment.") {
		return nil
	}
	accountID, err := uuid.Parse(strings.TrimPrefix(ev.StreamID, "enrollment-"))
	if err != nil {
		return err
	}
	payload, err := enrollment.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	upsert := func(set string, args ...any) error {
		_, err := tx.Exec(ctx, `
			INSERT INTO enrollment_accounts (account_id, updated_at) VALUES ($1, $2)
			ON CONFLICT (account_id) DO NOTHING`, accountID, at)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE enrollment_accounts SET `+set+`, updated_at = $2 WHERE account_id = $1`,
			append([]any{accountID, at}, args...)...)
		return err
	}
	switch e := payload.(type) {
	case *enrollment.PhoneRegistered:
		return upsert(`phone_number = NULLIF($3, '')`, e.Phone)
	case *enrollment.PhoneModified:
		return upsert(`phone_number = NULLIF($3, '')`, e.Phone)
	case *enrollment.PinSet:
		return upsert(`pin_set = true`)
	case *enrollment.Blocked:
		return upsert(`block_state = $3`, e.State)
	case *enrollment.DeviceEnrolled:
		if err := upsert(`pin_set = pin_set`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO enrollment_devices (account_id, device_id, enrolled_at) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, accountID, e.DeviceID, at)
		return err
	case *enrollment.EnrollmentsRemoved:
		if err := upsert(`pin_set = false, block_state = 'NotBlocked'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM enrollment_devices WHERE account_id = $1`, accountID)
		return err
	}
	return nil
}
