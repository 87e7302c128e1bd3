package account

import (
	"crypto/subtle"
	"net/mail"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
)

// Sign-in attempts: after MaxFailuresInRow wrong passwords in a row, sign-in
// is refused for LockoutDuration. A success resets the count.
const (
	MaxFailuresInRow = 5
	LockoutDuration  = 15 * time.Minute
	ActivationTTL    = 24 * time.Hour
	SessionTTL       = 30 * 24 * time.Hour
)

// Errors of this area. The codes are the problem+json `code` values.
var (
	ErrInvalidEmail      = domain.New(domain.KindInvalid, "invalid_email", "email must be a plain address such as name@example.com")
	ErrWeakPassword      = domain.New(domain.KindInvalid, "weak_password", "password must be 10 to 128 characters and mix at least three of: lower case, upper case, digits, symbols (or be 16+ characters)")
	ErrEmailTaken        = domain.New(domain.KindConflict, "email_taken", "an account with this email already exists")
	ErrInvalidDeviceID   = domain.New(domain.KindInvalid, "invalid_device_id", "deviceId must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'")
	ErrBadCredentials    = domain.New(domain.KindUnauthenticated, "invalid_credentials", "email or password is wrong")
	ErrNotActivated      = domain.New(domain.KindForbidden, "account_not_activated", "the account is not activated yet: follow the link in the activation email")
	ErrInvalidActivation = domain.New(domain.KindInvalid, "invalid_activation_token", "the activation token is not valid")
	ErrActivationExpired = domain.New(domain.KindInvalid, "activation_token_expired", "the activation token has expired")
	ErrAlreadyActivated  = domain.New(domain.KindConflict, "account_already_activated", "the account is already activated")
	ErrConcurrentSignIn  = domain.New(domain.KindConflict, "concurrent_sign_in", "another sign-in of this account happened at the same moment; try again")
	ErrNameTooLong       = domain.Invalidf("invalid_field", "names are at most 200 characters")
	ErrInvalidSession    = domain.New(domain.KindUnauthenticated, "invalid_session", "the session token is missing, unknown, expired or closed")
)

// NormalizeEmail validates an address and returns the form that keys
// uniqueness: trimmed and lower-cased.
func NormalizeEmail(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if len(s) == 0 || len(s) > 254 {
		return "", ErrInvalidEmail
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return "", ErrInvalidEmail
	}
	at := strings.LastIndexByte(s, '@')
	if at < 1 || !strings.Contains(s[at+1:], ".") {
		return "", ErrInvalidEmail
	}
	return strings.ToLower(s), nil
}

// CheckPassword enforces the password policy: long enough to resist offline
// guessing, short enough to bound hashing cost.
func CheckPassword(pw, email string) error {
	n := len([]rune(pw))
	if n < 10 || n > 128 || strings.EqualFold(pw, email) {
		return ErrWeakPassword
	}
	var lower, upper, digit, other bool
	distinct := map[rune]bool{}
	for _, r := range pw {
		distinct[r] = true
		switch {
		case unicode.IsLower(r):
			lower = true
		case unicode.IsUpper(r):
			upper = true
		case unicode.IsDigit(r):
			digit = true
		default:
			other = true
		}
	}
	classes := 0
	for _, b := range []bool{lower, upper, digit, other} {
		if b {
			classes++
		}
	}
	if len(distinct) < 5 || (classes < 3 && n < 16) {
		return ErrWeakPassword
	}
	return nil
}

// CheckDeviceID validates the identifier the SDK sends for a device.
func CheckDeviceID(id string) error {
	if len(id) == 0 || len(id) > 128 {
		return ErrInvalidDeviceID
	}
	for _, r := range id {
		if !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_.:", r))) {
			return ErrInvalidDeviceID
		}
	}
	return nil
}

// Account is the state folded from an account stream.
type Account struct {
	id                   uuid.UUID
	email                string
	passwordHash         string
	activationSecretHash string
	activationExpiresAt  time.Time
	activated            bool
	failuresInRow        int
	lockedUntil          time.Time
	provisionedBy        uuid.UUID
	noticeGiven          bool
	erased               bool
}

// Apply folds one event into the state.
func (a *Account) Apply(event any) {
	switch e := event.(type) {
	case *Registered:
		a.id, a.email, a.passwordHash = e.AccountID, e.Email, e.PasswordHash
		a.activationSecretHash, a.activationExpiresAt = e.ActivationSecretHash, e.ActivationExpiresAt
	case *Activated:
		a.activated = true
	case *SignedIn:
		a.failuresInRow, a.lockedUntil = 0, time.Time{}
	case *Provisioned:
		a.provisionedBy = e.ClientID
	case *NoticeGiven:
		a.noticeGiven = true
	case *Erased:
		a.erased, a.email = true, ""
	case *SignInFailed:
		a.failuresInRow = e.FailuresInRow
		if e.LockedUntil != nil {
			a.lockedUntil = *e.LockedUntil
		}
	}
}

