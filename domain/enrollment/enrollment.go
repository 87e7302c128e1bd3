package enrollment

import (
	"crypto/subtle"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/domain/otp"
)

// Purpose of an SMS code: a closed set.
type Purpose struct{ s string }

var (
	PurposeCertification = Purpose{"phoneNumberCertification"} // proves a phone number (add, modify, shortcut)
	PurposeEnrollment    = Purpose{"enrollment"}               // proves the trusted phone (enroll, reset PIN)
)

// PurposeFromString parses the SDK's `type` of pims.authentication.smscode get.
func PurposeFromString(s string) (Purpose, error) {
	for _, p := range []Purpose{PurposeCertification, PurposeEnrollment} {
		if p.s == s {
			return p, nil
		}
	}
	return Purpose{}, domain.Invalidf("invalid_parameter", "type must be phoneNumberCertification or enrollment")
}

func (p Purpose) String() string { return p.s }
func (p Purpose) IsZero() bool   { return p.s == "" }

// BlockState is the answer of isAccountBlocked: a closed set.
type BlockState struct{ s string }

var (
	NotBlocked     = BlockState{"NotBlocked"}
	AccountBlocked = BlockState{"AccountBlocked"} // too many devices
	PINBlocked     = BlockState{"PINBlocked"}     // too many wrong PINs
)

func BlockStateFromString(s string) (BlockState, error) {
	for _, b := range []BlockState{NotBlocked, AccountBlocked, PINBlocked} {
		if b.s == s {
			return b, nil
		}
	}
	return BlockState{}, fmt.Errorf("unknown block state %q", s)
}

func (b BlockState) String() string { return b.s }
func (b BlockState) IsZero() bool   { return b.s == "" }

// Policy holds the security rules; every value can be configured.
type Policy struct {
	CodeTTL              time.Duration // an SMS code's life (5 min)
	CodeMaxFailures      int           // wrong tries that burn a code (5)
	CodesPerWindow       int           // codes per phone and purpose within CodeWindow (5)
	CodeWindow           time.Duration // (1 h)
	PinMaxFailures       int           // wrong PINs in a row that block the account (3)
	EnrollmentCodeWindow time.Duration // how long a verified enrollment code allows enroll (10 min)
	MaxDevices           int           // enrolled devices per account (5)
	OTPTTL               time.Duration // life of a remote-command token (5 min)
	SecretParams         account.PasswordParams
}

// DefaultPolicy is the policy of the seed's SDK.
var DefaultPolicy = Policy{
	CodeTTL: 5 * time.Minute, CodeMaxFailures: 5, CodesPerWindow: 5, CodeWindow: time.Hour,
	PinMaxFailures: 3, EnrollmentCodeWindow: 10 * time.Minute, MaxDevices: 5, OTPTTL: 5 * time.Minute,
	SecretParams: account.DefaultPasswordParams,
}

// Errors. Codes are mapped to the SDK's numeric codes in api/.
var (
	ErrBlocked           = domain.New(domain.KindTooManyAttempts, "account_blocked", "the account is blocked: remove all enrollments to start again")
	ErrInvalidPin        = domain.Invalidf("invalid_pin", "a PIN is 4 to 8 digits")
	ErrInvalidPhone      = domain.Invalidf("invalid_phone_number", "a phone number is 6 to 15 digits, optionally after a +")
	ErrPhoneRegistered   = domain.New(domain.KindConflict, "phone_already_registered", "the account already has a trusted phone number")
	ErrNoPhone           = domain.New(domain.KindConflict, "no_phone_number", "the account has no trusted phone number")
	ErrPhoneMismatch     = domain.Invalidf("phone_mismatch", "the phone number is not the account's trusted phone number")
	ErrEnrollmentNeeded  = domain.New(domain.KindForbidden, "enrollment_required", "this device must be enrolled first")
	ErrEnrollmentSmsLack = domain.New(domain.KindForbidden, "enrollment_sms_missing", "verify an enrollment SMS code on this device first (valid 10 minutes)")
	ErrCodeMissing       = domain.New(domain.KindConflict, "sms_code_missing", "no SMS code of this kind was requested on this device")
	ErrCodeExpired       = domain.Invalidf("sms_code_expired", "the SMS code has expired: request a new one")
	ErrCodeBurnt         = domain.Invalidf("sms_code_burnt", "too many wrong tries: request a new SMS code")
	ErrCodeWrong         = domain.Invalidf("sms_code_wrong", "wrong SMS code") // reported with the attempts left
	ErrCodeRateLimited   = domain.New(domain.KindTooManyAttempts, "sms_rate_limited", "too many SMS codes for this phone: try again later")
)

