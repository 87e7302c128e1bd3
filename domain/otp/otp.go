// Package otp holds the rules of one-time codes sent out of band (an SMS, a
// code shown in a car) so that every aggregate that proves something with
// such a code applies the same rules: a code is single use, lives for a
// TTL, is bound to the device that asked for it and to its target (a phone
// number, a vehicle), is burnt after too many wrong tries, and only so many
// codes are issued per purpose and target within a window.
//
// The package does no I/O and stores nothing itself. Its decisions return
// plain facts (Issued, Failed, Used) that the aggregate wraps into its own
// events, and the aggregate folds its events back through the Apply hooks
// of the Codes it embeds. The facts carry no JSON tags and no type names on
// purpose: the event payloads and their type names are the aggregate's
// wire contracts (enrollment.sms-code-sent.v1, …), so they stay with the
// aggregate, and nothing in this package can change what is stored.
//
// Only the argon2id hash of a code ever leaves Issue, and a presented code
// is checked with account.VerifyPassword, which compares in constant time.
// The errors are the user's: each aggregate gives its own Errors in Rules,
// so its callers see codes of their own (sms_code_wrong, carkey_code_wrong).
package otp

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain"
	"github.com/consentledger/ledger/domain/account"
)

// Rules are the limits one user of codes applies; each aggregate derives
// them from its own configurable policy.
type Rules struct {
	TTL         time.Duration // a code's life; it is expired at IssuedAt+TTL exactly
	MaxFailures int           // wrong tries that burn a code; the last one burns it
	PerWindow   int           // codes per purpose and target within Window
	Window      time.Duration // a sliding window, counted back from now
	Params      account.PasswordParams
	Errors      Errors
}

// Errors are the errors a user of codes reports, so that each user keeps
// stable codes of its own. A nil field falls back to DefaultErrors.
type Errors struct {
	Missing *domain.Error // no code of the purpose for this device and target, or it was used
	Expired *domain.Error
	Burnt   *domain.Error
	// Wrong is copied with AttemptsLeft set and ": N attempts left" appended
	// to its message.
	Wrong *domain.Error
	// RateLimited is copied with RetryAfter set to when the oldest code of
	// the window leaves it.
	RateLimited *domain.Error
}

// NewErrors makes the usual set of errors for a kind of code: codes
// <prefix>_code_missing, _expired, _burnt, _wrong and <prefix>_rate_limited,
// with messages that name the code (noun, e.g. "car-key code") and what it
// is sent to (target, e.g. "vehicle").
func NewErrors(prefix, noun, target string) Errors {
	return Errors{
		Missing:     domain.New(domain.KindConflict, prefix+"_code_missing", fmt.Sprintf("no %s of this kind was requested on this device", noun)),
		Expired:     domain.Invalidf(prefix+"_code_expired", "the %s has expired: request a new one", noun),
		Burnt:       domain.Invalidf(prefix+"_code_burnt", "too many wrong tries: request a new %s", noun),
		Wrong:       domain.Invalidf(prefix+"_code_wrong", "wrong %s", noun),
		RateLimited: domain.New(domain.KindTooManyAttempts, prefix+"_rate_limited", fmt.Sprintf("too many %ss for this %s: try again later", noun, target)),
	}
}

// DefaultErrors are reported where a user left a field of its Errors nil,
// so that a forgotten error still has a kind and a stable code.
var DefaultErrors = NewErrors("otp", "code", "target")

func (s Errors) orDefault() Errors {
	pick := func(e, d *domain.Error) *domain.Error {
		if e == nil {
			return d
		}
		return e
	}
	return Errors{
		Missing:     pick(s.Missing, DefaultErrors.Missing),
		Expired:     pick(s.Expired, DefaultErrors.Expired),
		Burnt:       pick(s.Burnt, DefaultErrors.Burnt),
		Wrong:       pick(s.Wrong, DefaultErrors.Wrong),
		RateLimited: pick(s.RateLimited, DefaultErrors.RateLimited),
	}
}

// Issued is the fact that a code was issued. It holds the code's hash,
// never the code.
type Issued struct {
	ID        uuid.UUID
	Purpose   string
	Target    string
	Device    string
	Hash      string // argon2id, PHC string format
	ExpiresAt time.Time
}

// Failed is the fact that a wrong code was tried; Burnt when it was the
// last try allowed, after which the code never verifies again.
type Failed struct {
	ID       uuid.UUID
	Failures int
	Burnt    bool
}

// Used is the fact that a code verified and is spent.
type Used struct {
	ID uuid.UUID
}

