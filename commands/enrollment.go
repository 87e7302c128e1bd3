package commands

import (
	"context"
	"crypto/rand"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
)

// The enrollment commands of the mobile SDK (seed 001). Each one decides
// on the account's whole enrollment stream and appends with the revision it
// read; when a parallel request appended first, it reads again and decides
// again, so twelve wrong PINs sent at the same instant count as twelve.

var enrollmentArea = area{decode: enrollment.Decode, typeOf: enrollment.TypeOf}

func (h *Handler) decideEnrollment(ctx context.Context, accountID uuid.UUID, decision func(e *enrollment.Enrollment, now time.Time) ([]any, error)) error {
	return decide(ctx, h, enrollment.Stream(accountID), enrollmentArea, enrollment.New, decision)
}

// newCode draws a 6-digit code from the system's CSPRNG.
func newCode() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1_000_000))
	if err != nil {
		panic(err) // the system's CSPRNG never fails on Linux
	}
	return fmt.Sprintf("%06d", n.Int64())
}

// RequestSmsCode sends a code of a purpose (phoneNumberCertification to
// the given number, enrollment to the trusted phone) for this device.
func (h *Handler) RequestSmsCode(ctx context.Context, accountID uuid.UUID, device, purpose, phone string) error {
	p, err := enrollment.PurposeFromString(purpose)
	if err != nil {
		return err
	}
	if phone != "" {
		if phone, err = enrollment.NormalizePhone(phone); err != nil {
			return err
		}
	}
	code := newCode()
	var sent *enrollment.SmsCodeSent
	err = h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		evs, err := e.RequestCode(h.Enrollment, p, phone, device, code, h.newID(ctx, "sms-code"), now)
		if err == nil {
			sent = evs[0].(*enrollment.SmsCodeSent)
		}
		return evs, err
	})
	if err != nil {
		return err
	}
	h.Outbox.Send(ctx, Message{
		Channel: "sms", To: sent.Phone, Code: code, CreatedAt: h.Clock.Now(), Account: accountID,
		Body: fmt.Sprintf("Your code is %s. It expires in %d minutes. Never share it.", code, int(h.Enrollment.CodeTTL.Minutes())),
	})
	return nil
}

// AddPhoneNumber registers the trusted phone with a certification code.
func (h *Handler) AddPhoneNumber(ctx context.Context, accountID uuid.UUID, device, phone, code string) error {
	phone, err := enrollment.NormalizePhone(phone)
	if err != nil {
		return err
	}
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		return e.AddPhone(h.Enrollment, phone, device, code, now)
	})
}

// ModifyPhoneNumber replaces the trusted phone with a certification code
// sent to the new number.
func (h *Handler) ModifyPhoneNumber(ctx context.Context, accountID uuid.UUID, device, phone, code string) error {
	phone, err := enrollment.NormalizePhone(phone)
	if err != nil {
		return err
	}
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		return e.ModifyPhone(h.Enrollment, phone, device, code, now)
	})
}

// VerifyEnrollmentCode is step 6; it answers whether the account already
// has a PIN.
func (h *Handler) VerifyEnrollmentCode(ctx context.Context, accountID uuid.UUID, device, code string) (alreadyEnrolled bool, err error) {
	err = h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		evs, already, err := e.VerifyEnrollmentCode(h.Enrollment, device, code, now)
		alreadyEnrolled = already
		return evs, err
	})
	return alreadyEnrolled, err
}

// EnrollWithPhoneNumber is the shortcut: phone, PIN and device at once.
func (h *Handler) EnrollWithPhoneNumber(ctx context.Context, accountID uuid.UUID, device, phone, code, pin string) error {
	phone, err := enrollment.NormalizePhone(phone)
	if err != nil {
		return err
	}
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		return e.EnrollWithPhone(h.Enrollment, phone, device, code, pin, now)
	})
}

// Enroll is steps 7 and 8: a first PIN, or the existing one checked.
func (h *Handler) Enroll(ctx context.Context, accountID uuid.UUID, device, pin string) error {
	var check *enrollment.PinCheck
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		c := e.CheckPinAgainst(pin, check)
		check = &c
		return e.Enroll(h.Enrollment, device, pin, c, now)
	})
}

// RemoveAllEnrollments is A.
func (h *Handler) RemoveAllEnrollments(ctx context.Context, accountID uuid.UUID) error {
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, _ time.Time) ([]any, error) {
		return e.RemoveAll(), nil
	})
}

// ResetPin is B.
func (h *Handler) ResetPin(ctx context.Context, accountID uuid.UUID, device, code, pin string) error {
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		return e.ResetPin(h.Enrollment, device, code, pin, now)
	})
}

// UpdatePin is C.
func (h *Handler) UpdatePin(ctx context.Context, accountID uuid.UUID, device, oldPin, newPin string) error {
	var check *enrollment.PinCheck
	return h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, _ time.Time) ([]any, error) {
		c := e.CheckPinAgainst(oldPin, check)
		check = &c
		return e.UpdatePin(h.Enrollment, device, newPin, c)
	})
}

// IssueOTP is pims.authentication.otp withPIN: the PIN proven on an
// enrolled device buys a one-time token for remote commands.
func (h *Handler) IssueOTP(ctx context.Context, accountID uuid.UUID, device, pin string) (token string, expiresAt time.Time, err error) {
	if err := enrollment.CheckPin(pin); err != nil {
		return "", time.Time{}, err
	}
	token = account.NewSecret()
	var check *enrollment.PinCheck
	err = h.decideEnrollment(ctx, accountID, func(e *enrollment.Enrollment, now time.Time) ([]any, error) {
		c := e.CheckPinAgainst(pin, check)
		check = &c
		expiresAt = now.Add(h.Enrollment.OTPTTL)
		return e.IssueOTP(h.Enrollment, device, c, h.newID(ctx, "otp"), account.HashToken(token), now)
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return token, expiresAt, nil
}
