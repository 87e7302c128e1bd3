package enrollment_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/enrollment"
)

var (
	t0     = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)
	policy = func() enrollment.Policy {
		p := enrollment.DefaultPolicy
		p.SecretParams = account.PasswordParams{Memory: 1024, Time: 1, Threads: 1}
		return p
	}()
)

// history is a Given: events with the times they happened at.
type history struct {
	e   *enrollment.Enrollment
	now time.Time
}

func given() *history { return &history{e: enrollment.New(), now: t0} }

func (h *history) at(d time.Duration) *history { h.now = t0.Add(d); return h }

func (h *history) apply(evs ...any) *history {
	for _, ev := range evs {
		h.e.Apply(ev, h.now)
	}
	return h
}

// then applies what a decision returned (failures are facts too) and
// checks the error code.
func (h *history) then(t *testing.T, evs []any, err error, code string) *history {
	t.Helper()
	h.apply(evs...)
	var de *domain.Error
	switch {
	case code == "" && err != nil:
		t.Fatalf("unexpected error %v", err)
	case code != "" && (!errors.As(err, &de) || de.Code != code):
		t.Fatalf("got %v, want %s", err, code)
	}
	return h
}

func (h *history) sendCode(t *testing.T, purpose enrollment.Purpose, phone, device, code string) *history {
	t.Helper()
	evs, err := h.e.RequestCode(policy, purpose, phone, device, code, uuid.New(), h.now)
	return h.then(t, evs, err, "")
}

// enrolled: phone 0600000000, PIN 1234, device d1.
func enrolled(t *testing.T) *history {
	h := given().sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "111111")
	evs, err := h.e.EnrollWithPhone(policy, "0600000000", "d1", "111111", "1234", h.now)
	return h.then(t, evs, err, "")
}

func TestSmsCodeIsSingleUse(t *testing.T) {
	h := given().sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456")
	evs, err := h.e.AddPhone(policy, "0600000000", "d1", "123456", h.now)
	h.then(t, evs, err, "")
	evs, err = h.e.ModifyPhone(policy, "0600000000", "d1", "123456", h.now)
	h.then(t, evs, err, "enrollment_required")
}

func TestSmsCodeExpiresAfterItsTTL(t *testing.T) {
	h := given().sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456").at(policy.CodeTTL)
	evs, err := h.e.AddPhone(policy, "0600000000", "d1", "123456", h.now)
	h.then(t, evs, err, "sms_code_expired")
}

func TestSmsCodeIsBurntAfterFiveWrongTries(t *testing.T) {
	h := given().sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456")
	for i := 1; i < policy.CodeMaxFailures; i++ {
		evs, err := h.e.AddPhone(policy, "0600000000", "d1", "000000", h.now)
		h.then(t, evs, err, "sms_code_wrong")
		var de *domain.Error
		errors.As(err, &de)
		if *de.AttemptsLeft != policy.CodeMaxFailures-i {
			t.Fatalf("attempts left %d after %d wrong codes", *de.AttemptsLeft, i)
		}
	}
	evs, err := h.e.AddPhone(policy, "0600000000", "d1", "000000", h.now)
	h.then(t, evs, err, "sms_code_burnt")
	evs, err = h.e.AddPhone(policy, "0600000000", "d1", "123456", h.now) // the right code, too late
	h.then(t, evs, err, "sms_code_burnt")
}

func TestSmsCodeIsBoundToTheDeviceThatAskedForIt(t *testing.T) {
	h := given().sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456")
	evs, err := h.e.AddPhone(policy, "0600000000", "d2", "123456", h.now)
	h.then(t, evs, err, "sms_code_missing")
}

func TestSmsCodesAreRateLimitedPerPhoneAndPurpose(t *testing.T) {
	h := given()
	for i := range policy.CodesPerWindow {
		h.at(time.Duration(i)*time.Minute).sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456")
	}
	evs, err := h.e.RequestCode(policy, enrollment.PurposeCertification, "0600000000", "d1", "123456", uuid.New(), h.now)
	h.then(t, evs, err, "sms_rate_limited")
	var de *domain.Error
	if errors.As(err, &de); de.RetryAfter <= 0 || de.RetryAfter > policy.CodeWindow {
		t.Fatalf("retry after %s", de.RetryAfter)
	}
	h.sendCode(t, enrollment.PurposeCertification, "0611111111", "d1", "123456") // another phone
	h.at(policy.CodeWindow).sendCode(t, enrollment.PurposeCertification, "0600000000", "d1", "123456")
}

func TestPinIsFourToEightDigits(t *testing.T) {
	for pin, ok := range map[string]bool{"123": false, "1234": true, "12345678": true, "123456789": false, "12a4": false, "": false} {
		if err := enrollment.CheckPin(pin); (err == nil) != ok {
			t.Fatalf("PIN %q: %v", pin, err)
		}
	}
}

