// Package account is the sign-up and sign-in side of the ledger: accounts,
// their activation, and the sessions the apps and the mobile SDK use.
//
// Streams: "account-<id>" holds an account's life; "email-<sha256>" reserves
// an e-mail address (appended with NoStream, which is what makes e-mail
// unique under concurrency); "session-<id>" holds one session, so that a
// bearer token is checked by reading two events, not a read model that may
// lag.
package account

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event type names are wire contracts: never derive them from Go names.
const (
	TypeEmailReserved = "account.email-reserved.v1"
	TypeRegistered    = "account.registered.v1"
	TypeActivated     = "account.activated.v1"
	TypeSignedIn      = "account.signed-in.v1"
	TypeSignInFailed  = "account.sign-in-failed.v1"
	TypeSessionOpened = "account.session-opened.v1"
	TypeSessionClosed = "account.session-closed.v1"
	TypeProvisioned   = "account.provisioned-by-partner.v1"
	TypeNoticeGiven   = "account.partner-notice-given.v1"
	TypeErased        = "account.erased.v1"
)

// Stream names.
func Stream(id uuid.UUID) string        { return "account-" + id.String() }
func SessionStream(id uuid.UUID) string { return "session-" + id.String() }

// EmailStream names the reservation stream of an address. The name is a
// hash, so listing streams does not list addresses.
func EmailStream(normalizedEmail string) string {
	sum := sha256.Sum256([]byte(normalizedEmail))
	return "email-" + hex.EncodeToString(sum[:])
}

// EmailReserved claims an address for an account.
type EmailReserved struct {
	AccountID uuid.UUID `json:"accountId"`
}

// Registered starts an account. The password and the activation secret are
// only ever present as hashes.
type Registered struct {
	AccountID            uuid.UUID `json:"accountId"`
	Email                string    `json:"email"`
	PasswordHash         string    `json:"passwordHash"`
	ActivationSecretHash string    `json:"activationSecretHash"`
	ActivationExpiresAt  time.Time `json:"activationExpiresAt"`
}

// Activated: the owner of the address followed the activation link.
type Activated struct {
	AccountID uuid.UUID `json:"accountId"`
}

// SignedIn records a successful sign-in and the session it opened.
type SignedIn struct {
	AccountID uuid.UUID `json:"accountId"`
	SessionID uuid.UUID `json:"sessionId"`
	DeviceID  string    `json:"deviceId"`
}

// SignInFailed records a wrong password; enough of them in a row lock
// sign-in for a while.
type SignInFailed struct {
	AccountID     uuid.UUID  `json:"accountId"`
	Reason        string     `json:"reason"`
	LockedUntil   *time.Time `json:"lockedUntil,omitempty"`
	FailuresInRow int        `json:"failuresInRow"`
}

// SessionOpened starts a session. TokenHash is SHA-256 of the session
// secret: tokens carry 256 random bits, so a fast hash is enough.
type SessionOpened struct {
	SessionID uuid.UUID `json:"sessionId"`
	AccountID uuid.UUID `json:"accountId"`
	DeviceID  string    `json:"deviceId"`
	TokenHash string    `json:"tokenHash"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// SessionClosed ends a session (logout).
type SessionClosed struct {
	SessionID uuid.UUID `json:"sessionId"`
	AccountID uuid.UUID `json:"accountId"`
	Reason    string    `json:"reason"`
}

// Provisioned: a partner created the account (seed 003, scenario 1). The
// partner must tell the person who holds their data; until it confirms, the
// account is "notice pending".
type Provisioned struct {
	AccountID uuid.UUID `json:"accountId"`
	ClientID  uuid.UUID `json:"clientId"`
	FirstName string    `json:"firstName,omitempty"`
	LastName  string    `json:"lastName,omitempty"`
	Username  string    `json:"username,omitempty"`
}

// NoticeGiven: the provisioning partner confirmed it told the person.
type NoticeGiven struct {
	AccountID uuid.UUID `json:"accountId"`
	ClientID  uuid.UUID `json:"clientId"`
}

// Erased: the account's personal data was erased (GDPR Art. 17) by
// destroying its data key. The event itself holds none: who asked and why
// is in its metadata (the actor), the facts before it stay in the log.
type Erased struct {
	AccountID uuid.UUID `json:"accountId"`
}

// Decode turns a stored event of this area into its payload. The table is
// explicit so that renaming a Go type never changes what is stored.
func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeEmailReserved:
		v = &EmailReserved{}
	case TypeRegistered:
		v = &Registered{}
	case TypeActivated:
		v = &Activated{}
	case TypeSignedIn:
		v = &SignedIn{}
	case TypeSignInFailed:
		v = &SignInFailed{}
	case TypeSessionOpened:
		v = &SessionOpened{}
	case TypeSessionClosed:
		v = &SessionClosed{}
	case TypeProvisioned:
		v = &Provisioned{}
	case TypeNoticeGiven:
		v = &NoticeGiven{}
	case TypeErased:
		v = &Erased{}
	default:
		return nil, fmt.Errorf("account: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("account: decode %s: %w", eventType, err)
	}
	return v, nil
}

// Handles reports whether an event type belongs to this area.
func Handles(eventType string) bool { return strings.HasPrefix(eventType, "account.") }

// TypeOf returns the type name of a payload.
func TypeOf(payload any) string {
	switch payload.(type) {
	case *EmailReserved:
		return TypeEmailReserved
	case *Registered:
		return TypeRegistered
	case *Activated:
		return TypeActivated
	case *SignedIn:
		return TypeSignedIn
	case *SignInFailed:
		return TypeSignInFailed
	case *SessionOpened:
		return TypeSessionOpened
	case *SessionClosed:
		return TypeSessionClosed
	case *Provisioned:
		return TypeProvisioned
	case *NoticeGiven:
		return TypeNoticeGiven
	case *Erased:
		return TypeErased
	}
	panic(fmt.Sprintf("account: no type name for %T", payload))
}