func (a *Account) Exists() bool           { return a.id != uuid.Nil }
func (a *Account) ID() uuid.UUID          { return a.id }
func (a *Account) Email() string          { return a.email }
func (a *Account) Activated() bool        { return a.activated }
func (a *Account) Erased() bool           { return a.erased }
func (a *Account) PasswordHash() string   { return a.passwordHash }
func (a *Account) LockedUntil() time.Time { return a.lockedUntil }

// Activate decides an activation with the hash of the presented secret.
func (a *Account) Activate(secretHash string, now time.Time) (*Activated, error) {
	if !a.Exists() || subtle.ConstantTimeCompare([]byte(secretHash), []byte(a.activationSecretHash)) != 1 {
		return nil, ErrInvalidActivation
	}
	if a.activated {
		return nil, ErrAlreadyActivated
	}
	if !now.Before(a.activationExpiresAt) {
		return nil, ErrActivationExpired
	}
	return &Activated{AccountID: a.id}, nil
}

// ErrNotProvisionedByClient: only the partner that created an account
// confirms its notice.
var ErrNotProvisionedByClient = domain.New(domain.KindNotFound, "unknown_account", "this client did not create such an account")

// GiveNotice decides the provisioning partner's confirmation that it told
// the person; confirming again changes nothing.
func (a *Account) GiveNotice(client uuid.UUID) ([]any, error) {
	if !a.Exists() || a.provisionedBy == uuid.Nil || a.provisionedBy != client {
		return nil, ErrNotProvisionedByClient
	}
	if a.noticeGiven {
		return nil, nil
	}
	return []any{&NoticeGiven{AccountID: a.id, ClientID: client}}, nil
}

// CheckNotLocked refuses sign-in while a lockout runs.
func (a *Account) CheckNotLocked(now time.Time) error {
	if now.Before(a.lockedUntil) {
		return a.LockedError(now, a.lockedUntil)
	}
	return nil
}

// LockedError is the answer while sign-in is locked until `until`.
func (a *Account) LockedError(now, until time.Time) error {
	return &domain.Error{
		Kind: domain.KindTooManyAttempts, Code: "too_many_sign_in_attempts",
		Message:    "too many wrong passwords: sign-in is locked for a while",
		RetryAfter: until.Sub(now),
	}
}

// FailSignIn records a wrong password, locking sign-in when it is one too many.
func (a *Account) FailSignIn(now time.Time) *SignInFailed {
	ev := &SignInFailed{AccountID: a.id, Reason: "wrong_password", FailuresInRow: a.failuresInRow + 1}
	if ev.FailuresInRow >= MaxFailuresInRow {
		until := now.Add(LockoutDuration)
		ev.LockedUntil, ev.FailuresInRow = &until, 0
	}
	return ev
}

// Session is the state folded from a session stream.
type Session struct {
	id        uuid.UUID
	accountID uuid.UUID
	deviceID  string
	tokenHash string
	expiresAt time.Time
	closed    bool
}

// Apply folds one event into the state.
func (s *Session) Apply(event any) {
	switch e := event.(type) {
	case *SessionOpened:
		s.id, s.accountID, s.deviceID, s.tokenHash, s.expiresAt = e.SessionID, e.AccountID, e.DeviceID, e.TokenHash, e.ExpiresAt
	case *SessionClosed:
		s.closed = true
	}
}

// Authenticate checks a presented token hash; every failure looks the same
// to the caller.
func (s *Session) Authenticate(tokenHash string, now time.Time) error {
	if s.id == uuid.Nil || s.closed || !now.Before(s.expiresAt) ||
		subtle.ConstantTimeCompare([]byte(tokenHash), []byte(s.tokenHash)) != 1 {
		return ErrInvalidSession
	}
	return nil
}

// Close decides a logout; nil when the session is already closed.
func (s *Session) Close(reason string) *SessionClosed {
	if s.id == uuid.Nil || s.closed {
		return nil
	}
	return &SessionClosed{SessionID: s.id, AccountID: s.accountID, Reason: reason}
}

func (s *Session) ID() uuid.UUID        { return s.id }
func (s *Session) AccountID() uuid.UUID { return s.accountID }
func (s *Session) DeviceID() string     { return s.deviceID }

// ErrUnknownAccount: no account has this id.
var ErrUnknownAccount = domain.New(domain.KindNotFound, "unknown_account", "no account has this id")

// Erase decides the erasure of the account's personal data; nothing when it
// is already erased (erasure is idempotent).
func (a *Account) Erase() ([]any, error) {
	if !a.Exists() {
		return nil, ErrUnknownAccount
	}
	if a.erased {
		return nil, nil
	}
	return []any{&Erased{AccountID: a.id}}, nil
}