// smsCodeErrors are what the rules of one-time codes report for SMS codes;
// their codes are the SDK's (api/ maps them), so they are spelled out here
// rather than derived from a prefix.
var smsCodeErrors = otp.Errors{Missing: ErrCodeMissing, Expired: ErrCodeExpired, Burnt: ErrCodeBurnt,
	Wrong: ErrCodeWrong, RateLimited: ErrCodeRateLimited}

// codeRules are the rules of SMS codes under this policy. Policy keeps its
// own flat fields so that it stays a comparable value that cmd/ configures.
func (p Policy) codeRules() otp.Rules { return p.OneTimeCodes(smsCodeErrors) }

// OneTimeCodes are this policy's rules for one-time codes, answering with
// errs: the car-key check follows the rules of SMS codes.
func (p Policy) OneTimeCodes(errs otp.Errors) otp.Rules {
	return otp.Rules{TTL: p.CodeTTL, MaxFailures: p.CodeMaxFailures, PerWindow: p.CodesPerWindow, Window: p.CodeWindow,
		Params: p.SecretParams, Errors: errs}
}

func wrongSecret(code, what string, left int) error {
	return &domain.Error{Kind: domain.KindInvalid, Code: code, Message: fmt.Sprintf("wrong %s: %d attempts left", what, left), AttemptsLeft: &left}
}

func blocked(state BlockState) error {
	e := *ErrBlocked
	e.Message = fmt.Sprintf("the account is blocked (%s): remove all enrollments to start again", state)
	return &e
}

// NormalizePhone strips spaces, dots and dashes and checks what is left.
func NormalizePhone(raw string) (string, error) {
	s := strings.NewReplacer(" ", "", ".", "", "-", "", "(", "", ")", "").Replace(strings.TrimSpace(raw))
	digits := strings.TrimPrefix(s, "+")
	if len(digits) < 6 || len(digits) > 15 {
		return "", ErrInvalidPhone
	}
	for _, r := range digits {
		if r < '0' || r > '9' {
			return "", ErrInvalidPhone
		}
	}
	return s, nil
}

// CheckPin checks a PIN's form: 4 to 8 digits.
func CheckPin(pin string) error {
	if len(pin) < 4 || len(pin) > 8 {
		return ErrInvalidPin
	}
	for _, r := range pin {
		if r < '0' || r > '9' {
			return ErrInvalidPin
		}
	}
	return nil
}

// Enrollment is the state folded from an enrollment stream.
type Enrollment struct {
	phone       string
	pinHash     string
	pinFailures int
	block       BlockState
	devices     map[string]time.Time
	codes       otp.Codes            // SMS codes: the phone is their target
	verified    map[string]time.Time // device → when it verified an enrollment code
}

// New returns the state of an account that never enrolled.
func New() *Enrollment {
	return &Enrollment{block: NotBlocked, devices: map[string]time.Time{}, verified: map[string]time.Time{}}
}

