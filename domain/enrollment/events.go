// Package enrollment is device enrollment (two-factor: an SMS code proves
// the trusted phone, a PIN proves the person) and the account management
// around it: trusted phone, PIN reset and update, removal of all
// enrollments, and the blocks that protect the PIN.
//
// One stream per account, "enrollment-<accountId>", holds it all, so every
// decision (is this the third wrong PIN? is this device one too many?) is
// taken on the whole state and appended with its expected revision: parallel
// attempts are serialized by the log and each one counts.
package enrollment

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Event type names are wire contracts.
const (
	TypeSmsCodeSent            = "enrollment.sms-code-sent.v1"
	TypeSmsCodeFailed          = "enrollment.sms-code-failed.v1"
	TypeSmsCodeUsed            = "enrollment.sms-code-used.v1"
	TypePhoneRegistered        = "enrollment.phone-registered.v1"
	TypePhoneModified          = "enrollment.phone-modified.v1"
	TypeEnrollmentCodeVerified = "enrollment.enrollment-code-verified.v1"
	TypePinSet                 = "enrollment.pin-set.v1"
	TypePinFailed              = "enrollment.pin-failed.v1"
	TypeDeviceEnrolled         = "enrollment.device-enrolled.v1"
	TypeAccountBlocked         = "enrollment.account-blocked.v1"
	TypeEnrollmentsRemoved     = "enrollment.enrollments-removed.v1"
	TypeOTPIssued              = "enrollment.otp-issued.v1"
)

// Stream names an account's enrollment stream.
func Stream(accountID uuid.UUID) string { return "enrollment-" + accountID.String() }

// SmsCodeSent: a code was sent. Only its argon2id hash is kept.
type SmsCodeSent struct {
	CodeID    uuid.UUID `json:"codeId"`
	Purpose   string    `json:"purpose"`
	Phone     string    `json:"phone"`
	DeviceID  string    `json:"deviceId"`
	CodeHash  string    `json:"codeHash"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// SmsCodeFailed: a wrong code was tried; Burnt when it was one too many.
type SmsCodeFailed struct {
	CodeID   uuid.UUID `json:"codeId"`
	Failures int       `json:"failures"`
	Burnt    bool      `json:"burnt"`
}

// SmsCodeUsed: a code was verified and spent.
type SmsCodeUsed struct {
	CodeID uuid.UUID `json:"codeId"`
}

type PhoneRegistered struct {
	Phone string `json:"phone"`
	Via   string `json:"via"` // addPhoneNumber, enrollWithPhoneNumber
}

type PhoneModified struct {
	Phone string `json:"phone"`
}

// EnrollmentCodeVerified: this device proved the trusted phone for an
// enrollment; enroll is allowed for a while after it.
type EnrollmentCodeVerified struct {
	CodeID   uuid.UUID `json:"codeId"`
	DeviceID string    `json:"deviceId"`
}

// PinSet: a new PIN (argon2id hash) replaces any previous one and clears
// the count of wrong PINs.
type PinSet struct {
	PinHash  string `json:"pinHash"`
	Reason   string `json:"reason"` // enroll, reset, update
	DeviceID string `json:"deviceId"`
}

type PinFailed struct {
	DeviceID      string `json:"deviceId"`
	FailuresInRow int    `json:"failuresInRow"`
}

type DeviceEnrolled struct {
	DeviceID string `json:"deviceId"`
}

type Blocked struct {
	State    string `json:"state"` // AccountBlocked, PINBlocked
	DeviceID string `json:"deviceId"`
}

// EnrollmentsRemoved de-enrolls every device and clears the PIN and any
// block; the trusted phone stays.
type EnrollmentsRemoved struct {
	Devices []string `json:"devices"`
}

// OTPIssued: a one-time token for remote commands, proven by the PIN. Only
// the token's SHA-256 is kept.
type OTPIssued struct {
	OTPID     uuid.UUID `json:"otpId"`
	DeviceID  string    `json:"deviceId"`
	TokenHash string    `json:"tokenHash"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Decode turns a stored event of this area into its payload.
func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeSmsCodeSent:
		v = &SmsCodeSent{}
	case TypeSmsCodeFailed:
		v = &SmsCodeFailed{}
	case TypeSmsCodeUsed:
		v = &SmsCodeUsed{}
	case TypePhoneRegistered:
		v = &PhoneRegistered{}
	case TypePhoneModified:
		v = &PhoneModified{}
	case TypeEnrollmentCodeVerified:
		v = &EnrollmentCodeVerified{}
	case TypePinSet:
		v = &PinSet{}
	case TypePinFailed:
		v = &PinFailed{}
	case TypeDeviceEnrolled:
		v = &DeviceEnrolled{}
	case TypeAccountBlocked:
		v = &Blocked{}
	case TypeEnrollmentsRemoved:
		v = &EnrollmentsRemoved{}
	case TypeOTPIssued:
		v = &OTPIssued{}
	default:
		return nil, fmt.Errorf("enrollment: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("enrollment: decode %s: %w", eventType, err)
	}
	return v, nil
}

// TypeOf returns the type name of a payload.
func TypeOf(payload any) string {
	switch payload.(type) {
	case *SmsCodeSent:
		return TypeSmsCodeSent
	case *SmsCodeFailed:
		return TypeSmsCodeFailed
	case *SmsCodeUsed:
		return TypeSmsCodeUsed
	case *PhoneRegistered:
		return TypePhoneRegistered
	case *PhoneModified:
		return TypePhoneModified
	case *EnrollmentCodeVerified:
		return TypeEnrollmentCodeVerified
	case *PinSet:
		return TypePinSet
	case *PinFailed:
		return TypePinFailed
	case *DeviceEnrolled:
		return TypeDeviceEnrolled
	case *Blocked:
		return TypeAccountBlocked
	case *EnrollmentsRemoved:
		return TypeEnrollmentsRemoved
	case *OTPIssued:
		return TypeOTPIssued
	}
	panic(fmt.Sprintf("enrollment: no type name for %T", payload))
}
