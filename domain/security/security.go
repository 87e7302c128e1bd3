// Package security holds the facts the ledger records when it starts
// refusing a guesser: a source address that failed too many secrets, a
// partner client whose secret was guessed at too often. Per-subject bounds
// on end-user secrets (password, PIN, SMS and car-key codes) are facts of
// their own areas (account.sign-in-failed with lockedUntil,
// enrollment.account-blocked, burnt codes); these events cover what has no
// subject stream of its own.
//
// Only transitions into the limited state are recorded, never each refused
// request, so an anonymous flood appends at most one event per source and
// window.
package security

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event types: stable wire names.
const (
	TypeSourceLimited    = "security.source-limited.v1"
	TypeClientAuthLocked = "security.client-auth-locked.v1"
)

// SourceStream is the stream of one source address's limits.
func SourceStream(addr string) string { return "security-source-" + addr }

// ClientStream is the stream of one partner client's authentication locks.
func ClientStream(id uuid.UUID) string { return "security-client-" + id.String() }

// SourceLimited: an address failed Failures secrets within the window; it is
// refused until LimitedUntil. Kind names the secret of the last failure
// (password, pin, sms-code, carkey-code, client-secret, session-token, …);
// Instance names the server whose failure emptied the budget.
type SourceLimited struct {
	Source       string    `json:"source"`
	Kind         string    `json:"kind"`
	Failures     int       `json:"failures"`
	LimitedUntil time.Time `json:"limitedUntil"`
	Instance     string    `json:"instance,omitempty"`
}

// ClientAuthLocked: a client's secret failed Failures times within the
// window; its authentication is refused until LockedUntil, from any source.
type ClientAuthLocked struct {
	ClientID    uuid.UUID `json:"clientId"`
	Failures    int       `json:"failures"`
	LockedUntil time.Time `json:"lockedUntil"`
	Instance    string    `json:"instance,omitempty"`
}

// Decode turns a stored event of this area into its payload.
func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeSourceLimited:
		v = &SourceLimited{}
	case TypeClientAuthLocked:
		v = &ClientAuthLocked{}
	default:
		return nil, fmt.Errorf("security: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("security: decode %s: %w", eventType, err)
	}
	return v, nil
}

// Handles reports whether an event type belongs to this area.
func Handles(eventType string) bool { return strings.HasPrefix(eventType, "security.") }