type code struct {
	Issued
	issuedAt time.Time
	failures int
	used     bool
	burnt    bool
}

// Codes is the state of the codes of one stream, folded from its facts.
// The zero value holds no code and is ready to use. Decisions never change
// it: only the Apply hooks do, so a refused or retried decision leaves no
// trace.
type Codes struct {
	codes []*code // in the order issued
}

// ApplyIssued folds an Issued fact recorded at `at`: the rate limit counts
// from the time the fact was recorded.
func (c *Codes) ApplyIssued(f Issued, at time.Time) {
	c.codes = append(c.codes, &code{Issued: f, issuedAt: at})
}

// ApplyFailed folds a Failed fact. A fact about an unknown code is ignored,
// as a stream only ever records facts about its own codes.
func (c *Codes) ApplyFailed(f Failed) {
	if k := c.find(f.ID); k != nil {
		k.failures, k.burnt = f.Failures, f.Burnt
	}
}

// ApplyUsed folds a Used fact; an unknown code is ignored.
func (c *Codes) ApplyUsed(f Used) {
	if k := c.find(f.ID); k != nil {
		k.used = true
	}
}

func (c *Codes) find(id uuid.UUID) *code {
	for _, k := range c.codes {
		if k.ID == id {
			return k
		}
	}
	return nil
}

// Issue decides issuing code, the clear code the caller generated, under id
// for a purpose, sent to target and bound to device. Only its hash is in
// the returned fact. It refuses with Errors.RateLimited when PerWindow codes
// of this purpose went to this target within Window, whatever the device
// that asked: the limit protects the target (a phone's owner) from floods.
// The new code supersedes the earlier ones of its purpose on that device,
// as Verify only ever checks the latest.
func (c *Codes) Issue(r Rules, id uuid.UUID, purpose, target, device, secret string, now time.Time) (Issued, error) {
	issued, oldest := 0, now
	for _, k := range c.codes {
		if k.Purpose == purpose && k.Target == target && now.Sub(k.issuedAt) < r.Window {
			issued++
			if k.issuedAt.Before(oldest) {
				oldest = k.issuedAt
			}
		}
	}
	if issued >= r.PerWindow {
		e := *r.Errors.orDefault().RateLimited
		e.RetryAfter = oldest.Add(r.Window).Sub(now)
		return Issued{}, &e
	}
	return Issued{ID: id, Purpose: purpose, Target: target, Device: device,
		Hash: account.HashPassword(secret, r.Params), ExpiresAt: now.Add(r.TTL)}, nil
}

// Verify checks a presented code against the latest code of that purpose
// issued for this device and target; an empty target accepts the latest
// whatever its target, for a purpose whose target the aggregate already
// fixes (the account's trusted phone). A newer code thus supersedes older
// ones, and a code asked for on another device never verifies.
//
// Exactly one of three outcomes:
//   - the right code: the Used fact to record, and a nil error;
//   - a wrong code: the Failed fact to record (a wrong try is a fact, also
//     when the decision is refused) with Errors.Wrong counting the attempts
//     left, or Errors.Burnt on the last try allowed;
//   - no usable code: a nil Failed and Errors.Missing (none, or already
//     used), Errors.Burnt or Errors.Expired (at ExpiresAt exactly).
func (c *Codes) Verify(r Rules, purpose, target, device, secret string, now time.Time) (Used, *Failed, error) {
	errs := r.Errors.orDefault()
	var k *code
	for i := len(c.codes) - 1; i >= 0; i-- {
		cand := c.codes[i]
		if cand.Purpose == purpose && cand.Device == device && (target == "" || cand.Target == target) {
			k = cand
			break
		}
	}
	switch {
	case k == nil:
		return Used{}, nil, errs.Missing
	case k.burnt:
		return Used{}, nil, errs.Burnt
	case k.used:
		return Used{}, nil, errs.Missing // single use
	case !now.Before(k.ExpiresAt):
		return Used{}, nil, errs.Expired
	}
	if !account.VerifyPassword(secret, k.Hash) {
		failed := &Failed{ID: k.ID, Failures: k.failures + 1}
		if failed.Failures >= r.MaxFailures {
			failed.Burnt = true
			return Used{}, failed, errs.Burnt
		}
		left := r.MaxFailures - failed.Failures
		e := *errs.Wrong
		e.Message = fmt.Sprintf("%s: %d attempts left", e.Message, left)
		e.AttemptsLeft = &left
		return Used{}, failed, &e
	}
	return Used{ID: k.ID}, nil, nil
}
