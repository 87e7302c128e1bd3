package vehicle

import (
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// Steps are the security checks a service needs on a device (seed 002).
// A device gets a stepsID for a carAssociationID; the list behind it is a
// cache (the steps projection): a step that reached alreadyDone stays so
// until the cache entry is reset.

const (
	TypeStepsMinted = "steps.minted.v1"
	TypeStepsReset  = "steps.reset.v1"
)

// StepsStream names the stream of one device's steps for one
// carAssociationID: one stepsID per device and service.
func StepsStream(carAssociationID uuid.UUID, device string) string {
	return "steps-" + uuid.NewSHA1(carAssociationID, []byte(device)).String()
}

// StepsMinted gives a device its stepsID.
type StepsMinted struct {
	StepsID          int64     `json:"stepsId"`
	CarAssociationID uuid.UUID `json:"carAssociationId"`
	AccountID        uuid.UUID `json:"accountId"`
	DeviceID         string    `json:"deviceId"`
	VIN              string    `json:"vin"`
	Service          string    `json:"service"`
}

// StepsReset wipes the cache entry: its statuses are computed again from the
// ledger's facts.
type StepsReset struct {
	StepsID int64 `json:"stepsId"`
}

// DecodeSteps decodes a steps event.
func DecodeSteps(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeStepsMinted:
		v = &StepsMinted{}
	case TypeStepsReset:
		v = &StepsReset{}
	default:
		return nil, fmt.Errorf("steps: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("steps: decode %s: %w", eventType, err)
	}
	return v, nil
}

// Step names and orders, as the SDK prints them (trusterPhoneNumber is the
// SDK's spelling).
const (
	StepTrustedPhone     = "trusterPhoneNumber"
	StepDeviceActivation = "deviceActivation"
	StepCarKey           = "mediumCarKey"
)

// Step is one step of a service, with its fixed order.
type Step struct {
	Name  string
	Order int
}

// StepsOf lists the steps a service requires, in order.
func StepsOf(s Service) []Step {
	steps := []Step{{StepTrustedPhone, 1}, {StepDeviceActivation, 2}}
	if s == RemoteCommands {
		steps = append(steps, Step{StepCarKey, 3})
	}
	return steps
}