// Apply folds one event that happened at `at`.
func (e *Enrollment) Apply(event any, at time.Time) {
	switch ev := event.(type) {
	case *SmsCodeSent:
		e.codes.ApplyIssued(otp.Issued{ID: ev.CodeID, Purpose: ev.Purpose, Target: ev.Phone, Device: ev.DeviceID,
			Hash: ev.CodeHash, ExpiresAt: ev.ExpiresAt}, at)
	case *SmsCodeFailed:
		e.codes.ApplyFailed(otp.Failed{ID: ev.CodeID, Failures: ev.Failures, Burnt: ev.Burnt})
	case *SmsCodeUsed:
		e.codes.ApplyUsed(otp.Used{ID: ev.CodeID})
	case *PhoneRegistered:
		e.phone = ev.Phone
	case *PhoneModified:
		e.phone = ev.Phone
	case *EnrollmentCodeVerified:
		e.verified[ev.DeviceID] = at
	case *PinSet:
		e.pinHash, e.pinFailures = ev.PinHash, 0
	case *PinFailed:
		e.pinFailures = ev.FailuresInRow
	case *DeviceEnrolled:
		e.devices[ev.DeviceID] = at
	case *Blocked:
		e.block, _ = BlockStateFromString(ev.State)
	case *EnrollmentsRemoved:
		e.pinHash, e.pinFailures, e.block = "", 0, NotBlocked
		e.devices, e.verified = map[string]time.Time{}, map[string]time.Time{}
	}
}

// Phone is the trusted phone number ("" when none).
func (e *Enrollment) Phone() string { return e.phone }

// Block is the answer of isAccountBlocked.
func (e *Enrollment) Block() BlockState { return e.block }

// DeviceEnrolled reports whether a device is enrolled.
func (e *Enrollment) DeviceEnrolled(device string) bool { _, ok := e.devices[device]; return ok }

// HasPin reports whether the account has a PIN.
func (e *Enrollment) HasPin() bool { return e.pinHash != "" }

