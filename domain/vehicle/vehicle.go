// Package vehicle is a car's life in the ledger: which account it is
// associated with (its property), the connected services subscribed on it
// (each a carAssociationID: user + service + vehicle), the proof that the
// user holds its key, and the end of it all when the car is sold
// (RemoveProperty).
//
// One stream per car, "vehicle-<VIN>", decides ownership: associating
// appends with the revision the decision was taken on, so two accounts
// claiming the same car at once cannot both win.
package vehicle

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/otp"
)

// Event type names are wire contracts.
const (
	TypeAssociated        = "vehicle.associated.v1"
	TypeServiceSubscribed = "vehicle.service-subscribed.v1"
	TypeCarKeyChallenged  = "vehicle.carkey-challenged.v1"
	TypeCarKeyFailed      = "vehicle.carkey-failed.v1"
	TypeCarKeyProven      = "vehicle.carkey-proven.v1"
	TypePropertyRemoved   = "vehicle.property-removed.v1"
)

// Stream names a car's stream.
func Stream(vin string) string { return "vehicle-" + vin }

type Associated struct {
	VIN           string    `json:"vin"`
	AccountID     uuid.UUID `json:"accountId"`
	AssociationID uuid.UUID `json:"associationId"`
}

type ServiceSubscribed struct {
	VIN              string    `json:"vin"`
	AccountID        uuid.UUID `json:"accountId"`
	Service          string    `json:"service"`
	CarAssociationID uuid.UUID `json:"carAssociationId"`
}

