package projections

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/enrollment"
	"github.com/consentledger/ledger/domain/vehicle"
	"github.com/consentledger/ledger/eventstore"
)

// Steps is the steps cache of the SDK (seed 002). A step's status comes
// from ledger facts: a trusted phone on the account (trusterPhoneNumber),
// this device enrolled (deviceActivation), the car key proven for this
// account and car (mediumCarKey). Once alreadyDone, a step stays so even if
// its fact goes away (enrollments removed), until the entry is reset.
type Steps struct{}

func (Steps) Name() string { return "steps" }
func (Steps) Tables() []string {
	return []string{"steps_fact_phones", "steps_fact_devices", "steps_fact_carkeys", "steps_cache"}
}

const (
	todo        = "todo"
	alreadyDone = "alreadyDone"
)

func (Steps) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	at := ev.Metadata.OccurredAt
	switch {
	case strings.HasPrefix(ev.Type, "enrollment."):
		return stepsEnrollmentFact(ctx, tx, ev)
	case strings.HasPrefix(ev.Type, "vehicle."):
		payload, err := vehicle.Decode(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		switch e := payload.(type) {
		case *vehicle.CarKeyProven:
			if _, err := tx.Exec(ctx, `INSERT INTO steps_fact_carkeys VALUES ($1, $2) ON CONFLICT DO NOTHING`, e.AccountID, e.VIN); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE steps_cache SET car_key = $3, updated_at = $4
				WHERE account_id = $1 AND vin = $2 AND car_key = $5 AND NOT ended`, e.AccountID, e.VIN, alreadyDone, at, todo)
			return err
		case *vehicle.PropertyRemoved:
			if _, err := tx.Exec(ctx, `DELETE FROM steps_fact_carkeys WHERE account_id = $1 AND vin = $2`, e.AccountID, e.VIN); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE steps_cache SET ended = true, updated_at = $2 WHERE car_association_id = ANY($1)`, e.CarAssociationIDs, at)
			return err
		}
	case strings.HasPrefix(ev.Type, "steps."):
		payload, err := vehicle.DecodeSteps(ev.Type, ev.Data)
		if err != nil {
			return err
		}
		switch e := payload.(type) {
		case *vehicle.StepsMinted:
			_, err = tx.Exec(ctx, `
				INSERT INTO steps_cache (steps_id, car_association_id, account_id, device_id, vin, service,
					trusted_phone, device_activation, car_key, updated_at)
				VALUES ($1, $2, $3, $4, $5, $6, 'todo', 'todo', CASE WHEN $6 = 'remoteCommands' THEN 'todo' END, $7)`,
				e.StepsID, e.CarAssociationID, e.AccountID, e.DeviceID, e.VIN, e.Service, at)
			if err != nil {
				return err
			}
			return recomputeSteps(ctx, tx, e.StepsID, at)
		case *vehicle.StepsReset:
			return recomputeSteps(ctx, tx, e.StepsID, at)
		}
	}
	return nil
}

// recomputeSteps sets an entry's statuses from the facts as they are now.
func recomputeSteps(ctx context.Context, tx pgx.Tx, stepsID int64, at any) error {
	_, err := tx.Exec(ctx, `
		UPDATE steps_cache c SET
			trusted_phone = CASE WHEN EXISTS (SELECT 1 FROM steps_fact_phones p WHERE p.account_id = c.account_id)
				THEN 'alreadyDone' ELSE 'todo' END,
			device_activation = CASE WHEN EXISTS (SELECT 1 FROM steps_fact_devices d
				WHERE d.account_id = c.account_id AND d.device_id = c.device_id) THEN 'alreadyDone' ELSE 'todo' END,
			car_key = CASE WHEN c.car_key IS NULL THEN NULL
				WHEN EXISTS (SELECT 1 FROM steps_fact_carkeys k WHERE k.account_id = c.account_id AND k.vin = c.vin)
				THEN 'alreadyDone' ELSE 'todo' END,
			updated_at = $2
		WHERE steps_id = $1`, stepsID, at)
	return err
}

func stepsEnrollmentFact(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	accountID, err := uuid.Parse(strings.TrimPrefix(ev.StreamID, "enrollment-"))
	if err != nil {
		return err
	}
	payload, err := enrollment.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *enrollment.PhoneRegistered:
		if _, err := tx.Exec(ctx, `INSERT INTO steps_fact_phones VALUES ($1) ON CONFLICT DO NOTHING`, accountID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE steps_cache SET trusted_phone = $2, updated_at = $3
			WHERE account_id = $1 AND trusted_phone = $4 AND NOT ended`, accountID, alreadyDone, at, todo)
		return err
	case *enrollment.DeviceEnrolled:
		if _, err := tx.Exec(ctx, `INSERT INTO steps_fact_devices VALUES ($1, $2) ON CONFLICT DO NOTHING`, accountID, e.DeviceID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE steps_cache SET device_activation = $3, updated_at = $4
			WHERE account_id = $1 AND device_id = $2 AND device_activation = $5 AND NOT ended`, accountID, e.DeviceID, alreadyDone, at, todo)
		return err
	case *enrollment.EnrollmentsRemoved:
		// The fact goes; the cache keeps alreadyDone until a reset.
		_, err = tx.Exec(ctx, `DELETE FROM steps_fact_devices WHERE account_id = $1`, accountID)
		return err
	}
	return nil
}
