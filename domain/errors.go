// Package domain holds what every area of the ledger shares: error kinds and
// the clock. Areas live in domain/<area> and do no I/O.
package domain

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies a rule break. api/ maps each kind to an HTTP status and an
// SDK error code in one place; domain code never thinks in HTTP.
type Kind string

const (
	KindInvalid         Kind = "invalid"           // bad input: 400 / 422
	KindUnauthenticated Kind = "unauthenticated"   // no or bad credential: 401
	KindForbidden       Kind = "forbidden"         // known caller, not allowed: 403
	KindNotFound        Kind = "not_found"         // 404
	KindConflict        Kind = "conflict"          // state forbids it: 409
	KindTooManyAttempts Kind = "too_many_attempts" // 429 / SDK 2317
	KindUnavailable     Kind = "unavailable"       // a dependency is down: 503
)

// Error is a rule break with a stable machine code (for problem+json `code`
// and the SDK's error table) and a message safe to show the caller.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	// RetryAfter, when set, tells the caller when trying again can succeed.
	RetryAfter time.Duration
	// AttemptsLeft, when set, is how many more wrong secrets are allowed
	// before a block.
	AttemptsLeft *int
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Is matches errors of the same code, so sentinels work with errors.Is.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// New makes an error of a kind with a code and message.
func New(kind Kind, code, message string) *Error {
	return &Error{Kind: kind, Code: code, Message: message}
}

// Invalidf makes a KindInvalid error with a formatted message.
func Invalidf(code, format string, args ...any) *Error {
	return New(KindInvalid, code, fmt.Sprintf(format, args...))
}

// KindOf returns the kind of err, or "" when err is not a domain error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}

// Clock is the ledger's only source of the current time, so tests can fix it.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock, in UTC and truncated to microseconds (what
// PostgreSQL keeps), so a time survives a round trip unchanged.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