// CarKeyChallenged: a one-time code was shown in the car (sent over the
// vehicle channel). Only its argon2id hash is kept.
type CarKeyChallenged struct {
	VIN       string    `json:"vin"`
	AccountID uuid.UUID `json:"accountId"`
	CodeID    uuid.UUID `json:"codeId"`
	DeviceID  string    `json:"deviceId"`
	CodeHash  string    `json:"codeHash"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// CarKeyFailed: a wrong code was tried; Burnt when it was one too many.
type CarKeyFailed struct {
	CodeID   uuid.UUID `json:"codeId"`
	Failures int       `json:"failures"`
	Burnt    bool      `json:"burnt"`
}

// CarKeyProven: the account's user typed the code displayed in the car.
type CarKeyProven struct {
	VIN       string    `json:"vin"`
	AccountID uuid.UUID `json:"accountId"`
	DeviceID  string    `json:"deviceId"`
	CodeID    uuid.UUID `json:"codeId"`
}

// PropertyRemoved ends the association, its services (carAssociationIDs),
// their steps and every partner's access to the car's data.
type PropertyRemoved struct {
	VIN               string      `json:"vin"`
	AccountID         uuid.UUID   `json:"accountId"`
	CarAssociationIDs []uuid.UUID `json:"carAssociationIds"`
}

// Decode turns a stored event of this area into its payload.
func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeAssociated:
		v = &Associated{}
	case TypeServiceSubscribed:
		v = &ServiceSubscribed{}
	case TypeCarKeyChallenged:
		v = &CarKeyChallenged{}
	case TypeCarKeyFailed:
		v = &CarKeyFailed{}
	case TypeCarKeyProven:
		v = &CarKeyProven{}
	case TypePropertyRemoved:
		v = &PropertyRemoved{}
	default:
		return nil, fmt.Errorf("vehicle: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("vehicle: decode %s: %w", eventType, err)
	}
	return v, nil
}

// TypeOf returns the type name of a payload.
func TypeOf(payload any) string {
	switch payload.(type) {
	case *Associated:
		return TypeAssociated
	case *ServiceSubscribed:
		return TypeServiceSubscribed
	case *CarKeyChallenged:
		return TypeCarKeyChallenged
	case *CarKeyFailed:
		return TypeCarKeyFailed
	case *CarKeyProven:
		return TypeCarKeyProven
	case *PropertyRemoved:
		return TypePropertyRemoved
	}
	panic(fmt.Sprintf("vehicle: no type name for %T", payload))
}

// Service is a connected service: a closed set.
type Service struct{ s string }

var (
	VehicleStatus  = Service{"vehicleStatus"}
	RemoteCommands = Service{"remoteCommands"}
)

func ServiceFromString(s string) (Service, error) {
	for _, v := range []Service{VehicleStatus, RemoteCommands} {
		if v.s == s {
			return v, nil
		}
	}
	return Service{}, ErrUnknownService
}

func (s Service) String() string { return s.s }
func (s Service) IsZero() bool   { return s.s == "" }

var (
	ErrInvalidVIN          = domain.Invalidf("invalid_vin", "a VIN is 17 letters and digits, without I, O or Q")
	ErrUnknownService      = domain.Invalidf("unknown_service", "service must be vehicleStatus or remoteCommands")
	ErrAssociatedElsewhere = domain.New(domain.KindConflict, "vehicle_associated_elsewhere", "this vehicle is associated with another account")
	ErrUnknownVehicle      = domain.New(domain.KindNotFound, "unknown_vin", "no such vehicle is associated with this account")
)

// NormalizeVIN upper-cases and checks a VIN: 17 characters of the VIN
// alphabet. The North-American check digit is not required: European VINs
// have none.
func NormalizeVIN(raw string) (string, error) {
	vin := strings.ToUpper(strings.TrimSpace(raw))
	if len(vin) != 17 {
		return "", ErrInvalidVIN
	}
	for _, r := range vin {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'Z') || r == 'I' || r == 'O' || r == 'Q' {
			return "", ErrInvalidVIN
		}
	}
	return vin, nil
}

// Vehicle is the state folded from a car's stream.
type Vehicle struct {
	vin           string
	owner         uuid.UUID
	associationID uuid.UUID
	services      map[string]uuid.UUID
	carKeyProven  bool
	codes         otp.Codes // car-key codes: the VIN is their target
}

// New returns the state of a car the ledger has not seen.
func New(vin string) *Vehicle { return &Vehicle{vin: vin, services: map[string]uuid.UUID{}} }

// Apply folds one event.
func (v *Vehicle) Apply(event any, at time.Time) {
	switch e := event.(type) {
	case *Associated:
		v.owner, v.associationID = e.AccountID, e.AssociationID
	case *ServiceSubscribed:
		v.services[e.Service] = e.CarAssociationID
	case *CarKeyChallenged:
		v.codes.ApplyIssued(otp.Issued{ID: e.CodeID, Purpose: carKeyPurpose, Target: e.VIN, Device: e.DeviceID,
			Hash: e.CodeHash, ExpiresAt: e.ExpiresAt}, at)
	case *CarKeyFailed:
		v.codes.ApplyFailed(otp.Failed{ID: e.CodeID, Failures: e.Failures, Burnt: e.Burnt})
	case *CarKeyProven:
		v.carKeyProven = true
		v.codes.ApplyUsed(otp.Used{ID: e.CodeID})
	case *PropertyRemoved:
		v.owner, v.associationID, v.carKeyProven = uuid.Nil, uuid.Nil, false
		v.services, v.codes = map[string]uuid.UUID{}, otp.Codes{}
	}
}

// OwnedBy reports whether the car is associated with the account.
func (v *Vehicle) OwnedBy(account uuid.UUID) bool { return v.owner != uuid.Nil && v.owner == account }

// Associate decides associating the car with an account. Associating it
// again with the same account changes nothing.
func (v *Vehicle) Associate(account, associationID uuid.UUID) ([]any, error) {
	switch {
	case v.OwnedBy(account):
		return nil, nil
	case v.owner != uuid.Nil:
		return nil, ErrAssociatedElsewhere
	}
	return []any{&Associated{VIN: v.vin, AccountID: account, AssociationID: associationID}}, nil
}

// carAssociations roots the carAssociationIDs: one per association and
// service, so subscribing again answers the same one, and a new owner of the
// car gets new ones.
var carAssociations = uuid.MustParse("0b9e1a4c-5d2f-4f7e-8a31-6c2d9e4b7f10")

// Subscribe decides subscribing a service; it returns the carAssociationID.
func (v *Vehicle) Subscribe(account uuid.UUID, s Service) (uuid.UUID, []any, error) {
	if !v.OwnedBy(account) {
		return uuid.Nil, nil, ErrUnknownVehicle
	}
	if id, ok := v.services[s.s]; ok {
		return id, nil, nil
	}
	id := uuid.NewSHA1(carAssociations, []byte(v.associationID.String()+"/"+s.s))
	return id, []any{&ServiceSubscribed{VIN: v.vin, AccountID: account, Service: s.s, CarAssociationID: id}}, nil
}

// CarAssociation returns the service subscribed under a carAssociationID.
func (v *Vehicle) CarAssociation(account, id uuid.UUID) (Service, bool) {
	if !v.OwnedBy(account) {
		return Service{}, false
	}
	for s, cid := range v.services {
		if cid == id {
			svc, _ := ServiceFromString(s)
			return svc, true
		}
	}
	return Service{}, false
}

// CarKeyProven reports whether the owner proved holding the key.
func (v *Vehicle) CarKeyProven() bool { return v.carKeyProven }

const carKeyPurpose = "carKey"

// CarKeyErrors are what car-key codes answer; the rules are those of SMS
// codes.
var CarKeyErrors = otp.NewErrors("carkey", "car-key code", "vehicle")

// ChallengeCarKey decides showing a one-time code in the car, for the
// owner's device to type back.
func (v *Vehicle) ChallengeCarKey(r otp.Rules, account uuid.UUID, device string, codeID uuid.UUID, code string, now time.Time) ([]any, error) {
	if !v.OwnedBy(account) {
		return nil, ErrUnknownVehicle
	}
	issued, err := v.codes.Issue(r, codeID, carKeyPurpose, v.vin, device, code, now)
	if err != nil {
		return nil, err
	}
	return []any{&CarKeyChallenged{VIN: v.vin, AccountID: account, CodeID: issued.ID, DeviceID: device,
		CodeHash: issued.Hash, ExpiresAt: issued.ExpiresAt}}, nil
}

// ProveCarKey checks the code typed back; a wrong one is recorded.
func (v *Vehicle) ProveCarKey(r otp.Rules, account uuid.UUID, device, code string, now time.Time) ([]any, error) {
	if !v.OwnedBy(account) {
		return nil, ErrUnknownVehicle
	}
	used, failed, err := v.codes.Verify(r, carKeyPurpose, v.vin, device, code, now)
	if failed != nil {
		return []any{&CarKeyFailed{CodeID: failed.ID, Failures: failed.Failures, Burnt: failed.Burnt}}, err
	}
	if err != nil {
		return nil, err
	}
	return []any{&CarKeyProven{VIN: v.vin, AccountID: account, DeviceID: device, CodeID: used.ID}}, nil
}

// RemoveProperty decides the end of the association (the car was sold).
func (v *Vehicle) RemoveProperty(account uuid.UUID) ([]any, error) {
	if !v.OwnedBy(account) {
		return nil, ErrUnknownVehicle
	}
	ids := make([]uuid.UUID, 0, len(v.services))
	for _, s := range []Service{VehicleStatus, RemoteCommands} {
		if id, ok := v.services[s.s]; ok {
			ids = append(ids, id)
		}
	}
	return []any{&PropertyRemoved{VIN: v.vin, AccountID: account, CarAssociationIDs: ids}}, nil
}
