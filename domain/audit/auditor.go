// Package audit holds what auditors are and how the log proves itself to
// them: auditor credentials (this file), the signed checkpoints over the
// chained log, and the offline bundle an auditor verifies without the
// ledger (bundle.go).
//
// Streams: "auditor-<id>" holds one auditor's credential. A key is
// "aud_<id>.<secret>": the id names the stream, so checking a key reads
// one short stream, never a read model that may lag; the secret (256 random
// bits) is kept only as its SHA-256 hash.
package audit

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
)

// Event type names are wire contracts: never derive them from Go names.
const (
	TypeAuditorIssued  = "audit.auditor-issued.v1"
	TypeAuditorRevoked = "audit.auditor-revoked.v1"
)

// KeyPrefix starts every auditor key, so a key is recognisable in a
// leaked-secret scan and never mistaken for a session token.
const KeyPrefix = "aud_"

var (
	// ErrInvalidKey: no auditor key, a malformed one, an unknown or revoked
	// auditor, or a wrong secret. The caller learns nothing more.
	ErrInvalidKey = domain.New(domain.KindUnauthenticated, "auditor_key_invalid", "this endpoint needs a valid auditor key")
	// ErrInvalidName: an auditor's label is missing or too long.
	ErrInvalidName = domain.New(domain.KindInvalid, "invalid_auditor_name", "name must be 1 to 200 characters")
)

// Stream names an auditor's stream.
func Stream(id uuid.UUID) string { return "auditor-" + id.String() }

// AuditorIssued records that an admin issued a key: who it is for and the
// SHA-256 of its secret, never the secret.
type AuditorIssued struct {
	AuditorID uuid.UUID `json:"auditorId"`
	Name      string    `json:"name"`
	KeyHash   string    `json:"keyHash"`
}

// AuditorRevoked ends an auditor's key.
type AuditorRevoked struct {
	AuditorID uuid.UUID `json:"auditorId"`
}

// Decode turns a stored event of this area into its payload.
func Decode(eventType string, data []byte) (any, error) {
	var v any
	switch eventType {
	case TypeAuditorIssued:
		v = &AuditorIssued{}
	case TypeAuditorRevoked:
		v = &AuditorRevoked{}
	default:
		return nil, fmt.Errorf("audit: unknown event type %q", eventType)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("audit: decode %s: %w", eventType, err)
	}
	return v, nil
}

// TypeOf returns the type name of a payload.
func TypeOf(payload any) string {
	switch payload.(type) {
	case *AuditorIssued:
		return TypeAuditorIssued
	case *AuditorRevoked:
		return TypeAuditorRevoked
	}
	panic(fmt.Sprintf("audit: no event type for %T", payload))
}

// NewKey makes an auditor's key and the event that records it. The key is
// returned to be shown once; the event holds only its hash.
func NewKey(id uuid.UUID, name string) (key string, issued *AuditorIssued, err error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > 200 {
		return "", nil, ErrInvalidName
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	secret := base64.RawURLEncoding.EncodeToString(b)
	return KeyPrefix + id.String() + "." + secret, &AuditorIssued{AuditorID: id, Name: name, KeyHash: account.HashToken(secret)}, nil
}

// ParseKey splits a key into the auditor id and the secret. Anything that is
// not shaped like a key is ErrInvalidKey.
func ParseKey(key string) (uuid.UUID, string, error) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok || len(key) > 200 {
		return uuid.Nil, "", ErrInvalidKey
	}
	idPart, secret, ok := strings.Cut(rest, ".")
	id, err := uuid.Parse(idPart)
	if !ok || err != nil || secret == "" {
		return uuid.Nil, "", ErrInvalidKey
	}
	return id, secret, nil
}

// Auditor is an auditor's credential folded from its stream.
type Auditor struct {
	id      uuid.UUID
	name    string
	keyHash string
	revoked bool
}

// Apply folds one event.
func (a *Auditor) Apply(payload any, _ time.Time) {
	switch e := payload.(type) {
	case *AuditorIssued:
		a.id, a.name, a.keyHash = e.AuditorID, e.Name, e.KeyHash
	case *AuditorRevoked:
		a.revoked = true
	}
}

// ID is the auditor's id (uuid.Nil when none was issued).
func (a *Auditor) ID() uuid.UUID { return a.id }

// Name is the label the admin gave.
func (a *Auditor) Name() string { return a.name }

// Authenticate checks a secret against the stored hash in constant time. An
// auditor never issued or revoked refuses every secret, after the same
// comparison.
func (a *Auditor) Authenticate(secret string) error {
	want := a.keyHash
	if want == "" {
		want = strings.Repeat("0", 64)
	}
	ok := subtle.ConstantTimeCompare([]byte(account.HashToken(secret)), []byte(want)) == 1
	if !ok || a.keyHash == "" || a.revoked {
		return ErrInvalidKey
	}
	return nil
}

// Revoke ends the key; revoking twice records nothing.
func (a *Auditor) Revoke() ([]any, error) {
	if a.keyHash == "" {
		return nil, domain.New(domain.KindNotFound, "unknown_auditor", "no auditor has this id")
	}
	if a.revoked {
		return nil, nil
	}
	return []any{&AuditorRevoked{AuditorID: a.id}}, nil
}
