package commands

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/consentledger/ledger/domain/account"
	"github.com/consentledger/ledger/eventstore"
)

// RegisterAccount signs a person up: the account waits for activation.
type RegisterAccount struct {
	Email    string
	Password string
}

type RegisterAccountResult struct {
	AccountID uuid.UUID
	Status    string
}

// staleReservation is how old a reservation without an account may be
// before another sign-up may take the address over: the registering command
// died between its two appends.
const staleReservation = 2 * 60 // seconds

// RegisterAccount reserves the address (an append to the address's stream
// with NoStream: of any number of concurrent sign-ups exactly one wins),
// then starts the account and sends the activation link.
func (h *Handler) RegisterAccount(ctx context.Context, cmd RegisterAccount) (RegisterAccountResult, error) {
	email, err := account.NormalizeEmail(cmd.Email)
	if err != nil {
		return RegisterAccountResult{}, err
	}
	if err := account.CheckPassword(cmd.Password, email); err != nil {
		return RegisterAccountResult{}, err
	}
	id := h.newID(ctx, "account")
	if err := h.reserveEmail(ctx, email, id); err != nil {
		return RegisterAccountResult{}, err
	}

	secret := account.NewSecret()
	now := h.Clock.Now()
	res, err := h.appendEvents(ctx, account.Stream(id), eventstore.NoStream, typed{account.TypeRegistered, account.Registered{
		AccountID:            id,
		Email:                email,
		PasswordHash:         account.HashPassword(cmd.Password, h.PasswordParams),
		ActivationSecretHash: account.HashToken(secret),
		ActivationExpiresAt:  now.Add(account.ActivationTTL),
	}})
	if err != nil {
		return RegisterAccountResult{}, fmt.Errorf("register account: %w", err)
	}
	token := id.String() + "." + secret
	h.Outbox.Send(ctx, Message{
		Channel: "email", To: email, Subject: "Activate your account",
		Body:      "Welcome. Activate your account within 24 hours with this link.",
		Link:      h.PublicURL + "/activate?token=" + url.QueryEscape(token),
		Code:      token,
		CreatedAt: now,
		Account:   id,
	})
	h.settle(ctx, res.Position)
	return RegisterAccountResult{AccountID: id, Status: "pending_activation"}, nil
}

func (h *Handler) reserveEmail(ctx context.Context, email string, id uuid.UUID) error {
	stream := account.EmailStream(email)
	_, err := h.appendEvents(ctx, stream, eventstore.NoStream, typed{account.TypeEmailReserved, account.EmailReserved{AccountID: id}})
	if !errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return err
	}
	// Taken, unless the reservation is stale: its account never started.
	owner, at, expected, err := h.lookupEmail(ctx, email)
	if err != nil {
		return err
	}
	if owner == id {
		return nil // our own reservation: a retry with the same Idempotency-Key
	}
	a, _, err := h.loadAccount(ctx, owner)
	if err != nil {
		return err
	}
	// An erased account gives its address back: its owner may sign up again.
	if !a.Erased() && (a.Exists() || h.Clock.Now().Sub(at).Seconds() < staleReservation) {
		return account.ErrEmailTaken
	}
	_, err = h.appendEvents(ctx, stream, expected, typed{account.TypeEmailReserved, account.EmailReserved{AccountID: id}})
	if errors.Is(err, eventstore.ErrWrongExpectedRevision) {
		return account.ErrEmailTaken
	}
	return err
}

// ProvisionAccount is a partner creating an account for a person (seed
// 003, scenario 1): the account is active at once, recorded as provisioned
// by that client, and "notice pending" until the partner confirms it told
// the person who holds their data.
type ProvisionAccount struct {
	ClientID  uuid.UUID
	Email     string
	Password  string
	FirstName string
	LastName  string
	Username  string
}

// ProvisionAccount reserves the address like any sign-up, then appends the
// account's registration, activation and provisioning at once.
func (h *Handler) ProvisionAccount(ctx context.Context, cmd ProvisionAccount) (uuid.UUID, time.Time, error) {
	email, err := account.NormalizeEmail(cmd.Email)
	if err != nil {
		return uuid.Nil, time.Time{}, err
	}
	if err := account.CheckPassword(cmd.Password, email); err != nil {
		return uuid.Nil, time.Time{}, err
	}
	for _, f := range []string{cmd.FirstName, cmd.LastName, cmd.Username} {
		if len(f) > 200 {
			return uuid.Nil, time.Time{}, account.ErrNameTooLong
		}
	}
	id := h.newID(ctx, "account")
	if err := h.reserveEmail(ctx, email, id); err != nil {
		return uuid.Nil, time.Time{}, err
	}
	now := h.Clock.Now()
	res, err := h.appendEvents(ctx, account.Stream(id), eventstore.NoStream,
		typed{account.TypeRegistered, account.Registered{AccountID: id, Email: email,
			PasswordHash: account.HashPassword(cmd.Password, h.PasswordParams), ActivationExpiresAt: now}},
		typed{account.TypeActivated, account.Activated{AccountID: id}},
		typed{account.TypeProvisioned, account.Provisioned{AccountID: id, ClientID: cmd.ClientID,
			FirstName: cmd.FirstName, LastName: cmd.LastName, Username: cmd.Username}})
	if err != nil {
		return uuid.Nil, time.Time{}, fmt.Errorf("provision account: %w", err)
	}
	h.settle(ctx, res.Position)
	return id, now, nil
}

// ConfirmNotice records the provisioning partner's confirmation.
func (h *Handler) ConfirmNotice(ctx context.Context, client, accountID uuid.UUID) error {
	return decide(ctx, h, account.Stream(accountID), accountArea, func() *timedAccount { return &timedAccount{} },
		func(a *timedAccount, _ time.Time) ([]any, error) { return a.GiveNotice(client) })
}

var accountArea = area{decode: account.Decode, typeOf: account.TypeOf}

// timedAccount adapts the account's fold to decide's signature.
type timedAccount struct{ account.Account }

func (a *timedAccount) Apply(event any, _ time.Time) { a.Account.Apply(event) }