// Devices lists the enrolled devices, sorted.
func (e *Enrollment) Devices() []string {
	out := make([]string, 0, len(e.devices))
	for d := range e.devices {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// RequestCode decides sending a code of a purpose to a phone for a device.
// code is the clear code the caller generated; only its hash is recorded.
func (e *Enrollment) RequestCode(p Policy, purpose Purpose, phone, device, code string, codeID uuid.UUID, now time.Time) ([]any, error) {
	if purpose == PurposeEnrollment {
		if e.phone == "" {
			return nil, ErrNoPhone
		}
		if phone != "" && phone != e.phone {
			return nil, ErrPhoneMismatch
		}
		phone = e.phone
	} else if phone == "" {
		return nil, domain.Invalidf("invalid_parameter", "phoneNumber is required")
	}
	issued, err := e.codes.Issue(p.codeRules(), codeID, purpose.s, phone, device, code, now)
	if err != nil {
		return nil, err
	}
	return []any{&SmsCodeSent{CodeID: issued.ID, Purpose: issued.Purpose, Phone: issued.Target, DeviceID: issued.Device,
		CodeHash: issued.Hash, ExpiresAt: issued.ExpiresAt}}, nil
}

// verifyCode checks a code against the latest code of that purpose (and
// phone, when given) requested on this device, and returns the id of the
// code it spent. A wrong code is recorded (the events are returned with the
// error) and burns the code after too many.
func (e *Enrollment) verifyCode(p Policy, purpose Purpose, phone, device, code string, now time.Time) (uuid.UUID, []any, error) {
	used, failed, err := e.codes.Verify(p.codeRules(), purpose.s, phone, device, code, now)
	switch {
	case failed != nil:
		return uuid.Nil, []any{&SmsCodeFailed{CodeID: failed.ID, Failures: failed.Failures, Burnt: failed.Burnt}}, err
	case err != nil:
		return uuid.Nil, nil, err
	}
	return used.ID, []any{&SmsCodeUsed{CodeID: used.ID}}, nil
}

// AddPhone registers the trusted phone (full method, step 4·2).
func (e *Enrollment) AddPhone(p Policy, phone, device, code string, now time.Time) ([]any, error) {
	if e.phone != "" {
		return nil, ErrPhoneRegistered
	}
	_, evs, err := e.verifyCode(p, PurposeCertification, phone, device, code, now)
	if err != nil {
		return evs, err
	}
	return append(evs, &PhoneRegistered{Phone: phone, Via: "addPhoneNumber"}), nil
}

// ModifyPhone replaces the trusted phone (D); an enrolled device asks.
func (e *Enrollment) ModifyPhone(p Policy, phone, device, code string, now time.Time) ([]any, error) {
	if e.phone == "" {
		return nil, ErrNoPhone
	}
	if !e.DeviceEnrolled(device) {
		return nil, ErrEnrollmentNeeded
	}
	_, evs, err := e.verifyCode(p, PurposeCertification, phone, device, code, now)
	if err != nil {
		return evs, err
	}
	return append(evs, &PhoneModified{Phone: phone}), nil
}

// VerifyEnrollmentCode is step 6: the device proves the trusted phone, and
// learns whether the account already has a PIN (AlreadyEnrolled) or must
// register one (NotEnrolled).
func (e *Enrollment) VerifyEnrollmentCode(p Policy, device, code string, now time.Time) (evs []any, alreadyEnrolled bool, err error) {
	if e.block != NotBlocked {
		return nil, false, blocked(e.block)
	}
	if e.phone == "" {
		return nil, false, ErrNoPhone
	}
	codeID, evs, err := e.verifyCode(p, PurposeEnrollment, "", device, code, now)
	if err != nil {
		return evs, false, err
	}
	return append(evs, &EnrollmentCodeVerified{CodeID: codeID, DeviceID: device}), e.HasPin(), nil
}

// EnrollWithPhone is the shortcut (step 4·1): phone, PIN and device at once.
func (e *Enrollment) EnrollWithPhone(p Policy, phone, device, code, pin string, now time.Time) ([]any, error) {
	if e.block != NotBlocked {
		return nil, blocked(e.block)
	}
	if e.phone != "" {
		return nil, ErrPhoneRegistered
	}
	if err := CheckPin(pin); err != nil {
		return nil, err
	}
	_, evs, err := e.verifyCode(p, PurposeCertification, phone, device, code, now)
	if err != nil {
		return evs, err
	}
	evs = append(evs, &PhoneRegistered{Phone: phone, Via: "enrollWithPhoneNumber"},
		&PinSet{PinHash: account.HashPassword(pin, p.SecretParams), Reason: "enroll", DeviceID: device})
	return e.enrollDevice(p, evs, device)
}

// enrollDevice adds the device, or blocks the account when it would exceed
// the device limit.
func (e *Enrollment) enrollDevice(p Policy, evs []any, device string) ([]any, error) {
	if e.DeviceEnrolled(device) {
		return evs, nil
	}
	if len(e.devices) >= p.MaxDevices {
		return append(evs, &Blocked{State: AccountBlocked.s, DeviceID: device}), blocked(AccountBlocked)
	}
	return append(evs, &DeviceEnrolled{DeviceID: device}), nil
}

// PinCheck is the verdict on a presented PIN, computed once (argon2id is
// slow) and reused when a command retries after a concurrent append.
type PinCheck struct {
	Hash string // the PIN hash the verdict was taken against
	OK   bool
}

// CheckPinAgainst verifies pin against the current PIN, reusing a previous
// verdict taken against the same hash.
func (e *Enrollment) CheckPinAgainst(pin string, prev *PinCheck) PinCheck {
	if prev != nil && subtle.ConstantTimeCompare([]byte(prev.Hash), []byte(e.pinHash)) == 1 {
		return *prev
	}
	return PinCheck{Hash: e.pinHash, OK: account.VerifyPassword(pin, e.pinHash)}
}

// wrongPin records a wrong PIN and blocks the account on the last allowed.
func (e *Enrollment) wrongPin(p Policy, device string) ([]any, error) {
	failed := &PinFailed{DeviceID: device, FailuresInRow: e.pinFailures + 1}
	if failed.FailuresInRow >= p.PinMaxFailures {
		return []any{failed, &Blocked{State: PINBlocked.s, DeviceID: device}}, blocked(PINBlocked)
	}
	return []any{failed}, wrongSecret("pin_wrong", "PIN", p.PinMaxFailures-failed.FailuresInRow)
}

// Enroll is steps 7 and 8: register a first PIN, or check the existing one,
// and enroll the device. It needs an enrollment code verified on this device
// within the policy's window.
func (e *Enrollment) Enroll(p Policy, device, pin string, check PinCheck, now time.Time) ([]any, error) {
	if e.block != NotBlocked {
		return nil, blocked(e.block)
	}
	if err := CheckPin(pin); err != nil {
		return nil, err
	}
	at, ok := e.verified[device]
	if !ok || now.Sub(at) > p.EnrollmentCodeWindow {
		return nil, ErrEnrollmentSmsLack
	}
	if !e.HasPin() {
		return e.enrollDevice(p, []any{&PinSet{PinHash: account.HashPassword(pin, p.SecretParams), Reason: "enroll", DeviceID: device}}, device)
	}
	if !check.OK {
		return e.wrongPin(p, device)
	}
	var evs []any
	if e.pinFailures > 0 {
		evs = append(evs, &PinFailed{DeviceID: device, FailuresInRow: 0})
	}
	return e.enrollDevice(p, evs, device)
}

// RemoveAll is A: every device de-enrolled, PIN and block cleared. It
// changes nothing (and appends nothing) when there is nothing to remove.
func (e *Enrollment) RemoveAll() []any {
	if len(e.devices) == 0 && e.pinHash == "" && e.block == NotBlocked && len(e.verified) == 0 {
		return nil
	}
	return []any{&EnrollmentsRemoved{Devices: e.Devices()}}
}

// ResetPin is B: a new PIN, proven by a fresh enrollment code, from an
// enrolled device.
func (e *Enrollment) ResetPin(p Policy, device, code, pin string, now time.Time) ([]any, error) {
	if e.block != NotBlocked {
		return nil, blocked(e.block)
	}
	if !e.DeviceEnrolled(device) {
		return nil, ErrEnrollmentNeeded
	}
	if err := CheckPin(pin); err != nil {
		return nil, err
	}
	_, evs, err := e.verifyCode(p, PurposeEnrollment, "", device, code, now)
	if err != nil {
		return evs, err
	}
	return append(evs, &PinSet{PinHash: account.HashPassword(pin, p.SecretParams), Reason: "reset", DeviceID: device}), nil
}

// UpdatePin is C: old and new PIN from an enrolled device; a wrong old PIN
// counts as a wrong PIN.
func (e *Enrollment) UpdatePin(p Policy, device, newPin string, oldCheck PinCheck) ([]any, error) {
	if e.block != NotBlocked {
		return nil, blocked(e.block)
	}
	if !e.DeviceEnrolled(device) {
		return nil, ErrEnrollmentNeeded
	}
	if err := CheckPin(newPin); err != nil {
		return nil, err
	}
	if !oldCheck.OK {
		return e.wrongPin(p, device)
	}
	return []any{&PinSet{PinHash: account.HashPassword(newPin, p.SecretParams), Reason: "update", DeviceID: device}}, nil
}

// IssueOTP is pims.authentication.otp withPIN: an enrolled device proves
// the PIN and gets a one-time token for remote commands. A wrong PIN counts
// like any other.
func (e *Enrollment) IssueOTP(p Policy, device string, check PinCheck, otpID uuid.UUID, tokenHash string, now time.Time) ([]any, error) {
	if e.block != NotBlocked {
		return nil, blocked(e.block)
	}
	if !e.DeviceEnrolled(device) || !e.HasPin() {
		return nil, ErrEnrollmentNeeded
	}
	if !check.OK {
		return e.wrongPin(p, device)
	}
	var evs []any
	if e.pinFailures > 0 {
		evs = append(evs, &PinFailed{DeviceID: device, FailuresInRow: 0})
	}
	return append(evs, &OTPIssued{OTPID: otpID, DeviceID: device, TokenHash: tokenHash, ExpiresAt: now.Add(p.OTPTTL)}), nil
}
