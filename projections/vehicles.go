package projections

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/consentledger/ledger/domain/vehicle"
	"github.com/consentledger/ledger/eventstore"
)

// Vehicles is the read model of each account's cars and their services.
type Vehicles struct{}

func (Vehicles) Name() string     { return "vehicles" }
func (Vehicles) Tables() []string { return []string{"vehicles", "vehicle_services"} }

func (Vehicles) Apply(ctx context.Context, tx pgx.Tx, ev eventstore.RecordedEvent) error {
	if !strings.HasPrefix(ev.Type, "vehicle.") {
		return nil
	}
	payload, err := vehicle.Decode(ev.Type, ev.Data)
	if err != nil {
		return err
	}
	at := ev.Metadata.OccurredAt
	switch e := payload.(type) {
	case *vehicle.Associated:
		_, err = tx.Exec(ctx, `INSERT INTO vehicles (vin, account_id, associated_at) VALUES ($1, $2, $3)`, e.VIN, e.AccountID, at)
	case *vehicle.ServiceSubscribed:
		_, err = tx.Exec(ctx, `INSERT INTO vehicle_services (car_association_id, vin, account_id, service, subscribed_at)
			VALUES ($1, $2, $3, $4, $5)`, e.CarAssociationID, e.VIN, e.AccountID, e.Service, at)
	case *vehicle.PropertyRemoved:
		if _, err = tx.Exec(ctx, `DELETE FROM vehicle_services WHERE vin = $1`, e.VIN); err == nil {
			_, err = tx.Exec(ctx, `DELETE FROM vehicles WHERE vin = $1`, e.VIN)
		}
	}
	return err
}
