package commands

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
)

// OpenSession signs in with e-mail and password on one device.
type OpenSession struct {
	Email    string
	Password string
	DeviceID string
}

type OpenSessionResult struct {
	SessionToken string
	AccountID    uuid.UUID
}

// OpenSession checks the password in constant time (an unknown address
// costs the same as a wrong password), counts failures on the account's
// stream so that parallel guesses are all counted, and locks sign-in after
// too many in a row.
func (h *Handler) OpenSession(ctx context.Context, cmd OpenSession) (OpenSessionResult, error) {
	if err := account.CheckDeviceID(cmd.DeviceID); err != nil {
		return OpenSessionResult{}, err
	}
	a, expected, err := h.checkCredentials(ctx, cmd.Email, cmd.Password)
	if err != nil {
		return OpenSessionResult{}, err
	}

	sessionID := h.newID(ctx, "session")
	secret := account.NewSecret()
	now := h.Clock.Now()
	if _, err := h.appendEvents(ctx, account.Stream(a.ID()), expected,
		typed{account.TypeSignedIn, account.SignedIn{AccountID: a.ID(), SessionID: sessionID, DeviceID: cmd.DeviceID}}); err != nil {
		if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			return OpenSessionResult{}, account.ErrConcurrentSignIn
		}
		return OpenSessionResult{}, err
	}
	res, err := h.appendEvents(ctx, account.SessionStream(sessionID), eventstore.NoStream,
		typed{account.TypeSessionOpened, account.SessionOpened{
			SessionID: sessionID, AccountID: a.ID(), DeviceID: cmd.DeviceID,
			TokenHash: account.HashToken(secret), ExpiresAt: now.Add(account.SessionTTL),
		}})
	if err != nil {
		return OpenSessionResult{}, err
	}
	h.settle(ctx, res.Position)
	return OpenSessionResult{SessionToken: sessionID.String() + "." + secret, AccountID: a.ID()}, nil
}

// checkCredentials is the common part of every sign-in: the password
// checked in constant time (an unknown address costs the same as a wrong
// password), failures counted on the account's stream, lockout, and
// activation (told only to the holder of the password).
func (h *Handler) checkCredentials(ctx context.Context, rawEmail, password string) (*account.Account, eventstore.ExpectedRevision, error) {
	email, err := account.NormalizeEmail(rawEmail)
	if err != nil {
		account.BurnPasswordCheck(password)
		return nil, eventstore.Any, account.ErrBadCredentials
	}
	owner, _, _, err := h.lookupEmail(ctx, email)
	if err != nil {
		return nil, eventstore.Any, err
	}
	a, expected, err := h.loadAccount(ctx, owner)
	if err != nil {
		return nil, eventstore.Any, err
	}
	if !a.Exists() || a.Erased() {
		account.BurnPasswordCheck(password)
		return nil, eventstore.Any, account.ErrBadCredentials
	}
	if err := a.CheckNotLocked(h.Clock.Now()); err != nil {
		return nil, eventstore.Any, err
	}
	if !account.VerifyPassword(password, a.PasswordHash()) {
		return nil, eventstore.Any, h.recordFailedSignIn(ctx, a, expected)
	}
	if !a.Activated() {
		return nil, eventstore.Any, account.ErrNotActivated
	}
	return a, expected, nil
}

// PromptDevice is the device name sign-ins through the hosted consent
// prompt are recorded under.
const PromptDevice = "consent-prompt"

// SignInToPrompt signs a person in to the hosted consent prompt: the same
// checks as any sign-in, recorded, but no bearer session is opened (the
// prompt keeps its own short-lived flow).
func (h *Handler) SignInToPrompt(ctx context.Context, email, password string) (uuid.UUID, error) {
	a, expected, err := h.checkCredentials(ctx, email, password)
	if err != nil {
		return uuid.Nil, err
	}
	_, err = h.appendEvents(ctx, account.Stream(a.ID()), expected,
		typed{account.TypeSignedIn, account.SignedIn{AccountID: a.ID(), DeviceID: PromptDevice}})
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return uuid.Nil, account.ErrConcurrentSignIn
	}
	return a.ID(), err
}

// recordFailedSignIn appends the failure, re-reading the stream when a
// parallel attempt got there first, so that every wrong guess counts.
func (h *Handler) recordFailedSignIn(ctx context.Context, a *account.Account, expected eventstore.ExpectedRevision) error {
	for attempt := 0; attempt < 10; attempt++ {
		ev := a.FailSignIn(h.Clock.Now())
		_, err := h.appendEvents(ctx, account.Stream(a.ID()), expected, typed{account.TypeSignInFailed, ev})
		if err == nil {
			if ev.LockedUntil != nil {
				return a.LockedError(h.Clock.Now(), *ev.LockedUntil)
			}
			return account.ErrBadCredentials
		}
		if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
			return err
		}
		if a, expected, err = h.loadAccount(ctx, a.ID()); err != nil {
			return err
		}
		if err := a.CheckNotLocked(h.Clock.Now()); err != nil {
			return err
		}
	}
	return account.ErrBadCredentials
}

// CloseSession ends the caller's session (logout). Closing a closed session
// changes nothing and appends nothing.
func (h *Handler) CloseSession(ctx context.Context, sessionID uuid.UUID) error {
	s, expected, err := h.loadSession(ctx, sessionID)
	if err != nil {
		return err
	}
	ev := s.Close("logout")
	if ev == nil {
		return nil
	}
	res, err := h.appendEvents(ctx, account.SessionStream(sessionID), expected, typed{account.TypeSessionClosed, ev})
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return nil // closed concurrently
	}
	if err != nil {
		return err
	}
	h.settle(ctx, res.Position)
	return nil
}

// Authenticate resolves a session token by reading its session stream, so
// a logout is effective for the very next request.
func (h *Handler) Authenticate(ctx context.Context, token string) (*account.Session, error) {
	idPart, secret, ok := strings.Cut(token, ".")
	id, err := uuid.Parse(idPart)
	if !ok || err != nil || secret == "" || len(token) > 200 {
		return nil, account.ErrInvalidSession
	}
	s, _, err := h.loadSession(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.Authenticate(account.HashToken(secret), h.Clock.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

func (h *Handler) loadSession(ctx context.Context, id uuid.UUID) (*account.Session, eventstore.ExpectedRevision, error) {
	s := &account.Session{}
	expected, err := h.fold(ctx, account.SessionStream(id), account.Decode, func(p any, _ time.Time) { s.Apply(p) })
	return s, expected, err
}