func TestWrongPinsCountThenBlockUntilRemoveAll(t *testing.T) {
	h := enrolled(t).sendCode(t, enrollment.PurposeEnrollment, "", "d2", "222222")
	evs, _, err := h.e.VerifyEnrollmentCode(policy, "d2", "222222", h.now)
	h.then(t, evs, err, "")
	wrong := h.e.CheckPinAgainst("9999", nil)
	for left := policy.PinMaxFailures - 1; left > 0; left-- {
		evs, err := h.e.Enroll(policy, "d2", "9999", wrong, h.now)
		h.then(t, evs, err, "pin_wrong")
		var de *domain.Error
		if errors.As(err, &de); *de.AttemptsLeft != left {
			t.Fatalf("attempts left %d, want %d", *de.AttemptsLeft, left)
		}
	}
	evs, err = h.e.Enroll(policy, "d2", "9999", wrong, h.now)
	h.then(t, evs, err, "account_blocked")
	if h.e.Block() != enrollment.PINBlocked {
		t.Fatalf("block %s", h.e.Block())
	}
	right := h.e.CheckPinAgainst("1234", nil)
	evs, err = h.e.Enroll(policy, "d2", "1234", right, h.now)
	h.then(t, evs, err, "account_blocked")
	evs, err = h.e.UpdatePin(policy, "d1", "5678", right)
	h.then(t, evs, err, "account_blocked")

	h.apply(h.e.RemoveAll()...)
	if h.e.Block() != enrollment.NotBlocked || h.e.HasPin() || h.e.DeviceEnrolled("d1") || h.e.Phone() != "0600000000" {
		t.Fatal("remove all enrollments left a block, a PIN or a device, or removed the phone")
	}
	if len(h.e.RemoveAll()) != 0 {
		t.Fatal("removing nothing appends something")
	}
}

func TestRightPinResetsTheCount(t *testing.T) {
	h := enrolled(t)
	wrong, right := h.e.CheckPinAgainst("9999", nil), h.e.CheckPinAgainst("1234", nil)
	evs, err := h.e.UpdatePin(policy, "d1", "5678", wrong)
	h.then(t, evs, err, "pin_wrong")
	h.sendCode(t, enrollment.PurposeEnrollment, "", "d3", "333333")
	evs, _, err = h.e.VerifyEnrollmentCode(policy, "d3", "333333", h.now)
	h.then(t, evs, err, "")
	evs, err = h.e.Enroll(policy, "d3", "1234", right, h.now)
	h.then(t, evs, err, "")
	for range policy.PinMaxFailures - 1 {
		evs, err = h.e.UpdatePin(policy, "d1", "5678", wrong)
		h.then(t, evs, err, "pin_wrong") // the count restarted at the right PIN
	}
}

func TestEnrollNeedsAnEnrollmentCodeVerifiedWithinTenMinutes(t *testing.T) {
	h := enrolled(t).sendCode(t, enrollment.PurposeEnrollment, "", "d2", "222222")
	right := h.e.CheckPinAgainst("1234", nil)
	evs, err := h.e.Enroll(policy, "d2", "1234", right, h.now)
	h.then(t, evs, err, "enrollment_sms_missing")
	evs, _, err = h.e.VerifyEnrollmentCode(policy, "d2", "222222", h.now)
	h.then(t, evs, err, "")
	h.at(policy.EnrollmentCodeWindow + time.Second)
	evs, err = h.e.Enroll(policy, "d2", "1234", right, h.now)
	h.then(t, evs, err, "enrollment_sms_missing")
}

func TestDeviceBeyondTheLimitBlocksTheAccount(t *testing.T) {
	p := policy
	p.MaxDevices = 2
	h := enrolled(t) // d1
	right := h.e.CheckPinAgainst("1234", nil)
	for i, device := range []string{"d2", "d3"} {
		h.sendCode(t, enrollment.PurposeEnrollment, "", device, "222222")
		evs, _, err := h.e.VerifyEnrollmentCode(p, device, "222222", h.now)
		h.then(t, evs, err, "")
		evs, err = h.e.Enroll(p, device, "1234", right, h.now)
		if i == 0 {
			h.then(t, evs, err, "")
		} else {
			h.then(t, evs, err, "account_blocked")
		}
	}
	if h.e.Block() != enrollment.AccountBlocked || h.e.DeviceEnrolled("d3") {
		t.Fatalf("block %s; d3 enrolled %v", h.e.Block(), h.e.DeviceEnrolled("d3"))
	}
}

func TestShortcutRefusedWhenAPhoneIsRegistered(t *testing.T) {
	h := enrolled(t).sendCode(t, enrollment.PurposeCertification, "0611111111", "d1", "444444")
	evs, err := h.e.EnrollWithPhone(policy, "0611111111", "d1", "444444", "1234", h.now)
	h.then(t, evs, err, "phone_already_registered")
}

func TestPhoneNumbers(t *testing.T) {
	for raw, want := range map[string]string{"06 12 34 56 78": "0612345678", "+33.6.12.34.56.78": "+33612345678", "12ab": "", "123": "", "+1234567890123456": ""} {
		got, err := enrollment.NormalizePhone(raw)
		if got != want || (want == "") != (err != nil) {
			t.Fatalf("%q → %q, %v; want %q", raw, got, err, want)
		}
	}
}
