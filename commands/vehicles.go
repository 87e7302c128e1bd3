package commands

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/vehicle"
	"github.com/consentledger/ledger/eventstore"
)

var vehicleArea = area{decode: vehicle.Decode, typeOf: vehicle.TypeOf}

func (h *Handler) decideVehicle(ctx context.Context, vin string, decision func(*vehicle.Vehicle, time.Time) ([]any, error)) error {
	return decide(ctx, h, vehicle.Stream(vin), vehicleArea, func() *vehicle.Vehicle { return vehicle.New(vin) }, decision)
}

// AssociateVehicle makes a car the account's property. It reports whether
// the association is new (associating again changes nothing).
func (h *Handler) AssociateVehicle(ctx context.Context, account uuid.UUID, rawVIN string) (vin string, created bool, err error) {
	if vin, err = vehicle.NormalizeVIN(rawVIN); err != nil {
		return "", false, err
	}
	err = h.decideVehicle(ctx, vin, func(v *vehicle.Vehicle, _ time.Time) ([]any, error) {
		evs, err := v.Associate(account, h.newID(ctx, "association"))
		created = len(evs) > 0
		return evs, err
	})
	return vin, created, err
}

// SubscribeService subscribes a connected service on the account's car and
// returns its carAssociationID; subscribing again returns the same one.
func (h *Handler) SubscribeService(ctx context.Context, account uuid.UUID, rawVIN, rawService string) (id uuid.UUID, created bool, err error) {
	vin, err := vehicle.NormalizeVIN(rawVIN)
	if err != nil {
		return uuid.Nil, false, err
	}
	service, err := vehicle.ServiceFromString(rawService)
	if err != nil {
		return uuid.Nil, false, err
	}
	err = h.decideVehicle(ctx, vin, func(v *vehicle.Vehicle, _ time.Time) ([]any, error) {
		var evs []any
		var err error
		id, evs, err = v.Subscribe(account, service)
		created = len(evs) > 0
		return evs, err
	})
	return id, created, err
}

// RemoveProperty ends the account's association with the car (it was
// sold): its services, their steps, and partners' access to its data.
func (h *Handler) RemoveProperty(ctx context.Context, account uuid.UUID, rawVIN string) error {
	vin, err := vehicle.NormalizeVIN(rawVIN)
	if err != nil {
		return err
	}
	return h.decideVehicle(ctx, vin, func(v *vehicle.Vehicle, _ time.Time) ([]any, error) {
		return v.RemoveProperty(account)
	})
}

var (
	ErrUnknownCarAssociation = domain.New(domain.KindNotFound, "unknown_car_association", "no such carAssociationID for this account")
)

// stepsIDLimit keeps stepsIDs below 2^53, so that every JSON client reads
// them exactly as numbers.
var stepsIDLimit = big.NewInt(1<<53 - 100_000)

// MintSteps gives this device its stepsID for a carAssociationID of the
// account's car; asking again returns the same one.
func (h *Handler) MintSteps(ctx context.Context, account uuid.UUID, device, vin string, carAssociationID uuid.UUID) (int64, error) {
	v := vehicle.New(vin)
	if _, err := h.fold(ctx, vehicle.Stream(vin), vehicle.Decode, v.Apply); err != nil {
		return 0, err
	}
	service, ok := v.CarAssociation(account, carAssociationID)
	if !ok {
		return 0, ErrUnknownCarAssociation
	}
	stream := vehicle.StepsStream(carAssociationID, device)
	if id, err := h.existingSteps(ctx, stream); id != 0 || err != nil {
		return id, err
	}
	n, err := rand.Int(rand.Reader, stepsIDLimit)
	if err != nil {
		return 0, err
	}
	minted := vehicle.StepsMinted{StepsID: n.Int64() + 100_000, CarAssociationID: carAssociationID, AccountID: account,
		DeviceID: device, VIN: vin, Service: service.String()}
	res, err := h.appendEvents(ctx, stream, eventstore.NoStream, typed{vehicle.TypeStepsMinted, minted})
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return h.existingSteps(ctx, stream) // minted by a concurrent request
	}
	if err != nil {
		return 0, err
	}
	h.settle(ctx, res.Position)
	return minted.StepsID, nil
}

// existingSteps returns the steps id minted on stream, if any, once the
// read models include it: the request that minted it may still be waiting
// for them, and this caller's next query must find the steps all the same.
func (h *Handler) existingSteps(ctx context.Context, stream string) (int64, error) {
	evs, err := h.Store.ReadStream(ctx, stream, eventstore.ReadStreamOptions{Max: 1})
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	p, err := vehicle.DecodeSteps(evs[0].Type, evs[0].Data)
	if err != nil {
		return 0, err
	}
	h.settle(ctx, evs[0].Position)
	return p.(*vehicle.StepsMinted).StepsID, nil
}

// ResetSteps wipes one cache entry: its statuses are computed again from
// the ledger (resetSteps: true, or an admin).
func (h *Handler) ResetSteps(ctx context.Context, stepsID int64, carAssociationID uuid.UUID, device string) error {
	res, err := h.appendEvents(ctx, vehicle.StepsStream(carAssociationID, device), eventstore.StreamExists,
		typed{vehicle.TypeStepsReset, vehicle.StepsReset{StepsID: stepsID}})
	if err != nil {
		return err
	}
	h.settle(ctx, res.Position)
	return nil
}

// ChallengeCarKey shows a one-time code in the car (the vehicle channel of
// the outbox) for this device to type back.
func (h *Handler) ChallengeCarKey(ctx context.Context, account uuid.UUID, device, rawVIN string) error {
	vin, err := vehicle.NormalizeVIN(rawVIN)
	if err != nil {
		return err
	}
	code := newCode()
	rules := h.Enrollment.OneTimeCodes(vehicle.CarKeyErrors)
	err = h.decideVehicle(ctx, vin, func(v *vehicle.Vehicle, now time.Time) ([]any, error) {
		return v.ChallengeCarKey(rules, account, device, h.newID(ctx, "carkey-code"), code, now)
	})
	if err != nil {
		return err
	}
	h.Outbox.Send(ctx, Message{Channel: "vehicle", To: vin, Code: code, CreatedAt: h.Clock.Now(), Account: account,
		Body: fmt.Sprintf("Key check: type %s in the app within %d minutes.", code, int(rules.TTL.Minutes()))})
	return nil
}

// ProveCarKey checks the code shown in the car: the mediumCarKey step.
func (h *Handler) ProveCarKey(ctx context.Context, account uuid.UUID, device, rawVIN, code string) error {
	vin, err := vehicle.NormalizeVIN(rawVIN)
	if err != nil {
		return err
	}
	rules := h.Enrollment.OneTimeCodes(vehicle.CarKeyErrors)
	return h.decideVehicle(ctx, vin, func(v *vehicle.Vehicle, now time.Time) ([]any, error) {
		return v.ProveCarKey(rules, account, device, code, now)
	})
}
